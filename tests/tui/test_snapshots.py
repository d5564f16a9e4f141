"""Snapshots of the console's main screen (pytest-textual-snapshot): idle with a recipe
loaded, running, and in alarm, at 80x24 (an SSH window) and 160x50.

The running and alarm screens are drawn from a fixed status (what a run's API reports),
so the pictures do not depend on timing; the live path is covered in test_console.py.
Update after a deliberate change of the screen with ``pytest --snapshot-update``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aldctl.front.tui.app import Console

ROOT = Path(__file__).resolve().parents[2]
RECIPE = Path("recipes/al2o3_tma_h2o.yaml")

RUNNING: dict[str, Any] = {
    "run_id": "20261206-101500-ab12",
    "recipe": "Al2O3 from TMA and H2O",
    "tool": "sim-reactor",
    "state": "running",
    "reason": "setup done",
    "unit": 41,
    "units_done": 41,
    "units_total": 100,
    "label": "Al2O3",
    "cycle": "Al2O3",
    "rep": 42,
    "passes": 100,
    "step": "purge 5 s",
    "t": 510.0,
    "eta_process_s": 609.0,
    "values": {
        "pressure": 0.561,
        "T.substrate": 150.0,
        "T.walls": 120.1,
        "F.carrier": 20.02,
        "SP.F.carrier": 20.0,
        "rf.forward": 0.0,
    },
    "lines": {"TMA": "TMA", "H2O": "H2O"},
    "dosing": ["TMA"],
}
PRESSURE = [0.553 + (0.45 if i % 8 == 0 else 0.12 if i % 8 == 4 else 0.0) for i in range(120)]
SUBSTRATE = [150.0 + 0.05 * ((i * 7) % 5 - 2) for i in range(120)]


def console(tmp_path: Path) -> Console:
    app = Console(data_dir=tmp_path, recipe=ROOT / RECIPE, recipes_root=ROOT / "recipes")
    app.stamp = lambda: "10:15:00"  # type: ignore[method-assign]
    return app


async def running(pilot: Any, alarm: bool = False) -> None:
    app: Console = pilot.app
    await pilot.pause()
    app.status = dict(RUNNING)
    app.run_id = RUNNING["run_id"]
    app.pressure.extend(PRESSURE)
    app.substrate.extend(SUBSTRATE)
    app.query_one("#log").clear()
    app.log_line("attached to run 20261206-101500-ab12, pid 4242", "cyan")
    app.log_line("state running: setup done", "bold")
    if alarm:
        app.on_run_event(
            {
                "v": 1,
                "event": {
                    "type": "Alarm",
                    "t": 512.0,
                    "severity": "hold",
                    "source": "pressure",
                    "message": "chamber pressure 2.31 Torr above 2 Torr",
                },
            }
        )
        app.status["state"] = "held"
        app.status["reason"] = "chamber pressure 2.31 Torr above 2 Torr"
        app.status["dosing"] = []
    app.query_one("TabbedContent").active = "tab-log"
    app.refresh_panels()
    await pilot.pause()


SIZES = [(80, 24), (160, 50)]


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x50"])
def test_idle_with_a_recipe_loaded(
    snap_compare: Any, tmp_path: Path, size: tuple[int, int]
) -> None:
    assert snap_compare(console(tmp_path), terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x50"])
def test_running(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(console(tmp_path), terminal_size=size, run_before=running)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x50"])
def test_in_alarm(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    async def alarm(pilot: Any) -> None:
        await running(pilot, alarm=True)

    assert snap_compare(console(tmp_path), terminal_size=size, run_before=alarm)
