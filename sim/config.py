"""Configuration of a simulated reactor: chamber, pumping, lines, heaters, MFCs, sensors.

Everything is a frozen dataclass with units in the field names. Build one with
:meth:`ReactorConfig.preset`, :meth:`ReactorConfig.for_lines` (a reactor provisioned for a
list of chemicals) or :meth:`ReactorConfig.from_mapping` (plain YAML/JSON data).

Gas-phase numbers that follow from the configuration (simulation.md 3.4, 5.1):

* the pump removes ``S p / (R T_pump)`` mol/s (S = ``pump_speed_l_s``, a volumetric speed at
  the pump, which sits at ``pump_t_c``), so the base pressure is
  ``p0 = F_carrier R T_pump / S`` whatever the chamber temperature;
* the chamber holds ``p V / (R T_gas)`` mol (T_gas = the wall temperature), so the residence
  time is ``tau = V T_pump / (S T_gas)``.

The ``savannah_like`` preset (0.3 L, 0.5 L/s, 20 sccm N2) gives p0 = 0.55 Torr and
tau = 0.42 s with 150 degC walls (0.60 s with cold walls): a 15 ms / 5 s / 15 ms / 5 s
TMA/H2O recipe purges 12 tau. ``large_slow_chamber`` (3 L, 0.28 L/s) gives ~1 Torr and
tau ~ 7.5 s: 5-20 s purges overlap (CVD demonstrations).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim import chemistry, delivery, library
from sim.units import NS_PER_S, R_TORR_L, SCCM_MOL_S, kelvin

_HEATED_MARGIN_K = 2.0
_LINE_ABOVE_SOURCE_K = 15.0


# Temperatures a reactor's parts can have, degC: below, the gas laws of the model lose
# meaning (a gas at 0 K divides by zero); above, nothing in an ALD reactor survives.
T_MIN_C = -100.0
T_MAX_C = 1500.0


def _check_temperatures(what: str, obj: object, keys: tuple[str, ...]) -> None:
    for key in keys:
        v = getattr(obj, key)
        if v is not None and not T_MIN_C <= v <= T_MAX_C:
            msg = f"{what}: {key} = {v!r} degC is outside {T_MIN_C:g} to {T_MAX_C:g} degC"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class LineConfig:
    """One precursor/co-reactant line: source, ALD valve, optional source and line heaters.

    Delivery (vapour draw, choked through the metering valve and the ALD valve):
    ``F = C u (p_src - p_chamber,i) / (R T_src)`` mol/s with C = ``conductance_l_s``, u the
    valve opening (0-1) and p_src the source vapour pressure (liquids/solids), the regulated
    supply pressure (gas cylinders) or the ozone generator output (O3).

    Valve: an open command starts the stroke after ``valve_dead_ms``, a close command after
    ``valve_close_dead_ms``; the stem travels 0 <-> 1 in ``valve_stroke_ms``. A command whose
    motion would start before the previous command's motion is superseded, so pulses shorter
    than ``valve_dead_ms - valve_close_dead_ms`` (:attr:`min_pulse_ms`) deliver nothing and
    pulses shorter than about two strokes deliver much less than their length suggests.
    A pulse long enough for a full stroke delivers ``t - (valve_dead_ms -
    valve_close_dead_ms)`` of full opening; the defaults make that ``t - 5 ms``, the
    planner's :func:`sim.delivery.effective_open_s`, and take the planner's conductance and
    gas supply pressure, so plan and simulation agree on doses.
    """

    name: str
    chemical: str
    source_t_c: float | None = None
    """Heated source setpoint, degC; None for an unheated source at ambient temperature."""
    line_t_c: float | None = None
    """Line heater setpoint, degC; None for no line heater."""
    mass_g: float = 50.0
    """Precursor in the source at the start."""
    reserve_g: float = 0.5
    """Below this mass the vapour delivered falls in proportion (the source runs dry)."""
    conductance_l_s: float = delivery.DEFAULT_CONDUCTANCE_L_S
    supply_torr: float = delivery.GAS_SUPPLY_TORR
    """Regulated supply pressure for gas and ozone lines."""
    valve_dead_ms: float = 6.0
    valve_close_dead_ms: float = 1.0
    valve_stroke_ms: float = 6.0

    def __post_init__(self) -> None:
        _check_temperatures(f"line {self.name!r}", self, ("source_t_c", "line_t_c"))
        if self.chemical not in chemistry.catalogue():
            hint = chemistry.lookup(self.chemical)
            extra = f" (did you mean {hint.name!r}?)" if hint else ""
            msg = f"line {self.name!r}: unknown chemical {self.chemical!r}{extra}"
            raise ValueError(msg)
        for key in ("mass_g", "reserve_g", "conductance_l_s", "supply_torr"):
            if getattr(self, key) < 0:
                msg = f"line {self.name!r}: {key} must be >= 0"
                raise ValueError(msg)
        for key in ("valve_dead_ms", "valve_close_dead_ms", "valve_stroke_ms"):
            if getattr(self, key) < 0:
                msg = f"line {self.name!r}: {key} must be >= 0"
                raise ValueError(msg)
        if self.valve_stroke_ms <= 0:
            msg = f"line {self.name!r}: valve_stroke_ms must be > 0"
            raise ValueError(msg)

    @property
    def min_pulse_ms(self) -> float:
        """Shortest command that moves the valve at all."""
        return max(0.0, self.valve_dead_ms - self.valve_close_dead_ms)


@dataclass(frozen=True, slots=True)
class HeaterConfig:
    """A heated zone and its PID controller.

    Plant: ``C dT/dt = P_max u - (T - T_amb)/R_th`` (time constant ``tau_s = R_th C``), advanced
    exactly between controller updates. Controller: PID on the true temperature every
    ``period_s`` with conditional integration (no wind-up) and derivative on measurement;
    output u in 0..1. Defaults are SIMC tuning (Skogestad) for a closed-loop time constant
    lambda = tau/20: ``kp = tau / (K lambda)``, ``Ti = min(tau, 4 lambda)``, K = P_max R_th.
    """

    name: str
    power_w: float
    r_th_k_per_w: float
    tau_s: float
    kp_per_k: float | None = None
    """Proportional gain, output fraction per K (None: IMC tuning)."""
    ti_s: float | None = None
    td_s: float = 0.0
    period_s: float = 1.0
    setpoint_c: float | None = None
    """Initial setpoint (None: loop off)."""
    start_c: float | None = None
    """Initial temperature (None: the setpoint when ``settled``, else ambient)."""
    ramp_k_per_min: float | None = None
    max_c: float = 600.0
    sensor_break_output_pct: float = 0.0
    noise_k: float = 0.05
    resolution_k: float = 0.1

    @property
    def gain_k(self) -> float:
        """Steady-state temperature rise at 100 % output, K."""
        return self.power_w * self.r_th_k_per_w

    @property
    def kp(self) -> float:
        return self.kp_per_k if self.kp_per_k is not None else 20.0 / self.gain_k

    @property
    def ti(self) -> float:
        return self.ti_s if self.ti_s is not None else min(self.tau_s, 4.0 * self.tau_s / 20.0)

    @classmethod
    def default(
        cls, name: str, setpoint_c: float | None = None, start_c: float | None = None
    ) -> HeaterConfig:
        """Typical zone by name: substrate chuck, chamber walls, source jacket, line tape."""
        if name == "substrate":
            p, r, tau = 500.0, 1.1, 1200.0
        elif name == "walls":
            p, r, tau = 400.0, 1.0, 1800.0
        elif name.startswith("source."):
            p, r, tau = 100.0, 3.0, 600.0
        else:
            p, r, tau = 50.0, 6.0, 180.0
        return cls(name, p, r, tau, setpoint_c=setpoint_c, start_c=start_c)


@dataclass(frozen=True, slots=True)
class MfcConfig:
    """Thermal mass-flow controller: dead time then first-order response, clamped to FS."""

    name: str
    gas: str
    full_scale_sccm: float = 200.0
    setpoint_sccm: float = 0.0
    tau_s: float = 0.25
    dead_ms: float = 30.0
    noise_pct_fs: float = 0.02
    resolution_sccm: float = 0.01


@dataclass(frozen=True, slots=True)
class GaugeConfig:
    """Capacitance manometer: first-order lag, white noise, quantisation, over-range."""

    name: str = "chamber"
    full_scale_torr: float = 10.0
    tau_ms: float = 20.0
    noise_torr: float = 5e-5
    resolution_torr: float = 1e-4


@dataclass(frozen=True, slots=True)
class QcmConfig:
    """Quartz crystal microbalance: Sauerbrey ``df = -C_f dm``, noise, crystal life."""

    f0_hz: float = 6.0e6
    noise_hz: float = 0.02
    resolution_hz: float = 0.001
    density_g_cm3: float | None = None
    """Film density the monitor converts mass to thickness with (None: the film's)."""
    life_shift_hz: float = 1.0e6
    """Frequency shift at which the crystal is spent (0 % life)."""


@dataclass(frozen=True, slots=True)
class ChamberConfig:
    """The chamber as ``cells`` cells along the flow (a cross-flow reactor): plug flow from
    the inlet (every line, MFC and the plasma source feed the first cell) to the pump (the
    last cell), with axial diffusion between neighbours, each cell with its own gas and
    surface. The chamber's volume and reactive area are the reactor's, shared equally.

    Positions are fractions of ``length_cm`` from the inlet (0) to the outlet (1); a position
    belongs to the cell that covers it. No ``chamber`` at all is the well-stirred (0-D)
    chamber and its exact fast integrators; ``cells: 1`` runs the N-cell integrator with one
    cell (the same physics, slower: what the tests compare)."""

    cells: int = 1
    length_cm: float = 20.0
    """Length along the flow (sets the axial diffusion's reach between cells)."""
    substrate_at: float = 0.5
    """Where the wafer lies: the thickness, coverage and saturation a run reports."""
    qcm_at: float = 0.5
    gauge_at: float = 1.0
    """The gauge's port (default: the outlet, where the pump line leaves)."""
    axial_diffusion: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.cells, bool) or not isinstance(self.cells, int) or self.cells < 1:
            msg = f"cells must be a whole number >= 1 (got {self.cells!r})"
            raise ValueError(msg)
        if self.cells > 200:
            msg = f"cells: at most 200 (got {self.cells})"
            raise ValueError(msg)
        if not self.length_cm > 0.0:
            msg = f"length_cm must be > 0 (got {self.length_cm!r})"
            raise ValueError(msg)
        for name in ("substrate_at", "qcm_at", "gauge_at"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                msg = f"{name} must be a fraction of the length, 0..1 (got {v!r})"
                raise ValueError(msg)

    def cell_at(self, position: float) -> int:
        """The cell covering ``position`` (0..1; the outlet belongs to the last cell)."""
        c = int(position * self.cells)
        return c if c < self.cells else self.cells - 1


@dataclass(frozen=True, slots=True)
class PlasmaConfig:
    """RF plasma source fed by ``plasma.<gas>`` MFCs.

    Ignites ``ignition_delay_ms`` after RF on when a feed gas flows at >= ``min_feed_sccm``
    and the chamber is between the pressure limits; the match then tunes the reflected
    power from 90 % of forward down to ``tuned_reflected_fraction`` with ``tune_ms``.
    Radicals ("O2-plasma" for an O2 feed) are made at ``radical_yield_mol_per_j`` times the
    absorbed power, at most two per feed molecule, and are lost to pumping, wall
    recombination and the surface.
    """

    feed_gases: tuple[str, ...] = ("O2",)
    max_power_w: float = 600.0
    ignition_delay_ms: float = 100.0
    tune_ms: float = 300.0
    tuned_reflected_fraction: float = 0.02
    radical_yield_mol_per_j: float = 2e-8
    min_feed_sccm: float = 1.0
    min_pressure_torr: float = 0.005
    max_pressure_torr: float = 5.0
    feed_full_scale_sccm: float = 100.0
    noise_w: float = 0.5


@dataclass(frozen=True, slots=True)
class OzoneConfig:
    """Ozone generator feeding the "O3" line: output concentration follows the setpoint
    (weight % O3 in O2) with a first-order ``tau_s`` when on, decays to zero when off."""

    max_pct: float = 20.0
    tau_s: float = 10.0
    noise_pct: float = 0.02
    resolution_pct: float = 0.01


@dataclass(frozen=True, slots=True)
class ReactorConfig:
    """A whole reactor. See the module docstring for the gas-phase relations."""

    name: str = "savannah_like"
    volume_l: float = 0.3
    pump_speed_l_s: float = 0.5
    carrier_sccm: float = 20.0
    carrier_gas: str = "N2"
    carrier_full_scale_sccm: float = 200.0
    reactive_area_m2: float = 0.02
    """Hot surface that reacts (substrate + walls), at the substrate's kinetics."""
    ambient_c: float = 25.0
    pump_t_c: float = 25.0
    substrate_c: float | None = None
    """Initial substrate setpoint (None: heater off, at ambient)."""
    walls_c: float | None = 150.0
    settled: bool = True
    """Heaters with a setpoint start settled at it (a reactor that has been warm for hours)."""
    lines: tuple[LineConfig, ...] = ()
    heaters: tuple[HeaterConfig, ...] = ()
    """Overrides of the derived heaters (substrate, walls, source.<line>, line.<line>)."""
    mfcs: tuple[MfcConfig, ...] = ()
    """Overrides of the derived MFCs (carrier, plasma.<gas>)."""
    gauge: GaugeConfig = field(default_factory=GaugeConfig)
    qcm: QcmConfig | None = field(default_factory=QcmConfig)
    plasma: PlasmaConfig | None = None
    ozone: OzoneConfig | None = None
    process: str | None = None
    """Library process to grow (None: chosen from the chemicals on the lines)."""
    substrate: str = "Si"
    nucleation_factor: float | None = None
    nucleation_cycles: float | None = None
    chamber: ChamberConfig | None = None
    """Cells along the flow (None: the well-stirred 0-D chamber, the default). Last, so
    that a configuration pickled before it existed (in a journal's snapshots) still loads:
    see :meth:`__setstate__`."""

    def __setstate__(self, state: list[Any]) -> None:
        # A frozen slotted dataclass pickles its fields' values in order; one pickled by an
        # older version lacks the fields added since at the end: they take their defaults.
        names = [f.name for f in dataclasses.fields(self)]
        for name, value in zip(names, state, strict=False):
            object.__setattr__(self, name, value)
        for f in dataclasses.fields(self)[len(state) :]:
            factory = f.default_factory
            if f.default is dataclasses.MISSING and callable(factory):
                object.__setattr__(self, f.name, factory())
            else:
                object.__setattr__(self, f.name, f.default)

    def __post_init__(self) -> None:
        temps = ("ambient_c", "pump_t_c", "substrate_c", "walls_c")
        _check_temperatures("reactor config", self, temps)
        for h in self.heaters:
            _check_temperatures(f"heater {h.name!r}", h, ("setpoint_c", "start_c", "max_c"))
        positive = ("volume_l", "pump_speed_l_s", "reactive_area_m2", "carrier_full_scale_sccm")
        bad = [k for k in positive if not getattr(self, k) > 0]
        if bad:
            msg = f"reactor config: {', '.join(bad)} must be > 0"
            raise ValueError(msg)
        if self.carrier_sccm < 0:
            msg = "reactor config: carrier_sccm must be >= 0"
            raise ValueError(msg)
        names = [ln.name for ln in self.lines]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            msg = f"reactor config: duplicate line names {dup}"
            raise ValueError(msg)
        if self.process is not None and self.process not in library.processes():
            msg = f"reactor config: unknown process {self.process!r}"
            raise ValueError(msg)
        gases = [self.carrier_gas, *(m.gas for m in self.mfcs)]
        if self.plasma is not None:
            gases.extend(self.plasma.feed_gases)
        unknown = sorted({g for g in gases if g not in chemistry.catalogue()})
        if unknown:
            msg = f"reactor config: unknown gas(es) {unknown}"
            raise ValueError(msg)
        for ln in self.lines:
            chem = chemistry.get(ln.chemical)
            if chem.role is chemistry.Role.PLASMA:
                msg = (
                    f"line {ln.name!r}: {ln.chemical} is made by the plasma source, not a line"
                    " (configure `plasma` with its feed gas)"
                )
                raise ValueError(msg)
            if ln.chemical == "O3" and self.ozone is None:
                msg = f"line {ln.name!r}: an O3 line needs an `ozone` generator"
                raise ValueError(msg)

    # ------------------------------------------------------------------ derived numbers

    def base_pressure_torr(self) -> float:
        """Chamber pressure with only the carrier flowing."""
        return (
            self.carrier_sccm * SCCM_MOL_S * R_TORR_L * kelvin(self.pump_t_c) / self.pump_speed_l_s
        )

    def residence_time_s(self, t_gas_c: float | None = None) -> float:
        """``V T_pump / (S T_gas)`` at wall temperature ``t_gas_c`` (default: ``walls_c``)."""
        t = t_gas_c if t_gas_c is not None else (self.walls_c or self.ambient_c)
        return self.volume_l * kelvin(self.pump_t_c) / (self.pump_speed_l_s * kelvin(t))

    def heater_configs(self) -> list[HeaterConfig]:
        """Every heater the reactor has, overrides applied, in a fixed order."""
        out: list[HeaterConfig] = [
            HeaterConfig.default("substrate", self.substrate_c),
            HeaterConfig.default("walls", self.walls_c),
        ]
        for ln in self.lines:
            if ln.source_t_c is not None:
                out.append(HeaterConfig.default(f"source.{ln.name}", ln.source_t_c))
            if ln.line_t_c is not None:
                out.append(HeaterConfig.default(f"line.{ln.name}", ln.line_t_c))
        by_name = {h.name: h for h in self.heaters}
        out = [by_name.pop(h.name, h) for h in out]
        out.extend(by_name.values())
        return out

    def mfc_configs(self) -> list[MfcConfig]:
        """Every MFC, overrides applied: "carrier" and one "plasma.<gas>" per feed gas."""
        out = [
            MfcConfig(
                "carrier",
                self.carrier_gas,
                full_scale_sccm=self.carrier_full_scale_sccm,
                setpoint_sccm=self.carrier_sccm,
            )
        ]
        if self.plasma is not None:
            out.extend(
                MfcConfig(f"plasma.{g}", g, full_scale_sccm=self.plasma.feed_full_scale_sccm)
                for g in self.plasma.feed_gases
            )
        by_name = {m.name: m for m in self.mfcs}
        out = [by_name.pop(m.name, m) for m in out]
        out.extend(by_name.values())
        return out

    def dose_chemicals(self) -> list[str]:
        """Chemicals this reactor can put into the chamber to react (lines and plasma)."""
        out = [ln.chemical for ln in self.lines]
        if self.plasma is not None:
            for gas in self.plasma.feed_gases:
                rad = plasma_chemical(gas)
                if rad is not None:
                    out.append(rad)
        return list(dict.fromkeys(out))

    def with_line(self, name: str, **changes: Any) -> ReactorConfig:
        """A copy with fields of line ``name`` replaced (ValueError for an unknown line)."""
        if name not in {ln.name for ln in self.lines}:
            msg = f"no line {name!r}; have {[ln.name for ln in self.lines]}"
            raise ValueError(msg)
        lines = tuple(
            dataclasses.replace(ln, **changes) if ln.name == name else ln for ln in self.lines
        )
        return dataclasses.replace(self, lines=lines)

    def with_lines(self, **changes: Any) -> ReactorConfig:
        """A copy with the same fields replaced on every line."""
        lines = tuple(dataclasses.replace(ln, **changes) for ln in self.lines)
        return dataclasses.replace(self, lines=lines)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def preset(cls, name: str) -> ReactorConfig:
        """A named reactor without lines: ``savannah_like`` or ``large_slow_chamber``."""
        if name == "savannah_like":
            return cls()
        if name == "large_slow_chamber":
            return cls(
                name="large_slow_chamber",
                volume_l=3.0,
                pump_speed_l_s=0.28,
                reactive_area_m2=0.1,
            )
        msg = f"unknown reactor preset {name!r}; have {sorted(PRESETS)}"
        raise ValueError(msg)

    @classmethod
    def for_lines(
        cls, chemicals: Iterable[str], preset: str = "savannah_like", **changes: Any
    ) -> ReactorConfig:
        """A reactor provisioned for ``chemicals``: one line per dose chemical (named after
        it) with a source heater when the chemical needs one and a line heater 15 K above
        the source; a plasma source fed with the right gas for each plasma chemical; an
        ozone generator when O3 is named. ``changes`` replace fields of the result."""
        base = cls.preset(preset)
        lines: list[LineConfig] = []
        feeds: list[str] = []
        ozone = False
        for name in dict.fromkeys(chemicals):
            chem = chemistry.get(name) if name in chemistry.catalogue() else None
            if chem is None:
                hint = chemistry.lookup(name)
                extra = f" (did you mean {hint.name!r}?)" if hint else ""
                msg = f"unknown chemical {name!r}{extra}"
                raise ValueError(msg)
            if chem.role is chemistry.Role.PLASMA:
                assert chem.feed_gas is not None
                feeds.append(chem.feed_gas)
                continue
            if chem.role is chemistry.Role.GAS:
                msg = f"{name} is a carrier/feed gas, not a dose chemical"
                raise ValueError(msg)
            if chem.state is chemistry.State.GAS:
                lines.append(LineConfig(name, name))
                ozone = ozone or name == "O3"
                continue
            source_t = heated_source_c(name, base.ambient_c)
            line_t = (source_t if source_t is not None else base.ambient_c) + _LINE_ABOVE_SOURCE_K
            lines.append(LineConfig(name, name, source_t_c=source_t, line_t_c=line_t))
        plasma = PlasmaConfig(feed_gases=tuple(dict.fromkeys(feeds))) if feeds else None
        cfg = dataclasses.replace(
            base,
            lines=tuple(lines),
            plasma=plasma,
            ozone=OzoneConfig() if ozone else None,
        )
        return dataclasses.replace(cfg, **changes) if changes else cfg

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ReactorConfig:
        """Build from plain data (YAML/JSON): floats with unit-suffixed keys.

        Top-level keys are the field names of this class plus ``preset`` (the base, default
        ``savannah_like``) and ``chemicals`` (provision lines as :meth:`for_lines`; explicit
        ``lines`` replace them). ``lines``, ``heaters`` and ``mfcs`` are lists of mappings
        (or a mapping from name to fields); ``gauge``, ``qcm``, ``plasma`` and ``ozone`` are
        mappings (``qcm``/``plasma``/``ozone`` may be null). Raises ValueError naming every
        unknown key and every value of the wrong type.
        """
        raw: object = data
        if not isinstance(raw, Mapping):
            msg = "reactor config must be a mapping"
            raise ValueError(msg)
        data = dict(raw)
        preset = data.pop("preset", "savannah_like")
        chems = data.pop("chemicals", None)
        if not isinstance(preset, str):
            msg = "reactor config: preset must be a string"
            raise ValueError(msg)
        base = cls.for_lines(chems, preset) if chems is not None else cls.preset(preset)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            msg = f"reactor config: unknown key(s) {', '.join(unknown)}"
            raise ValueError(msg)
        changes: dict[str, Any] = {}
        errors: list[str] = []
        for key, value in data.items():
            try:
                if key == "lines":
                    changes[key] = tuple(_items(LineConfig, value, "lines", errors))
                elif key == "heaters":
                    changes[key] = tuple(_items(HeaterConfig, value, "heaters", errors))
                elif key == "mfcs":
                    changes[key] = tuple(_items(MfcConfig, value, "mfcs", errors))
                elif key in ("gauge", "qcm", "plasma", "ozone", "chamber"):
                    sub = {
                        "gauge": GaugeConfig,
                        "qcm": QcmConfig,
                        "plasma": PlasmaConfig,
                        "ozone": OzoneConfig,
                        "chamber": ChamberConfig,
                    }[key]
                    if value is None and key != "gauge":
                        changes[key] = None
                    else:
                        changes[key] = _one(sub, value, key, errors)
                else:
                    changes[key] = _convert(cls, key, value, key, errors)
            except ValueError as exc:
                errors.append(str(exc))
        if errors:
            raise ValueError("reactor config: " + "; ".join(errors))
        return dataclasses.replace(base, **changes)


PRESETS = ("savannah_like", "large_slow_chamber")


def plasma_chemical(feed_gas: str) -> str | None:
    """The plasma pseudo-chemical a feed gas makes ("O2" -> "O2-plasma"), or None."""
    for chem in chemistry.catalogue().values():
        if chem.role is chemistry.Role.PLASMA and chem.feed_gas == feed_gas:
            return chem.name
    return None


# ---------------------------------------------------------------------- from_mapping help


def _items(cls: type[Any], value: Any, path: str, errors: list[str]) -> list[Any]:
    out: list[Any] = []
    if isinstance(value, Mapping):
        seq: Sequence[Any] = [{"name": k, **(v or {})} for k, v in value.items()]
    elif isinstance(value, list | tuple):
        seq = value
    else:
        errors.append(f"{path} must be a list or a mapping")
        return out
    for i, item in enumerate(seq):
        built = _one(cls, item, f"{path}[{i}]", errors)
        if built is not None:
            out.append(built)
    return out


def _one(cls: type[Any], value: Any, path: str, errors: list[str]) -> Any:
    if not isinstance(value, Mapping):
        errors.append(f"{path} must be a mapping")
        return None
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        errors.append(f"unknown key(s) {', '.join(f'{path}.{k}' for k in unknown)}")
        return None
    kwargs: dict[str, Any] = {}
    n_before = len(errors)
    for key, v in value.items():
        kwargs[key] = _convert(cls, key, v, f"{path}.{key}", errors)
    if len(errors) > n_before:
        return None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        errors.append(f"{path}: {exc}")
        return None


def _convert(cls: type[Any], key: str, value: Any, path: str, errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    want = hints[key]
    options = typing.get_args(want) if isinstance(want, types.UnionType) else (want,)
    if value is None:
        if type(None) in options:
            return None
        errors.append(f"{path} must not be null")
        return None
    for opt in options:
        if opt is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if opt is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if opt is bool and isinstance(value, bool):
            return value
        if opt is str and isinstance(value, str):
            return value
        origin = typing.get_origin(opt)
        if (
            origin is tuple
            and isinstance(value, list | tuple)
            and all(isinstance(v, str) for v in value)
        ):
            return tuple(value)
    errors.append(f"{path} has the wrong type ({type(value).__name__})")
    return None


def heated_source_c(name: str, ambient_c: float = 25.0) -> float | None:
    """The source setpoint a chemical needs when its source must be heated, else None.

    The one rule for "heated source" (the built-in tool's line provisioning and
    :meth:`ReactorConfig.for_lines` both use it): the chemical's minimum source temperature
    or the papers' (processes.yaml), whichever is higher, more than 2 K above ambient.
    """
    chem = chemistry.get(name)
    if chem.state is chemistry.State.GAS or chem.role not in (
        chemistry.Role.PRECURSOR,
        chemistry.Role.COREACTANT,
    ):
        return None
    need = max(chem.source_t_min or ambient_c, library.source_temperatures().get(name, ambient_c))
    return need if need > ambient_c + _HEATED_MARGIN_K else None


GAS_LINE_SUPPLY_TORR = 760.0
"""Regulated cylinder pressure behind a gas line's flow restrictor (or MFC)."""


class GasFlow(typing.TypedDict):
    conductance_l_s: float
    supply_torr: float


def gas_line_flow(sccm: float, ambient_c: float = 25.0) -> GasFlow:
    """LineConfig fields for a gas line that flows ``sccm`` while its valve is open.

    A regulated supply at 1 atm behind a restrictor sized for the flow (a critical orifice,
    or an MFC at its setpoint): the flow changes by p_chamber/760 at most, under 1 % at
    the few Torr a dose reaches.
    """
    mol_s = sccm * SCCM_MOL_S
    conductance = mol_s * R_TORR_L * kelvin(ambient_c) / GAS_LINE_SUPPLY_TORR
    return {"conductance_l_s": conductance, "supply_torr": GAS_LINE_SUPPLY_TORR}


def heater_settle_s(
    zone: str, start_c: float, setpoint_c: float, ambient_c: float = 25.0, band_k: float = 2.0
) -> float:
    """Seconds the simulated heater ``zone`` ("substrate", "walls", "source.X", "line.X")
    takes from ``start_c`` to within ``band_k`` of ``setpoint_c`` (math.inf: never, within
    four hours): the planner's heat-up estimate for a simulated tool. The heater model
    itself (:class:`sim.components.Heater`: thermal mass, power limit, PID, passive
    cooling) is run alone, so the estimate is what the simulated reactor does.
    """
    from sim.components import Heater

    if abs(setpoint_c - start_c) <= band_k:
        return 0.0
    cfg = dataclasses.replace(
        HeaterConfig.default(zone, setpoint_c), start_c=start_c, setpoint_c=setpoint_c
    )
    h = Heater(cfg, ambient_c, settled=False)
    step = NS_PER_S
    for k in range(1, 4 * 3600 + 1):
        h.advance_to(k * step)
        if abs(h.t_c - setpoint_c) <= band_k:
            return float(k)
    return math.inf
