"""One run, one driver: ownership of runs and tools, dead runs, damaged and read-only journals.

Real processes (``python -m aldctl``), a real journal on disk. The parallel-resume and the
crash campaign are bounded here (20 trials, 10 kills); ``pytest --campaign`` runs 200 each.
On commit 39d1077 two resumes started together both passed the check in 7 of 11 trials and
in one both drove the recipe; a run that failed to connect stayed "running" for ever.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "al2o3_tma_h2o.yaml"


def aldctl(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aldctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


def query(data: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    try:
        con = sqlite3.connect(f"file:{data / 'journal.sqlite'}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.OperationalError:  # not created yet
        return []
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def units(data: Path, run_id: str) -> int:
    rows = query(data, "SELECT COUNT(*) FROM checkpoints WHERE run_id=?", run_id)
    return int(rows[0][0]) if rows else 0


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def start_killed_run(data: Path, cycles: int, at_unit: int = 3) -> str:
    proc = aldctl(
        "run", str(RECIPE), "--set", f"cycles={cycles}", "--data-dir", str(data), "--json"
    )
    wait_for((data / "journal.sqlite").exists, "the journal")
    wait_for(lambda: bool(query(data, "SELECT id FROM runs")), "the run row")
    run_id = str(query(data, "SELECT id FROM runs")[0][0])
    wait_for(lambda: units(data, run_id) >= at_unit, "the first checkpoints")
    proc.kill()
    proc.communicate()
    return run_id


def integrity(data: Path, run_id: str, lines: tuple[str, ...] = ("TMA", "H2O")) -> dict[str, int]:
    """Units lost (gaps), pulses doubled (a unit's line dosed twice on record)."""
    done = [
        r[0]
        for r in query(data, "SELECT unit FROM checkpoints WHERE run_id=? ORDER BY unit", run_id)
    ]
    lost = len(set(range(max(done, default=-1) + 1)) - set(done))
    doubled = sum(
        1
        for _unit, _line, n in query(
            data,
            "SELECT unit, line, COUNT(*) FROM pulses WHERE run_id=? AND unit IS NOT NULL"
            " GROUP BY unit, line",
            run_id,
        )
        if n > 1
    )
    check = query(data, "PRAGMA quick_check")
    return {"units": len(done), "lost": lost, "doubled": doubled, "bad": int(check != [("ok",)])}


def test_parallel_resumes_exactly_one_drives_the_run(tmp_path: Path, campaign: bool) -> None:
    trials = 200 if campaign else 6
    cycles = 400 * trials
    data = tmp_path / "data"
    run_id = start_killed_run(data, cycles)
    rng = random.Random(8)
    me = socket.gethostname()
    for trial in range(trials):
        before = units(data, run_id)
        stagger = 0.0 if trial % 4 == 0 else rng.uniform(0.0, 0.3)
        first = aldctl("resume", run_id, "--data-dir", str(data), "--json")
        time.sleep(stagger)
        second = aldctl("resume", run_id, "--data-dir", str(data), "--json")
        procs = {first.pid: first, second.pid: second}

        def owner(procs: dict[int, Any] = procs) -> int | None:
            rows = query(data, "SELECT pid, outcome FROM runs WHERE id=?", run_id)
            if rows and rows[0][1] == "running" and rows[0][0] in procs:
                return int(rows[0][0])
            return None

        def taken(before: int = before) -> bool:
            return owner() is not None and units(data, run_id) > before

        wait_for(taken, "a new owner")
        winner = owner()
        assert winner is not None
        loser = next(p for pid, p in procs.items() if pid != winner)
        _, err = loser.communicate(timeout=60)
        assert loser.returncode == 2, (trial, stagger, err)
        assert err.count("\n") == 1, err  # one line
        assert f"process {winner} on {me}" in err, err
        assert procs[winner].poll() is None  # the winner is still driving
        procs[winner].send_signal(signal.SIGKILL)
        procs[winner].communicate()
    final = aldctl("resume", run_id, "--data-dir", str(data), "--json")
    out, err = final.communicate(timeout=600)
    assert final.returncode == 0, err
    assert json.loads(out)["outcome"] == "complete"
    resumes = query(data, "SELECT COUNT(*) FROM events WHERE run_id=? AND kind='resume'", run_id)
    assert resumes[0][0] == trials + 1  # every trial: exactly one of the two resumed
    fig = integrity(data, run_id)
    print(f"parallel resumes: {trials} trials, {fig}")
    assert fig == {"units": cycles, "lost": 0, "doubled": 0, "bad": 0}


def test_crash_campaign_kills_at_random_moments_lose_and_double_nothing(
    tmp_path: Path, campaign: bool
) -> None:
    """SIGKILL in setup, mid-cycle and teardown, of first runs and of resumes; every run
    is resumed to completion and must hold each unit exactly once, each dose once."""
    kills = 200 if campaign else 10
    cycles = 40
    data = tmp_path / "data"
    rng = random.Random(11)
    landed: dict[str, int] = {}
    killed = resumed = missed = 0
    runs: list[str] = []

    def new_run() -> tuple[subprocess.Popen[str], str]:
        known = {r[0] for r in query(data, "SELECT id FROM runs")}
        p = aldctl(
            "run", str(RECIPE), "--set", f"cycles={cycles}", "--data-dir", str(data), "--json"
        )
        wait_for(lambda: bool({r[0] for r in query(data, "SELECT id FROM runs")} - known), "run")
        rid = str(next(iter({r[0] for r in query(data, "SELECT id FROM runs")} - known)))
        runs.append(rid)
        return p, rid

    proc, run_id = new_run()
    first = True
    while killed < kills:
        target = rng.choice(["setup", "cycles", "teardown"])
        before = units(data, run_id)

        k = rng.randint(1, 10)

        def cond(
            run_id: str = run_id,
            pid: int = proc.pid,
            before: int = before,
            k: int = k,
            target: str = target,
        ) -> bool:
            rows = query(data, "SELECT pid FROM runs WHERE id=?", run_id)
            if not rows or rows[0][0] != pid:
                return False
            n = units(data, run_id)
            if target == "setup":
                return n == before
            if target == "cycles":
                return before + k <= n < cycles
            return n >= cycles

        deadline = time.monotonic() + 60
        while not cond() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        if proc.poll() is None and cond():
            proc.kill()
            killed += 1
            key = target + ("" if first else " of a resume")
            landed[key] = landed.get(key, 0) + 1
        else:
            missed += 1
        proc.communicate()
        first = False
        if query(data, "SELECT outcome FROM runs WHERE id=?", run_id)[0][0] == "complete":
            proc, run_id = new_run()
            first = True
            continue
        proc = aldctl("resume", run_id, "--data-dir", str(data), "--json")
        resumed += 1
    proc.communicate(timeout=300)
    if proc.returncode != 0:
        again = aldctl("resume", run_id, "--data-dir", str(data), "--json")
        _, err = again.communicate(timeout=300)
        assert again.returncode == 0, err
    figures = [integrity(data, r) for r in runs]
    lost = sum(f["lost"] for f in figures)
    doubled = sum(f["doubled"] for f in figures)
    bad = sum(f["bad"] for f in figures)
    print(
        f"crash campaign: {killed} kills landed {landed}, {missed} missed (run ended first), "
        f"{resumed} resumes, {len(runs)} runs; units lost {lost}, doses doubled {doubled}, "
        f"integrity failures {bad}"
    )
    assert all(f["units"] == cycles for f in figures), figures
    assert (lost, doubled, bad) == (0, 0, 0)
    assert all(r[0] == "complete" for r in query(data, "SELECT outcome FROM runs"))


def test_resume_of_a_live_run_is_refused_naming_its_owner(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_id = start_killed_run(data, 20_000)
    live = aldctl("resume", run_id, "--data-dir", str(data), "--json")
    try:
        wait_for(
            lambda: bool(
                query(data, "SELECT 1 FROM runs WHERE pid=? AND outcome='running'", live.pid)
            ),
            "the resume to take the run",
        )
        late = aldctl("resume", run_id, "--data-dir", str(data))
        _, err = late.communicate(timeout=60)
        assert late.returncode == 2
        assert err.strip() == (
            f"error: run {run_id} is being driven by process {live.pid} on {socket.gethostname()}"
        )
    finally:
        live.kill()
        live.communicate()


def test_a_run_that_cannot_connect_ends_failed_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "tool.yaml"
    text = (ROOT / "config" / "hil.yaml").read_text()
    # Nothing listens there: every device fails to connect (quickly).
    text = text.replace("port: 15502", "port: 1").replace("/tmp/aldctl-sim/", f"{tmp_path}/none/")
    config.write_text(text)
    data = tmp_path / "data"
    proc = aldctl("run", str(RECIPE), "--config", str(config), "--data-dir", str(data))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    rows = query(data, "SELECT outcome, reason FROM runs")
    assert len(rows) == 1
    outcome, reason = rows[0]
    assert outcome == "failed"
    assert "did not connect" in reason
    assert "valves" in reason


def test_dead_runs_are_marked_failed_on_the_next_open(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_id = start_killed_run(data, 20_000)
    assert query(data, "SELECT outcome FROM runs")[0][0] == "running"  # nobody closed it
    listed = subprocess.run(
        [sys.executable, "-m", "aldctl", "runs", "list", "--json", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    row = json.loads(listed.stdout)[0]
    assert row["run_id"] == run_id
    assert row["outcome"] == "failed"
    assert "ended without recording an outcome" in row["reason"]


def test_a_damaged_journal_is_refused_for_new_runs_and_flagged_when_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "aldctl",
            "run",
            str(RECIPE),
            "--set",
            "cycles=200",
            "--data-dir",
            str(data),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert json.loads(run.stdout)["outcome"] == "complete"
    db = data / "journal.sqlite"
    size = db.stat().st_size
    with open(db, "r+b") as f:  # garbage over pages in the middle of the file
        f.seek(size // 2 - 4096)
        f.write(os.urandom(8192))
    again = subprocess.run(
        [sys.executable, "-m", "aldctl", "run", str(RECIPE), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert again.returncode == 2
    assert "Traceback" not in again.stderr
    assert f"the journal {db} is damaged" in again.stderr
    assert "Move it aside" in again.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "aldctl", "runs", "list", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert "Traceback" not in listed.stderr
    assert "is damaged" in listed.stderr


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "ro"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_runs_list_works_on_a_read_only_journal(read_only_mount: Path) -> None:
    data = read_only_mount
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "aldctl",
            "run",
            str(RECIPE),
            "--set",
            "cycles=3",
            "--data-dir",
            str(data),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    run_id = json.loads(run.stdout)["run_id"]
    subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
    for args in (("runs", "list", "--json"), ("runs", "show", run_id, "--json")):
        res = subprocess.run(
            [sys.executable, "-m", "aldctl", *args, "--data-dir", str(data)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        assert run_id in res.stdout


def test_full_disk_exits_1_in_one_line_and_the_run_reads_failed_afterwards(
    small_fs: Path, fill_disk: Callable[[Path], Path]
) -> None:
    data = small_fs
    proc = aldctl("run", str(RECIPE), "--set", "cycles=2000", "--data-dir", str(data), "--json")
    wait_for(lambda: bool(query(data, "SELECT id FROM runs")), "the run row")
    run_id = str(query(data, "SELECT id FROM runs")[0][0])
    wait_for(lambda: units(data, run_id) >= 5, "a few checkpoints")
    filler = fill_disk(data)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    summary = json.loads(out)
    assert summary["outcome"] == "aborted"
    assert not summary["safe_state_errors"]
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "database or disk is full" in lines[0]
    filler.unlink()
    listed = subprocess.run(
        [sys.executable, "-m", "aldctl", "runs", "list", "--json", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    row = json.loads(listed.stdout)[0]
    assert row["run_id"] == run_id
    assert row["outcome"] == "failed"
    fig = integrity(data, run_id)
    assert (fig["lost"], fig["doubled"], fig["bad"]) == (0, 0, 0)
