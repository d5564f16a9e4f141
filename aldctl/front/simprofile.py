"""``aldctl sim profile``: a trial dose on the cross-flow chamber model
(:mod:`sim.crossflow`), measured as a thickness map: the input ``aldctl tune dose`` takes.

The precursor's molar mass and sticking probability at the chamber temperature come from
the chemical catalogue and ``sim/data/kinetics.yaml``; the geometry, flows and the sites a
half-reaction consumes are options. ``--truth`` adds the simulator's own saturation dose
time (a bisection of full dose runs on the same model), to compare with what the method
says from the profile alone.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim import kinetics
from sim.crossflow import (
    Chamber,
    Reactant,
    damkohler,
    delivery_time_s,
    saturation_profile,
)
from sim.units import SCCM_MOL_S


def build(
    chemical: str,
    *,
    length_cm: float,
    width_cm: float,
    gap_mm: float,
    temperature_c: float,
    pressure_torr: float,
    carrier_sccm: float,
    feed_sccm: float,
    sites_per_nm2: float,
    cells: int,
    diffusion: bool,
) -> tuple[Chamber, Reactant]:
    kin = kinetics.kinetics().get(chemical)
    if kin is None:
        known = ", ".join(sorted(kinetics.kinetics()))
        msg = f"unknown chemical {chemical!r} (hint: one of {known})"
        raise ValueError(msg)
    ch = Chamber(
        length_m=length_cm / 100.0,
        width_m=width_cm / 100.0,
        gap_m=gap_mm / 1000.0,
        temperature_c=temperature_c,
        pressure_torr=pressure_torr,
        carrier_sccm=carrier_sccm,
        cells=cells,
        axial_diffusion=diffusion,
    )
    r = Reactant(
        name=chemical,
        molar_mass=kin.molar_mass,
        beta=kin.beta_at(temperature_c),
        sites_per_m2=sites_per_nm2 * 1e18,
        feed_mol_s=feed_sccm * SCCM_MOL_S,
    )
    return ch, r


def profile(
    ch: Chamber, r: Reactant, dose_s: float, points: int, noise: float, seed: int
) -> list[float]:
    pos = np.arange(1, points + 1) / points
    prof = saturation_profile([ch], [r], np.array([dose_s]), pos, steps=400)[0]
    if noise > 0.0:
        prof = prof + np.random.default_rng(seed).normal(0.0, noise, size=prof.shape)
    return [max(float(v), 0.0) for v in prof]


def true_saturation(ch: Chamber, r: Reactant) -> float:
    """Shortest dose whose simulated outlet growth reaches 99 % (bisection on the model)."""

    def outlet(t: float) -> float:
        return float(saturation_profile([ch], [r], np.array([t]), [1.0], steps=200)[0, 0])

    td = delivery_time_s(ch, r)
    lo, hi = 0.01 * td, 20.0 * td
    while outlet(hi) < 0.99:
        lo, hi = hi, hi * 4.0
    while hi / lo > 1.001:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if outlet(mid) < 0.99 else (lo, mid)
    return math.sqrt(lo * hi)


def describe(ch: Chamber, r: Reactant) -> dict[str, Any]:
    return {
        "beta": r.beta,
        "damkohler": damkohler(ch, r),
        "peclet": ch.peclet,
        "residence_time_s": ch.residence_time_s,
        "monolayer_delivery_s": delivery_time_s(ch, r),
    }
