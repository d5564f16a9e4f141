"""Safety: interlocks beside the runner, not inside it.

* **Permissives** before each action (:meth:`Safety.permit`): no precursor dose while the
  chamber pressure is above its hold limit; no plasma outside the source's pressure window.
* **Continuous limits**, polled every ``safety.poll_interval``: over-pressure (hold above
  ``hold_above``, abort above ``max``), over-temperature and thermocouple break (abort),
  flow deviation after settling (hold), plasma reflected power (abort). A hold closes the
  dose valves and keeps the carrier flowing; the run resumes by itself once every hold
  limit has been back in band for ``limits.resume_after``, or aborts after
  ``limits.hold_timeout``.
* **Watchdog**: a device with no valid answer for ``safety.watchdog_polls`` polls in a row
  aborts the run, naming the device.
* A driver that raises anything (not only :class:`DeviceError`) counts as that device
  failing a poll; the monitor itself never dies of it (and if it dies of anything else,
  the runner's supervisor aborts the run).
* **Heartbeat**: valve I/O modules with their own watchdog are retriggered every
  ``safety.heartbeat_interval``, so the valves close by themselves if this process dies.
* **Safe state** (:func:`safe_state`): dose valves closed, pump isolation open, RF and
  ozone off, carrier flowing, heaters held or off as configured. Idempotent, every device
  at once, bounded by ``safety.safe_state_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aldctl.config import LimitAction
from aldctl.engine.clock import Clock, gather_bounded
from aldctl.engine.control import CommandRefused, RunControl
from aldctl.engine.devices import Tool, valve_positions
from aldctl.engine.events import Alarm, EventBus, Sample, State
from aldctl.engine.journal import Journal
from aldctl.hazards import INTERLOCK_LABELS
from aldctl.recipe.schedule import Action, ActionKind
from drivers.base import (
    Device,
    DeviceError,
    FlowReading,
    PlasmaReading,
    PressureReading,
    TemperatureReading,
    ThicknessReading,
)

RUNAWAY_RISE_K = 2.0
VERIFY_RISE_K = 0.2
"""After teardown, a heater that is off (or above its setpoint) more than this above its
lowest reading since is watched on (thermocouple noise is ~0.1 K); ``RUNAWAY_RISE_K``
above it, it is not heading to its safe setpoint."""
VERIFY_ABOVE_SP_K = 1.0
VERIFY_FLOW_FS = 0.02
"""After teardown a flow within this fraction of the MFC's full scale of its setpoint is
at it (zero offsets of 1-2 % of full scale are in spec)."""
POLL_GUARD_S = 10.0
IDLE_EVERY = 5


@dataclass
class Readings:
    """The latest valid reading of every polled channel."""

    t: float = 0.0
    pressure_torr: float | None = None
    temps: dict[str, TemperatureReading] = field(default_factory=dict)
    flows: dict[str, FlowReading] = field(default_factory=dict)
    plasma: PlasmaReading | None = None
    qcm_a: float | None = None
    """QCM thickness, Angstrom (for the per-cycle mass step)."""


@dataclass
class _Band:
    """A limit with a persistence time: out of band only counts after ``for_s``."""

    since: float | None = None

    def out(self, now: float, is_out: bool, for_s: float) -> bool:
        if not is_out:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return now - self.since >= for_s


class Safety:
    def __init__(
        self, tool: Tool, control: RunControl, clock: Clock, bus: EventBus, journal: Journal | None
    ) -> None:
        self.tool = tool
        self.cfg = tool.config
        self.control = control
        self.clock = clock
        self.bus = bus
        self.journal = journal
        self.readings = Readings()
        self.failures: dict[str, int] = {}
        self.last_failure: dict[str, str] = {}
        """Device -> why its last read failed (for the read-back's "could not be read")."""
        self.flow_changed: dict[str, float] = {}
        self.flow_setpoints: dict[str, float] = {}
        self.rf_on = False
        self.bands: dict[str, _Band] = {}
        self.in_band_since: float | None = None
        self.held_since: float | None = None
        self.pressure_high_since: float | None = None
        """Since when a hold's chamber has stayed above the pressure hold limit."""
        self.last_dose: str | None = None
        """The chemical dosed last (set by the runner): the likeliest source of a chamber
        that a hold cannot pump down."""
        self.opened_by_hand: set[str] | None = None
        """A manual session's open dose lines (its own set): a hold there refuses doses and
        closes these, so what still feeds the chamber may be one that did not close. None
        in a run."""
        self.held_before_s = 0.0
        """Time the current unit already spent held before this hold (set by the runner):
        ``hold_timeout`` counts the unit's held time, not each hold's."""
        self.warned: set[str] = set()
        self.excess_pv: dict[str, float] = {}
        self.t0 = clock.now()
        self._reading = ""
        self.polls = 0
        self.next_sample_t = 0.0
        self.verifying = False
        self.verify_from = "teardown ended"
        """When the read-back started, in words (for "... degC when teardown ended")."""
        self.explains: Callable[[float], bool] | None = None
        """Whether a dose being measured explains a chamber pressure (the pulse monitor's)."""
        """Reading the tool back after teardown: deviations are the verification's to name
        (a hold then would hold nothing)."""

    # ------------------------------------------------------------------ runner hooks

    def note_action(self, action: Action, t: float) -> None:
        """The runner tells safety what it commanded (for settling times and RF state)."""
        if action.kind is ActionKind.SET_FLOW:
            self.flow_changed[action.target] = t
            self.flow_setpoints[action.target] = action.value or 0.0
        elif action.kind is ActionKind.RF_ON:
            self.rf_on = True
            self.flow_changed["__rf"] = t
        elif action.kind is ActionKind.RF_OFF:
            self.rf_on = False

    def permit(self, action: Action) -> str | None:
        """Why ``action`` must not run now, or None."""
        p = self.readings.pressure_torr
        lim = self.cfg.limits.pressure
        hold_at = lim.hold_above if lim.hold_above is not None else lim.max
        if action.kind is ActionKind.PULSE and p is not None and p > hold_at:
            return (
                f"no dose while the chamber pressure is {p:.3g} Torr, above the "
                f"{hold_at:g} Torr hold limit"
            )
        if action.kind is ActionKind.RF_ON and self.cfg.plasma is not None and p is not None:
            ps = self.cfg.plasma
            if not ps.pressure_min <= p <= ps.pressure_max:
                return (
                    f"no plasma at {p:.3g} Torr: outside the source's window "
                    f"{ps.pressure_min:g}-{ps.pressure_max:g} Torr"
                )
        return None

    # ------------------------------------------------------------------ polling

    def _t(self) -> float:
        return self.clock.now() - self.t0

    async def _read(
        self, name: str, fn: Callable[[], Awaitable[object]], *, polled: bool = True
    ) -> object | None:
        """One device read; failures count towards the watchdog.

        Drivers time out their own transactions; :meth:`poll_once` bounds the whole poll
        as a second guard (and needs to know which device it was waiting for: ``polled``
        reads record it; the heartbeat, running beside the poll, does not).
        """
        if polled:
            self._reading = name
        try:
            value = await fn()
        except Exception as exc:
            self._read_failed(name, exc)
            return None
        self.failures[name] = 0
        return value

    def _read_failed(self, name: str, exc: Exception) -> None:
        if isinstance(exc, DeviceError | OSError):
            self._failed(name, exc.detail if isinstance(exc, DeviceError) else str(exc))
        else:
            # A driver bug (ValueError on a strange reply...) is that device failing: the
            # watchdog logic applies, and the monitor goes on watching everything else.
            self._failed(name, f"driver raised {type(exc).__name__}: {exc}")

    def _failed(self, name: str, detail: str) -> None:
        n = self.failures.get(name, 0) + 1
        self.failures[name] = n
        self.last_failure[name] = detail
        if n >= self.cfg.safety.watchdog_polls:
            self._abort(f"device '{name}' stopped answering ({n} polls in a row: {detail})")
        else:
            self._alarm(
                "warning",
                name,
                f"no valid answer ({detail}); {n} of "
                f"{self.cfg.safety.watchdog_polls} before the watchdog aborts",
            )

    def _abort(self, message: str) -> None:
        # Once the run has ended (an abort the runner raised itself: a valve stuck open, a
        # hold tripped too often) the control refuses the abort and keeps no reason: an
        # alarm here would repeat at every poll of the read-back, which names what is wrong.
        if self.control.abort_reason is None and not self.control.state.terminal:
            self._alarm("abort", "safety", message)
        with contextlib.suppress(CommandRefused):  # already ending: nothing to abort
            self.control.abort(message, who="safety")

    def _alarm(self, severity: str, source: str, message: str) -> None:
        self.bus.publish(Alarm(self._t(), severity, source, message))

    def _device_of(self, dev: Device) -> str:
        return self.tool.device_name(dev)

    async def poll_once(self) -> Readings:
        # A backstop only: every driver bounds its own transactions (and their retries),
        # which can together take a couple of seconds on a slow serial bus.
        guard = max(POLL_GUARD_S, 3 * self.cfg.safety.poll_interval)
        try:
            async with asyncio.timeout(guard):
                return await self._poll()
        except TimeoutError:
            self._failed(self._reading, f"no answer within {guard:g} s")
            return self.readings

    async def _poll(self) -> Readings:
        r = self.readings
        values: dict[str, float | None] = {}
        setpoints: dict[str, float | None] = {}
        """For the live displays only (the journal has the recipe's setpoints already)."""
        tool = self.tool
        self.polls += 1
        # Devices whose limits are not in play (an MFC at zero, the RF generator while off,
        # the valve read-back) are read every IDLE_EVERY polls: often enough for the
        # watchdog, without paying for a dozen transactions a second on a slow bus.
        idle_turn = self.polls % IDLE_EVERY == 1
        if tool.gauge is not None:
            g = tool.gauge
            pr = await self._read(self._device_of(g), g.read_pressure)
            if isinstance(pr, PressureReading):
                if pr.pressure_torr is None:
                    self._sensor_fault(self._device_of(g), f"gauge reports {pr.status}")
                r.pressure_torr = pr.pressure_torr
                values["pressure"] = pr.pressure_torr
        for ch, tc in tool.temperatures.items():
            tr = await self._read(self._device_of(tc), tc.read_temperature)
            if isinstance(tr, TemperatureReading):
                r.temps[ch] = tr
                values[f"T.{ch}"] = tr.pv_c
                setpoints[f"SP.T.{ch}"] = tr.setpoint_c
        for ch, fc in tool.flows.items():
            if not idle_turn:
                sp = self.flow_setpoints.get(ch)
                if (self.default_flow(ch) if sp is None else sp) <= 0:
                    continue
            fr = await self._read(self._device_of(fc), fc.read_flow)
            if isinstance(fr, FlowReading):
                r.flows[ch] = fr
                values[f"F.{ch}"] = fr.flow_sccm
                setpoints[f"SP.F.{ch}"] = fr.setpoint_sccm
        if tool.plasma is not None and (self.rf_on or idle_turn):
            pl = await self._read(self._device_of(tool.plasma), tool.plasma.read_plasma)
            if isinstance(pl, PlasmaReading):
                r.plasma = pl
                values["rf.forward"] = pl.forward_w
                values["rf.reflected"] = pl.reflected_w
        if idle_turn:
            for bank in tool.banks:
                await self._read(self._device_of(bank), bank.read_valves)
        await self._poll_interlocks()
        if tool.qcm is not None:  # every poll: the displays plot the growth per cycle
            th = await self._read(self._device_of(tool.qcm), tool.qcm.read_thickness)
            if isinstance(th, ThicknessReading):
                values["qcm"] = th.thickness_a
                r.qcm_a = th.thickness_a
        r.t = self._t()
        self.bus.publish(Sample(r.t, {**values, **setpoints}))
        if self.journal is not None and r.t >= self.next_sample_t:
            self.next_sample_t = r.t + self.cfg.journal.sample_interval
            for ch, v in values.items():
                self.journal.sample(r.t, ch, v)
        return r

    async def _poll_interlocks(self) -> None:
        """Every poll: an interlock input away from its healthy level aborts the run (the
        interlock has cut the dose valves' supply in hardware already; the run must not go
        on as if its doses happened). A device that does not answer is the watchdog's."""
        read: dict[int, object] = {}
        for name, (dev, channel, healthy) in self.tool.interlocks.items():
            key = id(dev)
            if key not in read:
                read[key] = await self._read(self._device_of(dev), dev.read_inputs)
            levels = read[key]
            if not isinstance(levels, Mapping) or channel not in levels:
                continue
            if bool(levels[channel]) != healthy:
                label = INTERLOCK_LABELS.get(name, name)
                self._abort(
                    f"interlock {name}: the {label} tripped (input "
                    f"{self._device_of(dev)}:{channel} reads "
                    f"{'closed' if levels[channel] else 'open'})"
                )

    def default_flow(self, ch: str) -> float:
        spec = self.cfg.flows.get(ch)
        return spec.default if spec is not None and spec.default is not None else 0.0

    def _sensor_fault(self, source: str, message: str) -> None:
        n = self.failures.get(source, 0) + 1
        self.failures[source] = n
        if n >= self.cfg.safety.watchdog_polls:
            self._abort(f"{source}: {message} ({n} polls in a row)")

    def _pressure_limits(self, p: float, now: float) -> tuple[str, str] | None:
        """The pressure limits on one reading: acts on ``max`` (after its ``for``), and
        returns the hold reason when above ``hold_above``."""
        lim = self.cfg.limits
        if self.bands.setdefault("p.max", _Band()).out(
            now, p > lim.pressure.max, lim.pressure.for_
        ):
            message = f"chamber pressure {p:.3g} Torr above the {lim.pressure.max:g} Torr limit"
            self._act(lim.pressure.action, "pressure", message)
            if lim.pressure.action is LimitAction.HOLD:
                # a hold reason while above: the hold is not released (and recover_within
                # counts) until the chamber is back under the limit
                return ("pressure", message)
        if lim.pressure.hold_above is not None and p > lim.pressure.hold_above:
            return (
                "pressure",
                f"chamber pressure {p:.3g} Torr above {lim.pressure.hold_above:g} Torr",
            )
        return None

    def check_pressure(self, p: float | None, *, in_dose: bool = True) -> None:
        """A gauge reading taken between polls (the pulse monitor's reads after each dose,
        the fast pressure watch): the same limits, action and reason as a poll's. A burst
        above the hold limit that the chamber pumps away within a poll interval is held
        here. Releasing a hold stays the poll's (it needs the in-band time).

        A reading inside a dose's own pressure response that the dose explains (no more
        above its base than that line's recent doses rose) is not held on here: a recipe
        whose doses overshoot the hold limit is the poll's to find, as it always was, not
        a hold at every dose."""
        if p is None:
            return
        hold = self._pressure_limits(p, self._t())
        explained = in_dose and self.explains is not None and self.explains(p)
        if hold is not None and not explained:
            self.in_band_since = None
            self._hold(*hold)

    def evaluate(self) -> None:
        """Apply the limits to the latest readings: hold, abort, or release a hold."""
        now = self._t()
        lim = self.cfg.limits
        r = self.readings
        hold_reasons: list[tuple[str, str]] = []
        p = r.pressure_torr
        if p is not None:
            hold = self._pressure_limits(p, now)
            if hold is not None:
                hold_reasons.append(hold)
        temp_limits = self.cfg.temperature_channels()
        for ch, tr in r.temps.items():
            if tr.sensor_break or (tr.pv_c is None and tr.setpoint_c is not None):
                self._sensor_fault(ch, "thermocouple break (sensor reads open)")
                self._abort(f"thermocouple break on {ch}")
                continue
            if tr.pv_c is None:
                continue
            sp = tr.setpoint_c
            hi = temp_limits.get(ch, (0.0, 1000.0))[1]
            # Above setpoint while cooling down to a lower setpoint is normal; above it and
            # still climbing (2 K since it crossed the limit) is a runaway: a welded SSR or
            # a thermocouple that fell off the heater.
            if sp is not None and tr.pv_c > sp + lim.over_temperature:
                first = self.excess_pv.setdefault(ch, tr.pv_c)
                if tr.pv_c > first + RUNAWAY_RISE_K:
                    self._abort(
                        f"over-temperature on {ch}: {tr.pv_c:.1f} degC and rising with "
                        f"setpoint {sp:g} degC (limit +{lim.over_temperature:g} K)"
                    )
                    continue
            else:
                self.excess_pv.pop(ch, None)
            if tr.pv_c > hi + lim.over_temperature:
                self._abort(
                    f"over-temperature on {ch}: {tr.pv_c:.1f} degC above its {hi:g} degC maximum"
                )
        for ch, fr in r.flows.items():
            sp = self.flow_setpoints.get(ch, fr.setpoint_sccm)
            changed = self.flow_changed.get(ch, -1e9)
            if sp <= 0 or now + self.t0 - changed < lim.flow_settle:
                continue
            dev = abs(fr.flow_sccm - sp) / sp * 100.0
            if dev > lim.flow_deviation:
                hold_reasons.append(
                    (
                        ch,
                        f"{ch} flow {fr.flow_sccm:.1f} sccm deviates "
                        f"{dev:.0f} % from its {sp:g} sccm setpoint",
                    )
                )
        rf_age = now + self.t0 - self.flow_changed.get("__rf", -1e9)
        ignition = self.cfg.plasma.ignition_time if self.cfg.plasma is not None else 0.0
        # While the match tunes (until the ignition check) a high reflected power is normal.
        if self.rf_on and r.plasma is not None and rf_age >= ignition:
            max_refl = lim.reflected_power
            if max_refl is None and self.cfg.plasma is not None:
                max_refl = self.cfg.plasma.max_reflected
            if max_refl is not None and r.plasma.reflected_w > max_refl:
                self._abort(
                    f"plasma reflected power {r.plasma.reflected_w:.0f} W above {max_refl:g} W"
                )
        self._holds(hold_reasons, now)

    def _act(self, action: LimitAction, source: str, message: str) -> None:
        if action is LimitAction.ABORT:
            self._abort(message)
        elif action is LimitAction.HOLD:
            self._hold(source, message)
        elif message not in self.warned:
            self.warned.add(message)
            self._alarm("warning", source, message)

    def _hold(self, source: str, message: str) -> None:
        if self.verifying:
            return
        if self.control.hold_reason is None and self.control.state in (
            State.RUNNING,
            State.PAUSING,
            State.STARTING,
        ):
            self._alarm("hold", source, message)
            self.control.hold(message, source)

    def _holds(self, reasons: list[tuple[str, str]], now: float) -> None:
        lim = self.cfg.limits
        if reasons:
            self.in_band_since = None
            source, message = reasons[0]
            self._hold(source, message)
        if self.control.hold_reason is None or self.verifying:
            # (reading the safe state back after the run: there is no hold left to end)
            self.held_since = None
            self.pressure_high_since = None
            return
        if self.held_since is None:
            self.held_since = now
        if now - self.held_since + self.held_before_s > lim.hold_timeout:
            self._abort(
                f"hold timed out after {lim.hold_timeout:g} s (held in this unit, over all its "
                f"holds): {self.control.hold_reason}"
            )
            return
        if not any(source == "pressure" for source, _ in reasons):
            self.pressure_high_since = None
        elif self.pressure_high_since is None:
            self.pressure_high_since = now
        elif now - self.pressure_high_since >= lim.pressure.recover_within:
            self._abort(self._not_pumped_down(now - self.pressure_high_since))
            return
        if not reasons:
            if self.in_band_since is None:
                self.in_band_since = now
            if now - self.in_band_since >= lim.resume_after and not self.control.hold_cleared:
                self.control.hold_cleared = True
                self._alarm(
                    "warning",
                    self.control.hold_source,
                    f"back in band for {lim.resume_after:g} s: resuming",
                )
                self.control.wake.set()

    def _not_pumped_down(self, for_s: float) -> str:
        p = self.readings.pressure_torr
        lim = self.cfg.limits.pressure
        hold_at = lim.hold_above if lim.hold_above is not None else lim.max
        head = f"chamber pressure {p:.3g} Torr still above the {hold_at:g} Torr hold limit "
        if self.opened_by_hand is not None:
            by_hand = ", ".join(sorted(self.opened_by_hand)) or "none"
            return (
                f"{head}{for_s:.0f} s into the hold of this manual session (dose valves open "
                f"by hand: {by_hand}): something still feeds the chamber, or the pump cannot "
                "clear it. A dose valve left open or stuck open, an MFC above its setpoint, "
                "a leak, the pump: close the sources' manual valves before anything else"
            )
        last = f"; {self.last_dose} was dosed last" if self.last_dose is not None else ""
        return (
            f"{head}{for_s:.0f} s into the hold, with every dose valve commanded closed and "
            "the pump open: something still feeds the chamber, or the pump cannot clear it. "
            f"A dose valve stuck open{last} (a valve module that reads back only its outputs "
            "cannot see one), an MFC above its setpoint, a leak, the pump: close the sources' "
            "manual valves before anything else"
        )

    async def monitor(self) -> None:
        """Poll and evaluate forever (cancelled by the runner)."""
        interval = self.cfg.safety.poll_interval
        next_t = self.clock.now()
        while True:
            await self.poll_once()
            self.evaluate()
            next_t += interval
            now = self.clock.now()
            if next_t < now:  # fell behind (slow devices): do not burst to catch up
                next_t = now + interval
            await self.clock.sleep_until(next_t, precise=False)

    # ------------------------------------------------------------------ after teardown

    def total_flow(self) -> float:
        """The flows commanded now, sccm (what the purged base pressure scales with)."""
        names = set(self.tool.flows) | set(self.flow_setpoints)
        return sum(self.flow_setpoints.get(ch, self.default_flow(ch)) for ch in names)

    async def verify_safe(
        self,
        base_torr: float | None,
        base_flow: float | None = None,
        *,
        since: str = "teardown ended",
    ) -> dict[str, str]:
        """Read the tool back (after teardown, or after an abort's safe state) until it is
        found safe on two reads a poll apart, for at most ``safety.verify_time``: device ->
        what was read, for what is still not safe then (empty: verified). A dose valve that
        reads open is commanded closed again; nothing else is commanded (the recipe's
        teardown, or the safe state, said what to do).

        Bounded whatever the devices do: each read is cut after ``safety.safe_state_timeout``
        (a driver that never returns cannot hang it), and a device that has failed
        ``safety.watchdog_polls`` reads in a row (the one whose silence caused an abort,
        typically: it is at that count already, so one more failure is enough) is read no
        more and reported as "could not be read"; the rest is read back as usual."""
        cfg = self.cfg
        interval = cfg.safety.poll_interval
        t0 = self.clock.now()
        first_pv: dict[str, float] = {}
        low_pv: dict[str, float] = {}
        clean_since: float | None = None
        problems: dict[str, str] = {}
        unread: dict[str, str] = {}
        if base_torr is not None and base_flow:
            # more flow after teardown than when the base was measured: a higher base
            base_torr *= max(1.0, self.total_flow() / base_flow)
        self.verifying = True
        self.verify_from = since
        try:
            while True:
                now = self.clock.now()
                pending: set[str] = set()
                problems = await self._verify_once(
                    now, base_torr, first_pv, low_pv, pending, unread
                )
                if problems or pending:
                    clean_since = None
                elif clean_since is None:
                    clean_since = now
                elif now - clean_since >= interval - 1e-9:
                    return dict(unread)
                if self.clock.now() - t0 >= cfg.safety.verify_time:
                    return {**problems, **unread}
                await self.clock.sleep_until(now + interval, precise=False)
        finally:
            self.verifying = False

    async def _vread(
        self, name: str, fn: Callable[[], Awaitable[object]], unread: dict[str, str]
    ) -> object | None:
        """One read of the read-back: None when it failed, and the device goes to
        ``unread`` once it has failed ``watchdog_polls`` reads in a row."""
        if name in unread:
            return None
        bound = self.cfg.safety.safe_state_timeout
        try:
            async with asyncio.timeout(bound):
                value = await self._read(name, fn, polled=False)
        except TimeoutError:
            self._failed(name, f"no answer within {bound:g} s")
            value = None
        if value is None and self.failures.get(name, 0) >= self.cfg.safety.watchdog_polls:
            why = self.last_failure.get(name, "no answer")
            unread[name] = f"device '{name}' could not be read ({why})"
        return value

    async def _verify_once(
        self,
        now: float,
        base_torr: float | None,
        first_pv: dict[str, float],
        low_pv: dict[str, float],
        pending: set[str],
        unread: dict[str, str],
    ) -> dict[str, str]:
        tool, cfg, lim = self.tool, self.cfg, self.cfg.limits
        out: dict[str, str] = {}
        for bank in tool.banks:
            name = self._device_of(bank)
            levels = await self._vread(name, valve_positions(bank), unread)
            if not isinstance(levels, Mapping):
                if name not in unread:
                    out[name] = "no read-back of the valves"
                continue
            for line, (b, chan) in tool.valves.items():
                if b is bank and levels.get(chan):
                    out[f"valve {line}"] = f"dose valve {line} reads open"
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(cfg.safety.safe_state_timeout):
                            await bank.set_valve(chan, False)
        for ch, fc in tool.flows.items():
            fr = await self._vread(self._device_of(fc), fc.read_flow, unread)
            if not isinstance(fr, FlowReading):
                if self._device_of(fc) not in unread:
                    out[ch] = "no flow reading"
                continue
            sp = self.flow_setpoints.get(ch, self.default_flow(ch))
            if now - self.flow_changed.get(ch, -1e9) < lim.flow_settle:
                pending.add(ch)  # still settling on its last setpoint: read it after
                continue
            # an MFC's zero and accuracy are a fraction of its full scale, not of the setpoint
            spec = cfg.flows.get(ch)
            full = spec.max if spec is not None else 200.0
            allowed = max(sp * lim.flow_deviation / 100.0, VERIFY_FLOW_FS * full, 0.5)
            if abs(fr.flow_sccm - sp) > allowed:
                out[ch] = (
                    f"{ch} flow reads {fr.flow_sccm:.1f} sccm against its {sp:g} sccm setpoint"
                )
        temp_limits = cfg.temperature_channels()
        for ch, tc in tool.temperatures.items():
            tr = await self._vread(self._device_of(tc), tc.read_temperature, unread)
            if not isinstance(tr, TemperatureReading):
                if self._device_of(tc) not in unread:
                    out[ch] = "no temperature reading"
                continue
            if tr.pv_c is None or tr.sensor_break:
                out[ch] = f"heater {ch}: thermocouple reads open"
                continue
            hi = temp_limits.get(ch, (0.0, 1000.0))[1]
            pv0 = first_pv.setdefault(ch, tr.pv_c)
            low = min(low_pv.get(ch, tr.pv_c), tr.pv_c)
            low_pv[ch] = low
            tsp = tr.setpoint_c
            climbing = tsp is None or tr.pv_c > tsp + VERIFY_ABOVE_SP_K
            if tr.pv_c > hi + lim.over_temperature:
                out[ch] = f"heater {ch}: {tr.pv_c:.1f} degC, above its {hi:g} degC maximum"
            elif climbing and tr.pv_c > low + RUNAWAY_RISE_K:
                # Off (or above its setpoint) and climbing: not heading to its safe
                # setpoint (a welded output, a stuck relay).
                spt = "off" if tsp is None else f"{tsp:g} degC"
                out[ch] = (
                    f"heater {ch}: {tr.pv_c:.1f} degC and rising ({pv0:.1f} degC when "
                    f"{self.verify_from}) with its setpoint {spt}"
                )
            elif tsp is not None and tr.pv_c > tsp + lim.over_temperature and tr.pv_c >= pv0:
                # Over the limit the run aborts for, and not cooling since the read-back
                # began: not safe yet (a welded output climbs ~0.7 K/s, under the rise a
                # poll apart that tells a runaway; a heater that is cooling passes)
                out[ch] = (
                    f"heater {ch}: {tr.pv_c:.1f} degC, more than {lim.over_temperature:g} K "
                    f"above its {tsp:g} degC setpoint and not cooling ({pv0:.1f} degC when "
                    f"{self.verify_from})"
                )
            elif climbing and tr.pv_c > low + VERIFY_RISE_K:
                pending.add(ch)  # more than noise: watch on before calling it safe
        if tool.gauge is not None:
            g = tool.gauge
            pr = await self._vread(self._device_of(g), g.read_pressure, unread)
            p = pr.pressure_torr if isinstance(pr, PressureReading) else None
            if p is None:
                if self._device_of(g) not in unread:
                    out["pressure"] = "no chamber pressure reading"
            else:
                hold = (
                    lim.pressure.hold_above
                    if lim.pressure.hold_above is not None
                    else lim.pressure.max
                )
                factor = cfg.safety.verify_base_factor
                if p > hold:
                    out["pressure"] = f"chamber pressure {p:.3g} Torr above {hold:g} Torr"
                elif base_torr is not None and p > factor * base_torr:
                    out["pressure"] = (
                        f"chamber pressure {p:.3g} Torr, {p / base_torr:.1f}x the run's purged "
                        f"base of {base_torr:.3g} Torr: the pump or the exhaust is not keeping up"
                    )
        return out

    async def pressure_watch(self) -> None:
        """The chamber gauge alone, every ``safety.pressure_interval`` (started only when
        that is shorter than the poll): a burst above the hold limit that decays within a
        few residence times is seen between the polls."""
        gauge = self.tool.gauge
        interval = self.cfg.safety.pressure_interval
        if gauge is None or interval is None:
            return
        next_t = self.clock.now()
        while True:
            next_t += interval
            now = self.clock.now()
            if next_t < now:
                next_t = now + interval
            await self.clock.sleep_until(next_t, precise=False)
            try:
                pr = await gauge.read_pressure()
            except Exception:  # the poll counts the gauge's failures (and its watchdog)
                continue
            self.check_pressure(pr.pressure_torr)

    async def heartbeat(self) -> None:
        """Retrigger the valve modules' watchdogs (started only for tools that have one)."""
        # (what _read does for each beat, inline: a run of hours beats ~10^5 times)
        banks = [(self._device_of(b), b) for b in self.tool.banks if b.watchdog]
        failures = self.failures
        clock = self.clock
        interval = self.cfg.safety.heartbeat_interval
        next_t = clock.now()
        while True:
            for name, bank in banks:
                try:
                    await bank.heartbeat()
                except Exception as exc:
                    self._read_failed(name, exc)
                else:
                    failures[name] = 0
            next_t += interval
            now = clock.now()
            if next_t < now:
                next_t = now + interval
            await clock.sleep_until(next_t, precise=False)


async def close_dose_valves(
    tool: Tool, timeout_s: float, *, rf_off: bool = False
) -> dict[str, BaseException | None]:
    """Close every line's valve (all at once, bounded); with ``rf_off``, turn the plasma
    source's RF and its feed gases off in the same breath (a hold: a plasma must not burn on
    while the chamber is out of band, nor for as long as the hold lasts, and the retried
    unit starts from its first dose, which must not meet a plasma's gas still flowing)."""
    calls: dict[str, Callable[[], Awaitable[None]]] = {}
    for line, (bank, ch) in tool.valves.items():
        calls[f"valve {line}"] = _bind(bank.set_valve, ch, False)
    if rf_off:
        if tool.plasma is not None:
            calls["plasma"] = tool.plasma.rf_off
        for name in tool.flows:
            if name.startswith("plasma."):
                calls[f"flow {name}"] = _bind(tool.flows[name].set_flow, 0.0)
    return await gather_bounded(calls, timeout_s)


def _bind(fn: Callable[..., Awaitable[None]], *args: object) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        await fn(*args)

    return call


def safe_state_flows(tool: Tool, *, carrier_sccm: float | None) -> dict[str, float]:
    """The flows the safe state commands: the carrier at ``carrier_sccm`` (else its
    default, else 20 sccm), every plasma gas at zero."""
    out: dict[str, float] = {}
    if "carrier" in tool.flows:
        flow = carrier_sccm
        if flow is None or flow <= 0:
            spec = tool.config.flows.get("carrier")
            flow = spec.default if spec is not None and spec.default else 20.0
        out["carrier"] = flow
    for name in tool.flows:
        if name.startswith("plasma."):
            out[name] = 0.0
    return out


async def safe_state(tool: Tool, *, carrier_sccm: float | None) -> dict[str, BaseException | None]:
    """Drive the tool to its safe state. Returns device -> error (None when done)."""
    cfg = tool.config
    calls: dict[str, Callable[[], Awaitable[None]]] = {}
    for line, (bank, ch) in tool.valves.items():
        calls[f"valve {line}"] = _bind(bank.set_valve, ch, False)
    if tool.pump_isolation is not None:
        calls["pump isolation"] = _bind(tool.set_pump_isolation, True)
    if tool.carrier_shutoff is not None:
        calls["carrier shut-off"] = _bind(tool.set_carrier_shutoff, True)
    if tool.plasma is not None:
        calls["plasma"] = tool.plasma.safe_state
    if tool.ozone is not None:
        calls["ozone"] = tool.ozone.safe_state
    for name, flow in safe_state_flows(tool, carrier_sccm=carrier_sccm).items():
        key = "carrier" if name == "carrier" else f"flow {name}"
        calls[key] = _bind(tool.flows[name].set_flow, flow)
    if cfg.safety.heaters_on_safe_state == "off":
        for name, tc in tool.temperatures.items():
            calls[f"heater {name}"] = _bind(tc.set_temperature, None)
    return await gather_bounded(calls, cfg.safety.safe_state_timeout)
