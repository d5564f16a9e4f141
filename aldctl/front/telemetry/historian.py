"""``aldctl record``: the lab's central record of every tool on a broker.

Storage: SQLite, one file per tool and UTC day (``OUT/<tool>/<YYYY-MM-DD>.sqlite``), tables
``telemetry``, ``pulses`` and ``events`` (alarms are events with ``stream = 'alarm'``).
Why SQLite and not Parquet: a historian appends a few rows at a time for ever and must
survive being killed at any instant. SQLite commits each small batch atomically (WAL: the
lab's scripts read the file while it is written), and a primary key on (run_id, seq) makes a
redelivered message a no-op, so restarts never duplicate. Parquet files are immutable once
written: appending means many small files or a buffer that a crash loses, and deduplicating
means reading them back. Parquet is the better format for analysis; one DuckDB or pandas
line turns a day's file into it. SQLite is in the standard library: nothing to install.

Restart safety: the historian keeps a persistent MQTT session (fixed client id, clean start
off, session expiry a week) and subscribes with QoS 1, so the broker keeps what arrives
while it is down; it acknowledges a message only after the batch holding it is committed
(paho's manual acknowledgement), so a message it was killed before storing is delivered
again. What a broker itself loses (a broker restart without persistence, QoS 0 telemetry) is
the broker's guarantee, not ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aldctl.front.telemetry.broker import DEFAULT_PREFIX, STREAMS, Broker, Messages, split

SCHEMA = """
CREATE TABLE IF NOT EXISTS telemetry (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, wall REAL, t REAL, channel_values TEXT,
    PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pulses (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, wall REAL, t REAL, line TEXT, chemical TEXT,
    unit INTEGER, open_error_s REAL, width_error_s REAL, hardware INTEGER,
    PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, wall REAL, t REAL, stream TEXT, type TEXT,
    data TEXT, PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
"""
BATCH = 16
"""Messages per commit (below the broker's in-flight window: they wait for our ack)."""
BATCH_S = 0.05
SESSION_EXPIRY_S = 7 * 24 * 3600


def default_client_id() -> str:
    return f"aldctl-record-{socket.gethostname()}"


@dataclass
class Stored:
    new: int = 0
    duplicates: int = 0
    rejected: int = 0


class Store:
    """The files: one SQLite database per tool and day, opened on first use."""

    def __init__(self, out: Path, prefix: str = DEFAULT_PREFIX) -> None:
        self.out = out
        self.prefix = prefix
        self.dbs: dict[tuple[str, str], sqlite3.Connection] = {}
        self.stats = Stored()

    def _db(self, tool: str, day: str) -> sqlite3.Connection:
        key = (tool, day)
        db = self.dbs.get(key)
        if db is None:
            d = self.out / tool
            d.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(d / f"{day}.sqlite", isolation_level="DEFERRED")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            db.commit()
            self.dbs[key] = db
        return db

    def add(self, topic_name: str, payload: bytes) -> bool:
        """Store one message; False when it is not ours to keep (logged as rejected)."""
        parsed = split(topic_name, self.prefix)
        if parsed is None or len(parsed[1]) != 1 or parsed[1][0] not in STREAMS:
            self.stats.rejected += 1
            return False
        tool, (stream,) = parsed
        try:
            m = json.loads(payload)
            run_id, seq, wall = str(m["run_id"]), int(m["seq"]), float(m["wall"])
            t = float(m.get("t", 0.0))
        except (ValueError, KeyError, TypeError):
            self.stats.rejected += 1
            return False
        if "/" in tool or tool.startswith("."):
            self.stats.rejected += 1
            return False
        day = datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%d")
        db = self._db(tool, day)
        if stream == "telemetry":
            cur = db.execute(
                "INSERT OR IGNORE INTO telemetry VALUES (?,?,?,?,?)",
                (run_id, seq, wall, t, json.dumps(m.get("values", {}))),
            )
        elif stream == "pulse":
            cur = db.execute(
                "INSERT OR IGNORE INTO pulses VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    seq,
                    wall,
                    t,
                    m.get("line"),
                    m.get("chemical"),
                    m.get("unit"),
                    m.get("open_error_s"),
                    m.get("width_error_s"),
                    int(bool(m.get("hardware"))),
                ),
            )
        else:
            rest = {
                k: v
                for k, v in m.items()
                if k not in ("tool", "run_id", "seq", "wall", "t", "type")
            }
            cur = db.execute(
                "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?)",
                (run_id, seq, wall, t, stream, m.get("type"), json.dumps(rest, default=str)),
            )
        if cur.rowcount:
            self.stats.new += 1
        else:
            self.stats.duplicates += 1
        return True

    def commit(self) -> None:
        for db in self.dbs.values():
            db.commit()

    def close(self) -> None:
        self.commit()
        for db in self.dbs.values():
            db.close()
        self.dbs.clear()


async def record(
    broker: Broker,
    out: Path,
    *,
    client_id: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    stop: asyncio.Event | None = None,
    on_status: Any = None,
) -> Stored:
    """Subscribe to every tool's streams and store them until ``stop`` is set."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    stop = stop or asyncio.Event()
    store = Store(out, prefix)
    backoff = 0.2

    def say(text: str) -> None:
        if on_status is not None:
            on_status(text)

    try:
        while not stop.is_set():
            if broker.v5:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = SESSION_EXPIRY_S
                session: dict[str, Any] = {"clean_start": False, "properties": props}
            else:  # 3.1.1 has no expiry: the broker keeps the session until it is cleaned
                session = {"clean_session": False}
            client = broker.client(
                identifier=client_id or default_client_id(),
                keepalive=10,
                **session,
            )
            # Acknowledge only what is committed: a kill between receipt and commit means
            # the broker sends it again (and the primary key ignores the copy).
            client._client.manual_ack_set(True)
            try:
                async with client:
                    backoff = 0.2
                    for s in STREAMS:
                        await client.subscribe(f"{prefix}/+/{s}", qos=1)
                    say(f"recording {prefix}/+/{{{','.join(STREAMS)}}} from {broker.url}")
                    await _pump(client, store, stop)
            except Exception as exc:  # the broker went away: keep what we have, retry
                store.commit()
                say(f"broker: {type(exc).__name__}: {exc}; retrying in {backoff:.1f} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
    finally:
        store.close()
    return store.stats


async def _pump(client: Any, store: Store, stop: asyncio.Event) -> None:
    messages = Messages(client)
    pending: list[tuple[int, int]] = []
    first = 0.0

    def flush() -> None:
        store.commit()
        for mid, qos in pending:
            if qos > 0:
                client._client.ack(mid, qos)
        pending.clear()

    try:
        while not stop.is_set():
            timeout = BATCH_S if pending else 0.5
            msg = await messages.get(timeout)
            if msg is None:
                if pending:
                    flush()
                continue
            payload = msg.payload if isinstance(msg.payload, bytes) else b""
            store.add(str(msg.topic), payload)
            if not pending:
                first = time.monotonic()
            pending.append((msg.mid, msg.qos))
            if len(pending) >= BATCH or time.monotonic() - first >= BATCH_S:
                flush()
    finally:
        # A message taken but not stored is not acknowledged: the broker sends it again.
        await messages.close()
        with contextlib.suppress(Exception):
            flush()
