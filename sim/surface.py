"""Surface chemistry of the reactor: doses and their saturation, the exposure-exact surface
update, the step the surface coupling allows, decomposition (the per-site rates come from
:mod:`sim.kinetics`).

Surface (simulation.md 3.3, generalised in :mod:`sim.kinetics`): the fraction in state s
moves on by half-reaction t at ``k_t = k0_t n_i / N_t`` per unit fraction, N_t the molecules a
cycle's worth of that half-reaction consumes on the area A; a closing half-reaction grows
``GPC_sat(T)`` per unit fraction. Under a single reactant the coverage depends only on the
exposure ``E = integral of p dt``: ``x_src <- x_src exp(-k0 integral(n dt) / N_t)``, exact for any
pressure history (the Langmuir closed form).

CVD-like growth: growth closed in the same step as the cycle's opening half-reaction (both
reactants present) is counted as ``cvd_thickness_a`` (with thermal decomposition).

What grows is decided by what meets in the chamber. The growth factor of a cycle is latched
when its first dose opens, from the cycle that closed before it (the supercycle the two
form, :meth:`sim.kinetics.Chemistry.multiplier`); a cycle that met no partner yet is
settled when one closes after it (:meth:`SurfaceChemistry._partner_met`). A kind whose dose
sequence starts a longer kind's (Li2O in Li3PO4) closes on the way into a ready-like state;
the longer kind's closing takes its growth back (:meth:`SurfaceChemistry._reclaim`), so the
film is counted once, as the longer kind.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sim.state import ReactorCore

if TYPE_CHECKING:
    from collections.abc import Sequence

_SURFACE_EPS = 0.5
"""Largest relative change of a species' loss rate allowed within one step."""
_OVERLAP_CONV = 3e-4
"""Fraction of a cycle two reactants must each convert in a step to count as overlapping."""
_OVERLAP_K_DT = 0.3
_SITE_NEGLIGIBLE = 1e-9
"""Sites whose whole capacity is below this fraction of the gas amount do not set the step:
the exposure-exact surface update hands back what the frozen sink took too much, so they
cannot change the gas noticeably, and resolving their decay (an emptied site class under
Torr of co-reactant with the pump shut) would cost a million steps per second."""
_PASSES: dict[int, tuple[tuple[int, float], ...]] = {}


def _passes(na: int) -> tuple[tuple[int, float], ...]:
    """Surface passes (reactant index, share of its exposure) for ``na`` reactants."""
    p = _PASSES.get(na)
    if p is None:
        if na == 1:
            p = ((0, 1.0),)
        else:
            lst = [(j, 0.5) for j in range(na - 1)]
            lst.append((na - 1, 1.0))
            lst.extend((j, 0.5) for j in range(na - 2, -1, -1))
            p = tuple(lst)
        _PASSES[na] = p
    return p


class SurfaceChemistry(ReactorCore):
    """The surface layer of :class:`~sim.reactor.Reactor`."""

    # ------------------------------------------------------------------ doses

    def _available(self, chem: str) -> float:
        i = self._sp_index.get(chem)
        if i is None:
            return 0.0
        x = self._s.x
        return sum(x[self._trans_src[t]] for t in self._sp_trans[i])

    def _dose_end(self, now: int) -> None:
        s = self._s
        for chem, start in s.dose_open.items():
            frac = min(1.0, max(0.0, 1.0 - self._available(chem) / start))
            self._record_sat(chem, frac)
        s.dose_open.clear()

    def _record_sat(self, chem: str, frac: float) -> None:
        rec = self._s.sat.get(chem)
        if rec is None:
            self._s.sat[chem] = [1.0, frac, frac]
        else:
            rec[0] += 1.0
            rec[1] = min(rec[1], frac)
            rec[2] += frac

    def _dose_start(self, chem: str, *, end_previous: bool = True) -> None:
        s = self._s
        if end_previous:
            self._dose_end(s.now)
        if chem in self._sp_index and self._sp_trans[self._sp_index[chem]]:
            avail = self._available(chem)
            if avail > 1e-6:
                s.dose_open[chem] = avail
            else:
                self._record_sat(chem, 1.0)
        # Latch the growth factor of kinds this dose opens: what grows is decided by the
        # cycles that have met in this chamber (the supercycle they form), not the tool.
        for k, first in enumerate(self._first_chem):
            if first == chem:
                ctx = s.last_closed if s.last_closed != k else s.context
                if s.prefix_c[k] > 0.5 and self.chemistry.reclaimed.get(ctx) == k:
                    # most of the surface is this kind's own finished cycles, not taken on
                    # by the longer kind (a Li2O film grown on Li3PO4, a cycle that missed
                    # TMP): it takes up what it takes up on itself
                    ctx = k
                t_c = self._zone_t(self._h_sub)
                s.latched[k] = self.chemistry.multiplier(k, ctx, s.last_closed, t_c)
                s.solo_open[k] = self.chemistry.waits_for_partner(k, ctx)
                self._nmk = None

    # ------------------------------------------------------------------ rates

    def _sub_rates(self) -> None:
        """The substrate-temperature side of the rates (surface kinetics, decomposition)."""
        rt = self._rt
        chem = self.chemistry
        rates = chem.rates(rt.t_sub)
        area = self.config.reactive_area_m2
        geo = rt.geo
        rt.k0 = [0.0] * len(chem.transitions)
        for i, trs in enumerate(self._sp_trans):
            for t in trs:
                rt.k0[t] = geo[i] * rates.beta[t]
        rt.n_site = [n * area for n in rates.sites_mol_m2]
        rt.dm = list(rates.mass_ng_cm2)
        rt.gpc = list(rates.gpc_a)
        rt.kdec = [0.0] * len(self.species)
        for i, _k in self._dec_species:
            beta = rates.decomposition_beta.get(self.species[i], 0.0)
            rt.kdec[i] = geo[i] * beta
        rt.stale = False
        self._nmk = None

    # ------------------------------------------------------------------ the surface update

    def _surface_dt(
        self,
        rx: list[int],
        base: Sequence[float],
        back: Sequence[float],
        a: Sequence[float],
        eb: Sequence[float],
        dt_s: float,
        nm_t: Sequence[float],
    ) -> float:
        """The step (s, at most ``dt_s``) over which the surface sinks of the species ``rx``
        may be held frozen: each one's loss rate changes by at most ``_SURFACE_EPS``, and two
        reactants converting the surface at once (overlap, CVD) have their correlated decay
        resolved. ``base``/``back``: loss rates; ``a`` constant and ``eb`` decaying inflows."""
        s = self._s
        n = s.n
        x = s.x
        k0 = self._rt.k0
        sp_ts = self._sp_ts
        kmax_by_species = [0.0] * len(n)
        for i in rx:
            li = base[i] + back[i]
            ebi = eb[i]
            inflow = a[i] + (ebi if ebi > 0.0 else 0.0)
            n_i = n[i]
            n_ss = inflow / li if li > 0.0 else math.inf
            # Largest amount within a step of length d: min(n_ss, n0 + inflow d) while the
            # chamber fills. The limit shrinks as d grows, so refine once from the first
            # answer (which is itself a valid step); with no inflow the bound is n0 whatever
            # the step and one pass settles it.
            d = dt_s
            for _ in range(2 if inflow > 0.0 else 1):
                n_eff = n_i + inflow * d
                if n_eff > n_ss:
                    n_eff = n_ss if n_ss > n_i else n_i
                ssum = 0.0
                kmax = 0.0
                for t, st in sp_ts[i]:
                    xs = x[st]
                    if xs * nm_t[t] <= _SITE_NEGLIGIBLE * n_eff:
                        continue
                    kt = k0[t] * n_eff / nm_t[t]
                    kmax = kt if kt > kmax else kmax
                    ssum += k0[t] * xs * kt
                kmax_by_species[i] = kmax
                if ssum <= 0.0:
                    break
                lim = _SURFACE_EPS * li / ssum if li > 0.0 else _SURFACE_EPS / kmax
                if lim >= d:
                    break
                if d < dt_s and lim > 2.0 * d:
                    # second pass: the amount bound used the shorter step; stay inside it
                    lim = 2.0 * d
                d = lim
            dt_s = d if d < dt_s else dt_s
        if len(rx) < 2:
            return dt_s
        # -- overlapping reactants (CVD): resolve their correlated decay
        overlap = 0
        kbig = 0.0
        for i in rx:
            km = kmax_by_species[i]
            if km <= 0.0:
                continue
            conv = 0.0
            for _t, st in sp_ts[i]:
                conv += x[st] * km
            if conv * dt_s > _OVERLAP_CONV:
                overlap += 1
                kbig = km if km > kbig else kbig
        if overlap < 2:
            return dt_s
        lim = _OVERLAP_K_DT / kbig
        for i in rx:
            li = base[i] + back[i]
            if kmax_by_species[i] > 0.0 and li > 0.0:
                n_ss = a[i] / li
                big = n[i] if n[i] > n_ss else n_ss
                if abs(n[i] - n_ss) > 0.1 * big and 1.0 / (3.0 * li) < lim:
                    lim = 1.0 / (3.0 * li)
        return lim if lim < dt_s else dt_s

    def _site_scale(self, kinds_m: list[float]) -> tuple[list[float], list[float]]:
        """Per transition: molecules per unit fraction ``n_site * m`` and the kind's growth
        multiplier ``m`` (cached between events while nucleation plays no part)."""
        c = self._nmk
        if c is not None:
            return c
        nsite = self._rt.n_site
        km = [kinds_m[k] for k in self._trans_kind]
        nm = [nsite[t] * km[t] for t in range(len(km))]
        c = (nm, km)
        if self._nuc_flat:
            self._nmk = c
        return c

    def _surface(
        self,
        ract: list[int],
        integ: list[float],
        surf: list[float],
        nm_t: list[float],
        km_t: list[float],
    ) -> None:
        """Exposure-exact surface update; hands back to the gas what the frozen sink took
        too much (so every species balances exactly).

        ``ract``: the reactive species in the gas this step (those with no exposure are
        left out here); ``nm_t``, ``km_t``: see :meth:`_site_scale`."""
        active = [i for i in ract if integ[i] > 0.0]
        na = len(active)
        if na == 0:
            return
        s = self._s
        rt = self._rt
        x = s.x
        n = s.n
        k0 = rt.k0
        dm = rt.dm
        gpc = rt.gpc
        sp_tx = self._sp_tx
        leaves = self._leaves_prefix
        expm1 = math.expm1
        # Several reactants at once (overlap/CVD): Strang splitting, second order in the
        # step and exact at the stiff limit (a fast reactant gets the last word).
        passes = _PASSES.get(na) or _passes(na)
        avail = [n[i] + surf[i] * integ[i] for i in active]
        used = [0.0] * na
        close_conv: list[float] | None = None
        grown: list[float] | None = None
        open_conv: list[float] | None = None
        mass = 0.0
        for j, share in passes:
            i = active[j]
            itg = integ[i] * share
            av = avail[j]
            u = used[j]
            for t, st, dst, c, opens in sp_tx[i]:
                xs = x[st]
                if xs <= 0.0:
                    continue
                nm = nm_t[t]
                conv = xs * -expm1(-k0[t] * itg / nm)
                mol = conv * nm
                if u + mol > av:
                    mol = av - u if av > u else 0.0
                    conv = mol / nm
                u += mol
                x[st] = xs - conv
                x[dst] += conv
                km = km_t[t]
                mass += conv * dm[t] * km
                if c >= 0:
                    if close_conv is None or grown is None:
                        close_conv = [0.0] * len(self._kind_first)
                        grown = [0.0] * len(self._kind_first)
                    close_conv[c] += conv
                    grown[c] += conv * gpc[c] * km
                elif opens:
                    if open_conv is None:
                        open_conv = [0.0] * len(x)
                    open_conv[dst] += conv
                    lp = leaves[t]
                    if lp >= 0:
                        # a new cycle opens on a closed prefix (TaOEt5 after Li2O): that
                        # Li2O will not be a longer kind's, its growth stays
                        self._settle_prefix(lp, conv)
            used[j] = u
        s.mass_ng += mass
        reacted = s.reacted
        for j in range(na):
            i = active[j]
            n[i] = avail[j] - used[j]
            reacted[i] += used[j]
        if close_conv is None or grown is None:
            return
        total_close = 0.0
        best = -1
        best_v = 0.0
        reclaim = self._reclaim_of
        counted = 0.0
        for k in range(len(close_conv)):
            cc = close_conv[k]
            if cc <= 0.0:
                continue
            total_close += cc
            if cc > best_v:
                best_v = cc
                best = k
            g = grown[k]
            s.thickness += g
            s.growth_kind[k] += g
            s.cycles_kind[k] += cc
            if s.solo_open[k]:
                s.solo[k] += g
            if self._is_prefix[k]:
                s.prefix_g[k] += g
                s.prefix_c[k] += cc
            oc = open_conv[self._kind_first[k]] if open_conv is not None else 0.0
            if oc > 0.0:
                # closed in the same step as opened: both reactants present (CVD)
                s.cvd += g * (oc / cc if oc < cc else 1.0)
            r = reclaim[k]
            if r >= 0:
                counted -= self._reclaim(r, cc)  # one cycle of the longer kind, not two
        s.cycles_total += total_close + counted
        if total_close > 1e-3:
            if best != s.last_closed:
                if s.last_closed >= 0:
                    self._partner_met(s.last_closed, best)
                s.context = s.last_closed
                if s.qcm is not None and self.config.qcm is not None:
                    # a QCM is programmed with the density of the film it watches grow
                    dens = self.config.qcm.density_g_cm3
                    s.qcm.density = dens or self.chemistry.kinds[best].areal_density
            s.last_closed = best

    def _reclaim(self, kind: int, conv: float) -> float:
        """A longer kind closed over ``conv`` of the surface whose cycles began as a whole
        cycle of the shorter ``kind`` (Li3PO4 over Li2O): the longer kind's growth stands
        for both, so the shorter one's growth on the way is taken back, and with it the
        areal mass its steps added (the closing step adds the longer kind's share of them,
        :meth:`sim.kinetics.Chemistry.rates`).
        Returns the cycles of ``kind`` taken back."""
        s = self._s
        pc = s.prefix_c[kind]
        back = conv if conv < pc else pc
        g = s.prefix_g[kind] * (back / pc) if pc > 0.0 else 0.0
        s.prefix_g[kind] -= g
        s.prefix_c[kind] = pc - back
        s.thickness -= g
        s.growth_kind[kind] -= g
        s.cycles_kind[kind] -= back
        # and its areal mass: ng/cm2 per A of film is 10 x its density (Chemistry.rates)
        s.mass_ng -= g * 10.0 * self.chemistry.kinds[kind].areal_density
        if s.solo[kind] > 0.0:
            s.solo[kind] = max(0.0, s.solo[kind] - g)
        return back

    def _settle_prefix(self, kind: int, conv: float) -> None:
        """``conv`` of the surface where the shorter ``kind`` closed opens another cycle: its
        share of the growth waiting to be taken back stays ``kind``'s for good."""
        s = self._s
        pc = s.prefix_c[kind]
        if pc <= 0.0:
            return
        if conv >= pc:
            s.prefix_g[kind] = s.prefix_c[kind] = 0.0
            return
        s.prefix_g[kind] *= 1.0 - conv / pc
        s.prefix_c[kind] = pc - conv

    def _partner_met(self, kind: int, partner: int) -> None:
        """A cycle of ``partner`` followed cycles of ``kind``: those of them that grew with no
        partner (the stack's first Li2O cycle) grow what the supercycle the two form says,
        which is only known now that the partner has met them in the chamber."""
        s = self._s
        g = s.solo[kind]
        if g <= 0.0:
            return
        s.solo[kind] = 0.0
        factor = self.chemistry.partner_factor(kind, partner, self._zone_t(self._h_sub))
        if factor == 1.0:
            return
        dg = g * (factor - 1.0)
        s.thickness += dg
        s.growth_kind[kind] += dg
        s.partner_growth[kind] += dg
        # ng/cm2 per A of film is 10 x its density in g/cm3 (Chemistry.rates)
        s.mass_ng += dg * 10.0 * self.chemistry.kinds[kind].areal_density

    def _decompose(self, kind: int, mol: float) -> None:
        s = self._s
        per_cm2 = mol / (self.config.reactive_area_m2 * 1e4)
        h_per, m_per = self._metal[kind]
        dh = per_cm2 * h_per
        s.thickness += dh
        s.cvd += dh
        s.decomposition += dh
        s.growth_kind[kind] += dh
        s.mass_ng += per_cm2 * m_per

    def _multipliers(self) -> list[float]:
        s = self._s
        if self.nucleation.factor == 1.0:
            return s.latched  # read-only use: no copy needed
        nuc = self.nucleation.scale(s.cycles_total)
        return [m * nuc for m in s.latched]
