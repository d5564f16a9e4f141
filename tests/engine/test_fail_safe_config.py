"""The tool config states where every valve goes de-energised, and refuses a tool whose
de-energised state seals the chamber under a flowing carrier (issue 8, item 4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "al2o3_tma_h2o.yaml"
HIL = (ROOT / "config" / "hil.yaml").read_text()


def variant(tmp_path: Path, old: str, new: str) -> Path:
    assert old in HIL
    path = tmp_path / "tool.yaml"
    path.write_text(HIL.replace(old, new))
    return path


def line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


ISO = "pump_isolation: {valve: valves:15, fails: open}"


def test_pump_isolation_failing_closed_under_a_flowing_carrier_is_refused_where_it_is(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    path = variant(tmp_path, ISO, "pump_isolation: {valve: valves:15, fails: closed}")
    res = run_cli("validate", str(RECIPE), "--config", str(path))
    assert res.code == 2
    assert "Traceback" not in res.err
    row = line_of(path.read_text(), "pump_isolation:")
    assert f"{path}:{row}:" in res.err
    assert "sealed and fills with carrier" in res.err
    assert "carrier_shutoff" in res.err  # the hint names the way out


def test_a_carrier_shutoff_on_the_same_module_makes_it_acceptable(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    path = variant(
        tmp_path,
        ISO,
        "pump_isolation: {valve: valves:15, fails: closed}\n"
        "carrier_shutoff: {valve: valves:14, fails: closed}",
    )
    res = run_cli("validate", str(RECIPE), "--config", str(path))
    assert res.code == 0, res.err


def test_a_carrier_shutoff_on_another_module_does_not(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    path = variant(
        tmp_path,
        ISO,
        "pump_isolation: {valve: valves:15, fails: closed}\n"
        "carrier_shutoff: {valve: valves2:0, fails: closed}",
    )
    text = path.read_text().replace(
        "devices:\n", "devices:\n  valves2: {driver: modbus-dio, host: 127.0.0.1, port: 15503}\n"
    )
    path.write_text(text)
    res = run_cli("validate", str(RECIPE), "--config", str(path))
    assert res.code == 2
    assert "sealed and fills with carrier" in res.err


def test_the_de_energised_position_must_be_stated(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    path = variant(tmp_path, ISO, "pump_isolation: valves:15")
    res = run_cli("validate", str(RECIPE), "--config", str(path))
    assert res.code == 2
    assert f"{path}:{line_of(path.read_text(), 'pump_isolation:')}:" in res.err
    assert "{valve: valves:15, fails: open} for a normally-open valve" in res.err


def test_a_dose_valve_that_fails_open_is_refused(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    path = variant(
        tmp_path,
        "TMA: {chemical: TMA, valve: valves:0, min_pulse: 10 ms}",
        "TMA: {chemical: TMA, valve: valves:0, min_pulse: 10 ms, fails: open}",
    )
    res = run_cli("validate", str(RECIPE), "--config", str(path))
    assert res.code == 2
    assert "would dose TMA whenever the controller" in res.err


@pytest.mark.parametrize("name", ["hil.yaml", "example-lab.yaml"])
def test_shipped_configs_are_fail_safe(name: str) -> None:
    from aldctl.config import load_tool

    tool = load_tool(ROOT / "config" / name)
    assert tool.fail_safe_problems() == []
    assert tool.pump_isolation is not None
    assert tool.pump_isolation.fails == "open"


def test_validate_reports_recipe_and_config_problems_and_drivers_in_one_pass(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """A misspelled driver used to surface only at `run`, after the recipe was fixed."""
    config = variant(tmp_path, "driver: eurotherm3200", "driver: eurotherm3201")
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("main:\n  - pulse: {TMA: 15}\n")
    res = run_cli("validate", str(recipe), "--config", str(config))
    assert res.code == 2
    assert f"{recipe}:2:" in res.err  # the recipe's problem
    row = line_of(config.read_text(), "eurotherm3201")
    assert f"{config}:{row}:" in res.err  # and the config's, at its line
    assert "no driver 'eurotherm3201' is installed" in res.err
    assert "did you mean 'eurotherm3200'" in res.err
