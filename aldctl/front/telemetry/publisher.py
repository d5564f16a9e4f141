"""The run process's bridge to an MQTT broker: publishes, and takes remote commands.

Nothing here can block, slow or stop a run:

* the bus listener (on the run's event loop) only appends the event to a bounded queue:
  O(1), no encoding, no I/O. A full queue drops its oldest message and counts it; the count
  goes out in the retained state;
* the MQTT client (aiomqtt: non-blocking sockets) runs as a task on the run's own loop, in
  short steps (one message each) that fit in the slack the real-time clock leaves before
  every deadline (it sleeps to 3 ms before, then spins). A thread of its own was tried
  first and measured worse: it shares the GIL with the executor, and under load the executor
  waited for a telemetry thread the OS had descheduled (pulse-timing p99 up to x65,
  ``aldctl bench telemetry``). Each step waits for slack: it starts only where no valve edge
  is due within ``SLACK_GUARD_S`` (:func:`aldctl.engine.clock.slack_s`), as the garbage
  collector of a real-time run does. A broker that is slow, down or gone only fills the
  queue.
  Virtual-time runs are the exception: their loop's clock jumps, which would fire every
  network timeout at once, so there the client has a thread and a real-time loop of its own
  (nothing to protect: a virtual-time run has no wall-clock timing to keep);
* it reconnects with exponential backoff (with jitter, so a fleet does not reconnect in
  step); a message stays queued until the broker acknowledged it (QoS 1), so an outage
  loses only what the queue could not hold;
* at the end of the run it flushes for at most ``FLUSH_S`` seconds, after the run is over.

Remote commands (``<prefix>/<tool>/cmd/<verb>/<sender>``, JSON object payload, optional):
they go through the same operator API as the console (:class:`OperatorApi`), on the run's
loop. The sender is the topic's last level; it is only as trustworthy as the broker's ACL
that binds it to the login (mosquitto: ``pattern write ald/+/cmd/+/%u``): README, "Securing
the broker". A command is refused, with the reason, when commands are disabled in the tool
config, when it names no sender, when the sender is not on ``commands.allow`` (a watcher),
when the payload is not a JSON object or is larger than ``MAX_PAYLOAD``, for an unknown verb,
and when the run's state does not allow it. Every one is journaled (kind ``command``) with
its sender and outcome, and answered: on the MQTT 5 response topic with the request's
correlation data when the request carries one, else on ``<prefix>/<tool>/reply/<sender>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aldctl.engine.events import (
    Alarm,
    Event,
    PulseDone,
    Sample,
    StateChanged,
    UnitDone,
    UnitStarted,
)
from aldctl.engine.opapi import API_VERSION, event_json
from aldctl.front.telemetry.broker import Broker, connect_info, topic

if TYPE_CHECKING:
    from aldctl.config import TelemetrySpec
    from aldctl.engine.journal import Journal
    from aldctl.engine.opapi import OperatorApi, RunStatus

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 15.0
FLUSH_S = 3.0
"""At the end of a run: how long the queue may take to reach the broker."""
STATE_MIN_S = 0.1
"""The retained state goes out at most this often (it is coalesced: latest wins)..."""
STATE_MAX_S = 1.0
"""...and at least this often while connected (ETA, queue length)."""
MAX_PAYLOAD = 65536
REMOTE_VERBS = frozenset({"pause", "resume", "stop", "abort", "clear", "ack"})
WATCH_VERBS = frozenset({"status"})
PUBLISH_TIMEOUT_S = 5.0
SLACK_GUARD_S = 0.006
"""A step of telemetry work (encode, publish: well under 1 ms) starts only this far from
the next valve edge: the real-time clock spins its last 3 ms, and work landing just before
that would make the edge late."""


@dataclass(slots=True)
class _Item:
    stream: str
    seq: int
    wall: float
    body: Event | dict[str, Any]
    tried: bool = False
    """Published once already, without the broker's answer (the link broke): it may have
    reached the broker, so it is sent again, never counted as dropped."""


@dataclass
class Counters:
    seq: int = 0
    """Stream messages made (the last ``seq`` given)."""
    dropped: int = 0
    """Of them, dropped from a full queue (never sent)."""
    sent: int = 0
    """Of them, acknowledged by the broker (QoS 1) or written to it (QoS 0)."""
    connects: int = 0
    commands: int = 0


class Publisher:
    """One run's MQTT bridge. :meth:`start` and :meth:`stop` on the run's event loop."""

    def __init__(
        self,
        spec: TelemetrySpec,
        *,
        tool: str,
        api: OperatorApi,
        journal: Journal | None = None,
        broker: Broker | None = None,
        own_thread: bool = False,
    ) -> None:
        self.spec = spec
        self.tool = spec.tool_id or tool
        self.prefix = spec.prefix
        self.api = api
        self.status: RunStatus = api.status
        self.journal = journal
        self.broker = broker or connect_info(
            spec.broker,
            credentials_file=spec.credentials_file,
            username_env=spec.username_env,
            password_env=spec.password_env,
            tls=spec.tls,
            mqtt_version=spec.mqtt_version,
        )
        self.counters = Counters()
        self.connected = False
        self.last_error = ""
        self._queue: deque[_Item] = deque()
        self._inflight: _Item | None = None
        """The queue's head while the sender awaits the broker: it may be delivered yet."""
        self._values: dict[str, float | None] = {}
        self._t = 0.0
        self._state_dirty = True
        self._state: dict[str, Any] | None = None
        self._wake: asyncio.Event | None = None
        self._closing_ev: asyncio.Event | None = None
        self._idle = False
        self._closing = False
        self._deadline = 0.0
        self._task: asyncio.Task[None] | None = None
        self.own_thread = own_thread
        """A thread and loop of its own (virtual-time runs), else a task on the run's loop."""
        self._lock = threading.Lock()
        self._run_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The link's loop: the run's, or the thread's."""
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    def t(self, *rest: str) -> str:
        return topic(self.prefix, self.tool, *rest)

    # ------------------------------------------------------------- run loop side

    def start(self) -> None:
        self._run_loop = asyncio.get_running_loop()
        if self.own_thread:
            self._thread = threading.Thread(
                target=self._thread_main, name=f"mqtt-{self.tool}", daemon=True
            )
            self._thread.start()
            self._started.wait(5.0)
            return
        self._loop = self._run_loop
        self._wake = asyncio.Event()
        self._closing_ev = asyncio.Event()
        self._task = self._run_loop.create_task(self._main(), name="mqtt-publisher")

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._thread_body())
        finally:
            self._loop = None
            loop.close()

    async def _thread_body(self) -> None:
        self._wake = asyncio.Event()
        self._closing_ev = asyncio.Event()
        if self._closing:
            self._closing_ev.set()
        self._loop = asyncio.get_running_loop()
        self._started.set()
        await self._main()

    def _in_link(self, fn: Any) -> None:
        """Call ``fn`` on the link's loop."""
        loop = self._loop
        if loop is None:
            return
        if loop is self._run_loop and not self.own_thread:
            fn()
            return
        with contextlib.suppress(RuntimeError):  # the thread's loop just closed
            loop.call_soon_threadsafe(fn)

    async def stop(self, flush_s: float = FLUSH_S) -> None:
        """Flush (bounded), publish the final state and ``offline``, disconnect."""
        if self._values:  # the channels as the run ended
            self._put("telemetry", {"type": "Sample", "t": self._t, "values": self._values.copy()})
        self._deadline = time.monotonic() + flush_s
        self._closing = True
        self._state_dirty = True
        if self._closing_ev is not None:
            self._in_link(self._closing_ev.set)
        self._kick()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, flush_s + 2.0)
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), flush_s + 2.0)
            except TimeoutError:  # a connect that hangs: the run is over, so is telemetry
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            except Exception as exc:  # telemetry failing never fails the run
                self.last_error = f"{type(exc).__name__}: {exc}"

    def listener(self, ev: Event) -> None:
        """On the run's loop, for every event: O(1), never blocks, never raises."""
        self._t = ev.t
        if isinstance(ev, Sample):
            self._values.update(ev.values)
            return
        if isinstance(ev, PulseDone):
            stream = "pulse"
        elif isinstance(ev, Alarm):
            stream = "alarm"
            self._state_dirty = True
        else:
            stream = "event"
            if isinstance(ev, StateChanged | UnitStarted | UnitDone):
                self._state_dirty = True
        self._put(stream, ev)

    def _put(self, stream: str, body: Event | dict[str, Any]) -> None:
        with self._lock:  # virtual-time runs: the thread's sampler puts too
            self.counters.seq += 1
            if len(self._queue) >= self.spec.queue:
                # Drop the oldest message that is not on its way: one in flight, or one
                # published without an answer before the link broke, may reach (or have
                # reached) the broker, and counting it dropped would make the count a lie.
                head = self._queue[0]
                if head is self._inflight or head.tried:
                    if len(self._queue) > 1:
                        del self._queue[1]
                        self.counters.dropped += 1
                else:
                    self._queue.popleft()
                    self.counters.dropped += 1
                self._state_dirty = True
            self._queue.append(_Item(stream, self.counters.seq, time.time(), body))
        self._kick()

    def _kick(self) -> None:
        if self._idle and self._wake is not None:
            self._idle = False
            self._in_link(self._wake.set)

    def _snapshot_state(self) -> None:
        """The retained state payload, from the run's status."""
        snap = self.status.snapshot()
        alarms = snap.pop("alarms")
        snap.pop("lines", None)
        snap.update(
            tool=self.tool,
            online=not self._closing,
            alarms_active=[a for a in alarms if not a["acknowledged"]][-20:],
            last_alarm=alarms[-1] if alarms else None,
            seq=self.counters.seq,
            dropped=self.counters.dropped,
            queued=len(self._queue),
            commands=self.spec.commands.enabled,
            wall=time.time(),
        )
        self._state = snap

    def _journal_command(self, sender: str, verb: str, reply: dict[str, Any]) -> None:
        ok = bool(reply.get("ok"))
        outcome = str(reply.get("result") if ok else reply.get("error"))
        self.counters.commands += 1
        if self.journal is None:
            return
        with contextlib.suppress(Exception):  # a journal that fails is the runner's to report
            self.journal.event(
                self.status.t,
                "command",
                f"{sender}: {verb} -> {'ok' if ok else 'refused'}: {outcome}"[:500],
                data={"via": "mqtt", "sender": sender, "verb": verb, "ok": ok, "outcome": outcome},
            )

    async def _dispatch(
        self, sender: str, verb: str, args: dict[str, Any], refusal: str | None
    ) -> dict[str, Any]:
        if refusal is not None:
            reply: dict[str, Any] = {"v": API_VERSION, "ok": False, "error": refusal}
        else:
            msg = {"v": API_VERSION, "id": None, "cmd": verb, **args}
            reply = await self.api.handle_async(msg, may_command=True, who=f"mqtt:{sender}")
        if verb not in WATCH_VERBS:
            self._journal_command(sender, verb, reply)
            self._state_dirty = True
        return reply

    # ------------------------------------------------------------- the link

    async def _main(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            if self._closing and time.monotonic() > self._deadline:
                return
            try:
                await self._session()
                return  # closed cleanly at the end of the run
            except Exception as exc:  # every failure of the link: wait, and try again
                self.connected = False
                self.last_error = f"{type(exc).__name__}: {exc}"
            delay = backoff * random.uniform(0.8, 1.2)  # jitter, not cryptography
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            if self._closing:  # one more try before the deadline, never a busy loop
                await asyncio.sleep(min(delay, max(0.0, self._deadline - time.monotonic())))
                continue
            assert self._closing_ev is not None
            with contextlib.suppress(TimeoutError):
                # The end of the run cuts a long backoff short: the final state goes out.
                await asyncio.wait_for(self._closing_ev.wait(), delay)

    async def _session(self) -> None:
        import aiomqtt

        will = aiomqtt.Will(self.t("online"), b"offline", qos=1, retain=True)
        client = self.broker.client(
            identifier=f"aldctl-{self.tool}-{self.status.run_id}",
            will=will,
            keepalive=10,
            timeout=PUBLISH_TIMEOUT_S,
            max_queued_incoming_messages=100,
        )
        async with client:
            self.connected = True
            self.counters.connects += 1
            await client.publish(self.t("online"), b"online", qos=1, retain=True)
            await client.subscribe(self.t("cmd", "#"), qos=1)
            self._state_dirty = True
            tasks = [
                asyncio.create_task(self._sender(client), name="mqtt-sender"),
                asyncio.create_task(self._sampler(), name="mqtt-sampler"),
                asyncio.create_task(self._commands(client), name="mqtt-commands"),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            for task in done:
                exc = task.exception()
                if exc is not None:
                    raise exc
            # The sender returned: the run is over and the queue is out (or out of time).
            await self._publish_state(client)
            await client.publish(self.t("online"), b"offline", qos=1, retain=True)
        self.connected = False

    async def _wait_slack(self) -> None:
        if self.own_thread:  # the thread's own loop: no valve edges to keep clear of
            return
        from aldctl.engine.clock import slack_s

        # Polling: an edge has a time, not an event; sleep past it and look again.
        while (left := slack_s()) < SLACK_GUARD_S:  # noqa: ASYNC110
            await asyncio.sleep(max(left, 0.0) + 0.0005)

    async def _publish_state(self, client: Any) -> None:
        await self._wait_slack()
        self._state_dirty = False
        run_loop, link = self._run_loop, asyncio.get_running_loop()
        if run_loop is link:
            self._snapshot_state()
        else:  # the status changes on the run's loop: snapshot it there
            done = asyncio.Event()

            def snap() -> None:
                self._snapshot_state()
                with contextlib.suppress(RuntimeError):
                    link.call_soon_threadsafe(done.set)

            try:
                assert run_loop is not None
                run_loop.call_soon_threadsafe(snap)
            except RuntimeError:  # the run's loop is closed: its last snapshot stands
                done.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 1.0)
        if self._state is not None:
            payload = json.dumps(self._state, default=str).encode()
            await client.publish(self.t("state"), payload, qos=1, retain=True)

    async def _sender(self, client: Any) -> None:
        assert self._wake is not None
        last_state = 0.0
        while True:
            now = time.monotonic()
            if (self._state_dirty and now - last_state >= STATE_MIN_S) or (
                now - last_state >= STATE_MAX_S
            ):
                await self._publish_state(client)
                last_state = time.monotonic()
            with self._lock:
                item = self._queue[0] if self._queue else None
            if item is None:
                if self._closing:
                    return
                self._wake.clear()
                self._idle = True
                if not self._queue:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), STATE_MIN_S)
                self._idle = False
                continue
            if self._closing and time.monotonic() > self._deadline:
                return
            await self._wait_slack()
            name, payload, qos = self._encode(item)
            with self._lock:
                self._inflight = item
                item.tried = True
            try:
                await client.publish(name, payload, qos=qos)
            finally:
                with self._lock:
                    self._inflight = None
            with self._lock:
                if self._queue and self._queue[0] is item:
                    self._queue.popleft()
            self.counters.sent += 1
            await asyncio.sleep(0)  # QoS 0 returns at once: one message per loop step

    def _encode(self, item: _Item) -> tuple[str, bytes, int]:
        body = item.body if isinstance(item.body, dict) else event_json(item.body)
        obj = {"tool": self.tool, "run_id": self.status.run_id, "seq": item.seq, "wall": item.wall}
        obj.update(body)
        qos = self.spec.qos_telemetry if item.stream == "telemetry" else self.spec.qos_events
        return self.t(item.stream), json.dumps(obj, default=str).encode(), qos

    async def _sampler(self) -> None:
        interval = max(self.spec.sample_interval, 0.001)
        nxt = time.monotonic()
        while True:  # ends with the session (cancelled): the sender decides when that is
            await self._wait_slack()
            if self._values and not self._closing:
                self._put(
                    "telemetry", {"type": "Sample", "t": self._t, "values": self._values.copy()}
                )
            nxt += interval
            delay = nxt - time.monotonic()
            if delay < 0:  # fell behind (a stall): skip, never burst to catch up
                nxt = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)

    async def _commands(self, client: Any) -> None:
        async for message in client.messages:
            await self._command(client, message)

    async def _command(self, client: Any, message: Any) -> None:
        name = str(message.topic)
        levels = name.split("/")[3:] if name.startswith(self.t("cmd")) else []
        verb = levels[0] if levels else ""
        sender = levels[1] if len(levels) == 2 and levels[1] else "anonymous"
        payload: bytes = message.payload if isinstance(message.payload, bytes) else b""
        args: dict[str, Any] = {}
        refusal: str | None = None
        rid: Any = None
        if len(payload) > MAX_PAYLOAD:
            refusal = f"payload too large ({len(payload)} bytes; at most {MAX_PAYLOAD})"
        else:
            try:
                obj = json.loads(payload) if payload.strip() else {}
                if not isinstance(obj, dict):
                    raise ValueError("expected a JSON object")
            except (ValueError, UnicodeDecodeError) as exc:
                refusal = f"malformed payload: {exc}"[:200]
            else:
                rid = obj.get("id")
                args = {k: obj[k] for k in ("reason", "alarm") if k in obj}
        verb_ok = verb in REMOTE_VERBS or verb in WATCH_VERBS
        if refusal is None and not verb_ok:
            known = ", ".join(sorted(REMOTE_VERBS | WATCH_VERBS))
            refusal = f"unknown verb {verb[:40]!r}; known: {known}"
        if refusal is None and len(levels) > 2:
            refusal = f"command topics are {self.t('cmd', '<verb>', '<sender>')}"
        if refusal is None and verb not in WATCH_VERBS:
            cmds = self.spec.commands
            if not cmds.enabled:
                refusal = "remote commands are disabled in this tool's config (telemetry.commands)"
            elif len(levels) < 2:
                refusal = (
                    f"no sender: publish to {self.t('cmd', verb, '<your user>')} (the broker's "
                    "ACL binds that level to your login)"
                )
            elif sender not in cmds.allow:
                refusal = f"not permitted: {sender} may watch this tool, not command it"
        journal_verb = verb[:40] if verb_ok else f"?{verb[:40]}"
        run_loop = self._run_loop
        try:
            if run_loop is asyncio.get_running_loop():
                reply = await asyncio.wait_for(
                    self._dispatch(sender, journal_verb, args, refusal), 10.0
                )
            else:  # the journal and the run's state live on the run's loop
                assert run_loop is not None
                fut = asyncio.run_coroutine_threadsafe(
                    self._dispatch(sender, journal_verb, args, refusal), run_loop
                )
                reply = await asyncio.wait_for(asyncio.wrap_future(fut), 10.0)
        except (TimeoutError, RuntimeError):
            reply = {"ok": False, "error": "the run did not answer (is it over?)"}
        reply = {
            "tool": self.tool,
            "run_id": self.status.run_id,
            "verb": verb[:40],
            "sender": sender,
            "id": rid,
            "ok": bool(reply.get("ok")),
            **(
                {"result": reply.get("result")}
                if reply.get("ok")
                else {"error": reply.get("error")}
            ),
        }
        await self._reply(client, message, sender, reply)

    async def _reply(self, client: Any, request: Any, sender: str, reply: dict[str, Any]) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props_in = request.properties
        response = getattr(props_in, "ResponseTopic", None) if props_in is not None else None
        props = None
        if response:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            corr = getattr(props_in, "CorrelationData", None)
            if corr is not None:
                props.CorrelationData = corr
        target = response or self.t("reply", sender)
        payload = json.dumps(reply, default=str).encode()
        with contextlib.suppress(Exception):  # a reply topic we may not write: ours to skip
            await client.publish(target, payload, qos=1, properties=props)
