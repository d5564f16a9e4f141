"""The tool's interlock inputs, read by the safety monitor: a toxic-gas alarm or a lost
exhaust mid-run aborts the run to the safe state, naming the interlock (the simulated tool
emulates both inputs; the alarm is an injected fault)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aldctl.engine.events import State, StateChanged, UnitDone
from aldctl.engine.runner import RunResult

Harness = Any
Run = Callable[..., tuple[RunResult, Harness]]

LI2S = """
params: {cycles: 10}
setup:
  - set: {carrier: 20 sccm, substrate: 150 degC, source.LiOtBu: 140 degC, line.LiOtBu: 155 degC}
  - wait_until: {substrate: {within: 2 K, for: 10 s}, timeout: 1 h}
cycles:
  A:
    - pulse: {LiOtBu: 1 s}
    - purge: 5 s
    - pulse: {H2S: 200 ms}
    - purge: 5 s
main:
  - cycle: {name: A, repeat: $cycles}
"""


@pytest.mark.parametrize(
    ("fault", "interlock", "label"),
    [
        ("toxic_gas_alarm", "toxic_gas_detector", "toxic-gas detector"),
        ("exhaust_flow_loss", "exhaust_flow", "exhaust flow switch"),
    ],
)
def test_an_interlock_tripping_mid_run_aborts_naming_it(
    sim_run: Run, fault: str, interlock: str, label: str
) -> None:
    seen: dict[str, Any] = {}

    async def script(h: Harness) -> None:
        import asyncio

        await h.until(lambda e: isinstance(e, UnitDone) and e.index == 2)
        h.sim.sync().faults.inject(fault)
        await h.until(lambda e: isinstance(e, StateChanged) and e.state is State.ABORTED)
        await asyncio.sleep(0.05)  # the valves' dead time and stroke
        seen["valves"] = h.sim.sync().read_valves()

    result, _ = sim_run(LI2S, script=script)
    assert result.outcome == "aborted"
    assert f"interlock {interlock}: the {label} tripped" in (result.reason or "")
    assert 3 <= result.units_done < 10  # within a poll of the alarm, not at the end
    assert not any(v for k, v in seen["valves"].items() if k != "pump"), seen["valves"]


def test_a_healthy_tool_runs_through(sim_run: Run) -> None:
    result, _ = sim_run(LI2S, sets=("cycles=3",))
    assert result.outcome == "complete", result.reason
