"""Closed-form ALD results used as golden oracles for the reactor model (simulation.md 6.3).

These are independent of :mod:`sim.reactor` (they share only physical constants) so a test
can hold the numerical model against them:

* Flat-surface irreversible Langmuir at any pressure history (machball ``coverage_flat``):
  ``theta = 1 - exp(-s0 beta v E / (4 kB T))``, E = integral of p dt.
* Steady-state GPC vs dose times (aldenv ``SingleALD``): ``x_i = exp(-k_i t_i)``,
  ``GPC = GPC_sat (1 - x1)(1 - x2) / (1 - x1 x2)``.
* Well-stirred (CSTR) batch reactor (aldsim): normalised time ``tau = theta - ln(1-theta)/Da``;
  unreacted fraction leaving ``1 / (1 + Da (1 - theta))``.
* Plug flow (aldsim): ``theta = 1 - ln(1 + (e^Da - 1) e^(-Da tau)) / Da``; outlet fraction
  ``exp(-Da (1 - theta))``.

with ``Da = v beta A / (4 Q)`` (Q volumetric flow through the reactor) and ``tau = t / t0``,
``t0`` the time to deliver one monolayer-equivalent of precursor.
"""

from __future__ import annotations

import math

from sim.units import K_B, TORR_PA, mean_speed_m_s


def langmuir_rate_per_torr_s(
    site_area_m2: float, beta: float, molar_mass_g_mol: float, t_k: float
) -> float:
    """``s0 beta v / (4 kB T)`` in 1/(Torr s): coverage exponent per unit exposure."""
    v = mean_speed_m_s(molar_mass_g_mol, t_k)
    return site_area_m2 * beta * v / (4.0 * K_B * t_k) * TORR_PA


def langmuir_coverage(
    exposure_torr_s: float, site_area_m2: float, beta: float, molar_mass_g_mol: float, t_k: float
) -> float:
    """Fraction of sites reacted after ``exposure_torr_s`` on a flat surface."""
    rate = langmuir_rate_per_torr_s(site_area_m2, beta, molar_mass_g_mol, t_k)
    return -math.expm1(-rate * exposure_torr_s)


def single_ald_gpc(gpc_sat: float, k1_t1: float, k2_t2: float) -> float:
    """Cyclic steady-state growth per cycle for first-order half-reactions.

    ``k1_t1`` and ``k2_t2`` are the dimensionless doses ``k_i t_i`` (equivalently
    ``rate_i * exposure_i``) of the two half-cycles.
    """
    x1 = math.exp(-k1_t1)
    x2 = math.exp(-k2_t2)
    return gpc_sat * (1.0 - x1) * (1.0 - x2) / (1.0 - x1 * x2)


def well_stirred_time(theta: float, da: float) -> float:
    """Normalised time at which a well-stirred batch reaches coverage ``theta``."""
    if not 0.0 <= theta < 1.0:
        msg = "theta must be in [0, 1)"
        raise ValueError(msg)
    return theta - math.log1p(-theta) / da


def well_stirred_coverage(tau: float, da: float) -> float:
    """Coverage of a well-stirred batch at normalised time ``tau`` (inverse of the above)."""
    if tau <= 0.0:
        return 0.0
    lo, hi = 0.0, 1.0
    # The residual is monotone in theta: bisection is slow but cannot fail.
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid >= 1.0 or well_stirred_time(mid, da) > tau:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def well_stirred_outlet_fraction(theta: float, da: float) -> float:
    """Fraction of the precursor fed that leaves unreacted at coverage ``theta``."""
    return 1.0 / (1.0 + da * (1.0 - theta))


def plug_flow_coverage(tau: float, da: float) -> float:
    """Average coverage of a plug-flow (cross-flow) reactor at normalised time ``tau``."""
    if tau <= 0.0:
        return 0.0
    # log(1 + (e^Da - 1) e^{-Da tau}) as a softplus of L = log(e^Da - 1) - Da tau, so that
    # large Da neither overflows nor loses the small term.
    big_l = da + math.log1p(-math.exp(-da)) - da * tau
    log_term = max(big_l, 0.0) + math.log1p(math.exp(-abs(big_l)))
    return 1.0 - log_term / da


def plug_flow_outlet_fraction(theta: float, da: float) -> float:
    """Fraction of the precursor fed that leaves unreacted at average coverage ``theta``."""
    return math.exp(-da * (1.0 - theta))


def damkohler(
    beta: float, molar_mass_g_mol: float, t_k: float, area_m2: float, flow_l_s: float
) -> float:
    """``Da = v beta A / (4 Q)``, Q the volumetric flow through the reactor in L/s."""
    v = mean_speed_m_s(molar_mass_g_mol, t_k)
    return v * beta * area_m2 / (4.0 * flow_l_s * 1e-3)
