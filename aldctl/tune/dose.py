"""Saturation dose time from one trial profile along a cross-flow reactor.

Physics (the method's assumptions; README "Tuning" says when they fail). A precursor fed at
a constant rate into a plug-flow channel reacts with the walls by first-order irreversible
Langmuir kinetics: with y the precursor's concentration over its inlet value, theta the
converted fraction of the surface and x the position over the length,

    d theta / dt = a y (1 - theta)          (local kinetics: a = rate at the inlet concentration)
    d y / dx     = -Da y (1 - theta)        (depletion: Da = v beta A / (4 Q), in retarded time)

With a fresh surface and a square dose this has the closed form (Thomas; Bohart-Adams for
irreversible uptake), in retarded time t - x tau_res, which for a square pulse is the dose
time at every position:

    theta(x, T) = E / (E + e^{Da x}),   E = e^{a T} - 1

i.e. the growth profile after a dose T is a logistic in x, ``theta = sigma(p - Da x)`` with
``p = ln E``: the front sits at ``x_c = p / Da`` and its steepness is the depletion ``Da``. A
trial profile therefore gives p and Da (and the saturated growth, when the inlet is saturated
and it is not given), without knowing the sticking probability, the flow or the geometry. The
outlet (x = 1) reaches 99 % when ``E = 99 e^{Da}``, so the saturation dose time is

    T_99 = T ln(1 + 99 e^{Da}) / ln(1 + e^p)

Everything between inlet and outlet is the delivery: a dose saturates the length that its
precursor can cover, ``(a/Da) T``, plus a kinetic tail of ``ln(99)/a``.

Uncertainty: the half-width of a 95 % interval (``COVERAGE``). Two parts in quadrature: the
noise's, by the delta method through the fit's covariance with the residual standard deviation
(floored at ``NOISE_FLOOR`` of saturated growth, the measurement's resolution when residuals are
nil) as the measurement noise, together with how far the dispersion correction moved the answer;
and the model's own error, which the residuals do not show (a front sharper than the points'
spacing, axial dispersion that changes the front's shape): a table ``MODEL_ERROR`` of relative
errors by the front's steepness per point spacing and by how well the logistic fits, measured by
``aldctl bench tune --calibrate`` against brute-force truth on the cross-flow simulator (a seed
the benchmark's own figures do not use).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from aldctl import yamlsrc
from aldctl.diagnostics import UserError, plain_word

Array = NDArray[np.float64]

MIN_POINTS = 4
MAX_POINTS = 20
TARGET = 0.99
NOISE_FLOOR = 0.002
COVERAGE = 0.95
"""The stated uncertainty is the half-width of an interval meant to hold the truth this often."""
Z_COVERAGE = 1.959964
STEEPNESS_EDGES = (0.03, 0.1, 0.3, 1.0, 2.0, 4.0, 8.0)
"""Bin edges of the front's steepness per point spacing, max(Da, Da_kin) / N (open ends)."""
RESIDUAL_EDGES = (2e-4, 2e-3)
"""Fit classes by rms misfit (fraction of saturated growth): a clean logistic, a visible
misfit below the noise floor (the model's shape is off), a noisy profile."""
# Relative model error (95th percentile of what the noise's part leaves uncovered), per fit
# class (rows) and steepness bin (columns); printed by `aldctl bench tune --calibrate`
# (2,000 conditions per chamber kind, seed 2, both kinds and noise levels pooled). Zeros: the
# noise's part alone already covers 95 % there.
MODEL_ERROR: tuple[tuple[float, ...], ...] = (
    (0, 0, 0, 0, 0, 0.0698, 0.1678, 0.1797),
    (0.0126, 0.0167, 0.0199, 0.0249, 0.1006, 0.1026, 0.1936, 0.1936),
    (0.0066, 0.0218, 0.0562, 0.0707, 0.0914, 0.1273, 0.1944, 0.402),
)


class ProfileError(ValueError):
    """A profile file that cannot be read, with its location."""

    def __init__(self, path: str, line: int, col: int, message: str, hint: str) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.col = col
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: error: {self.message} (hint: {self.hint})"


class Refusal(ValueError):
    """A profile the method cannot answer for, and why (one line) with what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Profile:
    values: tuple[float, ...]
    fraction: bool
    """True: values are fractions of saturated growth; False: thicknesses (scale unknown)."""
    header: str | None = None

    @property
    def positions(self) -> Array:
        n = len(self.values)
        return np.arange(1, n + 1, dtype=np.float64) / n


def read_profile(path: Path) -> Profile:
    """Read a profile: one value per line, optional header, CSV (first column used).

    A header naming a fraction (``fraction``, ``normalised``, ``relative``) or values all
    <= 1.02 make the values fractions of saturated growth; otherwise they are thicknesses
    in any unit and the saturated growth is found from the profile.
    """
    name = str(path)
    # The recipe loader's reader: a regular file only (a FIFO would block for ever), and at
    # most its size bound (/dev/zero never ends).
    try:
        text = yamlsrc.read_bounded(path).decode("utf-8")
    except UserError as exc:
        d = exc.diagnostics[0]
        hint = d.hint or "give the path of the profile CSV"
        raise ProfileError(name, 1, 1, d.message.replace(f"{name} ", "the file "), hint) from None
    except UnicodeDecodeError:
        raise ProfileError(name, 1, 1, "not UTF-8 text", "a text CSV") from None
    values: list[float] = []
    header: str | None = None
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not cells or all(not c for c in cells):
            continue
        first = cells[0]
        col = 1 + (len(row[0]) - len(row[0].lstrip()))
        if first.startswith("#"):
            continue
        try:
            v = float(first)
        except ValueError:
            if header is None and not values:
                header = first
                continue
            raise ProfileError(
                name,
                lineno,
                col,
                # A cell that is no plain word may be a line of a file given by mistake.
                f"not a number: {first!r}" if plain_word(first) else "not a number",
                "one value per line after the header",
            ) from None
        if not math.isfinite(v):
            raise ProfileError(name, lineno, col, f"not a finite number: {first!r}", "a thickness")
        if v < 0.0:
            raise ProfileError(
                name, lineno, col, f"negative growth {v:g}", "thickness or fraction, >= 0"
            )
        values.append(v)
    n = len(values)
    if not MIN_POINTS <= n <= MAX_POINTS:
        raise ProfileError(
            name,
            max(1, len(text.splitlines())),
            1,
            f"{n} values; the method needs {MIN_POINTS} to {MAX_POINTS}",
            "the k-th value measured at k/N of the length from the inlet, the last at the outlet",
        )
    frac_header = header is not None and any(
        w in header.lower() for w in ("fraction", "normalised", "normalized", "relative")
    )
    return Profile(tuple(values), frac_header or max(values) <= 1.02, header)


@dataclass(frozen=True, slots=True)
class DoseFit:
    trial_dose_s: float
    saturation_dose_s: float
    uncertainty_s: float
    p: float
    """ln(e^{aT} - 1): the profile's logistic offset."""
    damkohler: float
    saturated: float
    """Saturated growth in the profile's unit (1 for fractions)."""
    rate_per_s: float
    """a: local Langmuir rate at the inlet concentration."""
    residual: float
    """rms of the fit, in fractions of saturated growth."""
    positions: tuple[float, ...]
    fractions: tuple[float, ...]
    fraction_input: bool
    kinetic_damkohler: float = 0.0
    """The trailing edge's logistic slope where it is steeper than the fit's (axial
    dispersion spreads the leading edge), else the fit's Da."""
    statistical_s: float = 0.0
    """Standard deviation of the answer from the measurement noise alone (delta method)."""
    correction_s: float = 0.0
    """How far the dispersion correction moved the answer from the logistic fit's."""
    steepness: float = 0.0
    """max(Da, Da_kin) / N: the front's steepness per point spacing."""

    def model(self, x: Array, dose_s: float | None = None) -> Array:
        """Fraction of saturated growth at positions x after ``dose_s`` (default: the trial)."""
        t = self.trial_dose_s if dose_s is None else dose_s
        e = math.expm1(self.rate_per_s * t)
        if e <= 0.0:
            return np.zeros_like(x)
        return _sigmoid(math.log(e) - self.damkohler * x)

    @property
    def front(self) -> float:
        """Position (fraction of the length) where the trial reached half saturation."""
        return self.p / self.damkohler if self.damkohler > 1e-9 else math.inf

    @property
    def consumed_fresh(self) -> float:
        """Fraction of the feed a fresh surface consumes in one pass: 1 - e^{-Da}."""
        return -math.expm1(-self.damkohler)

    def reasoning(self) -> str:
        da = self.damkohler
        sat = self.saturation_dose_s
        # The local rate behind the front: the trailing edge's slope times the front speed.
        a_kin = self.rate_per_s * max(self.kinetic_damkohler, da) / da if da > 0 else 0.0
        kin = math.log(99.0) / (a_kin or self.rate_per_s)
        deliver = sat - kin
        regime = (
            "delivery-limited: most precursor sticks before the outlet, so the saturated zone "
            "advances as a front"
            if da > 3.0
            else "reaction-limited: most precursor passes a fresh surface unreacted, so growth "
            "rises nearly uniformly"
            if da < 0.5
            else "limited by both delivery and reaction"
        )
        front = (
            f"the trial's half-saturation front is at {self.front:.2f} of the length"
            if 0.0 < self.front <= 1.0
            else f"the trial's half-saturation point lies beyond the outlet ({self.front:.2f} "
            "lengths from the inlet)"
            if 1.0 < self.front < 10.0
            else "there is no front inside the chamber"
        )
        spread = (
            f" Its trailing edge is steeper (slope {self.kinetic_damkohler:.2f}) than its "
            "leading edge: axial dispersion spreads the leading edge, so the outlet's approach "
            "to saturation is taken from the trailing edge's kinetics."
            if self.kinetic_damkohler > self.damkohler
            else ""
        )
        return (
            f"The {len(self.positions)}-point profile after {self.trial_dose_s:g} s falls from "
            f"{self.fractions[0]:.1%} to {self.fractions[-1]:.1%} of saturated growth and fits a "
            f"plug-flow Langmuir front (rms {self.residual:.2%}): a fresh surface would consume "
            f"{self.consumed_fresh:.0%} of the precursor in one pass (Damkoehler number "
            f"{da:.2f}), so the process is {regime}; {front}. The local uptake rate at the inlet "
            f"is {self.rate_per_s:.3g}/s, i.e. a point that sees the full feed saturates to 99 % "
            f"in {kin:.3g} s; delivering enough precursor to reach the outlet takes another "
            f"{max(deliver, 0.0):.3g} s, so the outlet reaches 99 % after {sat:.3g} s "
            f"(+/- {self.uncertainty_s:.2g} s, a {COVERAGE:.0%} interval).{spread}"
        )


def fit_class(residual: float) -> int:
    """0: clean logistic, 1: misfit below the noise floor, 2: noisy (see RESIDUAL_EDGES)."""
    return sum(1 for e in RESIDUAL_EDGES if residual >= e)


def steepness_bin(steep: float) -> int:
    return sum(1 for e in STEEPNESS_EDGES if steep >= e)


def model_error(steep: float, residual: float) -> float:
    """Relative model error of the answer (95 %), interpolated in log steepness between the
    bins' geometric centres."""
    row = MODEL_ERROR[fit_class(residual)]
    edges = (STEEPNESS_EDGES[0] / 3.0, *STEEPNESS_EDGES, STEEPNESS_EDGES[-1] * 2.0)
    centres = [math.log(math.sqrt(a * b)) for a, b in itertools.pairwise(edges)]
    u = math.log(max(steep, 1e-9))
    return float(np.interp(u, centres, row))


def _sigmoid(z: Array) -> Array:
    out: Array = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def _softplus(p: float) -> float:
    return max(p, 0.0) + math.log1p(math.exp(-abs(p)))


def _t99_factor(p: float, da: float) -> float:
    """T_99 / T."""
    num = math.log(99.0) + da + math.log1p(math.exp(-da) / 99.0)
    return num / _softplus(p)


def _fit(x: Array, y: Array, scale_known: bool) -> tuple[Array, Array, float]:
    """Least squares of y = s sigma(p - Da x) over (p, Da[, s]); returns params, covariance
    of the unscaled problem (J^T J)^-1 and the sum of squared residuals."""
    # Start from the linearised logit fit on points away from 0 and 1.
    s0 = 1.0 if scale_known else max(float(y.max()) * 1.02, 1e-12)
    f = np.clip(y / s0, 1e-3, 1 - 1e-3)
    w = f * (1 - f)
    logit = np.log(f / (1 - f))
    aw = np.stack([w, -w * x], axis=1)
    p0, da0 = np.linalg.lstsq(aw, w * logit, rcond=None)[0]
    params = np.array([p0, max(da0, 1e-3)] + ([] if scale_known else [s0]))
    lam = 1e-3

    def resid(q: Array) -> Array:
        s = 1.0 if scale_known else q[2]
        r: Array = s * _sigmoid(q[0] - q[1] * x) - y
        return r

    def jac(q: Array) -> Array:
        s = 1.0 if scale_known else q[2]
        sg = _sigmoid(q[0] - q[1] * x)
        d = s * sg * (1 - sg)
        cols = [d, -d * x]
        if not scale_known:
            cols.append(sg)
        return np.stack(cols, axis=1)

    r = resid(params)
    ssr = float(r @ r)
    # Levenberg-Marquardt: a handful of parameters, a few dozen iterations at most.
    for _ in range(200):
        j = jac(params)
        g = j.T @ r
        h = j.T @ j
        step = np.linalg.solve(h + lam * np.diag(np.diag(h) + 1e-12), -g)
        trial = params + step
        trial[1] = max(trial[1], 0.0)
        rt = resid(trial)
        st = float(rt @ rt)
        if st < ssr:
            converged = ssr - st < 1e-16 + 1e-12 * ssr
            params, r, ssr = trial, rt, st
            lam = max(lam / 3.0, 1e-12)
            if converged:
                break
        else:
            lam *= 4.0
            if lam > 1e12:
                break
    j = jac(params)
    cov: Array = np.asarray(np.linalg.pinv(j.T @ j), dtype=np.float64)
    return np.asarray(params, dtype=np.float64), cov, ssr


def fit_profile(
    profile: Profile | Sequence[float],
    trial_dose_s: float,
    *,
    fraction: bool | None = None,
    saturated: float | None = None,
    noise: float | None = None,
) -> DoseFit:
    """Saturation dose time from a trial profile (see the module docstring).

    ``saturated`` gives the saturated growth in the profile's unit (then the values are
    divided by it); ``noise`` the measurement's standard deviation as a fraction of saturated
    growth (default: from the fit's residuals, at least 0.2 %).
    """
    if isinstance(profile, Profile):
        vals = np.array(profile.values, dtype=np.float64)
        is_frac = profile.fraction if fraction is None else fraction
    else:
        vals = np.array(list(profile), dtype=np.float64)
        is_frac = bool(fraction) if fraction is not None else bool(vals.max() <= 1.02)
    n = len(vals)
    if not MIN_POINTS <= n <= MAX_POINTS:
        raise Refusal(f"{n} points; the method needs {MIN_POINTS} to {MAX_POINTS}", "measure more")
    if not trial_dose_s > 0.0:
        raise Refusal("the trial dose must be > 0", "e.g. --trial-dose 6.5s")
    if saturated is not None:
        vals = vals / saturated
        is_frac = True
    x = np.arange(1, n + 1, dtype=np.float64) / n
    top = float(vals.max())
    if top <= 0.0:
        raise Refusal("nothing grew anywhere", "check that the precursor line doses at all")
    sig = noise if noise is not None else NOISE_FLOOR
    scale = 1.0 if is_frac else top
    rel = vals / scale
    # Signal vs noise: the profile must rise clearly above zero.
    if is_frac and top < max(5.0 * sig, 0.02):
        raise Refusal(
            f"the profile is at noise level (largest value {top:.2%} of saturated growth)",
            "run a longer trial dose (several times this one)",
        )
    # CVD and non-plug-flow signatures before anything is fitted.
    if is_frac and top > 1.0 + max(4.0 * sig, 0.03):
        raise Refusal(
            f"growth of {top:.1%} of the saturated value: more than a self-limiting dose can give"
            " (CVD, decomposition, or precursor left from a short purge)",
            "lengthen the purges or lower the temperature, then repeat the trial",
        )
    rises = float(np.max(rel[1:] - np.maximum.accumulate(rel)[:-1]))
    if rises > max(5.0 * sig, 0.03):
        raise Refusal(
            "the growth rises downstream: a self-limiting plug-flow dose only falls from inlet to "
            "outlet (CVD from overlapping reactants, a temperature gradient, or points in the "
            "wrong order)",
            "the k-th value must be at k/N of the length from the inlet",
        )
    if is_frac and float(rel[-1]) >= TARGET:
        raise Refusal(
            f"the outlet is already saturated ({rel[-1]:.1%}): the trial dose "
            f"{trial_dose_s:g} s is at or above the saturation dose, and a saturated profile "
            "says nothing about how much shorter would do",
            "repeat the trial with a dose that leaves the outlet under-saturated: half this one",
        )
    if not is_frac and float(rel.min()) > 1.0 - max(5.0 * sig, 0.03):
        raise Refusal(
            "a flat thickness profile with no saturated value to compare: it is either saturated "
            "everywhere or uniformly under-dosed",
            "give --saturated THICKNESS (the saturated growth of this trial), or a shorter trial",
        )
    params, cov, ssr = _fit(x, vals, is_frac)
    p, da = float(params[0]), float(params[1])
    s = 1.0 if is_frac else float(params[2])
    k = len(params)
    resid_sd = math.sqrt(ssr / max(n - k, 1)) / s
    sd = max(resid_sd, sig) if noise is None else max(noise, resid_sd)
    if resid_sd > max(6.0 * sig, 0.03):
        raise Refusal(
            f"the profile does not have the shape of a plug-flow saturation front (rms misfit "
            f"{resid_sd:.1%} of saturated growth)",
            "check the points' order and spacing; CVD or a non-uniform temperature also do this",
        )
    if not is_frac and float(params[2]) > 0 and top / float(params[2]) < 0.2:
        raise Refusal(
            "the profile is too far below saturation to find the saturated thickness from it",
            "give --saturated THICKNESS, or a longer trial",
        )
    factor = _t99_factor(p, da)
    t_fit = trial_dose_s * factor
    t99 = t_fit
    # Axial dispersion (diffusion along the flow) spreads the front's leading edge, where the
    # gas concentration changes, and leaves its trailing edge alone: behind the front the gas
    # is at its inlet value and the surface follows its own kinetics. A trailing edge steeper
    # than the logistic fit's says so; the outlet's last percent then follows the trailing
    # edge's kinetics, at the front speed the fit gives (x_c / T).
    frac = vals / s
    trail = (frac > 0.5) & (frac < 1.0 - max(4.0 * sd, 0.02))
    da_kin = da
    if p > 3.0 and da > 1e-6 and int(trail.sum()) >= 2:
        xt = x[trail]
        lg = np.log(frac[trail] / (1.0 - frac[trail]))
        slope = -float(np.polyfit(xt, lg, 1)[0])
        if slope > 1.02 * da:  # steeper beyond rounding and the fit's own wobble
            da_kin = slope
            tail = math.log(99.0) + da_kin + math.log1p(math.exp(-da_kin) / 99.0)
            t99 = trial_dose_s * tail / (p / da * da_kin)
    # Delta method: gradient of T99 in (p, Da[, s]) times the covariance scaled by noise^2
    # (in the profile's unit).
    eps = 1e-6
    grad = np.zeros(k)
    for i in range(2):
        q = params.copy()
        q[i] += eps
        grad[i] = (trial_dose_s * _t99_factor(float(q[0]), float(q[1])) - t_fit) / eps
    var = float(grad @ cov @ grad) * (sd * s) ** 2
    stat_s = math.sqrt(max(var, 0.0))
    # The noise's part and the dispersion correction's size (the model's own doubt) at the
    # interval's z, then the measured model error for this steepness and fit class.
    steep = max(da, da_kin) / n
    rel_model = model_error(steep, resid_sd)
    unc = math.sqrt(
        (Z_COVERAGE * stat_s) ** 2 + (Z_COVERAGE * (t99 - t_fit)) ** 2 + (rel_model * t99) ** 2
    )
    rate = _softplus(p) / trial_dose_s
    fr = tuple(float(v) for v in vals / s)
    return DoseFit(
        trial_dose_s=trial_dose_s,
        saturation_dose_s=t99,
        uncertainty_s=unc,
        p=p,
        damkohler=da,
        saturated=s,
        rate_per_s=rate,
        residual=resid_sd,
        positions=tuple(float(v) for v in x),
        fractions=fr,
        fraction_input=is_frac,
        kinetic_damkohler=da_kin,
        statistical_s=stat_s,
        correction_s=t99 - t_fit,
        steepness=steep,
    )
