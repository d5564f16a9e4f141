"""Crash and resume, signals and safe state: real processes, a real journal on disk."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sim.reactor import Reactor, Snapshot

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "al2o3_tma_h2o.yaml"
CYCLES = 120


def aldctl(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aldctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        **kw,
    )


def checkpoints(data: Path) -> int:
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


def run_until(data: Path, target: int, sig: int, *extra: str) -> subprocess.Popen[str]:
    proc = aldctl(
        "run", str(RECIPE), "--set", f"cycles={CYCLES}", "--data-dir", str(data), "--json", *extra
    )
    deadline = time.monotonic() + 120
    while checkpoints(data) < target:
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"run ended before checkpoint {target}: {proc.returncode}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("run did not reach its checkpoint in time")
        time.sleep(0.002)
    proc.send_signal(sig)
    return proc


def run_id_of(data: Path) -> str:
    con = sqlite3.connect(data / "journal.sqlite")
    try:
        return str(
            con.execute("SELECT id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()[0]
        )
    finally:
        con.close()


def journal_rows(data: Path, run_id: str) -> tuple[list[int], int, str]:
    con = sqlite3.connect(data / "journal.sqlite")
    try:
        units = [
            r[0]
            for r in con.execute(
                "SELECT unit FROM checkpoints WHERE run_id=? ORDER BY unit", (run_id,)
            )
        ]
        pulses = con.execute(
            "SELECT COUNT(*) FROM pulses WHERE run_id=? AND line='TMA'", (run_id,)
        ).fetchone()[0]
        outcome = con.execute("SELECT outcome FROM runs WHERE id=?", (run_id,)).fetchone()[0]
        return units, int(pulses), str(outcome)
    finally:
        con.close()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("ref")
    proc = aldctl(
        "run", str(RECIPE), "--set", f"cycles={CYCLES}", "--data-dir", str(data), "--json"
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_then_resume_loses_and_doubles_nothing(
    tmp_path: Path, seed: int, uninterrupted: dict[str, Any]
) -> None:
    target = random.Random(seed).randint(5, CYCLES - 10)
    proc = run_until(tmp_path, target, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    run_id = run_id_of(tmp_path)
    units, _, outcome = journal_rows(tmp_path, run_id)
    assert outcome == "running"  # nobody closed it: the process died
    k = len(units)
    assert units == list(range(k))
    assert target <= k < CYCLES

    res = aldctl("resume", run_id, "--data-dir", str(tmp_path), "--json")
    out, err = res.communicate(timeout=300)
    assert res.returncode == 0, out + err
    summary = json.loads(out)
    assert summary["outcome"] == "complete"
    units, tma_pulses, outcome = journal_rows(tmp_path, run_id)
    assert units == list(range(CYCLES))  # every cycle once: the primary key forbids twice
    assert outcome == "complete"
    # Pulses of the cycle cut short by the kill were never committed; every completed
    # cycle's two doses were.
    assert tma_pulses >= CYCLES
    # The film: the resumed run continued the reactor from its last checkpoint.
    ref = uninterrupted["thickness_nm"]
    assert summary["thickness_nm"] == pytest.approx(ref, rel=0.02)
    # The summary is the whole run's (a campaign found this session's cycles divided into
    # the whole film: 2.7 A/cycle for a true 1.0); this session's share is stated apart.
    assert summary["cycles_completed"] == CYCLES
    assert summary["session"] == {"units": CYCLES - k, "cycles": CYCLES - k}


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig",
    # SIGHUP (the SSH session dropped) and SIGQUIT killed the process on 39d1077 without the
    # safe state, leaving the journal "running".
    [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1],
)
def test_signal_aborts_into_the_safe_state(tmp_path: Path, sig: int) -> None:
    proc = run_until(tmp_path, 10, sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    summary = json.loads(out)
    assert summary["outcome"] == "aborted"
    assert signal.Signals(sig).name in summary["reason"] or sig == signal.SIGINT
    assert "Traceback" not in err
    run_id = run_id_of(tmp_path)
    con = sqlite3.connect(tmp_path / "journal.sqlite")
    try:
        state, outcome = con.execute(
            "SELECT final_state, outcome FROM runs WHERE id=?", (run_id,)
        ).fetchone()
    finally:
        con.close()
    assert outcome == "aborted"
    snap = Snapshot.from_bytes(state)
    reactor = Reactor(snap.config, seed=snap.seed)
    reactor.restore(snap)
    reactor.advance_to(reactor.now_ns + 50_000_000)  # valves finish their stroke
    valves = reactor.read_valves()
    assert not any(v for k, v in valves.items() if k != "pump"), valves
    assert valves.get("pump", True)  # pump isolation open: the chamber is pumped
    assert reactor.read_mfc("carrier").setpoint_sccm > 0  # carrier kept flowing


def test_resume_refuses_a_completed_run(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    res = run_cli("run", str(RECIPE), "--set", "cycles=3", "--data-dir", str(tmp_path), "--json")
    assert res.code == 0, res.err
    run_id = json.loads(res.out)["run_id"]
    again = run_cli("resume", run_id, "--data-dir", str(tmp_path))
    assert again.code == 2
    assert "completed" in again.err
    assert "nothing to resume" in again.err


def test_resume_refuses_a_changed_recipe(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.read_text())
    data = tmp_path / "data"
    proc = aldctl("run", str(recipe), "--set", "cycles=200", "--data-dir", str(data), "--json")
    deadline = time.monotonic() + 60
    while checkpoints(data) < 3 and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.kill()
    proc.communicate()
    recipe.write_text(RECIPE.read_text().replace("purge: 5 s", "purge: 6 s"))
    res = run_cli("resume", run_id_of(data), "--data-dir", str(data))
    assert res.code == 2
    assert "changed since run" in res.err


def test_runs_list_and_show(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    res = run_cli("run", str(RECIPE), "--set", "cycles=3", "--data-dir", str(tmp_path), "--json")
    run_id = json.loads(res.out)["run_id"]
    listed = run_cli("runs", "list", "--data-dir", str(tmp_path), "--json")
    rows = json.loads(listed.out)
    assert rows[0]["run_id"] == run_id
    assert rows[0]["outcome"] == "complete"
    assert rows[0]["units_done"] == 3
    shown = run_cli("runs", "show", run_id, "--data-dir", str(tmp_path))
    assert shown.code == 0
    assert "TMA: 3 pulses" in shown.out
    missing = run_cli("runs", "show", "nope", "--data-dir", str(tmp_path))
    assert missing.code == 2
    # any unique prefix of an id works, as in git
    by_prefix = run_cli("runs", "show", run_id[:17], "--data-dir", str(tmp_path), "--json")
    assert by_prefix.code == 0
    assert json.loads(by_prefix.out)["run_id"] == run_id


@pytest.mark.parametrize("columns", ["80", "100"])
def test_runs_list_never_truncates_the_id(
    tmp_path: Path, run_cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, columns: str
) -> None:
    res = run_cli("run", str(RECIPE), "--set", "cycles=2", "--data-dir", str(tmp_path), "--json")
    run_id = json.loads(res.out)["run_id"]
    monkeypatch.setenv("COLUMNS", columns)
    listed = run_cli("runs", "list", "--data-dir", str(tmp_path))
    assert run_id in listed.out
    assert all(len(line) <= int(columns) for line in listed.out.splitlines())


def test_run_summary_json_fields(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    res = run_cli("run", str(RECIPE), "--set", "cycles=5", "--data-dir", str(tmp_path), "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    for key in (
        "run_id",
        "outcome",
        "cycles_completed",
        "process_time_s",
        "wall_time_s",
        "thickness_nm",
        "pulse_timing",
    ):
        assert key in out
    assert {"p50", "p99", "max"} <= set(out["pulse_timing"]["width_error_ms"])
    # one name per figure (a campaign found process_s beside process_time_s, p50 twice)
    assert "process_s" not in out
    assert "wall_s" not in out
    assert "p50" not in out["pulse_timing"]
    assert out["cycles_completed"] == 5


def test_invalid_recipe_exits_2_without_touching_the_journal(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("main:\n  - pulse: {TMA: 15}\n")
    res = run_cli("run", str(bad), "--data-dir", str(tmp_path / "d"))
    assert res.code == 2
    assert not (tmp_path / "d" / "journal.sqlite").exists()


def test_unwritable_data_dir_is_a_clear_error(run_cli: Callable[..., Any]) -> None:
    res = run_cli("run", str(RECIPE), "--data-dir", "/proc/nope")
    assert res.code == 2
    assert "data directory" in res.err
