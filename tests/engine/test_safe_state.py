"""Safe state under every failure (a safety reviewer's fault campaign, issue 8).

Each test here failed on the engine before the fix (commit 39d1077): a full disk skipped the
safe state, a driver's ValueError silenced the safety monitor for the rest of the run, a
dose that tripped the pressure hold was retried for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aldctl.engine.events import StateChanged, StepStarted, UnitDone
from aldctl.engine.journal import Journal
from aldctl.engine.runner import RunResult

Harness = Any
Run = Callable[..., tuple[RunResult, Any]]

AL2O3 = """
params: {cycles: 12, purge: 5 s}
setup:
  - set: {carrier: 20 sccm, substrate: 150 degC, walls: 120 degC}
  - wait_until: {substrate: {within: 2 K, for: 10 s}, timeout: 1 h}
cycles:
  A:
    - pulse: {TMA: 15 ms}
    - purge: $purge
    - pulse: {H2O: 15 ms}
    - purge: $purge
main:
  - cycle: {name: A, repeat: $cycles}
teardown:
  - purge: 20 s
  - purge: 20 s
"""


def heaters_off(tool: Any) -> Any:
    safety = tool.safety.model_copy(update={"heaters_on_safe_state": "off"})
    return tool.model_copy(update={"safety": safety})


async def setpoints(h: Harness) -> dict[str, float | None]:
    out = {}
    for name, tc in h.tool.temperatures.items():
        out[name] = (await tc.read_temperature()).setpoint_c
    return out


PHASES: dict[str, Callable[[Any], bool] | None] = {
    "setup": None,  # the script starts while setup waits for the substrate temperature
    "mid-cycle": lambda e: isinstance(e, StepStarted) and e.phase == "main" and "H2O" in e.label,
    "teardown": lambda e: isinstance(e, StepStarted) and e.phase == "teardown",
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_full_disk_aborts_to_the_safe_state_at_every_phase(
    sim_run: Run, small_fs: Path, fill_disk: Callable[[Path], Path], phase: str
) -> None:
    seen: dict[str, Any] = {}

    async def script(h: Harness) -> None:
        if phase == "mid-cycle":
            await h.until(lambda e: isinstance(e, UnitDone) and e.index == 4)
        when = PHASES[phase]
        if when is not None:
            await h.until(when)
        seen["phase"] = h.runner.current.index if h.runner.current is not None else None
        seen["filler"] = fill_disk(small_fs)
        await h.until(lambda e: isinstance(e, StateChanged) and e.state.terminal)
        await asyncio.sleep(1.0)
        seen["setpoints"] = await setpoints(h)
        seen["valves"] = h.sim.sync().read_valves()
        seen["pump"] = h.sim.sync().read_pump_isolation()
        seen["carrier"] = h.sim.sync().read_mfc("carrier").setpoint_sccm

    result, h = sim_run(AL2O3, script=script, tool_changes=heaters_off, data_dir=small_fs)
    assert result.outcome == "aborted", result.reason
    assert "journal cannot be written" in result.reason
    assert result.journal_error is not None
    assert "full" in result.journal_error  # sqlite: "database or disk is full"
    # The safe state ran although nothing could be journaled: heaters off as configured,
    # every dose valve closed, the pump open.
    assert seen["setpoints"]
    assert all(v is None for v in seen["setpoints"].values()), seen
    assert not any(seen["valves"].values()), seen["valves"]
    assert seen["pump"] is True
    assert seen["carrier"] > 0
    assert not result.safe_state_errors
    expected_units = {"setup": 0, "mid-cycle": 5, "teardown": 12}[phase]
    assert result.units_done == expected_units
    # Once there is room again, the journal reads back whole: no half-written unit.
    seen["filler"].unlink()
    assert h.run_id is not None
    jr = Journal(small_fs)
    try:
        done = jr.done_units(h.run_id)
        assert done == list(range(len(done)))
    finally:
        jr.close()


def test_a_driver_raising_the_unexpected_does_not_silence_the_limits(sim_run: Run) -> None:
    """On 39d1077 one ValueError from the gauge driver ended the safety monitor: a 200 sccm
    leak then ran to 'complete' with no alarm."""

    async def script(h: Harness) -> None:
        gauge = h.tool.gauge
        real = gauge.read_pressure
        calls = {"n": 0}

        async def flaky() -> Any:
            calls["n"] += 1
            if calls["n"] == 3:
                raise ValueError("could not convert string to float: '\\x00\\x13'")
            return await real()

        gauge.read_pressure = flaky  # type: ignore[method-assign]
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 2)
        h.sim.sync().faults.inject("pressure_spike", torr=0.0, leak_sccm=200.0)

    result, h = sim_run(AL2O3, script=script)
    assert result.outcome == "aborted", result.reason
    assert "pressure" in result.reason
    warnings = [e for e in h.events if getattr(e, "severity", "") == "warning"]
    assert any("ValueError" in e.message for e in warnings)


@pytest.mark.parametrize("task", ["safety-monitor", "pulse-monitor", "valve-heartbeat"])
def test_every_supervised_task_that_dies_aborts_the_run_naming_it(
    sim_run: Run, monkeypatch: pytest.MonkeyPatch, task: str
) -> None:
    from aldctl.engine import dosewatch as dosewatch_mod
    from aldctl.engine import safety as safety_mod
    from drivers.simulated import SimValveBank

    class Boom(RuntimeError):
        pass

    if task == "safety-monitor":
        original_eval = safety_mod.Safety.evaluate
        n = {"polls": 0}

        def evaluate(self: Any) -> None:
            n["polls"] += 1
            if n["polls"] == 40:
                raise Boom("limit table corrupted")
            original_eval(self)

        monkeypatch.setattr(safety_mod.Safety, "evaluate", evaluate)
    elif task == "pulse-monitor":
        original_feed = dosewatch_mod.DoseWatch._feed

        def feed(self: Any, tr: Any, value: float, band: float, *, dose: bool) -> None:
            if tr.seen == 3:
                raise Boom("pressure response went NaN")
            original_feed(self, tr, value, band, dose=dose)

        monkeypatch.setattr(dosewatch_mod.DoseWatch, "_feed", feed)
    else:
        # A valve bank with a module watchdog gets a heartbeat task; make its loop die
        # after feeding the module for a while (the built-in tool's simulated module has a
        # 1 s watchdog: a heartbeat that merely hung would let it drop the outputs first).
        monkeypatch.setattr(SimValveBank, "watchdog", True, raising=False)
        original_hb = safety_mod.Safety.heartbeat

        async def heartbeat(self: Any) -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30.0):
                    await original_hb(self)
            raise Boom("heartbeat lost its socket")

        monkeypatch.setattr(safety_mod.Safety, "heartbeat", heartbeat)

    result, h = sim_run(AL2O3)
    assert result.outcome == "aborted", result.reason
    assert f"task '{task}' died: Boom" in result.reason
    assert h.states()[-2:] == ["aborting", "aborted"]


def test_a_dose_that_trips_the_pressure_hold_every_time_aborts_saying_so(sim_run: Run) -> None:
    """On 39d1077 the unit was re-dosed for ever: each hold restarted it and hold_timeout."""
    recipe = """
params: {cycles: 5}
setup: [{set: {carrier: 20 sccm, substrate: 150 degC}}]
cycles:
  A: [{pulse: {TMA: 3 s}}, {purge: 10 s}, {pulse: {H2O: 15 ms}}, {purge: 10 s}]
main: [{cycle: {name: A, repeat: $cycles}}]
"""

    # A 3 s TMA dose peaks at ~4.3 Torr in this chamber: above the 2 Torr hold limit,
    # below the 5 Torr abort. Every retry trips the hold again.
    result, h = sim_run(recipe)
    assert result.outcome == "aborted", result.reason
    assert "dose of TMA trips the pressure hold every time" in result.reason
    assert "pulse too long for this chamber?" in result.reason
    assert h.states().count("held") == 2  # the third trip aborts instead of holding again
    assert result.held_s > 0
    assert result.units_done == 0


def test_validation_predicts_a_dose_that_peaks_above_the_hold_limit(
    run_cli: Callable[..., Any],
) -> None:
    recipe = str(Path(__file__).resolve().parents[2] / "recipes" / "al2o3_tma_h2o.yaml")
    long = run_cli("validate", recipe, "--set", "tma_pulse=3 s")
    assert long.code == 0
    assert "warning: a 3 s dose of TMA peaks at 4.3 Torr" in long.err
    assert "above the 2 Torr hold limit" in long.err
    row = next(  # at the pulse step
        i for i, ln in enumerate(Path(recipe).read_text().splitlines(), 1) if "{TMA:" in ln
    )
    assert f"al2o3_tma_h2o.yaml:{row}:" in long.err
    short = run_cli("validate", recipe)
    assert "peaks at" not in short.err
