"""A pressure burst above the hold limit that the chamber pumps away between two 1 s safety
polls: the pulse monitor's gauge reads after each dose, and the pressure watch
(``safety.pressure_interval``) between polls, apply the safety monitor's limits. On 0461154
both runs below completed without a hold (nothing but the 1 s poll compared a reading with
the limits)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aldctl.engine.events import Alarm, DoseStarted, UnitStarted
from aldctl.engine.runner import RunResult
from tests.conftest import RECIPES
from tests.engine.conftest import Harness

Run = Callable[..., tuple[RunResult, Harness]]
AL2O3 = RECIPES / "al2o3_tma_h2o.yaml"


def _holds(h: Harness) -> list[Alarm]:
    return [e for e in h.events if isinstance(e, Alarm) and e.severity == "hold"]


def test_a_burst_just_after_a_dose_is_held_by_the_pulse_monitors_reads(sim_run: Run) -> None:
    # the built-in tool as shipped: 1 s polls, no pressure watch
    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitStarted) and e.index == 5)
        await h.until(lambda e: isinstance(e, DoseStarted) and e.line == "TMA")
        h.sim.sync().faults.inject("pressure_spike", "chamber", torr=2.0)

    result, h = sim_run(AL2O3, sets=("cycles=10",), script=script)
    holds = _holds(h)
    assert holds, [e.message for e in h.events if isinstance(e, Alarm)]
    assert holds[0].source == "pressure"
    # the safety monitor's reason, word for word
    assert holds[0].message.startswith("chamber pressure ")
    assert holds[0].message.endswith(" Torr above 2 Torr")
    assert result.outcome == "complete", result.reason  # held, back in band, resumed
    assert result.held_s > 0


def test_a_burst_mid_purge_is_held_by_the_pressure_watch(sim_run: Run) -> None:
    def fast(tool: Any) -> Any:
        return tool.model_copy(
            update={"safety": tool.safety.model_copy(update={"pressure_interval": 0.1})}
        )

    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitStarted) and e.index == 5)
        await h.until(lambda e: isinstance(e, DoseStarted) and e.line == "TMA")
        await asyncio.sleep(2.0)  # virtual: mid-purge, the dose's reads are over
        h.sim.sync().faults.inject("pressure_spike", "chamber", torr=2.0)

    result, h = sim_run(AL2O3, sets=("cycles=10",), script=script, tool_changes=fast)
    holds = _holds(h)
    assert holds, [e.message for e in h.events if isinstance(e, Alarm)]
    assert holds[0].message.endswith(" Torr above 2 Torr")
    assert result.outcome == "complete", result.reason
