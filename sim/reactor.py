"""0-D ALD reactor model in integer virtual time.

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

Surface (simulation.md 3.3, generalised in :mod:`sim.kinetics`): the fraction in state s
moves on by half-reaction t at ``k_t = k0_t n_i / N_t`` per unit fraction, N_t the molecules a
cycle's worth of that half-reaction consumes on the area A; a closing half-reaction grows
``GPC_sat(T)`` per unit fraction. Under a single reactant the coverage depends only on the
exposure ``E = integral of p dt``: ``x_src <- x_src exp(-k0 integral(n dt) / N_t)``, exact for any
pressure history (the Langmuir closed form).

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

CVD-like growth: growth closed in the same step as the cycle's opening half-reaction (both
reactants present) is counted as ``cvd_thickness_a`` (with thermal decomposition).
"""

from __future__ import annotations

import copy
import math
import pickle
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sim import chemistry, kinetics
from sim.components import (
    Gauge,
    Heater,
    Mfc,
    NoiseRng,
    Ozone,
    Plasma,
    Qcm,
    Rng,
    Valve,
    ozone_mole_fraction,
    quantise,
)
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
from sim.faults import COMM_KINDS, Fault, FaultData, FaultInjector, FaultKind
from sim.units import (
    NS_PER_MS,
    NS_PER_S,
    R_TORR_L,
    SCCM_MOL_S,
    kelvin,
    mean_speed_m_s,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sim.trace import TraceRecorder

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

_SURFACE_EPS = 0.5
"""Largest relative change of a species' loss rate allowed within one step."""
_OVERLAP_CONV = 3e-4
"""Fraction of a cycle two reactants must each convert in a step to count as overlapping."""
_OVERLAP_K_DT = 0.3
_VALVE_SUBSTEP_NS = 3 * NS_PER_MS
"""Longest step while a valve strokes (the inflow is averaged exactly over each step)."""
_MIN_STEP_NS = 1_000
_SITE_NEGLIGIBLE = 1e-9
"""Sites whose whole capacity is below this fraction of the gas amount do not set the step:
the exposure-exact surface update hands back what the frozen sink took too much, so they
cannot change the gas noticeably, and resolving their decay (an emptied site class under
Torr of co-reactant with the pump shut) would cost a million steps per second."""
_HEATER_DT_K = 0.05
"""Largest temperature change of any zone within one step, K."""
_FLOOR_MOL = 1e-21
"""Below this a species (with no inflow) is counted as pumped away."""
_INF = 1 << 62
_C = TypeVar("_C")
_NO_DRAW: list[tuple[_Line, float, float]] = []
"""Open lines of a quiet step (none; never appended to)."""
_PASSES: dict[int, tuple[tuple[int, float], ...]] = {}
_NO_SCALE: list[float] = []


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


class UnknownComponentError(KeyError):
    """A read or command named a line, heater, MFC or device the reactor does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- readings


@dataclass(frozen=True, slots=True)
class MfcState:
    flow_sccm: float
    setpoint_sccm: float


@dataclass(frozen=True, slots=True)
class HeaterState:
    pv_c: float | None
    """Measured temperature, degC; None when the thermocouple is broken."""
    setpoint_c: float | None
    """Working setpoint (follows the ramp); None when the loop is off."""
    output_pct: float
    sensor_break: bool
    ramping: bool = False


@dataclass(frozen=True, slots=True)
class PlasmaState:
    on: bool
    setpoint_w: float
    forward_w: float
    reflected_w: float
    ignited: bool


@dataclass(frozen=True, slots=True)
class OzoneState:
    on: bool
    setpoint_pct: float
    concentration_pct: float


@dataclass(frozen=True, slots=True)
class QcmState:
    thickness_a: float
    rate_a_s: float
    frequency_hz: float
    crystal_life_pct: float
    failed: bool


@dataclass(frozen=True, slots=True)
class SaturationStats:
    """How far the doses of one chemical took their half-reaction (1 = saturated).

    A dose runs from its valve opening (or plasma ignition) to the next dose of anything;
    its fraction is ``1 - available_after / available_before`` of the surface it can react
    with. Doses that found nothing to react with count as 1.
    """

    doses: int
    min_fraction: float
    mean_fraction: float


@dataclass(frozen=True, slots=True)
class SpeciesBalance:
    """Where every mol of one species went since the start (mol)."""

    injected_mol: float
    pumped_mol: float
    reacted_mol: float
    """Taken up by the surface in half-reactions."""
    lost_mol: float
    """Recombined or decomposed on the walls."""
    in_gas_mol: float

    @property
    def residual_mol(self) -> float:
        return (
            self.injected_mol - self.pumped_mol - self.reacted_mol - self.lost_mol - self.in_gas_mol
        )


@dataclass(frozen=True, slots=True)
class Truth:
    """Ground truth at ``now_ns`` (no sensor in the way)."""

    now_ns: int
    thickness_a: float
    ald_thickness_a: float
    cvd_thickness_a: float
    """Growth from overlapping reactants and from thermal decomposition."""
    decomposition_thickness_a: float
    mass_ng_cm2: float
    """Areal mass deposited (what an ideal QCM sees)."""
    composition: dict[str, float]
    """Cation fraction by element."""
    growth_by_kind_a: dict[str, float]
    cycles_by_kind: dict[str, float]
    """Completed cycles (fractional) per cycle kind."""
    partial_pressures_torr: dict[str, float]
    pressure_torr: float
    coverage: dict[str, float]
    """Fraction of the surface in each state ("ready", "TMA", "LiOtBu>H2O", ...)."""
    temperatures_c: dict[str, float]
    source_mass_g: dict[str, float]
    source_empty: dict[str, bool]
    """Per line: the source delivers nothing (ran dry, or an empty-source fault)."""
    consumed_g: dict[str, float]
    valve_actuations: dict[str, int]
    valve_positions: dict[str, float]
    exposure_torr_s: dict[str, float]
    saturation: dict[str, SaturationStats]
    mass_balance: dict[str, SpeciesBalance]
    residence_time_s: float
    processes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Opaque copy of a reactor's whole state (see :meth:`Reactor.snapshot`)."""

    now_ns: int
    config: ReactorConfig = field(repr=False)
    seed: int
    state: _State = field(repr=False)

    def to_bytes(self) -> bytes:
        """Serialise (pickle) for persistence, e.g. in a run journal to resume after a crash.

        Faults with a predicate trigger (``when=``) hold Python callables and cannot be
        serialised: ValueError names them. Load only bytes this program wrote.
        """
        predicates = [f.id for f in self.state.faults.faults if f.when is not None]
        if predicates:
            msg = f"faults {predicates} have predicate triggers and cannot be serialised"
            raise ValueError(msg)
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled compactly: the configuration as bytes pickled once per configuration,
        # the state as flat tuples of numbers (no per-component configuration objects,
        # which unpickling rebuilds from the configuration). Snapshots pickled before
        # this format (per-object, Mersenne Twister streams) still load and continue.
        return (
            _snapshot_from_packed,
            (self.now_ns, _config_blob(self.config), self.seed, _pack_state(self.state)),
        )

    @staticmethod
    def from_bytes(data: bytes) -> Snapshot:
        """Inverse of :meth:`to_bytes`."""
        snap = pickle.loads(data)
        if not isinstance(snap, Snapshot):
            msg = "not a reactor snapshot"
            raise ValueError(msg)
        return snap


# --------------------------------------------------------------------------- state


class _Line:
    __slots__ = (
        "cfg",
        "chem",
        "cold_drop_k",
        "consumed_g",
        "empty",
        "h_line",
        "h_source",
        "is_gas",
        "is_ozone",
        "leak",
        "mass_g",
        "species",
        "species_o2",
        "stuck_closed",
        "valve",
    )

    def __init__(self, cfg: LineConfig, species: int, species_o2: int) -> None:
        self.cfg = cfg
        self.chem = chemistry.get(cfg.chemical)
        self.species = species
        self.species_o2 = species_o2
        self.valve = Valve(
            round(cfg.valve_dead_ms * NS_PER_MS),
            round(cfg.valve_close_dead_ms * NS_PER_MS),
            max(1, round(cfg.valve_stroke_ms * NS_PER_MS)),
        )
        self.mass_g = cfg.mass_g
        self.consumed_g = 0.0
        self.leak = 0.0
        self.stuck_closed = False
        self.empty = False
        self.cold_drop_k = 0.0
        self.h_source = -1
        self.h_line = -1
        self.is_gas = self.chem.state is chemistry.State.GAS
        self.is_ozone = cfg.chemical == "O3"


class _State:
    """Everything that changes; deep-copied by snapshot()."""

    def __init__(self) -> None:
        self.now = 0
        self.n: list[float] = []
        self.injected: list[float] = []
        self.pumped: list[float] = []
        self.reacted: list[float] = []
        self.lost: list[float] = []
        self.exposure: list[float] = []
        self.x: list[float] = []
        self.thickness = 0.0
        self.cvd = 0.0
        self.decomposition = 0.0
        self.mass_ng = 0.0
        self.growth_kind: list[float] = []
        self.cycles_kind: list[float] = []
        self.cycles_total = 0.0
        self.latched: list[float] = []
        self.last_closed = -1
        self.context = -1
        """The last completed cycle of a kind other than ``last_closed`` (-1: none)."""
        self.lines: list[_Line] = []
        self.mfcs: list[Mfc] = []
        self.mfc_cap: list[float | None] = []
        self.mfc_frozen: list[float | None] = []
        self.mfc_offset: list[float] = []
        self.heaters: list[Heater] = []
        self.gauge: Gauge = Gauge(GaugeConfig(), 0.0)
        self.qcm: Qcm | None = None
        self.qcm_failed = False
        self.qcm_noise_hz = 0.0
        self.plasma: Plasma | None = None
        self.no_ignite = False
        self.reflected_override: float | None = None
        self.ozone: Ozone | None = None
        self.pump_open = True
        self.pump_factor = 1.0
        self.leak_sccm = 0.0
        self.rngs: dict[str, Rng] = {}
        self.sat: dict[str, list[float]] = {}
        self.dose_open: dict[str, float] = {}
        self.faults = FaultData(seed=0)


class _Rates:
    """Per-temperature constants of the hot loop."""

    __slots__ = (
        "dm",
        "geo",
        "gpc",
        "k0",
        "kdec",
        "krec",
        "n_site",
        "p_per_mol",
        "pump",
        "stale",
        "t_gas",
        "t_sub",
    )

    def __init__(self) -> None:
        self.t_sub = math.nan
        self.t_gas = math.nan
        self.stale = True
        """The substrate side (k0, n_site, dm, gpc, kdec) lags t_sub or t_gas."""
        self.pump = 0.0
        self.p_per_mol = 0.0
        self.geo: list[float] = []
        self.k0: list[float] = []
        self.n_site: list[float] = []
        self.dm: list[float] = []
        self.gpc: list[float] = []
        self.krec: list[float] = []
        self.kdec: list[float] = []


# --------------------------------------------------------------------------- compact state

_STATE_FIELDS = (
    "now",
    "n",
    "injected",
    "pumped",
    "reacted",
    "lost",
    "exposure",
    "x",
    "thickness",
    "cvd",
    "decomposition",
    "mass_ng",
    "growth_kind",
    "cycles_kind",
    "cycles_total",
    "latched",
    "last_closed",
    "context",
    "mfc_cap",
    "mfc_frozen",
    "mfc_offset",
    "qcm_failed",
    "qcm_noise_hz",
    "no_ignite",
    "reflected_override",
    "pump_open",
    "pump_factor",
    "leak_sccm",
    "sat",
    "dose_open",
)
"""The plain (number, list, dict) members of :class:`_State`, packed as they are."""
_STATE_COMPONENTS = (
    "lines",
    "mfcs",
    "heaters",
    "gauge",
    "qcm",
    "plasma",
    "ozone",
    "rngs",
    "faults",
)
"""The members packed by :func:`_pack_state` one by one (every other member is plain)."""


class _Packer(Generic[_C]):
    """Packs a slotted component into a tuple of its members, less those rebuilt from the
    reactor configuration (``cfg`` and whatever :func:`_unpack_state` derives from it)."""

    def __init__(self, cls: type[_C], derived: tuple[str, ...] = ("cfg",)) -> None:
        self.cls = cls
        slots: tuple[str, ...] = getattr(cls, "__slots__")  # noqa: B009
        self.names = tuple(n for n in slots if n not in derived)
        self.pack = attrgetter(*self.names)

    def unpack(self, values: tuple[Any, ...], **derived: Any) -> _C:
        obj = object.__new__(self.cls)
        for name, value in zip(self.names, values, strict=True):
            setattr(obj, name, value)
        for name, value in derived.items():
            setattr(obj, name, value)
        return obj


_VALVE = _Packer(Valve, ())
_LINE = _Packer(_Line, ("cfg", "chem", "valve"))
_MFC = _Packer(Mfc)
_HEATER = _Packer(Heater)
_GAUGE = _Packer(Gauge)
_QCM = _Packer(Qcm)
_PLASMA = _Packer(Plasma)
_OZONE = _Packer(Ozone)
_STATE_GET = attrgetter(*_STATE_FIELDS)
_BLOBS: dict[int, tuple[ReactorConfig, bytes]] = {}


def _config_blob(config: ReactorConfig) -> bytes:
    """``pickle.dumps(config)``, once per configuration object."""
    hit = _BLOBS.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    blob = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
    if len(_BLOBS) >= 16:
        _BLOBS.clear()
    _BLOBS[id(config)] = (config, blob)  # holding config keeps its id unique
    return blob


def _pack_state(s: _State) -> tuple[Any, ...]:
    """The state as nested tuples of numbers (lists and dicts are copied by the pickler)."""
    line_pack = _LINE.pack
    valve_pack = _VALVE.pack
    fd = s.faults
    return (
        _STATE_GET(s),
        tuple((line_pack(ln), valve_pack(ln.valve)) for ln in s.lines),
        tuple(map(_MFC.pack, s.mfcs)),
        tuple(map(_HEATER.pack, s.heaters)),
        _GAUGE.pack(s.gauge),
        _QCM.pack(s.qcm) if s.qcm is not None else None,
        _PLASMA.pack(s.plasma) if s.plasma is not None else None,
        _OZONE.pack(s.ozone) if s.ozone is not None else None,
        # a device stream is its generator state; any other generator (a random.Random
        # from an older snapshot) pickles as itself
        {k: r.getstate() if type(r) is NoiseRng else r for k, r in s.rngs.items()},
        (fd.seed, fd.faults, fd.next_id, fd.comm_rngs) if fd.faults or fd.comm_rngs else fd.seed,
    )


def _unpack_state(packed: tuple[Any, ...], config: ReactorConfig) -> _State:
    """Inverse of :func:`_pack_state` for a reactor built from ``config``."""
    plain, lines, mfcs, heaters, gauge, qcm, plasma, ozone, rngs, faults = packed
    s = _State()
    for name, value in zip(_STATE_FIELDS, plain, strict=True):
        setattr(s, name, value)
    s.lines = [
        _LINE.unpack(ln, cfg=cfg, chem=chemistry.get(cfg.chemical), valve=_VALVE.unpack(valve))
        for (ln, valve), cfg in zip(lines, config.lines, strict=True)
    ]
    s.mfcs = [_MFC.unpack(m, cfg=c) for m, c in zip(mfcs, config.mfc_configs(), strict=True)]
    s.heaters = [
        _HEATER.unpack(h, cfg=c) for h, c in zip(heaters, config.heater_configs(), strict=True)
    ]
    s.gauge = _GAUGE.unpack(gauge, cfg=config.gauge)
    s.qcm = _QCM.unpack(qcm, cfg=config.qcm) if qcm is not None else None
    s.plasma = _PLASMA.unpack(plasma, cfg=config.plasma) if plasma is not None else None
    s.ozone = _OZONE.unpack(ozone, cfg=config.ozone) if ozone is not None else None
    s.rngs = {k: NoiseRng.from_state(r) if isinstance(r, tuple) else r for k, r in rngs.items()}
    if isinstance(faults, tuple):
        seed, flist, next_id, comm = faults
        s.faults = FaultData(seed=seed, faults=flist, next_id=next_id, comm_rngs=comm)
    else:
        s.faults = FaultData(seed=faults)
    return s


def _snapshot_from_packed(now_ns: int, blob: bytes, seed: int, packed: tuple[Any, ...]) -> Snapshot:
    config = pickle.loads(blob)
    return Snapshot(now_ns=now_ns, config=config, seed=seed, state=_unpack_state(packed, config))


# --------------------------------------------------------------------------- reactor


class Reactor:
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
        density = self.chemistry.kinds[0].areal_density if kinds else 3.0
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
        self._traces: list[TraceRecorder] = []
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

    def device_names(self) -> list[str]:
        """Every device name a fault or a binding may address."""
        s = self._s
        out = [ln.cfg.name for ln in s.lines]
        out += [h.cfg.name for h in s.heaters]
        out += [m.cfg.name for m in s.mfcs]
        out += [self.config.gauge.name, "valves", "pump"]
        if s.qcm is not None:
            out.append("qcm")
        if s.plasma is not None:
            out.append("rf")
        if s.ozone is not None:
            out.append("ozone")
        return out

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

    def add_trace(self, recorder: TraceRecorder) -> None:
        """Attach a trace recorder (called by :class:`sim.trace.TraceRecorder`)."""
        self._traces.append(recorder)
        self._changed()

    def remove_trace(self, recorder: TraceRecorder) -> None:
        if recorder in self._traces:
            self._traces.remove(recorder)
        self._changed()

    # ------------------------------------------------------------------ lookups

    def _line(self, name: str) -> int:
        try:
            return self._line_index[name]
        except KeyError:
            raise UnknownComponentError(f"no line {name!r}; have {self.lines}") from None

    def _mfc(self, name: str) -> int:
        try:
            return self._mfc_index[name]
        except KeyError:
            raise UnknownComponentError(f"no MFC {name!r}; have {self.mfcs}") from None

    def _heater(self, name: str) -> int:
        try:
            return self._heater_index[name]
        except KeyError:
            raise UnknownComponentError(f"no heater {name!r}; have {self.heaters}") from None

    def _plasma(self) -> Plasma:
        if self._s.plasma is None:
            raise UnknownComponentError("this reactor has no plasma source ('rf')")
        return self._s.plasma

    def _ozone(self) -> Ozone:
        if self._s.ozone is None:
            raise UnknownComponentError("this reactor has no ozone generator")
        return self._s.ozone

    def _qcm(self) -> Qcm:
        if self._s.qcm is None:
            raise UnknownComponentError("this reactor has no QCM")
        return self._s.qcm

    def _rng(self, device: str) -> Rng:
        rng = self._s.rngs.get(device)
        if rng is None:
            rng = NoiseRng(f"{self.seed}:{device}")
            self._s.rngs[device] = rng
        return rng

    def _slow(self, ln: _Line) -> float:
        return ln.valve.stroke_ns / max(1, round(ln.cfg.valve_stroke_ms * NS_PER_MS))

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
        f = q.frequency(s.mass_ng) + rng.gauss(0.0, noise)
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

    def _changed(self) -> None:
        """The schedule or the inflows may have changed: recompute both when next needed."""
        self._next_evt = None
        self._quiet_known = False

    def _after_command(self) -> None:
        if self.faults.has_triggers():
            self.faults.poll(self._s.now)
        self._changed()

    def _schedule_changed(self) -> None:
        self._changed()

    def _actuation_counts(self) -> dict[str, int]:
        return {ln.cfg.name: ln.valve.actuations for ln in self._s.lines}

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
                t_c = self._zone_t(self._h_sub)
                s.latched[k] = self.chemistry.multiplier(k, ctx, s.last_closed, t_c)
                self._nmk = None

    # ------------------------------------------------------------------ heaters and rates

    def _refresh_hot(self) -> None:
        self._hot = [h for h in self._s.heaters if not h.settled]

    def _zone_t(self, index: int) -> float:
        return self._s.heaters[index].t_c if index >= 0 else self.config.ambient_c

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
        if fix is not None and (plasma is None or not plasma.ignited):
            # nothing decays in (eb = 0): the lighter integrator
            n = s.n
            act = [i for i in self._sp_range if n[i] != 0.0 or a[i] != 0.0]
            reactive = self._reactive_mask
            ract = [i for i in act if reactive[i]]
            self._integrate_fast(t0, dt_ns, a_fix, a, back, draw, act, ract)
        else:
            self._integrate(t0, dt_ns, a_fix, a, back, eb, emu, draw)

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
            oc = open_conv[self._kind_first[k]] if open_conv is not None else 0.0
            if oc > 0.0:
                # closed in the same step as opened: both reactants present (CVD)
                s.cvd += g * (oc / cc if oc < cc else 1.0)
        s.cycles_total += total_close
        if total_close > 1e-3:
            if best != s.last_closed:
                s.context = s.last_closed
                if s.qcm is not None and self.config.qcm is not None:
                    # a QCM is programmed with the density of the film it watches grow
                    dens = self.config.qcm.density_g_cm3
                    s.qcm.density = dens or self.chemistry.kinds[best].areal_density
            s.last_closed = best

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

    # ------------------------------------------------------------------ faults

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
