"""Quantities with units, parsed with pint and reduced to the canonical unit of their kind.

Recipes and configs write ``15 ms``, ``20 sccm``, ``150 degC``, ``2 K``, ``0.5 Torr``,
``300 W``, ``10 nm``, ``5 K/min``. Every value is checked against the dimension its field
needs; the model then stores plain numbers in one unit per kind (the unit is in the field
name: ``_s``, ``_c``, ``_sccm``, ``_torr``...).

Temperatures need care: ``150 degC`` is a point on a scale (an offset unit), but a tolerance
``within: 2 degC`` or a rate ``5 degC/min`` is a difference. pint would turn ``2 degC`` into
275 K; for difference kinds we read degC/degF as their delta units.

pint's registry costs ~0.1 s to build even from its cache, so it is built on first use and
never on the ``aldctl --help`` path.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from functools import cache, lru_cache
from typing import Any


class Kind(Enum):
    TIME = ("time", "s", "[time]", "15 ms")
    TEMPERATURE = ("temperature", "degC", "[temperature]", "150 degC")
    TEMPERATURE_DELTA = ("temperature difference", "K", "[temperature]", "2 K")
    TEMPERATURE_RATE = ("temperature rate", "K/min", "[temperature]/[time]", "5 K/min")
    FLOW = ("gas flow", "sccm", "[length]**3/[time]", "20 sccm")
    PRESSURE = ("pressure", "Torr", "[mass]/[length]/[time]**2", "0.5 Torr")
    POWER = ("power", "W", "[mass]*[length]**2/[time]**3", "300 W")
    THICKNESS = ("thickness", "nm", "[length]", "10 nm")
    VOLUME = ("volume", "L", "[length]**3", "0.3 L")
    PUMPING_SPEED = ("pumping speed", "L/s", "[length]**3/[time]", "0.8 L/s")
    MASS = ("mass", "g", "[mass]", "25 g")
    AREA = ("area", "m**2", "[length]**2", "0.05 m**2")
    FRACTION = ("fraction", "percent", "", "10 %")
    MOLAR_MASS = ("molar mass", "g/mol", "[mass]/[substance]", "72.09 g/mol")
    DENSITY = ("density", "g/cm**3", "[mass]/[length]**3", "3.0 g/cm**3")
    GROWTH = ("growth per cycle", "angstrom", "[length]", "1.0 angstrom")

    def __init__(self, label: str, unit: str, dims: str, example: str) -> None:
        self.label = label
        self.unit = unit
        self.dims = dims
        self.example = example


class UnitError(ValueError):
    """A value with a missing, unknown or wrong-dimension unit."""

    def __init__(self, message: str, hint: str = "", *, specific: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.specific = specific
        """The value has this kind's dimension and is wrong for it (a junk factor): the
        error to show when a caller tries several kinds."""


_NUMBER_UNIT = re.compile(
    r"^\s*(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>.*?)\s*$"
)
_DELTA_KINDS = (Kind.TEMPERATURE_DELTA, Kind.TEMPERATURE_RATE)

_PINT_ERRORS = (ArithmeticError, LookupError, AttributeError, TypeError, ValueError, AssertionError)
"""What pint raises, besides its own PintError, on a well-shaped but meaningless unit."""

MAX_UNIT_CHARS = 40
"""Longest unit expression read ("mg/(cm**2*min)" is 14): pint's parser is super-linear
(a 50 kB unit string took ~18 s), so length and token shape are checked before it runs."""
_UNIT_WORD = r"(?:[A-Za-z_µμ°Ω][A-Za-z0-9_µμ°Ω]*|%)"
_WORD = re.compile(_UNIT_WORD)
_UNIT_TOKEN = re.compile(rf"\s*(?:{_UNIT_WORD}|\d+(?:\.\d+)?|\*\*|\*|/|\^|\(|\)|-)\s*")
MIN_TIME_S = 1e-6
"""Shortest nonzero duration: the engine's timeline is in nanoseconds and no valve moves in
less than a microsecond; ``5e-324 s`` is a typo, not a purge."""
MAX_MAGNITUDE = 1e12
"""Largest magnitude, and 1/smallest nonzero one, of any quantity in its canonical unit."""


@cache
def registry() -> Any:
    import pint

    ureg: Any
    try:
        ureg = pint.UnitRegistry(cache_folder=":auto:")
    except OSError:  # read-only home: build without the disk cache
        ureg = pint.UnitRegistry()
    # Newer pint releases define some of these; define only what is missing.
    for name, definition in (
        ("Torr", "Torr = torr"),
        ("sccm", "sccm = cm**3/min"),
        ("slm", "slm = L/min"),
    ):
        if name not in ureg:
            ureg.define(definition)
    return ureg


@dataclass(frozen=True, slots=True)
class _Parsed:
    number: float
    unit: str


def _split(text: str) -> _Parsed:
    if len(text) > MAX_UNIT_CHARS + 40:
        raise UnitError(
            f"'{text[:40]}...' is too long for a number with a unit", "write e.g. '15 ms'"
        )
    m = _NUMBER_UNIT.match(text)
    if not m:
        raise UnitError(f"'{text}' is not a number with a unit")
    return _Parsed(float(m["num"]), m["unit"])


def _check_unit_shape(unit: str, text: str, kind: Kind) -> list[str]:
    """A unit is whole tokens (names, exponents, ``* / ** ^``, balanced parentheses):
    ``15 'ms`` and ``15 ms#`` are errors, not 15 ms with the junk dropped. Returns the
    unit's words (``ms``, ``%``), in order."""
    example = f"a {kind.label} is written like '{kind.example}'"
    if len(unit) > MAX_UNIT_CHARS:
        raise UnitError(f"the unit in '{text[:60]}' is too long", example)
    pos = 0
    depth = 0
    words: list[str] = []
    while pos < len(unit):
        m = _UNIT_TOKEN.match(unit, pos)
        if m is None or m.end() == pos:
            bad = unit[pos]
            raise UnitError(f"unexpected character {bad!r} in the unit of '{text}'", example)
        tok = m.group().strip()
        if _WORD.fullmatch(tok):
            words.append(tok)
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
            if depth < 0:
                raise UnitError(f"unbalanced ')' in the unit of '{text}'", example)
        pos = m.end()
    if depth:
        raise UnitError(f"unbalanced '(' in the unit of '{text}'", example)
    return words


@lru_cache(maxsize=4096)
def parse(text: str, kind: Kind) -> float:
    """``text`` (e.g. ``"15 ms"``) in the canonical unit of ``kind``. Raises UnitError."""
    parsed = _split(text)
    if not math.isfinite(parsed.number):
        raise UnitError(f"'{text}' is not a finite number")
    unit = parsed.unit
    if not unit:
        raise UnitError(
            f"'{text}' has no unit; a {kind.label} needs one", f"write e.g. '{kind.example}'"
        )
    words = _check_unit_shape(unit, text, kind)
    if kind is Kind.FRACTION:
        _check_fraction_unit(unit, words, text)
    if kind in _DELTA_KINDS:
        unit = re.sub(r"\bdeg(C|F)\b", r"delta_deg\1", unit)
    ureg = registry()
    import pint

    # Whatever pint raises on a well-shaped but meaningless unit ("m/0s" divides by zero,
    # "ms**0" loses its unit: KeyError) is the user's unit, not an internal error.
    try:
        units = ureg.parse_units(unit)
        dims = units.dimensionality
    except (pint.PintError, *_PINT_ERRORS) as exc:
        raise UnitError(
            f"unknown unit '{parsed.unit}' in '{text}'",
            f"a {kind.label} is written like '{kind.example}'",
        ) from exc
    want = ureg.parse_units(kind.unit) if kind is not Kind.FRACTION else ureg.dimensionless
    if dims != want.dimensionality:
        raise UnitError(
            f"'{text}' is not a {kind.label}",
            f"a {kind.label} is written like '{kind.example}'",
        )
    if kind is not Kind.FRACTION:
        _check_no_pure_numbers(words, text, kind, ureg)
    try:
        q = ureg.Quantity(parsed.number, units)
        value = float(q.to(kind.unit).magnitude)
    except (pint.PintError, ArithmeticError, LookupError) as exc:  # offset arithmetic...
        raise UnitError(f"cannot read '{text}' as a {kind.label}: {exc}") from exc
    _check_magnitude(value, text, kind)
    return value


FRACTION_UNITS = ("%", "percent", "ppm")
"""The words a fraction is written in: one of them, alone."""


def _check_fraction_unit(unit: str, words: list[str], text: str) -> None:
    """A fraction is one fraction word: pint reads ``10 %%`` as 0.1 % and ``10 deg`` as
    17 %, but an angle (deg, rad, turn) or a constant (pi) is not a share of anything."""
    if unit.strip() in FRACTION_UNITS:
        return
    raise UnitError(
        f"'{text}' is not a fraction: its unit must be one of "
        + ", ".join(f"'{w}'" for w in FRACTION_UNITS),
        "a fraction is written like '10 %'",
        specific=any(w in FRACTION_UNITS for w in words),
    )


def _check_no_pure_numbers(words: list[str], text: str, kind: Kind, ureg: Any) -> None:
    import pint

    """A quantity with a dimension has no dimensionless factor: pint reads ``5 s%`` as
    0.05 s, ``5 s ppm`` as 5 us and ``5 s/turn`` as 0.8 s, and ``%``, ``ppm``, ``deg``
    (an angle), ``rad``, ``turn`` and ``pi`` all pass a dimension check."""
    for word in words:
        try:
            dims = ureg.parse_units(word).dimensionality
        except (pint.PintError, *_PINT_ERRORS):  # the whole expression parsed; a word alone may not
            continue
        if not dims:
            raise UnitError(
                f"'{text}': '{word}' is not a unit of {kind.label}",
                f"'{word}' is a pure number that would scale the value; "
                f"a {kind.label} is written like '{kind.example}'",
                specific=True,
            )


def _check_magnitude(value: float, text: str, kind: Kind) -> None:
    """Physically meaningless magnitudes (subnormal, astronomical) are errors."""
    if not math.isfinite(value):
        raise UnitError(f"'{text}' is not a finite {kind.label}")
    if kind is Kind.TEMPERATURE:
        if value < -273.15:
            raise UnitError(f"'{text}' is below absolute zero")
        if value > 1e5:
            raise UnitError(f"'{text}' is not a temperature any reactor reaches")
        return
    mag = abs(value)
    if mag == 0:
        return
    if kind is Kind.TIME and mag < MIN_TIME_S:
        raise UnitError(
            f"'{text}' is shorter than a microsecond",
            "no valve or controller acts that fast; check the exponent and the unit",
        )
    if mag < 1 / MAX_MAGNITUDE or mag > MAX_MAGNITUDE:
        raise UnitError(
            f"'{text}' is not a meaningful {kind.label} ({value:g} {kind.unit})",
            "check the exponent and the unit",
        )


def parse_value(value: object, kind: Kind) -> float:
    """Like :func:`parse` but accepts the YAML scalar as loaded (str/int/float)."""
    if isinstance(value, bool) or value is None:
        raise UnitError(
            f"expected a {kind.label} like '{kind.example}', got {value!r}",
        )
    if isinstance(value, int | float):
        raise UnitError(
            f"'{value}' has no unit; a {kind.label} needs one",
            f"write e.g. '{kind.example}'",
        )
    return parse(str(value), kind)


def format_duration(seconds: float) -> str:
    """Human duration: ``2 h 47 min``, ``5.0 s``, ``15 ms``."""
    if seconds == 0:
        return "0 s"
    if seconds < 1.0:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {m:02d} min"
    days, h = divmod(hours, 24)
    return f"{days} d {h} h"
