"""Gas phase of the reactor: the per-temperature rates, the inflows (vapour draw, MFCs,
radicals) and the integrators that advance the gas and hand the exposure to the surface.


Gas phase (simulation.md 3.4), per species i, amounts n_i in mol, chamber volume V:

    dn_i/dt = F_i(t) - (k_pump + k_rec,i + k_dec,i + k_back,i + sum_t k0_t x_src(t)) n_i

* ``k_pump = S T_gas / (V T_pump)`` (0 while the pump isolation valve is shut: stop-flow);
* ``k0_t = (v_i/4) beta_t A / V`` for each half-reaction t the species drives, times the
  fraction ``x`` of the surface in the state it reacts with (wall and substrate uptake);
* ``k_rec`` wall recombination/decomposition without growth (radicals, O3), ``k_dec``
  thermal decomposition above the process window (growth without self-limitation);
* inflows: vapour draw through each line ``F = C u (p_src - p_i) / (R T_src)`` (the
  ``-p_i`` part is ``k_back``), MFCs (first order, ``a + b e^{-t/tau}``), plasma radicals
  (``eta * absorbed RF power``), pressure-spike faults;
* partial pressure ``p_i = n_i R T_gas / V``, T_gas = wall temperature; the gauge sees the sum.

Time stepping: between events (valve motions, MFC dead times, fault times, plasma ignition,
trace samples) the integrator takes steps in which the inflows are constant (or one
exponential) and the surface term is frozen, so each species' amount follows the exact
solution ``n(t) = n_ss + (n0 - n_ss) e^{-lambda t}`` and its time integral is exact. The
surface then takes the exposure-exact update, and the gas gets back exactly what the frozen
rate over-counted, so every species balances to rounding error:
``injected = pumped + reacted + lost + in gas``. Steps are short only while things change
fast: while a valve strokes, while a surface term is a large part of a species' loss and
still changing, while two reactants that close a cycle overlap (CVD), and while a heater
moves; a quiet purge or a settled soak is one step.

Cost: a polling driver reads at many times, and every read at a new time ends a step, so
the step itself is kept cheap. Between events the inflows are classified once: when every
line is shut and still, every MFC settled, the ozone generator settled and the RF off (a
purge, a soak) the step skips all inflow work and keeps its list of species in the gas
(``_integrate_fast`` with the constant inflows summed once); a dose with the MFCs steady
takes the same integrator with the lines' inflows. MFC and RF transients take the general
one (``_integrate``). The fast paths do the same arithmetic in the same order, so their
results are bit-identical to the general path's (``tests/sim/test_sim_fast_paths.py``).
Kinetics at the substrate temperature are computed only when a step has a species that
uses them (a heating ramp with nothing to react costs none), and the per-transition site
scales between events. Snapshots pickle flat tuples of numbers and per-device 128-bit
generator states (:class:`~sim.components.NoiseRng`), ~3 KB.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sim.components import ozone_mole_fraction
from sim.plant import Plant
from sim.state import _Line
from sim.units import NS_PER_MS, NS_PER_S, R_TORR_L, SCCM_MOL_S, kelvin, mean_speed_m_s

if TYPE_CHECKING:
    from collections.abc import Sequence

_VALVE_SUBSTEP_NS = 3 * NS_PER_MS
"""Longest step while a valve strokes (the inflow is averaged exactly over each step)."""
_MIN_STEP_NS = 1_000
_HEATER_DT_K = 0.05
"""Largest temperature change of any zone within one step, K."""
_FLOOR_MOL = 1e-21
"""Below this a species (with no inflow) is counted as pumped away."""
_NO_DRAW: list[tuple[_Line, float, float]] = []
"""Open lines of a quiet step (none; never appended to)."""
_NO_SCALE: list[float] = []


class GasPhase(Plant):
    """The gas layer of :class:`~sim.reactor.Reactor`."""

    # ------------------------------------------------------------------ heaters and rates

    def _heat(self, t0: int, dt_ns: int) -> int:
        """Bring the unsettled heaters to ``t0``; the step length their motion allows."""
        for h in self._hot:
            h.advance_to(t0)
        self._refresh_hot()
        rate = 0.0
        for h in self._hot:
            r = h.rate_k_s()
            rate = r if r > rate else rate
        if rate > 0:
            cap = round(_HEATER_DT_K / rate * NS_PER_S)
            cap = cap if cap > 100 * _MIN_STEP_NS else 100 * _MIN_STEP_NS
            dt_ns = cap if cap < dt_ns else dt_ns
        self._check_rates()
        return dt_ns

    def _check_rates(self, force: bool = False) -> None:
        # Rates are a pure function of the temperatures quantised to 0.01 K (and the pump
        # state), so a restored snapshot replays bit-identically whatever was cached before.
        # The gas side (wall temperature) is computed here; the substrate side only when a
        # step has a species that uses it (see _sub_rates): a heating ramp with nothing to
        # react costs no kinetics.
        s = self._s
        t_sub = round(s.heaters[self._h_sub].t_c, 2)
        t_gas = round(s.heaters[self._h_walls].t_c, 2)
        rt = self._rt
        if not force and t_sub == rt.t_sub and t_gas == rt.t_gas:
            return
        rt.stale = True
        rt.t_sub = t_sub
        if force or t_gas != rt.t_gas:
            cfg = self.config
            rt.t_gas = t_gas
            tg_k = kelvin(t_gas)
            v_l = cfg.volume_l
            rt.p_per_mol = R_TORR_L * tg_k / v_l
            rt.pump = (
                cfg.pump_speed_l_s * s.pump_factor * tg_k / (v_l * kelvin(cfg.pump_t_c))
                if s.pump_open
                else 0.0
            )
            area = cfg.reactive_area_m2
            vbar = [mean_speed_m_s(m, tg_k) for m in self._sp_mass]
            # (v/4) beta A / V in 1/s; A in m2, V in m3
            geo = [v / 4.0 * area / (v_l * 1e-3) for v in vbar]
            rt.geo = geo
            rt.krec = [geo[i] * self._sp_gamma[i] for i in range(len(self.species))]
        if force:
            self._sub_rates()

    # ------------------------------------------------------------------ inflows

    def _source_pressure(self, ln: _Line, t0: int, dt: int) -> tuple[float, float, float]:
        """(p for the line's species, p of O2 for ozone lines, T_src in K)."""
        cfg = ln.cfg
        if ln.empty:
            return 0.0, 0.0, kelvin(self.config.ambient_c)
        if ln.is_ozone:
            oz = self._s.ozone
            x = ozone_mole_fraction(oz.average(t0, dt)) if oz is not None else 0.0
            return cfg.supply_torr * x, cfg.supply_torr * (1.0 - x), kelvin(self.config.ambient_c)
        if ln.is_gas:
            factor = min(1.0, ln.mass_g / cfg.reserve_g) if cfg.reserve_g > 0 else 1.0
            if ln.mass_g <= 0.0:
                factor = 0.0
            return cfg.supply_torr * factor, 0.0, kelvin(self.config.ambient_c)
        heaters = self._s.heaters
        amb = self.config.ambient_c
        t_src = (heaters[ln.h_source].t_c if ln.h_source >= 0 else amb) - ln.cold_drop_k
        t_line = heaters[ln.h_line].t_c if ln.h_line >= 0 else math.inf
        last = self._src_p.get(ln.species)
        if last is not None and last[0] == t_src and last[1] == t_line:
            p = last[2]  # the same temperatures as last time (settled heaters): same value
        else:
            p = self._vapour(ln, t_src)
            if t_line < t_src:
                # the vapour condenses in a line colder than the source
                p = min(p, self._vapour(ln, t_line))
            self._src_p[ln.species] = (t_src, t_line, p)
        if ln.mass_g <= 0.0:
            p = 0.0
        elif cfg.reserve_g > 0 and ln.mass_g < cfg.reserve_g:
            p *= ln.mass_g / cfg.reserve_g
        return p, 0.0, kelvin(t_src)

    def _vapour(self, ln: _Line, t_c: float) -> float:
        t_q = round(t_c, 3)  # 1 mK: a pure function of the key, whatever was cached
        key = (ln.species, t_q)
        p = self._vp_cache.get(key)
        if p is None:
            if len(self._vp_cache) > 4096:
                self._vp_cache.clear()
            p = ln.chem.vapour_pressure_torr(t_q)
            self._vp_cache[key] = p
        return p

    def _inflows(
        self, t0: int, dt: int, a: list[float], back: list[float]
    ) -> list[tuple[_Line, float, float]]:
        """Add the lines' mean inflows over [t0, t0+dt] (mol/s) and back-flow rates (1/s).

        Returns (line, C u / (R T_src), p_src) per open line, for the source bookkeeping.
        """
        s = self._s
        p_per_mol = self._rt.p_per_mol
        t1 = t0 + dt
        draw: list[tuple[_Line, float, float]] = []
        for ln in s.lines:
            v = ln.valve
            u = v.x0 if v.rate == 0.0 else 0.5 * (v.position(t0) + v.position(t1))
            u = ln.leak if ln.leak > u else u
            if u <= 0.0:
                continue
            p_src, p_o2, t_src_k = self._source_pressure(ln, t0, dt)
            c = ln.cfg.conductance_l_s * u / (R_TORR_L * t_src_k)
            i = ln.species
            a[i] += c * p_src
            back[i] += c * p_per_mol
            if ln.species_o2 >= 0:
                a[ln.species_o2] += c * p_o2
                back[ln.species_o2] += c * p_per_mol
            draw.append((ln, c, p_src))
        return draw

    # ------------------------------------------------------------------ the step

    def _classify(self) -> None:
        """Sort the coming steps: constant MFC inflows (every MFC settled) are summed once,
        in the general step's order, and a step is quiet when nothing else flows in:
        every line shut and still, the ozone generator settled, the RF off. Then a step
        needs none of the per-step inflow work (valve averaging, MFC and plasma transients,
        source draw); heaters are handled apart (:attr:`_hot`). Valid until the next event,
        command or fault (:meth:`_changed`), or until a transient settles."""
        s = self._s
        if self._fix_known:
            fix = self._fix_a
        else:
            fix = None
            for m in s.mfcs:
                if m.f0 != m.goal:
                    break
            else:
                a_fix = [0.0] * len(self.species)
                mfc_species = self._mfc_species
                for mi, m in enumerate(s.mfcs):
                    a_fix[mfc_species[mi]] += m.goal * SCCM_MOL_S
                if s.leak_sccm:
                    a_fix[mfc_species[0]] += s.leak_sccm * SCCM_MOL_S
                fix = tuple(a_fix)
            self._fix_a = fix
            self._fix_known = True
        oz = s.ozone
        oz_moving = oz is not None and oz.c0 != oz.goal()
        quiet = fix is not None and not oz_moving
        if quiet and s.plasma is not None and s.plasma.on:
            quiet = False
        if quiet:
            for ln in s.lines:
                v = ln.valve
                if v.rate != 0.0 or v.x0 > 0.0 or ln.leak > 0.0:
                    quiet = False
                    break
        self._quiet_a = fix if quiet else None
        self._q_act = None
        self._transient = fix is None or oz_moving
        self._quiet_known = True

    def _step(self, stop: int) -> None:
        if not self._quiet_known:
            self._classify()
        qa = self._quiet_a
        if qa is not None:
            # Quiet interval (a purge, a soak): constant inflows, nothing to average.
            t0 = self._s.now
            dt_ns = stop - t0
            if self._hot:
                dt_ns = self._heat(t0, dt_ns)
            act = self._q_act
            if act is None:
                # the species in the gas: in a quiet interval none joins, one leaves only
                # at the floor (and one whose amount underflows to zero adds exact zeros)
                n = self._s.n
                act = [i for i in self._sp_range if n[i] != 0.0 or qa[i] != 0.0]
                self._q_act = act
                reactive = self._reactive_mask
                self._q_ract = [i for i in act if reactive[i]]
            self._integrate_fast(t0, dt_ns, qa, qa, self._zeros, _NO_DRAW, act, self._q_ract)
            return
        self._general_step(stop)
        if self._transient:
            # an MFC or the ozone output may have settled within the step
            self._quiet_known = False
            self._fix_known = False

    def _general_step(self, stop: int) -> None:
        t0, dt_ns, a_fix, a, back, eb, emu, draw = self._step_inflows(stop)
        plasma = self._s.plasma
        if self._fix_a is not None and (plasma is None or not plasma.ignited):
            # nothing decays in (eb = 0): the lighter integrator
            n = self._s.n
            act = [i for i in self._sp_range if n[i] != 0.0 or a[i] != 0.0]
            reactive = self._reactive_mask
            ract = [i for i in act if reactive[i]]
            self._integrate_fast(t0, dt_ns, a_fix, a, back, draw, act, ract)
        else:
            self._integrate(t0, dt_ns, a_fix, a, back, eb, emu, draw)

    def _step_inflows(
        self, stop: int
    ) -> tuple[
        int,
        int,
        list[float],
        list[float],
        list[float],
        list[float],
        list[float],
        list[tuple[_Line, float, float]],
    ]:
        """The next step's start and longest length (heaters, valve strokes, ozone and
        plasma transients cap it) and its inflows: constant ``a`` (``a_fix`` without the
        lines' part), decaying ``eb e^{-emu t}``, the lines' back-flow rates and draw."""
        s = self._s
        t0 = s.now
        dt_ns = stop - t0
        if self._hot:
            dt_ns = self._heat(t0, dt_ns)
        nsp = len(self.species)
        for ln in s.lines:
            if ln.valve.rate != 0.0:
                dt_ns = _VALVE_SUBSTEP_NS if dt_ns > _VALVE_SUBSTEP_NS else dt_ns
                break
        oz = s.ozone
        if oz is not None and not oz.settled(t0):
            cap = round(oz.cfg.tau_s * NS_PER_S / 10)
            dt_ns = cap if cap < dt_ns else dt_ns
        plasma = s.plasma
        if plasma is not None and plasma.on:
            # ignition and extinction depend on the feed flow and the pressure, which move
            # between events: look again every step, and often while they change
            self._plasma_check(t0)
            if not plasma.ignited:
                if plasma.ignite_at >= 0:
                    wait = plasma.ignite_at - t0
                    dt_ns = min(dt_ns, wait if wait > 1 else 1)
                elif dt_ns > 10 * NS_PER_MS:
                    dt_ns = 10 * NS_PER_MS
            elif dt_ns > 10 * NS_PER_MS:
                mfcs = s.mfcs
                for mi in self._plasma_mfcs:
                    if not mfcs[mi].settled(t0):
                        dt_ns = 10 * NS_PER_MS
                        break
        # -- inflows that do not depend on the step length: MFCs, leaks, radicals
        eb = [0.0] * nsp
        emu = [0.0] * nsp
        fix = self._fix_a
        if fix is not None:
            a_fix = list(fix)
        else:
            a_fix = [0.0] * nsp
            mfc_species = self._mfc_species
            for mi, m in enumerate(s.mfcs):
                i = mfc_species[mi]
                a_fix[i] += m.goal * SCCM_MOL_S
                if m.f0 != m.goal and not m.settled(t0):
                    eb[i] += (m.flow(t0) - m.goal) * SCCM_MOL_S
                    emu[i] = 1.0 / m.cfg.tau_s
            if s.leak_sccm:
                a_fix[mfc_species[0]] += s.leak_sccm * SCCM_MOL_S
        if plasma is not None and plasma.ignited:
            self._radical_inflow(t0, a_fix, eb, emu)
        # -- line inflows (valve opening averaged over the step)
        a = list(a_fix)
        back = [0.0] * nsp
        draw = self._inflows(t0, dt_ns, a, back)
        return t0, dt_ns, a_fix, a, back, eb, emu, draw

    def _integrate(
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
        """One step from ``t0``, at most ``dt_ns`` long, with the given inflows: ``a`` constant
        (mol/s, ``a_fix`` without the lines' part), ``eb e^{-emu t}`` decaying, ``back`` the
        lines' back-flow rates; ``draw`` the open lines (their inflow is recomputed when the
        surface coupling shortens the step)."""
        s = self._s
        rt = self._rt
        n = s.n
        # -- the species that hold or receive gas, and their loss rates
        act = [i for i in self._sp_range if n[i] != 0.0 or a[i] != 0.0 or eb[i] != 0.0]
        if rt.stale:
            sub_dep = self._sub_dep
            for i in act:
                if sub_dep[i]:
                    self._sub_rates()
                    break
        x = s.x
        k0 = rt.k0
        kpump = rt.pump
        krec = rt.krec
        kdec = rt.kdec
        sp_ts = self._sp_ts
        reactive = self._reactive_mask
        nsp = len(n)
        surf = [0.0] * nsp
        base = [0.0] * nsp
        rx: list[int] = []  # with a surface sink now
        ract: list[int] = []  # able to react (a later pass may free its sites)
        for i in act:
            ks = 0.0
            if reactive[i]:
                for t, st in sp_ts[i]:
                    ks += k0[t] * x[st]
                surf[i] = ks
                ract.append(i)
                if ks > 0.0:
                    rx.append(i)
            base[i] = kpump + krec[i] + kdec[i] + ks
        # -- step size from the surface coupling
        if ract:
            nm_t, km_t = self._site_scale(s.latched if self._nuc_flat else self._multipliers())
        else:
            nm_t = km_t = _NO_SCALE
        dt_s = dt_ns / NS_PER_S
        if rx:
            dt_s = self._surface_dt(rx, base, back, a, eb, dt_s, nm_t)
        new_dt = round(dt_s * NS_PER_S)
        if new_dt < dt_ns:
            floor = _MIN_STEP_NS if dt_ns > _MIN_STEP_NS else dt_ns
            dt_ns = new_dt if new_dt > floor else floor
            if draw:
                # the valve openings (and ozone output) average over the shorter step
                a2 = list(a_fix)
                back2 = [0.0] * nsp
                draw = self._inflows(t0, dt_ns, a2, back2)
                a = a2
                back = back2
        dt = dt_ns / NS_PER_S
        # -- gas: exact solution per species
        p_per_mol = rt.p_per_mol
        g_beta = self._gauge_beta
        xb = g_beta * dt
        g_const = 0.0
        g_decay = 0.0
        integ = [0.0] * nsp
        injected = s.injected
        pumped = s.pumped
        exposure = s.exposure
        lost = s.lost
        exp = math.exp
        expm1 = math.expm1
        for i in act:
            n0 = n[i]
            ai = a[i]
            bi = eb[i]
            bk = back[i]
            lam_i = base[i] + bk
            si = surf[i]
            if bi == 0.0 and si == 0.0 and ai > 0.0 and abs(n0 * lam_i - ai) <= 1e-14 * ai:
                # at its steady state (the carrier, most of the time): nothing moves
                itg = n0 * dt
                injected[i] += ai * dt - bk * itg
                pumped[i] += kpump * itg
                if krec[i] or kdec[i]:
                    lost[i] += (krec[i] + kdec[i]) * itg
                exposure[i] += itg * p_per_mol
                integ[i] = itg
                g_const += n0
                continue
            xl = lam_i * dt
            e = exp(-xl)
            if xl > 1e-3:
                ph = (1.0 - e) / xl
                ps = (xl - 1.0 + e) / (xl * xl)
            else:
                ph = 1.0 - xl * (0.5 - xl / 6.0) if xl < 1e-4 else -expm1(-xl) / xl
                if xl < 1e-3:
                    ps = 0.5 - xl * (1.0 / 6.0 - xl / 24.0)
                else:
                    ps = (xl + expm1(-xl)) / (xl * xl)
            n1 = n0 * e + ai * dt * ph
            itg = n0 * dt * ph + ai * dt * dt * ps
            if bi != 0.0:
                xm = emu[i] * dt
                n1 += bi * dt * _g(xl, xm)
                itg += bi * dt * dt * _h(xl, xm)
            if si > 0.0 and itg > 0.0:
                # Second pass: the surface this species reacts with shrinks during the step
                # (x(t) = x0 e^-K(t)); solve the gas again with the step-mean fraction
                # x0 (1 - e^-K)/K, which makes the surface sink agree with the exact uptake.
                ks = 0.0
                for t, st in sp_ts[i]:
                    xs = x[st]
                    if xs > 0.0:
                        kk = k0[t] * itg / nm_t[t]
                        if kk > 1e-6:
                            ks += (
                                k0[t]
                                * xs
                                * (1.0 - kk * (0.5 - kk / 6.0) if kk < 1e-4 else -expm1(-kk) / kk)
                            )
                        else:
                            ks += k0[t] * xs * 1.0
                if ks < si * (1.0 - 1e-9):
                    base[i] += ks - si
                    surf[i] = ks
                    xl = (base[i] + bk) * dt
                    e = exp(-xl)
                    ph = 1.0 - xl * (0.5 - xl / 6.0) if xl < 1e-4 else -expm1(-xl) / xl
                    if xl < 1e-3:
                        ps = 0.5 - xl * (1.0 / 6.0 - xl / 24.0)
                    else:
                        ps = (xl + expm1(-xl)) / (xl * xl)
                    n1 = n0 * e + ai * dt * ph
                    itg = n0 * dt * ph + ai * dt * dt * ps
                    if bi != 0.0:
                        xm = emu[i] * dt
                        n1 += bi * dt * _g(xl, xm)
                        itg += bi * dt * dt * _h(xl, xm)
            inj = ai * dt
            if bi != 0.0:
                inj += bi * dt * _phi(emu[i] * dt)
            n1 = n1 if n1 > 0.0 else 0.0
            itg = itg if itg > 0.0 else 0.0
            injected[i] += inj - bk * itg
            pumped[i] += kpump * itg
            if krec[i] or kdec[i]:
                lost[i] += (krec[i] + kdec[i]) * itg
            exposure[i] += itg * p_per_mol
            integ[i] = itg
            n[i] = n1
            # gauge: the part of n settled within dt plus a part decaying at lambda
            if 1.0 - e > 1e-12:
                n_inf = (n1 - n0 * e) / (1.0 - e)
                g_const += n_inf
                if g_beta > 0:
                    # (n0 - n_inf) xb g(xl, xb), g inlined
                    d = xl - xb
                    lo = xb if xb < xl else xl
                    ad = d if d >= 0.0 else -d
                    g_decay += (
                        (n0 - n_inf)
                        * xb
                        * (
                            exp(-lo)
                            * (1.0 - ad * (0.5 - ad / 6.0) if ad < 1e-4 else -expm1(-ad) / ad)
                        )
                    )
            else:
                g_const += 0.5 * (n0 + n1)
        self._finish_step(t0, dt_ns, act, a, ract, integ, surf, nm_t, km_t, draw, g_const, g_decay)

    def _finish_step(
        self,
        t0: int,
        dt_ns: int,
        act: list[int],
        a: Sequence[float],
        ract: list[int],
        integ: list[float],
        surf: list[float],
        nm_t: list[float],
        km_t: list[float],
        draw: list[tuple[_Line, float, float]],
        g_const: float,
        g_decay: float,
    ) -> None:
        """What follows the gas update in either integrator: the surface takes its share of
        the exposure ``integ``, reactants decompose, sources lose what they delivered,
        traces below the floor count as pumped, the gauge lags, the clock moves."""
        s = self._s
        rt = self._rt
        n = s.n
        dt = dt_ns / NS_PER_S
        p_per_mol = rt.p_per_mol
        if ract:
            self._surface(ract, integ, surf, nm_t, km_t)
        kdec = rt.kdec
        for i, k in self._dec_species:
            kd = kdec[i]
            if kd > 0.0 and integ[i] > 0.0:
                self._decompose(k, kd * integ[i])
        for ln, c, p_src in draw:
            if ln.is_ozone:
                continue
            mol = c * (p_src * dt - p_per_mol * integ[ln.species])
            grams = mol * ln.chem.molar_mass
            ln.consumed_g += grams
            left = ln.mass_g - grams
            ln.mass_g = left if left > 0.0 else 0.0
        pumped = s.pumped
        for i in act:
            ni = n[i]
            if 0.0 < ni < _FLOOR_MOL and a[i] == 0.0:
                pumped[i] += ni
                n[i] = 0.0
                self._q_act = None  # the quiet path's species list lost one
        gauge = s.gauge
        g_beta = self._gauge_beta
        if g_beta > 0:
            eg = math.exp(-g_beta * dt)
            gauge.lagged_torr = gauge.lagged_torr * eg + p_per_mol * (
                g_const * (1.0 - eg) + g_decay
            )
        else:
            gauge.lagged_torr = p_per_mol * sum(n)
        s.now = t0 + dt_ns

    def _integrate_fast(
        self,
        t0: int,
        dt_ns: int,
        a_fix: Sequence[float],
        a: Sequence[float],
        back: Sequence[float],
        draw: list[tuple[_Line, float, float]],
        act: list[int],
        ract: list[int],
    ) -> None:
        """:meth:`_integrate` when nothing flows in on a decaying profile (every MFC
        settled, no plasma radicals): a quiet step, or a dose with the MFCs steady. The
        same arithmetic, less what is zero (bit-identical results, which ``tests/sim``
        checks against the general path); species with no inflow (reactants in a purge)
        take the short forms. ``act``: the species in the gas or flowing in, ``ract``
        the reactive ones among them."""
        s = self._s
        rt = self._rt
        n = s.n
        reactive = self._reactive_mask
        if rt.stale:
            sub_dep = self._sub_dep
            for i in act:
                if sub_dep[i]:
                    self._sub_rates()
                    break
        x = s.x
        k0 = rt.k0
        kpump = rt.pump
        krec = rt.krec
        kdec = rt.kdec
        sp_ts = self._sp_ts
        nsp = len(n)
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
            base[i] = kpump + krec[i] + kdec[i] + ks
        if ract:
            nm_t, km_t = self._site_scale(s.latched if self._nuc_flat else self._multipliers())
        else:
            nm_t = km_t = _NO_SCALE
        dt_s = dt_ns / NS_PER_S
        if rx:
            dt_s = self._surface_dt(rx, base, back, a, self._zeros, dt_s, nm_t)
        new_dt = round(dt_s * NS_PER_S)
        if new_dt < dt_ns:
            floor = _MIN_STEP_NS if dt_ns > _MIN_STEP_NS else dt_ns
            dt_ns = new_dt if new_dt > floor else floor
            if draw:
                # the valve openings (and ozone output) average over the shorter step
                a2 = list(a_fix)
                back2 = [0.0] * nsp
                draw = self._inflows(t0, dt_ns, a2, back2)
                a = a2
                back = back2
        dt = dt_ns / NS_PER_S
        p_per_mol = rt.p_per_mol
        g_beta = self._gauge_beta
        xb = g_beta * dt
        g_const = 0.0
        g_decay = 0.0
        integ = [0.0] * nsp
        injected = s.injected
        pumped = s.pumped
        exposure = s.exposure
        lost = s.lost
        exp = math.exp
        expm1 = math.expm1
        for i in act:
            n0 = n[i]
            ai = a[i]
            bk = back[i]
            lam_i = base[i] + bk
            si = surf[i]
            if si == 0.0 and ai > 0.0 and abs(n0 * lam_i - ai) <= 1e-14 * ai:
                # at its steady state (the carrier, most of the time): nothing moves
                itg = n0 * dt
                injected[i] += ai * dt - bk * itg
                pumped[i] += kpump * itg
                if krec[i] or kdec[i]:
                    lost[i] += (krec[i] + kdec[i]) * itg
                exposure[i] += itg * p_per_mol
                integ[i] = itg
                g_const += n0
                continue
            xl = lam_i * dt
            e = exp(-xl)
            if ai == 0.0:
                if xl > 1e-3:
                    ph = (1.0 - e) / xl
                else:
                    ph = 1.0 - xl * (0.5 - xl / 6.0) if xl < 1e-4 else -expm1(-xl) / xl
                n1 = n0 * e
                itg = n0 * dt * ph
            else:
                if xl > 1e-3:
                    ph = (1.0 - e) / xl
                    ps = (xl - 1.0 + e) / (xl * xl)
                else:
                    ph = 1.0 - xl * (0.5 - xl / 6.0) if xl < 1e-4 else -expm1(-xl) / xl
                    if xl < 1e-3:
                        ps = 0.5 - xl * (1.0 / 6.0 - xl / 24.0)
                    else:
                        ps = (xl + expm1(-xl)) / (xl * xl)
                n1 = n0 * e + ai * dt * ph
                itg = n0 * dt * ph + ai * dt * dt * ps
            if si > 0.0 and itg > 0.0:
                ks = 0.0
                for t, st in sp_ts[i]:
                    xs = x[st]
                    if xs > 0.0:
                        kk = k0[t] * itg / nm_t[t]
                        if kk > 1e-6:
                            ks += (
                                k0[t]
                                * xs
                                * (1.0 - kk * (0.5 - kk / 6.0) if kk < 1e-4 else -expm1(-kk) / kk)
                            )
                        else:
                            ks += k0[t] * xs * 1.0
                if ks < si * (1.0 - 1e-9):
                    base[i] += ks - si
                    surf[i] = ks
                    xl = (base[i] + bk) * dt
                    e = exp(-xl)
                    ph = 1.0 - xl * (0.5 - xl / 6.0) if xl < 1e-4 else -expm1(-xl) / xl
                    if ai == 0.0:
                        n1 = n0 * e
                        itg = n0 * dt * ph
                    else:
                        if xl < 1e-3:
                            ps = 0.5 - xl * (1.0 / 6.0 - xl / 24.0)
                        else:
                            ps = (xl + expm1(-xl)) / (xl * xl)
                        n1 = n0 * e + ai * dt * ph
                        itg = n0 * dt * ph + ai * dt * dt * ps
            n1 = n1 if n1 > 0.0 else 0.0
            itg = itg if itg > 0.0 else 0.0
            if ai != 0.0 or bk != 0.0:
                injected[i] += ai * dt - bk * itg
            pumped[i] += kpump * itg
            if krec[i] or kdec[i]:
                lost[i] += (krec[i] + kdec[i]) * itg
            exposure[i] += itg * p_per_mol
            integ[i] = itg
            n[i] = n1
            if 1.0 - e > 1e-12:
                n_inf = (n1 - n0 * e) / (1.0 - e)
                g_const += n_inf
                if g_beta > 0:
                    d = xl - xb
                    lo = xb if xb < xl else xl
                    ad = d if d >= 0.0 else -d
                    g_decay += (
                        (n0 - n_inf)
                        * xb
                        * (
                            exp(-lo)
                            * (1.0 - ad * (0.5 - ad / 6.0) if ad < 1e-4 else -expm1(-ad) / ad)
                        )
                    )
            else:
                g_const += 0.5 * (n0 + n1)
        self._finish_step(t0, dt_ns, act, a, ract, integ, surf, nm_t, km_t, draw, g_const, g_decay)


# --------------------------------------------------------------------------- math helpers


def _phi(x: float) -> float:
    """(1 - e^-x) / x, stable near 0."""
    if x < 1e-4:
        return 1.0 - x * (0.5 - x / 6.0)
    return -math.expm1(-x) / x


def _psi(x: float) -> float:
    """(x - 1 + e^-x) / x^2 = integral factor of a constant inflow, stable near 0."""
    if x < 1e-3:
        return 0.5 - x * (1.0 / 6.0 - x / 24.0)
    return (x + math.expm1(-x)) / (x * x)


def _g(x: float, y: float) -> float:
    """(e^-y - e^-x) / (x - y): response factor of an e^-mu t inflow (x=lam dt, y=mu dt)."""
    d = x - y
    lo = y if y < x else x
    ad = abs(d)
    return math.exp(-lo) * _phi(ad)


def _h(x: float, y: float) -> float:
    """(phi(y) - phi(x)) / (x - y): its time integral factor."""
    d = x - y
    if abs(d) < 1e-6:
        m = 0.5 * (x + y)
        if m < 1e-3:
            return 0.5 - m / 3.0
        return (1.0 - math.exp(-m) * (1.0 + m)) / (m * m)
    return (_phi(y) - _phi(x)) / d
