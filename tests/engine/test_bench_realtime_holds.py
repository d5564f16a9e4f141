"""`aldctl bench realtime` on a run that was held: it says so, and its timing figures are
measured as the bench intends.

A reviewer's run printed `pulses: 302` and `drift_ms: 6121.7` as if they were timing
figures: a late close had overdosed TMA, the pressure hold tripped, the unit was retried
from its start (its doses again) after ~6 s held. Here the bench's own recipe runs through
the real engine and in-process simulator (virtual time, so the schedule itself is exact)
with a pressure burst that trips the same hold; the figures come from the same function
``bench realtime`` uses on its wall-clock run.
"""

from __future__ import annotations

from pathlib import Path

from aldctl.engine.clock import run_virtual
from aldctl.engine.events import Event, EventBus
from aldctl.front.bench import REALTIME_RECIPE, realtime_figures
from aldctl.session import FaultSpec, RunRequest, execute, prepare

CYCLES = 20


def _run(tmp_path: Path, faults: tuple[FaultSpec, ...]) -> dict[str, object]:
    path = tmp_path / "recipe.yaml"
    path.write_text(REALTIME_RECIPE)
    prepared = prepare(path, None, [f"cycles={CYCLES}"])
    bus = EventBus()
    events: list[Event] = []
    bus.listen(events.append)
    req = RunRequest(prepared, realtime=False, seed=0, faults=faults)
    result = run_virtual(execute(req, None, bus=bus))
    assert result.outcome == "complete", result.reason
    return realtime_figures(result, events, CYCLES, "virtual")


def test_a_held_run_reports_its_hold_and_the_redosed_pulses_not_a_drift(
    tmp_path: Path,
) -> None:
    # a burst above the built-in tool's 2 Torr hold, in cycle 10's second purge
    row = _run(tmp_path, (FaultSpec.parse("pressure_spike@2.0+0.3,torr=3"),))
    assert row["holds"] == 1
    (hold,) = row["hold_details"]  # type: ignore[misc]
    assert "above 2 Torr" in hold["reason"]
    assert hold["held_s"] > 1.0
    # the retried unit dosed TMA and H2O again: 42 pulses for 40 planned, and said so
    assert row["pulses_planned"] == 2 * CYCLES
    assert row["pulses"] == 2 * CYCLES + 2
    assert row["pulses_redosed"] == 2
    # the drift is the schedule's, from the resume: the seconds held are not "drift"
    assert row["drift_from"] == "the last resume after a hold"
    assert abs(row["drift_ms"]) < 1e-3, row  # type: ignore[arg-type]
    assert abs(row["drift_from_anchor_ms"]) < 1e-3, row  # type: ignore[arg-type]


def test_an_undisturbed_run_reports_no_hold_and_its_drift_from_main(tmp_path: Path) -> None:
    row = _run(tmp_path, ())
    assert row["holds"] == 0
    assert row["hold_details"] == []
    assert row["pulses"] == row["pulses_planned"] == 2 * CYCLES
    assert row["pulses_redosed"] == 0
    assert row["drift_from"] == "main"
    assert abs(row["drift_ms"]) < 1e-3, row  # type: ignore[arg-type]
