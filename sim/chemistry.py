"""Chemical catalogue: names, roles, molar masses, source temperatures, vapour pressures.

The catalogue is packaged data (``sim/data/chemicals.yaml``); this module gives it types and
the vapour-pressure functions the source model and the planner share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import yaml

# libyaml's parser: ten times faster than the pure-Python one on the packaged data.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_R = 8.314462618  # J/(mol K)
_LN10 = math.log(10.0)


class Role(StrEnum):
    PRECURSOR = "precursor"
    COREACTANT = "coreactant"
    GAS = "gas"
    PLASMA = "plasma"


class State(StrEnum):
    LIQUID = "liquid"
    SOLID = "solid"
    GAS = "gas"


@dataclass(frozen=True, slots=True)
class VapourPressure:
    """log10(p/Torr) = a - b/(c + T), T in K when ``celsius`` is false, degC when true."""

    a: float
    b: float
    c: float = 0.0
    celsius: bool = False

    def torr(self, t_c: float) -> float:
        t = t_c if self.celsius else t_c + 273.15
        return float(10.0 ** (self.a - self.b / (self.c + t)))

    @classmethod
    def through_point(cls, p_torr: float, t_c: float, dh_kj: float) -> VapourPressure:
        # Clausius-Clapeyron: ln p = const - dH/(R T); rewritten in the base-10 a - b/T form.
        b = dh_kj * 1000.0 / (_R * _LN10)
        a = math.log10(p_torr) + b / (t_c + 273.15)
        return cls(a=a, b=b)


@dataclass(frozen=True, slots=True)
class Chemical:
    name: str
    formula: str
    long_name: str
    role: Role
    state: State
    molar_mass: float
    """g/mol."""
    source_t_min: float | None
    """Lowest useful source temperature, degC (None for gases)."""
    source_t_assumed: bool
    vapour: VapourPressure | None
    element: str | None
    hazards: tuple[str, ...]
    feed_gas: str | None = None
    """For plasma pseudo-chemicals: the gas the plasma source is fed with."""
    decomposition_onset_c: float | None = None
    """Precursors: degC above which the molecule decomposes on hot surfaces."""
    decomposition_from: str = ""
    """"literature" or "assumed" (chemicals.yaml gives the source or the reasoning)."""
    decomposition_note: str = ""
    origin: str = ""
    """Where the entry comes from: "" for the shipped catalogue, else the user file."""
    vapour_assumed: bool = False
    """The vapour-pressure curve is an assumed engineering value, not a measured curve."""
    source: str = ""
    """Where a user file's figures come from (its ``source:``)."""

    @property
    def is_dose(self) -> bool:
        """True for chemicals delivered as timed doses through an ALD valve."""
        return self.role in (Role.PRECURSOR, Role.COREACTANT)

    def vapour_pressure_torr(self, t_c: float) -> float:
        if self.vapour is None:
            msg = f"{self.name} is a gas: it has no vapour-pressure curve"
            raise ValueError(msg)
        return self.vapour.torr(t_c)


def _parse_vapour(spec: dict[str, list[float]] | None) -> VapourPressure | None:
    if spec is None:
        return None
    if "cc" in spec:
        a, b = spec["cc"]
        return VapourPressure(a=a, b=b)
    if "antoine" in spec:
        a, b, c = spec["antoine"]
        return VapourPressure(a=a, b=b, c=c, celsius=True)
    if "ref" in spec:
        p, t, dh = spec["ref"]
        return VapourPressure.through_point(p, t, dh)
    msg = f"unknown vapour-pressure form {sorted(spec)}"
    raise ValueError(msg)


@cache
def catalogue() -> dict[str, Chemical]:
    """All known chemicals by name (case-sensitive, as chemists write them)."""
    from sim import userdata

    text = resources.files("sim.data").joinpath("chemicals.yaml").read_text(encoding="utf-8")
    raw = dict(yaml.load(text, Loader=_LOADER)["chemicals"])
    raw.update(userdata.chemicals())  # a lab's own entries, replacing shipped ones by name
    return {name: build(name, spec) for name, spec in raw.items()}


def build(name: str, spec: Mapping[str, Any]) -> Chemical:
    """One catalogue entry from its spec (the shapes of ``chemicals.yaml``)."""
    dec = spec.get("decomposition")
    return Chemical(
        name=name,
        formula=spec["formula"],
        long_name=spec["name"],
        role=Role(spec["role"]),
        state=State(spec["state"]),
        molar_mass=float(spec["mass"]),
        source_t_min=float(spec["source_T"]) if "source_T" in spec else None,
        source_t_assumed=spec.get("source_T_from", "assumed") != "data",
        vapour=_parse_vapour(spec.get("vapour")),
        element=spec.get("element"),
        hazards=tuple(spec.get("hazards", ())),
        feed_gas=spec.get("gas"),
        decomposition_onset_c=float(dec["onset"]) if dec else None,
        decomposition_from=str(dec.get("from", "")) if dec else "",
        decomposition_note=str(dec.get("note", "")) if dec else "",
        origin=str(spec.get("origin", "")),
        source=str(spec.get("source", "")),
        # chemicals.yaml: the "cc"/"antoine" curves are sourced, a "ref" point assumed
        vapour_assumed=bool(spec.get("vapour_assumed", "ref" in (spec.get("vapour") or {}))),
    )


def get(name: str) -> Chemical:
    """The chemical called ``name``; KeyError if the catalogue does not know it."""
    return catalogue()[name]


def lookup(name: str) -> Chemical | None:
    """Case-insensitive lookup, for hints ("tma" -> TMA)."""
    cat = catalogue()
    if name in cat:
        return cat[name]
    folded = {k.casefold(): v for k, v in cat.items()}
    return folded.get(name.casefold())
