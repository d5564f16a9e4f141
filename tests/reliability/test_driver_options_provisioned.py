"""The simulated-component check (when the tool config loads) runs on the tool as written,
before ``provision_lines`` adds the heated chemicals' ``source.<chem>``/``line.<chem>``
heaters: a copy of the built-in tool that names one of those heaters (to give it a limit)
must load, as it did on d1d9156 (from the second review of 918df01, which refused it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aldctl import config as cfg
from aldctl.session import prepare

ROOT = Path(__file__).resolve().parents[2]


def _tool(tmp_path: Path, devices: str, heaters: str = "") -> Path:
    text = cfg.builtin_text()
    anchor = "  interlocks: {driver: simulated-inputs, component: interlocks}\n"
    assert anchor in text
    text = text.replace(anchor, anchor + devices)
    walls = "  walls:     {device: walls, max: 250 degC, ramp_max: 20 K/min}\n"
    assert walls in text
    text = text.replace(walls, walls + heaters)
    path = tmp_path / "tool.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("devices", "heaters"),
    [
        ("  source.LiOtBu: {driver: simulated-heater}\n", ""),
        (
            "  liotbu_src: {driver: simulated-heater, component: source.LiOtBu}\n",
            "  src_limit: {device: liotbu_src, max: 180 degC}\n",
        ),
    ],
    ids=["provisioned-name", "own-name-with-limit"],
)
def test_a_device_on_a_heater_the_recipe_provisions_is_accepted(
    tmp_path: Path, devices: str, heaters: str
) -> None:
    path = _tool(tmp_path, devices, heaters)
    prepared = prepare(ROOT / "recipes" / "litaox_1_6.yaml", path)
    assert "source.LiOtBu" in prepared.tool.devices


def test_a_heater_of_a_chemical_the_recipe_does_not_dose_is_refused_before_the_run(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """The same tool with a recipe that doses no LiOtBu: the heater it names does not exist.
    ``validate`` said ok and ``run`` made a run record, then failed at connect
    ("device 'liotbu_src' failed to connect") on 0b233ca; now both refuse at the line."""
    path = _tool(
        tmp_path,
        "  liotbu_src: {driver: simulated-heater, component: source.LiOtBu}\n",
        "  src_limit: {device: liotbu_src, max: 180 degC}\n",
    )
    line = next(n for n, ln in enumerate(path.read_text().splitlines(), 1) if "liotbu_src:" in ln)
    recipe = ROOT / "recipes" / "al2o3_tma_h2o.yaml"
    res = run_cli("validate", str(recipe), "--config", str(path))
    assert res.code == 2, res.out + res.err
    assert f"{path}:{line}:" in res.err, res.err
    assert "devices.liotbu_src.component" in res.err
    assert "doses no LiOtBu" in res.err
    data = tmp_path / "data"
    res = run_cli("run", str(recipe), "--config", str(path), "--data-dir", str(data))
    assert res.code == 2, res.err
    assert "Traceback" not in res.err
    assert not (data / "journal.sqlite").exists() or _runs(data) == []


def _runs(data: Path) -> list[Any]:
    from aldctl.engine.journal import Journal

    j = Journal(data, readonly=True)
    try:
        return list(j.runs(10))
    finally:
        j.close()
