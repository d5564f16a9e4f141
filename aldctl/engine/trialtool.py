"""The tool a tuning trial (``aldctl tune RECIPE``) runs on, as the trial's design sees it.

The trial's design (aldctl/front/tunerun.py, ``run_trial``) is adaptive: it decides the next
pulse from the readings of the last ones, in plain synchronous code. It reaches the tool
only through :class:`TrialTool`: set the recipe's setup up, pulse a line and purge (with the
gauge's readings after the pulse), read the QCM, read the gauge's baseline, wait, and
measure the residence time. Two implementations:

* the simulated tool (``tunerun._Trial``): the reactor model in this process, virtual time,
  a trial in about a second;
* :class:`DriverTrial` here: the tool's devices through their drivers, in real time, under
  the engine's safety machinery, as a manual session has it (aldctl/engine/manual.py): the
  safety monitor polls every limit and interlock throughout, the valve modules' watchdogs
  are retriggered, every dose passes the permissives, and any fault, limit, hold, Ctrl-C or
  error ends the trial in the safe state (dose valves closed, pump isolation open, carrier
  flowing), driven from the event loop at once, not when the design next asks for something.

Threads: the event loop (devices, safety, journal) runs in the main thread; the design runs
in a worker thread (``asyncio.to_thread``) and hands each step to the loop, waiting for its
result. The journal is only ever written from the loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from aldctl.config import ToolConfig
from aldctl.engine.actions import ActionFailed, apply_action
from aldctl.engine.control import CommandRefused, RunControl
from aldctl.engine.devices import Tool
from aldctl.engine.events import EventBus, Message, State, StateChanged
from aldctl.engine.journal import Journal, JournalError, PulseRecord
from aldctl.engine.runner import _condition_met
from aldctl.engine.safety import Safety, close_dose_valves, safe_state
from aldctl.recipe import schedule as s
from aldctl.recipe.schedule import NS, Action, ActionKind
from drivers.base import DeviceError, ValveBank

T = TypeVar("T")

BASELINE_READS = 5
"""Gauge readings averaged for a pulse's baseline (each a serial transaction, ~50 ms)."""
SETTLED_K = 1.0


class TrialAborted(Exception):
    """The trial was stopped (a limit, a hold, a device fault, the operator): the tool is in
    its safe state; the message says why."""


class TrialTool(Protocol):
    """What the trial's design needs from a tool (times in seconds from the trial's start)."""

    tool: ToolConfig
    has_qcm: bool
    sem: float
    """The largest standard error of a QCM reading so far (in the reading's unit): the noise
    a change must clear to count."""

    def line(self, chem: str) -> str:
        """The tool's line that doses ``chem``."""
        ...

    def setup(self) -> None:
        """The recipe's setup: setpoints, waits (heat-up) and purges."""
        ...

    def qcm(self) -> float:
        """One QCM reading, proportional to the mass on the crystal (A on the simulated tool,
        -Hz through a driver): the mean of several, updating :attr:`sem`."""
        ...

    def baseline(self) -> float:
        """The chamber pressure before a pulse (Torr)."""
        ...

    def pulse(self, chem: str, width_s: float, purge_s: float, record: bool = False) -> Any:
        """Pulse ``chem`` for ``width_s``, then purge for ``purge_s`` (the pulse starts
        now). With ``record``: (pressure area above the baseline after the valve closed,
        times since the pulse began, pressures, baseline); else None."""
        ...

    def plasma(self, step: Any, purge_s: float) -> None:
        """A cycle's plasma step as the recipe has it (``tunerun.PlasmaStep``), then purge."""
        ...

    def now_s(self) -> float: ...

    def wait_until(self, t_s: float) -> None: ...

    def residence_time_s(self) -> float:
        """The chamber's residence time (s), before the trial has measured anything."""
        ...


def _trapezoid(ts: list[float], ys: list[float]) -> float:
    return sum(0.5 * (ys[k] + ys[k - 1]) * (ts[k] - ts[k - 1]) for k in range(1, len(ts)))


class DriverTrial:
    """A trial on a tool through its drivers, in real time, under the safety monitor.

    Build it in the event loop (:meth:`start`, :meth:`finish` are coroutines); the design
    calls the :class:`TrialTool` methods from another thread.
    """

    def __init__(
        self,
        tool: Tool,
        schedule: s.Schedule,
        bus: EventBus,
        control: RunControl,
        journal: Journal | None,
        *,
        qcm_reads: int = 10,
    ) -> None:
        self.devices = tool
        self.tool = tool.config
        self.schedule = schedule
        self.bus = bus
        self.control = control
        self.journal = journal
        self.qcm_reads = qcm_reads
        self.has_qcm = tool.qcm is not None
        self.sem = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.safety: Safety | None = None
        self.t0 = 0.0
        self.pulses = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.safe_errors: dict[str, str] = {}
        self._ending = False
        self._aborted: asyncio.Event | None = None
        self._valve_open = False
        self._rf_on = False
        self._plasma_gas: str | None = None
        """The feed gas's channel while a plasma step runs (gas on, RF on or not yet)."""
        self._cut: str | None = None
        self.holds = 0

    # ------------------------------------------------------------------ loop side

    def _now(self) -> float:
        assert self.loop is not None
        return self.loop.time() - self.t0

    def _publish(self, text: str) -> None:
        self.bus.publish(Message(self._now(), text))

    def say(self, text: str) -> None:
        """A message for the displays and the journal, from the design's thread."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._publish, text)

    async def start(self) -> None:
        """Take the tool: safety monitor, valve heartbeat, pump isolation open, carrier
        shut-off open (the devices are connected)."""
        from aldctl.engine.clock import RealClock

        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self._aborted = asyncio.Event()
        clock = RealClock()
        self.safety = Safety(self.devices, self.control, clock, self.bus, self.journal)
        if self.journal is not None:
            self.bus.listen(self._journal_event)
        prev = self.control.state
        self.control.state = State.RUNNING
        self.bus.publish(StateChanged(0.0, State.RUNNING, prev, "tuning trial"))
        await self.devices.set_pump_isolation(True)
        await self.devices.set_carrier_shutoff(True)
        # A first poll before any dose: the permissives need a pressure reading.
        await self.safety.poll_once()
        self.safety.evaluate()
        self.tasks = [self.loop.create_task(self.safety.monitor(), name="safety-monitor")]
        if any(b.watchdog for b in self.devices.banks):
            self.tasks.append(self.loop.create_task(self.safety.heartbeat(), name="heartbeat"))
        self.tasks.append(self.loop.create_task(self._guard(), name="safe-state-guard"))
        for t in self.tasks:
            t.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if self._ending or task.cancelled():
            return
        exc = task.exception()
        with contextlib.suppress(CommandRefused):
            self.control.abort(f"task '{task.get_name()}' died: {exc!r}", who="supervisor")

    def _journal_event(self, ev: Any) -> None:
        from aldctl.engine.events import Alarm

        assert self.journal is not None
        with contextlib.suppress(JournalError):
            if isinstance(ev, StateChanged):
                self.journal.event(ev.t, "state", ev.reason, state=str(ev.state))
            elif isinstance(ev, Alarm):
                self.journal.event(ev.t, f"alarm.{ev.severity}", f"{ev.source}: {ev.message}")
            elif isinstance(ev, Message):
                self.journal.event(ev.t, "message", ev.text)

    async def _guard(self) -> None:
        """An abort (a limit, a device's watchdog, Ctrl-C) drives the safe state at once,
        whatever the design is doing. A hold (a hold limit: the chamber pressure above
        ``hold_above`` after a long calibration pulse) closes the dose valves and keeps the
        next pulse waiting until the limit has been back in band for ``resume_after``, as a
        run's hold does; one that closed a valve mid-pulse ends the trial (that pulse's
        reading is gone), and ``hold_timeout`` aborts as in a run."""
        assert self._aborted is not None
        while True:
            await self.control.interrupt.wait()
            if self.control.abort_reason is None and self.control.hold_reason is not None:
                self.holds += 1
                if self._valve_open or self._rf_on or self._plasma_gas is not None:
                    self._cut = self.control.hold_reason
                if self._rf_on or self._plasma_gas is not None:
                    # No plasma through a hold (its pressure, its gas), nor its gas while it
                    # stabilises: the step it cut ends the trial, as a pulse the hold cut does.
                    await self._plasma_off(self._plasma_gas)
                errors = await close_dose_valves(self.devices, self.tool.safety.safe_state_timeout)
                await self.devices.set_pump_isolation(True)
                bad = {k: str(v) for k, v in errors.items() if v is not None}
                if bad:
                    with contextlib.suppress(CommandRefused):
                        self.control.abort(f"hold could not close valves: {bad}", who="trial")
                prev = self.control.state
                self.control.state = State.HELD
                self.bus.publish(StateChanged(self._now(), State.HELD, prev, "trial held"))
                while self.control.abort_reason is None and not self.control.hold_cleared:
                    self.control.wake.clear()
                    await self.control.wake.wait()
                if self.control.abort_reason is None:
                    self.control.release_hold()
                    self.control.state = State.RUNNING
                    self.bus.publish(
                        StateChanged(self._now(), State.RUNNING, State.HELD, "trial resumed")
                    )
                    continue
            self._aborted.set()
            await self._make_safe()
            return

    async def _make_safe(self) -> None:
        cfg = self.devices.config.flows.get("carrier")
        errors = await safe_state(
            self.devices, carrier_sccm=cfg.default if cfg is not None else None
        )
        self.safe_errors.update({k: str(v) for k, v in errors.items() if v is not None})

    def _why(self) -> str | None:
        if self.control.abort_reason is not None:
            return self.control.abort_reason
        if self._cut is not None:
            return f"a hold closed the valve during a pulse ({self._cut})"
        return None

    async def _guarded(self, coro: Coroutine[Any, Any, T]) -> T:
        why = self._why()
        if why is not None:
            coro.close()
            raise TrialAborted(why)
        assert self._aborted is not None
        task = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self._aborted.wait())
        try:
            done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task in done:
            try:
                return task.result()
            except DeviceError as exc:
                reason = f"device '{exc.device}': {exc.detail}"
                with contextlib.suppress(CommandRefused):
                    self.control.abort(reason, who="trial")
                raise TrialAborted(reason) from None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise TrialAborted(self._why() or "interrupted")

    async def finish(self, outcome_reason: str | None = None) -> dict[str, str]:
        """End the trial: safe state, helpers stopped. Returns device -> error of the safe
        state."""
        self._ending = True
        if self.loop is None:
            return {}
        prev = self.control.state
        self.control.state = State.ABORTING
        await self._make_safe()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        aborted = self.control.abort_reason is not None or outcome_reason is not None
        state = State.ABORTED if aborted else State.STOPPED
        reason = self.control.abort_reason or outcome_reason or "trial complete"
        self.control.state = state
        self.bus.publish(StateChanged(self._now(), state, prev, reason))
        if self.journal is not None:
            with contextlib.suppress(JournalError):
                self.journal.flush()
        return dict(self.safe_errors)

    async def _sleep_until(self, t_s: float) -> None:
        delay = t_s - self._now()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _pressure(self) -> tuple[float, float | None]:
        """(time of the reading, Torr): when the gauge was asked, where its driver knows it,
        else the midpoint of the call.

        Not the call's midpoint where the driver knows better: once a second the safety
        monitor polls the gauge too, and a reading asked for meanwhile waits for the bus, so
        the call starts up to a transaction (~55 ms at 9600 baud) before the gauge is asked.
        Dated at the call's midpoint, that reading sat 20-45 ms early on a decay of
        tau ~0.14 s (up to 30 % low for its time): one such point per pulse, wherever the
        monitor's poll fell, moved the fitted residence time by +-10 % from pulse to pulse
        and with the machine's load, and the pulse areas and the valve's dead width with it.
        """
        gauge = self.devices.gauge
        if gauge is None:
            return self._now(), None
        assert self.loop is not None
        t = self._now()
        r = await gauge.read_pressure()
        if r.asked_at is not None:
            # The driver's clock is time.monotonic(); the loop's may differ by an offset.
            return r.asked_at + (self.loop.time() - time.monotonic()) - self.t0, r.pressure_torr
        return 0.5 * (t + self._now()), r.pressure_torr

    async def _baseline(self) -> float:
        vals = [p for _, p in [await self._pressure() for _ in range(BASELINE_READS)]]
        got = [p for p in vals if p is not None]
        return sum(got) / len(got) if got else 0.0

    async def _qcm(self) -> float:
        """The crystal's frequency, sign flipped (Hz: mass up, frequency down; Sauerbrey is
        linear), not its thickness display: an SQM-160 gives thickness to 0.1 A and frequency
        to 0.001 Hz (~0.0005 A of Al2O3), and a train's later pulses gain a few hundredths of
        an A. The design only ever compares QCM changes with each other, so the unit cancels.
        """
        qcm = self.devices.qcm
        if qcm is None:
            return 0.0
        vals: list[float] = []
        for _ in range(self.qcm_reads):
            r = await qcm.read_thickness()
            if not r.frequency_hz > 0.0:
                msg = "the QCM reads no crystal frequency (crystal failed?)"
                raise TrialAborted(msg)
            vals.append(-r.frequency_hz)
        mean = sum(vals) / len(vals)
        var = sum((v - mean) ** 2 for v in vals) / max(len(vals) - 1, 1)
        self.sem = max(self.sem, math.sqrt(var / len(vals)))
        return mean

    async def _pulse(self, chem: str, width_s: float, purge_s: float, record: bool) -> Any:
        assert self.safety is not None
        line = self.line(chem)
        if line not in self.devices.valves:
            msg = f"the tool has no line for {chem}"
            raise TrialAborted(msg)
        while self.control.hold_reason is not None:  # noqa: ASYNC110 (the guard releases it)
            await asyncio.sleep(0.05)
        why = self.safety.permit(Action(0, ActionKind.PULSE, line))
        if why is not None:
            with contextlib.suppress(CommandRefused):
                self.control.abort(why, who="permissive")
            raise TrialAborted(why)
        base = await self._baseline() if record else 0.0
        bank, ch = self.devices.valves[line]
        t0 = self._now()
        end = t0 + width_s + purge_s
        ts: list[float] = []
        ps: list[float] = []

        async def sample() -> None:
            # From the valve's opening to the purge's end, alongside the valve's timing: the
            # area counts the pressure while the valve is open, as the simulated tool's does
            # (read only after the close, a pulse longer than the residence time showed just
            # its decay tail, p_ss tau, which does not grow with the width).
            while self._now() < end:
                t, p = await self._pressure()
                if t > end:
                    break
                ts.append(t - t0)
                ps.append(p if p is not None else 0.0)

        sampler = asyncio.ensure_future(sample()) if record else None
        self._valve_open = True
        try:
            await self._open_close(bank, ch, t0, width_s, line, chem)
        except BaseException:
            if sampler is not None:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sampler
            raise
        if sampler is not None:
            await sampler
        if record:
            # The baseline as the simulated tool takes it: the readings before the pulse and
            # those of the purge's last quarter (back at base after a long purge).
            tail = [p for t, p in zip(ts, ps, strict=True) if t > width_s + 0.75 * purge_s]
            base = (base * BASELINE_READS + sum(tail)) / (BASELINE_READS + len(tail))
        area = _trapezoid(ts, [p - base for p in ps]) if len(ts) > 1 else 0.0
        if self.journal is not None and record:
            self.journal.set_pulse_area(1, area)
        await self._sleep_until(end)
        return (area, ts, ps, base) if record else None

    async def _plasma(self, step: Any, purge_s: float) -> None:
        """A cycle's plasma step as a run drives it: the step's compiled actions (feed gas,
        RF on after the stabilising time, the ignition check, RF and gas off), each through
        the run's permissive (RF on only inside the source's pressure window) and applied as
        the run applies it (aldctl/engine/actions.py); the safety monitor watches the
        reflected power from the ignition time on. RF goes off however the step ends: at its
        end, a failed check, a device error, a hold (the guard turns it off at once), an
        abort or Ctrl-C (the guard's safe state, and here too)."""
        assert self.safety is not None
        assert self.loop is not None
        ps = self.tool.plasma
        if self.devices.plasma is None or ps is None:
            msg = "the recipe's plasma step needs a plasma source; the tool has none"
            raise TrialAborted(msg)
        channel = f"plasma.{step.gas}"
        if channel not in self.devices.flows:
            msg = f"the recipe's plasma step needs a flow channel '{channel}'; the tool has none"
            raise TrialAborted(msg)
        ignition = float(ps.ignition_time) if step.ignition_check else None
        actions = s.plasma_actions(
            step.gas, step.flow_sccm, step.power_w, step.stabilize_s, step.time_s, ignition
        )
        while self.control.hold_reason is not None:  # noqa: ASYNC110 (the guard releases it)
            await asyncio.sleep(0.05)
        t0 = self._now()
        end = t0 + step.stabilize_s + step.time_s + purge_s
        fed = False
        self._plasma_gas = channel
        try:
            for a in actions:
                await self._sleep_until(t0 + a.offset_ns / NS)
                if self._cut is not None:
                    raise TrialAborted(f"a hold ended a plasma step ({self._cut})")
                why = self.safety.permit(a)
                if why is not None:
                    with contextlib.suppress(CommandRefused):
                        self.control.abort(why, who="permissive")
                    raise TrialAborted(why)
                if a.kind is ActionKind.RF_ON:
                    self._rf_on = True  # before the command: a hold meanwhile turns it off
                try:
                    await apply_action(self.devices, a)
                except ActionFailed as exc:
                    with contextlib.suppress(CommandRefused):
                        self.control.abort(str(exc), who="trial")
                    raise TrialAborted(str(exc)) from None
                cut = self._cut_by_hold()
                if cut is not None:
                    # A hold came while the command was on the wire: the guard's RF off may
                    # have gone out before this RF on, so the RF may be lit again.
                    self._rf_on = self._rf_on or a.kind is ActionKind.RF_ON
                    raise TrialAborted(f"a hold ended a plasma step ({cut})")
                if a.kind is ActionKind.RF_OFF:
                    self._rf_on = False
                if a.kind is ActionKind.SET_FLOW:
                    fed = bool(a.value)
                self.safety.note_action(a, self.loop.time())
        finally:
            self._plasma_gas = None
            if self._rf_on or fed:
                await self._plasma_off(channel)
        self._publish(f"trial: {step.gas} plasma {step.power_w:g} W for {step.time_s:g} s")
        await self._sleep_until(end)

    def _cut_by_hold(self) -> str | None:
        """The hold that cut the current pulse or plasma step (the guard sets it while the
        step awaits its devices)."""
        return self._cut

    async def _plasma_off(self, channel: str | None) -> None:
        """RF off (and the feed gas, given its channel), on the way out of a plasma step or at
        a hold; an error is left to the safe state that follows, which turns RF off too."""
        assert self.safety is not None
        assert self.loop is not None
        plasma = self.devices.plasma
        if self._rf_on and plasma is not None:
            with contextlib.suppress(Exception):
                await plasma.rf_off()
                self._rf_on = False
                self.safety.note_action(Action(0, ActionKind.RF_OFF, "plasma"), self.loop.time())
        if channel is not None and channel in self.devices.flows:
            with contextlib.suppress(Exception):
                await self.devices.flows[channel].set_flow(0.0)

    async def _open_close(
        self, bank: ValveBank, ch: int, t0: float, width_s: float, line: str, chem: str
    ) -> None:
        if bank.hardware_pulse:
            # The module times the pulse: its width does not carry this host's jitter.
            await bank.pulse(ch, width_s)
            opened = self._now()
            await self._sleep_until(t0 + width_s)
            closed = t0 + width_s
        else:
            await bank.set_valve(ch, True)
            opened = self._now()
            await self._sleep_until(t0 + width_s)
            await bank.set_valve(ch, False)
            closed = self._now()
        self._valve_open = False
        if self._cut is not None:
            raise TrialAborted(f"a hold closed the valve during a pulse ({self._cut})")
        self.pulses += 1
        if self.journal is not None:
            # Recorded once the valve closed, so that a pulse cut short by an abort in its
            # purge is on record too; its pressure response is filled in after the purge.
            self.journal.pulse(
                PulseRecord(None, line, chem, t0, opened, t0 + width_s, closed, bank.hardware_pulse)
            )

    async def _setup(self) -> None:
        assert self.safety is not None
        devices = self.devices
        for phase in self.schedule.setup.phases:
            if isinstance(phase, s.Await):
                await self._await(phase)
                continue
            t0 = self._now()
            for a in sorted(phase.actions, key=lambda a: a.offset_ns):
                await self._sleep_until(t0 + a.offset_ns / NS)
                if a.kind is ActionKind.SET_TEMPERATURE and a.target in devices.temperatures:
                    tc = devices.temperatures[a.target]
                    await tc.set_ramp_rate(a.rate)
                    await tc.set_temperature(a.value)
                elif a.kind is ActionKind.SET_FLOW and a.target in devices.flows:
                    if a.target == "carrier" and (a.value or 0.0) > 0:
                        await devices.set_carrier_shutoff(True)
                    await devices.flows[a.target].set_flow(a.value or 0.0)
                elif a.kind is ActionKind.SET_OZONE:
                    # Every setting the simulated trial applies, the ozone generator's included:
                    # without it an O3 line doses plain O2 and the trial tunes the wrong gas.
                    if devices.ozone is None:
                        msg = "the recipe's setup needs an ozone generator; the tool has none"
                        raise TrialAborted(msg)
                    await devices.ozone.set_ozone(a.value is not None, a.value or 0.0)
                elif a.kind is ActionKind.PUMP_ISOLATION:
                    if devices.pump_isolation is None:
                        msg = "the recipe's setup needs a pump isolation valve; the tool has none"
                        raise TrialAborted(msg)
                    await devices.set_pump_isolation(bool(a.value))
                else:
                    continue
                self.safety.note_action(a, self.loop.time() if self.loop else 0.0)
            await self._sleep_until(t0 + phase.duration_ns / NS)
        self._publish("trial: setup done")

    async def _await(self, phase: s.Await) -> None:
        """A wait_until of the setup (heat-up): its conditions, held, within its timeout."""
        start = self._now()
        since: dict[int, float | None] = dict.fromkeys(range(len(phase.conditions)))
        while True:
            now = self._now()
            ok = True
            for i, c in enumerate(phase.conditions):
                value = await self._channel(c.channel)
                if not _condition_met(c, value):
                    since[i] = None
                    ok = False
                    continue
                first = since[i]
                if first is None:
                    first = since[i] = now
                if now - first + 1e-9 < c.hold_ns / NS:
                    ok = False
            if ok:
                self._publish(f"{phase.label}: met after {now - start:.0f} s")
                return
            if now - start >= phase.timeout_ns / NS:
                msg = f"{phase.label}: not met within {phase.timeout_ns / NS:g} s"
                if phase.on_timeout == "continue":
                    self._publish(msg + "; continuing as the recipe says")
                    return
                raise TrialAborted(msg)
            await asyncio.sleep(min(1.0, self.tool.safety.poll_interval))

    async def _channel(self, channel: str) -> float | None:
        devices = self.devices
        if channel == "pressure":
            return (await self._pressure())[1]
        if channel in devices.temperatures:
            return (await devices.temperatures[channel].read_temperature()).pv_c
        if channel in devices.flows:
            return (await devices.flows[channel].read_flow()).flow_sccm
        return None

    async def _residence(self) -> float:
        """A short pulse of the first line with a long wait: the decay of its pressure."""
        from aldctl.tune.trial import residence_time

        name, spec = next(iter(self.tool.lines.items()))
        guess = float(self.tool.chamber.residence_time)
        width = max(float(spec.min_pulse), 0.01)
        _, ts, ps, base = await self._pulse(spec.chemical or name, width, 10.0 * guess, True)
        k = max(range(len(ps)), key=lambda k: ps[k]) if ps else 0
        tau = residence_time(ts[k:], ps[k:], base)
        self._publish(f"trial: residence time {tau:.3g} s from the decay after a {name} pulse")
        return tau

    # ------------------------------------------------------------------ design side

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self.loop is not None
        fut: Future[T] = asyncio.run_coroutine_threadsafe(self._guarded(coro), self.loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()
            raise

    def line(self, chem: str) -> str:
        for name, spec in self.tool.lines.items():
            if chem in (spec.chemical, name):
                return str(name)
        return chem

    def setup(self) -> None:
        self._call(self._setup())

    def qcm(self) -> float:
        return self._call(self._qcm())

    def baseline(self) -> float:
        return self._call(self._baseline())

    def pulse(self, chem: str, width_s: float, purge_s: float, record: bool = False) -> Any:
        return self._call(self._pulse(chem, width_s, purge_s, record))

    def plasma(self, step: Any, purge_s: float) -> None:
        self._call(self._plasma(step, purge_s))

    def now_s(self) -> float:
        return self._now()

    def wait_until(self, t_s: float) -> None:
        self._call(self._sleep_until(t_s))

    def residence_time_s(self) -> float:
        return self._call(self._residence())
