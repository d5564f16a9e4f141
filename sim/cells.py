"""The chamber as N cells along the flow (a cross-flow reactor), each with its own gas and
surface: the reactor's integrator when the configuration has a ``chamber``
(:class:`sim.config.ChamberConfig`).

Gas, per species i and cell c (amounts n in mol, cell volume V/N, reactive area A/N):

    dn_c/dt = F_i(t) [c = 0] - N C u p_c back-flow [c = 0]
              + k_adv n_{c-1} - k_adv n_c                       (plug flow)
              + k_ax (n_{c-1} - 2 n_c + n_{c+1})                (axial diffusion, closed ends)
              - (k_rec,i + k_dec,i + sum_t k0_t x_c(src t)) n_c

* ``k_adv = N k_pump``: the flow the pump draws (``S T_gas / T_pump``, volumetric) passes
  through every cell; the last cell's outflow is what the pump removes (``pumped``). With the
  pump isolation valve shut nothing flows (stop-flow) and only diffusion moves the gas.
* ``k_ax = D / dx^2``, ``dx = L / N``, ``D = 76 cm2/s (T / 300 K)^1.75 / (p / Torr)`` at the
  chamber's pressure at the start of the step (kinetic theory, as :mod:`sim.crossflow`).
* Every line, MFC and the plasma source feed cell 0 (the inlet); a line's back-flow sees the
  inlet cell's partial pressure ``N n_0 R T / V``.
* The surface rates per cell are the 0-D ones: ``k0 = (v/4) beta A/V`` is the same for a
  cell (A/N over V/N), and a cell's sites are ``N_t / N``.

N = 1 is the well-stirred chamber of :mod:`sim.gas` (``k_adv = k_pump``, no diffusion).

Time stepping: the steps of :mod:`sim.gas` (same events and caps; the surface coupling is
checked per cell, :meth:`sim.surface.SurfaceChemistry._surface_dt` on each cell). Within a
step the surface sinks are frozen, so each species' cells obey a linear system ``n' = A n + b
+ e e^{-mu t}`` solved exactly by one matrix exponential of the system augmented with the
inflows, the gauge's first-order lag and the time integrals of every cell (what the surface
and the balances take): for N = 1 it is the scalar closed form of :mod:`sim.gas`. The second
pass of :mod:`sim.gas` (the step-mean surface fraction) is made per cell. Each cell's
surface then takes the exposure-exact update of :mod:`sim.surface` on its own state
(:meth:`CellGas._swap`), and hands back what the frozen sink over-counted, so every species
balances to rounding over the whole chamber: ``injected = pumped + reacted + lost + in gas``.

The reported state (thickness, coverage, saturation of doses, QCM density) is the
substrate's cell (``substrate_at``); :meth:`CellGas.cell_profile` gives every cell's;
the gauge reads the pressure of the cell at ``gauge_at`` and the QCM the mass of the cell at
``qcm_at``. Cost: numpy, one batched matrix exponential of size 2N + 3 per step for the
species in the gas, and the surface work per cell in Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from sim.gas import GasPhase
from sim.state import CELL_FIELDS, _Cells
from sim.units import NS_PER_S, kelvin

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sim.config import ChamberConfig
    from sim.state import _Line

Array = NDArray[np.float64]

D_REF_CM2_S = 76.0
"""Axial diffusion coefficient at 300 K and 1 Torr (simulation.md 3.1), cm2/s."""
_FLOOR_MOL = 1e-21
"""As :mod:`sim.gas`: below this a species with no inflow is counted as pumped away."""
_MIN_STEP_NS = 1_000
_PRESSURE_EPS = 0.05
"""Largest relative change of the chamber's gas amount within a step while axial diffusion
(D ~ 1/p) couples the cells and its rate does not settle at the step's mean pressure."""
_AXIAL_EPS = 0.03
"""Relative agreement of the axial rate used in a step with the one at the step's mean
pressure (the solve is repeated until it holds)."""
_AXIAL_TRIES = 8
_GET_CELL = attrgetter(*CELL_FIELDS)
_PADE = (
    1.0,
    1.0 / 2.0,
    5.0 / 44.0,
    1.0 / 66.0,
    1.0 / 792.0,
    1.0 / 15840.0,
    1.0 / 665280.0,
)
"""Coefficients of the (6, 6) Pade approximant of exp."""


def expm(m: Array) -> Array:
    """``exp`` of a batch of square matrices (shape (B, K, K)): scaling and squaring with
    the (6, 6) Pade approximant (error below 1e-16 of the norm once scaled under 1/2)."""
    norm = float(np.abs(m).sum(axis=2).max()) if m.size else 0.0
    sq = 0
    if norm > 0.5:
        sq = math.ceil(math.log2(norm / 0.5))
        m = np.ldexp(m, -sq)
    k = m.shape[-1]
    eye = np.broadcast_to(np.eye(k), m.shape)
    m2 = m @ m
    m4 = m2 @ m2
    m6 = m4 @ m2
    c = _PADE
    even = c[0] * eye + c[2] * m2 + c[4] * m4 + c[6] * m6
    odd = m @ (c[1] * eye + c[3] * m2 + c[5] * m4)
    r = np.asarray(np.linalg.solve(even - odd, even + odd), dtype=np.float64)
    for _ in range(sq):
        r = r @ r
    return r


@dataclass(frozen=True, slots=True)
class CellProfile:
    """Ground truth per cell of an N-cell chamber, inlet first."""

    positions: tuple[float, ...]
    """Cell centres, fractions of the length from the inlet."""
    thickness_a: tuple[float, ...]
    ald_thickness_a: tuple[float, ...]
    cvd_thickness_a: tuple[float, ...]
    mass_ng_cm2: tuple[float, ...]
    coverage: tuple[dict[str, float], ...]
    partial_pressures_torr: tuple[dict[str, float], ...]
    substrate_cell: int
    qcm_cell: int
    gauge_cell: int

    def thickness_at(self, positions: Sequence[float]) -> list[float]:
        """Thickness (A) at ``positions`` (0..1), linear between cell centres and flat
        beyond the first and last (what an ellipsometer spot would read)."""
        xs = np.asarray(self.positions, dtype=np.float64)
        ys = np.asarray(self.thickness_a, dtype=np.float64)
        return [float(v) for v in np.interp(np.asarray(positions, dtype=np.float64), xs, ys)]


class CellGas(GasPhase):
    """The N-cell layer of :class:`~sim.reactor.Reactor` (inactive without a ``chamber``)."""

    _chamber: ChamberConfig | None
    _ncell: int
    _gauge_cell: int
    _qcm_cell: int

    def _init_cells(self) -> None:
        """Set the chamber up as cells (after the 0-D state exists, carrier at steady state:
        plug flow at steady state with nothing reacting is uniform)."""
        ch = self.config.chamber
        self._chamber = ch
        if ch is None:
            self._ncell = 0
            return
        self._ncell = ch.cells
        self._gauge_cell = ch.cell_at(ch.gauge_at)
        self._qcm_cell = ch.cell_at(ch.qcm_at)
        s = self._s
        s.cells = _Cells(s, ch.cells, ch.cell_at(ch.substrate_at), self._qcm_cell)

    # ------------------------------------------------------------------ state per cell

    def _swap(self, c: int) -> None:
        """Exchange the surface in :class:`_State` (the substrate's cell's, between steps)
        with cell ``c``'s; calling it again swaps back."""
        cs = self._s.cells
        assert cs is not None
        if c == cs.home:
            return
        s = self._s
        other = cs.surf[c]
        for name, mine, theirs in zip(CELL_FIELDS, _GET_CELL(s), _GET_CELL(other), strict=True):
            setattr(s, name, theirs)
            setattr(other, name, mine)

    def _spread(self, species: int, dn: float) -> None:
        """Add ``dn`` mol of a species evenly over the chamber (a pressure spike)."""
        cs = self._s.cells
        if cs is None:
            return
        share = dn / len(cs.n)
        for cell in cs.n:
            cell[species] += share

    def cell_profile(self) -> CellProfile:
        """Every cell's ground truth (ValueError for the well-stirred 0-D chamber)."""
        s = self._s
        cs = s.cells
        ch = self._chamber
        if cs is None or ch is None:
            msg = "this reactor is the well-stirred 0-D chamber (no `chamber: cells:`)"
            raise ValueError(msg)
        n = self._ncell
        states = self.chemistry.states
        p_cell = self._rt.p_per_mol * n
        thick: list[float] = []
        cvd: list[float] = []
        mass: list[float] = []
        cov: list[dict[str, float]] = []
        for c in range(n):
            src = s if c == cs.home else cs.surf[c]
            thick.append(src.thickness)
            cvd.append(src.cvd)
            mass.append(src.mass_ng)
            cov.append({name: min(1.0, max(0.0, src.x[i])) for i, name in enumerate(states)})
        pp = tuple(
            {name: cs.n[c][i] * p_cell for i, name in enumerate(self.species)} for c in range(n)
        )
        return CellProfile(
            positions=tuple((c + 0.5) / n for c in range(n)),
            thickness_a=tuple(thick),
            ald_thickness_a=tuple(t - v for t, v in zip(thick, cvd, strict=True)),
            cvd_thickness_a=tuple(cvd),
            mass_ng_cm2=tuple(mass),
            coverage=tuple(cov),
            partial_pressures_torr=pp,
            substrate_cell=cs.home,
            qcm_cell=self._qcm_cell,
            gauge_cell=self._gauge_cell,
        )

    # ------------------------------------------------------------------ the step

    def _axial_rate(self, n_total: float | None = None) -> float:
        """``D / dx^2`` (1/s) at the wall temperature and the chamber's pressure (its
        present one, or that of ``n_total`` mol of gas)."""
        ch = self._chamber
        assert ch is not None
        n = self._ncell
        if n < 2 or not ch.axial_diffusion:
            return 0.0
        rt = self._rt
        p = rt.p_per_mol * (sum(self._s.n) if n_total is None else n_total)
        if p <= 0.0:
            p = 1e-6
        d_cm2_s = D_REF_CM2_S * (kelvin(rt.t_gas) / 300.0) ** 1.75 / p
        dx = ch.length_cm / n
        return float(d_cm2_s / (dx * dx))

    def _cells_step(self, stop: int) -> None:
        """:meth:`sim.gas.GasPhase._step` of the N-cell chamber (always the general path:
        the quiet shortcuts are the 0-D model's)."""
        if not self._quiet_known:
            self._classify()
        t0, dt_ns, a_fix, a, back, eb, emu, draw = self._step_inflows(stop)
        self._integrate_cells(t0, dt_ns, a_fix, a, back, eb, emu, draw)
        if self._transient:
            self._quiet_known = False
            self._fix_known = False

    def _integrate_cells(
        self,
        t0: int,
        dt_ns: int,
        a_fix: Sequence[float],
        a: Sequence[float],
        back: Sequence[float],
        eb: Sequence[float],
        emu: Sequence[float],
        draw: list[tuple[_Line, float, float]],
    ) -> None:
        """One step from ``t0``, at most ``dt_ns`` long (arguments as
        :meth:`sim.gas.GasPhase._integrate`)."""
        s = self._s
        cs = s.cells
        assert cs is not None
        rt = self._rt
        nc = self._ncell
        home = cs.home
        cn = cs.n
        nsp = len(s.n)
        act = [i for i in self._sp_range if s.n[i] != 0.0 or a[i] != 0.0 or eb[i] != 0.0]
        if rt.stale:
            sub_dep = self._sub_dep
            for i in act:
                if sub_dep[i]:
                    self._sub_rates()
                    break
        k0 = rt.k0
        kpump = rt.pump
        krec = rt.krec
        kdec = rt.kdec
        sp_ts = self._sp_ts
        reactive = self._reactive_mask
        kadv = nc * kpump
        kax = self._axial_rate()
        dt_s = dt_ns / NS_PER_S
        # -- per cell: surface sinks, site scales and the step the coupling allows
        surf_c: list[list[float]] = []
        nm_c: list[list[float]] = []
        km_c: list[list[float]] = []
        ract = [i for i in act if reactive[i]]
        total = s.n
        back_in = [nc * b for b in back]
        envelope: list[list[float]] = []
        run = list(cn[0])
        for c in range(nc):
            cell = cn[c]
            run = [v if v > w else w for v, w in zip(run, cell, strict=True)]
            envelope.append(run)
        home_x = s.x
        home_cycles = s.cycles_total
        flat = self._nuc_flat
        for c in range(nc):
            # what the step criterion and the site scale read of a cell: its gas, its
            # surface, its cycles (nucleation); the rest of its state is swapped in below
            s.n = cn[c]
            if c != home:
                other = cs.surf[c]
                s.x = other.x
                if not flat:
                    s.cycles_total = other.cycles_total
            else:
                s.x = home_x
                s.cycles_total = home_cycles
            x = s.x
            surf = [0.0] * nsp
            base = [0.0] * nsp
            rx: list[int] = []
            for i in act:
                ks = 0.0
                if reactive[i]:
                    for t, st in sp_ts[i]:
                        ks += k0[t] * x[st]
                    surf[i] = ks
                    if ks > 0.0:
                        rx.append(i)
                # the step criterion weighs the sink against what leaves the chamber, not
                # the cell: gas that flows or diffuses on meets the next cell's surface
                base[i] = kpump + krec[i] + kdec[i] + ks
            if ract:
                nm, km = self._site_scale(s.latched if flat else self._multipliers())
                nm = [v / nc for v in nm]
            else:
                nm = km = []
            if rx:
                # Within a step a cell can hold at most what the cells up to its downstream
                # neighbour hold now (flow and diffusion carry it in) plus everything the
                # inlet admits: the step criterion's amount bound takes that envelope.
                s.n = envelope[c + 1 if c + 1 < nc else c]
                bk_in = back_in if c == 0 else self._zeros
                dt_s = self._surface_dt(rx, base, bk_in, a, eb, dt_s, nm)
            surf_c.append(surf)
            nm_c.append(nm)
            km_c.append(km)
        s.n = total
        s.x = home_x
        s.cycles_total = home_cycles
        new_dt = round(dt_s * NS_PER_S)
        if new_dt < dt_ns:
            floor = _MIN_STEP_NS if dt_ns > _MIN_STEP_NS else dt_ns
            dt_ns = new_dt if new_dt > floor else floor
            if draw:
                a2 = list(a_fix)
                back2 = [0.0] * nsp
                draw = self._inflows(t0, dt_ns, a2, back2)
                a = a2
                back = back2
        dt = dt_ns / NS_PER_S
        # -- gas: one augmented linear system per species, solved exactly
        beta = self._gauge_beta
        gc = self._gauge_cell
        k = 2 * nc + 3
        i_e, i_one, i_g = nc, nc + 1, nc + 2
        idx = np.arange(nc)
        sol: dict[int, Array] = {}

        def solve(species: list[int]) -> None:
            m = np.zeros((len(species), k, k))
            z0 = np.zeros((len(species), k))
            for j, i in enumerate(species):
                mj = m[j]
                diag = np.array(
                    [-(kadv + krec[i] + kdec[i] + surf_c[c][i]) for c in range(nc)],
                    dtype=np.float64,
                )
                if nc > 1:
                    mj[idx[1:], idx[:-1]] = kadv + kax
                    mj[idx[:-1], idx[1:]] = kax
                    diag[1:] -= kax
                    diag[:-1] -= kax
                diag[0] -= nc * back[i]
                mj[idx, idx] = diag
                mj[0, i_e] = 1.0
                mj[i_e, i_e] = -emu[i]
                mj[0, i_one] = a[i]
                mj[i_g, gc] = beta
                mj[i_g, i_g] = -beta
                mj[nc + 3 + idx, idx] = 1.0
                z0[j, :nc] = [cn[c][i] for c in range(nc)]
                z0[j, i_e] = eb[i]
                z0[j, i_one] = 1.0
            z1 = np.einsum("bij,bj->bi", expm(m * dt), z0)
            for j, i in enumerate(species):
                sol[i] = z1[j]

        if act:
            solve(act)
        if act and kax > 0.0:
            # The axial diffusion rate goes as 1/p and the solve holds it over the step, but
            # a dose raises the pressure several-fold and a purge lowers it again (held at
            # its start, a 2 s purge after a TMA dose kept D at 2.5 Torr all the way down to
            # 0.56 Torr and left 5x less TMA than 2 ms steps did). Take D at the step's mean
            # amount of gas (the solution's time integrals) and solve again until it holds;
            # where the gas changes too much within the step, shorten the step. A step in
            # which nothing moves the pressure accepts the first solve.
            n0 = math.fsum(total)
            for _ in range(_AXIAL_TRIES):
                d_mean = 0.0
                d_end = 0.0
                for i in act:
                    z = sol[i]
                    d_mean += float(z[nc + 3 :].sum()) / dt - total[i]
                    d_end += float(z[:nc].sum()) - total[i]
                k_mean = self._axial_rate(n0 + d_mean)
                if abs(k_mean - kax) <= _AXIAL_EPS * kax:
                    break
                floor = _MIN_STEP_NS if dt_ns > _MIN_STEP_NS else dt_ns
                if abs(d_end) > _PRESSURE_EPS * n0 and dt_ns > floor:
                    shrink = 0.5 * _PRESSURE_EPS * n0 / abs(d_end)
                    new_dt = round(dt_ns * (shrink if shrink > 0.1 else 0.1))
                    dt_ns = new_dt if new_dt > floor else floor
                    dt = dt_ns / NS_PER_S
                    if draw:
                        a2 = list(a_fix)
                        back2 = [0.0] * nsp
                        draw = self._inflows(t0, dt_ns, a2, back2)
                        a = a2
                        back = back2
                    kax = self._axial_rate(n0)
                else:
                    kax = k_mean
                solve(act)
        # second pass (as sim.gas): the surface a species reacts with shrinks within the
        # step; solve again with each cell's step-mean fraction where it matters
        again: list[int] = []
        expm1 = math.expm1
        for i in act:
            if not reactive[i]:
                continue
            z = sol[i]
            changed = False
            for c in range(nc):
                si = surf_c[c][i]
                itg = float(z[nc + 3 + c])
                if si > 0.0 and itg > 0.0:
                    xs_list = s.x if c == home else cs.surf[c].x
                    nm = nm_c[c]
                    ks = 0.0
                    for t, st in sp_ts[i]:
                        xs = xs_list[st]
                        if xs > 0.0:
                            kk = k0[t] * itg / nm[t]
                            if kk > 1e-6:
                                ks += (
                                    k0[t]
                                    * xs
                                    * (
                                        1.0 - kk * (0.5 - kk / 6.0)
                                        if kk < 1e-4
                                        else -expm1(-kk) / kk
                                    )
                                )
                            else:
                                ks += k0[t] * xs * 1.0
                    if ks < si * (1.0 - 1e-9):
                        surf_c[c][i] = ks
                        changed = True
            if changed:
                again.append(i)
        if again:
            solve(again)
        # -- balances, per-cell amounts and exposures
        injected = s.injected
        pumped = s.pumped
        lost = s.lost
        exposure = s.exposure
        p_per_mol = rt.p_per_mol
        integ_c = [[0.0] * nsp for _ in range(nc)]
        g_sum = 0.0
        for i in act:
            z = sol[i]
            itgs = [float(v) if v > 0.0 else 0.0 for v in z[nc + 3 :]]
            n1 = [float(v) if v > 0.0 else 0.0 for v in z[:nc]]
            inj = a[i] * dt
            if eb[i] != 0.0:
                xm = emu[i] * dt
                inj += eb[i] * dt * (1.0 - xm * (0.5 - xm / 6.0) if xm < 1e-4 else -expm1(-xm) / xm)
            injected[i] += inj - nc * back[i] * itgs[0]
            pumped[i] += kadv * itgs[-1]
            tot = sum(itgs)
            if krec[i] or kdec[i]:
                lost[i] += (krec[i] + kdec[i]) * tot
            exposure[i] += tot * p_per_mol
            for c in range(nc):
                cn[c][i] = n1[c]
                integ_c[c][i] = itgs[c]
            g_sum += float(z[i_g]) if beta > 0 else n1[gc]
        # -- every cell's surface takes its exposure; decomposition per cell
        for c in range(nc):
            self._swap(c)
            s.n = cn[c]
            integ = integ_c[c]
            if ract:
                self._surface(ract, integ, surf_c[c], nm_c[c], km_c[c])
            for i, kind in self._dec_species:
                kd = kdec[i]
                if kd > 0.0 and integ[i] > 0.0:
                    # the cell's area is A/N: its film per area takes N times its share
                    self._decompose(kind, kd * integ[i] * nc)
            self._swap(c)
        s.n = total
        for i in act:
            total[i] = math.fsum(cn[c][i] for c in range(nc))
        # -- sources lose what they delivered (back-flow at the inlet cell's pressure)
        for ln, cond, p_src in draw:
            if ln.is_ozone:
                continue
            mol = cond * (p_src * dt - nc * p_per_mol * integ_c[0][ln.species])
            grams = mol * ln.chem.molar_mass
            ln.consumed_g += grams
            left = ln.mass_g - grams
            ln.mass_g = left if left > 0.0 else 0.0
        for i in act:
            ni = total[i]
            if 0.0 < ni < _FLOOR_MOL and a[i] == 0.0:
                pumped[i] += ni
                total[i] = 0.0
                for c in range(nc):
                    cn[c][i] = 0.0
        gauge = s.gauge
        p_cell = nc * p_per_mol
        if beta > 0:
            gauge.lagged_torr = gauge.lagged_torr * math.exp(-beta * dt) + p_cell * g_sum
        else:
            gauge.lagged_torr = p_cell * sum(cn[gc])
        s.now = t0 + dt_ns
