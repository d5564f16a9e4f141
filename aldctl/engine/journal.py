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

Ownership: a run is driven by exactly one process. Taking a run (a new run, or a resume) is
one ``BEGIN IMMEDIATE`` transaction that checks and writes the run's owner (host, pid, the
pid's start time, a random token) and a lease; for a tool with real hardware it also takes
the tool's row in ``tool_locks``, so a second run cannot drive a tool a live run is driving.
A lease-keeper thread (its own connection) renews the lease every few seconds. An owner is
alive when, on this host, its pid exists with the same start time (pid reuse cannot fake
it), and, on another host, while its lease has not expired. A dead owner's run is marked
"failed" with the reason the next time a journal is opened for writing.

Writes that fail (a full disk, an I/O error) raise :class:`JournalWriteError`; the journal
then refuses further writes (``broken``), and the runner aborts the run to the safe state.
A journal that fails ``PRAGMA quick_check`` is refused for writing, with what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
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
-- By time, not by channel: a commit's samples (a dozen channels) then add to one index
-- leaf, not one leaf per channel (that was 14 of the ~23 pages each cycle's commit wrote).
-- Journals written before: their per-channel index is dropped on opening (below).
DROP INDEX IF EXISTS samples_run;
CREATE INDEX IF NOT EXISTS samples_run_t ON samples (run_id, t);
CREATE TABLE IF NOT EXISTS sim_states (
    run_id TEXT PRIMARY KEY REFERENCES runs(id),
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tool_locks (
    tool TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_start TEXT NOT NULL,
    token TEXT NOT NULL,
    lease_until REAL NOT NULL
);
"""

# Columns added after schema 1 shipped: (name, declaration), added by ALTER TABLE on open.
_RUN_COLUMNS = (
    ("final_state", "BLOB"),
    ("owner_token", "TEXT"),
    ("pid_start", "TEXT"),
    ("lease_until", "REAL"),
    ("faults", "TEXT"),
)

ACTIVE = "running"
LEASE_S = 30.0
"""An owner on another host is presumed alive this long after its last renewal."""
RENEW_S = 5.0
"""How often the lease keeper renews (wall seconds)."""


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
    faults: tuple[str, ...] = ()
    """Simulator faults injected into the run (``aldctl run --fault``), as given: a record
    of a faulted run must not pass for one of a real failure."""


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
    faults: list[str] = field(default_factory=list)
    """Simulator faults injected into the run (``aldctl run --fault``)."""


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


class JournalWriteError(JournalError):
    """A write failed (disk full, I/O error, read-only file): the run cannot be recorded."""


class RunOwned(JournalError):
    """The run, or the tool, is driven by a live process (named in the message)."""


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    pid_start: str
    token: str
    lease_until: float

    def alive(self) -> bool:
        if self.host == socket.gethostname():
            if not _pid_exists(self.pid):
                return False
            # A recycled pid is a different process: compare start times where known.
            return not self.pid_start or self.pid_start == _pid_start(self.pid)
        return time.time() < self.lease_until

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def _pid_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or '' where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def me(lease_s: float = LEASE_S) -> Owner:
    return Owner(
        socket.gethostname(),
        os.getpid(),
        _pid_start(os.getpid()),
        secrets.token_hex(8),
        time.time() + lease_s,
    )


@contextlib.contextmanager
def _setup_lock(path: Path, within_s: float = 10.0) -> Iterator[None]:
    """One process at a time sets a journal up (WAL switch, schema, added columns, dead runs).

    Two runs started together on a new data directory otherwise race: SQLite answers the
    second WAL switch "database is locked" without waiting, and both add the same column
    ("duplicate column name"). An advisory lock on a file beside the journal, held for the
    milliseconds the setup takes, serialises them; the kernel drops it with a killed holder.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise JournalError(f"cannot open the journal's lock {path}: {exc.strerror}") from exc
    try:
        deadline = time.monotonic() + within_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise JournalError(
                        f"the journal {path.with_suffix('')} is being set up by another "
                        f"process for over {within_s:.0f} s (lock {path})"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class Journal:
    """The run store. Open one per process; use it from the event-loop thread.

    ``readonly=True`` (``runs list``/``show``) opens the file read-only, so a journal on a
    read-only medium or owned by another user can still be inspected; ``damaged`` then says
    whether ``PRAGMA quick_check`` found a problem (shown as a warning, not refused).
    """

    def __init__(self, data_dir: Path, *, readonly: bool = False) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "journal.sqlite"
        self.readonly = readonly
        self.damaged: str | None = None
        self._missing_cols: set[str] = set()
        self.notice: str | None = None
        """What opening it did that the user should hear of (a one-off migration)."""
        self.broken: str | None = None
        """Why writes failed, once one has: every later write is refused."""
        self.owner: Owner | None = None
        self._keeper: _LeaseKeeper | None = None
        self._tool_lock: str | None = None
        if readonly:
            self.db = self._open_readonly()
        else:
            self.db = self._open_writable()
        self.run_id: str | None = None
        self._seq = 0
        self._session = 0
        self._t_offset = 0.0
        self._pulses: list[tuple[Any, ...]] = []
        self._samples: list[tuple[Any, ...]] = []

    def _open_writable(self) -> sqlite3.Connection:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the data directory {self.data_dir}: {exc.strerror}"
            raise JournalError(msg) from exc
        with _setup_lock(self.path.with_name(self.path.name + ".lock")):
            return self._open_writable_locked()

    def _open_writable_locked(self) -> sqlite3.Connection:
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            if existed:
                problem = _quick_check(db)
                if problem is not None:
                    db.close()
                    raise JournalError(
                        f"the journal {self.path} is damaged ({problem}); aldctl will not add "
                        f"runs to it. Move it aside (mv {self.path} {self.path}.damaged) to "
                        "start a new one; `sqlite3 FILE .recover` salvages what it can"
                    )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            old_index = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='index' AND name='samples_run'"
            ).fetchone()
            t0 = time.monotonic()
            db.executescript(_SCHEMA)
            if old_index is not None:
                # a journal of an earlier aldctl: its samples index was rebuilt, holding the
                # file's write lock meanwhile (a run of that earlier version sharing it waits)
                self.notice = (
                    f"journal {self.path}: its samples index was rebuilt for this version of "
                    f"aldctl ({time.monotonic() - t0:.1f} s, once)"
                )
            cols = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
            for name, decl in _RUN_COLUMNS:
                if name not in cols:  # journals written before the column existed
                    db.execute(f"ALTER TABLE runs ADD COLUMN {name} {decl}")
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            _close_dead_runs(db)
        except sqlite3.DatabaseError as exc:
            msg = f"cannot open the journal {self.path}: {exc}"
            raise JournalError(msg) from exc
        return db

    def _open_readonly(self) -> sqlite3.Connection:
        if not self.path.exists():
            msg = f"no journal at {self.path} (no run has been recorded there yet)"
            raise JournalError(msg)
        uri = self.path.resolve().as_uri()
        db: sqlite3.Connection | None = None
        # mode=ro still needs the WAL index (-shm) beside the file; a journal in a directory
        # we cannot write to is opened as immutable instead (a snapshot: fine for reading).
        for suffix in ("?mode=ro", "?immutable=1"):
            try:
                db = sqlite3.connect(uri + suffix, uri=True, isolation_level=None, timeout=10.0)
                db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                break
            except sqlite3.DatabaseError as exc:
                if db is not None:
                    db.close()
                    db = None
                last = exc
        if db is None:
            msg = f"cannot open the journal {self.path}: {last}"
            raise JournalError(msg)
        try:
            self.damaged = _quick_check(db)
            cols = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
        except sqlite3.DatabaseError as exc:
            db.close()
            msg = f"cannot read the journal {self.path}: {exc}"
            raise JournalError(msg) from exc
        if not cols:
            db.close()
            msg = f"{self.path} holds no aldctl runs"
            raise JournalError(msg)
        self._missing_cols = {n for n, _ in _RUN_COLUMNS} - cols
        return db

    def close(self) -> None:
        with contextlib.suppress(JournalError):
            self.flush()
        self.release()
        self.db.close()

    # ------------------------------------------------------------------ writes

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if self.broken is not None:
            raise JournalWriteError(self.broken)
        try:
            return self.db.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            raise self._fail(exc) from exc

    def _fail(self, exc: BaseException) -> JournalWriteError:
        detail = str(exc) or type(exc).__name__
        self.broken = f"cannot write the journal {self.path}: {detail}"
        return JournalWriteError(self.broken)

    # ------------------------------------------------------------------ ownership

    def _claim_tool(self, tool_key: str, run_id: str, owner: Owner) -> None:
        row = self.db.execute(
            "SELECT run_id, host, pid, pid_start, token, lease_until FROM tool_locks WHERE tool=?",
            (tool_key,),
        ).fetchone()
        if row is not None:
            held = Owner(row[1], int(row[2]), row[3], row[4], float(row[5]))
            if held.alive() and held.token != owner.token:
                raise RunOwned(
                    f"tool '{tool_key}' is being driven by run {row[0]} ({held.describe()}); "
                    "one run per tool"
                )
        self.db.execute(
            "INSERT OR REPLACE INTO tool_locks VALUES (?,?,?,?,?,?,?)",
            (
                tool_key,
                run_id,
                owner.host,
                owner.pid,
                owner.pid_start,
                owner.token,
                owner.lease_until,
            ),
        )

    def _start_lease(self, owner: Owner, tool_key: str | None) -> None:
        self.owner = owner
        self._tool_lock = tool_key
        assert self.run_id is not None
        self._keeper = _LeaseKeeper(self.path, self.run_id, owner.token, tool_key)
        self._keeper.start()

    def release(self) -> None:
        """Stop renewing the lease and free the tool (the run row keeps its owner)."""
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        if self._tool_lock is not None and self.owner is not None and self.broken is None:
            with contextlib.suppress(sqlite3.DatabaseError):
                self.db.execute(
                    "DELETE FROM tool_locks WHERE tool=? AND token=?",
                    (self._tool_lock, self.owner.token),
                )
        self._tool_lock = None

    def owner_of(self, run_id: str) -> Owner | None:
        try:
            row = self.db.execute(
                "SELECT host, pid, pid_start, owner_token, lease_until, outcome FROM runs"
                " WHERE id=?",
                (run_id,),
            ).fetchone()
        except sqlite3.OperationalError:  # a read-only journal from before ownership
            row = self.db.execute(
                "SELECT host, pid, '', '', 0, outcome FROM runs WHERE id=?", (run_id,)
            ).fetchone()
        if row is None or row[5] != ACTIVE or row[1] is None:
            return None
        return Owner(row[0], int(row[1]), row[2] or "", row[3] or "", float(row[4] or 0.0))

    # ------------------------------------------------------------------ runs

    def new_run(self, meta: RunMeta, *, tool_key: str | None = None) -> str:
        """Record a new run and take it (and ``tool_key``'s lock) in one transaction.

        Raises :class:`RunOwned` when a live run drives ``tool_key``.
        """
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        suffix = hashlib.sha256(f"{time.time_ns()}{os.getpid()}".encode()).hexdigest()[:4]
        run_id = f"{stamp}-{suffix}"
        from aldctl import __version__

        owner = me()
        try:
            with self._txn():
                if tool_key is not None:
                    self._claim_tool(tool_key, run_id, owner)
                self.db.execute(
                    "INSERT INTO runs (id, recipe_path, recipe_name, recipe_text, recipe_sha256,"
                    " includes, overrides, params, config_path, config_text, tool, user, host,"
                    " pid, aldctl_version, clock, realtime, started_at, outcome, units_total,"
                    " owner_token, pid_start, lease_until, faults)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                        owner.host,
                        owner.pid,
                        __version__,
                        meta.clock,
                        meta.realtime,
                        now_iso(),
                        ACTIVE,
                        meta.units_total,
                        owner.token,
                        owner.pid_start,
                        owner.lease_until,
                        json.dumps(list(meta.faults)) if meta.faults else None,
                    ),
                )
        except sqlite3.DatabaseError as exc:
            raise self._fail(exc) from exc
        self.run_id = run_id
        self._seq = 0
        self._session = 0
        self._t_offset = 0.0
        self._start_lease(owner, tool_key)
        return run_id

    def attach(
        self,
        run_id: str,
        realtime: str,
        *,
        expect_units: int | None = None,
        tool_key: str | None = None,
    ) -> RunRecord:
        """Take an existing run over (resume), atomically; a new session of its records.

        Refused (:class:`RunOwned`) while its owner, or the owner of ``tool_key``, is alive;
        refused (:class:`JournalError`) when the run completed or its checkpoints changed
        since the caller looked (``expect_units``): another resume got there first.
        """
        owner = me()
        try:
            with self._txn():
                row = self.db.execute("SELECT outcome FROM runs WHERE id=?", (run_id,)).fetchone()
                if row is None:
                    raise JournalError(f"no run '{run_id}' in {self.path}")
                held = self.owner_of(run_id)
                if held is not None and held.alive():
                    raise RunOwned(f"run {run_id} is being driven by {held.describe()}")
                if row[0] == "complete":
                    raise JournalError(f"run {run_id} completed meanwhile: nothing to resume")
                done = self.db.execute(
                    "SELECT COUNT(*) FROM checkpoints WHERE run_id=?", (run_id,)
                ).fetchone()[0]
                if expect_units is not None and int(done) != expect_units:
                    raise JournalError(
                        f"run {run_id} moved on while this resume was being prepared "
                        f"({done} units done, not {expect_units}): another process resumed it"
                    )
                if tool_key is not None:
                    self._claim_tool(tool_key, run_id, owner)
                self.db.execute(
                    "UPDATE runs SET outcome=?, reason='', ended_at=NULL, host=?, pid=?,"
                    " pid_start=?, owner_token=?, lease_until=?, realtime=? WHERE id=?",
                    (
                        ACTIVE,
                        owner.host,
                        owner.pid,
                        owner.pid_start,
                        owner.token,
                        owner.lease_until,
                        realtime,
                        run_id,
                    ),
                )
        except sqlite3.DatabaseError as exc:
            raise self._fail(exc) from exc
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
        self._start_lease(owner, tool_key)
        return rec

    def note_realtime(self, detail: str) -> None:
        """What the operating system granted for real-time scheduling (asked after the run
        was taken, so that a refused run never changes the process's priority)."""
        self._write("UPDATE runs SET realtime=? WHERE id=?", (detail, self._require()))

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
        self._write(
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
            # An UPDATE in place (INSERT OR REPLACE deleted and re-inserted the row, which
            # also rewrote its key's index page every cycle).
            if sim_state is not None and (
                self.db.execute(
                    "UPDATE sim_states SET state=? WHERE run_id=?", (sim_state, run_id)
                ).rowcount
                == 0
            ):
                self.db.execute("INSERT INTO sim_states VALUES (?, ?)", (run_id, sim_state))

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
        self.release()

    def finish_if_open(self, reason: str) -> bool:
        """Close this process's run as "failed" if nothing closed it (connect failure,
        internal error); True when it did. Never raises: it runs on the way out."""
        if self.run_id is None or self.owner is None:
            return False
        self._pulses.clear()
        self._samples.clear()
        try:
            cur = self.db.execute(
                "UPDATE runs SET outcome='failed', reason=?, ended_at=? WHERE id=? AND outcome=?"
                " AND owner_token=?",
                (reason, now_iso(), self.run_id, ACTIVE, self.owner.token),
            )
        except sqlite3.DatabaseError:
            return False
        finally:
            self.release()
        return cur.rowcount > 0

    class _Txn:
        def __init__(self, journal: Journal) -> None:
            self.j = journal

        def __enter__(self) -> None:
            if self.j.broken is not None:
                raise JournalWriteError(self.j.broken)
            try:
                self.j.db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise self.j._fail(exc) from exc

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            if exc_type is not None:
                with contextlib.suppress(sqlite3.DatabaseError):  # already rolled back
                    self.j.db.execute("ROLLBACK")
                # A constraint (a doubled unit) is a bug to surface as it is, not a broken file.
                if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
                    exc, sqlite3.IntegrityError
                ):
                    raise self.j._fail(exc) from exc
                return
            try:
                self.j.db.execute("COMMIT")
            except sqlite3.DatabaseError as err:
                with contextlib.suppress(sqlite3.DatabaseError):
                    self.j.db.execute("ROLLBACK")
                raise self.j._fail(err) from err

    def _txn(self) -> Journal._Txn:
        return Journal._Txn(self)

    # ------------------------------------------------------------------ queries

    def resolve(self, run_id: str) -> str:
        """The full id of a run given its id or any unique prefix of it (as git does)."""
        if self.db.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone():
            return run_id
        like = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        found = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id DESC LIMIT 6",
                (like + "%",),
            )
        ]
        if len(found) == 1:
            return str(found[0])
        if found:
            more = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            msg = f"'{run_id}' is ambiguous in {self.path}: it starts {more}"
            raise JournalError(msg)
        matches = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM runs WHERE id LIKE ? ORDER BY id DESC LIMIT 3", (f"%{run_id}%",)
            )
        ]
        hint = f" (did you mean {', '.join(matches)}?)" if matches else ""
        msg = f"no run '{run_id}' in {self.path}{hint}"
        raise JournalError(msg)

    def get(self, run_id: str) -> RunRecord:
        """A run by its id or a unique prefix of it."""
        full = self.resolve(run_id)
        row = self.db.execute(
            "SELECT id, recipe_path, recipe_name, recipe_text, recipe_sha256, includes, overrides,"
            " params, config_path, config_text, tool, user, host, pid, clock, realtime,"
            " started_at, ended_at, outcome, reason, units_total, process_s, summary,"
            f" {self._faults_col()} FROM runs WHERE id=?",
            (full,),
        ).fetchone()
        return self._record(row)

    def _record(self, row: tuple[Any, ...]) -> RunRecord:
        done, last_t = self.db.execute(
            "SELECT COUNT(*), COALESCE(MAX(t_end), 0) FROM checkpoints WHERE run_id=?",
            (row[0],),
        ).fetchone()
        outcome, reason = row[18], row[19]
        if outcome == ACTIVE:
            owner = self.owner_of(row[0])
            if owner is None or not owner.alive():
                outcome, reason = "failed", dead_reason(row[13], row[12])
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
            outcome=outcome,
            reason=reason,
            units_total=row[20],
            units_done=int(done),
            process_s=max(float(row[21]), float(last_t)),
            summary=json.loads(row[22]),
            faults=json.loads(row[23]) if row[23] else [],
        )

    def _faults_col(self) -> str:
        # a journal of an earlier aldctl opened read-only has no such column
        return "NULL" if "faults" in self._missing_cols else "faults"

    def runs(self, limit: int = 20) -> list[RunRecord]:
        rows = self.db.execute(
            "SELECT id, recipe_path, recipe_name, recipe_text, recipe_sha256, includes, overrides,"
            " params, config_path, config_text, tool, user, host, pid, clock, realtime,"
            " started_at, ended_at, outcome, reason, units_total, process_s, summary,"
            f" {self._faults_col()} FROM runs ORDER BY started_at DESC, id DESC LIMIT ?",
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

    def pulse_counts(self, run_id: str) -> dict[str, int]:
        """Doses journaled per line (a resume's diagnostics count the earlier sessions')."""
        return {
            str(line): int(n)
            for line, n in self.db.execute(
                "SELECT line, COUNT(*) FROM pulses WHERE run_id=? GROUP BY line", (run_id,)
            )
        }

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


def dead_reason(pid: object, host: object) -> str:
    return (
        f"the run's process ({pid} on {host}) ended without recording an outcome "
        "(killed, crashed, or its journal could not be written)"
    )


def _quick_check(db: sqlite3.Connection) -> str | None:
    """None when the file is sound, else what ``PRAGMA quick_check`` says (first line)."""
    try:
        rows = db.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    if rows and rows[0][0] == "ok":
        return None
    return "; ".join(str(r[0]) for r in rows) or "quick_check returned nothing"


def _close_dead_runs(db: sqlite3.Connection) -> None:
    """Mark runs whose owner is gone as failed, with why (done on every writable open)."""
    rows = db.execute(
        "SELECT id, host, pid, pid_start, owner_token, lease_until FROM runs WHERE outcome=?",
        (ACTIVE,),
    ).fetchall()
    for run_id, host, pid, pid_start, token, lease in rows:
        owner = Owner(host, int(pid or 0), pid_start or "", token or "", float(lease or 0.0))
        if pid is not None and owner.alive():
            continue
        db.execute(
            "UPDATE runs SET outcome='failed', reason=?, ended_at=? WHERE id=? AND outcome=?",
            (dead_reason(pid, host), now_iso(), run_id, ACTIVE),
        )
    db.execute("DELETE FROM tool_locks WHERE lease_until < ?", (time.time() - LEASE_S,))


class _LeaseKeeper:
    """Renews a run's lease (and its tool lock) from a thread, on its own connection.

    A thread, so that the lease says "this process is alive" even while the event loop is
    paused in virtual time or busy; a renewal that fails (disk full) is retried.
    """

    def __init__(self, path: Path, run_id: str, token: str, tool_key: str | None) -> None:
        self.path = path
        self.run_id = run_id
        self.token = token
        self.tool_key = tool_key
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="journal-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def _loop(self) -> None:
        db: sqlite3.Connection | None = None
        while not self._stop.wait(RENEW_S):
            try:
                if db is None:
                    db = sqlite3.connect(self.path, isolation_level=None, timeout=2.0)
                until = time.time() + LEASE_S
                db.execute(
                    "UPDATE runs SET lease_until=? WHERE id=? AND owner_token=?",
                    (until, self.run_id, self.token),
                )
                if self.tool_key is not None:
                    db.execute(
                        "UPDATE tool_locks SET lease_until=? WHERE tool=? AND token=?",
                        (until, self.tool_key, self.token),
                    )
            except sqlite3.DatabaseError:
                continue
        if db is not None:
            db.close()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"
