"""Your own chemistry: a lab's chemicals and processes, in a file of its own.

The shipped catalogue (``sim/data/chemicals.yaml``) and process library
(``sim/data/processes.yaml`` + ``library.yaml``) are package files. A lab adds chemicals
(TEMAHf), adds processes (HfO2 from TEMAHf and water) or replaces a shipped process with its
own calibration (its ellipsometry GPC, so that ``target:`` computes the right cycle count)
in one YAML file, found in this order:

1. ``--chemistry FILE`` on the command line (it sets ``$ALDCTL_CHEMISTRY``, so run processes
   started from that command read the same file);
2. ``$ALDCTL_CHEMISTRY`` (an empty value: no user file at all);
3. ``chemistry.yaml`` in the platform's user config directory
   (``~/.config/aldctl/chemistry.yaml`` on Linux).

The file is checked like a recipe: every problem at once, each with ``file:line:col`` and a
hint. What it holds is handed to the simulator's catalogue and library
(:mod:`sim.userdata`), so validation, plan, simulate and run all see the same chemistry.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aldctl import units, yamlsrc
from aldctl.diagnostics import Diagnostics, Location, UserError, did_you_mean, unknown_key
from aldctl.units import Kind

ENV = "ALDCTL_CHEMISTRY"
TOP_KEYS = ("chemicals", "processes")
FILE_NAME = "chemistry.yaml"

ADD_HINT = (
    "a chemical aldctl does not ship is described in your own chemistry file "
    "(--chemistry FILE, $ALDCTL_CHEMISTRY or ~/.config/aldctl/chemistry.yaml; see "
    "`aldctl chemicals --help`)"
)
"""How to add a chemical: the end of every unknown-chemical hint."""


def unknown_chemical_hint(name: str, choices: Iterable[str]) -> str:
    """'did you mean X?' where a known name is close, and always how to add a new one."""
    close = did_you_mean(name, choices)
    if close.startswith("did you mean"):
        return f"{close} If '{name}' is a new chemical: {ADD_HINT}"
    return ADD_HINT


ROLES = ("precursor", "coreactant", "gas", "plasma")
STATES = ("liquid", "solid", "gas")
KINDS = ("thermal", "PEALD", "ternary", "supercycle", "MLD")
ORIGINS = ("literature", "measured", "assumed")

_ASSUMED_DH_KJ = 70.0
"""Enthalpy of vaporisation (kJ/mol) assumed when a chemical gives only its source
temperature: a typical metal-organic value (60-100 kJ/mol); its vapour pressure is then
taken as 0.1 Torr at that temperature, the usual working point of a heated source."""
_ASSUMED_P_TORR = 0.1
_R = 8.314462618


@dataclass(frozen=True)
class Range:
    """Where a physical quantity of a chemistry file makes sense, in its canonical unit
    (degC, Torr, g/mol, g/cm**3, angstrom, or a plain number): the file's numbers reach the
    simulator's formulas (1/T, log p, thickness / growth), so a value outside is refused at
    its own line before any of them runs."""

    lo: float
    hi: float
    lo_open: bool
    unit: str
    hint: str

    def holds(self, v: float) -> bool:
        return (v > self.lo if self.lo_open else v >= self.lo) and v <= self.hi

    def text(self) -> str:
        lo = "above" if self.lo_open else "at least"
        return f"{lo} {self.lo:g} {self.unit} and at most {self.hi:g} {self.unit}".strip()


ABS_ZERO_C = -273.15
T_MAX_C = 2000.0
TEMPERATURE = Range(
    ABS_ZERO_C,
    T_MAX_C,
    True,
    "degC",
    "a temperature is above absolute zero (0 K = -273.15 degC); none of ALD's is above "
    "2000 degC. Did you mean degC where you wrote K?",
)
SOURCE_T_LO_C, SOURCE_T_HI_C = -100.0, 500.0
SOURCE_TEMPERATURE = Range(
    SOURCE_T_LO_C,
    SOURCE_T_HI_C,
    False,
    "degC",
    "a source is chilled to -100 degC at the coldest and heated to 500 degC at most (most "
    "run between 15 and 200 degC)",
)
DECOMPOSITION_ONSET = Range(
    0.0,
    1000.0,
    False,
    "degC",
    "a precursor that decomposed below 0 degC could not be kept in its bottle, and none of "
    "ALD's lasts above 1000 degC (TMA: ~370 degC, LiOtBu: ~300 degC)",
)
VAPOUR_PRESSURE = Range(
    0.0, 1e5, True, "Torr", "a vapour pressure is positive and below 1e5 Torr (130 atm)"
)
MOLAR_MASS = Range(
    1.0, 10000.0, False, "g/mol", "H2 is 2 g/mol; the heaviest ALD precursors are ~1,000 g/mol"
)
DENSITY = Range(0.0, 30.0, True, "g/cm**3", "a solid film is denser than 0 and below 30 g/cm**3")
GROWTH = Range(
    0.0,
    100.0,
    True,
    "angstrom",
    "growth per cycle is positive and below 100 angstrom (ALD: 0.1-3, MLD up to ~20)",
)
SUPERCYCLE_GROWTH = Range(
    0.0,
    1000.0,
    True,
    "angstrom",
    "growth per supercycle is positive and below 1000 angstrom (100 nm)",
)
CATIONS = Range(0.0, 100.0, True, "", "cations per formula unit: {Hf: 1}, {Li: 2, Si: 1}")
RATIO = Range(1.0, 1000.0, False, "", "subcycles per supercycle: whole numbers 1..1000")
INTERACTION = Range(
    0.0, 100.0, True, "", "a growth factor after another subcycle, around 1 (0.5, 1.5)"
)


def default_path() -> Path | None:
    """The user file in effect: $ALDCTL_CHEMISTRY, or the platform config dir's."""
    env = os.environ.get(ENV)
    if env is not None:
        return Path(env) if env.strip() else None
    from platformdirs import user_config_path

    p = user_config_path("aldctl") / FILE_NAME
    return p if p.is_file() else None


@dataclass
class UserChemistry:
    path: str
    chemicals: dict[str, dict[str, Any]] = field(default_factory=dict)
    processes: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _State:
    active: tuple[str, float] | None = None
    """(resolved path, mtime) of the file installed in the simulator's catalogue."""


_state = _State()


def ensure() -> Path | None:
    """Load the user file in effect into the simulator's catalogue and library (once per
    file version); UserError with every problem when the file is wrong. Returns its path."""
    path = default_path()
    if path is None:
        if _state.active is not None:
            from sim import userdata

            userdata.install()
            _state.active = None
        return None
    try:
        stamp = path.stat().st_mtime
    except OSError as exc:
        raise UserError(
            f"{path}: cannot read the chemistry file ({exc.strerror}) "
            f"(hint: it comes from {'$' + ENV if os.environ.get(ENV) else 'the config dir'})"
        ) from None
    key = (str(path.resolve()), stamp)
    if _state.active == key:
        return path
    user = load(path)
    install(user)
    _state.active = key
    return path


def install(user: UserChemistry) -> None:
    from sim import userdata

    userdata.install(user.chemicals, user.processes, user.phases)


def load(path: Path) -> UserChemistry:
    return parse(yamlsrc.load_file(path), str(path))


# ---------------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, file: str) -> None:
        self.file = file
        self.d = Diagnostics()

    def err(self, msg: str, loc: Location, hint: str = "") -> None:
        self.d.error(msg, loc, hint)

    def keys(self, node: yamlsrc.Map, allowed: tuple[str, ...], what: str) -> None:
        for k, _ in node.entries:
            if str(k.value) not in allowed:
                self.err(
                    f"{what}: {unknown_key(k.value)}",
                    k.loc,
                    did_you_mean(str(k.value), allowed) or "expected one of: " + ", ".join(allowed),
                )

    def need(self, node: yamlsrc.Map, key: str, what: str) -> yamlsrc.Node | None:
        v = node.get(key)
        if v is None:
            self.err(f"{what}: missing '{key}'", node.loc)
        return v

    def quantity(
        self, node: yamlsrc.Node | None, kind: Kind, what: str, rng: Range | None = None
    ) -> float | None:
        if node is None:
            return None
        if not isinstance(node, yamlsrc.Scalar):
            self.err(f"{what}: expected a {kind.label} like '{kind.example}'", node.loc)
            return None
        if rng is None and kind is Kind.TEMPERATURE:
            rng = TEMPERATURE
        try:
            v = units.parse_value(node.value, kind)
        except units.UnitError as exc:
            self.err(f"{what}: {exc.message}", node.loc, exc.hint or (rng.hint if rng else ""))
            return None
        return self.within(v, node, what, rng)

    def within(self, v: float, node: yamlsrc.Node, what: str, rng: Range | None) -> float | None:
        """``v`` if ``rng`` holds it, else an error at ``node``'s own line."""
        if rng is None or rng.holds(v):
            return v
        shown = node.value if isinstance(node, yamlsrc.Scalar) else v
        self.err(f"{what}: '{shown}' is out of range: {rng.text()}", node.loc, rng.hint)
        return None

    def number(
        self,
        node: yamlsrc.Node | None,
        what: str,
        positive: bool = True,
        rng: Range | None = None,
    ) -> float | None:
        if node is None:
            return None
        if (
            not isinstance(node, yamlsrc.Scalar)
            or isinstance(node.value, bool)
            or not isinstance(node.value, int | float)
            or not math.isfinite(node.value)
            or (positive and node.value <= 0)
        ):
            self.err(
                f"{what}: expected a {'positive ' if positive else ''}number"
                + (f", not '{node.value}'" if isinstance(node, yamlsrc.Scalar) else ""),
                node.loc,
                rng.hint if rng is not None else "a plain number, like 1.5",
            )
            return None
        return self.within(float(node.value), node, what, rng)

    def text(self, node: yamlsrc.Node | None, what: str) -> str | None:
        if node is None:
            return None
        if not isinstance(node, yamlsrc.Scalar) or node.value is None:
            self.err(f"{what}: expected text", node.loc)
            return None
        return str(node.value)

    def choice(self, node: yamlsrc.Node | None, options: tuple[str, ...], what: str) -> str | None:
        t = self.text(node, what)
        if t is None or node is None:
            return None
        if t not in options:
            self.err(
                f"{what}: '{t}' is not one of {', '.join(options)}",
                node.loc,
                did_you_mean(t, options),
            )
            return None
        return t

    def words(self, node: yamlsrc.Node | None, what: str) -> list[str] | None:
        if node is None:
            return None
        if not isinstance(node, yamlsrc.Seq) or not all(
            isinstance(n, yamlsrc.Scalar) and isinstance(n.value, str) and n.value for n in node
        ):
            self.err(f"{what}: expected a list of names, like [TEMAHf, H2O]", node.loc)
            return None
        return [str(n.value) for n in node if isinstance(n, yamlsrc.Scalar)]


def parse(tree: yamlsrc.Node | None, file: str) -> UserChemistry:
    """Check a chemistry file and turn it into the simulator's data shapes."""
    from sim import chemistry, library

    p = _Parser(file)
    out = UserChemistry(path=file)
    if tree is None:
        return out
    if not isinstance(tree, yamlsrc.Map):
        p.err("a chemistry file is a mapping with 'chemicals:' and/or 'processes:'", tree.loc)
        p.d.raise_if_errors()
    assert isinstance(tree, yamlsrc.Map)
    if not yamlsrc.is_document_of(tree, TOP_KEYS):
        raise yamlsrc.not_a_document(
            file,
            "an aldctl chemistry file",
            "a chemistry file is a YAML mapping with 'chemicals:' and/or 'processes:'",
        )
    p.keys(tree, TOP_KEYS, "chemistry file")
    chems = tree.get("chemicals")
    if chems is not None:
        if not isinstance(chems, yamlsrc.Map):
            p.err("chemicals: expected a mapping of name -> description", chems.loc)
        else:
            for k, v in chems.entries:
                spec = _chemical(p, str(k.value), v, k.loc, file)
                if spec is not None:
                    out.chemicals[str(k.value)] = spec
    # Processes are checked against the shipped catalogue plus this file's chemicals.
    known = set(chemistry.catalogue()) | set(out.chemicals)
    if isinstance(chems, yamlsrc.Map):  # an entry with errors still counts as named
        known |= {str(k.value) for k, _ in chems.entries}
    shipped_cat = chemistry.catalogue()
    roles = {n: str(s.get("role")) for n, s in out.chemicals.items()}
    roles.update({n: c.role.value for n, c in shipped_cat.items() if n not in roles})
    if isinstance(chems, yamlsrc.Map):
        for k, v in chems.entries:
            r = v.get("role") if isinstance(v, yamlsrc.Map) else None
            if isinstance(r, yamlsrc.Scalar):
                roles.setdefault(str(k.value), str(r.value))
    elements = {n: s.get("element") for n, s in out.chemicals.items()}
    procs = tree.get("processes")
    if procs is not None:
        if not isinstance(procs, yamlsrc.Map):
            p.err("processes: expected a mapping of process id -> description", procs.loc)
        else:
            phases = set(library.phases())
            for k, v in procs.entries:
                got = _process(p, str(k.value), v, k.loc, known, roles, phases, out)
                if got is not None:
                    out.processes.append(got)
    del elements
    p.d.raise_if_errors()
    _check_builds(p, out, chems, procs)
    return out


def _check_builds(
    p: _Parser, out: UserChemistry, chems: yamlsrc.Node | None, procs: yamlsrc.Node | None
) -> None:
    """Build and use every entry with the file's data installed: what the checks above
    cannot see (a ratio naming a subcycle the process does not have, a curve that
    overflows) is found here. Whatever a chemical or process raises while being built or
    evaluated becomes an error at that entry, never an internal error of every command
    (the default chemistry file is read by all of them)."""
    from sim import chemistry, library, userdata

    def at(node: yamlsrc.Node | None, key: str) -> Location:
        loc = node.key_loc(key) if isinstance(node, yamlsrc.Map) else None
        return loc or Location(p.file, 1, 1)

    before = (dict(userdata.chemicals()), list(userdata.processes()), dict(userdata.phases()))
    try:
        userdata.install(out.chemicals, out.processes, out.phases)
        for name, cspec in out.chemicals.items():
            try:
                _exercise_chemical(chemistry.build(name, cspec))
            except Exception as exc:  # the entry's own data broke a formula: say where
                p.err(
                    f"chemicals.{name}: {_why(exc)}",
                    at(chems, name),
                    "check this chemical's numbers (source_T, vapour) for a slip",
                )
        if p.d.errors:
            p.d.raise_if_errors()
        for spec, params in out.processes:
            pid = str(spec["id"])
            try:
                proc = library._build(spec, params)
                for pub in proc.published:
                    for k in pub.ratio or {}:
                        if k not in proc.cycles:
                            raise KeyError(f"ratio names '{k}', not a subcycle")
                _exercise_process(proc)
            except (KeyError, ValueError, TypeError) as exc:
                p.err(f"processes.{pid}: incomplete process description ({exc})", at(procs, pid))
            except Exception as exc:  # the entry's own data broke a formula: say where
                p.err(
                    f"processes.{pid}: {_why(exc)}",
                    at(procs, pid),
                    "check this process's numbers (gpc, window, T) for a slip",
                )
    finally:
        userdata.install(*before)
    p.d.raise_if_errors()


def _why(exc: BaseException) -> str:
    return f"its data cannot be used ({type(exc).__name__}: {exc})"


def _exercise_chemical(c: Any) -> None:
    """What the planner and the simulator compute from a chemical, over the temperatures
    a source can have: a curve that overflows or goes negative raises here."""
    if c.vapour is None:
        return
    temps = [SOURCE_T_LO_C, 25.0, SOURCE_T_HI_C]
    if c.source_t_min is not None:
        temps.append(c.source_t_min)
    for t in temps:
        v = c.vapour_pressure_torr(t)
        if not (math.isfinite(v) and v >= 0):
            msg = f"its vapour pressure at {t:g} degC is {v} Torr"
            raise ValueError(msg)


def _exercise_process(proc: Any) -> None:
    lo, hi = proc.valid_range
    temps = {lo, hi, proc.nominal_t, 25.0, 500.0}
    for kind in proc.cycles.values():
        temps.update(t for t, _ in kind.points)
    for kind in proc.cycles:
        for t in sorted(temps):
            g = proc.gpc(t, kind)
            if not (math.isfinite(g) and g >= 0):
                msg = f"its growth per cycle at {t:g} degC is {g} angstrom"
                raise ValueError(msg)
    if proc.is_supercycle:
        proc.sequence_growth(list(proc.cycles), proc.nominal_t)


_CHEM_KEYS = (
    "name",
    "formula",
    "role",
    "state",
    "molar_mass",
    "element",
    "source_T",
    "vapour",
    "hazards",
    "decomposition",
    "gas",
    "source",
)


def _chemical(
    p: _Parser, name: str, node: yamlsrc.Node, kloc: Location, file: str
) -> dict[str, Any] | None:
    from sim import chemistry

    what = f"chemicals.{name}"
    if not isinstance(node, yamlsrc.Map):
        p.err(f"{what}: expected a mapping (role, state, molar_mass, ...)", node.loc)
        return None
    n_before = len(p.d.errors)
    p.keys(node, _CHEM_KEYS, what)
    shipped = chemistry.catalogue().get(name)
    role = p.choice(node.get("role"), ROLES, f"{what}.role")
    state = p.choice(node.get("state"), STATES, f"{what}.state")
    if shipped is None:
        for key in ("role", "state", "molar_mass"):
            p.need(node, key, what)
    role = role or (shipped.role.value if shipped else None)
    state = state or (shipped.state.value if shipped else None)
    mass = p.quantity(node.get("molar_mass"), Kind.MOLAR_MASS, f"{what}.molar_mass", MOLAR_MASS)
    src_t = p.quantity(
        node.get("source_T"), Kind.TEMPERATURE, f"{what}.source_T", SOURCE_TEMPERATURE
    )
    hazards = p.words(node.get("hazards"), f"{what}.hazards")
    if hazards is not None:
        from aldctl.hazards import CLASSES

        hz = node.get("hazards")
        for h in hazards:
            if h not in CLASSES and isinstance(hz, yamlsrc.Seq):
                p.err(
                    f"{what}.hazards: unknown hazard class '{h}'",
                    hz.loc,
                    did_you_mean(h, CLASSES) or "classes: " + ", ".join(CLASSES),
                )
    spec: dict[str, Any] = {}
    if shipped is not None:  # replace only what the lab gives
        spec = _shipped_chemical_spec(shipped)
    spec["origin"] = file
    spec["formula"] = p.text(node.get("formula"), f"{what}.formula") or spec.get("formula", name)
    spec["name"] = p.text(node.get("name"), f"{what}.name") or spec.get("name", name)
    if role:
        spec["role"] = role
    if state:
        spec["state"] = state
    if mass is not None:
        spec["mass"] = mass
    element = p.text(node.get("element"), f"{what}.element")
    if element is not None:
        spec["element"] = element
    elif role == "precursor" and "element" not in spec:
        p.err(
            f"{what}: a precursor names the element it brings to the film ('element: Hf')",
            kloc,
        )
    if hazards is not None:
        spec["hazards"] = hazards
    spec.setdefault("hazards", [])
    gas = p.text(node.get("gas"), f"{what}.gas")
    if gas is not None:
        spec["gas"] = gas
    elif role == "plasma" and "gas" not in spec:
        p.err(f"{what}: a plasma chemical names its feed gas ('gas: O2')", kloc)
    if src_t is not None:
        spec["source_T"] = src_t
        spec["source_T_from"] = "data"
    vap = node.get("vapour")
    if vap is not None:
        curve = _vapour(p, vap, what)
        if curve is not None:
            spec["vapour"] = curve
            spec["vapour_assumed"] = False
    elif state in ("liquid", "solid") and "vapour" not in spec:
        if src_t is None and node.get("source_T") is not None:
            pass  # source_T itself is wrong, and said so at its line
        elif src_t is None:
            p.err(
                f"{what}: a {state} source needs its vapour pressure: 'vapour:' (points or "
                "a curve) or at least 'source_T:'",
                kloc,
                "vapour: [{T: 75 degC, p: 0.1 Torr}, {T: 100 degC, p: 0.5 Torr}]",
            )
        else:
            spec["vapour"] = {"ref": [_ASSUMED_P_TORR, src_t, _ASSUMED_DH_KJ]}
            spec["vapour_assumed"] = True
    if state == "gas":
        spec.pop("vapour", None)
    dec = node.get("decomposition")
    if dec is not None:
        d = _decomposition(p, dec, what)
        if d is not None:
            spec["decomposition"] = d
    source = p.text(node.get("source"), f"{what}.source")
    if source is not None:
        spec["source"] = source
    return spec if len(p.d.errors) == n_before else None


def _shipped_chemical_spec(c: Any) -> dict[str, Any]:
    from sim import chemistry

    spec: dict[str, Any] = {
        "formula": c.formula,
        "name": c.long_name,
        "role": c.role.value,
        "state": c.state.value,
        "mass": c.molar_mass,
        "hazards": list(c.hazards),
    }
    if c.element:
        spec["element"] = c.element
    if c.feed_gas:
        spec["gas"] = c.feed_gas
    if c.source_t_min is not None:
        spec["source_T"] = c.source_t_min
        spec["source_T_from"] = "assumed" if c.source_t_assumed else "data"
    if c.vapour is not None:
        v: chemistry.VapourPressure = c.vapour
        spec["vapour"] = {"antoine": [v.a, v.b, v.c]} if v.celsius else {"cc": [v.a, v.b]}
        spec["vapour_assumed"] = c.vapour_assumed
    if c.decomposition_onset_c is not None:
        spec["decomposition"] = {
            "onset": c.decomposition_onset_c,
            "from": c.decomposition_from,
            "note": c.decomposition_note,
        }
    return spec


def _vapour(p: _Parser, node: yamlsrc.Node, what: str) -> dict[str, list[float]] | None:
    where = f"{what}.vapour"
    if isinstance(node, yamlsrc.Map):
        p.keys(node, ("antoine", "cc"), where)
        for form, n_coef in (("antoine", 3), ("cc", 2)):
            sub = node.get(form)
            if sub is None:
                continue
            if not isinstance(sub, yamlsrc.Seq) or len(sub) != n_coef:
                p.err(f"{where}.{form}: expected {n_coef} numbers", sub.loc)
                return None
            coefs = [p.number(n, f"{where}.{form}", positive=False) for n in sub]
            if any(c is None for c in coefs):
                return None
            curve = {form: [float(c) for c in coefs if c is not None]}
            return curve if _curve_ok(p, curve, sub, where) else None
        p.err(f"{where}: expected points or {{antoine: [A, B, C]}} or {{cc: [A, B]}}", node.loc)
        return None
    if not isinstance(node, yamlsrc.Seq) or len(node) < 2:
        p.err(
            f"{where}: give two or more points [{{T: ..., p: ...}}, ...] (log p is fitted "
            "linear in 1/T), or {antoine: [A, B, C]} (log10 Torr, degC), or {cc: [A, B]}",
            node.loc,
        )
        return None
    pts: list[tuple[float, float]] = []
    for item in node:
        if not isinstance(item, yamlsrc.Map):
            p.err(f"{where}: each point is {{T: 75 degC, p: 0.1 Torr}}", item.loc)
            continue
        p.keys(item, ("T", "p"), where)
        t = p.quantity(p.need(item, "T", where), Kind.TEMPERATURE, f"{where}.T")
        pr = p.quantity(p.need(item, "p", where), Kind.PRESSURE, f"{where}.p", VAPOUR_PRESSURE)
        if t is not None and pr is not None:
            pts.append((t, pr))
    if len(pts) < len(node):
        return None
    xs = [1.0 / (t + 273.15) for t, _ in pts]
    ys = [math.log10(pr) for _, pr in pts]
    if len(set(xs)) < 2:
        p.err(f"{where}: the points need two different temperatures", node.loc)
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    if slope >= 0:
        p.err(f"{where}: vapour pressure must rise with temperature", node.loc)
        return None
    curve = {"cc": [my - slope * mx, -slope]}
    return curve if _curve_ok(p, curve, node, where) else None


_LOG10_P_RANGE = (-300.0, 12.0)
"""log10(p/Torr) a curve may reach over the source temperatures: beyond, 10**x overflows
a float or underflows to 0, and no vapour is denser than 1e12 Torr."""


def _curve_ok(p: _Parser, curve: dict[str, list[float]], node: yamlsrc.Node, where: str) -> bool:
    """The curve rises with temperature and stays a number over every temperature a source
    can have (-100 .. 500 degC): the simulator evaluates it there."""
    if "antoine" in curve:
        a, b, c = curve["antoine"]
        if c + SOURCE_T_LO_C <= 0:
            p.err(
                f"{where}.antoine: C = {c:g} puts the curve's pole (T = -C) inside the "
                f"source temperatures {SOURCE_T_LO_C:g} .. {SOURCE_T_HI_C:g} degC",
                node.loc,
                "Antoine's C (T in degC) is typically 150-270; check the form: "
                "{antoine: [A, B, C]} is log10(p/Torr) = A - B/(C + T/degC)",
            )
            return False

        def log_p(t: float) -> float:
            return a - b / (c + t)
    else:
        a, b = curve["cc"]

        def log_p(t: float) -> float:
            return a - b / (t - ABS_ZERO_C)

    if b <= 0:
        p.err(
            f"{where}: B = {b:g}: vapour pressure must rise with temperature (B > 0)",
            node.loc,
            "log10(p/Torr) = A - B/T: B is positive",
        )
        return False
    lo, hi = _LOG10_P_RANGE
    for t in (SOURCE_T_LO_C, SOURCE_T_HI_C):
        x = log_p(t)
        if not lo <= x <= hi:
            p.err(
                f"{where}: the curve gives 10**{x:.1f} Torr at {t:g} degC (a source's "
                f"temperatures are {SOURCE_T_LO_C:g} .. {SOURCE_T_HI_C:g} degC)",
                node.loc,
                "a vapour pressure curve stays between 1e-300 and 1e12 Torr there; check A "
                "and B (log10 of Torr, T in K for cc, in degC for antoine)",
            )
            return False
    return True


def _decomposition(p: _Parser, node: yamlsrc.Node, what: str) -> dict[str, Any] | None:
    where = f"{what}.decomposition"
    if not isinstance(node, yamlsrc.Map):
        p.err(f"{where}: expected {{onset: 275 degC, from: literature, note: ...}}", node.loc)
        return None
    p.keys(node, ("onset", "from", "note"), where)
    onset = p.quantity(
        p.need(node, "onset", where), Kind.TEMPERATURE, f"{where}.onset", DECOMPOSITION_ONSET
    )
    origin = p.choice(p.need(node, "from", where), ORIGINS, f"{where}.from")
    note = p.text(node.get("note"), f"{where}.note") or ""
    if origin in ("literature", "measured") and not note:
        p.err(f"{where}: say where the onset comes from in 'note:'", node.loc)
    if onset is None or origin is None:
        return None
    return {"onset": onset, "from": origin, "note": note}


_PROC_KEYS = (
    "film",
    "kind",
    "half_reactions",
    "subcycles",
    "phase",
    "window",
    "gpc",
    "gpc_vs_ratio",
    "T",
    "interaction",
    "substrate_limit",
    "source",
    "note",
)


def _points(
    p: _Parser, node: yamlsrc.Node | None, where: str, value_key: str = "value"
) -> list[dict[str, float]] | None:
    if node is None:
        return None
    if not isinstance(node, yamlsrc.Seq) or len(node) == 0:
        p.err(f"{where}: expected a list of {{T: 250 degC, {value_key}: 1.0 angstrom}}", node.loc)
        return None
    out: list[dict[str, float]] = []
    for item in node:
        if not isinstance(item, yamlsrc.Map):
            p.err(f"{where}: each point is {{T: 250 degC, {value_key}: 1.0 angstrom}}", item.loc)
            continue
        p.keys(item, ("T", value_key), where)
        t = p.quantity(p.need(item, "T", where), Kind.TEMPERATURE, f"{where}.T")
        g = p.quantity(p.need(item, value_key, where), Kind.GROWTH, f"{where}.{value_key}", GROWTH)
        if t is not None and g is not None:
            out.append({"T": t, value_key: g})
    ts = [pt["T"] for pt in out]
    if len(set(ts)) != len(ts):
        p.err(f"{where}: two points at the same temperature", node.loc)
        return None
    return out if len(out) == len(node) else None


def _phase(
    p: _Parser, node: yamlsrc.Node, where: str, pid: str, phases: set[str], out: UserChemistry
) -> str | None:
    if isinstance(node, yamlsrc.Scalar):
        name = str(node.value)
        if name not in phases and name not in out.phases:
            p.err(
                f"{where}: no film phase '{name}'",
                node.loc,
                did_you_mean(name, [*phases, *out.phases])
                or "describe it: {formula: HfO2, density: 9.7 g/cm**3, molar_mass: "
                "210.5 g/mol, cations: {Hf: 1}}",
            )
            return None
        return name
    if not isinstance(node, yamlsrc.Map):
        p.err(f"{where}: a phase name or {{formula, density, molar_mass, cations}}", node.loc)
        return None
    p.keys(node, ("formula", "density", "molar_mass", "cations"), where)
    formula = p.text(p.need(node, "formula", where), f"{where}.formula")
    dens = p.quantity(p.need(node, "density", where), Kind.DENSITY, f"{where}.density", DENSITY)
    mm = p.quantity(
        p.need(node, "molar_mass", where), Kind.MOLAR_MASS, f"{where}.molar_mass", MOLAR_MASS
    )
    cat = p.need(node, "cations", where)
    cations: dict[str, float] = {}
    if isinstance(cat, yamlsrc.Map):
        for k, v in cat.entries:
            n = p.number(v, f"{where}.cations.{k.value}", rng=CATIONS)
            if n is not None:
                cations[str(k.value)] = n
    elif cat is not None:
        p.err(f"{where}.cations: expected {{element: count}}, like {{Hf: 1}}", cat.loc)
    if formula is None or dens is None or mm is None or not cations:
        return None
    name = f"{pid}:{formula}"
    out.phases[name] = {
        "formula": formula,
        "density": dens,
        "molar_mass": mm,
        "cations": cations,
    }
    return name


def _doses(
    p: _Parser,
    node: yamlsrc.Node | None,
    where: str,
    known: set[str],
    roles: dict[str, str],
) -> list[str] | None:
    names = p.words(node, where)
    if names is None or node is None:
        return None
    ok = True
    for n in names:
        if n not in known:
            p.err(
                f"{where}: unknown chemical '{n}'",
                node.loc,
                (did_you_mean(n, known) + "; " if did_you_mean(n, known) else "")
                + "add it under 'chemicals:' in this file",
            )
            ok = False
    if ok and not any(roles.get(n) == "precursor" for n in names):
        p.err(f"{where}: no precursor among {', '.join(names)}", node.loc)
        ok = False
    return names if ok else None


def _process(
    p: _Parser,
    pid: str,
    node: yamlsrc.Node,
    kloc: Location,
    known: set[str],
    roles: dict[str, str],
    phases: set[str],
    out: UserChemistry,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    from sim import library

    what = f"processes.{pid}"
    if not isinstance(node, yamlsrc.Map):
        p.err(f"{what}: expected a mapping (film, half_reactions, gpc, ...)", node.loc)
        return None
    n_before = len(p.d.errors)
    p.keys(node, _PROC_KEYS, what)
    shipped = library.shipped_spec(pid)
    spec: dict[str, Any]
    params: dict[str, Any]
    if shipped is not None:
        spec, params = shipped
        spec.pop("gpc_value", None) if "gpc" in node or "gpc_vs_ratio" in node else None
    else:
        spec, params = {"id": pid}, {}
        for key in ("film", "phase"):
            if key not in node and not (key == "phase" and "subcycles" in node):
                p.err(f"{what}: missing '{key}'", node.loc)
        if "half_reactions" not in node and "subcycles" not in node:
            p.err(
                f"{what}: say what it doses: 'half_reactions: [TEMAHf, H2O]' or "
                "'subcycles: {...}'",
                node.loc,
            )
        if "gpc" not in node and "gpc_vs_ratio" not in node and "subcycles" not in node:
            p.err(f"{what}: missing 'gpc' (growth per cycle vs temperature)", node.loc)
    spec["origin"] = p.file
    film = p.text(node.get("film"), f"{what}.film")
    if film:
        spec["film"] = film
    kind = p.choice(node.get("kind"), KINDS, f"{what}.kind")
    spec["kind"] = kind or spec.get("kind", "supercycle" if "subcycles" in node else "thermal")
    hr = node.get("half_reactions")
    if hr is not None:
        doses = _doses(p, hr, f"{what}.half_reactions", known, roles)
        if doses is not None:
            spec["half_reactions"] = doses
    ph = node.get("phase")
    if ph is not None:
        name = _phase(p, ph, f"{what}.phase", pid, phases, out)
        if name:
            params["phase"] = name
    win = node.get("window")
    if win is not None:
        if not isinstance(win, yamlsrc.Seq) or len(win) != 2:
            p.err(f"{what}.window: expected [low, high], like [200 degC, 300 degC]", win.loc)
        else:
            lo, hi = (p.quantity(n, Kind.TEMPERATURE, f"{what}.window") for n in win)
            if lo is not None and hi is not None:
                if lo >= hi:
                    p.err(f"{what}.window: low must be below high", win.loc)
                else:
                    spec["window"] = [lo, hi]
    gpc = _points(p, node.get("gpc"), f"{what}.gpc")
    if gpc is not None:
        if "subcycles" in spec or "subcycles" in node:
            spec["gpc"] = gpc
        else:
            spec["gpc"] = gpc
            params.pop("assumed_gpc", None)
    t_node = node.get("T")
    if t_node is not None:
        t = p.quantity(t_node, Kind.TEMPERATURE, f"{what}.T")
        if t is not None:
            spec["T"] = t
    subs = node.get("subcycles")
    if subs is not None:
        _subcycles(p, subs, what, known, roles, phases, out, spec, params)
    gvr = node.get("gpc_vs_ratio")
    if gvr is not None:
        _ratio_points(p, gvr, what, spec)
    inter = node.get("interaction")
    if inter is not None:
        _interaction(p, inter, what, spec, params)
    lim = node.get("substrate_limit")
    if lim is not None:
        if not isinstance(lim, yamlsrc.Map):
            p.err(f"{what}.substrate_limit: expected {{Li-metal: 150 degC}}", lim.loc)
        else:
            spec["substrate_limit"] = {
                str(k.value): q
                for k, v in lim.entries
                if (q := p.quantity(v, Kind.TEMPERATURE, f"{what}.substrate_limit")) is not None
            }
    for key in ("source", "note"):
        t2 = p.text(node.get(key), f"{what}.{key}")
        if t2 is not None:
            spec[key] = t2
    if "source" not in spec and shipped is None:
        p.err(
            f"{what}: say where the growth figures come from in 'source:' (a paper, your "
            "ellipsometry of date ...)",
            kloc,
        )
    if len(p.d.errors) != n_before:
        return None
    return spec, params


def _subcycles(
    p: _Parser,
    node: yamlsrc.Node,
    what: str,
    known: set[str],
    roles: dict[str, str],
    phases: set[str],
    out: UserChemistry,
    spec: dict[str, Any],
    params: dict[str, Any],
) -> None:
    where = f"{what}.subcycles"
    if not isinstance(node, yamlsrc.Map) or len(node) < 2:
        p.err(
            f"{where}: two or more named subcycles, each {{doses: [...], phase: ..., gpc: "
            "[{T: ..., gpc: ...}]}} (growth per subcycle)",
            node.loc,
        )
        return
    subs: dict[str, list[str]] = {}
    cycles: dict[str, Any] = {}
    for k, v in node.entries:
        w = f"{where}.{k.value}"
        if not isinstance(v, yamlsrc.Map):
            p.err(f"{w}: expected {{doses, phase, gpc}}", v.loc)
            continue
        p.keys(v, ("doses", "phase", "gpc"), w)
        doses = _doses(p, p.need(v, "doses", w), f"{w}.doses", known, roles)
        ph_node = p.need(v, "phase", w)
        ph = _phase(p, ph_node, f"{w}.phase", str(k.value), phases, out) if ph_node else None
        pts = _points(p, p.need(v, "gpc", w), f"{w}.gpc", "gpc")
        if doses is not None and ph is not None and pts is not None:
            subs[str(k.value)] = doses
            cycles[str(k.value)] = {"phase": ph, "gpc": pts}
    spec["subcycles"] = subs
    params["cycles"] = cycles
    params.pop("range_ratios", None)
    spec.pop("gpc_range", None)
    spec.pop("gpc_value", None)
    if "gpc" in spec:
        params.setdefault("check_ratio", dict.fromkeys(subs, 1))


def _ratio_points(p: _Parser, node: yamlsrc.Node, what: str, spec: dict[str, Any]) -> None:
    where = f"{what}.gpc_vs_ratio"
    if not isinstance(node, yamlsrc.Seq):
        p.err(f"{where}: a list of {{ratio: {{A: 1, B: 3}}, value: 4.2 angstrom}}", node.loc)
        return
    pts: list[dict[str, Any]] = []
    for item in node:
        if not isinstance(item, yamlsrc.Map):
            p.err(f"{where}: each item is {{ratio: {{A: 1, B: 3}}, value: ...}}", item.loc)
            continue
        p.keys(item, ("ratio", "value", "per"), where)
        r = p.need(item, "ratio", where)
        ratio: dict[str, int] = {}
        if isinstance(r, yamlsrc.Map):
            for k, v in r.entries:
                n = p.number(v, f"{where}.ratio.{k.value}", rng=RATIO)
                if n is not None and n != int(n):
                    p.err(
                        f"{where}.ratio.{k.value}: '{n:g}' is not a whole number", v.loc, RATIO.hint
                    )
                elif n is not None:
                    ratio[str(k.value)] = int(n)
            if not r.entries:
                p.err(f"{where}.ratio: name at least one subcycle, like {{A: 1, B: 3}}", r.loc)
        elif r is not None:
            p.err(f"{where}.ratio: expected {{A: 1, B: 3}} (subcycle: count)", r.loc)
        per = p.choice(item.get("per"), ("cycle", "supercycle"), f"{where}.per") or "supercycle"
        g = p.quantity(
            p.need(item, "value", where),
            Kind.GROWTH,
            f"{where}.value",
            GROWTH if per == "cycle" else SUPERCYCLE_GROWTH,
        )
        if ratio and g is not None:
            pts.append({"ratio": ratio, "value": g, "per": per})
    spec["gpc_vs_ratio"] = pts


def _interaction(
    p: _Parser, node: yamlsrc.Node, what: str, spec: dict[str, Any], params: dict[str, Any]
) -> None:
    where = f"{what}.interaction"
    if not isinstance(node, yamlsrc.Map):
        p.err(f"{where}: expected {{'SiO2 after Li2O': 1.5}}", node.loc)
        return
    out: dict[str, float] = {}
    for k, v in node.entries:
        kind, sep, prev = str(k.value).partition(" after ")
        n = p.number(v, f"{where}.{k.value}", rng=INTERACTION)
        if not sep:
            p.err(f"{where}: write the key as 'KIND after PREVIOUS'", k.loc)
        elif n is not None:
            out[f"{kind.strip()}|{prev.strip()}"] = n
    params["interaction"] = out
