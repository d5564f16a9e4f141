"""Runs of each kind (completed, aborted, held and resumed, crash-resumed) in a journal on
disk, for the report and export tests."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aldctl.engine.events import State, StateChanged, UnitDone, UnitStarted
from tests.conftest import RECIPES
from tests.engine.conftest import Harness, sim_run  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[2]
AL2O3 = RECIPES / "al2o3_tma_h2o.yaml"
CYCLES = 24
KINDS = ("completed", "aborted", "held-and-resumed", "crash-resumed")


def _units(data: Path) -> int:
    db = data / "journal.sqlite"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            return int(con.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0])
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def _aldctl(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aldctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


def crash_resumed(data: Path) -> str:
    """``aldctl run`` killed with SIGKILL at a checkpoint, then ``aldctl resume``."""
    proc = _aldctl("run", str(AL2O3), "--set", f"cycles={CYCLES}", "--data-dir", str(data))
    deadline = time.monotonic() + 120
    while _units(data) < 8:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the run did not reach its checkpoint"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    con = sqlite3.connect(data / "journal.sqlite")
    run_id = str(con.execute("SELECT id FROM runs").fetchone()[0])
    con.close()
    res = _aldctl("resume", run_id, "--data-dir", str(data), "--json")
    out, err = res.communicate(timeout=300)
    assert res.returncode == 0, out + err
    assert json.loads(out)["outcome"] == "complete"
    return run_id


@pytest.fixture(scope="session")
def _made() -> dict[str, tuple[Path, str]]:
    """Runs already made in this session, by kind: the tests only read them."""
    return {}


@pytest.fixture
def make_run(
    sim_run: Callable[..., Any],  # noqa: F811
    tmp_path: Path,
    _made: dict[str, tuple[Path, str]],
) -> Callable[[str], tuple[Path, str]]:
    """``make_run(kind)`` -> (data dir, run id) of a run of that kind (made once)."""

    def make(kind: str) -> tuple[Path, str]:
        if kind not in _made:
            _made[kind] = _make(kind)
        return _made[kind]

    def _make(kind: str) -> tuple[Path, str]:
        data = tmp_path / "data"
        sets = (f"cycles={CYCLES}",)
        if kind == "crash-resumed":
            return data, crash_resumed(data)
        if kind == "completed":
            result, h = sim_run(AL2O3, sets=sets)
            assert result.outcome == "complete"
        elif kind == "aborted":

            async def script(h: Harness) -> None:
                await h.until(lambda e: isinstance(e, UnitStarted) and e.index == 10)
                h.sim.sync().faults.inject("valve_stuck_closed", "TMA")
                await h.until(lambda e: isinstance(e, UnitDone) and e.index == 14)
                h.control.abort("operator saw the TMA alarm")

            result, h = sim_run(AL2O3, sets=sets, script=script)
            assert result.outcome == "aborted"
        else:

            async def script(h: Harness) -> None:
                await h.until(lambda e: isinstance(e, UnitDone) and e.index == 6)
                fault = h.sim.sync().faults.inject("mfc_low", "carrier", max_sccm=12.0)
                await h.until(lambda e: isinstance(e, StateChanged) and e.state is State.HELD)
                await asyncio.sleep(60.0)
                h.sim.sync().faults.clear(fault)

            result, h = sim_run(AL2O3, sets=sets, script=script)
            assert result.outcome == "complete", result.reason
            assert "held" in h.states()
        assert h.run_id is not None
        return data, h.run_id

    return make
