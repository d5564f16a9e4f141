"""Chamber pressure traces for the run report, bounded so the journal stays small.

The safety monitor journals every channel every ``journal.sample_interval`` (5 s): enough
for temperatures and flows, far too coarse to see a 15 ms dose. Two finer records:

* ``pulse.pressure``: the pulse monitor's own gauge readings after each dose (2-4 a pulse,
  every pulse of the run), so every alarm has the doses before it;
* ``trace.pressure``: the gauge every ``journal.trace_interval`` (50 ms) through chosen
  units of main only: the first, the middle, the last, the first of a resumed session, and
  the unit of every alarm and the one after it. A 10,000-cycle run keeps a handful of
  cycles at full rate, not 10,000.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aldctl.engine.events import Alarm, Event, UnitDone, UnitStarted

if TYPE_CHECKING:
    from aldctl.engine.runner import Runner

TRACE = "trace.pressure"
PULSE = "pulse.pressure"


class Tracer:
    def __init__(self, runner: Runner) -> None:
        self.r = runner
        total = runner.schedule.units
        start = runner.options.start_unit
        self.planned = {0, total // 2, max(0, total - 1), start}
        self.extra_until = -1
        """Units up to this index are traced because of an alarm."""
        self.current: int | None = None
        self.active = asyncio.Event()
        self.interval = runner.tool.config.journal.trace_interval
        runner.bus.listen(self._on_event)

    def traced(self, unit: int) -> bool:
        return unit in self.planned or unit <= self.extra_until

    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, UnitStarted):
            self.current = ev.index
            if self.traced(ev.index):
                self.active.set()
        elif isinstance(ev, UnitDone):
            if not self.traced(ev.index + 1):
                self.active.clear()
        elif isinstance(ev, Alarm) and self.current is not None:
            self.extra_until = max(self.extra_until, self.current + 1)
            self.active.set()

    def pulse_point(self, t: float, p: float) -> None:
        j = self.r.journal
        if j is not None and self.r.journal_error is None:
            j.sample(t, PULSE, p)

    async def run(self) -> None:
        """Sample while the current unit is traced (a supervised helper: never returns)."""
        gauge = self.r.tool.gauge
        clock = self.r.clock
        while True:
            await self.active.wait()
            if gauge is None or self.r.journal is None:
                await asyncio.Event().wait()
                continue
            try:
                async with asyncio.timeout(1.0):
                    pr = await gauge.read_pressure()
                p = pr.pressure_torr
            except Exception:  # the safety monitor counts the gauge's failures
                p = None
            if self.r.journal_error is None:
                self.r.journal.sample(self.r.now(), TRACE, p)
            await clock.sleep_until(clock.now() + self.interval, precise=False)
