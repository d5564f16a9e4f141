"""Clocks: the engine sleeps to absolute deadlines on an injected clock.

* :class:`RealClock` — wall-clock runs. ``asyncio.sleep`` to shortly before the deadline,
  then a short spin on the monotonic clock: asyncio alone oversleeps by ~0.5 ms, the spin
  brings the scheduling error to microseconds on an idle machine. Under load the operating
  system decides; :func:`request_realtime` asks Linux for ``SCHED_FIFO`` where the process is
  allowed to have it.
* :class:`VirtualClock` — the same engine code in virtual time, on a
  :class:`VirtualTimeLoop`: an asyncio event loop whose ``time()`` is virtual and which, when
  nothing is ready, jumps straight to the earliest timer instead of waiting for it. A
  five-hour recipe then runs as fast as the Python doing the work.

Why our own loop rather than ``looptime``: both fast-forward asyncio, but looptime drives a
real loop with no-op cycles per hop; ``aldctl bench clock`` measures the two on the same
timer workload (see README for the figures on this machine). The loop here is ~40 lines: a
selector wrapper that turns "block for ``timeout``" into "advance virtual time by
``timeout``" whenever no file descriptor is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

SPIN_S = 0.0015
"""RealClock wakes from asyncio this long before a deadline and spins the rest."""


class Clock(Protocol):
    realtime: bool

    def now(self) -> float:
        """Seconds on the engine's time base (the event loop's clock)."""
        ...

    async def sleep_until(self, deadline: float) -> float:
        """Sleep until ``deadline`` (clock seconds); return the time actually woken."""
        ...


@dataclass
class LatenessStats:
    """How late ``sleep_until`` woke, in seconds (RealClock only)."""

    samples: list[float] = field(default_factory=list)
    limit: int = 100_000

    def add(self, late_s: float) -> None:
        if len(self.samples) < self.limit:
            self.samples.append(late_s)

    def summary_ms(self) -> dict[str, float]:
        if not self.samples:
            return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
        xs = sorted(abs(x) for x in self.samples)
        n = len(xs)
        return {
            "n": n,
            "p50": xs[n // 2] * 1e3,
            "p99": xs[min(n - 1, int(n * 0.99))] * 1e3,
            "max": xs[-1] * 1e3,
        }


class RealClock:
    realtime = True

    def __init__(self, spin_s: float = SPIN_S) -> None:
        self.spin_s = spin_s
        self.lateness = LatenessStats()

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> float:
        # asyncio's loop clock is time.monotonic(), so deadlines from loop.time() and from
        # now() share one time base.
        remaining = deadline - time.monotonic()
        if remaining > self.spin_s:
            await asyncio.sleep(remaining - self.spin_s)
        while (now := time.monotonic()) < deadline:
            pass
        self.lateness.add(now - deadline)
        return now


class VirtualClock:
    realtime = False

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, deadline: float) -> float:
        loop = asyncio.get_running_loop()
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        return loop.time()


class _VirtualSelector(selectors.BaseSelector):
    """Delegates to a real selector, but never blocks while timers are pending."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:  # nothing scheduled: only real I/O can wake us
            return self._real.select(None)
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop in virtual time: idle waits cost nothing.

    File descriptors still work (they are polled without blocking), so subprocess pipes
    and the self-pipe behave; but a coroutine waiting on real I/O while timers are pending
    sees virtual time run ahead. The in-process simulator does no real I/O.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = start
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds


def run_virtual(main: Coroutine[Any, Any, T], *, debug: bool = False) -> T:
    """``asyncio.run`` on a :class:`VirtualTimeLoop`."""
    with asyncio.Runner(debug=debug, loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


def run_real(main: Coroutine[Any, Any, T], *, debug: bool = False) -> T:
    with asyncio.Runner(debug=debug, loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(main)


@dataclass(frozen=True)
class RealtimeStatus:
    granted: bool
    detail: str


def request_realtime(priority: int = 10) -> RealtimeStatus:
    """Ask Linux for SCHED_FIFO; say why not where it is refused or unavailable."""
    if not hasattr(os, "sched_setscheduler"):
        return RealtimeStatus(False, "this platform has no sched_setscheduler")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        return RealtimeStatus(
            False,
            "SCHED_FIFO not permitted (run as root, grant CAP_SYS_NICE, or set "
            "'rtprio' in /etc/security/limits.conf); pulse timing depends on system load",
        )
    except OSError as exc:
        return RealtimeStatus(False, f"SCHED_FIFO refused: {exc.strerror}")
    return RealtimeStatus(True, f"SCHED_FIFO priority {priority}")


def release_realtime() -> None:
    if hasattr(os, "sched_setscheduler"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


async def gather_bounded(
    calls: Mapping[str, Callable[[], Awaitable[None]]], timeout_s: float
) -> dict[str, BaseException | None]:
    """Run ``calls`` concurrently with one overall timeout; map name -> error (or None)."""

    async def one(fn: Callable[[], Awaitable[None]]) -> BaseException | None:
        try:
            await fn()
        except Exception as exc:
            return exc
        return None

    loop = asyncio.get_running_loop()
    tasks = {name: loop.create_task(one(fn), name=f"bounded:{name}") for name, fn in calls.items()}
    _done, pending = await asyncio.wait(tasks.values(), timeout=timeout_s)
    for t in pending:
        t.cancel()
    out: dict[str, BaseException | None] = {}
    for name, t in tasks.items():
        if t in pending:
            out[name] = TimeoutError(f"no answer within {timeout_s:g} s")
        else:
            out[name] = t.result()
    if pending:
        await asyncio.wait(pending)
    return out
