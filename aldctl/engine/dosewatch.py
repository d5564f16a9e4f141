"""Per-pulse diagnostics while a run runs: is every dose still delivering what it did?

Each dose's **pressure response** (the area of the chamber pressure above the pressure at
the moment its valve opened, Torr s) is compared with the running baseline of that dose:
the same line, in the same kind of cycle, the same pulse of that line within the cycle (a
water pulse after TMA and one after LiOtBu are different doses). Where the tool has a QCM,
each cycle's **mass step** is compared with the running baseline of that kind of cycle.

* The baseline is learnt from the first pulses (``warmup``, after ``skip`` pulses that
  condition the line), as their median; its noise (the MAD) widens the band if the dose is
  noisier than the band allows. Afterwards only pulses inside the band move the baseline
  (an exponential average), so a source that fades is measured against what it was, not
  against itself.
* A response outside ``1 +- band`` for ``persist`` pulses in a row raises a **warning**
  naming the chemical, the direction and the likely causes; below ``missing`` times the
  baseline for ``persist_missing`` pulses an **alarm**: the valve may not have opened.
  A warning re-arms once the dose has been back in band for ``persist`` pulses.
* Where the dose's mass is known (the session passes the planner's grams per pulse) and
  the tool config gives the source's mass, the **remaining doses** are estimated and the
  run warns once when the source will not last to the end of the recipe.

Why the area is measured from the moment of opening and stops at the next dose: the
previous design took the safety monitor's last poll as the baseline and sampled the decay
out to 3 residence times, so with 1 s purges its points fell inside the next dose and its
baseline on the previous dose's peak: healthy runs raised "source empty or cold".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aldctl.config import DoseWatchSpec
from aldctl.engine.events import Alarm, Sample
from aldctl.engine.journal import PulseRecord

if TYPE_CHECKING:
    from aldctl.engine.runner import Runner
    from drivers.base import ValveBank

PULSE_SAMPLE_TAU = (0.1, 0.6, 1.5)
"""Gauge samples after a valve closes, in chamber residence times."""

LOW_CAUSES = (
    "source emptying or cooling, valve degrading (slow or partly opening), or line clogging"
)
HIGH_CAUSES = "source hotter than set, valve leaking or sticking open, or a pressure disturbance"
BASE_CAUSES = (
    "the gauge drifting (zero offset), a leak or outgassing, or the pump or the carrier flow "
    "changing"
)
MISSING_CAUSES = (
    "the valve may not have opened (stuck closed, no actuation air or power), or the source "
    "is empty or far too cold"
)


WIDTH_CAUSES = (
    "the command latency on the valve link varies (a loaded controller, a slow, retrying "
    "or jittery link), so each dose is shorter or longer than the recipe says"
)
MODULE_WIDTH_CAUSES = (
    "the valve module times this pulse itself (pulse_outputs) and its output's read-back "
    "says it did not: a pulse timer on another time base than the 1 ms per count aldctl "
    "writes, a module or PLC program without that pulse mode, or another master or the "
    "module's watchdog switching the output (an output still on a tolerance after the "
    "pulse's end is closed by aldctl)"
)
GROSS_CAUSES = (
    "the engine did not get to this pulse's close (open) in time: its event loop was "
    "blocked or the host did not run aldctl for that long (a loaded or swapping machine; "
    "bench realtime's stall figures show which), or the valve link stopped answering "
    "for that long"
)


@dataclass
class WidthTrack:
    """One line's delivered pulse widths against the commanded ones."""

    chemical: str
    recent: deque[bool] = field(default_factory=deque)
    """Mistimed or not, for the line's last ``width_window`` pulses."""
    seen: int = 0
    mistimed: int = 0
    worst_s: float = 0.0
    """Largest |delivered - commanded| so far."""
    armed: bool = True
    gross: int = 0
    """Pulses off by more than ``width_gross`` of their width."""
    gross_armed: bool = True
    """The next such pulse is reported at once (re-armed, like ``armed``, by a clean
    window: a module on the wrong time base must not raise an alarm per pulse)."""

    def summary(self) -> dict[str, Any]:
        return {
            "chemical": self.chemical,
            "pulses": self.seen,
            "mistimed": self.mistimed,
            "gross": self.gross,
            "worst_error_ms": self.worst_s * 1e3,
        }


def _median(xs: list[float]) -> float:
    v = sorted(xs)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


@dataclass
class Track:
    """One dose (or one kind of cycle's QCM step) and its running baseline."""

    name: str
    """What the messages call it: "TMA", "H2O (in Li2O cycles)", "QCM step of Al2O3"."""
    source: str
    """Alarm source: the line, or "qcm"."""
    seen: int = 0
    warm: list[float] = field(default_factory=list)
    baseline: float | None = None
    band: float = 0.0
    last_ratio: float | None = None
    min_ratio: float | None = None
    low: int = 0
    high: int = 0
    missing: int = 0
    in_band: int = 0
    armed: set[str] = field(default_factory=lambda: {"low", "high", "missing"})
    flagged: int = 0
    """Pulses (steps) that were out of band."""
    what: str = ""
    """What drifts, for a track that is neither a dose nor a QCM step."""
    causes: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "baseline": self.baseline,
            "band": self.band,
            "last_ratio": self.last_ratio,
            "min_ratio": self.min_ratio,
            "out_of_band": self.flagged,
        }


class DoseWatch:
    """The diagnostics proper: fed one value at a time, raises warnings and alarms."""

    def __init__(
        self,
        spec: DoseWatchSpec,
        alarm: Callable[[str, str, str], None],
        *,
        dose_grams: dict[str, float] | None = None,
        source_mass: dict[str, float] | None = None,
        pulses_planned: dict[str, int] | None = None,
        pulses_before: dict[str, int] | None = None,
    ) -> None:
        self.spec = spec
        self.alarm = alarm
        """``alarm(severity, source, message)``."""
        self.tracks: dict[tuple[str, ...], Track] = {}
        self.dose_grams = dose_grams or {}
        self.source_mass = source_mass or {}
        self.pulses_planned = dict(pulses_planned or {})
        self.pulses_done: dict[str, int] = dict(pulses_before or {})
        """Doses of the whole run so far, per line (earlier sessions included)."""
        self.short_warned: set[str] = set()
        self.widths: dict[str, WidthTrack] = {}

    # ------------------------------------------------------------------ pulses

    def remaining_doses(self, line: str) -> int | None:
        g = self.dose_grams.get(line)
        mass = self.source_mass.get(line)
        if not g or mass is None:
            return None
        return max(0, int((mass - g * self.pulses_done.get(line, 0)) / g))

    def pulse(self, line: str, chemical: str, where: str, k: int, area: float) -> None:
        self.pulses_done[line] = self.pulses_done.get(line, 0) + 1
        self._check_source(line, chemical)
        key = ("dose", line, where, str(k))
        tr = self.tracks.get(key)
        if tr is None:
            name = chemical if not where else f"{chemical} (in {where} cycles)"
            if k > 0:
                name += f", pulse {k + 1} of the cycle"
            tr = self.tracks[key] = Track(name, line)
        self._feed(tr, area, self.spec.band, dose=True)

    def _check_source(self, line: str, chemical: str) -> None:
        left = self.remaining_doses(line)
        planned = self.pulses_planned.get(line)
        if left is None or planned is None or line in self.short_warned:
            return
        still = planned - self.pulses_done.get(line, 0)
        if left < still:
            self.short_warned.add(line)
            self.alarm(
                "warning",
                line,
                f"{chemical} source: about {left} doses left (source_mass "
                f"{self.source_mass[line] * 1e3:.4g} mg, {self.dose_grams[line] * 1e3:.3g} mg "
                f"a dose) for {still} still to come: it runs out before the recipe ends",
            )

    def base_pressure(self, line: str, chemical: str, where: str, k: int, torr: float) -> None:
        """The chamber pressure the moment a dose opened (the purged chamber): it stays put
        from cycle to cycle, so a gauge whose zero drifts, a leak or a pump that weakens
        shows here first (the dose's area, measured above this base, does not see it)."""
        key = ("base", line, where, str(k))
        tr = self.tracks.get(key)
        if tr is None:
            name = f"base pressure before {chemical}"
            if where:
                name += f" (in {where} cycles)"
            if k > 0:
                name += f", pulse {k + 1} of the cycle"
            tr = Track(name, "pressure", what="base pressure", causes=BASE_CAUSES)
            self.tracks[key] = tr
        self._feed(tr, torr, self.spec.base_band, dose=False)

    # ------------------------------------------------------------------ pulse width

    def width_tolerance(self, commanded_s: float, min_pulse_s: float) -> float:
        """Allowed |delivered - commanded| width for a pulse of ``commanded_s`` on a valve
        whose shortest pulse is ``min_pulse_s``."""
        s = self.spec
        return max(s.width_tolerance * commanded_s, s.width_floor * min_pulse_s)

    def width(
        self,
        line: str,
        chemical: str,
        commanded_s: float,
        delivered_s: float,
        tol_s: float,
        bound: str = "",
    ) -> None:
        """A pulse ended: for a software-timed one ``delivered_s`` is what the engine
        observed (from the acknowledgement of its open command to that of its close
        command); for a module-timed one a bound the output's read-back proves (``bound``
        "at least " or "at most ", see :meth:`PulseMonitor.module_pulse`). Warns when
        ``width_persist`` of the line's last ``width_window`` pulses were off by more than
        ``tol_s``; re-arms once a whole window is in tolerance. A single pulse off by more
        than ``width_gross`` of its width is reported by itself, at once: the persistence
        rule forgives a late wake-up of a millisecond, not a dose several times too long
        (an alarm: an overdose of a pyrophoric precursor) or one that hardly opened. It
        re-arms in the same way (more such pulses before that fall to the persistence rule,
        and are counted in the summary's ``gross``)."""
        s = self.spec
        if not s.enabled:
            return
        tr = self.widths.get(line)
        if tr is None:
            tr = self.widths[line] = WidthTrack(chemical)
        err = delivered_s - commanded_s
        bad = abs(err) > tol_s
        tr.seen += 1
        tr.worst_s = max(tr.worst_s, abs(err))
        tr.recent.append(bad)
        if len(tr.recent) > s.width_window:
            tr.recent.popleft()
        if not bad:
            if not any(tr.recent):
                tr.armed = tr.gross_armed = True
            return
        tr.mistimed += 1
        n = sum(tr.recent)
        gross = abs(err) > s.width_gross * commanded_s
        tr.gross += gross
        if gross and tr.gross_armed:
            tr.gross_armed = False
            long = err > 0
            self.alarm(
                "alarm" if long else "warning",
                line,
                f"{chemical}: delivered pulse width {bound}{delivered_s * 1e3:.1f} ms against "
                f"{commanded_s * 1e3:.4g} ms commanded ({err * 1e3:+.1f} ms) in one pulse, "
                f"{'an overdose' if long else 'a short dose'} (more than "
                f"{s.width_gross:.0%} off): "
                f"{MODULE_WIDTH_CAUSES if bound else GROSS_CAUSES}",
            )
            return
        if n >= s.width_persist and tr.armed:
            tr.armed = False
            self.alarm(
                "warning",
                line,
                f"{chemical}: delivered pulse width {bound}{delivered_s * 1e3:.1f} ms against "
                f"{commanded_s * 1e3:.4g} ms commanded ({err * 1e3:+.1f} ms; tolerance "
                f"+-{tol_s * 1e3:.2g} ms), {n} of its last {len(tr.recent)} pulses out of "
                f"tolerance: {MODULE_WIDTH_CAUSES if bound else WIDTH_CAUSES}",
            )

    def base_baselines(self) -> list[float]:
        """The running baselines of the base-pressure tracks (Torr)."""
        return [
            tr.baseline
            for key, tr in self.tracks.items()
            if key[0] == "base" and tr.baseline is not None
        ]

    def width_summary(self) -> dict[str, Any]:
        return {line: tr.summary() for line, tr in self.widths.items()}

    # ------------------------------------------------------------------ QCM

    def qcm_step(self, label: str, step_a: float) -> None:
        key = ("qcm", label)
        tr = self.tracks.get(key)
        if tr is None:
            tr = self.tracks[key] = Track(f"QCM mass step per {label} cycle", "qcm")
        self._feed(tr, step_a, self.spec.qcm_band, dose=False)

    # ------------------------------------------------------------------ the rule

    def _feed(self, tr: Track, value: float, band: float, *, dose: bool) -> None:
        s = self.spec
        if not s.enabled:
            return
        tr.seen += 1
        if tr.seen <= s.skip:
            return
        if tr.baseline is None:
            tr.warm.append(value)
            if len(tr.warm) >= s.warmup:
                base = _median(tr.warm)
                if base <= 0:
                    # No response to speak of even at the start (a gas line the gauge
                    # hardly sees, a QCM that does not grow): nothing to compare with.
                    tr.warm.clear()
                    return
                mad = _median([abs(x - base) for x in tr.warm])
                tr.baseline = base
                tr.band = max(band, s.noise_sigmas * 1.4826 * mad / base)
                tr.warm.clear()
            return
        base = tr.baseline
        r = value / base
        tr.last_ratio = r
        tr.min_ratio = r if tr.min_ratio is None else min(tr.min_ratio, r)
        if dose and r < s.missing:
            tr.missing += 1
        else:
            tr.missing = 0
        if r < 1.0 - tr.band:
            tr.low += 1
            tr.high = 0
        elif r > 1.0 + tr.band:
            tr.high += 1
            tr.low = 0
        else:
            tr.low = tr.high = 0
            tr.in_band += 1
            tr.baseline = (1.0 - s.alpha) * base + s.alpha * value
            if tr.in_band >= s.persist:
                tr.armed = {"low", "high", "missing"}
            return
        tr.in_band = 0
        tr.flagged += 1
        what = tr.what or ("dose pressure response" if dose else "value")
        if dose and tr.missing >= s.persist_missing and "missing" in tr.armed:
            tr.armed -= {"missing", "low"}
            self.alarm(
                "alarm",
                tr.source,
                f"{tr.name}: no pressure response ({max(r, 0.0):.0%} of its baseline) for "
                f"{tr.missing} pulses in a row: {MISSING_CAUSES}",
            )
        elif tr.low >= s.persist and "low" in tr.armed:
            tr.armed.discard("low")
            left = self.remaining_doses(tr.source) if dose else None
            more = f"; about {left} doses left in the source" if left is not None else ""
            causes = tr.causes or (
                LOW_CAUSES if dose else "a dose fading (" + LOW_CAUSES + "), or the QCM"
            )
            self.alarm(
                "warning",
                tr.source,
                # `or 0.0`: a ratio of -0.0 would print as "-0%"
                f"{tr.name}: {what} down to {max(r, 0.0) or 0.0:.0%} of its running baseline "
                f"for {tr.low} in a row (band +-{tr.band:.0%}): {causes}{more}",
            )
        elif tr.high >= s.persist and "high" in tr.armed:
            tr.armed.discard("high")
            self.alarm(
                "warning",
                tr.source,
                f"{tr.name}: {what} up to {r:.0%} of its running baseline for {tr.high} "
                f"in a row (band +-{tr.band:.0%}): "
                + (
                    tr.causes
                    or (HIGH_CAUSES if dose else "CVD (a purge too short, a source too hot)")
                ),
            )

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, tr in self.tracks.items():
            d = tr.summary()
            if key[0] == "dose":
                d["remaining_doses"] = self.remaining_doses(tr.source)
            out[tr.name] = d
        return out


@dataclass
class _Slot:
    rec: PulseRecord
    where: str
    k: int
    area: float | None = None
    base: float | None = None
    done: bool = False


class PulseMonitor:
    """Measures each dose's pressure response beside the run and feeds :class:`DoseWatch`.

    One short task per pulse (a long purge and a short one cost the same), records written
    to the journal in the order the pulses ran.
    """

    def __init__(self, runner: Runner, watch: DoseWatch) -> None:
        self.r = runner
        self.watch = watch
        self.order: deque[_Slot] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.last_open = float("-inf")
        self.base_at_open: dict[str, tuple[float, float | None]] = {}
        self.tau = max(runner.tool.config.chamber.residence_time, 1e-3)
        self.enabled = runner.tool.gauge is not None and runner.options.pulse_monitor
        self.window: tuple[str, float] = ("", float("-inf"))
        """(line, until): the dose whose pressure response the gauge shows until then."""
        self.excess: dict[str, deque[float]] = {}
        """Per line: how far recent doses rose above their base (largest sample), Torr."""
        runner.safety.explains = self.explains
        self.module_pulses: dict[str, int] = {}
        """Per line: module-timed pulses commanded (a width check is for the latest)."""

    def explains(self, p: float) -> bool:
        """Whether the dose being measured explains chamber pressure ``p``: inside its
        response, at most 1.5x as far above its base as the line's recent doses (median)
        rose; with fewer than 3 doses of history, any reading (nothing to compare with)."""
        line, until = self.window
        if self.r.clock.now() > until:
            return False
        base = self.base_at_open.get(line, (0.0, None))[1]
        hist = self.excess.get(line)
        if base is None or hist is None or len(hist) < 3:
            return True
        return p - base <= 1.5 * _median(list(hist)) + 0.02

    def opened(self, line: str, t: float) -> None:
        """A dose valve opened at clock time ``t`` (called by the executor, returns at once)."""
        self.last_open = t
        self.window = (line, float("inf"))  # until it closes and its response is read
        if self.enabled:
            self._spawn(self._read_base(line, t))

    def closed(self, rec: PulseRecord, where: str, k: int, t_open: float) -> None:
        width = rec.commanded_close - rec.commanded_open
        self.window = (rec.line, t_open + width + (PULSE_SAMPLE_TAU[-1] + 0.1) * self.tau)
        slot = _Slot(rec, where, k)
        self.order.append(slot)
        if self.enabled:
            self._spawn(self._sample(slot, t_open))
        else:
            slot.done = True
            try:
                self._flush()
            except Exception as exc:
                self.r.monitor_died(f"task 'pulse-monitor' died: {type(exc).__name__}: {exc}")

    def module_pulse(
        self, bank: ValveBank, channel: int, line: str, dur: float, sent: float, ack: float
    ) -> None:
        """A pulse the valve module times itself was commanded (sent at clock time
        ``sent``, acknowledged at ``ack``): check its width against the module's output
        read-back (returns at once; see :meth:`_module_width`)."""
        cfg = self.r.tool.config
        if not cfg.dose_watch.enabled:
            return
        n = self.module_pulses.get(line, 0) + 1
        self.module_pulses[line] = n
        tol = self.watch.width_tolerance(dur, cfg.lines[line].min_pulse)
        self._spawn(self._module_width(bank, channel, line, dur, sent, ack, tol, n))

    async def _output(self, bank: ValveBank, channel: int) -> bool | None:
        """The output's read-back (None: no answer; the safety poll counts failures)."""
        try:
            async with asyncio.timeout(1.0):
                levels = await bank.read_valves()
        except Exception:
            return None
        return bool(levels.get(channel, False))

    async def _module_width(
        self,
        bank: ValveBank,
        channel: int,
        line: str,
        dur: float,
        sent: float,
        ack: float,
        tol: float,
        n: int,
    ) -> None:
        """What the host can prove about a module-timed pulse's width from two reads of
        the output (the module reports nothing per pulse but its outputs): the module
        switched the output on between ``sent`` and ``ack``, so

        * an output read *off* in a read answered at ``r`` means width <= ``r - sent``:
          read at the pulse's middle, off proves it short when ``r - sent < dur - tol``
          (a pulse that never came, a timer on another time base);
        * an output read *on* in a read sent at ``s`` means width >= ``s - ack``: read
          ``tol`` after the pulse should have ended, on proves it long (then the host
          closes it: the module has not).

        A read that is late or fails proves nothing, and the pulse is not counted."""
        try:
            chem = self.r.tool.config.lines[line].chemical
            clock = self.r.clock
            mid = sent + (dur - tol) / 2
            if mid > clock.now():
                await clock.sleep_until(mid, precise=False)
            on = await self._output(bank, channel)
            answered = clock.now()
            if on is False and answered - sent < dur - tol:
                self.watch.width(line, chem, dur, answered - sent, tol, "at most ")
                return
            await clock.sleep_until(ack + dur + tol, precise=False)
            if self.module_pulses.get(line) != n:
                return  # the line pulsed again meanwhile: the output is that pulse's
            asked = clock.now()
            on_after = await self._output(bank, channel)
            if self.module_pulses.get(line) != n:
                return  # pulsed again while that read was on the wire: it may be its output
            if on_after is True and asked - ack > dur + tol:
                self.watch.width(line, chem, dur, asked - ack, tol, "at least ")
                # the module has not ended the dose: the host does
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await bank.set_valve(channel, False)
                return
            if on is True and on_after is False:
                self.watch.width(line, chem, dur, dur, tol)  # within what two reads show
        except Exception as exc:  # a bug here: the watch is gone, the run must not go on
            self.r.monitor_died(f"task 'pulse-width' died: {type(exc).__name__}: {exc}")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _read_base(self, line: str, t: float) -> None:
        gauge = self.r.tool.gauge
        assert gauge is not None
        p = await self._read()
        self.base_at_open[line] = (t, p)
        # taken as the valve opens: before anything of this dose reaches the gauge
        self.r.safety.check_pressure(p, in_dose=False)

    async def _read(self) -> float | None:
        gauge = self.r.tool.gauge
        assert gauge is not None
        try:
            async with asyncio.timeout(1.0):
                pr = await gauge.read_pressure()
        except Exception:  # the safety monitor counts the gauge's failures; here: no point
            return None
        return pr.pressure_torr

    async def _sample(self, slot: _Slot, t_open: float) -> None:
        try:
            slot.area, slot.base = await self._area(slot.rec, t_open)
            slot.done = True
            self._flush()
        except Exception as exc:
            # Gauge failures are handled in _read; anything else is a bug in the monitor,
            # and a watch that stopped watching is never silent: the run aborts, named.
            slot.done = True
            self.r.monitor_died(f"task 'pulse-monitor' died: {type(exc).__name__}: {exc}")

    async def _area(self, rec: PulseRecord, t_open: float) -> tuple[float | None, float | None]:
        """The dose's area above the base pressure, and that base."""
        clock = self.r.clock
        tau = self.tau
        close = t_open + (rec.commanded_close - rec.commanded_open)
        t_base, base = self.base_at_open.get(rec.line, (float("-inf"), None))
        if abs(t_base - t_open) > max(0.5, rec.commanded_close - rec.commanded_open):
            base = None
        if base is None:
            return None, None
        pts: list[tuple[float, float]] = [(t_open, base)]
        for f in PULSE_SAMPLE_TAU:
            t = close + f * tau
            if t > clock.now():
                await clock.sleep_until(t, precise=False)
            if self.last_open > close:
                break  # another dose opened since: the gauge now sees that one
            p = await self._read()
            if p is not None:
                # the same limits as the safety poll's, on a read it would not see
                self.r.safety.check_pressure(p)
                pts.append((clock.now(), p))
                self.r.bus.publish(Sample(self.r.now(), {"pressure": p}))
                if self.r.tracer is not None:
                    self.r.tracer.pulse_point(self.r.now(), p)
        if len(pts) < 2:
            return None, base
        hist = self.excess.setdefault(rec.line, deque(maxlen=8))
        hist.append(max(q for _, q in pts) - base)
        area = sum(
            (t1 - t0) * ((p0 + p1) / 2 - base) for (t0, p0), (t1, p1) in itertools.pairwise(pts)
        )
        return area + max(0.0, pts[-1][1] - base) * tau, base  # + the exponential tail

    def _flush(self) -> None:
        while self.order and self.order[0].done:
            slot = self.order.popleft()
            self.r.record_pulse(slot.rec, slot.area)
            rec = slot.rec
            if slot.base is not None:
                self.watch.base_pressure(rec.line, rec.chemical, slot.where, slot.k, slot.base)
            if slot.area is not None:
                self.watch.pulse(rec.line, rec.chemical, slot.where, slot.k, slot.area)

    def drain(self) -> None:
        """The run ends: record what is still being measured, without its area."""
        for task in list(self.tasks):
            task.cancel()
        while self.order:
            slot = self.order.popleft()
            self.r.record_pulse(slot.rec, slot.area if slot.done else None)
        self.base_at_open.clear()

    async def stop(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.drain()


def alarm_publisher(runner: Runner) -> Callable[[str, str, str], None]:
    def publish(severity: str, source: str, message: str) -> None:
        if severity == "warning":
            runner.warn(source, message)
        else:
            runner.warnings.append(f"{source}: {message}")
            runner.bus.publish(Alarm(runner.now(), severity, source, message))

    return publish
