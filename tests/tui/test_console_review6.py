"""Review 6 of d1d9156 (the console never draws a dose valve open once the state has left
the states that dose). The rule draws what was commanded; a valve the safe state reported
it could not close is then drawn closed beside ABORTED. Fails on d1d9156 (and 5513b8a)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aldctl.front.tui.app import Console

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "al2o3_tma_h2o.yaml"


async def until(pilot: Any, pred: Callable[[], bool], what: str, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def synoptic_text(app: Console) -> str:
    from textual.widgets import Static

    return str(app.query_one("#synoptic", Static).render())


async def test_a_valve_the_safe_state_could_not_close_is_not_drawn_closed(tmp_path: Path) -> None:
    """The run's own alarm says TMA did not close (runner._abort: 'safe state incomplete:
    valve TMA: ...'); the synoptic beside it drew TMA '[ ]', closed: a false 'closed' is
    the drawing an operator acts on (opening the chamber, walking away)."""
    app = Console(data_dir=tmp_path, recipe=RECIPE)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.status.get("units_total") is not None, "the plan")
        events: list[dict[str, Any]] = [
            {"type": "StateChanged", "t": 1.0, "state": "running", "reason": ""},
            {"type": "DoseStarted", "t": 2.0, "line": "TMA"},
            {"type": "StateChanged", "t": 2.1, "state": "aborting", "reason": "operator"},
            {
                "type": "Alarm",
                "t": 7.1,
                "severity": "abort",
                "source": "safe state",
                "message": "safe state incomplete: valve TMA: valves: no answer within 5 s",
                "lines": ["TMA"],  # what the runner's alarm carries (test_after_abort.py)
            },
            {"type": "StateChanged", "t": 7.1, "state": "aborted", "reason": "operator"},
        ]
        for ev in events:
            app.on_run_event({"event": ev})
        app.refresh_panels()
        tma = [ln for ln in synoptic_text(app).splitlines() if "TMA" in ln]
        assert tma, synoptic_text(app)
        assert "[ ]" not in tma[0], tma[0]
        assert "[?]" in tma[0], tma[0]
        h2o = [ln for ln in synoptic_text(app).splitlines() if "H2O" in ln]
        assert "[ ]" in h2o[0]  # the line the alarm did not name is drawn closed
