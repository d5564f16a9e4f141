"""Actuator and sensor models, each advanced exactly in virtual time.

* ALD valve: stem position u(t) piecewise linear: dead time after a command, then a stroke
  of ``stroke`` ns between 0 and 1. Later commands whose motion would start earlier supersede
  pending ones (this is what makes very short pulses deliver nothing).
* MFC: after its dead time the flow follows ``F(t) = F_goal + (F0 - F_goal) e^{-(t-t0)/tau}``.
* Heater: plant ``T(t) = T_ss + (T0 - T_ss) e^{-t/tau}``, ``T_ss = T_amb + P_max u R_th``,
  constant output u between PID updates (every ``period``). A loop that has settled (error
  below 2 mK, output inside its limits, working setpoint at target) is snapped to its exact
  equilibrium and then costs nothing to advance until something disturbs it.
* Gauge: first-order lag of the true total pressure (the reactor integrates it exactly per
  step); reading = lagged value + drift + white noise, quantised, None above 110 % FS.
* QCM: Sauerbrey, ``f = f0 - C_f m`` with ``C_f = 2 f0^2 / sqrt(rho_q mu_q)`` (0.0815
  Hz cm2/ng at 6 MHz); noise on f, thickness from the frequency change since zero.
* RF source: forward = setpoint while on; reflected 90 % until ignition, then tuning down to
  the matched fraction with ``tune`` time constant.
* Ozone generator: concentration first-order toward the setpoint (on) or zero (off).

Measured values come from seeded :class:`NoiseRng` streams owned by the reactor, one per
device (any object with the same ``random``/``gauss``/``choice`` methods will do, e.g. a
``random.Random``: the trace recorder keeps its own).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

from sim.config import GaugeConfig, HeaterConfig, MfcConfig, OzoneConfig, PlasmaConfig, QcmConfig
from sim.units import NS_PER_MS, NS_PER_S

_T = TypeVar("_T")

_SETTLE_K = 0.002
_SETTLE_RATE_K = 1e-4
_RHO_Q_G_CM3 = 2.648
_MU_Q_G_CM_S2 = 2.947e11
UNLOADED_REFLECTED = 0.9


# --------------------------------------------------------------------------- noise


class Rng(Protocol):
    """What a sensor model draws its noise from (``random.Random`` qualifies)."""

    def random(self) -> float: ...

    def gauss(self, mu: float = ..., sigma: float = ...) -> float: ...

    def choice(self, seq: Sequence[_T]) -> _T: ...


_M128 = (1 << 128) - 1
_LEHMER_A = 0xDA942042E4DD58B5
_TWO_M53 = 1.0 / (1 << 53)
_TWO_PI = 2.0 * math.pi


class NoiseRng:
    """One device's seeded noise stream: a 128-bit multiplicative congruential (Lehmer)
    generator with the 64-bit multiplier of the well-known "lehmer64" (reported to pass
    TestU01's BigCrush on its high 64 bits); each draw keeps the top 53 bits.

    The whole state is one odd 128-bit integer and the spare normal deviate, so a reactor
    snapshot stays small. Seeded from a string key (BLAKE2b of it), so every device gets an
    independent, reproducible stream: same key, same numbers, on any platform and Python.
    :meth:`gauss` is ``random.Random.gauss``'s Box-Muller (one deviate cached).
    """

    __slots__ = ("_next_gauss", "_state")

    def __init__(self, key: str) -> None:
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        self._state = int.from_bytes(digest, "little") | 1
        self._next_gauss: float | None = None

    def random(self) -> float:
        """Uniform in [0, 1)."""
        x = (self._state * _LEHMER_A) & _M128
        self._state = x
        return (x >> 75) * _TWO_M53

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        """Normal deviate."""
        z = self._next_gauss
        if z is None:
            x = (self._state * _LEHMER_A) & _M128
            y = (x * _LEHMER_A) & _M128
            self._state = y
            angle = (x >> 75) * _TWO_M53 * _TWO_PI
            radius = math.sqrt(-2.0 * math.log(1.0 - (y >> 75) * _TWO_M53))
            z = math.cos(angle) * radius
            self._next_gauss = math.sin(angle) * radius
        else:
            self._next_gauss = None
        return mu + z * sigma

    def choice(self, seq: Sequence[_T]) -> _T:
        """A uniformly chosen element of a non-empty sequence."""
        return seq[int(self.random() * len(seq))]

    def getstate(self) -> tuple[int, float | None]:
        return self._state, self._next_gauss

    def setstate(self, state: tuple[int, float | None]) -> None:
        self._state, self._next_gauss = state

    @classmethod
    def from_state(cls, state: tuple[int, float | None]) -> NoiseRng:
        rng = cls.__new__(cls)
        rng._state, rng._next_gauss = state
        return rng


def quantise(value: float, step: float) -> float:
    """Round ``value`` to the instrument resolution ``step`` (0: no quantisation)."""
    if step <= 0.0:
        return value
    return round(round(value / step) * step, 12)


# --------------------------------------------------------------------------- valve


class Valve:
    """Pneumatic ALD valve (see module docstring)."""

    __slots__ = (
        "actuations",
        "close_dead_ns",
        "commanded",
        "open_dead_ns",
        "pending",
        "rate",
        "stroke_ns",
        "t0",
        "target",
        "x0",
    )

    def __init__(self, open_dead_ns: int, close_dead_ns: int, stroke_ns: int) -> None:
        self.open_dead_ns = open_dead_ns
        self.close_dead_ns = close_dead_ns
        self.stroke_ns = stroke_ns
        self.commanded = False
        self.actuations = 0
        self.x0 = 0.0
        self.t0 = 0
        self.rate = 0.0
        """Stem speed, 1/ns (signed)."""
        self.target = 0.0
        self.pending: list[tuple[int, float]] = []

    def position(self, t: int) -> float:
        if self.rate == 0.0:
            return self.x0
        x = self.x0 + self.rate * (t - self.t0)
        return min(x, self.target) if self.rate > 0 else max(x, self.target)

    def moving(self) -> bool:
        return self.rate != 0.0

    def motion_end(self) -> int:
        return self.t0 + math.ceil(abs(self.target - self.x0) / abs(self.rate))

    def next_event(self) -> int | None:
        nxt: int | None = None
        if self.rate != 0.0:
            nxt = self.motion_end()
        if self.pending and (nxt is None or self.pending[0][0] < nxt):
            nxt = self.pending[0][0]
        return nxt

    def schedule(self, start: int, target: float) -> None:
        """Start moving toward ``target`` at ``start``, superseding later pending motions."""
        self.pending = [p for p in self.pending if p[0] < start]
        self.pending.append((start, target))

    def process(self, t: int) -> None:
        """Apply motion ends and starts due at or before ``t``."""
        while True:
            end = self.motion_end() if self.rate != 0.0 else None
            start = self.pending[0][0] if self.pending else None
            if end is not None and end <= t and (start is None or end <= start):
                self.x0 = self.target
                self.t0 = end
                self.rate = 0.0
                continue
            if start is not None and start <= t:
                _, target = self.pending.pop(0)
                x = self.position(start)
                self.x0, self.t0, self.target = x, start, target
                if x == target:
                    self.rate = 0.0
                else:
                    speed = 1.0 / self.stroke_ns
                    self.rate = speed if target > x else -speed
                continue
            return

    def force(self, t: int, x: float) -> None:
        """Set the stem at once (used when a fault seizes the valve)."""
        self.x0, self.t0, self.target, self.rate = x, t, x, 0.0
        self.pending.clear()


# --------------------------------------------------------------------------- MFC


class Mfc:
    """Mass-flow controller (see module docstring); ``goal`` includes fault effects."""

    __slots__ = ("cfg", "f0", "goal", "pending", "setpoint", "t0")

    def __init__(self, cfg: MfcConfig) -> None:
        self.cfg = cfg
        sp = min(max(cfg.setpoint_sccm, 0.0), cfg.full_scale_sccm)
        self.setpoint = sp
        self.goal = sp
        self.f0 = sp
        self.t0 = 0
        self.pending: list[tuple[int, float]] = []

    def flow(self, t: int) -> float:
        if self.f0 == self.goal:
            return self.goal
        return self.goal + (self.f0 - self.goal) * math.exp(
            -(t - self.t0) / (self.cfg.tau_s * NS_PER_S)
        )

    def settled(self, t: int) -> bool:
        if self.f0 == self.goal:
            return True
        if abs(self.flow(t) - self.goal) < 1e-9 * self.cfg.full_scale_sccm:
            self.f0 = self.goal
            self.t0 = t
            return True
        return False

    def retarget(self, t: int, goal: float) -> None:
        self.f0 = self.flow(t)
        self.t0 = t
        self.goal = goal

    def measured(self, t: int, rng: Rng, frozen_reading: float | None) -> float:
        value = self.flow(t) if frozen_reading is None else frozen_reading
        noise = rng.gauss(0.0, self.cfg.noise_pct_fs * 0.01 * self.cfg.full_scale_sccm)
        return quantise(max(0.0, value + noise), self.cfg.resolution_sccm)


# --------------------------------------------------------------------------- heater


class Heater:
    """Heated zone with PID (see module docstring)."""

    __slots__ = (
        "cfg",
        "element_factor",
        "integral",
        "next_tick",
        "period_ns",
        "prev_pv",
        "ramp_k_per_s",
        "runaway",
        "sensor_break",
        "settled",
        "t_amb",
        "t_c",
        "t_last",
        "target",
        "u",
        "working",
    )

    def __init__(self, cfg: HeaterConfig, t_amb: float, settled: bool) -> None:
        self.cfg = cfg
        self.t_amb = t_amb
        self.period_ns = round(cfg.period_s * NS_PER_S)
        self.target: float | None = cfg.setpoint_c
        self.ramp_k_per_s = (cfg.ramp_k_per_min or 0.0) / 60.0
        if cfg.start_c is not None:
            start = cfg.start_c
        elif settled and cfg.setpoint_c is not None:
            start = cfg.setpoint_c
        else:
            start = t_amb
        self.t_c = start
        self.t_last = 0
        self.working: float | None = self.target
        self.u = 0.0
        self.integral = 0.0
        self.prev_pv = start
        self.runaway = False
        self.sensor_break = False
        self.element_factor = 1.0
        self.settled = False
        self.next_tick = 0
        if self.target is not None and start == self.target:
            self._snap()
        elif self.target is None and start == t_amb:
            self.settled = True

    # -- plant
    def _t_ss(self, u: float) -> float:
        return self.t_amb + self.cfg.gain_k * self.element_factor * u

    def applied_output(self) -> float:
        return 1.0 if self.runaway else self.u

    def _plant(self, t: int) -> None:
        dt = t - self.t_last
        if dt <= 0:
            return
        t_ss = self._t_ss(self.applied_output())
        self.t_c = t_ss + (self.t_c - t_ss) * math.exp(-dt / (self.cfg.tau_s * NS_PER_S))
        self.t_last = t

    def _snap(self) -> None:
        assert self.target is not None
        self.working = self.target
        self.t_c = self.target
        u_eq = (self.target - self.t_amb) / self.cfg.gain_k
        self.u = u_eq
        self.integral = u_eq
        self.prev_pv = self.target
        self.settled = 0.0 < u_eq < 1.0

    def equilibrium_ok(self) -> bool:
        if self.target is None:
            return True
        return 0.0 < (self.target - self.t_amb) / self.cfg.gain_k < 1.0

    # -- controller
    def _tick(self) -> bool:
        """One controller update; True when the loop has settled."""
        cfg = self.cfg
        period_s = self.period_ns / NS_PER_S
        if self.target is None:
            self.u = 0.0
            self.working = None
        elif self.sensor_break:
            self.u = cfg.sensor_break_output_pct / 100.0
        else:
            if self.working is None:
                self.working = self.t_c if self.ramp_k_per_s > 0 else self.target
            if self.working != self.target:
                if self.ramp_k_per_s > 0:
                    step = self.ramp_k_per_s * period_s
                    if abs(self.target - self.working) <= step:
                        self.working = self.target
                    elif self.target > self.working:
                        self.working += step
                    else:
                        self.working -= step
                else:
                    self.working = self.target
            pv = self.t_c
            e = self.working - pv
            kp = cfg.kp
            p = kp * e
            d = -kp * cfg.td_s * (pv - self.prev_pv) / period_s if cfg.td_s else 0.0
            trial = self.integral + kp * period_s / cfg.ti * e
            raw = p + self.integral + d
            # conditional integration: no wind-up while the output is saturated
            if (0.0 < raw < 1.0) or (raw >= 1.0 and e < 0.0) or (raw <= 0.0 and e > 0.0):
                self.integral = min(max(trial, -1.0), 2.0)
            self.u = min(max(p + self.integral + d, 0.0), 1.0)
            self.prev_pv = pv
        self._check_settled()
        return self.settled

    def _check_settled(self) -> None:
        if self.runaway or self.sensor_break or self.element_factor != 1.0:
            return
        if self.target is None:
            if abs(self.t_c - self.t_amb) < _SETTLE_K:
                self.t_c = self.t_amb
                self.settled = True
            return
        if self.working != self.target:
            return
        rate = abs(self._t_ss(self.u) - self.t_c) / self.cfg.tau_s * (self.period_ns / NS_PER_S)
        if abs(self.target - self.t_c) < _SETTLE_K and rate < _SETTLE_RATE_K and 0 < self.u < 1:
            self._snap()

    def open_loop(self) -> bool:
        """True when the output does not depend on the temperature (off, broken, welded)."""
        return self.target is None or self.sensor_break or self.runaway

    def rate_k_s(self) -> float:
        """Present rate of change of the true temperature, K/s (0 when settled)."""
        if self.settled:
            return 0.0
        return abs(self._t_ss(self.applied_output()) - self.t_c) / self.cfg.tau_s

    def advance_to(self, t: int) -> None:
        if self.settled:
            self.t_last = t
            return
        if self.open_loop():
            # Constant output: the plant is linear, so one exact update covers any span.
            if self.target is None:
                self.u = 0.0
                self.working = None
            elif self.sensor_break:
                self.u = self.cfg.sensor_break_output_pct / 100.0
            else:  # runaway: what a controller above its setpoint would show
                self.u = 0.0 if self.t_c > (self.working or self.target) else 1.0
            self._plant(t)
            self.next_tick = t
            if self.target is None and not self.runaway and abs(self.t_c - self.t_amb) < _SETTLE_K:
                self.t_c = self.t_amb
                self.settled = self.element_factor == 1.0 and not self.sensor_break
            return
        while self.next_tick <= t:
            self._plant(self.next_tick)
            if self._tick():
                self.t_last = t
                return
            self.next_tick += self.period_ns
        self._plant(t)

    def wake(self, t: int) -> None:
        """Something changed (setpoint, fault): run the loop again from ``t``."""
        if self.settled:
            self.t_last = t
            self.next_tick = t
        self.settled = False

    def command(self, t: int, setpoint_c: float | None, ramp_k_per_min: float | None) -> None:
        self.advance_to(t)
        if setpoint_c is not None:
            setpoint_c = min(setpoint_c, self.cfg.max_c)
        self.ramp_k_per_s = (ramp_k_per_min or 0.0) / 60.0
        if setpoint_c is None:
            self.working = None
        elif self.target is None or self.ramp_k_per_s > 0:
            # a ramp (and a loop switched on) starts from the present temperature
            self.working = self.t_c if self.ramp_k_per_s > 0 else setpoint_c
        self.target = setpoint_c
        self.wake(t)

    def measured_pv(self, rng: Rng) -> float | None:
        if self.sensor_break:
            return None
        return quantise(self.t_c + rng.gauss(0.0, self.cfg.noise_k), self.cfg.resolution_k)


# --------------------------------------------------------------------------- gauge


class Gauge:
    """Capacitance manometer; ``lagged_torr`` is integrated by the reactor."""

    __slots__ = ("cfg", "drift_rate", "drift_start", "lagged_torr", "offset")

    def __init__(self, cfg: GaugeConfig, p0: float) -> None:
        self.cfg = cfg
        self.lagged_torr = p0
        self.offset = 0.0
        self.drift_rate = 0.0
        """Torr/s of drift while a drift fault is active."""
        self.drift_start = 0

    def measured(self, t: int, rng: Rng) -> float | None:
        drift = self.offset + self.drift_rate * (t - self.drift_start) / NS_PER_S
        value = self.lagged_torr + drift + rng.gauss(0.0, self.cfg.noise_torr)
        if value > 1.1 * self.cfg.full_scale_torr:
            return None
        return quantise(value, self.cfg.resolution_torr)


# --------------------------------------------------------------------------- QCM


class Qcm:
    """Quartz crystal microbalance on the substrate holder."""

    __slots__ = ("cfg", "density", "last_t", "last_thickness", "rate", "zero_hz")

    def __init__(self, cfg: QcmConfig, density_g_cm3: float) -> None:
        self.cfg = cfg
        self.density = cfg.density_g_cm3 or density_g_cm3
        self.zero_hz = cfg.f0_hz
        self.last_t = -1
        self.last_thickness = 0.0
        self.rate = 0.0

    @property
    def c_f(self) -> float:
        """Sauerbrey sensitivity, Hz cm2/ng."""
        return 2.0 * self.cfg.f0_hz**2 / math.sqrt(_RHO_Q_G_CM3 * _MU_Q_G_CM_S2) * 1e-9

    def frequency(self, mass_ng_cm2: float) -> float:
        return self.cfg.f0_hz - self.c_f * mass_ng_cm2

    def thickness_a(self, f_hz: float) -> float:
        # ng/cm2 -> A: 1e-9 g / (rho g/cm3) = 1e-9/rho cm = 0.1/rho A
        return (self.zero_hz - f_hz) / self.c_f * 0.1 / self.density

    def life_pct(self, f_hz: float) -> float:
        return max(0.0, 100.0 * (1.0 - (self.cfg.f0_hz - f_hz) / self.cfg.life_shift_hz))


# --------------------------------------------------------------------------- plasma


class Plasma:
    """RF generator + match + discharge."""

    __slots__ = ("cfg", "ignite_at", "ignited", "ignited_at", "on", "setpoint_w")

    def __init__(self, cfg: PlasmaConfig) -> None:
        self.cfg = cfg
        self.on = False
        self.setpoint_w = 0.0
        self.ignited = False
        self.ignite_at = -1
        self.ignited_at = 0

    def forward_w(self) -> float:
        return self.setpoint_w if self.on else 0.0

    def reflected_fraction(self, t: int, tuned: float) -> float:
        if not self.on:
            return 0.0
        if not self.ignited:
            return UNLOADED_REFLECTED
        tau = self.cfg.tune_ms * NS_PER_MS
        if tau <= 0:
            return tuned
        return tuned + (UNLOADED_REFLECTED - tuned) * math.exp(-(t - self.ignited_at) / tau)


# --------------------------------------------------------------------------- ozone


class Ozone:
    """Ozone generator output concentration (wt % O3 in O2)."""

    __slots__ = ("c0", "cfg", "on", "setpoint_pct", "t0")

    def __init__(self, cfg: OzoneConfig) -> None:
        self.cfg = cfg
        self.on = False
        self.setpoint_pct = 0.0
        self.c0 = 0.0
        self.t0 = 0

    def goal(self) -> float:
        return self.setpoint_pct if self.on else 0.0

    def concentration(self, t: int) -> float:
        g = self.goal()
        if self.c0 == g:
            return g
        return g + (self.c0 - g) * math.exp(-(t - self.t0) / (self.cfg.tau_s * NS_PER_S))

    def average(self, t: int, dt: int) -> float:
        """Mean concentration over [t, t + dt]."""
        g = self.goal()
        c = self.concentration(t)
        if c == g or dt <= 0:
            return c
        x = dt / (self.cfg.tau_s * NS_PER_S)
        return g + (c - g) * (-math.expm1(-x)) / x

    def retarget(self, t: int) -> None:
        self.c0 = self.concentration(t)
        self.t0 = t

    def settled(self, t: int) -> bool:
        g = self.goal()
        if self.c0 == g:
            return True
        if abs(self.concentration(t) - g) < 1e-9:
            self.c0 = g
            self.t0 = t
            return True
        return False


def ozone_mole_fraction(wt_pct: float) -> float:
    """Mole fraction of O3 in an O3/O2 mixture of ``wt_pct`` weight % O3."""
    w = min(max(wt_pct, 0.0), 100.0) / 100.0
    n3 = w / 48.0
    n2 = (1.0 - w) / 32.0
    return n3 / (n3 + n2) if n3 + n2 > 0 else 0.0
