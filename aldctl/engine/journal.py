"""Crash-safe run journal: SQLite in WAL mode under the data directory.

One database holds every run: its recipe text and hash, parameters, tool configuration,
who and where, start, end, outcome and reason; the events of the run; a record per pulse
(commanded and achieved valve times, pressure response); sampled channels; and one
checkpoint row per completed unit of main.

Crash safety comes from SQLite transactions: a checkpoint row, the pulse records and samples
buffered since the previous checkpoint, and (for the simulated reactor) the reactor's state
are committed in one transaction before the next unit starts, so after ``kill -9`` the
journal holds exactly the units that completed and nothing half-written. The
``(run_id, unit)`` primary key makes a doubled unit impossible to record.

The journal is used from the event-loop thread only, synchronously: a commit in WAL mode
with ``synchronous=NORMAL`` costs ~0.1 ms and never waits for an fsync, and keeping it off
threads keeps virtual-time runs deterministic.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    recipe_path TEXT NOT NULL,
    recipe_name TEXT NOT NULL,
    recipe_text TEXT NOT NULL,
    recipe_sha256 TEXT NOT NULL,
    includes TEXT NOT NULL,
    overrides TEXT NOT NULL,
    params TEXT NOT NULL,
    config_path TEXT,
    config_text TEXT,
    tool TEXT NOT NULL,
    user TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER,
    aldctl_version TEXT NOT NULL,
    clock TEXT NOT NULL,
    realtime TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    units_total INTEGER NOT NULL,
    process_s REAL NOT NULL DEFAULT 0,
    summary TEXT NOT NULL DEFAULT '{}',
    sim_state BLOB,
    final_state BLOB
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL REFERENCES runs(id),
    seq INTEGER NOT NULL,
    t REAL NOT NULL,
    wall TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT,
    message TEXT NOT NULL,
    data TEXT,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT NOT NULL REFERENCES runs(id),
    unit INTEGER NOT NULL,
    label TEXT NOT NULL,
    rep INTEGER NOT NULL,
    position INTEGER NOT NULL,
    t_start REAL NOT NULL,
    t_end REAL NOT NULL,
    session INTEGER NOT NULL,
    PRIMARY KEY (run_id, unit)
);
CREATE TABLE IF NOT EXISTS pulses (
    run_id TEXT NOT NULL REFERENCES runs(id),
    unit INTEGER,
    line TEXT NOT NULL,
    chemical TEXT NOT NULL,
    commanded_open REAL NOT NULL,
    achieved_open REAL NOT NULL,
    commanded_close REAL NOT NULL,
    achieved_close REAL NOT NULL,
    hardware INTEGER NOT NULL,
    area_torr_s REAL
);
CREATE INDEX IF NOT EXISTS pulses_run ON pulses (run_id, line);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL REFERENCES runs(id),
    t REAL NOT NULL,
    channel TEXT NOT NULL,
    value REAL
);
CREATE INDEX IF NOT EXISTS samples_run ON samples (run_id, channel, t);
CREATE TABLE IF NOT EXISTS sim_states (
    run_id TEXT PRIMARY KEY REFERENCES runs(id),
    state BLOB NOT NULL
);
"""

ACTIVE = "running"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("aldctl", appauthor=False))


@dataclass(frozen=True)
class RunMeta:
    recipe_path: str
    recipe_name: str
    recipe_text: str
    includes: Mapping[str, str]
    """Included file path -> sha256 of its text when the run started."""
    overrides: Mapping[str, Any]
    params: Mapping[str, Any]
    config_path: str | None
    config_text: str | None
    tool: str
    clock: str
    realtime: str
    units_total: int


@dataclass(frozen=True)
class RunRecord:
    id: str
    recipe_path: str
    recipe_name: str
    recipe_text: str
    recipe_sha256: str
    includes: dict[str, str]
    overrides: dict[str, Any]
    params: dict[str, Any]
    config_path: str | None
    config_text: str | None
    tool: str
    user: str
    host: str
    pid: int | None
    clock: str
    realtime: str
    started_at: str
    ended_at: str | None
    outcome: str
    reason: str
    units_total: int
    units_done: int
    process_s: float
    summary: dict[str, Any]


@dataclass(frozen=True)
class PulseRecord:
    unit: int | None
    line: str
    chemical: str
    commanded_open: float
    achieved_open: float
    commanded_close: float
    achieved_close: float
    hardware: bool
    area_torr_s: float | None = None


class JournalError(Exception):
    pass


class Journal:
    """The run store. Open one per process; use it from the event-loop thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the data directory {data_dir}: {exc.strerror}"
            raise JournalError(msg) from exc
        self.path = data_dir / "journal.sqlite"
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(_SCHEMA)
            cols = {r[1] for r in self.db.execute("PRAGMA table_info(runs)")}
            if "final_state" not in cols:  # journals written before the column existed
                self.db.execute("ALTER TABLE runs ADD COLUMN final_state BLOB")
            self.db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        except sqlite3.DatabaseError as exc:
            msg = f"cannot open the journal {self.path}: {exc}"
            raise JournalError(msg) from exc
        self.run_id: str | None = None
        self._seq = 0
        self._session = 0
        self._t_offset = 0.0
        self._pulses: list[tuple[Any, ...]] = []
        self._samples: list[tuple[Any, ...]] = []

    def close(self) -> None:
        self.flush()
        self.db.close()

    # ------------------------------------------------------------------ runs

    def new_run(self, meta: RunMeta) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        suffix = hashlib.sha256(f"{time.time_ns()}{os.getpid()}".encode()).hexdigest()[:4]
        run_id = f"{stamp}-{suffix}"
        from aldctl import __version__

        self.db.execute(
            "INSERT INTO runs (id, recipe_path, recipe_name, recipe_text, recipe_sha256, includes,"
            " overrides, params, config_path, config_text, tool, user, host, pid, aldctl_version,"
            " clock, realtime, started_at, outcome, units_total)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run_id,
                meta.recipe_path,
                meta.recipe_name,
                meta.recipe_text,
                sha256_text(meta.recipe_text),
                json.dumps(dict(meta.includes)),
                json.dumps(dict(meta.overrides), default=str),
                json.dumps(dict(meta.params), default=str),
                meta.config_path,
                meta.config_text,
                meta.tool,
                _user(),
                socket.gethostname(),
                os.getpid(),
                __version__,
                meta.clock,
                meta.realtime,
                now_iso(),
                ACTIVE,
                meta.units_total,
            ),
        )
        self.run_id = run_id
        self._seq = 0
        self._session = 0
        self._t_offset = 0.0
        return run_id

    def attach(self, run_id: str, realtime: str) -> RunRecord:
        """Continue an existing run (resume): a new session appended to its records."""
        rec = self.get(run_id)
        self.run_id = run_id
        row = self.db.execute(
            "SELECT COALESCE(MAX(seq), -1), COALESCE(MAX(t), 0) FROM events WHERE run_id=?",
            (run_id,),
        ).fetchone()
        cp = self.db.execute(
            "SELECT COALESCE(MAX(session), 0), COALESCE(MAX(t_end), 0) FROM checkpoints"
            " WHERE run_id=?",
            (run_id,),
        ).fetchone()
        self._seq = int(row[0]) + 1
        self._session = int(cp[0]) + 1
        self._t_offset = max(float(row[1]), float(cp[1]))
        self.db.execute(
            "UPDATE runs SET outcome=?, reason='', ended_at=NULL, pid=?, realtime=? WHERE id=?",
            (ACTIVE, os.getpid(), realtime, run_id),
        )
        return rec

    @property
    def t_offset(self) -> float:
        """Process time already spent by earlier sessions of this run (resume)."""
        return self._t_offset

    def _require(self) -> str:
        if self.run_id is None:
            raise JournalError("no run open in the journal")
        return self.run_id

    def event(
        self,
        t: float,
        kind: str,
        message: str,
        *,
        state: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        run_id = self._require()
        self.db.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
            (
                run_id,
                self._seq,
                t + self._t_offset,
                now_iso(),
                kind,
                state,
                message,
                json.dumps(dict(data), default=str) if data else None,
            ),
        )
        self._seq += 1

    def pulse(self, rec: PulseRecord) -> None:
        o = self._t_offset
        self._pulses.append(
            (
                self._require(),
                rec.unit,
                rec.line,
                rec.chemical,
                rec.commanded_open + o,
                rec.achieved_open + o,
                rec.commanded_close + o,
                rec.achieved_close + o,
                int(rec.hardware),
                rec.area_torr_s,
            )
        )

    def set_pulse_area(self, index_from_end: int, area: float) -> None:
        """Fill in the pressure response of a buffered pulse record."""
        if 0 < index_from_end <= len(self._pulses):
            row = list(self._pulses[-index_from_end])
            row[9] = area
            self._pulses[-index_from_end] = tuple(row)

    @property
    def buffered_pulses(self) -> int:
        return len(self._pulses)

    def sample(self, t: float, channel: str, value: float | None) -> None:
        self._samples.append((self._require(), t + self._t_offset, channel, value))

    def flush(self) -> None:
        """Commit buffered pulse records and samples (also done by every checkpoint)."""
        if self.run_id is None or not (self._pulses or self._samples):
            return
        with self._txn():
            self._write_buffers()

    def _write_buffers(self) -> None:
        if self._pulses:
            self.db.executemany("INSERT INTO pulses VALUES (?,?,?,?,?,?,?,?,?,?)", self._pulses)
            self._pulses.clear()
        if self._samples:
            self.db.executemany("INSERT INTO samples VALUES (?,?,?,?)", self._samples)
            self._samples.clear()

    def checkpoint(
        self,
        unit: int,
        label: str,
        rep: int,
        position: int,
        t_start: float,
        t_end: float,
        sim_state: bytes | None = None,
    ) -> None:
        """Record a completed unit, with everything buffered, in one transaction."""
        run_id = self._require()
        o = self._t_offset
        with self._txn():
            self._write_buffers()
            self.db.execute(
                "INSERT INTO checkpoints VALUES (?,?,?,?,?,?,?,?)",
                (run_id, unit, label, rep, position, t_start + o, t_end + o, self._session),
            )
            # The simulated reactor's state lives in its own small table, so that rewriting
            # it each cycle does not also rewrite the run row with its recipe text. The run
            # row's process time is brought up to date at the end (or read from here).
            if sim_state is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO sim_states VALUES (?, ?)", (run_id, sim_state)
                )

    def finish(
        self,
        outcome: str,
        reason: str,
        t: float,
        summary: Mapping[str, Any],
        final_state: bytes | None = None,
    ) -> None:
        """Close the run; ``final_state`` is the simulated reactor as the run left it."""
        run_id = self._require()
        with self._txn():
            self._write_buffers()
            self.db.execute(
                "UPDATE runs SET outcome=?, reason=?, ended_at=?, process_s=?, summary=?"
                " WHERE id=?",
                (
                    outcome,
                    reason,
                    now_iso(),
                    t + self._t_offset,
                    json.dumps(dict(summary), default=str),
                    run_id,
                ),
            )
            if final_state is not None:
                self.db.execute("UPDATE runs SET final_state=? WHERE id=?", (final_state, run_id))

    class _Txn:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")

    def _txn(self) -> Journal._Txn:
        return Journal._Txn(self.db)

    # ------------------------------------------------------------------ queries

    def get(self, run_id: str) -> RunRecord:
        row = self.db.execute(
            "SELECT id, recipe_path, recipe_name, recipe_text, recipe_sha256, includes, overrides,"
            " params, config_path, config_text, tool, user, host, pid, clock, realtime,"
            " started_at, ended_at, outcome, reason, units_total, process_s, summary"
            " FROM runs WHERE id=?",
            (run_id,),
        ).fetchone()
        if row is None:
            matches = [
                r[0]
                for r in self.db.execute(
                    "SELECT id FROM runs WHERE id LIKE ? ORDER BY id DESC LIMIT 3", (f"%{run_id}%",)
                )
            ]
            hint = f" (did you mean {', '.join(matches)}?)" if matches else ""
            msg = f"no run '{run_id}' in {self.path}{hint}"
            raise JournalError(msg)
        return self._record(row)

    def _record(self, row: tuple[Any, ...]) -> RunRecord:
        done, last_t = self.db.execute(
            "SELECT COUNT(*), COALESCE(MAX(t_end), 0) FROM checkpoints WHERE run_id=?",
            (row[0],),
        ).fetchone()
        return RunRecord(
            id=row[0],
            recipe_path=row[1],
            recipe_name=row[2],
            recipe_text=row[3],
            recipe_sha256=row[4],
            includes=json.loads(row[5]),
            overrides=json.loads(row[6]),
            params=json.loads(row[7]),
            config_path=row[8],
            config_text=row[9],
            tool=row[10],
            user=row[11],
            host=row[12],
            pid=row[13],
            clock=row[14],
            realtime=row[15],
            started_at=row[16],
            ended_at=row[17],
            outcome=row[18],
            reason=row[19],
            units_total=row[20],
            units_done=int(done),
            process_s=max(float(row[21]), float(last_t)),
            summary=json.loads(row[22]),
        )

    def runs(self, limit: int = 20) -> list[RunRecord]:
        rows = self.db.execute(
            "SELECT id, recipe_path, recipe_name, recipe_text, recipe_sha256, includes, overrides,"
            " params, config_path, config_text, tool, user, host, pid, clock, realtime,"
            " started_at, ended_at, outcome, reason, units_total, process_s, summary"
            " FROM runs ORDER BY started_at DESC, id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._record(r) for r in rows]

    def done_units(self, run_id: str) -> list[int]:
        return [
            r[0]
            for r in self.db.execute(
                "SELECT unit FROM checkpoints WHERE run_id=? ORDER BY unit", (run_id,)
            )
        ]

    def sim_state(self, run_id: str) -> bytes | None:
        """The simulated reactor at the last checkpoint (what a resume continues from)."""
        row = self.db.execute("SELECT state FROM sim_states WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else row[0]

    def final_state(self, run_id: str) -> bytes | None:
        """The simulated reactor as the run left it (after teardown or safe state)."""
        row = self.db.execute("SELECT final_state FROM runs WHERE id=?", (run_id,)).fetchone()
        return None if row is None else row[0]

    def events(self, run_id: str) -> Iterator[tuple[float, str, str | None, str]]:
        yield from self.db.execute(
            "SELECT t, kind, state, message FROM events WHERE run_id=? ORDER BY seq", (run_id,)
        )

    def pulses(self, run_id: str, line: str | None = None) -> list[PulseRecord]:
        q = (
            "SELECT unit, line, chemical, commanded_open, achieved_open, commanded_close,"
            " achieved_close, hardware, area_torr_s FROM pulses WHERE run_id=?"
        )
        args: tuple[Any, ...] = (run_id,)
        if line is not None:
            q += " AND line=?"
            args += (line,)
        return [
            PulseRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8])
            for r in self.db.execute(q + " ORDER BY rowid", args)
        ]


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"
