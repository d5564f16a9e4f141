"""What a reactor is made of, shared by every layer of the model: the readings a caller
gets back, the mutable state a snapshot copies (and its compact packing), and
:class:`ReactorCore`, the members and lookups the layers above read.

Layers of the model, each importing only those below it (an import-linter contract):
:mod:`sim.reactor` (time, commands, reads, truth, snapshots) -> :mod:`sim.fault_effects`
(what a fault does to the physics) -> :mod:`sim.gas` (gas phase, inflows, the integrators)
-> :mod:`sim.plant` (device read-backs, plasma, MFC goals) -> :mod:`sim.surface` (surface
chemistry: doses, the exposure-exact surface update, decomposition) -> :mod:`sim.state`.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Generic, Protocol, TypeVar

from sim import chemistry, kinetics
from sim.components import Gauge, Heater, Mfc, NoiseRng, Ozone, Plasma, Qcm, Rng, Valve
from sim.config import GaugeConfig, LineConfig, ReactorConfig
from sim.faults import FaultData, FaultInjector
from sim.units import NS_PER_MS

_C = TypeVar("_C")


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
    partner_growth_a: dict[str, float]
    """Per cycle kind: growth added to (or taken from) cycles that grew before a supercycle
    partner met them, when it did (included in ``growth_by_kind_a`` and the thickness; an
    account of the recipe's cycles credits it to the cycles of that kind that grew last)."""
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
        self.solo: list[float] = []
        """Per kind: growth (A) of its cycles that grew with no supercycle partner yet."""
        self.solo_open: list[bool] = []
        self.partner_growth: list[float] = []
        self.prefix_g: list[float] = []
        self.prefix_c: list[float] = []
        """Per prefix kind: growth (A) and surface fraction of its cycles that closed and have
        neither been taken back by a longer kind (:meth:`sim.surface.SurfaceChemistry.
        _reclaim`) nor moved on to another cycle (``_settle_prefix``)."""
        """Per kind: its present cycle opened with no partner (its growth goes to ``solo``)."""
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
        self.cells: _Cells | None = None
        """The chamber's cells along the flow (None: the well-stirred 0-D chamber)."""


CELL_FIELDS = (
    "x",
    "thickness",
    "cvd",
    "decomposition",
    "mass_ng",
    "growth_kind",
    "cycles_kind",
    "cycles_total",
    "solo",
    "partner_growth",
    "prefix_g",
    "prefix_c",
    "last_closed",
    "context",
)
"""The members of :class:`_State` that each cell of an N-cell chamber has its own of (the
surface and what grew on it)."""


class _CellSurface:
    """One cell's :data:`CELL_FIELDS` while another cell's are in :class:`_State`."""

    __slots__ = CELL_FIELDS
    x: list[float]
    thickness: float
    cvd: float
    decomposition: float
    mass_ng: float
    growth_kind: list[float]
    cycles_kind: list[float]
    cycles_total: float
    solo: list[float]
    partner_growth: list[float]
    prefix_g: list[float]
    prefix_c: list[float]
    last_closed: int
    context: int

    def __init__(self, s: _State) -> None:
        for name in CELL_FIELDS:
            v = getattr(s, name)
            setattr(self, name, list(v) if isinstance(v, list) else v)


class _Cells:
    """An N-cell chamber's state: per cell its gas amounts (mol per species; ``_State.n``
    holds their sums, the chamber's) and its surface. The reporting cell ``home`` (the
    substrate's) keeps its surface in :class:`_State` itself, so every reader of the 0-D
    state reads the substrate's; ``surf[home]`` is a placeholder that a step swaps with the
    other cells' (:meth:`sim.cells.CellGas._swap`)."""

    __slots__ = ("home", "n", "qcm", "surf")

    def __init__(self, s: _State, cells: int, home: int, qcm: int) -> None:
        self.home = home
        self.qcm = qcm
        """The cell the QCM's crystal sits in."""
        self.n = [[v / cells for v in s.n] for _ in range(cells)]
        self.surf = [_CellSurface(s) for _ in range(cells)]


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
    "solo",
    "solo_open",
    "partner_growth",
    "prefix_g",
    "prefix_c",
    "cells",
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
    for name, value in zip(_STATE_FIELDS, plain, strict=False):
        setattr(s, name, value)
    if len(plain) < _STATE_FIELDS.index("cells"):
        # a snapshot from before the partner bookkeeping: no cycle waits for a partner
        s.solo = [0.0] * len(s.latched)
        s.solo_open = [False] * len(s.latched)
        s.partner_growth = [0.0] * len(s.latched)
        s.prefix_g = [0.0] * len(s.latched)
        s.prefix_c = [0.0] * len(s.latched)
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


# --------------------------------------------------------------------------- the base


class TraceSink(Protocol):
    """What the reactor needs of an attached trace (:class:`sim.trace.TraceRecorder`)."""

    next_sample_ns: int

    def _sample(self, reactor: Any) -> None: ...

    def _on_restore(self, now_ns: int) -> None: ...


class ReactorCore:
    """The members every layer of :class:`~sim.reactor.Reactor` reads (set up by its
    ``__init__``), and the lookups they share."""

    config: ReactorConfig
    seed: int
    integration_steps: int
    chemistry: kinetics.Chemistry
    nucleation: kinetics.Nucleation
    species: list[str]
    carrier_cut: bool
    faults: FaultInjector
    _s: _State
    _rt: _Rates
    _sp_index: dict[str, int]
    _sp_mass: list[float]
    _sp_trans: list[list[int]]
    _sp_gamma: list[float]
    _sp_range: range
    _sp_ts: list[tuple[tuple[int, int], ...]]
    _sp_tx: list[tuple[tuple[int, int, int, int, bool], ...]]
    _reactive: list[int]
    _reactive_mask: list[bool]
    _sub_dep: list[bool]
    _trans_src: list[int]
    _trans_dst: list[int]
    _trans_kind: list[int]
    _trans_close: list[int]
    _trans_opens: list[bool]
    _reclaim_of: list[int]
    _leaves_prefix: list[int]
    _is_prefix: list[bool]
    _kind_first: list[int]
    _first_chem: list[str]
    _dec_species: list[tuple[int, int]]
    _metal: list[tuple[float, float]]
    _radical_of_feed: dict[str, int]
    _heater_index: dict[str, int]
    _line_index: dict[str, int]
    _mfc_index: dict[str, int]
    _mfc_species: list[int]
    _plasma_mfcs: list[int]
    _h_sub: int
    _h_walls: int
    _gauge_name: str
    _gauge_beta: float
    _next_evt: int | None
    _quiet_known: bool
    _quiet_a: tuple[float, ...] | None
    _fix_a: tuple[float, ...] | None
    _fix_known: bool
    _q_act: list[int] | None
    _q_ract: list[int]
    _transient: bool
    _zeros: tuple[float, ...]
    _nuc_flat: bool
    _nmk: tuple[list[float], list[float]] | None
    _traces: list[TraceSink]
    _hot: list[Heater]
    _vp_cache: dict[tuple[int, float], float]
    _src_p: dict[int, tuple[float, float, float]]

    def _changed(self) -> None:
        """The schedule or the inflows may have changed: recompute both when next needed."""
        self._next_evt = None
        self._quiet_known = False

    def _refresh_hot(self) -> None:
        self._hot = [h for h in self._s.heaters if not h.settled]

    def _zone_t(self, index: int) -> float:
        return self._s.heaters[index].t_c if index >= 0 else self.config.ambient_c

    def _line(self, name: str) -> int:
        try:
            return self._line_index[name]
        except KeyError:
            raise UnknownComponentError(
                f"no line {name!r}; have {list(self._line_index)}"
            ) from None

    def _mfc(self, name: str) -> int:
        try:
            return self._mfc_index[name]
        except KeyError:
            raise UnknownComponentError(f"no MFC {name!r}; have {list(self._mfc_index)}") from None

    def _heater(self, name: str) -> int:
        try:
            return self._heater_index[name]
        except KeyError:
            raise UnknownComponentError(
                f"no heater {name!r}; have {list(self._heater_index)}"
            ) from None

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
