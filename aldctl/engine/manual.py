"""Manual mode: a session that holds the tool, with the safety monitor, and no recipe.

An operator toggles a valve or changes a setpoint by hand through the operator API's
``set`` verb; every command passes the same permissives and interlocks as a recipe's
action (no dose while the chamber is above its hold limit; no two dose lines open together
unless the tool lists them as a co-dose pair; setpoints inside the configured ranges), and
the safety monitor (limits, device watchdog, valve heartbeat) runs throughout. ``stop`` ends
the session in the safe state; ``abort``, a limit or a signal does so at once. A limit's
hold closes the dose valves the operator opened (as a run's hold closes its doses; one
that does not close ends the session) and refuses new doses until the hold ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aldctl import units
from aldctl.engine.clock import Clock
from aldctl.engine.control import CommandRefused, RunControl
from aldctl.engine.devices import Tool
from aldctl.engine.events import Alarm, EventBus, Message, State, StateChanged, unclosed_lines
from aldctl.engine.journal import Journal, JournalError
from aldctl.engine.safety import Safety, safe_state
from aldctl.recipe.schedule import Action, ActionKind


def _why(exc: BaseException) -> str:
    """An exception in words (a TimeoutError's own text is empty)."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "no answer in time"
    return str(exc) or type(exc).__name__


class ManualSession:
    def __init__(
        self, tool: Tool, clock: Clock, bus: EventBus, control: RunControl, journal: Journal | None
    ) -> None:
        self.tool = tool
        self.clock = clock
        self.bus = bus
        self.control = control
        self.journal = journal
        self.safety = Safety(tool, control, clock, bus, journal)
        self.open_lines: set[str] = set()
        self.safety.opened_by_hand = self.open_lines
        self.t0 = clock.now()
        self.safe_errors: dict[str, str] = {}
        self.outcome = "complete"
        self.reason = "manual session ended by the operator"
        self.bus.listen(self._journal)
        self.bus.listen(self._on_hold)
        self._closing: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        return self.clock.now() - self.t0

    def _journal(self, ev: Any) -> None:
        if self.journal is None:
            return
        with contextlib.suppress(JournalError):
            if isinstance(ev, StateChanged):
                self.journal.event(ev.t, "state", ev.reason, state=str(ev.state))
            elif isinstance(ev, Message):
                self.journal.event(ev.t, "message", ev.text)

    def _on_hold(self, ev: Any) -> None:
        if isinstance(ev, Alarm) and ev.severity == "hold" and self.open_lines:
            task = asyncio.get_running_loop().create_task(self._close_by_hand(ev.message))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close_by_hand(self, reason: str) -> None:
        """The hold's part of a run's: the dose valves open by hand close (bounded, all at
        once); one that does not is the safety monitor's to find (it stays in
        ``open_lines``, which the recover_within reason names)."""
        lines = sorted(self.open_lines)

        async def close(line: str) -> None:
            bank, ch = self.tool.valves[line]
            async with asyncio.timeout(self.tool.config.safety.safe_state_timeout):
                await bank.set_valve(ch, False)

        results = await asyncio.gather(*(close(ln) for ln in lines), return_exceptions=True)
        closed = [ln for ln, r in zip(lines, results, strict=True) if r is None]
        self.open_lines.difference_update(closed)
        failed = [
            f"{ln} ({_why(r)})" for ln, r in zip(lines, results, strict=True) if r is not None
        ]
        text = f"hold ({reason}): closed {', '.join(closed) or 'nothing'}, opened by hand"
        if failed:
            text += f"; could not close {', '.join(failed)}"
        self.bus.publish(Message(self.now(), text))
        if failed:
            # As a run's hold that cannot close its doses: the safe state at once, not a
            # dose valve left feeding the chamber until recover_within.
            with contextlib.suppress(CommandRefused):
                self.control.abort(
                    f"hold could not close {', '.join(failed)}, opened by hand", who="safety"
                )

    def _state(self, state: State, reason: str) -> None:
        prev = self.control.state
        self.control.state = state
        self.bus.publish(StateChanged(self.now(), state, prev, reason))

    async def set(self, target: str, value: Any, who: str) -> str:
        """One manual command; CommandRefused with the reason when an interlock says no."""
        if self.control.state is not State.RUNNING:
            raise CommandRefused(f"manual commands are refused while {self.control.state}")
        kind, _, name = str(target).partition(":")
        cfg = self.tool.config
        if kind == "valve":
            if name not in self.tool.valves:
                raise CommandRefused(f"no line {name!r}; lines: {', '.join(self.tool.valves)}")
            want = str(value).lower() in ("open", "on", "1", "true")
            if want:
                why = self.safety.permit(Action(0, ActionKind.PULSE, name))
                if why is not None:
                    raise CommandRefused(why)
                if self.control.hold_reason is not None:
                    raise CommandRefused(
                        f"no dose during the hold ({self.control.hold_reason}): it ends "
                        f"{cfg.limits.resume_after:g} s after the chamber is back in band"
                    )
                for other in self.open_lines - {name}:
                    if not cfg.codose_allowed(name, other):
                        raise CommandRefused(
                            f"{cfg.lines[name].chemical} and {cfg.lines[other].chemical} "
                            "would meet in the manifold: close "
                            f"{other} first (codose lists the pairs the hardware allows)"
                        )
            bank, ch = self.tool.valves[name]
            await bank.set_valve(ch, want)
            (self.open_lines.add if want else self.open_lines.discard)(name)
            if want and self.control.hold_reason is not None:
                # The hold fired while the open was on the wire: its close did not know
                # this line (not yet in open_lines). Close it as the hold would have.
                await self._close_by_hand(self.control.hold_reason)
                raise CommandRefused(
                    f"the hold ({self.control.hold_reason}) began while {name} opened: closed again"
                )
            msg = f"{who}: valve {name} {'opened' if want else 'closed'}"
        elif kind in ("flow", "temperature"):
            flow = kind == "flow"
            limits = cfg.flow_channels() if flow else cfg.temperature_channels()
            devices: dict[str, Any] = self.tool.flows if flow else self.tool.temperatures
            if name not in devices:
                raise CommandRefused(f"no {kind} channel {name!r}; have {', '.join(limits)}")
            unit = "sccm" if flow else "degC"
            x = units.parse_value(value, units.Kind.FLOW if flow else units.Kind.TEMPERATURE)
            lo, hi = limits[name]
            if not lo <= x <= hi:
                raise CommandRefused(f"{name}: {x:g} {unit} is outside {lo:g}-{hi:g} {unit}")
            if flow:
                await devices[name].set_flow(x)
                self.safety.note_action(Action(0, ActionKind.SET_FLOW, name, x), self.clock.now())
            else:
                await devices[name].set_temperature(x)
            msg = f"{who}: {name} {'flow' if flow else 'setpoint'} {x:g} {unit}"
        else:
            raise CommandRefused(
                f"unknown target {target!r}: valve:LINE, flow:CHANNEL or temperature:HEATER"
            )
        self.bus.publish(Message(self.now(), msg))
        return msg

    async def run(self) -> None:
        """Hold the tool until stop or abort; end in the safe state."""
        loop = asyncio.get_running_loop()
        self._state(State.RUNNING, "manual session: commands through the operator API")
        await self.tool.set_pump_isolation(True)
        await self.tool.set_carrier_shutoff(True)
        tasks = [loop.create_task(self.safety.monitor(), name="safety-monitor")]
        if any(b.watchdog for b in self.tool.banks):
            tasks.append(loop.create_task(self.safety.heartbeat(), name="valve-heartbeat"))
        ending = False

        def died(task: asyncio.Task[None]) -> None:
            if ending or task.cancelled():
                return
            exc = task.exception()
            with contextlib.suppress(CommandRefused):
                self.control.abort(f"task '{task.get_name()}' died: {exc!r}", who="supervisor")

        for t in tasks:
            t.add_done_callback(died)
        try:
            while self.control.abort_reason is None and not self.control.stop_requested:
                self.control.wake.clear()
                await self.control.wake.wait()
                if self.control.hold_cleared:
                    # A limit's hold here only refuses doses (no recipe to suspend): back in
                    # band, it ends, or it would sit out limits.hold_timeout and abort.
                    self.control.release_hold()
        finally:
            ending = True
            self.control.state = State.ABORTING
            errors = await safe_state(self.tool, carrier_sccm=None)
            self.safe_errors = {k: str(v) for k, v in errors.items() if v is not None}
            # a line whose close failed stays in open_lines: what the status reports open
            unclosed = unclosed_lines(self.safe_errors, self.tool.line_devices())
            self.open_lines.intersection_update(unclosed)
            if self.safe_errors:
                detail = "; ".join(f"{k}: {v}" for k, v in self.safe_errors.items())
                self.bus.publish(
                    Alarm(
                        self.now(),
                        "abort",
                        "safe state",
                        f"safe state incomplete: {detail}",
                        unclosed,
                    )
                )
            for t in [*tasks, *self._closing]:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self.control.abort_reason is not None:
            self.outcome, self.reason = "aborted", self.control.abort_reason
        if self.safe_errors:
            # Not a clean end, however it was asked for: the record, the exit status and
            # every console say what is not in its safe state.
            if self.outcome == "complete":
                self.outcome = "failed"
            detail = "; ".join(f"{k}: {v}" for k, v in self.safe_errors.items())
            self.reason += f"; the safe state is incomplete ({detail}): the reactor is NOT safe"
        if self.control.abort_reason is not None:
            self._state(State.ABORTED, self.reason)
        else:
            self._state(State.STOPPED, self.reason)
