"""Typed run events and the bus that delivers them.

Two kinds of consumers:

* listeners (the journal, the CLI progress bar) are called inline, in order, for every
  event: nothing is dropped. A listener that raises stops the run (the journal must not
  silently lose records).
* subscribers (telemetry, the operator console) each get a bounded queue; when a slow
  subscriber's queue is full the oldest event is dropped and counted, so a stuck front end
  never slows the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class State(StrEnum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    HELD = "held"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ABORTING = "aborting"
    ABORTED = "aborted"
    COMPLETE = "complete"
    FAULTED = "faulted"

    @property
    def terminal(self) -> bool:
        return self in (State.STOPPED, State.ABORTED, State.COMPLETE, State.FAULTED)


@dataclass(frozen=True, slots=True)
class StateChanged:
    t: float
    state: State
    previous: State
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UnitStarted:
    t: float
    index: int
    total: int
    label: str
    cycle: str | None
    rep: int
    passes: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class UnitDone:
    t: float
    index: int
    total: int


@dataclass(frozen=True, slots=True)
class StepStarted:
    t: float
    label: str
    phase: str
    """"setup", "main" or "teardown"."""
    duration_s: float | None = None
    """How long the step lasts (None for a wait on a condition)."""


@dataclass(frozen=True, slots=True)
class DoseStarted:
    """A dose valve opened for ``duration_s`` (consoles highlight the line meanwhile)."""

    t: float
    line: str
    chemical: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class PulseDone:
    t: float
    line: str
    chemical: str
    unit: int | None
    open_error_s: float
    width_error_s: float
    hardware: bool


@dataclass(frozen=True, slots=True)
class Alarm:
    t: float
    severity: str
    """"warning", "alarm" (needs a person: a dose with no response; the run goes on),
    "hold" or "abort"."""
    source: str
    message: str
    lines: tuple[str, ...] = ()
    """Dose lines this alarm reports not known to be closed (a close that failed, a
    read-back that found them open or could not read them): a display must not draw them
    closed, whatever the run's state."""


def unclosed_lines(
    problems: Mapping[str, object], tool_lines: Mapping[str, str]
) -> tuple[str, ...]:
    """The dose lines among safe-state or read-back problems (keys ``valve LINE``, or a
    valve module's device name ``tool_lines`` maps each line to: one that could not be read
    leaves every line on it unknown)."""
    out = {k.removeprefix("valve ") for k in problems if k.startswith("valve ")}
    out |= {line for line, device in tool_lines.items() if device in problems}
    return tuple(sorted(out))


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    values: dict[str, float | None]


@dataclass(frozen=True, slots=True)
class Message:
    t: float
    text: str


@dataclass(frozen=True, slots=True)
class ReadBack:
    """A read-back of the safe state ended (after teardown or an abort): what it found is
    what a display shows from now on. ``unclosed``: the dose lines still not known closed
    (it found them open, or could not read their module); lines an earlier alarm named and
    that it read closed are closed."""

    t: float
    verified: bool
    unclosed: tuple[str, ...]


Event = (
    StateChanged
    | UnitStarted
    | UnitDone
    | StepStarted
    | DoseStarted
    | PulseDone
    | Alarm
    | Sample
    | Message
    | ReadBack
)


@dataclass
class Subscription:
    queue: asyncio.Queue[Event]
    dropped: int = 0

    async def get(self) -> Event:
        return await self.queue.get()


@dataclass
class EventBus:
    """Synchronous listeners (journal, displays) and bounded subscriptions (drop-oldest).

    A listener that raises never reaches the publisher: the run must not depend on a
    display or a subscriber. Its error goes to ``on_error`` (the runner aborts when the
    journal is the one failing) and is counted in ``listener_errors``.
    """

    listeners: list[Callable[[Event], None]] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    on_error: Callable[[Callable[[Event], None], Exception], None] | None = None
    listener_errors: int = 0

    def listen(self, fn: Callable[[Event], None]) -> None:
        self.listeners.append(fn)

    def subscribe(self, maxsize: int = 1000) -> Subscription:
        sub = Subscription(asyncio.Queue(maxsize=maxsize))
        self.subscriptions.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subscriptions:
            self.subscriptions.remove(sub)

    def publish(self, event: Event) -> None:
        for fn in self.listeners:
            try:
                fn(event)
            except Exception as exc:
                self.listener_errors += 1
                if self.on_error is not None:
                    self.on_error(fn, exc)
        for sub in self.subscriptions:
            if sub.queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):  # a consumer raced us
                    sub.queue.get_nowait()
                sub.dropped += 1
            sub.queue.put_nowait(event)

    def dropped(self) -> int:
        return sum(s.dropped for s in self.subscriptions)


def describe(event: Any) -> str:
    return type(event).__name__
