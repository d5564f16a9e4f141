"""The runner: executes a compiled Schedule against a live Tool, on an injected clock.

Structure (one asyncio task each, all owned by :meth:`Runner.run`):

* the **executor** walks setup, the units of main and teardown, sleeping to absolute
  deadlines (``anchor + offset``) so no error accumulates over thousands of cycles. It
  checks pause and stop at checkpoints (unit boundaries) only;
* the **supervisor** (``run`` itself) waits for the executor or an interrupt. An abort or
  a hold cancels the executor mid-action; the supervisor then closes the dose valves at
  once (abort: the whole safe state), and after a hold that cleared, restarts the
  interrupted unit from its beginning (a half-done ALD cycle is repeated, never counted
  twice: only completed units are journaled);
* the **safety monitor** and the **valve heartbeat** run beside them (``safety.py``);
* every long-lived task is **supervised**: if one ends while the run is still going (an
  exception nobody expected, or a plain return), the run aborts to the safe state naming
  the task and the exception. A limit that stopped being watched is never silent;
* the **pulse monitor** samples the chamber gauge after each dose and records the pressure
  response (area above baseline) with the pulse, and warns when a line's response falls
  far below its level at the start of the run (empty or cold source, valve not opening).

Every valve action records commanded and achieved times. Valve banks that time pulses in
hardware get the whole pulse in one command.

The safe state never depends on a side effect: on abort it is driven first (every device at
once, bounded), and only then are the state change, the journal and the displays told. A
journal that cannot be written aborts the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aldctl.engine.actions import ActionFailed, apply_action
from aldctl.engine.clock import Clock, RealClock, StallReport
from aldctl.engine.control import RunControl
from aldctl.engine.devices import Tool, valve_positions
from aldctl.engine.dosewatch import DoseWatch, PulseMonitor, alarm_publisher
from aldctl.engine.events import (
    Alarm,
    DoseStarted,
    Event,
    EventBus,
    Message,
    PulseDone,
    ReadBack,
    State,
    StateChanged,
    StepStarted,
    UnitDone,
    UnitStarted,
    unclosed_lines,
)
from aldctl.engine.journal import Journal, JournalError, PulseRecord
from aldctl.engine.safety import Safety, close_dose_valves, safe_state, safe_state_flows
from aldctl.engine.trace import Tracer
from aldctl.recipe import schedule as s
from aldctl.recipe.schedule import NS, Action, ActionKind
from drivers.base import DeviceError, FlowReading, TemperatureReading

COMMIT_MARGIN_S = 0.005
"""Checkpoints commit this long before a unit's end when its actions are done, so the
commit never delays the next unit's first pulse."""


VALVE_STROKE_S = 0.25
"""Time allowed for a dose valve to close before its read-back must say closed."""

PHASE_PREP_S = 0.002
"""In real time the executor wakes this long before a phase's end (see ``_body``)."""

ANNOUNCE_SLACK_S = 0.02
"""A step that begins less than this before the next valve edge is announced just after
the edge, without a wake-up of its own (one more timer so close to an edge would crowd it)."""


def after_words(read_back: str) -> str:
    """ "after teardown" or "after the abort", for a run's ``read_back``."""
    return "after the abort" if read_back == "abort" else "after teardown"


class RunAborted(Exception):
    pass


@dataclass
class RunOptions:
    start_unit: int = 0
    """First unit of main to run (resume)."""
    restore: tuple[Action, ...] = ()
    """Setpoints to re-apply before setup (resume: what main had set before the checkpoint)."""
    hardware_pulses: bool = True
    pulse_monitor: bool = True
    dose_grams: dict[str, float] = field(default_factory=dict)
    """Per line: grams a dose draws from its source (the planner's estimate), for the
    remaining-doses estimate."""
    pulses_planned: dict[str, int] = field(default_factory=dict)
    """Per line: doses the recipe makes over the whole run."""
    pulses_before: dict[str, int] = field(default_factory=dict)
    """Per line: doses earlier sessions of the run made (a resume)."""


@dataclass
class TimingStats:
    open_errors: list[float] = field(default_factory=list)
    width_errors: list[float] = field(default_factory=list)
    hardware: int = 0
    """Pulses timed by the valve module (their width error is not known to the engine)."""
    limit: int = 1_000_000

    def add(self, open_err: float, width_err: float) -> None:
        if len(self.open_errors) < self.limit:
            self.open_errors.append(open_err)
            self.width_errors.append(width_err)

    @staticmethod
    def _summary(xs: list[float]) -> dict[str, float]:
        if not xs:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        v = sorted(abs(x) * 1e3 for x in xs)
        n = len(v)
        return {"p50": v[n // 2], "p99": v[min(n - 1, int(n * 0.99))], "max": v[-1]}

    def summary(self) -> dict[str, Any]:
        return {
            "pulses": len(self.open_errors),
            "hardware_timed": self.hardware,
            "open_error_ms": self._summary(self.open_errors),
            # The headline: absolute error of the delivered pulse width.
            "width_error_ms": self._summary(self.width_errors),
        }


@dataclass
class RunResult:
    outcome: str
    """"complete", "stopped", "aborted" or "failed"."""
    reason: str
    units_done: int
    """Units of main done over the whole run (every session of it)."""
    units_total: int
    cycles_completed: int
    """Cycles (loop passes) completed over the whole run, earlier sessions included."""
    process_s: float
    wall_s: float
    pulse_timing: dict[str, Any]
    warnings: list[str]
    simulation: dict[str, Any] | None
    safe_state_errors: dict[str, str]
    events_dropped: int = 0
    journal_error: str | None = None
    """Why the journal could not be written (the run was aborted for it), or None."""
    paused_s: float = 0.0
    """Wall seconds spent paused (not part of the process time in virtual time)."""
    held_s: float = 0.0
    """Process seconds spent held, over every unit."""
    session_units: int = 0
    """Of ``units_done``, the units this session (a resume) ran."""
    session_cycles: int = 0
    not_verified_safe: dict[str, str] = field(default_factory=dict)
    """After teardown or an abort: device -> what it read back that is not safe (empty:
    verified, if ``read_back`` says it was read back)."""
    read_back: str = ""
    """When the safe state was read back: "teardown", "abort", or "" (it was not: a run
    cancelled by a signal, or one whose journal failed after its end)."""
    host_stalls: StallReport | None = None
    """Wall-clock runs: the times the machine did not run the engine while it spun toward
    a valve edge (:meth:`RealClock.stall_report`), records on the run's time base (the
    events' ``t``). None in virtual time."""


@dataclass
class _Pending:
    line: str
    chemical: str
    unit: int | None
    cmd_open: float
    ack_open: float
    duration: float
    where: str = ""
    k: int = 0


class Runner:
    def __init__(
        self,
        schedule: s.Schedule,
        tool: Tool,
        clock: Clock,
        *,
        journal: Journal | None = None,
        bus: EventBus | None = None,
        control: RunControl | None = None,
        options: RunOptions | None = None,
    ) -> None:
        self.schedule = schedule
        self.tool = tool
        self.clock = clock
        self.journal = journal
        self.bus = bus or EventBus()
        self.control = control or RunControl()
        self.options = options or RunOptions()
        self.safety = Safety(tool, self.control, clock, self.bus, journal)
        cfg = tool.config
        self.watch = DoseWatch(
            cfg.dose_watch,
            alarm_publisher(self),
            dose_grams=self.options.dose_grams,
            source_mass={k: v.source_mass for k, v in cfg.lines.items()},
            pulses_planned=self.options.pulses_planned,
            pulses_before=self.options.pulses_before,
        )
        self.monitor = PulseMonitor(self, self.watch)
        self.tracer = Tracer(self) if journal is not None and cfg.journal.traces else None
        self.unit_pulses: dict[str, int] = {}
        """Doses of each line so far in the current unit (which pulse of the cycle)."""
        self.qcm_at_unit: float | None = None
        self.timing = TimingStats()
        self.warnings: list[str] = []
        self.setpoints: dict[tuple[ActionKind, str], Action] = {}
        self.unit_plasma_flows: dict[str, float] = {}
        self.ramp_rates: dict[str, float | None] = {}
        self.pending: dict[str, _Pending] = {}
        self.events_cache: dict[int, list[tuple[int, int, str, Action]]] = {}
        self.warmers: dict[tuple[str, int], Callable[[], None]] = {}
        self.anchor = 0.0
        self.t0 = 0.0
        self.units_done = self.options.start_unit
        # Whole-run counts: a resume starts from what earlier sessions completed.
        self.cycles_before = _cycles_before(schedule, self.options.start_unit)
        self.cycles_completed = self.cycles_before
        self.current: s.Unit | None = None
        self.in_setup = True
        self.in_teardown = False
        self.journal_error: str | None = None
        self.paused_s = 0.0
        self.held_s = 0.0
        """Process time spent held over the whole run."""
        self.held_unit_s = 0.0
        """Process time spent held in the current unit (earlier holds of it)."""
        self.trips: tuple[str, int] | None = None
        """(hold source, consecutive trips) of the unit being run."""
        self.last_dose: str | None = None
        self.pressure_at_teardown: float | None = None
        self.flow_at_teardown: float | None = None
        self.process_end: float | None = None
        """Process time when teardown ended (the read-back after it is not the recipe's)."""
        self.not_safe: dict[str, str] = {}
        """What the read-back after teardown found not safe (device -> what was read)."""
        self.read_back = ""
        """When the safe state was read back: "teardown", "abort" or "" (not read back)."""
        self._ending = False
        self.bus.listen(self._journal_listener)
        self.bus.on_error = self._listener_failed
        self.control.on_command = self._command_logged

    # ------------------------------------------------------------------ bookkeeping

    def now(self) -> float:
        """Process time of this session, seconds."""
        return self.clock.now() - self.t0

    def _journal_listener(self, ev: Event) -> None:
        if self.journal is None or self.journal_error is not None:
            return
        if isinstance(ev, StateChanged):
            self.journal.event(ev.t, "state", ev.reason or str(ev.state), state=str(ev.state))
        elif isinstance(ev, Alarm):
            self.journal.event(ev.t, f"alarm.{ev.severity}", f"{ev.source}: {ev.message}")
        elif isinstance(ev, Message):
            self.journal.event(ev.t, "message", ev.text)

    def _listener_failed(self, fn: Any, exc: Exception) -> None:
        if getattr(fn, "__self__", None) is self and isinstance(exc, JournalError):
            self._journal_failed(exc)
        # Another listener (a display, a subscriber) failing is its own problem: the bus
        # counts it and the run goes on.

    def _journal_failed(self, exc: BaseException) -> None:
        """The journal cannot be written: abort (the safe state does not need it)."""
        if self.journal_error is not None:
            return
        self.journal_error = str(exc)
        with contextlib.suppress(Exception):
            self.control.abort(f"journal cannot be written: {exc}", who="journal")

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """Supervision: a helper that ends while the run goes on takes the run down."""
        if self._ending:
            return
        if task.cancelled():
            why = "was cancelled"
        elif task.exception() is not None:
            exc = task.exception()
            why = f"died: {type(exc).__name__}: {exc}"
        else:
            why = "returned"
        reason = f"task '{task.get_name()}' {why}: its protections are gone, aborting"
        with contextlib.suppress(Exception):
            self.control.abort(reason, who="supervisor")

    def monitor_died(self, why: str) -> None:
        """A helper that is not a long-lived task (the per-pulse monitor) failed: as
        :meth:`_task_ended`, the run aborts naming it."""
        if self._ending:
            return
        with contextlib.suppress(Exception):
            self.control.abort(f"{why}: its protections are gone, aborting", who="supervisor")

    def _command_logged(self, verb: str, who: str, result: str) -> None:
        self.bus.publish(Message(self.now(), f"{who}: {verb} -> {result}"))

    def _set_state(self, state: State, reason: str = "") -> None:
        prev = self.control.state
        self.control.state = state
        self.bus.publish(StateChanged(self.now(), state, prev, reason))

    def warn(self, source: str, message: str) -> None:
        self.warnings.append(f"{source}: {message}")
        self.bus.publish(Alarm(self.now(), "warning", source, message))

    def record_pulse(self, rec: PulseRecord, area: float | None) -> None:
        if self.journal is not None:
            self.journal.pulse(
                PulseRecord(
                    rec.unit,
                    rec.line,
                    rec.chemical,
                    rec.commanded_open - self.t0,
                    rec.achieved_open - self.t0,
                    rec.commanded_close - self.t0,
                    rec.achieved_close - self.t0,
                    rec.hardware,
                    area,
                )
            )

    # ------------------------------------------------------------------ supervisor

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        wall0 = time.perf_counter()
        self.t0 = self.clock.now()
        self.safety.t0 = self.t0
        self._set_state(State.STARTING, "starting")
        helpers = [
            loop.create_task(self.safety.monitor(), name="safety-monitor"),
        ]
        if self.tracer is not None:
            helpers.append(loop.create_task(self.tracer.run(), name="pressure-trace"))
        pi = self.tool.config.safety.pressure_interval
        if (
            self.tool.gauge is not None
            and pi is not None
            and pi < self.tool.config.safety.poll_interval
        ):
            helpers.append(loop.create_task(self.safety.pressure_watch(), name="pressure-watch"))
        if any(b.watchdog for b in self.tool.banks):
            helpers.append(loop.create_task(self.safety.heartbeat(), name="valve-heartbeat"))
        for t in helpers:
            t.add_done_callback(self._task_ended)
        outcome, reason = "complete", "recipe complete"
        safe_errors: dict[str, str] = {}
        try:
            # Whatever the valves' wiring, the run starts pumped: a normally-closed pump
            # isolation valve (and its carrier shut-off) stays closed until energised.
            await self.tool.set_pump_isolation(True)
            await self.tool.set_carrier_shutoff(True)
            resume_at: int | None = None  # None: from setup
            while True:
                done = await self._attempt(resume_at)
                if done:
                    break
                if self.control.abort_reason is not None:
                    raise RunAborted(self.control.abort_reason)
                await self._hold()
                resume_at = None if self.in_setup else self.units_done
            if self.control.abort_reason is None:
                # Teardown is done: the safe state is read back, not assumed.
                self.not_safe = await self.safety.verify_safe(
                    self._purged_base(), self.flow_at_teardown
                )
                self.read_back = "teardown"
            if self.control.abort_reason is not None:
                # Aborted as the executor finished (a helper died, the journal failed).
                raise RunAborted(self.control.abort_reason)
            self._report_read_back()
            self._flush_journal()
            unsafe = self._unsafe_suffix()
            if self.control.stop_requested:
                outcome, reason = "stopped", f"stopped by the operator after unit {self.units_done}"
                reason += unsafe
                self._set_state(State.STOPPED, reason)
            else:
                reason += unsafe
                self._set_state(State.COMPLETE, reason)
        except RunAborted as exc:
            outcome, reason = "aborted", str(exc)
            safe_errors = await self._abort(reason)
        except DeviceError as exc:
            outcome, reason = "aborted", f"device error: {exc}"
            safe_errors = await self._abort(reason)
        except asyncio.CancelledError:
            # Cancelled from outside (Ctrl-C, SIGTERM): make safe, then let it propagate.
            # (No read-back: whoever cancelled wants the process to end now.)
            safe_errors = await self._abort("run cancelled (signal or shutdown)")
            outcome, reason = "aborted", "run cancelled (signal or shutdown)"
            self._finish(outcome, reason, wall0, safe_errors)
            await self._stop_helpers(helpers)
            raise
        except JournalError as exc:
            self._journal_failed(exc)
            outcome, reason = "aborted", f"journal cannot be written: {exc}"
            safe_errors = await self._abort(reason)
        except Exception as exc:
            outcome, reason = "failed", f"internal error: {type(exc).__name__}: {exc}"
            safe_errors = await self._abort(reason, state=State.FAULTED)
        if outcome in ("aborted", "failed"):
            # An abort is when the operator most needs to know: the safe state is read
            # back as after teardown (the helpers still run: the valve module's heartbeat,
            # the limits), bounded, with a device that no longer answers named as such.
            try:
                reason += await self._read_back_after_abort()
            except asyncio.CancelledError:
                # Ctrl-C while reading back: the safe state is already driven; the record
                # still gets its outcome and the helpers still stop.
                reason += "; the safe state's read-back was interrupted"
                self._finish(outcome, reason, wall0, safe_errors)
                await self._stop_helpers(helpers)
                raise
        await self._stop_helpers(helpers)
        if self.journal_error is not None and outcome == "complete":
            outcome, reason = "aborted", f"journal cannot be written: {self.journal_error}"
            safe_errors = await self._abort(reason)
        return self._finish(outcome, reason, wall0, safe_errors)

    def _unsafe_suffix(self) -> str:
        if not self.not_safe:
            return ""
        return (
            f"; the reactor is NOT verified safe {after_words(self.read_back)} ("
            + "; ".join(self.not_safe.values())
            + ")"
        )

    def _report_read_back(self) -> None:
        """Alarms for what the read-back found not safe; a message when it found it safe."""
        after = after_words(self.read_back)
        line_devices = self.tool.line_devices()
        for source, what in self.not_safe.items():
            self.warnings.append(f"{source}: {what}")
            self.bus.publish(
                Alarm(
                    self.now(),
                    "alarm",
                    source,
                    f"{what}: the reactor is not verified safe {after}",
                    unclosed_lines({source: what}, line_devices),
                )
            )
        self.bus.publish(
            ReadBack(self.now(), not self.not_safe, unclosed_lines(self.not_safe, line_devices))
        )
        if not self.not_safe and self.read_back == "abort":
            self.bus.publish(
                Message(
                    self.now(),
                    f"safe state read back {after}: verified safe (dose valves closed, flows "
                    "at their setpoints, heaters not climbing, chamber pressure down)",
                )
            )

    async def _read_back_after_abort(self) -> str:
        """Read the safe state back after an abort; returns what the reason gets added."""
        if self.process_end is None:
            self.process_end = self.now()  # the read-back is not the recipe's time
        base_flow = self.safety.total_flow()
        carrier = self.setpoints.get((ActionKind.SET_FLOW, "carrier"))
        t = self.clock.now()
        # What the safe state commanded, so the read-back compares flows with it (and
        # waits for those it changed to settle).
        safety = self.safety
        for ch, sccm in safe_state_flows(
            self.tool, carrier_sccm=carrier.value if carrier else None
        ).items():
            if abs(safety.flow_setpoints.get(ch, safety.default_flow(ch)) - sccm) > 1e-9:
                safety.flow_changed[ch] = t
            safety.flow_setpoints[ch] = sccm
        self.read_back = "abort"
        self.bus.publish(
            Message(
                self.now(),
                "reading the safe state back (for up to "
                f"{self.tool.config.safety.verify_time:g} s)",
            )
        )
        try:
            self.not_safe = await self.safety.verify_safe(
                self._purged_base(), base_flow, since="the safe state was driven"
            )
        except Exception as exc:  # bounded inside; this would be a bug in it
            self.not_safe = {"read-back": f"the read-back failed: {type(exc).__name__}: {exc}"}
        # a display or the journal failing: the result still stands
        with contextlib.suppress(Exception):
            self._report_read_back()
        return self._unsafe_suffix()

    def _purged_base(self) -> float | None:
        """The chamber's purged base pressure in this run: the lowest of the per-dose base
        pressure baselines (the pressure when each dose opened), else the last poll before
        teardown."""
        bases = [v for v in self.watch.base_baselines() if v > 0]
        if bases:
            return min(bases)
        return self.pressure_at_teardown

    def _flush_journal(self) -> None:
        """Commit what is buffered before declaring the run complete (a full disk must be
        found before the outcome is, not after)."""
        if self.journal is not None and self.journal_error is None:
            try:
                self.journal.flush()
            except JournalError as exc:
                self._journal_failed(exc)
                raise RunAborted(f"journal cannot be written: {exc}") from None

    async def _stop_helpers(self, helpers: list[asyncio.Task[None]]) -> None:
        self._ending = True
        for t in helpers:
            t.cancel()
        for t in helpers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.monitor.stop()

    def _finish(
        self, outcome: str, reason: str, wall0: float, safe_errors: dict[str, str]
    ) -> RunResult:
        sim = self.tool.simulation.summary() if self.tool.simulation is not None else None
        stalls = (
            self.clock.stall_report().since(self.t0) if isinstance(self.clock, RealClock) else None
        )
        result = RunResult(
            outcome=outcome,
            reason=reason,
            units_done=self.units_done,
            units_total=self.schedule.units,
            cycles_completed=self.cycles_completed,
            process_s=self.now() if self.process_end is None else self.process_end,
            wall_s=time.perf_counter() - wall0,
            pulse_timing=self.timing.summary(),
            warnings=list(self.warnings),
            simulation=sim,
            safe_state_errors=safe_errors,
            events_dropped=self.bus.dropped(),
            paused_s=self.paused_s,
            held_s=self.held_s,
            session_units=self.units_done - self.options.start_unit,
            session_cycles=self.cycles_completed - self.cycles_before,
            not_verified_safe=dict(self.not_safe),
            read_back=self.read_back,
            host_stalls=stalls,
        )
        if self.journal is not None and self.journal_error is None:
            summary = {
                "cycles_completed": result.cycles_completed,
                "pulse_timing": result.pulse_timing,
                "warnings": result.warnings,
                "wall_s": result.wall_s,
                "paused_s": result.paused_s,
                "held_s": result.held_s,
                "dose_watch": self.watch.summary(),
                "pulse_width": self.watch.width_summary(),
                "not_verified_safe": result.not_verified_safe,
                "read_back": result.read_back,
            }
            if stalls is not None:
                summary["host_stalls"] = stalls.summary()
            final = None
            if sim is not None:
                summary["simulation"] = sim
                with contextlib.suppress(ValueError):  # predicate faults cannot be pickled
                    final = self.tool.simulation.snapshot() if self.tool.simulation else None
            try:
                self.journal.finish(outcome, reason, result.process_s, summary, final)
            except JournalError as exc:
                # Too late to abort: the run has ended and the tool is where it ended.
                self.journal_error = str(exc)
        result.journal_error = self.journal_error
        return result

    async def _attempt(self, resume_at: int | None) -> bool:
        """Run the executor until it finishes (True) or an interrupt arrives (False)."""
        loop = asyncio.get_running_loop()
        executor = loop.create_task(self._execute(resume_at), name="executor")
        waiter = loop.create_task(self.control.interrupt.wait(), name="interrupt-wait")
        try:
            await asyncio.wait({executor, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        if executor.done():
            executor.result()
            return True
        executor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await executor
        return False

    async def _hold(self) -> None:
        reason = self.control.hold_reason or "hold"
        source = self.control.hold_source or "hold"
        errors = await close_dose_valves(
            self.tool, self.tool.config.safety.safe_state_timeout, rf_off=True
        )
        self.pending.clear()
        if "plasma" in errors:
            # commanded off either way: the retried unit lights it again after its checks
            self.safety.rf_on = False
        t = self.clock.now()
        for key in errors:
            if key.startswith("flow "):  # a plasma gas, off: the flow check must know
                off = Action(0, ActionKind.SET_FLOW, key.removeprefix("flow "), 0.0)
                self.setpoints[(ActionKind.SET_FLOW, off.target)] = off
                self.safety.note_action(off, t)
        bad = {k: str(v) for k, v in errors.items() if v is not None}
        if bad:
            what = "close valves" if any(k.startswith("valve") for k in bad) else "stop the plasma"
            raise RunAborted(f"hold could not {what}: {bad}")
        if self.tool.pump_isolation is not None:
            # A hold in an isolated phase (an exposure) must pump the chamber, or a pressure
            # hold never clears (first: before the valves' read-back); the retried unit
            # isolates it again from its start.
            await self.tool.set_pump_isolation(True)
        stuck = await self._stuck_open()
        if stuck:
            names = ", ".join(stuck)
            manual = "; ".join(f"close the {line} source's manual valve" for line in stuck)
            for line in stuck:
                self.bus.publish(
                    Alarm(
                        self.now(),
                        "abort",
                        f"valve {line}",
                        f"dose valve {line} stuck open (reads open after being commanded "
                        f"closed twice): close the {line} source's manual valve",
                        (line,),  # not closed: no display may draw it so
                    )
                )
            raise RunAborted(
                f"dose valve {names} stuck open: reads open after being commanded closed "
                f"twice (hold: {reason}); every dose valve commanded closed, the pump kept "
                f"open and the carrier flowing, but the tool has no valve aldctl can close "
                f"upstream of it: {manual}"
            )
        # A unit that trips the same hold every time it is retried would be re-dosed for
        # ever (each retry restarts the unit): count the trips, and keep the held time of
        # the unit across its holds so that hold_timeout means time, not time per hold.
        n = self.trips[1] + 1 if self.trips is not None and self.trips[0] == source else 1
        self.trips = (source, n)
        limit = self.tool.config.limits.hold_retries
        if n >= limit and not self.in_setup:
            if source == "pressure" and self.last_dose is not None:
                why = (
                    f"dose of {self.last_dose} trips the pressure hold every time ({n} times "
                    "in a row in this unit): pulse too long for this chamber?"
                )
            else:
                why = f"the unit trips the {source} hold every time ({n} times in a row): {reason}"
            raise RunAborted(why)
        self._set_state(State.HELD, reason)
        t_held = self.clock.now()
        self.safety.held_before_s = self.held_unit_s
        self.control.wake.clear()
        try:
            while True:
                await self.control.wake.wait()
                self.control.wake.clear()
                if self.control.abort_reason is not None:
                    raise RunAborted(self.control.abort_reason)
                if self.control.hold_cleared:
                    break
        finally:
            dt = self.clock.now() - t_held
            self.held_s += dt
            self.held_unit_s += dt
        self.control.release_hold()
        await self._restore_plasma_flows()
        self._set_state(State.RUNNING, f"resumed after hold ({reason}; held {dt:.0f} s)")

    async def _restore_plasma_flows(self) -> None:
        """The hold set every plasma gas to zero; the retried unit starts with them as it
        found them (a plasma step's own gas was off then, a background gas on)."""
        if self.in_setup:
            return  # setup is retried from its start and sets its gases again
        for name, sccm in self.unit_plasma_flows.items():
            if sccm > 0:
                a = Action(0, ActionKind.SET_FLOW, name, sccm)
                try:
                    await apply_action(self.tool, a, self.ramp_rates)
                except ActionFailed as exc:
                    raise RunAborted(f"after the hold: {exc}") from None
                self.setpoints[(ActionKind.SET_FLOW, name)] = a
                self.safety.note_action(a, self.clock.now())

    async def _stuck_open(self) -> list[str]:
        """Dose lines whose valve still reads open after being commanded closed twice, a
        valve stroke apart (a pneumatic valve closes in 10-50 ms). Needs a read-back of the
        valve's position: a bank that cannot be read (the watchdog's business) or that
        reads back only its own outputs finds nothing here."""
        timeout = self.tool.config.safety.safe_state_timeout
        suspects: list[str] = []
        for attempt in range(2):
            await self.clock.sleep_until(self.clock.now() + VALVE_STROKE_S, precise=False)
            suspects = []
            for bank in self.tool.banks:
                try:
                    async with asyncio.timeout(timeout):
                        levels = await valve_positions(bank)()
                except Exception:
                    continue
                for line, (b, ch) in self.tool.valves.items():
                    if b is bank and levels.get(ch):
                        suspects.append(line)
                        if attempt == 0:
                            with contextlib.suppress(Exception):
                                async with asyncio.timeout(timeout):
                                    await bank.set_valve(ch, False)
            if not suspects:
                return []
        return suspects

    async def _abort(self, reason: str, state: State = State.ABORTED) -> dict[str, str]:
        # The safe state first, and nothing before it that could fail: no event, no journal
        # write, no display. Then tell everyone.
        prev = self.control.state
        self.control.state = State.ABORTING
        carrier = self.setpoints.get((ActionKind.SET_FLOW, "carrier"))
        try:
            errors = await safe_state(self.tool, carrier_sccm=carrier.value if carrier else None)
            bad = {k: str(v) for k, v in errors.items() if v is not None}
        except Exception as exc:  # safe_state bounds every device; this is a bug in it
            bad = {"safe state": f"{type(exc).__name__}: {exc}"}
        self.pending.clear()
        self.bus.publish(StateChanged(self.now(), State.ABORTING, prev, reason))
        if bad:
            self.bus.publish(
                Alarm(
                    self.now(),
                    "abort",
                    "safe state",
                    "safe state incomplete: " + "; ".join(f"{k}: {v}" for k, v in bad.items()),
                    unclosed_lines(bad, self.tool.line_devices()),
                )
            )
        self._set_state(state, reason)
        return bad

    # ------------------------------------------------------------------ executor

    async def _execute(self, resume_at: int | None) -> None:
        self.anchor = self.clock.now()
        if resume_at is None:
            self.in_setup = True
            if self.options.restore:
                for a in self.options.restore:
                    await self._action(a, self.clock.now(), None)
            await self._body(self.schedule.setup, "setup", None)
            self.in_setup = False
            self._set_state(State.RUNNING, "setup done")
            if self.clock.realtime:
                # Setup's commands at its end (`set:` the carrier, the heaters) take real
                # time, ~0.4 ms on the simulated tool, more on a wire, so setup ends after
                # its planned end; main's first edge at that planned end was then always
                # late by as much (0.35-0.46 ms in traced `bench realtime` runs).
                # Main starts when setup is done: its grid is anchored there, not before.
                self.anchor = max(self.anchor, self.clock.now())
            start = self.options.start_unit
        else:
            start = resume_at
        for unit in s.iter_units(self.schedule.main, start):
            if self.control.stop_requested and unit.position == 0:
                break
            if self.control.pause_requested:
                await self._pause()
                if self.control.stop_requested:
                    break
            self.current = unit
            self.unit_pulses.clear()
            # the plasma gases as the unit found them: what a hold restores before the
            # unit is retried (a background flow set by `set:` is not the unit's to send)
            self.unit_plasma_flows = {
                t: a.value or 0.0
                for (k, t), a in self.setpoints.items()
                if k is ActionKind.SET_FLOW and t.startswith("plasma.")
            }
            total = self.schedule.units
            passes = unit.loop.repeat if unit.loop is not None else 1
            self.bus.publish(
                UnitStarted(
                    self.now(),
                    unit.index,
                    total,
                    unit.body.label,
                    unit.cycle,
                    unit.rep,
                    passes,
                    unit.body.min_ns / NS,
                )
            )
            t_start = self.now()
            committed = await self._body(unit.body, "main", unit)
            if not committed:
                self._checkpoint(unit, t_start)
        if self.control.stop_requested and self.control.state is not State.STOPPING:
            self._set_state(State.STOPPING, "stop requested: running teardown")
        self.in_teardown = True
        self.pressure_at_teardown = self.safety.readings.pressure_torr
        self.flow_at_teardown = self.safety.total_flow()
        await self._body(self.schedule.teardown, "teardown", None)
        await self.clock.sleep_until(self.anchor)  # the recipe's end, exactly
        # Stamped here, in the step that reached the end, not by the supervisor after it
        # noticed the executor had finished: that was two or more turns of the event loop
        # later (0.1-0.3 ms in real time, whatever else ran meanwhile), counted as drift.
        self.process_end = self.now()

    async def _pause(self) -> None:
        self._set_state(State.PAUSED, f"paused at checkpoint {self.units_done}")
        wall = time.monotonic()
        # In virtual time the reactor and the process clock stand still while paused (an
        # idle virtual loop would otherwise race through days); in real time the pause is
        # real process time, and recorded apart.
        self.clock.freeze()
        try:
            while self.control.pause_requested and not self.control.stop_requested:
                self.control.wake.clear()
                await self.control.wake.wait()
        finally:
            self.clock.thaw()
            paused = time.monotonic() - wall
            self.paused_s += paused
        self.anchor = self.clock.now()
        if not self.control.stop_requested:
            self._set_state(State.RUNNING, f"resumed after {paused:.0f} s paused")

    def _checkpoint(self, unit: s.Unit, t_start: float) -> None:
        state = None
        if self.tool.simulation is not None and self.journal is not None:
            with contextlib.suppress(ValueError):  # predicate faults cannot be pickled
                state = self.tool.simulation.snapshot()
        if self.journal is not None and self.journal_error is None:
            try:
                self.journal.checkpoint(
                    unit.index,
                    unit.cycle or unit.body.label,
                    unit.rep,
                    unit.position,
                    t_start,
                    self.now(),
                    state,
                )
            except JournalError as exc:
                self._journal_failed(exc)
                raise RunAborted(f"journal cannot be written: {exc}") from None
        self.units_done = unit.index + 1
        self.trips = None
        self.held_unit_s = 0.0
        self.safety.held_before_s = 0.0
        if unit.loop is not None and unit.last_in_pass:
            self.cycles_completed += 1
        qcm = self.safety.readings.qcm_a
        if qcm is not None:
            if self.qcm_at_unit is not None and self.tool.config.dose_watch.enabled:
                self.watch.qcm_step(unit.cycle or unit.body.label, qcm - self.qcm_at_unit)
            self.qcm_at_unit = qcm
        self.bus.publish(UnitDone(self.now(), unit.index, self.schedule.units))

    def _events(self, phase: s.Timed) -> list[tuple[int, int, str, Action]]:
        key = id(phase)
        cached = self.events_cache.get(key)
        if cached is not None:
            return cached
        evs: list[tuple[int, int, str, Action]] = []
        for a in phase.actions:
            if a.kind is ActionKind.PULSE:
                bank, _ = self.tool.valves[a.target]
                if self.options.hardware_pulses and bank.hardware_pulse:
                    evs.append((a.offset_ns, 1, "hw", a))
                else:
                    evs.append((a.offset_ns, 1, "open", a))
                    evs.append((a.offset_ns + a.duration_ns, 0, "close", a))
            else:
                evs.append((a.offset_ns, 2, "act", a))
        evs.sort(key=lambda e: (e[0], e[1]))
        self.events_cache[key] = evs
        return evs

    async def _body(self, body: s.Body, where: str, unit: s.Unit | None) -> bool:
        """Run a body from ``self.anchor``; True when the checkpoint was already committed."""
        committed = False
        phases = body.phases
        for i, phase in enumerate(phases):
            if isinstance(phase, s.Await):
                self.bus.publish(StepStarted(self.now(), phase.label, where))
                await self._await(phase)
                self.anchor = self.clock.now()
                continue
            anchor = self.anchor
            spans = phase.spans
            si = 0
            for offset, _, kind, action in self._events(phase):
                deadline = anchor + offset / NS
                si = await self._announce(spans, si, offset, anchor, where)
                warm = self._warmer(kind, action) if self.clock.realtime else None
                await self.clock.sleep_until(deadline, warm=warm)
                if kind == "open":
                    await self._open(action, deadline, unit)
                elif kind == "close":
                    await self._close(action, deadline)
                elif kind == "hw":
                    await self._hw_pulse(action, deadline, unit)
                else:
                    await self._action(action, deadline, unit)
                # steps that begin with this edge: announced once it is out, so that in
                # real time the announcement never sits between the deadline and the edge
                while si < len(spans) and spans[si].start_ns <= offset:
                    self._step_started(spans[si], where)
                    si += 1
            end = anchor + phase.duration_ns / NS
            si = await self._announce(spans, si, phase.duration_ns, anchor, where)
            last = i == len(phases) - 1
            if last and unit is not None and end - self.clock.now() > 2 * COMMIT_MARGIN_S:
                t_start = anchor - self.t0
                await self.clock.sleep_until(end - COMMIT_MARGIN_S, precise=False)
                self._checkpoint(unit, t_start)
                committed = True
            while si < len(spans):  # empty steps at the phase's very end
                self._step_started(spans[si], where)
                si += 1
            if self.clock.realtime:
                # Wake a little before the phase's end, not at it: the bookkeeping between
                # phases and units (events, the next unit's start) then runs before the next
                # phase's first edge, whose precise sleep absorbs it, instead of after `end`,
                # where it made that edge ~0.1 ms late (the first pulse of every cycle).
                await self.clock.sleep_until(end - PHASE_PREP_S, precise=False)
            else:
                await self.clock.sleep_until(end)
            self.anchor = end
        return committed

    async def _announce(
        self, spans: Any, si: int, before_ns: int, anchor: float, where: str
    ) -> int:
        """Announce the steps from ``spans[si]`` on that begin before ``before_ns`` into the
        phase, each when it begins; the index of the first one left."""
        # A step is announced when it begins, not when the executor starts waiting for its
        # first edge: a plasma step after a 5 s purge was shown (and the fault campaign's
        # "plasma" phase injected) for the whole purge. A step that begins without an edge
        # of its own (a wait) is woken for.
        # One that begins within ANNOUNCE_SLACK_S of the edge is left to be announced just
        # after it: a wake-up of its own there would crowd the edge.
        slack_ns = round(ANNOUNCE_SLACK_S * NS)
        while si < len(spans) and spans[si].start_ns < before_ns - slack_ns:
            sp = spans[si]
            at = anchor + sp.start_ns / NS
            if at > self.clock.now():
                await self.clock.sleep_until(at, precise=False)
            self._step_started(sp, where)
            si += 1
        return si

    def _step_started(self, sp: Any, where: str) -> None:
        self.bus.publish(StepStarted(self.now(), sp.label, where, (sp.end_ns - sp.start_ns) / NS))

    def _warmer(self, kind: str, a: Action) -> Callable[[], None] | None:
        """For a valve edge on the wall clock: what :meth:`_open` / :meth:`_close` read
        before the write, and the valve module's own path to it where the driver offers
        one (``warm``), run without effects just before the deadline (see
        :data:`aldctl.engine.clock.WARM_S`)."""
        if kind not in ("open", "close"):
            return None
        key = (kind, id(a))
        fn = self.warmers.get(key)
        if fn is None:
            bank, ch = self.tool.valves[a.target]
            module: Callable[[int, bool], object] | None = getattr(bank, "warm", None)
            is_open = kind == "open"
            lines = self.tool.config.lines

            def fn() -> None:
                if is_open:
                    self.safety.permit(a)
                    _ = lines[a.target].chemical
                if module is not None:
                    module(ch, is_open)

            self.warmers[key] = fn
        return fn

    async def _open(self, a: Action, deadline: float, unit: s.Unit | None) -> None:
        why = self.safety.permit(a)
        if why is not None:
            self.control.hold(why, "permissive")
            await asyncio.Event().wait()  # the supervisor cancels us and holds
        bank, ch = self.tool.valves[a.target]
        chem = self.tool.config.lines[a.target].chemical
        self.last_dose = self.safety.last_dose = chem
        await bank.set_valve(ch, True)
        ack = self.clock.now()
        self.monitor.opened(a.target, ack)
        self.bus.publish(DoseStarted(ack - self.t0, a.target, chem, a.duration_ns / NS))
        where, k = self._which_pulse(a.target, unit)
        self.pending[a.target] = _Pending(
            a.target,
            chem,
            unit.index if unit else None,
            deadline,
            ack,
            a.duration_ns / NS,
            where,
            k,
        )

    def _which_pulse(self, line: str, unit: s.Unit | None) -> tuple[str, int]:
        """Which dose this is, for the diagnostics: (kind of cycle, n-th of its line)."""
        k = self.unit_pulses.get(line, 0)
        self.unit_pulses[line] = k + 1
        if unit is None:
            return ("teardown" if self.in_teardown else "setup"), k
        return (unit.cycle or unit.body.label), k

    async def _close(self, a: Action, deadline: float) -> None:
        bank, ch = self.tool.valves[a.target]
        await bank.set_valve(ch, False)
        ack = self.clock.now()
        p = self.pending.pop(a.target, None)
        if p is None:
            return
        open_err = p.ack_open - p.cmd_open
        width_err = (ack - p.ack_open) - p.duration
        self.timing.add(open_err, width_err)
        if self.tool.config.dose_watch.enabled:
            tol = self.watch.width_tolerance(p.duration, self.tool.config.lines[p.line].min_pulse)
            self.watch.width(p.line, p.chemical, p.duration, ack - p.ack_open, tol)
        rec = PulseRecord(p.unit, p.line, p.chemical, p.cmd_open, p.ack_open, deadline, ack, False)
        self.monitor.closed(rec, p.where, p.k, p.cmd_open)
        self.bus.publish(
            PulseDone(self.now(), p.line, p.chemical, p.unit, open_err, width_err, False)
        )

    async def _hw_pulse(self, a: Action, deadline: float, unit: s.Unit | None) -> None:
        why = self.safety.permit(a)
        if why is not None:
            self.control.hold(why, "permissive")
            await asyncio.Event().wait()
        bank, ch = self.tool.valves[a.target]
        dur = a.duration_ns / NS
        chem = self.tool.config.lines[a.target].chemical
        self.last_dose = self.safety.last_dose = chem
        sent = self.clock.now()
        await bank.pulse(ch, dur)
        ack = self.clock.now()
        # the module reports nothing per pulse: its output's read-back bounds the width
        self.monitor.module_pulse(bank, ch, a.target, dur, sent, ack)
        self.monitor.opened(a.target, ack)
        where, k = self._which_pulse(a.target, unit)
        self.bus.publish(DoseStarted(ack - self.t0, a.target, chem, dur))
        # The module times the width itself: the command latency is known here, and the
        # width is bounded by the output's read-back (PulseMonitor.module_pulse).
        self.timing.hardware += 1
        self.timing.open_errors.append(ack - deadline)
        rec = PulseRecord(
            unit.index if unit else None,
            a.target,
            chem,
            deadline,
            ack,
            deadline + dur,
            ack + dur,
            True,
        )
        self.monitor.closed(rec, where, k, deadline)
        self.bus.publish(PulseDone(self.now(), a.target, chem, rec.unit, ack - deadline, 0.0, True))

    async def _action(self, a: Action, deadline: float, unit: s.Unit | None) -> None:
        k = a.kind
        why = self.safety.permit(a)
        if why is not None:
            self.control.hold(why, "permissive")
            await asyncio.Event().wait()
        try:
            await apply_action(self.tool, a, self.ramp_rates)
        except ActionFailed as exc:
            raise RunAborted(str(exc)) from None
        if k in (ActionKind.SET_TEMPERATURE, ActionKind.SET_FLOW, ActionKind.SET_OZONE):
            self.setpoints[(k, a.target)] = a
        self.safety.note_action(a, self.clock.now())

    # ------------------------------------------------------------------ wait_until

    async def _read_channel(self, channel: str) -> float | None:
        tool = self.tool
        if channel == "pressure":
            if tool.gauge is None:
                return None
            pr = await tool.gauge.read_pressure()
            return pr.pressure_torr
        if channel in tool.temperatures:
            tr = await tool.temperatures[channel].read_temperature()
            assert isinstance(tr, TemperatureReading)
            return tr.pv_c
        if channel in tool.flows:
            fr = await tool.flows[channel].read_flow()
            assert isinstance(fr, FlowReading)
            return fr.flow_sccm
        return None

    async def _await(self, phase: s.Await) -> None:
        start = self.clock.now()
        interval = min(1.0, self.tool.config.safety.poll_interval)
        since: dict[int, float | None] = dict.fromkeys(range(len(phase.conditions)))
        t = start
        while True:
            now = self.clock.now()
            ok = True
            for i, c in enumerate(phase.conditions):
                value = await self._read_channel(c.channel)
                met = _condition_met(c, value)
                if not met:
                    since[i] = None
                    ok = False
                    continue
                first = since[i]
                if first is None:
                    first = since[i] = now
                held = now - first
                if held + 1e-9 < c.hold_ns / NS:
                    ok = False
            if ok:
                self.bus.publish(
                    Message(self.now(), f"{phase.label}: met after {now - start:.0f} s")
                )
                return
            if now - start >= phase.timeout_ns / NS:
                msg = f"{phase.label}: not met within {phase.timeout_ns / NS:g} s"
                if phase.on_timeout == "continue":
                    self.warn("wait_until", msg + "; continuing as the recipe says")
                    return
                raise RunAborted(msg)
            t += interval
            await self.clock.sleep_until(t, precise=False)


def _condition_met(c: s.Condition, value: float | None) -> bool:
    if value is None:
        return False
    if c.relation == "within":
        return c.setpoint is not None and abs(value - c.setpoint) <= c.value
    if c.relation == "below":
        return value < c.value
    return value > c.value


def _cycles_before(schedule: s.Schedule, upto: int) -> int:
    """Loop passes completed by the first ``upto`` units of main."""
    if upto <= 0:
        return 0
    n = 0
    for unit in s.iter_units(schedule.main):
        if unit.index >= upto:
            break
        if unit.loop is not None and unit.last_in_pass:
            n += 1
    return n


def restore_actions(schedule: s.Schedule, upto: int) -> tuple[Action, ...]:
    """Setpoints main had commanded before checkpoint ``upto`` (for resume)."""
    last: dict[tuple[ActionKind, str], Action] = {}
    kinds = (ActionKind.SET_TEMPERATURE, ActionKind.SET_FLOW, ActionKind.SET_OZONE)

    def fold(body: s.Body) -> None:
        for phase in body.phases:
            if isinstance(phase, s.Timed):
                for a in phase.actions:
                    if a.kind in kinds:
                        last[(a.kind, a.target)] = Action(
                            0, a.kind, a.target, a.value, rate=None, loc=a.loc
                        )

    seen_cycles: set[int] = set()
    for unit in s.iter_units(schedule.main):
        if unit.index >= upto:
            break
        if unit.loop is None:
            fold(unit.body)
        elif id(unit.body) not in seen_cycles:
            seen_cycles.add(id(unit.body))
            fold(unit.body)
    return tuple(last.values())
