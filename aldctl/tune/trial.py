"""Dose and purge times of one reactant line from a short trial on the tool.

The trial (designed and run by ``aldctl tune RECIPE``) gives, for a line:

* a **pulse train**: short pulses of width ``w`` on a surface ready for this reactant, each
  followed by a long purge, with the mass the QCM gained per pulse (or, without a QCM, the
  pressure response's area per pulse, which rises to its no-uptake value as the surface
  saturates);
* two **calibration pulses** of widths ``w`` and ``2 w`` after saturation: their pressure
  areas ``A(w) = alpha (w - w0)`` give the valve's dead width ``w0`` (dead time and stroke: a
  pulse of ``w`` delivers what an ideal valve delivers in ``w - w0``), so that ``k`` pulses of
  ``w`` deliver what one pulse of ``w0 + k (w - w0)`` does;
* a **pressure decay** after a pulse: the chamber's residence time ``tau``;
* a **short-purge check**: the growth per cycle with this line's purge cut to ``p_s``, over the
  growth with long purges: the CVD share ``c(p_s) = X e^{-p_s / tau}`` (the reactant left in
  the chamber, ``e^{-p/tau}``, reacting with the next dose in the gas), which gives ``X``.

Saturation from the train: with the surface's uptake first-order in exposure, the fraction
still free after k pulses is ``1 - theta_k = sum_{i>k} dm_i / sum_i dm_i``; the effective dose
at which it reaches 1 % is interpolated linearly in ``ln(1 - theta)`` (exact for first-order
Langmuir, where ``ln(1 - theta)`` falls linearly with exposure, and still an interpolation of
measured points where uptake is delivery-limited). The recommended dose is that effective
dose plus ``w0``. Purge: the shortest ``p`` with ``X e^{-p / tau} <= 1 %``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

CVD_LIMIT = 0.01
SAT_TARGET = 0.99


class TrialError(ValueError):
    """The trial's data cannot give an answer (and why)."""


@dataclass(frozen=True, slots=True)
class Saturation:
    pulse_s: float
    """Width of each train pulse."""
    dead_s: float
    """Valve dead width w0."""
    gains: tuple[float, ...]
    """Per-pulse signal gains (QCM mass or pressure-area deficit)."""
    dose_s: float
    """Recommended dose: 99 % of saturation in one pulse."""
    free: tuple[float, ...]
    """1 - theta after each pulse."""
    reach: float = 1.0
    """Fraction of the surface's capacity the longest single pulse reaches (< 1: the source,
    not the pulse time, limits the dose)."""
    curve: tuple[tuple[float, float], ...] = ()
    """Measured growth per cycle against the single pulse's width, where one was taken."""
    equivalent: tuple[float, ...] = ()
    """Per train pulse k: the single pulse width that delivers what k train pulses did."""
    fit: tuple[tuple[float, float], ...] = ()
    """The fitted uptake law as (single-pulse width, fraction of saturation) points."""

    def effective(self, k: int) -> float:
        return k * (self.pulse_s - self.dead_s)


def valve_dead_width(w: float, area_w: float, area_2w: float) -> float:
    """``w0`` from the pressure areas of pulses of ``w`` and ``2 w`` on a saturated surface."""
    alpha = (area_2w - area_w) / w
    if not alpha > 0.0 or not area_w > 0.0:
        msg = "the calibration pulses gave no pressure response (valve or gauge not working?)"
        raise TrialError(msg)
    return max(0.0, w - area_w / alpha)


def delivered_width(widths: Sequence[float], areas: Sequence[float], amount: float) -> float:
    """The single-pulse width whose delivery (pressure area on a saturated surface) is
    ``amount``: interpolated on the calibration pulses, linear beyond the last two."""
    pts = sorted(zip(areas, widths, strict=True))
    for (a0, w0), (a1, w1) in itertools.pairwise(pts):
        if amount <= a1 or (a1, w1) == pts[-1]:
            if a1 == a0:
                return w1
            return w0 + (w1 - w0) * (amount - a0) / (a1 - a0)
    return pts[-1][1]


def fit_uptake(delivered: Sequence[float], theta: Sequence[float]) -> tuple[float, float]:
    """Least squares of the well-stirred uptake law ``D = a theta + b (-ln(1 - theta))``
    (aldsim's well-stirred batch: a is the delivery of one monolayer, b = a / Da) on the
    trial's points with 3-97 % coverage; a, b >= 0. Returns (a, b)."""
    pts = [(d, t) for d, t in zip(delivered, theta, strict=True) if 0.03 <= t <= 0.97]
    if len(pts) < 2:
        msg = "too few trial points between 3 and 97 % of saturation to fit"
        raise TrialError(msg)
    xs1 = [t for _, t in pts]
    xs2 = [-math.log1p(-t) for _, t in pts]
    ys = [d for d, _ in pts]

    def one(xs: list[float]) -> float:
        return sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)

    s11 = sum(x * x for x in xs1)
    s22 = sum(x * x for x in xs2)
    s12 = sum(x * y for x, y in zip(xs1, xs2, strict=True))
    r1 = sum(x * y for x, y in zip(xs1, ys, strict=True))
    r2 = sum(x * y for x, y in zip(xs2, ys, strict=True))
    det = s11 * s22 - s12 * s12
    if det > 1e-12 * s11 * s22:
        a = (r1 * s22 - r2 * s12) / det
        b = (r2 * s11 - r1 * s12) / det
        if a >= 0.0 and b >= 0.0:
            return a, b
    # On the boundary: the better of the two one-term fits.
    a1 = one(xs1)
    b2 = one(xs2)
    e1 = sum((a1 * x - y) ** 2 for x, y in zip(xs1, ys, strict=True))
    e2 = sum((b2 * x - y) ** 2 for x, y in zip(xs2, ys, strict=True))
    return (a1, 0.0) if e1 < e2 else (0.0, b2)


def saturation_from_train(gains: Sequence[float], pulse_s: float, dead_s: float) -> Saturation:
    total = float(sum(gains))
    if not total > 0.0:
        msg = "the pulse train gave no signal: the line did not react"
        raise TrialError(msg)
    free: list[float] = []
    left = total
    for g in gains:
        left -= g
        free.append(max(left / total, 0.0))
    eff = pulse_s - dead_s
    if not eff > 0.0:
        msg = f"the train's pulses ({pulse_s * 1e3:.0f} ms) are shorter than the valve's dead width"
        raise TrialError(msg)
    target = 1.0 - SAT_TARGET
    # Fraction free before the first pulse is 1 at zero dose.
    prev_f, prev_d = 1.0, 0.0
    dose_eff = None
    for k, f in enumerate(free, start=1):
        d = k * eff
        if f <= target:
            # Pulses whose gain is below resolution leave nothing free: interpolate to a
            # floor a decade under the target instead of log(0).
            floor = f if f > 0.0 else min(target / 10.0, prev_f / 10.0)
            lp, lf = math.log(prev_f), math.log(floor)
            lt = math.log(target)
            dose_eff = prev_d + (d - prev_d) * (lp - lt) / (lp - lf)
            break
        prev_f, prev_d = f, d
    if dose_eff is None:
        msg = "the train did not saturate the surface (more or longer pulses needed)"
        raise TrialError(msg)
    return Saturation(pulse_s, dead_s, tuple(gains), dose_eff + dead_s, tuple(free))


def residence_time(times_s: Sequence[float], pressures: Sequence[float], base: float) -> float:
    """Exponential decay time of the pressure after a pulse, from the peak's first reading.

    Least squares of ``p = b + A exp(-t / tau)`` over the readings from where the excess
    above ``base`` first falls under 50 % of the first reading's to the end of the record,
    with the level ``b`` fitted too: ``base`` only places the window. A decay time fitted
    against a given base (log-linear, down to 2 % of the first point) took on that base's
    error: the purge after a long calibration pulse ends at ~1 % of its peak, so the base
    read from the purge's last quarter sat above the chamber's, and how far depended on how
    many readings it averaged (20 + 28 every 5 ms on the simulated tool, 5 + 2 over the
    wire): tau came out 0.107-0.113 s in the simulated trial and 0.116-0.121 s through the
    wire, both short of the reactor's 0.141 s; the fitted level takes both to 0.141 s. Falls
    back to the log-linear fit against ``base`` when fewer than 5 readings are in the
    window or the level-free fit finds no decay (a base drifting through a short pulse's
    small response).
    """
    import numpy as np

    p0 = pressures[0] - base
    start = next((k for k, p in enumerate(pressures) if p - base <= 0.5 * p0), None)
    if start is None or len(pressures) - start < 5:
        return _residence_loglinear(times_s, pressures, base)
    t = np.asarray(times_s[start:], dtype=float)
    t = t - t[0]
    p = np.asarray(pressures[start:], dtype=float)
    span = float(t[-1])

    def misfit(log_tau: float) -> tuple[float, float]:
        e = np.exp(-t / math.exp(log_tau))
        m = np.column_stack([np.ones_like(t), e])
        coef, *_ = np.linalg.lstsq(m, p, rcond=None)
        return float(np.sum((m @ coef - p) ** 2)), float(coef[1])

    # The misfit over log tau: a coarse scan, then golden sections around its minimum.
    lo, hi = math.log(max(span, 1e-6) / 1000.0), math.log(max(span, 1e-6) * 30.0)
    grid = np.linspace(lo, hi, 120)
    vals = [misfit(float(x))[0] for x in grid]
    k = int(np.argmin(vals))
    if k == len(grid) - 1:
        # No decay the level could not explain as well (a drifting base): the fit against
        # ``base`` says whether there is one.
        return _residence_loglinear(times_s, pressures, base)
    a, b = float(grid[max(k - 1, 0)]), float(grid[k + 1])
    g = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(50):
        c1, c2 = b - g * (b - a), a + g * (b - a)
        if misfit(c1)[0] < misfit(c2)[0]:
            b = c2
        else:
            a = c1
    log_tau = 0.5 * (a + b)
    if not misfit(log_tau)[1] > 0.0:
        return _residence_loglinear(times_s, pressures, base)
    return math.exp(log_tau)


def _residence_loglinear(
    times_s: Sequence[float], pressures: Sequence[float], base: float
) -> float:
    """Log-linear fit of ``p - base`` from where it falls under 50 % of the first point's
    excess to where it first falls under 2 % (later readings are the gauge's noise)."""
    xs: list[float] = []
    ys: list[float] = []
    p0 = pressures[0] - base
    for t, p in zip(times_s, pressures, strict=True):
        ex = p - base
        if ex < 0.02 * p0:
            if xs:
                break
            continue
        if ex <= 0.5 * p0:
            xs.append(t)
            ys.append(math.log(ex))
    if len(xs) < 3:
        msg = "the pressure decay after a pulse was too small to measure the residence time"
        raise TrialError(msg)
    mx = sum(xs) / len(xs)
    my = sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    if not slope < 0.0:
        msg = "the pressure did not decay after a pulse"
        raise TrialError(msg)
    return -1.0 / slope


def purge_for(tau_s: float, short_purge_s: float, cvd_share: float) -> tuple[float, float]:
    """(shortest purge with CVD <= 1 %, X) from the CVD share measured at a short purge."""
    if cvd_share <= CVD_LIMIT:
        # Already under the limit at the short purge: the purge is bounded by it.
        return short_purge_s, cvd_share * math.exp(short_purge_s / tau_s)
    x = cvd_share * math.exp(short_purge_s / tau_s)
    return tau_s * math.log(x / CVD_LIMIT), x


def purge_from_shares(
    tau_s: float, shares: Sequence[float], resolution: float
) -> tuple[float, float, float, float]:
    """Shortest purge with CVD <= 1 % from the CVD shares measured at purges of one and three
    residence times: the share's own decay time between the two (a sticky species that the
    walls release slowly decays slower than the gas), else tau. Returns (purge, X, the purge
    the answer is anchored at, its share)."""
    p1, p2 = tau_s, 3.0 * tau_s
    s1, s2 = shares
    if s2 > max(resolution, 1e-4) and s1 > s2:
        decay = (p2 - p1) / math.log(s1 / s2)
        purge = p2 + decay * math.log(s2 / CVD_LIMIT)
        return max(purge, 0.0), s2 * math.exp(p2 / decay), p2, s2
    if s1 > max(resolution, 1e-4):
        purge, x = purge_for(tau_s, p1, s1)
        return purge, x, p1, s1
    # Under resolution already at one residence time.
    return p1, 0.0, p1, max(s1, 0.0)


def _theta_of(delivered: float, a: float, b: float) -> float:
    """Inverse of the uptake law ``D = a theta + b (-ln(1 - theta))`` (monotone: bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        d = a * mid + (b * -math.log1p(-mid) if mid < 1.0 else math.inf)
        lo, hi = (mid, hi) if d < delivered else (lo, mid)
    return 0.5 * (lo + hi)


def single_pulse_saturation(
    gains: Sequence[float],
    w: float,
    dead: float,
    widths: Sequence[float],
    areas: Sequence[float],
) -> Saturation:
    """The single-pulse dose for 99 % of saturation from a pulse train.

    ``gains``: the fraction of the surface each train pulse of ``w`` converted (they add up
    to 1); ``widths``/``areas``: the calibration pulses' pressure areas on the saturated
    surface (what a single pulse of each width delivers). The uptake law is fitted on the
    cumulative delivery (k pulses deliver k A(w)); the delivery for 99 % is converted to a
    width on the calibration curve. Where no single pulse delivers that much (a source whose
    headspace empties: the area stops growing with the width), the target is 99 % of what the
    longest pulse reaches, and ``reach`` says how much of the surface that is. Falls back to
    interpolating the measured points when too few lie on the rising part to fit.
    """
    base = saturation_from_train([max(g, 0.0) for g in gains], w, dead)
    per_pulse = areas[list(widths).index(w)]
    theta = list(itertools.accumulate(gains))
    # Only the rising part: up to the first point within 3 % of saturation (after it the
    # signal is at its plateau and noise, which the uptake law cannot explain).
    end = next((k for k, t in enumerate(theta) if t >= 0.97), len(theta))
    delivered = [per_pulse * k for k in range(1, end + 1)]
    top = max(areas)
    equivalent = tuple(
        delivered_width(widths, areas, per_pulse * k) for k in range(1, len(theta) + 1)
    )
    fit: tuple[tuple[float, float], ...] = ()
    try:
        a, b = fit_uptake(delivered, theta[:end])
    except TrialError:
        need = saturation_from_train(gains, per_pulse, 0.0).dose_s
        reach = 1.0
    else:
        fit = tuple(
            (delivered_width(widths, areas, d), _theta_of(d, a, b))
            for d in (per_pulse * len(theta) * j / 60.0 for j in range(1, 61))
            if d <= top
        )
        need = SAT_TARGET * a + math.log(1.0 / (1.0 - SAT_TARGET)) * b
        reach = 1.0
        if need > top:
            reach = _theta_of(top, a, b)
            t = SAT_TARGET * reach
            need = a * t + b * -math.log1p(-t)
    dose = delivered_width(widths, areas, need)
    return Saturation(w, dead, base.gains, dose, base.free, reach, equivalent=equivalent, fit=fit)


def dose_from_curve(curve: Sequence[tuple[float, float]]) -> float:
    """The shortest width whose growth per cycle reaches 99 % of the curve's plateau (its
    largest value), interpolated linearly between measured widths."""
    pts = sorted(curve)
    top = max(g for _, g in pts)
    goal = SAT_TARGET * top
    for (w0, g0), (w1, g1) in itertools.pairwise(pts):
        if g1 >= goal:
            if g0 >= goal:
                return w0
            return w0 + (w1 - w0) * (goal - g0) / (g1 - g0)
    return pts[-1][0]
