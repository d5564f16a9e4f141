"""What an injected fault does to the reactor's physics (the catalogue, triggers and
schedule are :mod:`sim.faults`; it calls back here when a fault starts or ends)."""

from __future__ import annotations

from sim.cells import CellGas
from sim.faults import COMM_KINDS, Fault, FaultKind
from sim.state import UnknownComponentError
from sim.units import NS_PER_MS


class FaultEffects(CellGas):
    """The fault layer of :class:`~sim.reactor.Reactor`."""

    def _check_fault_target(self, kind: FaultKind, target: str) -> None:
        if kind in COMM_KINDS:
            if target not in self.device_names():
                raise UnknownComponentError(
                    f"no device {target!r} for {kind}; have {self.device_names()}"
                )
            return
        if kind in (
            FaultKind.VALVE_STUCK_CLOSED,
            FaultKind.VALVE_STUCK_OPEN,
            FaultKind.VALVE_SLOW,
            FaultKind.EMPTY_SOURCE,
            FaultKind.COLD_SOURCE,
        ):
            self._line(target)
        elif kind in (FaultKind.MFC_LOW, FaultKind.MFC_STUCK):
            self._mfc(target)
        elif kind in (FaultKind.HEATER_RUNAWAY, FaultKind.THERMOCOUPLE_BREAK):
            self._heater(target)
        elif kind in (FaultKind.PRESSURE_SPIKE, FaultKind.GAUGE_DRIFT):
            if target != self.config.gauge.name:
                raise UnknownComponentError(f"{kind} targets the gauge {self.config.gauge.name!r}")
        elif kind is FaultKind.PUMP_DEGRADATION:
            if target != "pump":
                raise UnknownComponentError(f"{kind} targets 'pump'")
        elif kind is FaultKind.QCM_FAILURE:
            self._qcm()
        elif kind in (FaultKind.PLASMA_NO_IGNITE, FaultKind.PLASMA_HIGH_REFLECTED):
            self._plasma()

    def _fault_changed(self, f: Fault, active: bool) -> None:
        """Apply (or undo) a fault's physical effect at the present time."""
        s = self._s
        now = s.now
        kind = f.kind
        if kind in COMM_KINDS:
            return
        if kind is FaultKind.VALVE_STUCK_CLOSED:
            ln = s.lines[self._line(f.target)]
            ln.stuck_closed = bool(self.faults.active(kind, f.target))
            v = ln.valve
            if ln.stuck_closed:
                v.pending.clear()
                v.schedule(now, 0.0)
                v.process(now)
            elif v.commanded:
                v.schedule(now + round(v.open_dead_ns * self._slow(ln)), 1.0)
        elif kind is FaultKind.VALVE_STUCK_OPEN:
            ln = s.lines[self._line(f.target)]
            leaks = [g.param("leak_fraction") for g in self.faults.active(kind, f.target)]
            ln.leak = min(1.0, max(leaks)) if leaks else 0.0
        elif kind is FaultKind.VALVE_SLOW:
            ln = s.lines[self._line(f.target)]
            factor = 1.0
            for g in self.faults.active(kind, f.target):
                factor *= g.param("factor")
            v = ln.valve
            base_stroke = max(1, round(ln.cfg.valve_stroke_ms * NS_PER_MS))
            x = v.position(now)
            v.stroke_ns = max(1, round(base_stroke * factor))
            v.open_dead_ns = round(ln.cfg.valve_dead_ms * NS_PER_MS)
            v.close_dead_ns = round(ln.cfg.valve_close_dead_ms * NS_PER_MS)
            if v.rate != 0.0:
                # keep the stem where it is, continue at the new speed
                v.x0, v.t0 = x, now
                speed = 1.0 / v.stroke_ns
                v.rate = speed if v.rate > 0 else -speed
        elif kind in (FaultKind.MFC_LOW, FaultKind.MFC_STUCK):
            i = self._mfc(f.target)
            m = s.mfcs[i]
            if kind is FaultKind.MFC_LOW:
                caps: list[float] = []
                for g in self.faults.active(kind, f.target):
                    cap = g.params.get("max_sccm")
                    if cap is None:
                        cap = 0.5 * m.setpoint
                        g.params["max_sccm"] = cap
                    caps.append(float(cap))
                s.mfc_cap[i] = min(caps) if caps else None
            else:
                act = self.faults.active(kind, f.target)
                frozen = [g for g in act if g.param("frozen")]
                s.mfc_frozen[i] = m.flow(now) if frozen else None
                s.mfc_offset[i] = sum(g.param("offset_sccm") for g in act)
            m.retarget(now, self._mfc_goal(i))
            if s.mfc_frozen[i] is not None:
                m.f0 = m.goal
        elif kind is FaultKind.HEATER_RUNAWAY:
            h = s.heaters[self._heater(f.target)]
            h.advance_to(now)
            h.runaway = bool(self.faults.active(kind, f.target))
            h.wake(now)
        elif kind is FaultKind.THERMOCOUPLE_BREAK:
            h = s.heaters[self._heater(f.target)]
            h.advance_to(now)
            h.sensor_break = bool(self.faults.active(kind, f.target))
            h.wake(now)
        elif kind is FaultKind.PRESSURE_SPIKE:
            carrier = self._mfc_species[0]
            if active:
                dn = f.param("torr") / self._rt.p_per_mol
                s.n[carrier] += dn
                s.injected[carrier] += dn
                self._spread(carrier, dn)
            s.leak_sccm = sum(g.param("leak_sccm") for g in self.faults.active(kind))
        elif kind is FaultKind.PUMP_DEGRADATION:
            factor = 1.0
            for g in self.faults.active(kind):
                factor *= g.param("factor")
            s.pump_factor = factor
            self._check_rates(force=True)
        elif kind is FaultKind.EMPTY_SOURCE:
            ln = s.lines[self._line(f.target)]
            ln.empty = bool(self.faults.active(kind, f.target))
        elif kind is FaultKind.COLD_SOURCE:
            ln = s.lines[self._line(f.target)]
            act = self.faults.active(kind, f.target)
            if ln.h_source >= 0:
                h = s.heaters[ln.h_source]
                h.advance_to(now)
                h.element_factor = 0.0 if act else 1.0
                h.wake(now)
            else:
                ln.cold_drop_k = max((g.param("drop_k") for g in act), default=0.0)
        elif kind is FaultKind.GAUGE_DRIFT:
            g_act = self.faults.active(kind)
            gauge = s.gauge
            gauge.offset = sum(g.param("offset_torr") for g in g_act)
            gauge.drift_rate = sum(g.param("rate_torr_per_s") for g in g_act)
            gauge.drift_start = now
        elif kind is FaultKind.QCM_FAILURE:
            q_act = self.faults.active(kind)
            s.qcm_failed = bool(q_act)
            s.qcm_noise_hz = max((g.param("noise_hz") for g in q_act), default=0.0)
        elif kind is FaultKind.PLASMA_NO_IGNITE:
            s.no_ignite = bool(self.faults.active(kind))
            self._plasma_check(now)
        elif kind is FaultKind.PLASMA_HIGH_REFLECTED:
            r_act = self.faults.active(kind)
            s.reflected_override = max((g.param("fraction") for g in r_act), default=None)
        self._refresh_hot()
        self._changed()
        self._fix_known = False
