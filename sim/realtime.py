"""The reactor model on the wall clock: what the protocol emulators talk to.

``aldctl sim serve`` runs one :class:`RealtimePlant` and many emulators (Modbus servers,
pseudo-terminals). Each emulator calls :meth:`RealtimePlant.sync` before it reads or
commands the reactor, which advances the model to "now" on the monotonic clock, so the
physics runs at the speed of real time, exactly, between whatever requests arrive. The
plant also records when each valve actually changed state (the emulated I/O module's own
timestamps), which is how pulse timing over a real protocol is measured.

This module is the one place in ``sim`` that reads a wall clock, and only to map it onto
the model's virtual time; the model itself stays deterministic given the request times.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sim.reactor import Reactor


@dataclass(frozen=True, slots=True)
class ValveEdge:
    """A valve output changed: ``t`` on the plant's clock (seconds), the line, open/closed."""

    t: float
    line: str
    is_open: bool
    source: str
    """What moved it: "command", "pulse" (module-timed) or "watchdog"."""


class RealtimePlant:
    def __init__(
        self, reactor: Reactor, clock: Callable[[], float] = time.monotonic, edge_log: int = 100_000
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.origin = clock() - reactor.now_ns / 1e9
        self.edges: deque[ValveEdge] = deque(maxlen=edge_log)
        self.on_edge: Callable[[], object] | None = None
        """Called after each valve edge is logged: the moment when the next edge is
        furthest away (a server collects its garbage there)."""
        self._commanded: dict[str, bool] = {}
        self._scheduled: list[tuple[int, str, bool, str, float]] = []
        """Edges a module has timed in advance (a pulse's end): (model ns to make it at,
        line, open, source, the module's time to log), in time order."""
        self._late: dict[str, int] = {}
        """Per line: how many ns after its time the model made its last edge."""

    def now(self) -> float:
        """Plant time in seconds (the reactor's virtual time follows it)."""
        return self.clock() - self.origin

    def sync(self) -> Reactor:
        t_ns = round(self.now() * 1e9)
        self._due(t_ns)
        if t_ns > self.reactor.now_ns:
            self.reactor.advance_to(t_ns)
        return self.reactor

    def schedule_valve(self, line: str, is_open: bool, at: float, source: str = "pulse") -> None:
        """The end of a pulse the module times in hardware (``at``, monotonic clock: its start
        plus its width), told when the pulse starts, after its opening edge. The model makes
        it that long after it made the opening, however late the emulator's own timer fires:
        on a starved CPU the timer ran tens of ms late while other requests ran the model on
        with the valve still open, and a 10 ms pulse delivered two to three times its gas
        (tune RECIPE through the wire saw its calibration areas jump). Where the opening
        reached the model late (handed over from the module's thread after other requests
        had run it past the frame's arrival), the end moves with it: the model's pulse keeps
        its width. The edge is logged at ``at``, the module's time."""
        t_ns = round((at - self.origin) * 1e9)
        shift = self._late.get(line, 0)
        self._scheduled.append((t_ns + shift, line, is_open, source, at))
        self._scheduled.sort(key=lambda e: e[0])

    def unschedule(self, line: str) -> None:
        """Drop the edges still to come for ``line`` (the module cancelled its pulse)."""
        self._scheduled = [e for e in self._scheduled if e[1] != line]

    def _due(self, t_ns: int) -> None:
        while self._scheduled and self._scheduled[0][0] <= t_ns:
            at_ns, line, is_open, source, logged = self._scheduled.pop(0)
            self._edge(line, is_open, source, at_ns, logged - self.origin)

    def set_valve(
        self, line: str, is_open: bool, source: str = "command", at: float | None = None
    ) -> None:
        """Command a line's valve and log the edge (only when it changes).

        ``at`` (monotonic clock) is when the command reached the module, where an emulator
        knows it: hardware switches its outputs as the frame arrives, so the edge is logged
        then, not after the emulator got round to it.
        """
        # Stamp before catching the model up, which can take milliseconds when reactants
        # overlap.
        t = self.now() if at is None else at - self.origin
        # The edge takes effect when the module switched it, not when the model heard of it
        # (a module on its own thread hands edges over a little later): the model runs up to
        # that moment, unless it already ran past it, and changes the valve there. Catching
        # up to now first kept a module-timed 10 ms pulse open in the model for the
        # hand-over's delay too (tune RECIPE through the wire saw pulses deliver ~twice
        # what the in-process model's do).
        if source == "pulse" and any(e[1] == line and e[2] == is_open for e in self._scheduled):
            # The module's timer firing: the pulse's end is scheduled (schedule_valve), and
            # made here if it is due, else by the next request.
            self._due(round(self.now() * 1e9))
            return
        self._edge(line, is_open, source, round(t * 1e9), t)

    def _edge(self, line: str, is_open: bool, source: str, t_ns: int, logged: float) -> None:
        r = self.reactor
        self._due(t_ns)
        if t_ns > r.now_ns:
            r.advance_to(t_ns)
        # How late the model makes this edge (it had already run past it).
        self._late[line] = r.now_ns - t_ns
        if line == "__pump__":
            r.set_pump_isolation(is_open)
            return
        if line == "__carrier__":
            r.set_carrier_shutoff(is_open)
            return
        r.set_valve(line, is_open)
        was = self._commanded.get(line)
        self._commanded[line] = is_open
        if was != is_open:
            self.edges.append(ValveEdge(logged, line, is_open, source))
            if self.on_edge is not None:
                self.on_edge()

    def pulse_widths(self, line: str | None = None) -> list[tuple[str, float, float, str]]:
        """(line, open time, width s, source) of every completed open->close pair logged."""
        opened: dict[str, ValveEdge] = {}
        out: list[tuple[str, float, float, str]] = []
        for e in self.edges:
            if line is not None and e.line != line:
                continue
            if e.is_open:
                opened[e.line] = e
            elif e.line in opened:
                o = opened.pop(e.line)
                out.append((e.line, o.t, e.t - o.t, o.source))
        return out
