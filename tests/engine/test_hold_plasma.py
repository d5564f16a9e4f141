"""A hold that lands in a plasma step: the safety monitor holds the run because the chamber
is out of band, so the RF must go off with the dose valves. On 3a00638 the hold closed the
dose valves only and the plasma burned on, at an out-of-band pressure, for the whole hold."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aldctl.engine.events import Alarm, State, StateChanged, StepStarted, UnitStarted
from aldctl.engine.runner import RunResult
from tests.conftest import RECIPES
from tests.engine.conftest import Harness

Run = Callable[..., tuple[RunResult, Harness]]
PEALD = RECIPES / "coatings" / "al2o3_peald_li_metal.yaml"


def test_a_hold_during_a_plasma_step_turns_the_rf_off(sim_run: Run) -> None:
    seen: dict[str, bool] = {}

    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitStarted) and e.index == 3)
        # the plasma step of this unit: its gas stabilises first, then the RF is lit
        await h.until(lambda e: isinstance(e, StepStarted) and "plasma" in e.label)
        for _ in range(200):  # virtual time: polls the model until the RF is lit
            if h.sim.sync().read_plasma().on:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        seen["rf_before"] = h.sim.sync().read_plasma().on
        # the gauge reads 2 Torr more than the chamber holds: out of band until cleared
        fault = h.sim.sync().faults.inject("gauge_drift", "chamber", offset_torr=2.0)
        await h.until(lambda e: isinstance(e, StateChanged) and e.state is State.HELD)
        seen["rf_held"] = h.sim.sync().read_plasma().on
        seen["o2_held"] = h.sim.sync().read_mfc("plasma.O2").setpoint_sccm
        await asyncio.sleep(5.0)
        seen["rf_later"] = h.sim.sync().read_plasma().on
        h.sim.sync().faults.clear(fault)

    result, h = sim_run(PEALD, sets=("cycles=6",), script=script)
    holds = [e for e in h.events if isinstance(e, Alarm) and e.severity == "hold"]
    assert holds, [e for e in h.events if isinstance(e, Alarm | StateChanged)]
    assert holds[0].source == "pressure"
    assert seen["rf_before"] is True  # the hold did land in the plasma
    assert seen["rf_held"] is False
    # nor its feed gas: the retried unit starts with its TMA dose
    assert seen["o2_held"] == 0.0
    assert seen["rf_later"] is False
    # back in band, the plasma step is retried from its start and the run completes
    assert result.outcome == "complete", result.reason


def test_each_step_is_announced_when_it_begins(sim_run: Run) -> None:
    # The console's "step" line and the fault campaign's phases read these announcements.
    # On 3a00638 a step was announced when the executor began waiting for its first edge:
    # the plasma step at the start of the 5 s purge before it.
    result, h = sim_run(PEALD, sets=("cycles=2",))
    assert result.outcome == "complete", result.reason
    units = [e for e in h.events if isinstance(e, UnitStarted)]
    steps = [e for e in h.events if isinstance(e, StepStarted) and e.phase == "main"]
    assert len(units) == 2
    for u in units:
        mine = [e for e in steps if u.t <= e.t < u.t + u.duration_s]
        # pulse 15 ms, purge 5 s, plasma 2 s of gas + 5 s of RF, purge 5 s
        assert [e.label for e in mine] == [
            "pulse TMA 15 ms",
            "purge 5 s",
            "O2 plasma 200 W 5 s",
            "purge 5 s",
        ]
        starts = [round(e.t - u.t, 3) for e in mine]
        assert starts == [0.0, 0.015, 5.015, 12.015]
        assert [e.duration_s for e in mine] == [0.015, 5.0, 7.0, 5.0]
