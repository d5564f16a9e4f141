"""Per-pulse diagnostics: injected delivery faults are named within a few cycles of their
onset; healthy runs raise nothing (the clean-run campaign is tests/engine/test_clean_runs.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aldctl.engine.events import Alarm, UnitDone, UnitStarted
from aldctl.engine.runner import RunResult
from tests.conftest import RECIPES
from tests.engine.conftest import Harness

Run = Callable[..., tuple[RunResult, Harness]]
AL2O3 = RECIPES / "al2o3_tma_h2o.yaml"
ONSET = 12
DETECT_WITHIN = 4
"""Cycles from a fault's onset to its alarm (the note's N)."""


def _detect(sim_run: Run, kind: str, line: str, **params: float) -> tuple[list[Alarm], int]:
    """Inject ``kind`` on ``line`` as cycle ONSET starts; the alarms on that line, and the
    cycle the first of them came in."""
    where: dict[str, int] = {}

    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitStarted) and e.index == ONSET)
        h.sim.sync().faults.inject(kind, line, **params)

    result, h = sim_run(AL2O3, sets=("cycles=24",), script=script)
    assert result.outcome == "complete", result.reason
    unit = 0
    alarms: list[Alarm] = []
    for e in h.events:
        if isinstance(e, UnitDone):
            unit = e.index + 1
        if isinstance(e, Alarm) and e.source == line:
            where.setdefault("first", unit)
            alarms.append(e)
    assert alarms, f"{kind} on {line} raised nothing"
    return alarms, where["first"]


@pytest.mark.parametrize(
    ("kind", "params", "severity", "words"),
    [
        ("empty_source", {}, "alarm", "may not have opened"),
        ("valve_stuck_closed", {}, "alarm", "may not have opened"),
        ("cold_source", {}, "alarm", "far too cold"),
        ("cold_source", {"drop_k": 10.0}, "warning", "source emptying or cooling"),
        # A 15 ms dose through a valve three times slower than its 5 ms dead time hardly
        # opens it at all; one 1.5 times slower delivers part of the dose.
        ("valve_slow", {"factor": 3.0}, "alarm", "may not have opened"),
        ("valve_slow", {"factor": 1.5}, "warning", "valve degrading"),
    ],
)
def test_a_delivery_fault_is_named_within_a_few_cycles(
    sim_run: Run, kind: str, params: dict[str, float], severity: str, words: str
) -> None:
    alarms, cycle = _detect(sim_run, kind, "TMA", **params)
    first = alarms[0]
    print(f"{kind}: onset cycle {ONSET}, detected in cycle {cycle}: {first.message}")
    assert ONSET <= cycle <= ONSET + DETECT_WITHIN
    assert first.severity == severity
    assert words in first.message
    assert first.message.startswith("TMA")


def test_a_healthy_run_with_one_second_purges_raises_nothing(sim_run: Run) -> None:
    # On bfba29c this run warned "source empty or cold" for both lines: the pulse monitor
    # sampled into the next dose and took the safety poll's reading as its baseline.
    result, h = sim_run(AL2O3, sets=("cycles=60", "purge=1 s"))
    assert result.outcome == "complete"
    assert result.warnings == []
    assert not [e for e in h.events if isinstance(e, Alarm)]


def test_the_remaining_doses_warn_before_the_source_runs_out(sim_run: Run) -> None:
    from aldctl.engine.runner import RunOptions

    opts = RunOptions(dose_grams={"TMA": 1e-3}, pulses_planned={"TMA": 40, "H2O": 40})

    def small_source(tool):  # type: ignore[no-untyped-def]
        lines = dict(tool.lines)
        lines["TMA"] = lines["TMA"].model_copy(update={"source_mass": 0.02})
        return tool.model_copy(update={"lines": lines})

    result, _ = sim_run(AL2O3, sets=("cycles=40",), options=opts, tool_changes=small_source)
    short = [w for w in result.warnings if "doses left" in w]
    assert len(short) == 1
    assert "runs out before the recipe ends" in short[0]


def test_a_heated_source_whose_heater_fails_is_named_as_it_cools(sim_run: Run) -> None:
    """LiTaOx: the TaOEt5 source heater's element opens at unit 21; the source cools over
    minutes, and the warning comes within a few Ta2O5 doses (the film is not yet ruined)."""
    onset = 21
    seen: list[tuple[int, Alarm]] = []

    async def script(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitStarted) and e.index == onset)
        h.sim.sync().faults.inject("cold_source", "TaOEt5")

    result, h = sim_run(RECIPES / "litaox_1_6.yaml", sets=("supercycles=5",), script=script)
    assert result.outcome == "complete", result.reason
    unit = 0
    for e in h.events:
        if isinstance(e, UnitStarted):
            unit = e.index
        if isinstance(e, Alarm):
            seen.append((unit, e))
    assert seen, "the cooling source raised nothing"
    first_unit, first = seen[0]
    print(f"TaOEt5 heater off at unit {onset}: {first.severity} in unit {first_unit}")
    assert first.source == "TaOEt5"
    assert "TaOEt5 (in Ta2O5 cycles)" in first.message
    assert "source emptying or cooling" in first.message
    assert onset < first_unit <= onset + 6
