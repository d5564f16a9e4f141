"""The run journal: SQLite on disk, atomic checkpoints, no doubled units."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aldctl.engine.journal import Journal, JournalError, PulseRecord, RunMeta


def meta(**kw: object) -> RunMeta:
    base = {
        "recipe_path": "/r.yaml",
        "recipe_name": "r",
        "recipe_text": "main: []\n",
        "includes": {},
        "overrides": {"cycles": 5},
        "params": {"cycles": 5},
        "config_path": None,
        "config_text": None,
        "tool": "sim",
        "clock": "virtual",
        "realtime": "virtual time",
        "units_total": 5,
    }
    base.update(kw)
    return RunMeta(**base)  # type: ignore[arg-type]


def test_run_lifecycle(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    run = j.new_run(meta())
    j.event(0.0, "state", "starting", state="starting")
    for u in range(3):
        j.pulse(
            PulseRecord(
                u, "TMA", "TMA", u * 10.0, u * 10.0, u * 10.0 + 0.015, u * 10.0 + 0.015, False, 0.01
            )
        )
        j.sample(u * 10.0, "pressure", 0.3)
        j.checkpoint(u, "A", u + 1, 0, u * 10.0, u * 10.0 + 10.0, b"state%d" % u)
    j.finish("aborted", "test", 30.0, {"cycles_completed": 3})
    rec = j.get(run)
    assert (rec.outcome, rec.reason, rec.units_done, rec.units_total) == ("aborted", "test", 3, 5)
    assert j.done_units(run) == [0, 1, 2]
    assert j.sim_state(run) == b"state2"
    assert len(j.pulses(run, "TMA")) == 3
    assert rec.summary == {"cycles_completed": 3}
    assert [r.id for r in j.runs()] == [run]
    j.close()


def test_doubled_checkpoint_is_refused_and_rolled_back(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    run = j.new_run(meta())
    j.checkpoint(0, "A", 1, 0, 0.0, 10.0)
    j.pulse(PulseRecord(1, "TMA", "TMA", 10, 10, 10.015, 10.015, False))
    with pytest.raises(sqlite3.IntegrityError):
        j.checkpoint(0, "A", 1, 0, 0.0, 10.0)
    # The failed transaction wrote nothing: not the checkpoint, not the buffered pulse.
    assert j.done_units(run) == [0]
    assert j.pulses(run) == []
    j.close()


def test_resume_session_continues_process_time(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    run = j.new_run(meta())
    j.checkpoint(0, "A", 1, 0, 0.0, 10.0)
    j.event(10.0, "state", "aborted", state="aborted")
    j.finish("aborted", "crash", 10.0, {})
    j.close()
    j2 = Journal(tmp_path)
    rec = j2.attach(run, "virtual time")
    assert rec.units_done == 1
    assert j2.t_offset == 10.0
    j2.checkpoint(1, "A", 2, 0, 0.0, 10.0)
    rows = j2.db.execute(
        "SELECT unit, t_start, t_end, session FROM checkpoints ORDER BY unit"
    ).fetchall()
    assert rows == [(0, 0.0, 10.0, 0), (1, 10.0, 20.0, 1)]
    assert j2.get(run).outcome == "running"
    j2.close()


def test_a_unique_prefix_finds_a_run_and_an_unknown_id_suggests(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    run = j.new_run(meta())
    assert j.get(run[:-2]).id == run  # any unique prefix, as git does
    with pytest.raises(JournalError, match="did you mean"):
        j.get(run[2:-2])  # not a prefix: suggestions
    j.finish("complete", "ok", 1.0, {})
    other = j.new_run(meta())
    common = next(i for i in range(len(run)) if run[i] != other[i]) if run != other else 0
    if common > 0:
        with pytest.raises(JournalError, match="ambiguous"):
            j.get(run[:common])
    j.close()


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(JournalError, match="cannot create the data directory"):
        Journal(blocker / "sub")


_OPEN_AT = """
import sys, time
from pathlib import Path
from aldctl.engine.journal import Journal, JournalError
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    Journal(Path(sys.argv[1])).close()
except JournalError as exc:
    print(exc)
    sys.exit(1)
"""


def test_runs_started_at_the_same_moment_on_a_new_data_dir_both_open_the_journal(
    tmp_path: Path,
) -> None:
    # Two `aldctl run` started together on a fresh data directory: both create the schema
    # and add its later columns. Found by the telemetry test as "duplicate column name"
    # (and "database is locked" from the WAL switch).
    import subprocess
    import sys
    import time

    for trial in range(6):
        d = tmp_path / f"d{trial}"
        at = time.time() + 1.0  # every process imported and waiting by then
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AT, str(d), repr(at)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(5)
        ]
        errors = [out for p in procs if (out := p.communicate(timeout=60)[0]) or p.returncode]
        assert errors == [], (trial, errors)


CHANNELS = [f"ch{k:02d}" for k in range(14)]  # a tool's polled channels, as many as the bench's


def _journal_cycles(j: Journal, first: int, cycles: int, wal: Path) -> list[int]:
    """Checkpoint ``cycles`` cycles of two samples per channel; the WAL bytes each commit adds."""
    grown: list[int] = []
    for u in range(first, first + cycles):
        for half in (0.0, 5.0):
            for ch in CHANNELS:
                j.sample(u * 10.0 + half, ch, float(u))
        j.pulse(PulseRecord(u, "TMA", "TMA", u * 10.0, u * 10.0, u * 10.015, u * 10.015, False))
        before = wal.stat().st_size if wal.exists() else 0
        j.checkpoint(u, "A", u + 1, 0, u * 10.0, u * 10.0 + 10.0, bytes(3000))
        grown.append(wal.stat().st_size - before)
    return grown


def test_a_cycle_commit_writes_its_samples_to_one_place_not_one_page_per_channel(
    tmp_path: Path,
) -> None:
    """Each cycle's checkpoint is one durable commit; what it costs is the pages it writes.
    The samples were indexed by channel: a commit's dozen channels landed on a dozen index
    pages (here a median of 28 pages a commit, against 9 now)."""
    j = Journal(tmp_path)
    j.new_run(meta(units_total=400))
    wal = tmp_path / "journal.sqlite-wal"
    _journal_cycles(j, 0, 300, wal)  # enough rows that the index spans many pages
    # From an empty WAL that only grows: what each commit adds to it is the pages it wrote.
    j.db.execute("PRAGMA wal_autocheckpoint=0")
    j.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    grown = sorted(_journal_cycles(j, 300, 40, wal))
    page = 4096 + 24  # a WAL frame: the page and its header
    assert grown[len(grown) // 2] / page <= 14
    j.close()


def test_the_report_reads_each_channel_in_time_order_from_old_and_new_journals(
    tmp_path: Path,
) -> None:
    from aldctl.front.report import load

    j = Journal(tmp_path)
    run = j.new_run(meta(units_total=3))
    for u in range(3):
        for ch in ("pressure", "T.substrate", "rf.forward", "F.carrier"):
            j.sample(u * 10.0 + 5.0, ch, u + 0.5)
            j.sample(u * 10.0, ch, float(u))
        j.checkpoint(u, "A", u + 1, 0, u * 10.0, u * 10.0 + 10.0)
    j.finish("complete", "ok", 30.0, {})
    j.close()
    want = {
        ch: ([0.0, 5.0, 10.0, 15.0, 20.0, 25.0], [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
        for ch in ("F.carrier", "T.substrate", "pressure")  # by name; RF power left out
    }
    j = Journal(tmp_path, readonly=True)
    data = load(j, run)
    assert list(data.samples) == list(want)
    assert data.samples == want
    j.close()
    # A journal from before: indexed by channel. Read as it is, then migrated on opening.
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    db.execute("DROP INDEX samples_run_t")
    db.execute("CREATE INDEX samples_run ON samples (run_id, channel, t)")
    db.close()
    j = Journal(tmp_path, readonly=True)
    assert load(j, run).samples == want
    j.close()
    j = Journal(tmp_path)
    names = {r[0] for r in j.db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "samples_run_t" in names
    assert "samples_run" not in names
    assert load(j, run).samples == want
    # the user hears of it (`aldctl run` prints it): once
    assert j.notice is not None
    assert "samples index was rebuilt" in j.notice
    j.close()
    j = Journal(tmp_path)
    assert j.notice is None
    j.close()
