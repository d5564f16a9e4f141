"""Cross-flow chamber: the chamber as N cells along the flow (simulation.md 3.4, "axial
non-uniformity"), each with its own gas and surface state.

Geometry: a flat channel of length L, width w and gap h between two heated plates (the
substrate on one, the lid on the other: both are reactive area, 2 w L in all). The carrier
flows from the inlet (x = 0) to the outlet (x = L) at the volumetric flow it has at the
chamber's pressure and temperature, ``Q = Q_sccm * (T / 273.15 K) * (760 Torr / p)``, so the
gas moves at ``u = Q / (w h)`` and a cell of length ``dx = L / N`` holds it ``dx / u``.

Per cell j and reactant s (concentration c in mol/m3), plug flow with axial transport:

    dc_j/dt = u (c_{j-1} - c_j) / dx + D (c_{j-1} - 2 c_j + c_{j+1}) / dx^2
              - (v_s / 4) beta_s x_s,j (a / V) c_j  (+ F_s / V_cell at the inlet cell)

with first-order upwind advection, axial (Fickian) diffusion closed at both ends (Danckwerts:
nothing diffuses back into the feed or out of the pump line), ``a / V = 2 / h`` the reactive
area per volume, ``v`` the mean thermal speed, and ``D = D_ref (T / 300 K)^1.75 (1 Torr / p)``
(D_ref = 76 cm2/s for a heavy precursor in N2 at 1 Torr, simulation.md 3.1: kinetic theory).
The surface of each cell follows the two-reactant model of simulation.md 3.3: ``theta`` is the
fraction of sites in the precursor-reacted state,

    dtheta/dt = k_A c_A (1 - theta) - k_B c_B theta,   k_s = beta_s (v_s / 4) N_A / n_s

(n_s the sites per m2 one half-reaction converts), and the co-reactant's conversion grows
``gpc_nm`` per unit fraction. The precursor's feed is a square pulse of ``feed_mol_s`` while
its valve is open. N = 1 is the well-mixed (0-D) chamber.

Integration: the gas takes backward-Euler steps (a tridiagonal solve per reactant: stable at
any step, and it keeps each reactant's time-integrated concentration exact for the linear part,
which is what the surface sees) with the surface frozen over the step; the surface then takes
the exact exponential update for the step's concentrations. Everything is vectorised over a
batch of independent chambers (numpy arrays of shape (batch, N)), so a benchmark can sweep
thousands of conditions at once. Deterministic; the thickness map's noise comes from a seeded
generator.

Ground truth per cell: coverage, thickness (nm), areal mass (ng/cm2). Measured: a thickness
map at chosen positions with Gaussian noise; a QCM at a chosen position (mass at that point).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from sim.units import N_A, R_J, SCCM_MOL_S, ZERO_C_K

Array = NDArray[np.float64]

D_REF_M2_S = 76e-4
"""Axial diffusion coefficient at 300 K and 1 Torr (simulation.md 3.1), m2/s."""
STD_TORR = 760.0
TORR_PA = 133.322368


@dataclass(frozen=True, slots=True)
class Chamber:
    """Geometry and flow of a cross-flow chamber (all SI unless the name says otherwise)."""

    length_m: float = 0.2
    width_m: float = 0.15
    gap_m: float = 0.005
    temperature_c: float = 200.0
    pressure_torr: float = 1.0
    carrier_sccm: float = 100.0
    cells: int = 1
    """Cells along the flow; 1 is the well-mixed (0-D) chamber."""
    axial_diffusion: bool = True

    def __post_init__(self) -> None:
        if self.cells < 1:
            msg = "cells must be >= 1"
            raise ValueError(msg)
        for name in ("length_m", "width_m", "gap_m", "pressure_torr", "carrier_sccm"):
            if not getattr(self, name) > 0.0:
                msg = f"{name} must be > 0"
                raise ValueError(msg)

    @property
    def t_k(self) -> float:
        return self.temperature_c + ZERO_C_K

    @property
    def volume_m3(self) -> float:
        return self.length_m * self.width_m * self.gap_m

    @property
    def area_m2(self) -> float:
        """Reactive area: both plates."""
        return 2.0 * self.length_m * self.width_m

    @property
    def flow_m3_s(self) -> float:
        """Volumetric carrier flow at chamber conditions."""
        return (
            self.carrier_sccm
            * 1e-6
            / 60.0
            * (self.t_k / ZERO_C_K)
            * (STD_TORR / self.pressure_torr)
        )

    @property
    def residence_time_s(self) -> float:
        return self.volume_m3 / self.flow_m3_s

    @property
    def diffusion_m2_s(self) -> float:
        if not self.axial_diffusion or self.cells == 1:
            return 0.0
        return float(D_REF_M2_S * (self.t_k / 300.0) ** 1.75 / self.pressure_torr)

    @property
    def peclet(self) -> float:
        """``u L / D``: advection over axial diffusion (inf without diffusion)."""
        d = self.diffusion_m2_s
        u = self.flow_m3_s / (self.width_m * self.gap_m)
        return math.inf if d == 0.0 else u * self.length_m / d

    def positions(self) -> Array:
        """Cell centres as fractions of the length from the inlet."""
        return (np.arange(self.cells, dtype=np.float64) + 0.5) / self.cells


@dataclass(frozen=True, slots=True)
class Reactant:
    """One half-reaction's reactant as the cross-flow model needs it."""

    name: str
    molar_mass: float
    """g/mol."""
    beta: float
    """Reaction probability per collision with a free site."""
    sites_per_m2: float
    """Molecules one half-reaction consumes per m2 (a cycle's worth)."""
    feed_mol_s: float
    """Inflow while the valve is open."""
    mass_ng_cm2: float = 0.0
    """Areal mass gained per unit converted fraction (QCM)."""

    def mean_speed(self, t_k: float) -> float:
        return math.sqrt(8.0 * R_J * t_k / (math.pi * self.molar_mass * 1e-3))

    def feed_sccm(self) -> float:
        return self.feed_mol_s / SCCM_MOL_S


def damkohler(chamber: Chamber, reactant: Reactant) -> float:
    """``Da = v beta A / (4 Q)``: how much of the feed a fresh chamber consumes."""
    v = reactant.mean_speed(chamber.t_k)
    return v * reactant.beta * chamber.area_m2 / (4.0 * chamber.flow_m3_s)


def delivery_time_s(chamber: Chamber, reactant: Reactant) -> float:
    """Time the feed takes to deliver one half-reaction's sites for the whole chamber."""
    return reactant.sites_per_m2 * chamber.area_m2 / N_A / reactant.feed_mol_s


# --- the batched integrator -------------------------------------------------------------


@dataclass
class Batch:
    """B independent cross-flow chambers with the same cell count, advanced together.

    Per chamber b: advection rate per cell ``adv[b] = u / dx``, diffusion rate ``dif[b] =
    D / dx^2``, per reactant s the wall-loss rate on a free surface ``loss[s][b] = (v/4) beta
    (2/h)``, the surface rate per concentration ``ks[s][b]`` and the inlet feed as a
    concentration rate ``feed[s][b] = F / V_cell``.
    """

    cells: int
    adv: Array
    dif: Array
    loss: list[Array]
    ks: list[Array]
    feed: list[Array]
    c: list[Array] = field(default_factory=list)
    theta: Array = field(default_factory=lambda: np.zeros((0, 0)))
    growth: Array = field(default_factory=lambda: np.zeros((0, 0)))
    """Converted fraction closed by the co-reactant (cycles of growth), per cell."""
    uptake: list[Array] = field(default_factory=list)
    """Fraction converted by each reactant, per cell (QCM mass = sum of mass x uptake)."""

    def __post_init__(self) -> None:
        b = self.adv.shape[0]
        shape = (b, self.cells)
        if not self.c:
            self.c = [np.zeros(shape) for _ in self.loss]
        if self.theta.shape != shape:
            self.theta = np.zeros(shape)
        if self.growth.shape != shape:
            self.growth = np.zeros(shape)
        if not self.uptake:
            self.uptake = [np.zeros(shape) for _ in self.loss]

    @classmethod
    def build(cls, chambers: Sequence[Chamber], reactants: Sequence[Sequence[Reactant]]) -> Batch:
        """One row per chamber; ``reactants[b]`` = (precursor, co-reactant?) of chamber b."""
        if not chambers:
            msg = "empty batch"
            raise ValueError(msg)
        cells = chambers[0].cells
        if any(ch.cells != cells for ch in chambers):
            msg = "every chamber of a batch needs the same cell count"
            raise ValueError(msg)
        n_species = len(reactants[0])
        adv = np.empty(len(chambers))
        dif = np.empty(len(chambers))
        loss = [np.empty(len(chambers)) for _ in range(n_species)]
        ks = [np.empty(len(chambers)) for _ in range(n_species)]
        feed = [np.empty(len(chambers)) for _ in range(n_species)]
        for b, (ch, rs) in enumerate(zip(chambers, reactants, strict=True)):
            dx = ch.length_m / cells
            u = ch.flow_m3_s / (ch.width_m * ch.gap_m)
            adv[b] = u / dx
            dif[b] = ch.diffusion_m2_s / dx**2
            v_cell = ch.volume_m3 / cells
            for s, r in enumerate(rs):
                quarter_v = r.mean_speed(ch.t_k) / 4.0
                loss[s][b] = quarter_v * r.beta * 2.0 / ch.gap_m
                ks[s][b] = quarter_v * r.beta * N_A / r.sites_per_m2
                feed[s][b] = r.feed_mol_s / v_cell
        return cls(cells, adv, dif, loss, ks, feed)

    def _free(self, s: int) -> Array:
        return 1.0 - self.theta if s == 0 else self.theta

    def _gas_step(self, s: int, dt: Array, feeding: Array) -> None:
        """Backward-Euler step of reactant s's gas (Thomas algorithm along the cells)."""
        n = self.cells
        c = self.c[s]
        k = self.loss[s][:, None] * self._free(s)
        a_up = (self.adv + self.dif) * dt  # coupling to the upstream cell
        a_dn = self.dif * dt  # coupling to the downstream cell
        rhs = c.copy()
        rhs[:, 0] += dt * self.feed[s] * feeding
        if n == 1:
            c[:, 0] = rhs[:, 0] / (1.0 + dt * (self.adv + k[:, 0]))
            return
        # Diagonal: 1 + dt (adv + k) + diffusion to each existing neighbour.
        diag = 1.0 + dt[:, None] * (self.adv[:, None] + k)
        diag[:, :-1] += a_dn[:, None]
        diag[:, 1:] += a_dn[:, None]
        # Thomas: sub-diagonal -a_up (cells 1..n-1), super-diagonal -a_dn (cells 0..n-2).
        cp = np.empty_like(c)
        dp = np.empty_like(c)
        cp[:, 0] = -a_dn / diag[:, 0]
        dp[:, 0] = rhs[:, 0] / diag[:, 0]
        for j in range(1, n):
            m = diag[:, j] + a_up * cp[:, j - 1]
            cp[:, j] = -a_dn / m
            dp[:, j] = (rhs[:, j] + a_up * dp[:, j - 1]) / m
        c[:, n - 1] = dp[:, n - 1]
        for j in range(n - 2, -1, -1):
            c[:, j] = dp[:, j] - cp[:, j] * c[:, j + 1]

    def step(self, dt: Array, feeding: Sequence[Array]) -> None:
        """Advance every chamber by its own ``dt``; ``feeding[s]`` is 1 where s's valve is open."""
        for s in range(len(self.c)):
            self._gas_step(s, dt, feeding[s])
        # Exact surface update for the frozen concentrations.
        ra = self.ks[0][:, None] * self.c[0]
        if len(self.c) == 1:
            new = 1.0 - (1.0 - self.theta) * np.exp(-ra * dt[:, None])
            self.uptake[0] += new - self.theta
            self.theta = new
            return
        rb = self.ks[1][:, None] * self.c[1]
        tot = ra + rb
        safe = np.where(tot > 0.0, tot, 1.0)
        inf = np.where(tot > 0.0, ra / safe, self.theta)
        decay = np.exp(-tot * dt[:, None])
        new = inf + (self.theta - inf) * decay
        # Split the step's conversions between the two directions exactly: the time integral of
        # theta over the step is inf dt + (theta - inf)(1 - decay)/tot.
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(tot > 0.0, -np.expm1(-tot * dt[:, None]) / safe, dt[:, None])
        mean_theta = inf * dt[:, None] + (self.theta - inf) * frac
        up_a = ra * (dt[:, None] - mean_theta)
        up_b = rb * mean_theta
        self.uptake[0] += up_a
        self.uptake[1] += up_b
        self.growth += up_b
        self.theta = new

    def run(self, duration: Array, steps: int, feeding: Sequence[Array]) -> None:
        """``steps`` equal steps of ``duration / steps`` per chamber."""
        dt = np.asarray(duration, dtype=np.float64) / steps
        for _ in range(steps):
            self.step(dt, feeding)

    def purge(self, residence: Array, n_res: float = 30.0, steps: int = 40) -> None:
        """Purge for ``n_res`` residence times with geometrically growing steps (the gas left
        decays over ~one residence time first, then only its tail matters)."""
        off = [np.zeros_like(self.adv) for _ in self.c]
        # steps grow by a factor g so that sum = n_res * residence, first step residence / 50.
        first = 1.0 / 50.0
        g = _ratio(first, n_res, steps)
        dt = residence * first
        for _ in range(steps):
            self.step(dt, off)
            dt = dt * g

    def outlet_fraction(self, s: int) -> Array:
        """Concentration leaving the last cell over the inlet's steady feed concentration."""
        return self.c[s][:, -1]


def _ratio(first: float, total: float, steps: int) -> float:
    """Growth factor g with first * (g^steps - 1) / (g - 1) = total."""
    lo, hi = 1.0 + 1e-9, 10.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        s = first * (mid**steps - 1.0) / (mid - 1.0)
        if s > total:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def at_positions(values: Array, positions: Sequence[float] | Array) -> Array:
    """Interpolate per-cell values (shape (B, N)) at fractional positions along the flow
    (cell centres at (j + 1/2)/N; the first and last cells' values hold to the ends)."""
    n = values.shape[-1]
    centres = (np.arange(n, dtype=np.float64) + 0.5) / n
    pos = np.asarray(positions, dtype=np.float64)
    if values.ndim == 1:
        return np.interp(pos, centres, values)
    return np.stack([np.interp(pos, centres, row) for row in values])


# --- one chamber, run by cycles ---------------------------------------------------------


@dataclass
class CrossFlowReactor:
    """One cross-flow chamber running ALD cycles (precursor dose, purge, co-reactant dose,
    purge), with ground truth per cell and the measurements a lab takes."""

    chamber: Chamber
    precursor: Reactant
    coreactant: Reactant
    gpc_nm: float
    """Saturated growth per cycle."""
    seed: int = 0
    steps_per_dose: int = 200
    _batch: Batch = field(init=False)
    _rng: np.random.Generator = field(init=False)
    cycles: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._batch = Batch.build([self.chamber], [[self.precursor, self.coreactant]])
        self._rng = np.random.default_rng(self.seed)

    def dose(self, reactant: int, time_s: float) -> None:
        """Open reactant 0 (precursor) or 1 (co-reactant) for ``time_s``."""
        feeding = [np.zeros(1), np.zeros(1)]
        feeding[reactant][:] = 1.0
        self._batch.run(np.array([time_s]), self.steps_per_dose, feeding)

    def purge(self, time_s: float) -> None:
        tau = self.chamber.residence_time_s
        self._batch.purge(np.array([tau]), n_res=max(time_s / tau, 1e-6))

    def cycle(self, dose_s: float, purge_s: float, coreactant_s: float, purge2_s: float) -> None:
        self.dose(0, dose_s)
        self.purge(purge_s)
        self.dose(1, coreactant_s)
        self.purge(purge2_s)
        self.cycles += 1

    # ground truth
    def positions(self) -> Array:
        return self.chamber.positions()

    def coverage(self) -> Array:
        """Fraction of sites in the precursor-reacted state, per cell."""
        out: Array = self._batch.theta[0].copy()
        return out

    def thickness_nm(self) -> Array:
        """Film grown per cell."""
        out: Array = self._batch.growth[0] * self.gpc_nm
        return out

    def mass_ng_cm2(self) -> Array:
        b = self._batch
        pre = b.uptake[0][0] * self.precursor.mass_ng_cm2
        out: Array = pre + b.uptake[1][0] * self.coreactant.mass_ng_cm2
        return out

    # measurements
    def thickness_map(self, positions: Sequence[float], noise_nm: float = 0.0) -> Array:
        """Ellipsometry-like thickness at fractional positions, with Gaussian noise."""
        true = at_positions(self.thickness_nm(), positions)
        if noise_nm > 0.0:
            true = true + self._rng.normal(0.0, noise_nm, size=true.shape)
        return np.asarray(true, dtype=np.float64)

    def qcm_ng_cm2(self, position: float) -> float:
        """A QCM crystal at a fractional position: the areal mass deposited there."""
        return float(at_positions(self.mass_ng_cm2(), [position])[0])


def saturation_profile(
    chambers: Sequence[Chamber],
    precursors: Sequence[Reactant],
    dose_s: Array,
    positions: Sequence[float] | Array,
    steps: int = 200,
) -> Array:
    """Fraction of the surface converted by one precursor dose of ``dose_s[b]`` (then a full
    purge) from a fresh surface, at ``positions``, for each chamber of a batch.

    With a saturating co-reactant every cycle starts fresh, so this is also each position's
    growth per cycle as a fraction of saturated growth (the trial run's normalised profile).
    """
    batch = Batch.build(chambers, [[p] for p in precursors])
    batch.run(np.asarray(dose_s, dtype=np.float64), steps, [np.ones(len(chambers))])
    batch.purge(np.array([ch.residence_time_s for ch in chambers]))
    return at_positions(batch.theta, positions)
