"""Fleet telemetry against a real broker (mosquitto on loopback) and real run processes.

The clients on the other side are plain aiomqtt/paho (not aldctl code): what a lab's own
scripts would use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from aldctl.front.telemetry.broker import connect_info
from aldctl.front.telemetry.monitor import Fleet, watch

from .conftest import FAST, Mosquitto, aldctl, tool_config

pytestmark = pytest.mark.timeout(120)


@dataclass
class Got:
    topic: str
    payload: bytes
    props: Any
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.payload)


class Listener:
    """A subscriber that keeps every message it gets."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.got: list[Got] = []
        self.changed = asyncio.Event()

    async def run(self) -> None:
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else b""
            self.got.append(Got(str(m.topic), payload, m.properties))
            self.changed.set()

    def on(self, topic: str) -> list[Got]:
        return [g for g in self.got if g.topic == topic]

    async def wait_for(self, pred: Any, within: float = 15.0) -> Got:
        deadline = time.monotonic() + within
        while True:
            for g in list(self.got):
                if pred(g):
                    return g
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [(g.topic, g.payload[:80]) for g in self.got[-10:]]
                raise AssertionError(f"timed out; last messages: {seen}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


@contextlib.asynccontextmanager
async def listening(
    broker: Mosquitto, *topics: str, user: str | None = None
) -> AsyncIterator[Listener]:
    client = aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        username=user,
        password=f"{user}pw" if user else None,
        protocol=aiomqtt.ProtocolVersion.V5,
        identifier=f"test-{uuid.uuid4().hex[:8]}",
    )
    async with client:
        for t in topics:
            await client.subscribe(t, qos=1)
        lst = Listener(client)
        task = asyncio.create_task(lst.run())
        try:
            yield lst
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def start_run(
    cfg: Path, data: Path, *sets: str, realtime: bool = False
) -> asyncio.subprocess.Process:
    args = ["run", str(FAST), "--config", str(cfg), "--json", "--data-dir", str(data)]
    args += [a for kv in sets for a in ("--set", kv)]
    args += ["--realtime"] if realtime else []
    return await asyncio.create_subprocess_exec(
        *aldctl(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def finish(proc: asyncio.subprocess.Process, within: float = 60) -> dict[str, Any]:
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert out, err.decode()
    result: dict[str, Any] = json.loads(out)
    result["stderr"] = err.decode()
    result["returncode"] = proc.returncode
    return result


def commands_journaled(data: Path, run_id: str) -> list[tuple[str, str, bool, str]]:
    db = sqlite3.connect(data / "journal.sqlite")
    try:
        rows = db.execute(
            "SELECT data FROM events WHERE run_id=? AND kind='command' ORDER BY seq", (run_id,)
        ).fetchall()
    finally:
        db.close()
    out = []
    for (d,) in rows:
        x = json.loads(d)
        out.append((x["sender"], x["verb"], x["ok"], x["outcome"]))
    return out


# ------------------------------------------------------------------------------ topics


async def test_every_topic_round_trips_and_a_late_subscriber_gets_the_retained_state(
    broker: Mosquitto, tmp_path: Path
) -> None:
    cfg = tool_config(tmp_path / "a.yaml", broker, "reactor-a")
    async with listening(broker, "ald/reactor-a/#") as early:
        # 0.5 s TMA doses peak above the chamber's hold limit: holds, hence alarms, and the
        # run still completes (the dose is retried once the pressure is back in band).
        proc = await start_run(cfg, tmp_path / "d", "cycles=3", "tma=0.5s", "purge=3s")
        result = await finish(proc)
        assert result["outcome"] == "complete", result
        await early.wait_for(lambda g: g.topic.endswith("/online") and g.payload == b"offline")
    run_id = result["run_id"]
    streams = {
        s: [g.json() for g in early.on(f"ald/reactor-a/{s}")]
        for s in ("telemetry", "event", "pulse", "alarm")
    }
    assert [g.payload for g in early.on("ald/reactor-a/online")] == [b"online", b"offline"]
    assert len(streams["pulse"]) == result["pulse_timing"]["pulses"] == 6
    assert {p["chemical"] for p in streams["pulse"]} == {"TMA", "H2O"}
    assert any(a["severity"] == "hold" and a["type"] == "Alarm" for a in streams["alarm"])
    assert streams["telemetry"]
    assert "pressure" in streams["telemetry"][-1]["values"]
    states = [e["state"] for e in streams["event"] if e["type"] == "StateChanged"]
    assert states[-1] == "complete"
    assert "held" in states
    # One sequence across the streams, each message once, none missing (the broker was up).
    seqs = sorted(m["seq"] for ms in streams.values() for m in ms)
    assert seqs == list(range(1, len(seqs) + 1))
    assert all(
        m["run_id"] == run_id and m["tool"] == "reactor-a" for ms in streams.values() for m in ms
    )

    async with listening(broker, "ald/+/state", "ald/+/online") as late:
        state = (await late.wait_for(lambda g: g.topic == "ald/reactor-a/state")).json()
        online = await late.wait_for(lambda g: g.topic == "ald/reactor-a/online")
    assert online.payload == b"offline"
    assert state["run_id"] == run_id
    assert state["state"] == "complete"
    assert (state["units_done"], state["units_total"]) == (3, 3)
    assert state["recipe"] == "telemetry test film"
    assert state["dropped"] == 0
    assert state["seq"] == len(seqs)
    assert state["last_alarm"]["severity"] in ("hold", "warning")


async def test_the_last_will_marks_a_killed_run_process_offline(
    broker: Mosquitto, tmp_path: Path
) -> None:
    cfg = tool_config(tmp_path / "a.yaml", broker, "reactor-a")
    fleet = Fleet()
    async with listening(broker, "ald/+/online", "ald/+/state") as sub:
        proc = await start_run(cfg, tmp_path / "d", "cycles=100", realtime=True)
        try:
            await sub.wait_for(
                lambda g: g.topic.endswith("/state") and g.json()["state"] == "running"
            )
            await sub.wait_for(lambda g: g.topic.endswith("/online") and g.payload == b"online")
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await sub.wait_for(
                lambda g: g.topic.endswith("/online") and g.payload == b"offline", within=10
            )
        finally:
            if proc.returncode is None:
                proc.kill()
    for g in sub.got:
        fleet.feed(g.topic, g.payload)
    row = fleet.tools["reactor-a"].row()
    assert row["online"] is False  # the will, not a goodbye: nobody published it
    assert row["state"] == "running"  # the last state it said; the monitor shows it stale


# ------------------------------------------------------------------------- commands


class Commander:
    """An MQTT 5 client sending commands with a response topic and correlation data."""

    def __init__(self, client: aiomqtt.Client, user: str | None, listener: Listener) -> None:
        self.client = client
        self.user = user
        self.listener = listener

    async def send(
        self,
        tool: str,
        verb: str,
        payload: bytes = b"{}",
        *,
        sender: str | None = "self",
        within: float = 10.0,
    ) -> dict[str, Any] | None:
        who = self.user if sender == "self" else sender
        name = f"ald/{tool}/cmd/{verb}" + (f"/{who}" if who else "")
        corr = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"ald/{tool}/reply/{self.user or 'anon'}/{uuid.uuid4().hex[:6]}"
        props.CorrelationData = corr
        await self.client.publish(name, payload, qos=1, properties=props)
        try:
            got = await self.listener.wait_for(
                lambda g: (
                    g.topic == props.ResponseTopic
                    and getattr(g.props, "CorrelationData", None) == corr
                ),
                within,
            )
        except AssertionError:
            return None
        reply: dict[str, Any] = got.json()
        return reply


@contextlib.asynccontextmanager
async def commander(broker: Mosquitto, user: str | None) -> AsyncIterator[Commander]:
    async with listening(broker, "ald/+/reply/#", user=user) as lst:
        yield Commander(lst.client, user, lst)


async def test_two_tools_on_one_broker_commands_monitor_and_journal(
    broker: Mosquitto, tmp_path: Path
) -> None:
    data = tmp_path / "d"
    a = tool_config(tmp_path / "a.yaml", broker, "reactor-a", commands=True, allow=("alice",))
    b = tool_config(tmp_path / "b.yaml", broker, "reactor-b")  # commands off
    fleet = Fleet()
    changed = asyncio.Event()

    def on_change(tool: str) -> None:
        changed.set()

    async def until(pred: Any, within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while not pred():
            left = deadline - time.monotonic()
            assert left > 0, fleet.rows()
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    def st(tool: str) -> Any:
        row = fleet.tools.get(tool)
        return row.row()["state"] if row else None

    stop = asyncio.Event()
    monitor = asyncio.create_task(watch(connect_info(broker.url), fleet, on_change, stop=stop))
    pa = await start_run(a, data, "cycles=300", realtime=True)
    pb = await start_run(b, data, "cycles=300", realtime=True)
    try:
        try:
            # Two real-time runs start at once on a 2-core machine busy with the suite.
            await until(lambda: st("reactor-a") == "running" and st("reactor-b") == "running", 40.0)
        except AssertionError as exc:
            ended = {n: p.returncode for n, p in (("a", pa), ("b", pb))}
            err = {
                n: (await p.stderr.read()).decode()[-1500:] if p.returncode is not None else ""
                for n, p in (("a", pa), ("b", pb))
                if p.stderr is not None
            }
            raise AssertionError(f"{exc}; exit codes {ended}; stderr {err}") from None
        assert fleet.tools["reactor-a"].online
        assert fleet.tools["reactor-b"].online

        # `aldctl monitor --once --json` shows both (a process of its own, like a script).
        mon = await asyncio.create_subprocess_exec(
            *aldctl("monitor", "--broker", broker.url, "--once", "--json", "--wait", "1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(mon.communicate(), 30)
        rows = {r["tool"]: r for r in json.loads(out)}
        assert set(rows) == {"reactor-a", "reactor-b"}, err.decode()
        assert all(r["online"] and r["recipe"] == "telemetry test film" for r in rows.values())

        async with (
            commander(broker, "alice") as alice,
            commander(broker, "bob") as bob,
            commander(broker, None) as anon,
        ):
            r = await alice.send("reactor-a", "pause", b'{"id": 7}')
            assert r is not None
            assert r["ok"], r
            assert r["id"] == 7
            assert r["sender"] == "alice"
            await until(lambda: st("reactor-a") == "paused")
            assert st("reactor-b") == "running"

            r = await alice.send("reactor-a", "pause")
            assert r is not None
            assert not r["ok"]
            assert "cannot pause while paused" in r["error"]
            r = await bob.send("reactor-a", "resume")
            assert r is not None
            assert not r["ok"]
            assert "bob may watch" in r["error"]
            r = await anon.send("reactor-a", "resume")
            assert r is not None
            assert not r["ok"]
            assert "no sender" in r["error"]
            # An anonymous client claiming to be alice: the broker's ACL drops it, it never
            # reaches the tool (no reply), and the tool stays paused.
            r = await anon.send("reactor-a", "resume", sender="alice", within=1.5)
            assert r is None
            r = await alice.send("reactor-b", "pause")
            assert r is not None
            assert not r["ok"]
            assert "disabled" in r["error"]

            # Garbage: error replies, nothing changes.
            r = await alice.send("reactor-a", "resume", b"{{{ not json")
            assert r is not None
            assert not r["ok"]
            assert "malformed" in r["error"]
            r = await alice.send("reactor-a", "resume", b"[1, 2]")
            assert r is not None
            assert not r["ok"]
            assert "JSON object" in r["error"]
            r = await alice.send("reactor-a", "resume", b"x" * 200_000)
            assert r is not None
            assert not r["ok"]
            assert "too large" in r["error"]
            r = await alice.send("reactor-a", "explode")
            assert r is not None
            assert not r["ok"]
            assert "unknown verb" in r["error"]
            r = await alice.send("reactor-a", "resume", b"\xff\xfe\x00")
            assert r is not None
            assert not r["ok"]
            assert "malformed" in r["error"]
            await asyncio.sleep(0.3)
            assert st("reactor-a") == "paused"
            assert st("reactor-b") == "running"

            r = await alice.send("reactor-a", "status")
            assert r is not None
            assert r["ok"]
            assert r["result"]["state"] == "paused"
            r = await alice.send("reactor-a", "resume")
            assert r is not None
            assert r["ok"], r
            await until(lambda: st("reactor-a") == "running")
            r = await alice.send("reactor-a", "stop")
            assert r is not None
            assert r["ok"], r
        ra = await finish(pa)
        assert ra["outcome"] == "stopped"
    finally:
        for p in (pa, pb):
            if p.returncode is None:
                p.send_signal(signal.SIGINT if p is pb else signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pb.communicate(), 20)
        stop.set()
        await monitor

    run_a = ra["run_id"]
    journaled = commands_journaled(data, run_a)
    assert [(s, v, ok) for s, v, ok, _ in journaled] == [
        ("alice", "pause", True),
        ("alice", "pause", False),
        ("bob", "resume", False),
        ("anonymous", "resume", False),
        ("alice", "resume", False),
        ("alice", "resume", False),
        ("alice", "resume", False),
        ("alice", "?explode", False),
        ("alice", "resume", False),
        ("alice", "resume", True),
        ("alice", "stop", True),
    ]
    run_b = fleet.tools["reactor-b"].state["run_id"]
    assert [(s, v, ok) for s, v, ok, _ in commands_journaled(data, run_b)] == [
        ("alice", "pause", False)
    ]


# -------------------------------------------------------------------- broker outage


def historian_rows(out: Path, run_id: str) -> list[int]:
    seqs: list[int] = []
    for f in sorted(out.glob("*/*.sqlite")):
        db = sqlite3.connect(f)
        try:
            for table in ("telemetry", "pulses", "events"):
                seqs += [
                    s for (s,) in db.execute(f"SELECT seq FROM {table} WHERE run_id=?", (run_id,))
                ]
        finally:
            db.close()
    return sorted(seqs)


def start_historian(broker: Mosquitto, out: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            aldctl("record", "--broker", broker.url, "--out", str(out), "--client-id", "hist-test"),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _text(path: Path) -> str:
    return path.read_text(errors="replace")


async def wait_file_text(path: Path, text: str, count: int = 1, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while _text(path).count(text) < count:
        assert time.monotonic() < deadline, _text(path)
        await asyncio.sleep(0.05)


async def test_broker_killed_mid_run_the_run_completes_and_telemetry_resumes(
    broker: Mosquitto, tmp_path: Path
) -> None:
    out, log = tmp_path / "history", tmp_path / "record.log"
    log.write_text("")
    hist = start_historian(broker, out, log)
    try:
        await wait_file_text(log, "recording")
        cfg = tool_config(tmp_path / "a.yaml", broker, "reactor-a", queue=20, qos_telemetry=1)
        async with listening(broker, "ald/reactor-a/state") as sub:
            proc = await start_run(cfg, tmp_path / "d", "cycles=14", realtime=True)
            await sub.wait_for(lambda g: g.json()["state"] == "running")
        await asyncio.sleep(1.0)
        broker.kill()
        await asyncio.sleep(2.5)  # 50 samples and ~8 events into a queue of 20
        broker.start()
        restarted = time.time()
        result = await finish(proc)
        assert result["returncode"] == 0, result
        assert result["outcome"] == "complete", result
        async with listening(broker, "ald/reactor-a/state") as sub:
            state = (await sub.wait_for(lambda g: g.json()["state"] == "complete")).json()
        dropped, total = state["dropped"], state["seq"]
        assert dropped > 0
        deadline = time.monotonic() + 20
        while len(historian_rows(out, result["run_id"])) < total - dropped:
            if time.monotonic() > deadline:
                got = historian_rows(out, result["run_id"])
                miss = sorted(set(range(1, total + 1)) - set(got))
                raise AssertionError(
                    f"{len(got)} of {total} stored, {dropped} dropped; missing {miss}; "
                    f"{log.read_text()[-1500:]}"
                )
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # anything more (a duplicate) would arrive now
    finally:
        hist.send_signal(signal.SIGTERM)
        hist.wait(20)
    seqs = historian_rows(out, result["run_id"])
    assert len(seqs) == len(set(seqs)) == total - dropped  # nothing twice, only drops missing
    missing = set(range(1, total + 1)) - set(seqs)
    assert len(missing) == dropped
    db = sqlite3.connect(next(out.glob("reactor-a/*.sqlite")))
    resumed = db.execute("SELECT count(*) FROM telemetry WHERE wall > ?", (restarted,)).fetchone()
    db.close()
    assert resumed[0] > 10  # telemetry came back after the broker did


async def test_historian_killed_and_restarted_keeps_everything_once(
    broker: Mosquitto, tmp_path: Path
) -> None:
    out, log = tmp_path / "history", tmp_path / "record.log"
    log.write_text("")
    cfg = tool_config(tmp_path / "a.yaml", broker, "reactor-a", qos_telemetry=1)
    hist = start_historian(broker, out, log)
    runs = []
    try:
        await wait_file_text(log, "recording")
        r1 = await finish(await start_run(cfg, tmp_path / "d", "cycles=20"))
        hist.send_signal(signal.SIGKILL)  # possibly before its last batch was committed
        hist.wait(10)
        r2 = await finish(await start_run(cfg, tmp_path / "d", "cycles=20"))  # nobody recording
        runs = [r1, r2]
        hist = start_historian(broker, out, log)
        await wait_file_text(log, "recording", count=2)
        async with listening(broker, "ald/reactor-a/state") as sub:
            state = (await sub.wait_for(lambda g: g.json()["run_id"] == r2["run_id"])).json()
        totals = {r1["run_id"]: None, r2["run_id"]: state["seq"]}
        deadline = time.monotonic() + 20
        while len(historian_rows(out, r2["run_id"])) < state["seq"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
    finally:
        hist.send_signal(signal.SIGTERM)
        hist.wait(20)
    for r in runs:
        seqs = historian_rows(out, r["run_id"])
        assert seqs == list(range(1, len(seqs) + 1)), r["run_id"]  # no gap, no duplicate
        assert totals[r["run_id"]] in (None, len(seqs))
        assert len(seqs) > 40


def test_a_password_in_the_broker_url_is_refused_with_its_location(tmp_path: Path) -> None:
    cfg = tmp_path / "t.yaml"
    from aldctl.config import builtin_text

    cfg.write_text(builtin_text() + "\ntelemetry:\n  broker: mqtt://alice:secret@broker.lab\n")
    p = subprocess.run(
        aldctl("tool", "show", "--config", str(cfg)), capture_output=True, text=True, check=False
    )
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if "error" in ln]
    assert lines
    assert f"{cfg}:" in lines[0]
    assert "password" in lines[0]
    assert "secret" not in p.stderr


async def test_the_monitor_screen_lists_every_tool_and_shows_the_selected_ones_run(
    broker: Mosquitto,
) -> None:
    from textual.widgets import DataTable, Static

    from aldctl.front.telemetry.monitor import make_app

    async with aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        username="tool",
        password="toolpw",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as c:
        for tool, state, done in (("reactor-a", "running", 4), ("reactor-b", "held", 7)):
            s = {
                "run_id": "r",
                "state": state,
                "recipe": f"film {tool}",
                "units_done": done,
                "units_total": 10,
                "eta_process_s": 60.0,
                "last_alarm": {"severity": "hold", "source": "pressure", "message": "high"},
            }
            await c.publish(f"ald/{tool}/state", json.dumps(s), qos=1, retain=True)
            await c.publish(f"ald/{tool}/online", b"online", qos=1, retain=True)
    app = make_app(connect_info(broker.url))
    async with app.run_test(size=(120, 24)) as pilot:
        table = app.query_one(DataTable)

        def cells() -> dict[str, list[str]]:
            return {str(k.value): [str(c) for c in table.get_row(k)] for k in table.rows}

        # Retained messages come per subscription (online, then state): wait for both.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
            len(cells()) == 2 and all(row[2] for row in cells().values())
        ):
            await pilot.pause(0.05)
        assert table.row_count == 2
        got = cells()
        assert got["reactor-a"][:5] == [
            "reactor-a",
            "online",
            "running",
            "film reactor-a",
            "4/10",
        ]
        assert got["reactor-b"][2] == "held"
        assert got["reactor-b"][-1] == "hold: pressure: high"
        detail = str(app.query_one("#detail", Static).render())
        assert "film reactor-a" in detail or "film reactor-b" in detail
        assert "unit 4/10" in detail or "unit 7/10" in detail
        await pilot.press("q")


@pytest.mark.parametrize("broker", [True], indirect=True)
async def test_tls_with_a_client_certificate(broker: Mosquitto, tmp_path: Path) -> None:
    root = broker.root
    cfg = tool_config(
        tmp_path / "a.yaml",
        broker,
        "reactor-a",
        credentials=False,  # the certificate is the login (CN=tool)
        url=f"mqtts://127.0.0.1:{broker.tls_port}",
        tls={
            "ca": str(root / "ca.pem"),
            "cert": str(root / "client.pem"),
            "key": str(root / "client.key"),
        },
    )
    async with listening(broker, "ald/reactor-a/state") as sub:
        result = await finish(await start_run(cfg, tmp_path / "d", "cycles=2"))
        state = (await sub.wait_for(lambda g: g.json()["state"] == "complete")).json()
    assert state["run_id"] == result["run_id"]
    assert state["seq"] > 10
    assert "warning: telemetry" not in result["stderr"]


# ------------------------------------------------------------------------ MQTT 3.1.1


async def test_a_broker_spoken_to_in_mqtt_3_1_1_gets_telemetry_and_commands_reply_by_topic(
    broker: Mosquitto, tmp_path: Path
) -> None:
    # A 3.1.1-only broker refuses an MQTT 5 CONNECT; with `mqtt_version: 3.1.1` the tool
    # speaks 3.1.1, and replies (no response-topic property in 3.1.1) go to reply/<sender>.
    cfg = tool_config(
        tmp_path / "a.yaml",
        broker,
        "reactor-v3",
        commands=True,
        allow=("alice",),
        mqtt_version="3.1.1",
    )
    data = tmp_path / "d"
    client = aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        username="alice",
        password="alicepw",
        protocol=aiomqtt.ProtocolVersion.V311,
        identifier=f"test-v3-{uuid.uuid4().hex[:6]}",
    )
    proc = await start_run(cfg, data, "cycles=300", realtime=True)
    try:
        async with client:
            await client.subscribe("ald/reactor-v3/#", qos=1)
            lst = Listener(client)
            task = asyncio.create_task(lst.run())
            try:
                running = await lst.wait_for(
                    lambda g: g.topic.endswith("/state") and g.json()["state"] == "running"
                )
                run_id = running.json()["run_id"]
                await lst.wait_for(lambda g: g.topic.endswith("/telemetry"))
                await client.publish("ald/reactor-v3/cmd/pause/alice", b"{}", qos=1)
                got = await lst.wait_for(lambda g: g.topic == "ald/reactor-v3/reply/alice")
                assert got.json()["ok"] is True, got.json()
                await lst.wait_for(
                    lambda g: g.topic.endswith("/state") and g.json()["state"] == "paused"
                )
                mon = await asyncio.create_subprocess_exec(
                    *aldctl(
                        "monitor",
                        "--broker",
                        broker.url,
                        "--mqtt-version",
                        "3.1.1",
                        "--once",
                        "--json",
                        "--wait",
                        "1",
                    ),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                out, err = await asyncio.wait_for(mon.communicate(), 30)
                assert mon.returncode == 0, err.decode()
                rows = {r["tool"]: r for r in json.loads(out)}
                assert rows["reactor-v3"]["state"] == "paused"
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        proc.kill()
        await proc.wait()
    # mosquitto logs each CONNECT's protocol: p2 is MQTT 3.1.1, p5 is MQTT 5.
    connects = [ln for ln in broker.log().splitlines() if "New client connected" in ln]
    ours = [ln for ln in connects if "aldctl-reactor-v3" in ln or "aldctl-monitor" in ln]
    assert len(ours) >= 2, connects
    assert all("(p2," in ln for ln in ours), ours
    assert commands_journaled(data, run_id)[0][:3] == ("alice", "pause", True)
