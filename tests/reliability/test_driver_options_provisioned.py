"""The simulated-component check (when the tool config loads) runs on the tool as written,
before ``provision_lines`` adds the heated chemicals' ``source.<chem>``/``line.<chem>``
heaters: a copy of the built-in tool that names one of those heaters (to give it a limit)
must load, as it did on d1d9156 (from the second review of 918df01, which refused it)."""

from __future__ import annotations

from pathlib import Path

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
