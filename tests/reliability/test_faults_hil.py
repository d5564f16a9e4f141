"""The fault campaign's communication faults over the real protocols: `aldctl sim serve`
(in this process) behind Modbus TCP and pseudo-terminals, `aldctl run --realtime` with the
real drivers in another process. Each comm fault kind is injected into the gauge's and the
valve module's link mid-run; the run must end with its outcome and reason journaled, every
dose valve closed and the chamber below the limit.

Real time costs ~25 s a run: only under ``pytest --campaign`` (CI covers the gauge's
timeout over the wire in tests/hil/test_e2e.py and every kind in process in
test_faults.py)."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

import pytest

HIL = Path(__file__).resolve().parents[1] / "hil"
sys.path.insert(0, str(HIL))

from test_fail_safe import (  # noqa: E402
    FAST,
    LIMIT_TORR,
    RECIPE,
    InProcessServer,
    aldctl,
    hil_config,
)

KINDS = ("comm_timeout", "corrupt_frame", "timing_jitter", "disconnect")
TARGETS = ("chamber", "valves")


def _units(data: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{data / 'journal.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0])
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", KINDS)
def test_comm_fault_over_the_wire(tmp_path: Path, campaign: bool, kind: str, target: str) -> None:
    if not campaign:
        pytest.skip("real-time fault campaign: run with --campaign")
    srv = InProcessServer(hil_config(tmp_path), tmp_path / "state")
    data = tmp_path / "d"
    try:
        run = aldctl(
            "run",
            str(RECIPE),
            "--config",
            str(srv.tool),
            *FAST,
            "--set",
            "cycles=4",
            "--realtime",
            "--json",
            "--data-dir",
            str(data),
        )
        deadline = time.monotonic() + 180
        while _units(data) < 1:
            assert run.poll() is None, run.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert srv._loop is not None

        def inject() -> None:
            r = srv.server.plant.sync()
            r.faults.inject(kind, target, duration_ns=30 * 10**9)

        srv._loop.call_soon_threadsafe(inject)
        out, err = run.communicate(timeout=300)
        summary = json.loads(out)
        time.sleep(2.0)  # past the module's 1 s watchdog
        st = srv.status()
    finally:
        srv.stop()
    print(f"{kind}:{target}: {summary['outcome']}: {summary['reason']}")
    assert summary["outcome"] in ("complete", "aborted", "failed"), err
    assert summary["reason"]
    con = sqlite3.connect(data / "journal.sqlite")
    try:
        outcome, reason = con.execute("SELECT outcome, reason FROM runs").fetchone()
    finally:
        con.close()
    assert (outcome, reason) == (summary["outcome"], summary["reason"])
    assert not any(st["valves"].get(ln) for ln in ("TMA", "H2O")), st["valves"]
    assert float(st["pressure_torr"]) < LIMIT_TORR
    if kind in ("comm_timeout", "disconnect"):
        assert summary["outcome"] == "aborted", summary["reason"]
