"""Validation refuses what would hurt people or the substrate, at the step that does it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aldctl import config

H2S_RECIPE = """\
name: Li2S from LiOtBu and H2S
params: {T: 150 degC}
setup:
  - set: {substrate: $T, carrier: 20 sccm, source.LiOtBu: 140 degC, line.LiOtBu: 155 degC}
cycles:
  Li2S:
    - pulse: {LiOtBu: 1 s}
    - purge: 5 s
    - pulse: {H2S: 100 ms}
    - purge: 5 s
main: [{cycle: {name: Li2S, repeat: 2}}]
"""


def _tool_without(tmp_path: Path, *names: str) -> Path:
    text = config.builtin_text()
    for n in names:
        text = re.sub(rf"^  {n}: .*\n", "", text, flags=re.M)
    path = tmp_path / "tool.yaml"
    path.write_text(text)
    return path


def test_h2s_without_a_toxic_gas_detector_is_refused_at_the_dose(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    recipe = tmp_path / "li2s.yaml"
    recipe.write_text(H2S_RECIPE)
    tool = _tool_without(tmp_path, "toxic_gas_detector")
    res = run_cli("validate", str(recipe), "--config", str(tool))
    assert res.code == 2
    errors = [ln for ln in res.err.splitlines() if ": error: " in ln]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{recipe}:9:15: error: H2S is toxic")
    assert "toxic-gas detector interlock (toxic_gas_detector)" in errors[0]
    # with the interlock declared (the built-in tool) the same recipe validates
    assert run_cli("validate", str(recipe)).code == 0


def test_tma_without_an_exhaust_interlock_is_refused(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    tool = _tool_without(tmp_path, "exhaust_flow")
    res = run_cli("validate", "recipes/al2o3_tma_h2o.yaml", "--config", str(tool))
    assert res.code == 2
    assert re.search(
        r"al2o3_tma_h2o.yaml:\d+:\d+: error: TMA is pyrophoric: dosing it needs the exhaust "
        r"flow switch interlock \(exhaust_flow\)",
        res.err,
    ), res.err
    assert "H2O" not in res.err  # water needs none


def test_li_metal_heated_above_its_limit_is_refused(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    recipe = tmp_path / "li.yaml"
    recipe.write_text(
        "params: {T: 200 degC}\n"
        "substrate: {material: Li-metal}\n"
        "setup:\n"
        "  - set: {substrate: $T, carrier: 20 sccm}\n"
        "cycles: {A: [{pulse: {TMA: 15 ms}}, {purge: 5 s}, {pulse: {H2O: 30 ms}}, {purge: 5 s}]}\n"
        "main: [{cycle: {name: A, repeat: 5}}]\n"
    )
    res = run_cli("validate", str(recipe))
    assert res.code == 2
    assert re.search(
        rf"{re.escape(str(recipe))}:4:22: error: substrate setpoint 200 degC is above the "
        "Li-metal substrate limit",
        res.err,
    ), res.err
    assert run_cli("validate", str(recipe), "--set", "T=120 degC").code == 0


def test_tma_and_water_dosed_together_is_refused(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    recipe = tmp_path / "codose.yaml"
    recipe.write_text(
        "setup: [{set: {substrate: 150 degC, carrier: 20 sccm}}]\n"
        "cycles:\n"
        "  A:\n"
        "    - pulse: {TMA: 15 ms, H2O: 30 ms}\n"
        "    - purge: 5 s\n"
        "main: [{cycle: {name: A, repeat: 5}}]\n"
    )
    res = run_cli("validate", str(recipe))
    assert res.code == 2
    assert re.search(
        rf"{re.escape(str(recipe))}:4:27: error: TMA and H2O would be dosed at the same time",
        res.err,
    ), res.err
