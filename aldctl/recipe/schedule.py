"""The Schedule: a compiled recipe as plain data.

The planner, ``aldctl simulate``, the run engine and (later) the operator console all read
the same object. Its shape:

* ``setup`` and ``teardown``: bodies run once.
* ``main``: a tree of segments. A :class:`Block` is a one-off body (a ``set`` between two
  films); a :class:`Loop` runs a cycle, or a supercycle's sequence of subcycles, ``repeat``
  times; a :class:`RepeatSegment` repeats a list of segments.
* A :class:`Body` is a list of phases: :class:`Timed` phases carry actions at integer
  nanosecond offsets from the phase start (the runner schedules them against absolute
  deadlines); :class:`Await` phases wait for a condition.

Every unit of main (each subcycle repetition, each one-off block) is a checkpoint: pause,
stop, the journal and resume work at that grain. :func:`iter_units` walks them in order,
and can start at any checkpoint index without walking the ones before it.

Nothing here grows with the number of repetitions: 10,000 cycles are one :class:`Loop`
pointing at one compiled :class:`CycleDef`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from aldctl.diagnostics import Location

NS = 1_000_000_000


def to_ns(seconds: float) -> int:
    return round(seconds * NS)


class ActionKind(StrEnum):
    PULSE = "pulse"
    """Open valve of line ``target`` for ``duration_ns``."""
    PUMP_ISOLATION = "pump_isolation"
    """``value`` 1 = open (pumping), 0 = closed (stop-flow)."""
    SET_TEMPERATURE = "set_temperature"
    """``value`` degC or None (off); ``rate`` K/min or None (step)."""
    SET_FLOW = "set_flow"
    """``value`` sccm."""
    SET_OZONE = "set_ozone"
    """``value`` wt% or None (off)."""
    RF_ON = "rf_on"
    """``value`` forward power W."""
    RF_OFF = "rf_off"
    CHECK_PLASMA = "check_plasma"
    """Ignition check: forward power near setpoint, reflected below the tool limit."""


@dataclass(frozen=True, slots=True)
class Action:
    offset_ns: int
    kind: ActionKind
    target: str
    value: float | None = None
    duration_ns: int = 0
    rate: float | None = None
    loc: Location | None = None


def plasma_actions(
    gas: str,
    flow_sccm: float,
    power_w: float,
    stabilize_s: float,
    duration_s: float,
    ignition_s: float | None,
) -> list[Action]:
    """A plasma step's actions, offsets from its start: the feed gas on, RF on after the
    stabilising time, the ignition check ``ignition_s`` later (None: no check; none either
    when the plasma is not on for longer), RF and feed off at the end
    (``stabilize_s + duration_s``). The run and the tuning trial on a real tool both drive
    these (aldctl/engine/trialtool.py)."""
    chem = f"{gas}-plasma"
    channel = f"plasma.{gas}"
    stab = to_ns(stabilize_s)
    end = stab + to_ns(duration_s)
    out = [
        Action(0, ActionKind.SET_FLOW, channel, flow_sccm),
        Action(stab, ActionKind.RF_ON, chem, power_w),
    ]
    if ignition_s is not None and duration_s > ignition_s:
        out.append(Action(stab + to_ns(ignition_s), ActionKind.CHECK_PLASMA, chem, power_w))
    out.append(Action(end, ActionKind.RF_OFF, chem))
    out.append(Action(end, ActionKind.SET_FLOW, channel, 0.0))
    return out


@dataclass(frozen=True, slots=True)
class Span:
    """Where a recipe step sits in a timed phase (for progress and reports)."""

    start_ns: int
    end_ns: int
    label: str


@dataclass(frozen=True, slots=True)
class Timed:
    actions: tuple[Action, ...]
    duration_ns: int
    spans: tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class Condition:
    channel: str
    relation: str
    """"within" (of the channel's setpoint), "below" or "above"."""
    value: float
    hold_ns: int
    setpoint: float | None = None
    """For "within": the setpoint the compiler expects the channel to have."""


@dataclass(frozen=True, slots=True)
class Await:
    conditions: tuple[Condition, ...]
    timeout_ns: int
    on_timeout: str
    label: str
    loc: Location | None = None

    expected_ns: int = 0
    """Expected time until the conditions are met and held (heat-up included; 0: unknown)."""

    @property
    def min_ns(self) -> int:
        return max((c.hold_ns for c in self.conditions), default=0)


Phase = Timed | Await


@dataclass(frozen=True)
class Body:
    phases: tuple[Phase, ...]
    label: str = ""
    # Not slotted: cached_property keeps its results in the instance __dict__.

    @cached_property
    def timed_ns(self) -> int:
        return sum(p.duration_ns for p in self.phases if isinstance(p, Timed))

    @cached_property
    def min_ns(self) -> int:
        """Lower bound of the duration (awaits at their hold time)."""
        return self.timed_ns + sum(p.min_ns for p in self.phases if isinstance(p, Await))

    @cached_property
    def expected_ns(self) -> int:
        """Expected duration: awaits at their expected time (heat-up), at least their hold."""
        return self.timed_ns + sum(
            max(p.min_ns, p.expected_ns) for p in self.phases if isinstance(p, Await)
        )

    @cached_property
    def has_await(self) -> bool:
        return any(isinstance(p, Await) for p in self.phases)

    @cached_property
    def stats(self) -> BodyStats:
        st = BodyStats()
        for p in self.phases:
            if isinstance(p, Timed):
                for a in p.actions:
                    if a.kind is ActionKind.PULSE:
                        st.actuations[a.target] = st.actuations.get(a.target, 0) + 1
                        st.open_ns[a.target] = st.open_ns.get(a.target, 0) + a.duration_ns
        return st


@dataclass(slots=True)
class BodyStats:
    actuations: dict[str, int] = field(default_factory=dict)
    open_ns: dict[str, int] = field(default_factory=dict)

    def add(self, other: BodyStats, times: int = 1) -> None:
        for k, v in other.actuations.items():
            self.actuations[k] = self.actuations.get(k, 0) + v * times
        for k, v in other.open_ns.items():
            self.open_ns[k] = self.open_ns.get(k, 0) + v * times


@dataclass(frozen=True, slots=True)
class EverySpec:
    n: int
    offset: int

    def fires(self, repetition: int) -> bool:
        return repetition % self.n == self.offset % self.n


@dataclass(frozen=True)
class CycleDef:
    """A compiled cycle: one body per combination of ``every`` blocks that fire together."""

    name: str
    every: tuple[EverySpec, ...]
    variants: Mapping[frozenset[int], Body]
    chemicals: frozenset[str]
    """Dose chemicals of the base body (``every`` doses excluded): the process key."""
    process: str | None = None
    """Library process id, when the chemistry matched one."""
    kind: str | None = None
    """Cycle kind within the process (its subcycle name for supercycle processes)."""

    def body(self, repetition: int) -> Body:
        """Body of the ``repetition``-th (1-based) run of this cycle within its loop."""
        if not self.every:
            return self.variants[frozenset()]
        fired = frozenset(i for i, e in enumerate(self.every) if e.fires(repetition))
        return self.variants[fired]

    @cached_property
    def period(self) -> int:
        return math.lcm(*(e.n for e in self.every)) if self.every else 1

    def stats_for(self, repetitions: int) -> tuple[BodyStats, int]:
        """Valve statistics and total timed duration (ns) of ``repetitions`` runs."""
        total = BodyStats()
        duration = 0
        full, rest = divmod(repetitions, self.period)
        for r in range(1, self.period + 1):
            times = full + (1 if r <= rest else 0)
            if times:
                b = self.body(r)
                total.add(b.stats, times)
                duration += b.min_ns * times
        return total, duration


@dataclass(frozen=True)
class Block:
    body: Body

    @property
    def units(self) -> int:
        return 1


@dataclass(frozen=True)
class Loop:
    """``repeat`` passes over ``sequence`` (one cycle name for a plain cycle)."""

    label: str
    sequence: tuple[str, ...]
    repeat: int
    cycles: Mapping[str, CycleDef]
    supercycle: bool
    target_nm: float | None = None
    process: str | None = None
    loc: Location | None = None
    substrate_c: float | None = None
    """Substrate setpoint while the loop runs (for growth estimates)."""

    @property
    def units(self) -> int:
        return self.repeat * len(self.sequence)

    @cached_property
    def pass_ns(self) -> int:
        """Duration of one pass (one supercycle, or one cycle), first repetition's variants."""
        return sum(
            self.cycles[n].body(self.cycle_repetition(1, i)).min_ns
            for i, n in enumerate(self.sequence)
        )

    @cached_property
    def ordinals(self) -> tuple[tuple[int, int], ...]:
        """Per position: (ordinal of its cycle among same-name positions, count per pass)."""
        seen: dict[str, int] = {}
        counts = {n: self.sequence.count(n) for n in self.sequence}
        out = []
        for name in self.sequence:
            out.append((seen.get(name, 0), counts[name]))
            seen[name] = seen.get(name, 0) + 1
        return tuple(out)

    def cycle_repetition(self, rep: int, position: int) -> int:
        """1-based count of this position's cycle within the loop, for ``every`` blocks."""
        ordinal, per_pass = self.ordinals[position]
        return (rep - 1) * per_pass + ordinal + 1

    def counts(self) -> dict[str, int]:
        """Repetitions of each cycle over the whole loop."""
        return {n: self.sequence.count(n) * self.repeat for n in dict.fromkeys(self.sequence)}


@dataclass(frozen=True)
class RepeatSegment:
    times: int
    segments: tuple[Segment, ...]

    @cached_property
    def units(self) -> int:
        return self.times * sum(s.units for s in self.segments)


Segment = Block | Loop | RepeatSegment


@dataclass(frozen=True, slots=True)
class Unit:
    """One checkpointed unit of main."""

    index: int
    """0-based checkpoint index over the whole of main."""
    body: Body
    loop: Loop | None
    rep: int
    """1-based pass of the loop (the supercycle number for supercycles)."""
    position: int
    """Index in the loop's sequence."""
    cycle: str | None

    @property
    def last_in_pass(self) -> bool:
        """True at the end of a supercycle (or of every plain cycle or block)."""
        return self.loop is None or self.position == len(self.loop.sequence) - 1


def iter_units(segments: tuple[Segment, ...], start: int = 0) -> Iterator[Unit]:
    """Units of ``segments`` from checkpoint ``start`` on, skipping earlier ones in O(depth)."""
    yield from _iter(segments, start, 0)


def _iter(segments: tuple[Segment, ...], skip: int, base: int) -> Iterator[Unit]:
    index = base
    for seg in segments:
        n = seg.units
        if skip >= n:
            skip -= n
            index += n
            continue
        if isinstance(seg, Block):
            yield Unit(index, seg.body, None, 1, 0, None)
        elif isinstance(seg, Loop):
            width = len(seg.sequence)
            first_rep, first_pos = divmod(skip, width)
            for rep in range(first_rep + 1, seg.repeat + 1):
                for pos in range(first_pos if rep == first_rep + 1 else 0, width):
                    name = seg.sequence[pos]
                    cdef = seg.cycles[name]
                    body = cdef.body(seg.cycle_repetition(rep, pos))
                    yield Unit(index + (rep - 1) * width + pos, body, seg, rep, pos, name)
        else:
            per = sum(s.units for s in seg.segments)
            first, rest = divmod(skip, per)
            for t in range(first, seg.times):
                yield from _iter(seg.segments, rest if t == first else 0, index + t * per)
        index += n
        skip = 0


def total_units(segments: tuple[Segment, ...]) -> int:
    return sum(s.units for s in segments)


def walk_loops(segments: tuple[Segment, ...], times: int = 1) -> Iterator[tuple[Loop, int]]:
    """Every loop with how many times it runs (RepeatSegments multiply)."""
    for seg in segments:
        if isinstance(seg, Loop):
            yield seg, times
        elif isinstance(seg, RepeatSegment):
            yield from walk_loops(seg.segments, times * seg.times)


def walk_blocks(segments: tuple[Segment, ...], times: int = 1) -> Iterator[tuple[Block, int]]:
    for seg in segments:
        if isinstance(seg, Block):
            yield seg, times
        elif isinstance(seg, RepeatSegment):
            yield from walk_blocks(seg.segments, times * seg.times)


@dataclass(frozen=True)
class Schedule:
    recipe: str
    tool: str
    setup: Body
    main: tuple[Segment, ...]
    teardown: Body
    params: Mapping[str, object]
    substrate_c: float | None
    """Substrate setpoint when main starts (the process temperature), if the recipe sets it."""
    source_c: Mapping[str, float] = field(default_factory=dict)
    """Source setpoint of each heated line when main starts."""

    @cached_property
    def units(self) -> int:
        return total_units(self.main)

    @cached_property
    def min_duration_ns(self) -> int:
        total = self.setup.min_ns + self.teardown.min_ns
        for block, times in walk_blocks(self.main):
            total += block.body.min_ns * times
        for loop, times in walk_loops(self.main):
            for name, reps in loop.counts().items():
                total += loop.cycles[name].stats_for(reps)[1] * times
        return total

    @cached_property
    def has_await(self) -> bool:
        if self.setup.has_await or self.teardown.has_await:
            return True
        if any(b.body.has_await for b, _ in walk_blocks(self.main)):
            return True
        return any(
            body.has_await
            for loop, _ in walk_loops(self.main)
            for c in loop.cycles.values()
            for body in c.variants.values()
        )

    def unit(self, index: int) -> Unit:
        return next(iter_units(self.main, index))
