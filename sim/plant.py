"""The reactor's devices as the physics sees them: measured read-backs (noise, lag,
quantisation, fault overrides), the plasma source (ignition, radical inflow) and the MFC
goals (setpoint, faults, carrier shut-off). The device models themselves live in
:mod:`sim.components`.
"""

from __future__ import annotations

import math

from sim.components import Rng, quantise
from sim.state import HeaterState, MfcState, OzoneState, PlasmaState, QcmState
from sim.surface import SurfaceChemistry
from sim.units import NS_PER_MS, NS_PER_S, SCCM_MOL_S


class Plant(SurfaceChemistry):
    """The device layer of :class:`~sim.reactor.Reactor`."""

    # ------------------------------------------------------------------ measured (shared)

    def _read_mfc(self, name: str, rng: Rng) -> MfcState:
        i = self._mfc(name)
        s = self._s
        m = s.mfcs[i]
        reading: float | None = None
        if s.mfc_frozen[i] is not None:
            reading = s.mfc_frozen[i]
        elif s.mfc_offset[i]:
            reading = max(0.0, m.flow(s.now) - s.mfc_offset[i])
        return MfcState(m.measured(s.now, rng, reading), m.setpoint)

    def _read_heater(self, name: str, rng: Rng) -> HeaterState:
        h = self._s.heaters[self._heater(name)]
        now = self._s.now
        if not h.settled:
            h.advance_to(now)  # (a settled loop is at its equilibrium whatever the time)
        return HeaterState(
            h.measured_pv(rng),
            h.working,
            round(100.0 * h.u, 1),
            h.sensor_break,
            h.target is not None and h.working != h.target,
        )

    def _read_plasma(self, rng: Rng) -> PlasmaState:
        p = self._plasma()
        now = self._s.now
        fwd = p.forward_w()
        tuned = self._tuned_fraction()
        refl = fwd * p.reflected_fraction(now, tuned)
        noise = p.cfg.noise_w
        if fwd > 0:
            fwd = max(0.0, fwd + rng.gauss(0.0, noise))
            refl = max(0.0, refl + rng.gauss(0.0, noise))
        return PlasmaState(
            on=p.on,
            setpoint_w=p.setpoint_w,
            forward_w=round(fwd, 1),
            reflected_w=round(refl, 1),
            ignited=p.ignited,
        )

    def _read_ozone(self, rng: Rng) -> OzoneState:
        oz = self._ozone()
        c = oz.concentration(self._s.now)
        meas = quantise(max(0.0, c + rng.gauss(0.0, oz.cfg.noise_pct)), oz.cfg.resolution_pct)
        return OzoneState(on=oz.on, setpoint_pct=oz.setpoint_pct, concentration_pct=meas)

    def _read_qcm(self, rng: Rng, update_rate: bool) -> QcmState:
        q = self._qcm()
        s = self._s
        noise = q.cfg.noise_hz + (s.qcm_noise_hz if s.qcm_failed else 0.0)
        cs = s.cells
        # in an N-cell chamber the crystal weighs what grows in its own cell
        mass = s.mass_ng if cs is None or cs.qcm == cs.home else cs.surf[cs.qcm].mass_ng
        f = q.frequency(mass) + rng.gauss(0.0, noise)
        if s.qcm_failed:
            f += rng.choice((-1.0, 1.0)) * rng.random() * 50.0 * noise
        f = quantise(f, q.cfg.resolution_hz)
        thick = q.thickness_a(f)
        rate = q.rate
        if update_rate:
            if q.last_t >= 0 and s.now - q.last_t >= NS_PER_S // 10:
                rate = (thick - q.last_thickness) / ((s.now - q.last_t) / NS_PER_S)
                q.rate = rate
                q.last_t = s.now
                q.last_thickness = thick
            elif q.last_t < 0:
                q.last_t = s.now
                q.last_thickness = thick
        return QcmState(
            thickness_a=round(thick, 3),
            rate_a_s=round(rate, 4),
            frequency_hz=f,
            crystal_life_pct=0.0 if s.qcm_failed else round(q.life_pct(f), 3),
            failed=s.qcm_failed,
        )

    # ------------------------------------------------------------------ plasma

    def _tuned_fraction(self) -> float:
        p = self._plasma()
        if self._s.reflected_override is not None:
            return self._s.reflected_override
        return p.cfg.tuned_reflected_fraction

    def _feed_sccm(self, t: int) -> dict[str, float]:
        s = self._s
        out: dict[str, float] = {}
        for m in s.mfcs:
            if m.cfg.name.startswith("plasma."):
                out[m.cfg.gas] = out.get(m.cfg.gas, 0.0) + m.flow(t)
        return out

    def _plasma_check(self, now: int) -> None:
        s = self._s
        p = s.plasma
        if p is None:
            return
        if not p.on and not p.ignited:
            p.ignite_at = -1  # off: nothing can ignite (what the general case concludes)
            return
        feeds = self._feed_sccm(now)
        flowing = any(v >= p.cfg.min_feed_sccm for v in feeds.values())
        pressure = self._rt.p_per_mol * sum(s.n)
        ok = (
            p.on
            and p.setpoint_w > 0
            and flowing
            and not s.no_ignite
            and p.cfg.min_pressure_torr <= pressure <= p.cfg.max_pressure_torr
        )
        if p.ignited and not (p.on and flowing and not s.no_ignite and p.setpoint_w > 0):
            p.ignited = False
            self._dose_end(now)
        if not p.ignited:
            if ok and p.ignite_at < 0:
                p.ignite_at = now + round(p.cfg.ignition_delay_ms * NS_PER_MS)
                self._changed()
            elif not ok:
                p.ignite_at = -1
            elif p.ignite_at >= 0 and p.ignite_at <= now:
                p.ignited = True
                p.ignited_at = now
                p.ignite_at = -1
                self._changed()
                # A dose for each radical the plasma makes now: the feeds that flow, opened
                # together (a feed valve that is configured but shut doses nothing).
                self._dose_end(now)
                for gas, sccm in feeds.items():
                    rad = self._radical_of_feed.get(gas)
                    if rad is not None and sccm >= p.cfg.min_feed_sccm:
                        self._dose_start(self.species[rad], end_previous=False)

    def _radical_inflow(self, t0: int, a: list[float], eb: list[float], emu: list[float]) -> None:
        s = self._s
        p = s.plasma
        assert p is not None
        feeds = self._feed_sccm(t0)
        flowing = {g: v for g, v in feeds.items() if v >= p.cfg.min_feed_sccm}
        if not flowing:
            return
        fwd = p.forward_w()
        tuned = self._tuned_fraction()
        share = 1.0 / len(flowing)
        eta = p.cfg.radical_yield_mol_per_j
        tau = p.cfg.tune_ms * 1e-3
        for gas, sccm in flowing.items():
            rad = self._radical_of_feed.get(gas)
            if rad is None:
                continue
            cap = 2.0 * sccm * SCCM_MOL_S
            steady = eta * fwd * share * (1.0 - tuned)
            decay = 0.0
            if tau > 0:
                decay = (
                    -eta
                    * fwd
                    * share
                    * (0.9 - tuned)
                    * math.exp(-(t0 - p.ignited_at) / (tau * NS_PER_S))
                )
            if steady > cap:
                a[rad] += cap
                continue
            a[rad] += steady
            if decay < -1e-30:
                eb[rad] += decay
                emu[rad] = 1.0 / tau

    # ------------------------------------------------------------------ MFCs

    def _mfc_goal(self, i: int) -> float:
        s = self._s
        m = s.mfcs[i]
        if self.carrier_cut and i == self._mfc_index.get("carrier", -1):
            return 0.0
        frozen = s.mfc_frozen[i]
        if frozen is not None:
            return frozen
        goal = m.setpoint
        cap = s.mfc_cap[i]
        if cap is not None and goal > cap:
            goal = cap
        goal += s.mfc_offset[i]
        return min(max(goal, 0.0), m.cfg.full_scale_sccm)
