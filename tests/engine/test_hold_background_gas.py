"""A hold stops every plasma gas; one the recipe set in its setup (a continuous argon
background, the usual PEALD pattern) is not the retried unit's to send again, so the hold
gives it back. Before the fix (main 9389f7f) the argon stayed off for the rest of the run and
the run completed without a word."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aldctl.engine.events import State, StateChanged, StepStarted, UnitStarted
from aldctl.engine.runner import RunResult
from tests.engine.conftest import Harness

Run = Callable[..., tuple[RunResult, Harness]]

RECIPE = """
name: PEALD with an argon background
params: {cycles: 6}
setup:
  - set: {carrier: 20 sccm, plasma.Ar: 30 sccm, walls: 120 degC, substrate: 150 degC}
cycles:
  c:
    - pulse: {TMA: 15 ms}
    - purge: 5 s
    - plasma: {gas: O2, flow: 20 sccm, power: 200 W, time: 5 s}
    - purge: 5 s
main:
  - cycle: {name: c, repeat: $cycles}
teardown:
  - set: {substrate: off, walls: off}
"""


def test_a_hold_gives_a_background_plasma_gas_back_and_not_the_steps_own(sim_run: Run) -> None:
    seen: dict[str, float] = {}

    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitStarted) and e.index == 3)
        seen["ar_before"] = h.sim.sync().read_mfc("plasma.Ar").setpoint_sccm
        await h.until(lambda e: isinstance(e, StepStarted) and "plasma" in e.label)
        await asyncio.sleep(3.0)
        fault = h.sim.sync().faults.inject("gauge_drift", "chamber", offset_torr=2.0)
        await h.until(lambda e: isinstance(e, StateChanged) and e.state is State.HELD)
        seen["ar_held"] = h.sim.sync().read_mfc("plasma.Ar").setpoint_sccm
        await asyncio.sleep(5.0)
        h.sim.sync().faults.clear(fault)
        await h.until(lambda e: isinstance(e, StateChanged) and e.state is State.RUNNING)
        seen["ar_resumed"] = h.sim.sync().read_mfc("plasma.Ar").setpoint_sccm
        seen["o2_resumed"] = h.sim.sync().read_mfc("plasma.O2").setpoint_sccm
        await h.until(lambda e: isinstance(e, UnitStarted) and e.index == 5)
        seen["ar_later"] = h.sim.sync().read_mfc("plasma.Ar").setpoint_sccm

    result, _ = sim_run(RECIPE, script=script)
    assert result.outcome == "complete", result.reason
    assert seen["ar_before"] == 30.0
    assert seen["ar_held"] == 0.0  # nothing feeds a plasma through a hold
    assert seen["ar_resumed"] == 30.0
    assert seen["o2_resumed"] == 0.0  # the step's own gas waits for its step
    assert seen["ar_later"] == 30.0
