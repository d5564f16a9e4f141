"""0-D ALD reactor model in integer virtual time: the public face (time, commands, reads,
ground truth, snapshots) of a model whose physics is documented where it lives.

* :mod:`sim.gas` - gas phase (simulation.md 3.4): per-species balances, inflows (vapour draw,
  MFCs, plasma radicals), pumping, and the exact-between-events integrators with their fast
  paths and cost notes.
* :mod:`sim.surface` - surface (simulation.md 3.3, rates from :mod:`sim.kinetics`): doses,
  the exposure-exact Langmuir update, the step the surface coupling allows, CVD-like growth
  and decomposition.
* :mod:`sim.plant` - the devices as the physics sees them: measured read-backs, plasma
  ignition and radicals, MFC goals.
* :mod:`sim.fault_effects` - what an injected fault does to the physics.
* :mod:`sim.state` - readings, the mutable state, snapshots (re-exported here).

Imports run one way, top to bottom of that list read upwards (:class:`Reactor` <- fault
effects <- gas <- plant <- surface <- state), an import-linter contract in pyproject.toml;
:mod:`sim.faults` and :mod:`sim.trace` reach the reactor through small protocols.
"""

from __future__ import annotations

import copy
import math

from sim import chemistry, kinetics
from sim.components import Gauge, Heater, Mfc, Ozone, Plasma, Qcm
from sim.config import (
    GaugeConfig,
    HeaterConfig,
    LineConfig,
    MfcConfig,
    OzoneConfig,
    PlasmaConfig,
    QcmConfig,
    ReactorConfig,
    plasma_chemical,
)
from sim.fault_effects import FaultEffects
from sim.faults import FaultData, FaultInjector
from sim.state import (
    HeaterState,
    MfcState,
    OzoneState,
    PlasmaState,
    QcmState,
    SaturationStats,
    Snapshot,
    SpeciesBalance,
    TraceSink,
    Truth,
    UnknownComponentError,
    _Line,
    _Rates,
    _State,
)
from sim.units import NS_PER_MS, SCCM_MOL_S

__all__ = [
    "GaugeConfig",
    "HeaterConfig",
    "HeaterState",
    "LineConfig",
    "MfcConfig",
    "MfcState",
    "OzoneConfig",
    "OzoneState",
    "PlasmaConfig",
    "PlasmaState",
    "QcmConfig",
    "QcmState",
    "Reactor",
    "ReactorConfig",
    "SaturationStats",
    "Snapshot",
    "SpeciesBalance",
    "Truth",
    "UnknownComponentError",
]

_INF = 1 << 62


class Reactor(FaultEffects):
    """A simulated ALD reactor (see the module docstring for the physics).

    Component names: lines by line name (usually the chemical); heaters "substrate",
    "walls", "source.<line>", "line.<line>"; MFCs "carrier" and "plasma.<gas>"; the gauge
    "chamber"; the RF source "rf"; the ozone generator "ozone"; the QCM "qcm"; the valve bank
    "valves"; the pump "pump".

    All commands act at :attr:`now_ns`; all reads return the state at :attr:`now_ns`.
    """

    def __init__(self, config: ReactorConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.integration_steps = 0
        """Steps the integrator has taken (cost, not physics: never snapshotted)."""
        self.chemistry = kinetics.select(config.dose_chemicals(), config.process)
        kin = kinetics.kinetics()
        sub = kinetics.substrates().get(config.substrate, kinetics.Nucleation(1.0, 1.0))
        self.nucleation = kinetics.Nucleation(
            factor=config.nucleation_factor if config.nucleation_factor is not None else sub.factor,
            cycles=config.nucleation_cycles if config.nucleation_cycles is not None else sub.cycles,
        )
        # -- species
        names: list[str] = [config.carrier_gas]
        if config.plasma is not None:
            names.extend(config.plasma.feed_gases)
        for line_cfg in config.lines:
            names.append(line_cfg.chemical)
            if line_cfg.chemical == "O3":
                names.append("O2")
        if config.plasma is not None:
            for gas in config.plasma.feed_gases:
                rad = plasma_chemical(gas)
                if rad is not None:
                    names.append(rad)
        self.species: list[str] = list(dict.fromkeys(names))
        self._sp_index = {n: i for i, n in enumerate(self.species)}
        self._sp_mass = [chemistry.get(n).molar_mass for n in self.species]
        self._sp_trans: list[list[int]] = [[] for _ in self.species]
        for t in self.chemistry.transitions:
            if t.chemical in self._sp_index:
                self._sp_trans[self._sp_index[t.chemical]].append(t.index)
        self._sp_gamma = [kin[n].recombination if n in kin else 0.0 for n in self.species]
        self._reactive = [i for i in range(len(self.species)) if self._sp_trans[i]]
        self._trans_src = [t.src for t in self.chemistry.transitions]
        self._trans_dst = [t.dst for t in self.chemistry.transitions]
        self._trans_kind = [t.kind for t in self.chemistry.transitions]
        self._trans_close = [t.closes for t in self.chemistry.transitions]
        self._trans_opens = [t.opens for t in self.chemistry.transitions]
        self._reclaim_of = [-1] * len(self.chemistry.kinds)
        """Per kind: the shorter kind its closing step takes over (-1: none)."""
        for t in self.chemistry.transitions:
            if t.closes >= 0 and t.reclaims >= 0:
                self._reclaim_of[t.closes] = t.reclaims
        self._is_prefix = [k in self._reclaim_of for k in range(len(self._reclaim_of))]
        self._leaves_prefix = [
            self.chemistry.ready_like[t.src] if t.index in self.chemistry.copy_of else -1
            for t in self.chemistry.transitions
        ]
        """Per transition: the prefix kind whose ready-like state it opens a cycle from."""
        kinds = self.chemistry.kinds
        self._kind_first = [k.first_state for k in kinds]
        self._first_chem = [k.cycle.chemicals[0] for k in kinds]
        self._dec_species = [
            (self._sp_index[c], k)
            for c, k in self.chemistry.decomposition_kind.items()
            if c in self._sp_index
        ]
        self._metal = [self.chemistry.metal_thickness_a(k.index) for k in kinds]
        self._radical_of_feed: dict[str, int] = {}
        if config.plasma is not None:
            for gas in config.plasma.feed_gases:
                rad = plasma_chemical(gas)
                if rad is not None:
                    self._radical_of_feed[gas] = self._sp_index[rad]
        # -- state
        s = _State()
        s.faults = FaultData(seed=seed)
        nsp = len(self.species)
        s.n = [0.0] * nsp
        s.injected = [0.0] * nsp
        s.pumped = [0.0] * nsp
        s.reacted = [0.0] * nsp
        s.lost = [0.0] * nsp
        s.exposure = [0.0] * nsp
        s.x = [0.0] * len(self.chemistry.states)
        s.x[0] = 1.0
        s.growth_kind = [0.0] * len(kinds)
        s.cycles_kind = [0.0] * len(kinds)
        s.latched = [1.0] * len(kinds)
        s.solo = [0.0] * len(kinds)
        s.solo_open = [False] * len(kinds)
        s.partner_growth = [0.0] * len(kinds)
        s.prefix_g = [0.0] * len(kinds)
        s.prefix_c = [0.0] * len(kinds)
        heater_cfgs = config.heater_configs()
        s.heaters = [Heater(h, config.ambient_c, config.settled) for h in heater_cfgs]
        self._heater_index = {h.name: i for i, h in enumerate(heater_cfgs)}
        for ln_cfg in config.lines:
            o2 = self._sp_index["O2"] if ln_cfg.chemical == "O3" else -1
            ln = _Line(ln_cfg, self._sp_index[ln_cfg.chemical], o2)
            ln.h_source = self._heater_index.get(f"source.{ln_cfg.name}", -1)
            ln.h_line = self._heater_index.get(f"line.{ln_cfg.name}", -1)
            s.lines.append(ln)
        self._line_index = {ln.cfg.name: i for i, ln in enumerate(s.lines)}
        mfc_cfgs = config.mfc_configs()
        for m in mfc_cfgs:
            if m.gas not in self._sp_index:
                self.species.append(m.gas)
                self._sp_index[m.gas] = len(self.species) - 1
                self._sp_mass.append(chemistry.get(m.gas).molar_mass)
                self._sp_trans.append([])
                self._sp_gamma.append(0.0)
                for lst in (s.n, s.injected, s.pumped, s.reacted, s.lost, s.exposure):
                    lst.append(0.0)
        self._reactive_mask = [bool(trs) for trs in self._sp_trans]
        s.mfcs = [Mfc(m) for m in mfc_cfgs]
        s.mfc_cap = [None] * len(mfc_cfgs)
        s.mfc_frozen = [None] * len(mfc_cfgs)
        s.mfc_offset = [0.0] * len(mfc_cfgs)
        self._mfc_index = {m.name: i for i, m in enumerate(mfc_cfgs)}
        self._mfc_species = [self._sp_index[m.gas] for m in mfc_cfgs]
        self.carrier_cut = False
        """A carrier shut-off valve downstream of the carrier MFC is closed (the valve
        module dropped its outputs): the MFC keeps its setpoint, nothing flows. Not part of
        a snapshot: only the protocol emulators drive it."""
        self._h_sub = self._heater_index["substrate"]
        self._h_walls = self._heater_index["walls"]
        s.plasma = Plasma(config.plasma) if config.plasma is not None else None
        s.ozone = Ozone(config.ozone) if config.ozone is not None else None
        density = kinds[self.chemistry.priority[0]].areal_density if kinds else 3.0
        s.qcm = Qcm(config.qcm, density) if config.qcm is not None else None
        self._s = s
        self._gauge_name = config.gauge.name
        tau_g = config.gauge.tau_ms * 1e-3
        self._gauge_beta = 1.0 / tau_g if tau_g > 0 else 0.0
        self._rt = _Rates()
        self._next_evt: int | None = None
        self._quiet_known = False
        self._quiet_a: tuple[float, ...] | None = None
        self._fix_a: tuple[float, ...] | None = None
        self._fix_known = False
        """_fix_a is up to date: no MFC goal, transient or leak changed since."""
        self._q_act: list[int] | None = None
        """The species in the gas during the present quiet interval (and the reactive
        ones), kept from step to step."""
        self._q_ract: list[int] = []
        self._transient = True
        self._zeros = (0.0,) * len(self.species)
        self._sp_range = range(len(self.species))
        self._nuc_flat = self.nucleation.factor == 1.0
        self._nmk: tuple[list[float], list[float]] | None = None
        self._sp_ts = [tuple((t, self._trans_src[t]) for t in trs) for trs in self._sp_trans]
        opens = self._trans_opens
        self._sp_tx = [
            tuple(
                (t, self._trans_src[t], self._trans_dst[t], self._trans_close[t], opens[t])
                for t in trs
            )
            for trs in self._sp_trans
        ]
        dec = {i for i, _k in self._dec_species}
        self._sub_dep = [bool(trs) or i in dec for i, trs in enumerate(self._sp_trans)]
        self._plasma_mfcs = [i for i, m in enumerate(mfc_cfgs) if m.name.startswith("plasma.")]
        self._traces: list[TraceSink] = []
        self._hot: list[Heater] = []
        self._vp_cache: dict[tuple[int, float], float] = {}
        self._src_p: dict[int, tuple[float, float, float]] = {}
        """Per line species: (T_src, T_line, vapour pressure) of the last draw (a cache)."""
        self.faults = FaultInjector(self, s.faults)
        self._refresh_hot()
        self._check_rates(force=True)
        # Start at steady state: carrier flowing, chamber at base pressure.
        carrier = self._mfc_species[0]
        k_pump = self._rt.pump
        if k_pump > 0:
            n0 = s.mfcs[0].goal * SCCM_MOL_S / k_pump
            s.n[carrier] = n0
            s.injected[carrier] = n0
        s.gauge = Gauge(config.gauge, self._rt.p_per_mol * sum(s.n))
        self._init_cells()
        if self._ncell:
            # the N-cell integrator replaces the 0-D step (an instance attribute: the 0-D
            # reactor's hot loop is untouched)
            self._step = self._cells_step  # type: ignore[method-assign]

    # ------------------------------------------------------------------ time

    @property
    def now_ns(self) -> int:
        """Virtual time, ns since the reactor was created."""
        return self._s.now

    def advance_to(self, t_ns: int) -> None:
        """Advance the model to ``t_ns`` (monotonic; the current time is a cheap no-op)."""
        s = self._s
        if t_ns == s.now:
            return
        if t_ns < s.now:
            msg = f"time runs forward only: now {s.now} ns, asked for {t_ns} ns"
            raise ValueError(msg)
        step = self._step
        while True:
            nxt = self._next_evt
            if nxt is None:
                nxt = self._next_event()
            if nxt <= s.now:
                self._process_events()
                continue
            if s.now >= t_ns:
                break
            stop = nxt if nxt < t_ns else t_ns
            taken = 0
            while s.now < stop:
                step(stop)
                taken += 1
            self.integration_steps += taken
        if self._hot:
            for h in self._hot:
                h.advance_to(t_ns)
            self._refresh_hot()
        if self.faults.has_triggers():
            self.faults.poll(t_ns)
            self._changed()

    def advance_by(self, dt_ns: int) -> None:
        """Advance by ``dt_ns`` (convenience)."""
        self.advance_to(self._s.now + dt_ns)

    # ------------------------------------------------------------------ commands

    def set_valve(self, line: str, is_open: bool) -> None:
        """Command the ALD valve of ``line`` open or closed."""
        s = self._s
        ln = s.lines[self._line(line)]
        v = ln.valve
        if is_open == v.commanded:
            return
        v.commanded = is_open
        now = s.now
        if is_open:
            v.actuations += 1
            if self.faults.has_triggers():
                # a fault due "after N actuations" hits this command before it acts
                self.faults.poll(now)
            self._dose_start(ln.cfg.chemical)
            if not ln.stuck_closed:
                v.schedule(now + round(v.open_dead_ns * self._slow(ln)), 1.0)
        else:
            v.schedule(now + round(v.close_dead_ns * self._slow(ln)), 0.0)
        self._changed()
        self._after_command()

    def set_carrier_shutoff(self, is_open: bool) -> None:
        """Open or close a carrier shut-off valve between the carrier MFC and the chamber."""
        if self.carrier_cut == (not is_open):
            return
        self.carrier_cut = not is_open
        i = self._mfc("carrier")
        self._s.mfcs[i].retarget(self._s.now, self._mfc_goal(i))
        self._changed()
        self._fix_known = False  # the summed constant inflows change
        self._check_rates(force=True)
        self._after_command()

    def set_pump_isolation(self, is_open: bool) -> None:
        """Open (pumping) or close (stop-flow exposure) the pump isolation valve."""
        self._s.pump_open = is_open
        self._check_rates(force=True)
        self._after_command()

    def set_mfc(self, name: str, sccm: float) -> None:
        """Set an MFC's flow setpoint (clamped to 0..full scale); acts after its dead time."""
        i = self._mfc(name)
        m = self._s.mfcs[i]
        sp = min(max(float(sccm), 0.0), m.cfg.full_scale_sccm)
        m.setpoint = sp
        m.pending.append((self._s.now + round(m.cfg.dead_ms * NS_PER_MS), sp))
        self._changed()
        self._after_command()

    def set_heater(
        self, name: str, setpoint_c: float | None, ramp_k_per_min: float | None = None
    ) -> None:
        """Set a heater's setpoint (None: loop off), optionally ramping at K/min."""
        h = self._s.heaters[self._heater(name)]
        h.command(self._s.now, setpoint_c, ramp_k_per_min)
        self._refresh_hot()
        self._after_command()

    def set_rf(self, on: bool, power_w: float) -> None:
        """Switch the RF generator and set its forward-power setpoint (clamped to max)."""
        p = self._plasma()
        s = self._s
        p.setpoint_w = min(max(float(power_w), 0.0), p.cfg.max_power_w)
        if on and not p.on:
            p.on = True
            p.ignited = False
            p.ignite_at = -1
        elif not on and p.on:
            p.on = False
            p.ignited = False
            p.ignite_at = -1
            self._dose_end(s.now)
        self._plasma_check(s.now)
        self._changed()
        self._after_command()

    def set_ozone(self, on: bool, setpoint_pct: float) -> None:
        """Switch the ozone generator and set its output setpoint (wt % O3, clamped)."""
        oz = self._ozone()
        oz.retarget(self._s.now)
        oz.on = on
        oz.setpoint_pct = min(max(float(setpoint_pct), 0.0), oz.cfg.max_pct)
        self._after_command()

    def zero_qcm(self) -> None:
        """Zero the QCM thickness (start of a film)."""
        q = self._qcm()
        q.zero_hz = q.frequency(self._s.mass_ng)
        q.last_t = -1
        q.last_thickness = 0.0
        q.rate = 0.0

    # ------------------------------------------------------------------ measured reads

    def read_pressure_torr(self, gauge: str = "chamber") -> float | None:
        """Gauge reading (lag, noise, drift, quantisation); None when over range."""
        if gauge != self._gauge_name:
            raise UnknownComponentError(f"no gauge {gauge!r}; have {[self._gauge_name]}")
        s = self._s
        rng = s.rngs.get(gauge)
        return s.gauge.measured(s.now, rng if rng is not None else self._rng(gauge))

    def read_mfc(self, name: str) -> MfcState:
        """An MFC's measured flow and its setpoint."""
        rng = self._s.rngs.get(name)
        return self._read_mfc(name, rng if rng is not None else self._rng(name))

    def read_heater(self, name: str) -> HeaterState:
        """A heater controller's PV (None on sensor break), working setpoint and output."""
        rng = self._s.rngs.get(name)
        return self._read_heater(name, rng if rng is not None else self._rng(name))

    def read_valves(self) -> dict[str, bool]:
        """Actual valve positions (open when the stem is past half stroke)."""
        now = self._s.now
        return {ln.cfg.name: max(ln.valve.position(now), ln.leak) >= 0.5 for ln in self._s.lines}

    def valves_commanded(self) -> dict[str, bool]:
        """What each dose valve was last commanded (True: open), whatever its stem does: a
        stuck valve's command and position differ."""
        return {ln.cfg.name: ln.valve.commanded for ln in self._s.lines}

    def read_pump_isolation(self) -> bool:
        """Whether the pump isolation valve is open (the chamber is pumped)."""
        return bool(self._s.pump_open)

    def read_plasma(self) -> PlasmaState:
        """RF generator read-back."""
        return self._read_plasma(self._rng("rf"))

    def read_ozone(self) -> OzoneState:
        """Ozone generator read-back."""
        return self._read_ozone(self._rng("ozone"))

    def read_qcm(self) -> QcmState:
        """QCM monitor reading (thickness since zero, rate, frequency, crystal life)."""
        return self._read_qcm(self._rng("qcm"), update_rate=True)

    # ------------------------------------------------------------------ truth

    def truth(self) -> Truth:
        """Ground truth at :attr:`now_ns`."""
        s = self._s
        rt = self._rt
        kinds = self.chemistry.kinds
        growth = {k.label: s.growth_kind[k.index] for k in kinds}
        cations: dict[str, float] = {}
        for k in kinds:
            for el, mol in k.cycle.phase.cation_moles(s.growth_kind[k.index]).items():
                cations[el] = cations.get(el, 0.0) + mol
        total = sum(cations.values())
        composition = {el: v / total for el, v in cations.items() if v > 0.0} if total > 0 else {}
        pp = {name: s.n[i] * rt.p_per_mol for i, name in enumerate(self.species)}
        consumed: dict[str, float] = {}
        for ln in s.lines:
            consumed[ln.cfg.chemical] = consumed.get(ln.cfg.chemical, 0.0) + ln.consumed_g
        sat = {
            chem: SaturationStats(int(v[0]), v[1], v[2] / v[0] if v[0] else 1.0)
            for chem, v in s.sat.items()
        }
        balance = {
            name: SpeciesBalance(
                injected_mol=s.injected[i],
                pumped_mol=s.pumped[i],
                reacted_mol=s.reacted[i],
                lost_mol=s.lost[i],
                in_gas_mol=s.n[i],
            )
            for i, name in enumerate(self.species)
        }
        k_pump = rt.pump
        return Truth(
            now_ns=s.now,
            thickness_a=s.thickness,
            ald_thickness_a=s.thickness - s.cvd,
            cvd_thickness_a=s.cvd,
            decomposition_thickness_a=s.decomposition,
            mass_ng_cm2=s.mass_ng,
            composition=composition,
            growth_by_kind_a=growth,
            cycles_by_kind={k.label: s.cycles_kind[k.index] for k in kinds},
            partner_growth_a={k.label: s.partner_growth[k.index] for k in kinds},
            partial_pressures_torr=pp,
            pressure_torr=sum(pp.values()),
            coverage={
                name: min(1.0, max(0.0, s.x[i])) for i, name in enumerate(self.chemistry.states)
            },
            temperatures_c={h.cfg.name: h.t_c for h in s.heaters},
            source_mass_g={ln.cfg.name: ln.mass_g for ln in s.lines},
            source_empty={
                ln.cfg.name: ln.empty or (ln.mass_g <= 0.0 and not ln.is_ozone) for ln in s.lines
            },
            consumed_g=consumed,
            valve_actuations={ln.cfg.name: ln.valve.actuations for ln in s.lines},
            valve_positions={ln.cfg.name: max(ln.valve.position(s.now), ln.leak) for ln in s.lines},
            exposure_torr_s={name: s.exposure[i] for i, name in enumerate(self.species)},
            saturation=sat,
            mass_balance=balance,
            residence_time_s=1.0 / k_pump if k_pump > 0 else math.inf,
            processes=tuple(p.id for p in self.chemistry.processes),
        )

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> Snapshot:
        """Copy of the whole state (physics, devices, RNG streams, faults)."""
        return Snapshot(
            now_ns=self._s.now, config=self.config, seed=self.seed, state=copy.deepcopy(self._s)
        )

    def snapshot_bytes(self) -> bytes:
        """``snapshot().to_bytes()`` without the intermediate deep copy.

        Pickling reads the live state once, which is what persistence needs (a run journal
        stores one per completed cycle): a few KB in ~20 us (see :meth:`Snapshot.__reduce__`).
        """
        live = Snapshot(now_ns=self._s.now, config=self.config, seed=self.seed, state=self._s)
        return live.to_bytes()

    def restore(self, snap: Snapshot) -> None:
        """Return to a snapshot (the snapshot stays reusable).

        The snapshot must come from a reactor with the same configuration (ValueError
        otherwise); it may come from another process via :meth:`Snapshot.to_bytes`.
        """
        if snap.config != self.config:
            msg = "snapshot was taken on a reactor with a different configuration"
            raise ValueError(msg)
        self._s = copy.deepcopy(snap.state)
        self.faults._rebind(self._s.faults)
        self._changed()
        self._fix_known = False
        self._nmk = None
        self._rt = _Rates()
        self._refresh_hot()
        self._check_rates(force=True)
        for tr in self._traces:
            tr._on_restore(self._s.now)

    # ------------------------------------------------------------------ introspection

    @property
    def has_plasma(self) -> bool:
        return self._s.plasma is not None

    @property
    def has_ozone(self) -> bool:
        return self._s.ozone is not None

    @property
    def has_qcm(self) -> bool:
        return self._s.qcm is not None

    @property
    def lines(self) -> list[str]:
        return [ln.cfg.name for ln in self._s.lines]

    @property
    def heaters(self) -> list[str]:
        return [h.cfg.name for h in self._s.heaters]

    @property
    def mfcs(self) -> list[str]:
        return [m.cfg.name for m in self._s.mfcs]

    def line_config(self, line: str) -> LineConfig:
        return self._s.lines[self._line(line)].cfg

    def residence_time_s(self) -> float:
        """Present pumping residence time V T_pump / (S T_gas) (inf in stop-flow)."""
        return 1.0 / self._rt.pump if self._rt.pump > 0 else math.inf

    def add_trace(self, recorder: TraceSink) -> None:
        """Attach a trace recorder (called by :class:`sim.trace.TraceRecorder`)."""
        self._traces.append(recorder)
        self._changed()

    def remove_trace(self, recorder: TraceSink) -> None:
        if recorder in self._traces:
            self._traces.remove(recorder)
        self._changed()

    # ------------------------------------------------------------------ events

    def _next_event(self) -> int:
        if self._next_evt is not None:
            return self._next_evt
        s = self._s
        t = _INF
        for ln in s.lines:
            v = ln.valve
            if v.rate != 0.0 or v.pending:
                ne = v.next_event()
                if ne is not None and ne < t:
                    t = ne
        for m in s.mfcs:
            if m.pending and m.pending[0][0] < t:
                t = m.pending[0][0]
        ft = self.faults.next_time_ns()
        if ft is not None and ft < t:
            t = ft
        if s.plasma is not None and s.plasma.ignite_at >= 0 and s.plasma.ignite_at < t:
            t = s.plasma.ignite_at
        for tr in self._traces:
            nt = tr.next_sample_ns
            t = min(t, nt)
        self._next_evt = t
        return t

    def _process_events(self) -> None:
        s = self._s
        now = s.now
        for ln in s.lines:
            v = ln.valve
            if v.rate != 0.0 or v.pending:
                ne = v.next_event()
                if ne is not None and ne <= now:
                    v.process(now)
        for i, m in enumerate(s.mfcs):
            changed = False
            while m.pending and m.pending[0][0] <= now:
                m.pending.pop(0)
                changed = True
            if changed:
                m.retarget(now, self._mfc_goal(i))
                self._fix_known = False
        self.faults.due(now)
        if s.plasma is not None:
            self._plasma_check(now)
        self._changed()
        for tr in list(self._traces):
            if tr.next_sample_ns <= now:
                tr._sample(self)
        self._changed()

    def _after_command(self) -> None:
        if self.faults.has_triggers():
            self.faults.poll(self._s.now)
        self._changed()

    def _schedule_changed(self) -> None:
        self._changed()

    def _actuation_counts(self) -> dict[str, int]:
        return {ln.cfg.name: ln.valve.actuations for ln in self._s.lines}
