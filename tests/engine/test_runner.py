"""The run engine on the simulated reactor, in virtual time: states, timing, faults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aldctl.engine.events import Alarm, PulseDone, State, StateChanged, StepStarted, UnitDone
from aldctl.engine.runner import RunResult

Harness = Any  # tests/engine/conftest.py: the run harness (importlib mode: no import)

AL2O3 = """
params: {cycles: 10, purge: 5 s}
setup:
  - set: {carrier: 20 sccm, substrate: 150 degC}
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
  - purge: 10 s
"""

SUPER = """
setup:
  - set: {carrier: 20 sccm, substrate: 150 degC}
  - wait_until: {substrate: {within: 2 K, for: 10 s}, timeout: 1 h}
cycles:
  A: [{pulse: {TMA: 15 ms}}, {purge: 5 s}, {pulse: {H2O: 15 ms}}, {purge: 5 s}]
  B: [{pulse: {DEZ: 15 ms}}, {purge: 5 s}, {pulse: {H2O: 15 ms}}, {purge: 5 s}]
main:
  - supercycle: {ratio: {A: 1, B: 3}, order: blocked, repeat: 5}
teardown:
  - purge: 10 s
"""

Run = Callable[..., tuple[RunResult, Harness]]


def test_complete_run_is_journaled_once_per_unit(sim_run: Run) -> None:
    result, h = sim_run(AL2O3)
    assert result.outcome == "complete"
    assert (result.units_done, result.cycles_completed) == (10, 10)
    assert h.journal is not None
    assert h.run_id is not None
    assert h.journal.done_units(h.run_id) == list(range(10))
    pulses = h.journal.pulses(h.run_id)
    assert [p.line for p in pulses] == ["TMA", "H2O"] * 10
    # In-process, virtual time: every valve moved exactly at its deadline.
    assert all(p.achieved_open == p.commanded_open for p in pulses)
    assert all(abs(p.achieved_close - p.achieved_open - 0.015) < 1e-9 for p in pulses)
    assert all(p.area_torr_s is not None and p.area_torr_s > 0 for p in pulses)
    assert h.states() == ["starting", "running", "complete"]
    assert h.states() == ["starting", "running", "complete"]
    assert result.simulation is not None
    # ~1 A per cycle of Al2O3 at 150 degC
    assert 0.8 < result.simulation["thickness_nm"] < 1.2


def test_deadlines_do_not_drift_over_a_thousand_cycles(sim_run: Run) -> None:
    result, h = sim_run(AL2O3, sets=("cycles=1000",), journal=False)
    assert result.outcome == "complete"
    sched = h.runner.schedule
    # The run lasts its planned time plus the substrate heat-up the setup waited for, to
    # float rounding: no drift over 1000 cycles.
    waited = next(e.t for e in h.events if isinstance(e, StateChanged) and e.state is State.RUNNING)
    planned_after_setup = (sched.min_duration_ns - sched.setup.min_ns) / 1e9
    assert abs(result.process_s - waited - planned_after_setup) < 1e-6


def test_pause_during_a_purge_waits_for_the_checkpoint(sim_run: Run) -> None:
    times: dict[str, float] = {}

    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 1)
        # 6 s into unit 2: inside its second purge
        await h.until(
            lambda e: (
                isinstance(e, StepStarted)
                and e.label.startswith("purge")
                and h.runner.current is not None
                and h.runner.current.index == 2
            )
        )
        await h.until(lambda e: isinstance(e, StepStarted) and e.label.startswith("purge"))
        times["asked"] = h.runner.now()
        h.control.pause()
        assert h.control.state is State.PAUSING
        paused = await h.until(lambda e: isinstance(e, StateChanged) and e.state is State.PAUSED)
        times["paused"] = paused.t
        actuations = dict(h.sim.reactor.truth().valve_actuations)
        import asyncio
        import threading

        # The operator comes back after 0.3 s of wall time: a resume from outside the loop
        # (as a key press or an operator API message is), the only thing that can wake a
        # paused virtual-time run.
        loop = asyncio.get_running_loop()
        t_before = loop.time()
        timer = threading.Timer(0.3, lambda: loop.call_soon_threadsafe(h.control.resume))
        timer.start()
        seen: dict[str, int] = {}

        def resumed(e: Any) -> bool:
            if isinstance(e, StateChanged) and e.state is State.RUNNING:
                seen.update(h.sim.reactor.truth().valve_actuations)  # before the next pulse
                return True
            return False

        await h.until(resumed)
        times["frozen_for"] = loop.time() - t_before
        assert seen == actuations

    result, h = sim_run(AL2O3, script=script)
    assert result.outcome == "complete"
    assert result.units_done == 10
    # The pause took effect at the end of unit 2 (3 x 10.03 s after setup), not when asked.
    t_main = next(e.t for e in h.events if isinstance(e, StateChanged) and e.state is State.RUNNING)
    assert times["asked"] < t_main + 3 * 10.03 < times["paused"] + 1e-6
    assert abs(times["paused"] - (t_main + 3 * 10.03)) < 0.01
    assert h.states() == ["starting", "running", "paused", "running", "complete"]
    # Found by a campaign: a 15 s pause added 2.8 days of process time (the idle virtual
    # loop raced ahead). Paused, the process clock stands still; the pause is recorded apart.
    assert times["frozen_for"] == 0.0
    assert result.process_s == pytest.approx(t_main + 10 * 10.03 + 10.0, abs=0.1)
    assert 0.25 < result.paused_s < 5.0


def test_stop_during_a_supercycle_finishes_it_then_tears_down(sim_run: Run) -> None:
    async def script(h: Harness) -> None:
        # second subcycle of the second supercycle (unit 5 of A B B B | A B B B ...)
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 5)
        h.control.stop()

    result, h = sim_run(SUPER, script=script)
    assert result.outcome == "stopped"
    assert result.units_done == 8  # the whole second supercycle
    assert result.cycles_completed == 2
    labels = [e.label for e in h.events if isinstance(e, StepStarted)]
    assert labels[-1] == "purge 10 s"  # teardown ran
    assert h.states()[-2:] == ["stopping", "stopped"]


def test_abort_during_a_pulse_closes_the_valve_at_once(sim_run: Run) -> None:
    recipe = """
setup: [{set: {substrate: 225 degC, source.LiOtBu: 140 degC, line.LiOtBu: 155 degC}}]
cycles:
  L: [{pulse: {LiOtBu: 4 s}}, {purge: 10 s}, {pulse: {H2O: 50 ms}}, {purge: 10 s}]
main: [{cycle: {name: L, repeat: 5}}]
"""
    seen: dict[str, Any] = {}

    async def script(h: Harness) -> None:
        import asyncio

        await h.until(lambda e: isinstance(e, StepStarted) and e.label.startswith("pulse LiOtBu"))
        await asyncio.sleep(1.0)  # one second into a four-second dose
        r = h.sim.reactor
        assert r.read_valves()["LiOtBu"] is True
        seen["t_abort"] = asyncio.get_running_loop().time()
        h.control.abort("test abort")
        await h.until(lambda e: isinstance(e, StateChanged) and e.state is State.ABORTED)
        seen["t_done"] = asyncio.get_running_loop().time()
        # The close was commanded at once; the valve itself needs its dead time and stroke.
        await asyncio.sleep(0.02)
        seen["valves"] = h.sim.sync().read_valves()

    result, _ = sim_run(recipe, script=script)
    assert result.outcome == "aborted"
    assert "test abort" in result.reason
    # The in-process driver has no round-trip time: the safe state closed it at once.
    assert seen["t_done"] - seen["t_abort"] < 1e-6
    assert not any(v for k, v in seen["valves"].items() if k != "pump"), seen["valves"]


def test_hold_and_auto_resume_on_a_pressure_excursion(sim_run: Run) -> None:
    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 2)
        # A 30 s leak (vent valve left cracked): ~3 Torr, above the 2 Torr hold limit and
        # below the 5 Torr abort.
        h.sim.sync().faults.inject(
            "pressure_spike", torr=0.0, leak_sccm=90.0, duration_ns=30 * 10**9
        )

    result, h = sim_run(AL2O3, script=script)
    assert result.outcome == "complete", result.reason
    assert result.units_done == 10
    states = h.states()
    assert "held" in states
    assert states[-1] == "complete"
    held = next(e for e in h.events if isinstance(e, StateChanged) and e.state is State.HELD)
    assert "pressure" in held.reason
    assert h.journal is not None
    assert h.run_id is not None
    assert h.journal.done_units(h.run_id) == list(range(10))  # none lost, none doubled


def test_hold_that_never_clears_aborts_after_the_timeout(sim_run: Run) -> None:
    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 1)
        h.sim.sync().faults.inject("pressure_spike", torr=0.0, leak_sccm=90.0)

    def short_hold(tool: Any) -> Any:
        # the leak keeps the chamber above the hold limit: recover_within (30 s) would end
        # it first, so it is set out of the way of the timeout under test
        pressure = tool.limits.pressure.model_copy(update={"recover_within": 1e4})
        limits = tool.limits.model_copy(update={"hold_timeout": 120.0, "pressure": pressure})
        return tool.model_copy(update={"limits": limits})

    result, h = sim_run(AL2O3, script=script, tool_changes=short_hold)
    assert result.outcome == "aborted"
    assert "hold timed out after 120 s" in result.reason
    assert h.states()[-3:] == ["held", "aborting", "aborted"]


def test_device_that_stops_answering_aborts_naming_it(sim_run: Run) -> None:
    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 2)
        h.sim.sync().faults.inject("comm_timeout", "chamber")

    result, _ = sim_run(AL2O3, script=script)
    assert result.outcome == "aborted"
    assert "device 'gauge' stopped answering" in result.reason


def test_heater_runaway_aborts(sim_run: Run) -> None:
    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 1)
        h.sim.sync().faults.inject("heater_runaway", "walls")

    result, _ = sim_run(AL2O3, sets=("cycles=200",), script=script)
    assert result.outcome == "aborted"
    assert "over-temperature on walls" in result.reason


def test_thermocouple_break_aborts(sim_run: Run) -> None:
    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 1)
        h.sim.sync().faults.inject("thermocouple_break", "substrate")

    result, _ = sim_run(AL2O3, script=script)
    assert result.outcome == "aborted"
    assert "thermocouple break on substrate" in result.reason


def test_valve_stuck_open_trips_the_pressure_limit(sim_run: Run) -> None:
    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 1)
        h.sim.sync().faults.inject("valve_stuck_open", "TMA")

    result, h = sim_run(AL2O3, sets=("cycles=50",), script=script)
    assert result.outcome == "aborted"
    # the pressure hold closes the dose valves and reads them back: TMA's still reads
    # open, and the run ends at once naming it (it used to sit out the 600 s hold timeout)
    assert any(isinstance(e, Alarm) and e.severity == "hold" for e in h.events)
    assert result.reason.startswith("dose valve TMA stuck open"), result.reason
    assert "chamber pressure" in result.reason
    assert result.held_s < 5.0


def outputs_only(tool: Any) -> Any:
    """No limit switches on the valves: the module reads back what it drives (as a WAGO
    coupler at 0x200), and a valve stuck open reads closed."""
    from aldctl.config import DeviceSpec

    spec = tool.devices["valves"]
    valves = DeviceSpec(driver=spec.driver, **{**spec.options, "position_inputs": False})
    devices = {**tool.devices, "valves": valves}
    return tool.model_copy(update={"devices": devices})


def test_a_valve_stuck_open_that_the_module_cannot_see_aborts_once_the_hold_cannot_pump_down(
    sim_run: Run,
) -> None:
    # Before (main 049af87): with no position read-back the hold saw nothing wrong and sat
    # out its 600 s timeout while TMA flowed into the chamber.
    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 1)
        h.sim.sync().faults.inject("valve_stuck_open", "TMA")

    result, h = sim_run(AL2O3, sets=("cycles=50",), script=script, tool_changes=outputs_only)
    assert result.outcome == "aborted"
    assert any(isinstance(e, Alarm) and e.severity == "hold" for e in h.events)
    assert "still above the 2 Torr hold limit" in result.reason, result.reason
    assert "TMA was dosed last" in result.reason
    assert "close the sources' manual valves" in result.reason
    assert 29.0 <= result.held_s < 35.0, result.held_s  # not the 600 s hold_timeout


def test_a_pressure_hold_that_pumps_down_is_not_cut_short(sim_run: Run) -> None:
    # The rule must leave a hold that recovers alone: a leak closed after 25 s (inside the
    # 30 s) pumps down and the run completes.
    async def script(h: Harness) -> None:
        import asyncio

        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 1)
        fault = h.sim.sync().faults.inject("pressure_spike", torr=0.0, leak_sccm=90.0)
        await h.until(lambda e: isinstance(e, StateChanged) and e.state is State.HELD)
        await asyncio.sleep(25.0)
        h.sim.sync().faults.clear(fault)

    result, _ = sim_run(AL2O3, script=script)
    assert result.outcome == "complete", result.reason
    assert result.units_done == 10


def test_a_pressure_maximum_that_holds_is_not_released_while_the_chamber_is_above_it(
    sim_run: Run,
) -> None:
    # limits.pressure {max, action: hold} and no hold_above. Before (main 049af87) the
    # hold's limit gave no hold reason: "back in band, resuming" after resume_after with
    # the chamber still above max, every retry tripped it again, and the run ended on
    # hold_retries with a wrong diagnosis; recover_within never applied.
    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 1)
        h.sim.sync().faults.inject("pressure_spike", torr=0.0, leak_sccm=90.0)

    def hold_at_max(tool: Any) -> Any:
        from aldctl.config import LimitAction

        pressure = tool.limits.pressure.model_copy(
            update={"max": 2.0, "hold_above": None, "action": LimitAction.HOLD}
        )
        return tool.model_copy(
            update={"limits": tool.limits.model_copy(update={"pressure": pressure})}
        )

    result, h = sim_run(AL2O3, script=script, tool_changes=hold_at_max)
    assert result.outcome == "aborted"
    assert "still above the 2 Torr hold limit" in result.reason, result.reason
    resumed = [e for e in h.events if isinstance(e, Alarm) and "resuming" in e.message]
    assert resumed == []
    assert h.states().count("held") == 1


def test_low_mfc_holds_and_resumes_when_cleared(sim_run: Run) -> None:
    async def script(h: Harness) -> None:
        import asyncio

        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 1)
        fault = h.sim.sync().faults.inject("mfc_low", "carrier", max_sccm=12.0)
        await h.until(lambda e: isinstance(e, StateChanged) and e.state is State.HELD)
        await asyncio.sleep(60.0)
        h.sim.sync().faults.clear(fault)

    result, h = sim_run(AL2O3, script=script)
    assert result.outcome == "complete", result.reason
    held = next(e for e in h.events if isinstance(e, StateChanged) and e.state is State.HELD)
    assert "carrier flow" in held.reason
    assert result.units_done == 10


def test_empty_source_warns_from_the_pulse_records(sim_run: Run) -> None:
    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 10)
        h.sim.sync().faults.inject("empty_source", "TMA")

    result, h = sim_run(AL2O3, sets=("cycles=25",), script=script)
    assert result.outcome == "complete"
    assert any(w.startswith("TMA: TMA (in A cycles): no pressure") for w in result.warnings)
    alarms = [e for e in h.events if isinstance(e, Alarm) and e.source == "TMA"]
    assert alarms
    assert h.journal is not None
    assert h.run_id is not None
    areas = [p.area_torr_s for p in h.journal.pulses(h.run_id, "TMA")]
    assert areas[5] is not None
    assert areas[-1] is not None
    assert areas[-1] < 0.3 * areas[5]


def test_plasma_that_does_not_ignite_aborts(sim_run: Run) -> None:
    recipe = """
setup: [{set: {carrier: 20 sccm, substrate: 150 degC}}]
cycles:
  P:
    - pulse: {TMA: 20 ms}
    - purge: 5 s
    - plasma: {gas: O2, flow: 20 sccm, power: 300 W, time: 4 s, stabilize: 2 s}
    - purge: 5 s
main: [{cycle: {name: P, repeat: 5}}]
"""

    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 1)
        h.sim.sync().faults.inject("plasma_no_ignite")

    result, _ = sim_run(recipe, script=script)
    assert result.outcome == "aborted"
    assert "plasma did not ignite" in result.reason


def test_plasma_recipe_completes(sim_run: Run) -> None:
    recipe = """
setup: [{set: {carrier: 20 sccm, substrate: 150 degC}}]
cycles:
  P:
    - pulse: {TMA: 20 ms}
    - purge: 5 s
    - plasma: {gas: O2, flow: 20 sccm, power: 300 W, time: 4 s, stabilize: 2 s}
    - purge: 5 s
main: [{cycle: {name: P, repeat: 5}}]
"""
    result, _ = sim_run(recipe)
    assert result.outcome == "complete", result.reason


def test_pulse_events_report_zero_error_in_virtual_time(sim_run: Run) -> None:
    result, h = sim_run(AL2O3, journal=False)
    pulses = [e for e in h.events if isinstance(e, PulseDone)]
    assert len(pulses) == 20
    assert result.pulse_timing["pulses"] == 20
    assert result.pulse_timing["width_error_ms"]["max"] < 1e-6


@pytest.mark.parametrize("verb", ["resume", "clear"])
def test_operator_commands_refused_in_the_wrong_state(verb: str) -> None:
    from aldctl.engine.control import CommandRefused, RunControl

    c = RunControl()
    c.state = State.RUNNING
    with pytest.raises(CommandRefused):
        getattr(c, verb)()
