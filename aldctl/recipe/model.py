"""The recipe model: what a recipe says, typed, immutable, units resolved.

Every value is stored in one unit per kind (the unit is in the name: ``_s`` seconds,
``_c`` degC, ``_k`` kelvin, ``_sccm``, ``_torr``, ``_w``, ``_nm``); every node keeps the
:class:`~aldctl.diagnostics.Location` it came from, so compile-time checks can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from aldctl.diagnostics import Location


class ValueKind(StrEnum):
    TEMPERATURE = "temperature"
    FLOW = "flow"
    FRACTION = "fraction"


@dataclass(frozen=True, slots=True)
class Dose:
    """One chemical (or line name) opened for ``duration_s``."""

    chemical: str
    duration_s: float
    loc: Location


@dataclass(frozen=True, slots=True)
class Pulse:
    doses: tuple[Dose, ...]
    loc: Location

    @property
    def duration_s(self) -> float:
        return max(d.duration_s for d in self.doses)


@dataclass(frozen=True, slots=True)
class Purge:
    duration_s: float
    carrier_sccm: float | None
    """Boosted carrier flow during the purge; None keeps the current flow."""
    loc: Location


@dataclass(frozen=True, slots=True)
class Expose:
    """Stop-flow exposure: close the pump isolation valve, dose, hold, reopen and pump."""

    doses: tuple[Dose, ...]
    hold_s: float
    pump_s: float
    loc: Location

    @property
    def dose_s(self) -> float:
        return max(d.duration_s for d in self.doses)

    @property
    def duration_s(self) -> float:
        return self.dose_s + self.hold_s + self.pump_s


@dataclass(frozen=True, slots=True)
class Plasma:
    gas: str
    flow_sccm: float
    power_w: float
    duration_s: float
    """RF-on time."""
    stabilize_s: float
    """Feed gas flowing before RF on."""
    ignition_check: bool
    loc: Location

    @property
    def total_s(self) -> float:
        return self.stabilize_s + self.duration_s


@dataclass(frozen=True, slots=True)
class Setpoint:
    channel: str
    value: float | None
    """None = off."""
    kind: ValueKind | None
    """None only when value is None (off applies to any channel)."""
    loc: Location


@dataclass(frozen=True, slots=True)
class Set:
    setpoints: tuple[Setpoint, ...]
    loc: Location


@dataclass(frozen=True, slots=True)
class Ramp:
    channel: str
    target_c: float
    rate_k_min: float
    loc: Location


@dataclass(frozen=True, slots=True)
class Wait:
    duration_s: float
    loc: Location


class Relation(StrEnum):
    WITHIN = "within"
    BELOW = "below"
    ABOVE = "above"


@dataclass(frozen=True, slots=True)
class Condition:
    channel: str
    """A temperature or flow channel, or ``pressure`` (the chamber gauge)."""
    relation: Relation
    value: float
    """Tolerance (K or sccm) for WITHIN, threshold (Torr, degC, sccm) otherwise."""
    hold_s: float
    loc: Location


@dataclass(frozen=True, slots=True)
class WaitUntil:
    conditions: tuple[Condition, ...]
    timeout_s: float
    on_timeout: str
    """"abort" or "continue"."""
    loc: Location


@dataclass(frozen=True, slots=True)
class Repeat:
    times: int
    steps: tuple[Step, ...]
    loc: Location


@dataclass(frozen=True, slots=True)
class Every:
    """Steps that fire on every n-th repetition of the enclosing cycle (n, 2n, ...)."""

    n: int
    offset: int
    steps: tuple[Step, ...]
    loc: Location

    def fires(self, repetition: int) -> bool:
        """``repetition`` is 1-based."""
        return repetition % self.n == self.offset % self.n


@dataclass(frozen=True, slots=True)
class CycleRun:
    """Run a named (or inline) cycle ``repeat`` times, or until ``target_nm`` is grown."""

    cycle: str
    repeat: int | None
    target_nm: float | None
    loc: Location


class Order(StrEnum):
    INTERLEAVED = "interleaved"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True)
class Supercycle:
    ratio: tuple[tuple[str, int], ...]
    order: Order
    repeat: int | None
    target_nm: float | None
    loc: Location


@dataclass(frozen=True, slots=True)
class Include:
    recipe: Recipe
    loc: Location


Step = (
    Pulse
    | Purge
    | Expose
    | Plasma
    | Set
    | Ramp
    | Wait
    | WaitUntil
    | Repeat
    | Every
    | CycleRun
    | Supercycle
    | Include
)


@dataclass(frozen=True, slots=True)
class Cycle:
    name: str
    steps: tuple[Step, ...]
    loc: Location


@dataclass(frozen=True, slots=True)
class Substrate:
    material: str
    max_temperature_c: float | None
    loc: Location | None = None


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    raw: str | int | float | bool | None
    """As written (or as given with --set); parsed where it is used."""
    loc: Location
    overridden: bool = False


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    path: Path
    text: str
    """The file as read (the journal keeps it; resume checks it has not changed)."""
    params: dict[str, Param]
    substrate: Substrate | None
    setup: tuple[Step, ...]
    cycles: dict[str, Cycle]
    main: tuple[Step, ...]
    teardown: tuple[Step, ...]
    includes: tuple[Path, ...] = field(default_factory=tuple)
    """Every file this recipe pulled in, for the change check on resume."""

    def param_values(self) -> dict[str, str | int | float | bool | None]:
        return {name: p.raw for name, p in self.params.items()}
