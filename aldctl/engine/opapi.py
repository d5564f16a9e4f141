"""The operator API: one interface for every front end, served by the run process.

A run is its own process; it serves this API on a Unix domain socket under the data
directory (``<data>/runs/<run_id>.sock``). The CLI's key menu, the Textual console and MQTT
commands are all clients of it, so a front end that crashes, closes or loses its SSH session
never touches the run, and a new one attaches like tmux.

Protocol (version 1): JSON lines, one object per line, UTF-8, at most 64 KiB a line.

Requests ``{"v": 1, "id": <any>, "cmd": VERB, ...arguments}``; each gets one reply
``{"v": 1, "id": <same>, "ok": true, "result": ...}`` or ``{"v": 1, "id": <same>, "ok":
false, "error": "why"}``. A malformed line, an unknown verb, a wrong version or a verb the
client may not use gets an error reply and changes nothing.

===========  ========  ==========================================================
verb         who       arguments -> result
===========  ========  ==========================================================
hello        anyone    -> {"api": 1, "run_id", "recipe", "tool", "pid", "may_command"}
status       anyone    -> the run's state now (see :meth:`RunStatus.snapshot`)
subscribe    anyone    -> then a stream of ``{"v": 1, "event": {...}}`` lines; events a
                       slow client cannot take are dropped (oldest first) and counted in
                       ``{"v": 1, "dropped": N}`` lines
pause        command   -> "pausing at the next checkpoint"
resume       command   -> "resuming" (from pause, or from a hold that has cleared)
stop         command   -> stop after the current cycle, then teardown
abort        command   {"reason": str} -> abort now, to the safe state
clear        command   -> clear a latched abort
ack          command   {"alarm": int | "all"} -> acknowledge an alarm (ids in status)
set          command   {"target": "valve:LINE" | "flow:CHANNEL" | "temperature:HEATER",
                       "value": "open" | "closed" | "20 sccm" | "150 degC"}: manual
                       sessions only (``aldctl manual``), through the same permissives
                       and interlocks as a recipe; refused with the reason otherwise
===========  ========  ==========================================================

Who may command: the socket file is the run owner's (mode 0600), or group-shared (0660)
when the tool config names ``operator.group``; ``operator.watchers: any`` makes it 0666 so
anyone on the host may watch. Each connection's peer credentials (``SO_PEERCRED``) decide:
the run's owner, root and members of ``operator.group`` may command; everyone else who can
connect may only watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import grp
import json
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aldctl.diagnostics import UserError
from aldctl.engine.control import CommandRefused, RunControl
from aldctl.engine.events import (
    Alarm,
    DoseStarted,
    Event,
    EventBus,
    Message,
    PulseDone,
    ReadBack,
    Sample,
    StateChanged,
    StepStarted,
    UnitDone,
    UnitStarted,
)

if TYPE_CHECKING:
    from aldctl.engine.manual import ManualSession

API_VERSION = 1
MAX_LINE = 65536
CLIENT_QUEUE = 2000
"""Events buffered per subscriber; a client that falls further behind loses the oldest."""
COMMAND_VERBS = frozenset({"pause", "resume", "stop", "abort", "clear", "ack", "set"})
WATCH_VERBS = frozenset({"hello", "status", "subscribe"})


def socket_path(data_dir: Path, run_id: str) -> Path:
    return data_dir / "runs" / f"{run_id}.sock"


def short_path(path: Path) -> tuple[str, int | None]:
    """A name ``bind``/``connect`` accept for ``path``: Unix socket paths are limited to 107
    bytes, so a long one goes through its directory's file descriptor (Linux)."""
    text = str(path)
    if len(text.encode()) < 100:
        return text, None
    fd = os.open(path.parent, os.O_RDONLY)
    return f"/proc/self/fd/{fd}/{path.name}", fd


def event_json(ev: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(ev).__name__}
    for f in dataclasses.fields(ev):
        v = getattr(ev, f.name)
        out[f.name] = str(v) if f.name in ("state", "previous") else v
    return out


DOSING_STATES = ("running", "starting", "pausing", "stopping")
"""The run states in which a dose valve may be open."""


@dataclass
class AlarmRecord:
    id: int
    t: float
    severity: str
    source: str
    message: str
    acknowledged: bool = False


@dataclass
class RunStatus:
    """What a console shows, kept up to date from the event bus (cheap: O(1) per event)."""

    run_id: str
    recipe: str
    tool: str
    units_total: int
    planned_s: float
    lines: Mapping[str, str]
    """Line -> chemical."""
    expected_nm: float | None = None
    """The plan's thickness at the end of the run (process library), if known."""
    state: str = "starting"
    reason: str = ""
    unit: int = 0
    units_done: int = 0
    label: str = ""
    cycle: str | None = None
    rep: int = 0
    passes: int = 1
    step: str = ""
    step_phase: str = ""
    step_t: float = 0.0
    step_s: float | None = None
    t: float = 0.0
    wall0: float = field(default_factory=time.time)
    values: dict[str, float | None] = field(default_factory=dict)
    dosing: dict[str, float] = field(default_factory=dict)
    """Line -> process time its current dose ends."""
    alarms: deque[AlarmRecord] = field(default_factory=lambda: deque(maxlen=200))
    next_alarm: int = 1
    pulses: int = 0
    last_message: str = ""
    unclosed: set[str] = field(default_factory=set)
    """Dose lines an alarm reported not known to be closed (see ``Alarm.lines``), until a
    read-back says otherwise (``ReadBack``)."""
    readbacks: int = 0
    """Read-backs ended so far: a console merging a snapshot with events knows which is
    newer by it (process time stands still after an abort)."""

    def listener(self, ev: Event) -> None:
        self.t = max(self.t, ev.t)
        if isinstance(ev, Sample):
            self.values.update(ev.values)
        elif isinstance(ev, StateChanged):
            self.state = str(ev.state)
            self.reason = ev.reason
            if self.state not in DOSING_STATES:
                self.dosing.clear()  # abort and hold close the dose valves
        elif isinstance(ev, UnitStarted):
            self.unit = ev.index
            self.label = ev.label
            self.cycle = ev.cycle
            self.rep = ev.rep
            self.passes = ev.passes
        elif isinstance(ev, UnitDone):
            self.units_done = ev.index + 1
        elif isinstance(ev, StepStarted):
            self.step = ev.label
            self.step_phase = ev.phase
            self.step_t = ev.t
            self.step_s = ev.duration_s
        elif isinstance(ev, DoseStarted):
            self.dosing[ev.line] = ev.t + ev.duration_s
        elif isinstance(ev, PulseDone):
            self.pulses += 1
        elif isinstance(ev, ReadBack):
            self.unclosed = set(ev.unclosed)
            self.readbacks += 1
        elif isinstance(ev, Alarm):
            self.unclosed.update(ev.lines)
            self.alarms.append(
                AlarmRecord(self.next_alarm, ev.t, ev.severity, ev.source, ev.message)
            )
            self.next_alarm += 1
        elif isinstance(ev, Message):
            self.last_message = ev.text

    def snapshot(self) -> dict[str, Any]:
        remaining = max(0.0, self.planned_s - self.t)
        return {
            "run_id": self.run_id,
            "recipe": self.recipe,
            "tool": self.tool,
            "state": self.state,
            "reason": self.reason,
            "unit": self.unit,
            "units_done": self.units_done,
            "units_total": self.units_total,
            "label": self.label,
            "cycle": self.cycle,
            "rep": self.rep,
            "passes": self.passes,
            "step": self.step,
            "phase": self.step_phase,
            "step_left_s": (
                max(0.0, self.step_t + self.step_s - self.t) if self.step_s is not None else None
            ),
            "t": self.t,
            "planned_s": self.planned_s,
            "expected_nm": self.expected_nm,
            "eta_process_s": remaining,
            "values": dict(self.values),
            "lines": dict(self.lines),
            # Never a valve shown open once the run has left the states that dose (a dose
            # event can trail the abort's; after an abort process time stands still, so its
            # end would never pass).
            "dosing": sorted(ln for ln, end in self.dosing.items() if end > self.t)
            if self.state in DOSING_STATES
            else [],
            "unclosed": sorted(self.unclosed),
            "readbacks": self.readbacks,
            "pulses": self.pulses,
            "alarms": [dataclasses.asdict(a) for a in self.alarms],
            "message": self.last_message,
        }


class OperatorApi:
    """The verbs, as one dispatcher: the socket server and in-process menus both call it."""

    def __init__(
        self, control: RunControl, status: RunStatus, manual: ManualSession | None = None
    ) -> None:
        self.control = control
        self.status = status
        self.manual = manual

    async def handle_async(
        self, msg: Mapping[str, Any], *, may_command: bool, who: str
    ) -> dict[str, Any]:
        """:meth:`handle`, and the verbs that talk to devices (``set``)."""
        if msg.get("cmd") != "set" or not may_command or msg.get("v", API_VERSION) != 1:
            return self.handle(msg, may_command=may_command, who=who)
        rid = msg.get("id")
        if self.manual is None:
            return {
                "v": API_VERSION,
                "id": rid,
                "ok": False,
                "error": "set is for manual sessions (aldctl manual); a recipe run sets "
                "what its recipe says",
            }
        try:
            result = await self.manual.set(str(msg.get("target")), msg.get("value"), who)
        except CommandRefused as exc:
            return {"v": API_VERSION, "id": rid, "ok": False, "error": str(exc)}
        except (UserError, ValueError) as exc:
            return {"v": API_VERSION, "id": rid, "ok": False, "error": f"bad value: {exc}"}
        except Exception as exc:  # a device failing is that command failing, said as such
            text = f"{type(exc).__name__}: {exc}"
            return {"v": API_VERSION, "id": rid, "ok": False, "error": f"device: {text}"}
        return {"v": API_VERSION, "id": rid, "ok": True, "result": result}

    def handle(self, msg: Mapping[str, Any], *, may_command: bool, who: str) -> dict[str, Any]:
        rid = msg.get("id")

        def error(text: str) -> dict[str, Any]:
            return {"v": API_VERSION, "id": rid, "ok": False, "error": text}

        if msg.get("v", API_VERSION) != API_VERSION:
            return error(f"unsupported API version {msg.get('v')!r}; this run speaks 1")
        verb = msg.get("cmd")
        if not isinstance(verb, str):
            return error("missing 'cmd'")
        if verb in WATCH_VERBS:
            if verb == "hello":
                result: Any = {
                    "api": API_VERSION,
                    "run_id": self.status.run_id,
                    "recipe": self.status.recipe,
                    "tool": self.status.tool,
                    "pid": os.getpid(),
                    "may_command": may_command,
                }
            elif verb == "status":
                result = self.status.snapshot()
                if self.manual is not None:
                    # what is open by hand, from the session (a hold closes it; another
                    # console may have opened it): a console shows this, not its own clicks
                    result["manual_open"] = sorted(self.manual.open_lines)
            else:
                result = "subscribed"
            return {"v": API_VERSION, "id": rid, "ok": True, "result": result}
        if verb not in COMMAND_VERBS:
            known = ", ".join(sorted(COMMAND_VERBS | WATCH_VERBS))
            return error(f"unknown verb {verb!r}; known: {known}")
        if not may_command:
            return error(f"not permitted: {who} may watch this run, not command it")
        try:
            if verb == "pause":
                result = self.control.pause(who)
            elif verb == "resume":
                result = self.control.resume(who)
            elif verb == "stop":
                result = self.control.stop(who)
            elif verb == "abort":
                reason = msg.get("reason") or f"operator abort ({who})"
                result = self.control.abort(str(reason)[:200], who)
            elif verb == "clear":
                result = self.control.clear(who)
            elif verb == "ack":
                result = self._ack(msg.get("alarm"), who)
            else:
                raise CommandRefused("set goes through handle_async")
        except CommandRefused as exc:
            return error(str(exc))
        return {"v": API_VERSION, "id": rid, "ok": True, "result": result}

    def _ack(self, alarm: object, who: str) -> str:
        for a in self.status.alarms:
            if alarm in ("all", a.id):
                a.acknowledged = True
                if alarm != "all":
                    return f"alarm {a.id} acknowledged by {who}"
        if alarm == "all":
            return f"every alarm acknowledged by {who}"
        raise CommandRefused(f"no alarm {alarm!r}")


@dataclass(frozen=True)
class Access:
    """Who may command: the run's owner, root, members of ``group``."""

    owner_uid: int = field(default_factory=os.getuid)
    group: str | None = None
    watchers_any: bool = False

    def mode(self) -> int:
        if self.watchers_any:
            return 0o666
        return 0o660 if self.group else 0o600

    def may_command(self, uid: int, gid: int) -> bool:
        if uid in (0, self.owner_uid):
            return True
        if self.group is None:
            return False
        try:
            g = grp.getgrnam(self.group)
        except KeyError:
            return False
        if gid == g.gr_gid:
            return True
        try:
            import pwd

            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            return False
        return name in g.gr_mem


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket (Linux)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class ApiServer:
    """Serves :class:`OperatorApi` on a Unix socket; never blocks the run on a client."""

    def __init__(
        self, api: OperatorApi, bus: EventBus, path: Path, access: Access | None = None
    ) -> None:
        self.api = api
        self.bus = bus
        self.path = path
        self.access = access or Access()
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.dropped = 0
        self.clients_served = 0

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a dead run (the journal says who owns it)
        name, fd = short_path(self.path)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=name)
        finally:
            if fd is not None:
                os.close(fd)
        os.chmod(self.path, self.access.mode())
        if self.access.group:
            with contextlib.suppress(KeyError, PermissionError):
                os.chown(self.path, -1, grp.getgrnam(self.access.group).gr_gid)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._clients):
                t.cancel()
            for t in list(self._clients):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        self.clients_served += 1
        sock = writer.get_extra_info("socket")
        try:
            _, uid, gid = peer_credentials(sock)
        except OSError:
            uid, gid = -1, -1
        may = self.access.may_command(uid, gid)
        who = f"uid {uid}"
        with contextlib.suppress(KeyError):
            import pwd

            who = pwd.getpwuid(uid).pw_name
        pump: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._send(
                        writer, {"v": API_VERSION, "ok": False, "error": "line too long"}
                    )
                    break
                if not line:
                    break
                try:
                    msg = json.loads(line)
                    if not isinstance(msg, dict):
                        raise ValueError("not an object")
                except ValueError as exc:
                    await self._send(
                        writer, {"v": API_VERSION, "ok": False, "error": f"malformed: {exc}"}
                    )
                    continue
                reply = await self.api.handle_async(msg, may_command=may, who=who)
                await self._send(writer, reply)
                if reply.get("ok") and msg.get("cmd") == "subscribe" and pump is None:
                    pump = asyncio.get_running_loop().create_task(
                        self._pump(writer), name="api-subscriber"
                    )
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # The run is ending (ApiServer.stop). The streams machinery would log a cancelled
            # handler as an error: end it as a closed connection instead.
            pass
        finally:
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._clients.discard(task)

    async def _pump(self, writer: asyncio.StreamWriter) -> None:
        sub = self.bus.subscribe(CLIENT_QUEUE)
        reported = 0
        try:
            while True:
                ev = await sub.get()
                if sub.dropped > reported:
                    self.dropped += sub.dropped - reported
                    reported = sub.dropped
                    await self._send(writer, {"v": API_VERSION, "dropped": sub.dropped})
                await self._send(writer, {"v": API_VERSION, "event": event_json(ev)})
        finally:
            self.bus.unsubscribe(sub)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, obj: Mapping[str, Any]) -> None:
        writer.write(json.dumps(obj, default=str).encode() + b"\n")
        # Bounded: a client that does not read stalls only its own task (the bus queue
        # behind it drops the oldest), never the run.
        await writer.drain()


class ApiClient:
    """A front end's end of the socket (the console, scripts, tests)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._next = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10000)
        self._reader_task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def connect(self) -> None:
        name, fd = short_path(self.path)
        try:
            self.reader, self.writer = await asyncio.open_unix_connection(name, limit=MAX_LINE)
        finally:
            if fd is not None:
                os.close(fd)
        self._reader_task = asyncio.get_running_loop().create_task(self._read(), name="api-read")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    async def _read(self) -> None:
        assert self.reader is not None
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                if "event" in msg or "dropped" in msg:
                    if self._events.full():
                        self._events.get_nowait()
                    self._events.put_nowait(msg)
                    continue
                fut = self._pending.pop(msg.get("id"), None) if "id" in msg else None
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("the run's API closed"))

    async def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one request; the reply (``ok`` false replies are returned, not raised)."""
        assert self.writer is not None
        self._next += 1
        rid = self._next
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self.writer.write(
            json.dumps({"v": API_VERSION, "id": rid, "cmd": cmd, **args}).encode() + b"\n"
        )
        await self.writer.drain()
        return await asyncio.wait_for(fut, 10.0)

    async def event(self) -> dict[str, Any]:
        return await self._events.get()

    def events_nowait(self) -> list[dict[str, Any]]:
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out


def live_runs(data_dir: Path) -> list[Path]:
    """Sockets of runs that answer on this host (stale ones of dead runs are skipped)."""
    d = data_dir / "runs"
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.sock")):
        s = socket.socket(socket.AF_UNIX)
        name, fd = short_path(p)
        try:
            s.settimeout(0.5)
            s.connect(name)
            out.append(p)
        except OSError:
            pass
        finally:
            s.close()
            if fd is not None:
                os.close(fd)
    return out


Listener = Callable[[Event], None]
