"""The operator API: one object the CLI, the console and MQTT commands all call.

It only records requests and wakes the runner; the runner (the executor) decides when they
take effect: pause at the next checkpoint, stop after the current cycle (the current
supercycle for supercycles) and teardown, abort at once. A front end crashing never
touches the run: it only ever held this object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aldctl.engine.events import State


class CommandRefused(Exception):
    """An operator command that makes no sense in the current state."""


class RunControl:
    def __init__(self) -> None:
        self.state = State.IDLE
        self.pause_requested = False
        self.stop_requested = False
        self.abort_reason: str | None = None
        self.hold_reason: str | None = None
        self.hold_source: str = ""
        self.hold_cleared = False
        self._interrupt: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self.on_command: Callable[[str, str, str], None] | None = None
        """Called with (verb, who, result) for every command: the runner journals them."""

    # Events are created lazily, inside the running loop that will wait on them.
    @property
    def interrupt(self) -> asyncio.Event:
        if self._interrupt is None:
            self._interrupt = asyncio.Event()
        return self._interrupt

    @property
    def wake(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    def _log(self, verb: str, who: str, result: str) -> str:
        if self.on_command is not None:
            self.on_command(verb, who, result)
        return result

    # ------------------------------------------------------------------ operator verbs

    def pause(self, who: str = "operator") -> str:
        if self.state not in (State.RUNNING, State.STARTING):
            raise CommandRefused(f"cannot pause while {self.state}")
        self.pause_requested = True
        self.state = State.PAUSING
        return self._log("pause", who, "pausing at the next checkpoint")

    def resume(self, who: str = "operator") -> str:
        if self.state in (State.PAUSING, State.PAUSED):
            self.pause_requested = False
            self.wake.set()
            return self._log("resume", who, "resuming")
        if self.state is State.HELD:
            if not self.hold_cleared:
                raise CommandRefused(f"still held: {self.hold_reason}")
            self.wake.set()
            return self._log("resume", who, "resuming from hold")
        raise CommandRefused(f"cannot resume while {self.state}")

    def stop(self, who: str = "operator") -> str:
        if self.state.terminal or self.state in (State.IDLE, State.ABORTING):
            raise CommandRefused(f"cannot stop while {self.state}")
        self.stop_requested = True
        self.pause_requested = False
        self.wake.set()
        return self._log("stop", who, "stopping after the current cycle, then teardown")

    def abort(self, reason: str = "operator abort", who: str = "operator") -> str:
        if self.state.terminal or self.state is State.IDLE:
            raise CommandRefused(f"cannot abort while {self.state}")
        if self.abort_reason is None:
            self.abort_reason = reason
        self.interrupt.set()
        self.wake.set()
        return self._log("abort", who, f"aborting: {reason}")

    def clear(self, who: str = "operator") -> str:
        if self.state is not State.ABORTED:
            raise CommandRefused(f"nothing to clear while {self.state}")
        self.state = State.IDLE
        self.abort_reason = None
        return self._log("clear", who, "abort cleared")

    # ------------------------------------------------------------------ safety side

    def hold(self, reason: str, source: str) -> None:
        """Automatic hold: a limit left its band (called by the safety monitor)."""
        if self.hold_reason is not None or self.abort_reason is not None:
            return
        self.hold_reason = reason
        self.hold_source = source
        self.hold_cleared = False
        self.interrupt.set()

    def release_hold(self) -> None:
        self.hold_reason = None
        self.hold_source = ""
        self.hold_cleared = False
        self.interrupt.clear()
