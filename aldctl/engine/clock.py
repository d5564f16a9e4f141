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
import bisect
import collections
import contextlib
import contextvars
import dataclasses
import gc
import heapq
import logging
import math
import os
import selectors
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

T = TypeVar("T")

SPIN_S = 0.003
"""RealClock wakes from asyncio this long before a deadline and spins the rest."""
EDGE_GUARD_S = SPIN_S + 0.002
"""Background sleepers (``precise=False``) that wake this close before a valve edge wait
until it is past."""
EDGE_AFTER_S = 0.0002
WARM_S = 0.00015
"""A precise sleeper's ``warm`` runs this long before its deadline. After the 15-100 ms
between valve edges, which the model's catch-up, the polls and other processes fill, the
code of an edge runs from cold caches: the in-process module's write took 30-50 us after
a sleep (2.7 us in a loop), the engine's path from the deadline to the valve's timestamp
~60 us at the median. Running it once without effects just before makes it ~20 us
shorter (`docs/benchmarks.md`)."""
STALL_MIN_S = 0.00005
"""A gap between two consecutive clock reads of a spin longer than this is a stall: the
thread was not running (a spin iteration takes ~0.1 us). Figures: ``docs/benchmarks.md``."""
STALL_HISTORY = 1024
""":class:`RealClock` keeps this many of its most recent stalled sleeps (~100 kB at most)."""
GC_SLACK_S = 0.02
"""Inside :func:`collect_in_slack`, garbage is collected only this far from any deadline."""
GC_YOUNG = 700
"""Tracked allocations before a young collection is due (CPython's own default)."""
GC_OVERDUE = 200_000
"""With no slack for this long (back-to-back short steps) collect anyway: memory is bounded."""
REAL_IO_POLL_S = 0.0005
"""A virtual-time loop with no descriptor but its self-pipe polls it at most this often
(wall seconds)."""
_PURGE_MIN = 100
_PURGE_FRACTION = 0.5
"""As asyncio: rebuild the timer heap once over half of 100+ timers are cancelled ones."""
_MAX_SELECT_S = 24 * 3600.0
"""As asyncio: no single wait longer than a day."""


class Clock(Protocol):
    realtime: bool

    def freeze(self) -> None:
        """Stop time while the run is paused (virtual time only; a no-op on the wall)."""
        ...

    def thaw(self) -> None: ...

    def now(self) -> float:
        """Seconds on the engine's time base (the event loop's clock)."""
        ...

    async def sleep_until(
        self,
        deadline: float,
        *,
        precise: bool = True,
        warm: Callable[[], object] | None = None,
    ) -> float:
        """Sleep until ``deadline`` (clock seconds); return the time actually woken.

        ``precise=False`` for background work (polls, heartbeats, monitors) that can be a
        millisecond late: a real clock then neither spins for it nor lets it hold up a
        precise sleeper (a poller spinning toward its own deadline blocks the loop, and
        with it a valve edge due at the same moment).

        ``warm``: called just before a precise deadline (a real clock only) to run, without
        effects, the code the caller runs at the deadline (see :data:`WARM_S`)."""
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


@dataclass(frozen=True, slots=True)
class Stall:
    """A precise sleep in which the clock saw something: the thread not running while it
    spun, a late wake-up, or a late call.

    ``kind`` "spin": while it spun toward its deadline, two consecutive reads of the
    monotonic clock were ``length_s`` apart (the longest of the sleep's ``gaps`` gaps over
    the threshold): the process was descheduled, or the vCPU was (hypervisor steal, host
    interrupts); nothing of ours runs in a spin. The edge's warm-up (tens of us, just
    before the deadline) is not a spin: a stall inside it is not seen.

    ``kind`` "call": the sleep was called ``length_s`` after its deadline (the code before
    it was late: the clock cannot say why).

    ``kind`` "wake": the event loop woke the sleeper ``length_s`` after its deadline, too
    late to spin at all: the thread did not run, or another callback held the loop.
    ``idle_s`` tells them apart: how much of the delay past the wake-up's due time the
    thread provably did not run (the delay minus the thread's CPU time over the whole
    sleep, a lower bound). A wake as late as its idle time is the machine's.
    """

    kind: str
    deadline: float
    """The sleep's deadline (clock seconds, as passed to ``sleep_until``)."""
    at: float
    """When the longest gap began (clock seconds): the last reading before it."""
    length_s: float
    gaps: int
    """Gaps over the threshold in this sleep (1 for a late wake)."""
    covers_deadline: bool
    """The thread was not running when the deadline came: the gap that ended the spin
    began before it and was over the threshold. The sleep returned late by about
    ``at + length_s - deadline``."""
    late_s: float
    """How late the sleep returned (its return minus the deadline)."""
    idle_s: float = 0.0
    """A late wake: of its delay, the part the thread did not run (see above)."""

    @property
    def machine(self) -> bool:
        """The thread did not run for as long as this made the sleep late: the machine's
        (a stall while spinning, or a late wake that the thread spent off the CPU)."""
        return self.kind == "spin" or self.idle_s >= max(self.late_s, STALL_MIN_S)


@dataclass(frozen=True)
class StallReport:
    """What :meth:`RealClock.stall_report` says: the host's stalls seen so far."""

    threshold_s: float
    spins: int
    """Precise sleeps that spun toward their deadline."""
    stalls: int
    """Gaps over ``threshold_s`` while spinning (several can fall in one sleep)."""
    longest_s: float
    """The longest of them (0.0 if none)."""
    total_s: float
    """Their sum."""
    stalled_sleeps: int
    """Precise sleeps with at least one such gap."""
    deadlines_covered: int
    """Precise sleeps whose deadline fell inside a stall (each returned late)."""
    late_wakes: int
    """Precise sleeps the event loop woke after their deadline."""
    idle_late_wakes: int
    """Of those, the ones whose delay the thread spent off the CPU (the machine's)."""
    late_calls: int
    """Precise sleeps called after their deadline: what ran before was late (the engine's
    code, or the machine stalling it there, where the clock does not look)."""
    longest_late_wake_s: float
    recent: tuple[Stall, ...]
    """The most recent stalled sleeps, late wakes and late calls, oldest first (at most
    :data:`STALL_HISTORY` by default)."""
    dropped: int
    """Older records no longer in ``recent``."""

    def since(self, t0: float) -> StallReport:
        """The same with the records' times from ``t0`` (clock seconds) on: a run's
        report on its own time base, where its events' ``t`` are."""
        shifted = tuple(
            dataclasses.replace(r, deadline=r.deadline - t0, at=r.at - t0) for r in self.recent
        )
        return dataclasses.replace(self, recent=shifted)

    def summary(self) -> dict[str, Any]:
        """The counters as JSON-ready figures in milliseconds (no records)."""
        return {
            "threshold_ms": self.threshold_s * 1e3,
            "spins": self.spins,
            "stalls": self.stalls,
            "longest_ms": round(self.longest_s * 1e3, 4),
            "total_ms": round(self.total_s * 1e3, 4),
            "stalled_sleeps": self.stalled_sleeps,
            "deadlines_covered": self.deadlines_covered,
            "late_wakes": self.late_wakes,
            "idle_late_wakes": self.idle_late_wakes,
            "late_calls": self.late_calls,
            "longest_late_wake_ms": round(self.longest_late_wake_s * 1e3, 4),
        }


class RealClock:
    """Wall-clock deadlines: sleep, then spin the last ``spin_s``.

    Inside :func:`collect_in_slack` the garbage collector runs only from here, and only
    while every task sleeping on this clock has at least ``GC_SLACK_S`` to go: a collection
    (~1-2 ms for the young generations under polling, measured) then never lands just
    before a valve edge, where it made the edge that late.

    While it spins it also watches for the machine not running it: the largest gap
    between two consecutive clock reads, a subtraction and a compare per iteration (see
    :class:`Stall`, :meth:`stall_report`). A late valve edge with such a stall at it was the
    machine's, not the engine's.
    """

    realtime = True

    def __init__(
        self,
        spin_s: float = SPIN_S,
        *,
        stall_threshold_s: float = STALL_MIN_S,
        stall_history: int = STALL_HISTORY,
    ) -> None:
        self.spin_s = spin_s
        self.stall_threshold_s = stall_threshold_s
        self.lateness = LatenessStats()
        self.collections = 0
        self._sleeping: list[float] = []  # deadlines tasks are sleeping toward, sorted
        self._recent: collections.deque[Stall] = collections.deque(maxlen=stall_history)
        self._records = 0
        self._spins = 0
        self._stalls = 0
        self._longest = 0.0
        self._total = 0.0
        self._stalled_sleeps = 0
        self._covered = 0
        self._late_wakes = 0
        self._idle_wakes = 0
        self._late_calls = 0
        self._longest_wake = 0.0
        self._unfiled: list[tuple[float, float, list[tuple[float, float]] | float | None]] = []
        """(deadline, return, gaps; for a late wake its idle time; None for a late call) of
        stalled sleeps not yet counted: bookkeeping waits until the edge is out."""
        _CLOCKS.add(self)

    def now(self) -> float:
        return time.monotonic()

    def freeze(self) -> None:
        pass

    def thaw(self) -> None:
        pass

    async def sleep_until(
        self,
        deadline: float,
        *,
        precise: bool = True,
        warm: Callable[[], object] | None = None,
    ) -> float:
        # asyncio's loop clock is time.monotonic(), so deadlines from loop.time() and from
        # now() share one time base.
        if self._unfiled:
            self._file()
        remaining = deadline - time.monotonic()
        if not gc.isenabled():
            self._collect_if_slack(remaining if precise else math.inf, precise)
            remaining = deadline - time.monotonic()
        if remaining <= 0 and precise:  # called after its time: nothing to sleep or spin
            now = time.monotonic()
            if now - deadline > self.stall_threshold_s:
                self._unfiled.append((deadline, now, None))
            self.lateness.add(now - deadline)
            return now
        if not precise:
            if remaining > 0:
                await asyncio.sleep(remaining)
            # Background work (a poll, a heartbeat, a pulse reading) that would start just
            # before a valve edge waits until the edge is past: a few hundred us of device
            # reads there would hold up the edge's wake-up.
            for _ in range(4):  # edges 5 ms apart at most twice in a row; bounded anyway
                edge = slack_s()
                if not 0.0 <= edge < EDGE_GUARD_S:
                    break
                await asyncio.sleep(edge + EDGE_AFTER_S)
            return time.monotonic()
        if remaining > self.spin_s:
            bisect.insort(self._sleeping, deadline)
            cpu = time.thread_time()  # (one system call, milliseconds before the edge)
            try:
                await asyncio.sleep(remaining - self.spin_s)
            finally:
                self._sleeping.remove(deadline)
            woke = time.monotonic()
            if woke >= deadline:  # too late to spin: the edge is late already
                # Of the delay past the wake-up's due time, what the thread's CPU time over
                # the whole sleep (the loop's other callbacks) cannot cover, it did not run.
                idle = woke - (deadline - self.spin_s) - (time.thread_time() - cpu)
                self._unfiled.append((deadline, woke, max(0.0, idle)))
                self.lateness.add(woke - deadline)
                return woke
        gaps: list[tuple[float, float]] = []
        now = time.monotonic()
        if warm is not None and now < deadline - WARM_S:
            # Nothing else runs while this spins, so what warm() reads is what the edge
            # will. Woken later than that, the edge goes first: warming would delay it.
            self._spin(deadline - WARM_S, now, gaps)
            with contextlib.suppress(Exception):  # a warm-up never fails an edge
                warm()
            # warm() is not a spin: a stall inside it (tens of us of the 3 ms) is not seen.
            # Its time off the CPU would need the thread's CPU clock, a system call each
            # side, and one just before the edge made the edge's own path ~3.5 us slower.
            now = time.monotonic()
        now = self._spin(deadline, now, gaps)
        self._spins += 1
        if gaps:  # filed at the next sleep: the edge due now goes first
            self._unfiled.append((deadline, now, gaps))
        self.lateness.add(now - deadline)
        return now

    def _spin(self, until: float, prev: float, gaps: list[tuple[float, float]]) -> float:
        """Spin until the monotonic clock reads ``until`` or later; return that reading.
        Each gap over the threshold between two reads (``prev``: the one before the first)
        goes to ``gaps`` (start, length), the one that crosses ``until`` too."""
        mono = time.monotonic
        threshold = self.stall_threshold_s
        while (now := mono()) < until:
            if now - prev > threshold:  # rare: the thread was not running
                gaps.append((prev, now - prev))
            prev = now
        if now - prev > threshold:
            gaps.append((prev, now - prev))
        return now

    def _file(self) -> None:
        """Count and keep the stalls of the sleeps since the last call."""
        for deadline, now, gaps in self._unfiled:
            if gaps is None:  # the caller came after the deadline
                self._late_calls += 1
                stall = Stall("call", deadline, deadline, now - deadline, 0, False, now - deadline)
            elif isinstance(gaps, float):  # woken by the event loop after the deadline
                late = now - deadline
                self._late_wakes += 1
                self._longest_wake = max(self._longest_wake, late)
                stall = Stall("wake", deadline, deadline, late, 1, True, late, gaps)
                self._idle_wakes += stall.machine
            else:
                start, length = max(gaps, key=lambda g: g[1])
                last_start, last_len = gaps[-1]
                # (the gap that ended the spin ends at ``now``, past the deadline; 1 ns
                # for the rounding of start + length)
                covers = last_start < deadline <= last_start + last_len + 1e-9
                self._stalls += len(gaps)
                self._stalled_sleeps += 1
                self._covered += covers
                self._total += sum(g[1] for g in gaps)
                self._longest = max(self._longest, length)
                stall = Stall("spin", deadline, start, length, len(gaps), covers, now - deadline)
            self._recent.append(stall)
            self._records += 1
        self._unfiled.clear()

    def stall_report(self) -> StallReport:
        """The stalls seen while spinning to precise deadlines since this clock was made
        (counters over the whole time, the most recent sleeps with their gaps)."""
        self._file()
        recent = tuple(self._recent)
        return StallReport(
            threshold_s=self.stall_threshold_s,
            spins=self._spins,
            stalls=self._stalls,
            longest_s=self._longest,
            total_s=self._total,
            stalled_sleeps=self._stalled_sleeps,
            deadlines_covered=self._covered,
            late_wakes=self._late_wakes,
            idle_late_wakes=self._idle_wakes,
            late_calls=self._late_calls,
            longest_late_wake_s=self._longest_wake,
            recent=recent,
            dropped=self._records - len(recent),
        )

    def _collect_if_slack(self, remaining: float, precise: bool) -> None:
        young = gc.get_count()[0]
        # Precise sleepers (the step executor) collect in their own slack, right after an
        # edge when the next is far; background sleepers only when garbage has piled up
        # (long setups, where the executor sleeps coarsely too) and no edge is near.
        if young < (GC_YOUNG if precise else GC_OVERDUE // 10):
            return
        earliest = self._sleeping[0] - time.monotonic() if self._sleeping else math.inf
        if min(earliest, remaining) < GC_SLACK_S and young < GC_OVERDUE:
            return
        collect_if_due(0)
        self.collections += 1


_CLOCKS: weakref.WeakSet[RealClock] = weakref.WeakSet()


def slack_s() -> float:
    """Seconds until the earliest deadline a task of this process sleeps toward precisely
    (a valve edge), ``inf`` when there is none. Background work that shares the run's loop
    (telemetry) starts a step only where this is long enough, as the collector does."""
    now = time.monotonic()
    return min((c._sleeping[0] - now for c in _CLOCKS if c._sleeping), default=math.inf)


def collect_if_due(young: int = GC_YOUNG) -> bool:
    """Collect the generation the collector's own thresholds would pick, once ``young``
    tracked allocations are pending (for code that has switched automatic collection off
    to choose the moment itself)."""
    count0, count1, count2 = gc.get_count()
    if count0 < young:
        return False
    gc.collect(2 if count2 >= 10 else 1 if count1 >= 10 else 0)
    return True


@contextlib.contextmanager
def collect_in_slack() -> Iterator[None]:
    """Freeze the heap built so far (:func:`freeze_heap`) and let :class:`RealClock`
    collect garbage only where no deadline is near; the collector's own timing returns on
    exit. For real-time runs, whose long-lived objects all exist by then."""
    freeze_heap()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class VirtualClock:
    realtime = False

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def freeze(self) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(loop, VirtualTimeLoop):
            loop.frozen += 1

    def thaw(self) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(loop, VirtualTimeLoop) and loop.frozen > 0:
            loop.frozen -= 1

    async def sleep_until(
        self,
        deadline: float,
        *,
        precise: bool = True,
        warm: Callable[[], object] | None = None,
    ) -> float:
        # (``warm`` is for cold caches on the wall clock: nothing to warm in virtual time)
        loop = asyncio.get_running_loop()
        now = loop.time()
        delay = deadline - now
        if delay > 0:
            # asyncio.sleep(delay) inlined (a virtual run sleeps ~10^5 times): its timer at
            # now + delay, the same float as before (not ``deadline``, which can differ in
            # the last bit and so reorder timers due together).
            fut = loop.create_future()
            timer = loop.call_at(now + delay, _wake, fut)
            try:
                await fut
            except BaseException:  # cancelled while asleep: the timer goes too
                timer.cancel()
                raise
        return loop.time()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():  # cancelled meanwhile
        fut.set_result(None)


class _VirtualSelector(selectors.BaseSelector):
    """Delegates to a real selector, but never blocks while timers are pending."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop
        self._next_poll = 0.0
        self._registered = 0
        """Descriptors registered (kept here: asking the real selector's map for its length
        on every iteration cost three Python calls)."""

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = self._real.register(fileobj, events, data)
        self._registered = len(self._real.get_map())
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key = self._real.unregister(fileobj)
        self._registered = len(self._real.get_map())
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = self._real.modify(fileobj, events, data)
        self._registered = len(self._real.get_map())
        return key

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # With nothing registered but the loop's own self-pipe (signals, other threads'
        # call_soon_threadsafe), real descriptors are polled at most every REAL_IO_POLL_S
        # of wall time, not on every iteration: a run of hours wakes ~10^5 times, and an
        # epoll call per wake-up was a tenth of the loop's cost. A loop that serves sockets
        # or pipes (the operator API of a console-driven run) polls them every iteration.
        now = time.perf_counter()
        if now >= self._next_poll or self._registered > 1:
            self._next_poll = now + REAL_IO_POLL_S
            ready = self._real.select(0)
            if ready:
                return ready
        if timeout == 0:  # callbacks are ready: never block
            return []
        if timeout is None or self._loop.frozen:
            # Nothing scheduled, or time stands still (a paused run): only real I/O (a key,
            # a signal, another thread's call_soon_threadsafe) can wake us.
            return self._real.select(None)
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()
        self._registered = 0

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


_Handle = asyncio.Handle
_TimerHandle = asyncio.TimerHandle
_new_handle = _Handle.__new__
_new_timer = _TimerHandle.__new__
_BUILD_HANDLES = set(_Handle.__slots__) == {
    "_callback", "_args", "_cancelled", "_loop", "_source_traceback", "_repr", "__weakref__",
    "_context",
} and set(_TimerHandle.__slots__) == {"_scheduled", "_when"}  # fmt: skip
"""The handles have the fields :class:`VirtualTimeLoop` sets itself (CPython 3.11-3.13):
on a Python whose handles differ, it builds them the way asyncio does."""


class _Due(float):
    """A timer's deadline in :class:`VirtualTimeLoop`'s heap, carrying the timer."""

    __slots__ = ("handle",)
    handle: asyncio.TimerHandle


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop in virtual time: idle waits cost nothing.

    File descriptors still work (they are polled without blocking), so subprocess pipes
    and the self-pipe behave; but a coroutine waiting on real I/O while timers are pending
    sees virtual time run ahead. The in-process simulator does no real I/O.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = start
        self.frozen = 0
        """While positive, idle waits block on real I/O and virtual time does not move."""
        self._timers: list[_Due] = []
        """Pending timers (a heap): see :meth:`call_at`."""
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds

    # Timers. Every wake-up of a virtual run is a timer (an engine run of hours sets ~10^5),
    # so their bookkeeping is much of what the loop itself costs: asyncio's heap orders
    # TimerHandle objects through a Python ``__lt__`` (several calls a push and a pop), and
    # polls the selector on every iteration. Here the heap holds each deadline as a float
    # (compared in C) carrying its handle: the same comparisons as asyncio's, so the same
    # order, ties included (timers due at the same instant run in the order asyncio's heap
    # gives them: a run's results do not change). The rest is asyncio's own iteration, step
    # for step: cancelled timers leave the heap the same way, ready callbacks run once per
    # iteration, the selector decides how to wait (here: jump, see _VirtualSelector).

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        base: Any = self  # asyncio's private helpers, as BaseEventLoop.call_at uses them
        if when is None:
            raise TypeError("when cannot be None")
        if base._closed:
            raise RuntimeError("Event loop is closed")
        timer: Any
        if base._debug or not _BUILD_HANDLES:
            base._check_thread()
            base._check_callback(callback, "call_at")
            timer = asyncio.TimerHandle(when, callback, args, self, context)
            if timer._source_traceback:
                del timer._source_traceback[-1]
        else:
            # TimerHandle(...) with its fields set here: what its __init__ sets outside
            # debug mode, without the four Python frames it takes to get there
            timer = _new_timer(_TimerHandle)
            timer._context = contextvars.copy_context() if context is None else context
            timer._loop = self
            timer._callback = callback
            timer._args = args
            timer._cancelled = False
            timer._repr = None
            timer._source_traceback = None
            timer._when = when
        due = _Due(when)
        due.handle = timer
        heapq.heappush(self._timers, due)
        timer._scheduled = True
        return cast(asyncio.TimerHandle, timer)

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        # A virtual run schedules ~10^5 of these (each sleeper's wake-up): asyncio's
        # call_soon, its _call_soon and Handle(...) in one frame, outside debug mode.
        base: Any = self
        if base._debug or not _BUILD_HANDLES:
            return super().call_soon(callback, *args, context=context)
        if base._closed:
            raise RuntimeError("Event loop is closed")
        h: Any = _new_handle(_Handle)
        h._context = contextvars.copy_context() if context is None else context
        h._loop = self
        h._callback = callback
        h._args = args
        h._cancelled = False
        h._repr = None
        h._source_traceback = None
        base._ready.append(h)
        return cast(asyncio.Handle, h)

    def _run_once(self) -> None:
        base: Any = self
        timers = self._timers
        ready: collections.deque[Any] = base._ready
        n = len(timers)
        if n > _PURGE_MIN and base._timer_cancelled_count > n * _PURGE_FRACTION:
            live = []
            for due in timers:
                h: Any = due.handle
                if h._cancelled:
                    h._scheduled = False
                else:
                    live.append(due)
            heapq.heapify(live)
            self._timers = timers = live
            base._timer_cancelled_count = 0
        else:
            while timers and timers[0].handle.cancelled():
                base._timer_cancelled_count -= 1
                h = heapq.heappop(timers).handle
                h._scheduled = False
        timeout: float | None = None
        if ready or base._stopping:
            timeout = 0
        elif timers:
            timeout = min(max(0, timers[0] - self._virtual_now), _MAX_SELECT_S)
        events = base._selector.select(timeout)
        if events:  # (asyncio's _process_events has nothing to do for none)
            base._process_events(events)
        end = self._virtual_now + base._clock_resolution
        while timers and timers[0] < end:
            h = heapq.heappop(timers).handle
            h._scheduled = False
            ready.append(h)
        debug = base._debug
        for _ in range(len(ready)):
            h = ready.popleft()
            if h._cancelled:
                continue
            if debug:
                self._run_debug(h)
            else:
                h._run()

    def _run_debug(self, handle: Any) -> None:
        # As asyncio's debug mode: name callbacks that hold the loop (in wall time here,
        # since a virtual clock does not move while a callback runs).
        base: Any = self
        try:
            base._current_handle = handle
            t0 = time.perf_counter()
            handle._run()
            dt = time.perf_counter() - t0
            if dt >= self.slow_callback_duration:
                logging.getLogger("asyncio").warning("Executing %r took %.3f seconds", handle, dt)
        finally:
            base._current_handle = None

    def close(self) -> None:
        super().close()
        self._timers.clear()


def run_virtual(main: Coroutine[Any, Any, T], *, debug: bool = False) -> T:
    """``asyncio.run`` on a :class:`VirtualTimeLoop`."""
    with asyncio.Runner(debug=debug, loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


def run_real(main: Coroutine[Any, Any, T], *, debug: bool = False) -> T:
    with asyncio.Runner(debug=debug, loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(main)


def freeze_heap() -> None:
    """Collect once, then leave everything alive now out of every later collection.

    Called when a real-time process has built its long-lived objects (tool, schedule,
    emulators): without it a full collection walks the whole heap inside the event loop
    (15 ms measured here, mid-run), and the young collections that the pollers' garbage
    triggers every few hundred ms take ~1 ms, each one a late valve edge if it falls there.
    """
    gc.collect()
    gc.freeze()


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
