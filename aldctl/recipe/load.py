"""Recipe loader: YAML text -> :class:`~aldctl.recipe.model.Recipe`, every error located.

The loader walks the located YAML tree once and keeps going after an error, so a user sees
every problem of a file in one run (``file:line:col: error: message (hint: ...)``). Whole-
scalar parameter references (``$T``) are replaced by the parameter's text before the value
is parsed for the field that uses it, so ``T: 225 degC`` can feed a temperature and
``cycles: 100`` a count, and ``--set`` overrides follow the same path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import yaml

from aldctl import units, yamlsrc
from aldctl.diagnostics import (
    Diagnostic,
    Diagnostics,
    Location,
    UserError,
    did_you_mean,
    neutralise,
    unknown_key,
)
from aldctl.recipe import model as m
from aldctl.units import Kind, UnitError
from aldctl.yamlsrc import Map, Node, Scalar, Seq
from sim import library

MAX_REPEAT = 1_000_000
"""Largest repetition count one loop may ask for (a 15 ms/5 s cycle: ~120 days)."""
MAX_INCLUDE_DEPTH = 16
MAX_INCLUDES = 256
"""Included documents in one load, counting each inclusion: a file including the previous one
four times, nine deep, is 4^9 of them (the include form of "billion laughs")."""


@dataclass
class _IncludeBudget:
    """Shared by every file of one load: included documents, and values in them (bounded
    like one document's alias expansion, :data:`yamlsrc.MAX_NODES`)."""

    documents: int = 0
    values: int = 0
    spent: bool = False


MAX_NAME_BYTES = 255
"""Longest file name (one path component) Linux allows."""
ROOTS_ENV = "ALDCTL_RECIPE_PATH"
"""Directories (``:``-separated) besides the recipe's own that ``include:`` may read from."""
_RECIPE_SUFFIXES = (".yaml", ".yml")

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOP_KEYS = ("name", "description", "params", "substrate", "setup", "cycles", "main", "teardown")


class _Where(Enum):
    SETUP = "setup"
    MAIN = "main"
    CYCLE = "cycle"
    TEARDOWN = "teardown"


_STEP_WHERE: dict[str, tuple[_Where, ...]] = {
    "pulse": (_Where.SETUP, _Where.MAIN, _Where.CYCLE),
    "purge": (_Where.SETUP, _Where.MAIN, _Where.CYCLE, _Where.TEARDOWN),
    "expose": (_Where.SETUP, _Where.MAIN, _Where.CYCLE),
    "plasma": (_Where.SETUP, _Where.MAIN, _Where.CYCLE),
    "set": tuple(_Where),
    "ramp": tuple(_Where),
    "wait": tuple(_Where),
    "wait_until": tuple(_Where),
    "repeat": tuple(_Where),
    "every": (_Where.CYCLE,),
    "cycle": (_Where.MAIN,),
    "supercycle": (_Where.MAIN,),
    "include": (_Where.MAIN,),
}
_WHERE_HINT = {
    "every": "'every' belongs inside a cycle under 'cycles:'",
    "cycle": "run cycles from 'main:'",
    "supercycle": "run supercycles from 'main:'",
    "include": "include other recipes from 'main:'",
}


@dataclass(frozen=True, slots=True)
class Loaded:
    recipe: m.Recipe
    diagnostics: tuple[Diagnostic, ...]
    """Warnings (errors raise UserError instead)."""


def parse_overrides(
    pairs: list[str] | tuple[str, ...],
) -> dict[str, str | int | float | bool | None]:
    """``["T=250 degC", "cycles=1000"]`` -> values, read as YAML scalars (1000 is an int)."""
    out: dict[str, str | int | float | bool | None] = {}
    diags = Diagnostics()
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or not _PARAM_NAME.match(name):
            diags.error(f"--set {pair!r}: expected NAME=VALUE", hint="e.g. --set cycles=1000")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw.strip()
        if not isinstance(value, str | int | float | bool | type(None)):
            value = raw.strip()
        # As recipe text is (yamlsrc): a value reaches terminals and the journal.
        out[name] = neutralise(value) if isinstance(value, str) else value
    diags.raise_if_errors()
    return out


def load_recipe(
    path: Path | str,
    overrides: Mapping[str, str | int | float | bool | None] | None = None,
) -> Loaded:
    """Load and check a recipe file; raise UserError listing every problem."""
    diags = Diagnostics()
    recipe = _load(
        Path(path), dict(overrides or {}), (), diags, check_overrides=True, budget=_IncludeBudget()
    )
    diags.raise_if_errors()
    assert recipe is not None
    return Loaded(recipe, tuple(diags))


def _load(
    path: Path,
    overrides: dict[str, str | int | float | bool | None],
    stack: tuple[Path, ...],
    diags: Diagnostics,
    check_overrides: bool,
    budget: _IncludeBudget,
) -> m.Recipe | None:
    try:
        text = yamlsrc.read_source(path)
        tree = yamlsrc.parse_text(text, str(path))
    except UserError as exc:
        diags.extend(exc.diagnostics)
        return None
    budget.values += yamlsrc.count_nodes(tree)
    if not yamlsrc.is_document_of(tree, _TOP_KEYS):
        # Say nothing of what the file holds: it may be /etc/shadow, reached by mistake.
        diags.extend(
            yamlsrc.not_a_document(
                str(path),
                "a recipe",
                "a recipe is a YAML mapping with 'main:' and optional 'name:', "
                "'params:', 'substrate:', 'setup:', 'cycles:', 'teardown:'",
            ).diagnostics
        )
        return None
    return _Parser(path, text, overrides, stack, diags, budget).recipe(tree, check_overrides)


def include_roots(recipe: Path) -> tuple[Path, ...]:
    """Where a recipe's includes may come from: its own directory; the working directory,
    when the recipe lies inside it (a project's `recipes/` next to its `tests/recipes/`);
    and the directories of ``$ALDCTL_RECIPE_PATH``."""
    top = recipe.resolve()
    roots = [top.parent]
    with contextlib.suppress(OSError):
        cwd = Path.cwd().resolve()
        if top.is_relative_to(cwd) and cwd != Path(cwd.anchor):
            roots.append(cwd)
    for part in os.environ.get(ROOTS_ENV, "").split(os.pathsep):
        if part.strip():
            roots.append(Path(part).expanduser().resolve())
    return tuple(roots)


class _Parser:
    def __init__(
        self,
        path: Path,
        text: str,
        overrides: dict[str, str | int | float | bool | None],
        stack: tuple[Path, ...],
        diags: Diagnostics,
        budget: _IncludeBudget,
    ) -> None:
        self.budget = budget
        self.path = path
        self.file = str(path)
        self.text = text
        self.overrides = overrides
        self.stack = (*stack, path.resolve())
        self.roots = include_roots(Path(self.stack[0]))
        self.d = diags
        self.params: dict[str, m.Param] = {}
        self.used: set[str] = set()
        self.cycle_names: set[str] = set()
        self.includes: list[Path] = []
        self.param_origin: dict[Location, str] = {}

    # ------------------------------------------------------------------ helpers

    def err(self, msg: str, loc: Location, hint: str = "") -> None:
        origin = self.param_origin.get(loc)
        if origin:
            msg = f"{msg} (from parameter ${origin})"
        self.d.error(msg, loc, hint)

    def resolve(self, node: Node) -> Node:
        """Replace a ``$name`` scalar by its parameter's value (located at the use site)."""
        if isinstance(node, Scalar) and isinstance(node.value, str) and node.value.startswith("$"):
            name = node.value[1:]
            param = self.params.get(name)
            if param is None:
                self.err(
                    f"unknown parameter ${name}",
                    node.loc,
                    did_you_mean(name, self.params) or "declare it under 'params:'",
                )
                return Scalar(None, node.loc, node.text)
            self.used.add(name)
            self.param_origin[node.loc] = name
            return Scalar(param.raw, node.loc, str(param.raw))
        return node

    def mapping(
        self, node: Node, what: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> Map | None:
        if not isinstance(node, Map):
            self.err(f"{what} must be a mapping of {', '.join(allowed)}", node.loc)
            return None
        for key, _ in node.entries:
            if str(key.value) not in allowed:
                self.err(
                    f"{unknown_key(key.value)} in {what}",
                    key.loc,
                    did_you_mean(str(key.value), allowed),
                )
        for need in required:
            if need not in node:
                self.err(f"{what} needs '{need}'", node.loc)
        return node

    def quantity(
        self,
        node: Node | None,
        kind: Kind,
        what: str,
        *,
        positive: bool = True,
        allow_zero: bool = False,
    ) -> float | None:
        if node is None:
            return None
        node = self.resolve(node)
        if not isinstance(node, Scalar):
            self.err(f"{what} must be a {kind.label} like '{kind.example}'", node.loc)
            return None
        if node.value is None:
            if node.text and not node.text.startswith("$"):
                self.err(f"{what} is empty", node.loc, f"write e.g. '{kind.example}'")
            return None
        try:
            value = units.parse_value(node.value, kind)
        except UnitError as exc:
            self.err(f"{what}: {exc.message}", node.loc, exc.hint)
            return None
        if positive and (value < 0 or (value == 0 and not allow_zero)):
            self.err(
                f"{what} must be {'>= 0' if allow_zero else 'positive'}, got '{node.text}'",
                node.loc,
            )
            return None
        return value

    def time_s(self, node: Node | None, what: str, *, allow_zero: bool = False) -> float | None:
        v = self.quantity(node, Kind.TIME, what, allow_zero=allow_zero)
        if v is not None and v > 366 * 86400:
            self.err(f"{what} of '{self._text(node)}' is longer than a year", self._loc(node))
            return None
        return v

    @staticmethod
    def _loc(node: Node | None) -> Location:
        assert node is not None
        return node.loc

    @staticmethod
    def _text(node: Node | None) -> str:
        return node.text if isinstance(node, Scalar) else "?"

    def count(self, node: Node | None, what: str, lo: int = 1, hi: int = MAX_REPEAT) -> int | None:
        if node is None:
            return None
        node = self.resolve(node)
        if not isinstance(node, Scalar) or node.value is None:
            self.err(f"{what} must be a whole number", node.loc)
            return None
        v = node.value
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(
                f"{what} must be a whole number, got '{node.text}'",
                node.loc,
                "counts have no unit" if isinstance(v, str) else "",
            )
            return None
        if v < lo:
            self.err(f"{what} must be at least {lo}, got {v}", node.loc)
            return None
        if v > hi:
            self.err(
                f"{what} of {v:,} exceeds the limit of {hi:,}",
                node.loc,
                "split the run into several recipes or check for a typo",
            )
            return None
        return v

    def word(self, node: Node | None, what: str) -> str | None:
        if node is None:
            return None
        node = self.resolve(node)
        if (
            not isinstance(node, Scalar)
            or not isinstance(node.value, str)
            or not node.value.strip()
        ):
            self.err(f"{what} must be a name", node.loc)
            return None
        return node.value.strip()

    # ------------------------------------------------------------------ top level

    def recipe(self, tree: Node | None, check_overrides: bool) -> m.Recipe | None:
        if tree is None:
            self.err(
                "empty recipe",
                Location(self.file, 1, 1),
                "a recipe needs at least 'main:' (see README, Recipe language)",
            )
            return None
        if not isinstance(tree, Map):
            self.err(
                "a recipe is a YAML mapping with 'main:' and optional 'name:', 'params:', "
                "'setup:', 'cycles:', 'teardown:'",
                tree.loc,
            )
            return None
        for key, _ in tree.entries:
            if str(key.value) not in _TOP_KEYS:
                self.err(
                    unknown_key(key.value).replace("key", "top-level key", 1),
                    key.loc,
                    did_you_mean(str(key.value), _TOP_KEYS),
                )
        self._params(tree.get("params"), check_overrides)
        name_node = tree.get("name")
        title = (
            str(name_node.value)
            if isinstance(name_node, Scalar) and name_node.value
            else self.path.stem
        )
        desc_node = tree.get("description")
        desc = str(desc_node.value) if isinstance(desc_node, Scalar) and desc_node.value else ""
        substrate = self._substrate(tree.get("substrate"))

        cycles_node = tree.get("cycles")
        if isinstance(cycles_node, Map):
            self.cycle_names = set(cycles_node.keys())
        cycles = self._cycles(cycles_node)
        setup = self.steps(tree.get("setup"), _Where.SETUP, "setup")
        main_node = tree.get("main")
        if main_node is None:
            self.err(
                "recipe has no 'main:' section",
                tree.loc,
                "add 'main:' with the cycles to run, e.g. '- cycle: {name: X, repeat: 100}'",
            )
        main = self.steps(main_node, _Where.MAIN, "main")
        teardown = self.steps(tree.get("teardown"), _Where.TEARDOWN, "teardown")
        for pname, param in self.params.items():
            if pname not in self.used and not param.overridden:
                self.d.warning(f"parameter ${pname} is never used", param.loc)
        for cname, cyc in cycles.items():
            if not _uses_cycle(main, cname) and not _uses_cycle(setup, cname):
                self.d.warning(f"cycle '{cname}' is defined but never run", cyc.loc)
        return m.Recipe(
            name=title,
            description=desc,
            path=self.path,
            text=self.text,
            params=self.params,
            substrate=substrate,
            setup=setup,
            cycles=cycles,
            main=main,
            teardown=teardown,
            includes=tuple(self.includes),
        )

    def _params(self, node: Node | None, check_overrides: bool) -> None:
        if node is not None:
            if not isinstance(node, Map):
                self.err("'params' must be a mapping of name: value", node.loc)
            else:
                for key, val in node.entries:
                    pname = str(key.value)
                    if not _PARAM_NAME.match(pname):
                        self.err(f"parameter name '{pname}' is not a plain identifier", key.loc)
                        continue
                    if not isinstance(val, Scalar):
                        self.err(f"parameter ${pname} must be a single value", val.loc)
                        continue
                    self.params[pname] = m.Param(pname, val.value, val.loc)
        for oname, raw in self.overrides.items():
            if oname in self.params:
                old = self.params[oname]
                self.params[oname] = m.Param(oname, raw, old.loc, overridden=True)
            elif check_overrides:
                hint = did_you_mean(oname, self.params) or (
                    "this recipe has parameters: " + ", ".join(sorted(self.params))
                    if self.params
                    else "this recipe has no parameters"
                )
                self.d.error(
                    f"--set {oname}=...: recipe {self.file} has no parameter '{oname}'", hint=hint
                )

    def _substrate(self, node: Node | None) -> m.Substrate | None:
        if node is None:
            return None
        if isinstance(node, Scalar):
            name = self._material(node, "substrate")
            return m.Substrate(name, None, node.loc) if name else None
        mp = self.mapping(node, "substrate", ("material", "max_temperature"), ("material",))
        if mp is None:
            return None
        material = (
            self._material(
                mp.get("material"), "substrate material", declared="max_temperature" in mp
            )
            or "unknown"
        )
        tmax = self.quantity(
            mp.get("max_temperature"), Kind.TEMPERATURE, "substrate max_temperature", positive=False
        )
        return m.Substrate(material, tmax, mp.loc)

    def _material(self, node: Node | None, what: str, *, declared: bool = False) -> str | None:
        """A substrate material from the process library's closed vocabulary.

        The library's materials carry temperature limits (Li-metal: 150 degC), so spelling
        must not drop one: case, width (NFKC), separators, the library's aliases and words
        naming a form are ignored (``lithium``, ``Li foil``, ``li_metal_anode`` are
        Li-metal). Any other material is an error with "did you mean", unless the recipe
        ``declared`` it with its own ``max_temperature``; even then a name that is close to,
        or has a word naming, a substrate with a limit (``Li ribbon``) is refused."""
        name = self.word(node, what)
        if name is None or node is None:
            return name
        canonical = library.match_substrate(name)
        if canonical is not None:
            return canonical
        near = library.substrate_near_misses(name, limited_only=declared)
        if declared and not near:
            return name
        known = sorted(set(library.substrate_vocabulary().values()), key=str.casefold)
        listing = f"the process library's substrates: {', '.join(known)}"
        if declared and near:
            hint = (
                f"'{name}' reads as {near[0]}, whose limit a recipe cannot raise: write "
                f"{near[0]}, or name a different material so it cannot be taken for it"
            )
        elif near:
            hint = f"did you mean '{near[0]}'? ({listing})"
        else:
            hint = (
                f"{listing}; declare another material with its limit: "
                f"substrate: {{material: {name}, max_temperature: 300 degC}}"
            )
        self.err(f"unknown {what} '{name}'", node.loc, hint)
        return None

    def _cycles(self, node: Node | None) -> dict[str, m.Cycle]:
        out: dict[str, m.Cycle] = {}
        if node is None:
            return out
        if not isinstance(node, Map):
            self.err("'cycles' must map cycle names to step lists", node.loc)
            return out
        for key, body in node.entries:
            name = str(key.value)
            steps = self.steps(body, _Where.CYCLE, f"cycle '{name}'")
            if isinstance(body, Seq) and not body.items:
                self.err(f"cycle '{name}' has no steps", key.loc)
            out[name] = m.Cycle(name, steps, key.loc)
        return out

    # ------------------------------------------------------------------ steps

    def steps(self, node: Node | None, where: _Where, what: str) -> tuple[m.Step, ...]:
        if node is None:
            return ()
        if not isinstance(node, Seq):
            self.err(
                f"{what} must be a list of steps ('- pulse: ...')",
                node.loc,
                "start each step with '- '",
            )
            return ()
        out: list[m.Step] = []
        for item in node.items:
            step = self.step(item, where)
            if step is not None:
                out.append(step)
        return tuple(out)

    def step(self, node: Node, where: _Where) -> m.Step | None:
        if isinstance(node, Scalar) and isinstance(node.value, str) and node.value in _STEP_WHERE:
            self.err(f"step '{node.value}' needs a value", node.loc, f"write '{node.value}: ...'")
            return None
        if not isinstance(node, Map) or len(node) != 1:
            if isinstance(node, Map) and len(node) > 1:
                kinds = [k for k in node.keys() if k in _STEP_WHERE]  # noqa: SIM118 (Map.keys)
                self.err(
                    f"a step has exactly one kind; found {', '.join(node.keys())}",
                    node.loc,
                    "put each step on its own '- ' line"
                    if len(kinds) > 1
                    else "options go inside the step's mapping",
                )
            else:
                self.err("a step is a one-key mapping like '- pulse: {TMA: 15 ms}'", node.loc)
            return None
        key, value = node.entries[0]
        kind = str(key.value)
        if kind not in _STEP_WHERE:
            self.err(f"unknown step '{kind}'", key.loc, did_you_mean(kind, _STEP_WHERE))
            return None
        if where not in _STEP_WHERE[kind]:
            self.err(
                f"'{kind}' is not allowed in {where.value}", key.loc, _WHERE_HINT.get(kind, "")
            )
            return None
        handler: Callable[[Node, Location, _Where], m.Step | None] = getattr(self, f"_step_{kind}")
        return handler(value, key.loc, where)

    def _doses(self, node: Node, loc: Location, what: str) -> tuple[m.Dose, ...]:
        node = self.resolve(node)
        if not isinstance(node, Map) or not node.entries:
            self.err(f"{what} maps chemicals to times, like '{{TMA: 15 ms}}'", node.loc)
            return ()
        doses = []
        for k, v in node.entries:
            chem = str(k.value)
            t = self.time_s(v, f"{what} time of {chem}")
            if t is not None:
                doses.append(m.Dose(chem, t, k.loc))
        return tuple(doses)

    def _step_pulse(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        doses = self._doses(node, loc, "pulse")
        return m.Pulse(doses, loc) if doses else None

    def _step_purge(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        node = self.resolve(node)
        if isinstance(node, Map):
            mp = self.mapping(node, "purge", ("time", "carrier"), ("time",))
            if mp is None:
                return None
            t = self.time_s(mp.get("time"), "purge time")
            carrier = self.quantity(mp.get("carrier"), Kind.FLOW, "purge carrier flow")
            return m.Purge(t, carrier, loc) if t is not None else None
        t = self.time_s(node, "purge time")
        return m.Purge(t, None, loc) if t is not None else None

    def _step_expose(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        mp = self.mapping(node, "expose", ("dose", "hold", "pump"), ("dose", "hold"))
        if mp is None:
            return None
        dose_node = mp.get("dose")
        doses = self._doses(dose_node, loc, "expose dose") if dose_node is not None else ()
        hold = self.time_s(mp.get("hold"), "expose hold")
        pump_node = mp.get("pump")
        pump = self.time_s(pump_node, "expose pump time", allow_zero=True) if pump_node else 0.0
        if not doses or hold is None or pump is None:
            return None
        return m.Expose(doses, hold, pump, loc)

    def _step_plasma(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        keys = ("gas", "flow", "power", "time", "stabilize", "ignition_check")
        mp = self.mapping(node, "plasma", keys)
        if mp is None:
            return None
        if "gas" not in mp:
            self.err("plasma step has no gas", mp.loc, "add e.g. 'gas: O2, flow: 20 sccm'")
        if "power" not in mp:
            self.err("plasma step needs 'power'", mp.loc, "e.g. 'power: 300 W'")
        if "time" not in mp:
            self.err("plasma step needs 'time'", mp.loc, "e.g. 'time: 5 s'")
        gas = self.word(mp.get("gas"), "plasma gas")
        flow_node = mp.get("flow")
        flow = self.quantity(flow_node, Kind.FLOW, "plasma gas flow") if flow_node else 20.0
        power = self.quantity(mp.get("power"), Kind.POWER, "plasma power")
        time = self.time_s(mp.get("time"), "plasma time")
        stab_node = mp.get("stabilize")
        stab = (
            self.time_s(stab_node, "plasma stabilize time", allow_zero=True) if stab_node else 2.0
        )
        check = True
        ic = mp.get("ignition_check")
        if ic is not None:
            ic = self.resolve(ic)
            if isinstance(ic, Scalar) and isinstance(ic.value, bool):
                check = ic.value
            else:
                self.err("ignition_check must be true or false", ic.loc)
        if gas is None or flow is None or power is None or time is None or stab is None:
            return None
        return m.Plasma(gas, flow, power, time, stab, check, loc)

    def _setvalue(self, channel: str, node: Node) -> m.Setpoint | None:
        node = self.resolve(node)
        if not isinstance(node, Scalar):
            self.err(
                f"setpoint of {channel} must be a value like '200 degC', '20 sccm' or off", node.loc
            )
            return None
        if node.value is False or (isinstance(node.value, str) and node.value.strip() == "off"):
            return m.Setpoint(channel, None, None, node.loc)
        if node.value is None:
            return None
        errors: list[UnitError] = []
        for kind, vkind in (
            (Kind.TEMPERATURE, m.ValueKind.TEMPERATURE),
            (Kind.FLOW, m.ValueKind.FLOW),
            (Kind.FRACTION, m.ValueKind.FRACTION),
        ):
            try:
                value = units.parse_value(node.value, kind)
            except UnitError as exc:
                errors.append(exc)
                continue
            if vkind is not m.ValueKind.TEMPERATURE and value < 0:
                self.err(f"setpoint of {channel} must not be negative", node.loc)
                return None
            if vkind is m.ValueKind.TEMPERATURE and value < -273.15:
                self.err(f"setpoint of {channel} is below absolute zero", node.loc)
                return None
            return m.Setpoint(channel, value, vkind, node.loc)
        specific = [e for e in errors if e.specific]
        if specific:  # the right dimension with a junk factor ('200 degC%')
            self.err(f"setpoint of {channel}: {specific[0].message}", node.loc, specific[0].hint)
            return None
        first = errors[0]
        if (
            "unit" in first.message
            and "no unit" not in first.message
            and "unknown" in first.message
        ):
            self.err(
                f"setpoint of {channel}: {first.message}",
                node.loc,
                "temperatures like '200 degC', flows like '20 sccm', or 'off'",
            )
        elif "no unit" in first.message:
            self.err(
                f"setpoint of {channel}: '{node.text}' has no unit",
                node.loc,
                "temperatures like '200 degC', flows like '20 sccm', or 'off'",
            )
        else:
            self.err(
                f"setpoint of {channel}: '{node.text}' is neither a temperature nor a flow",
                node.loc,
                "temperatures like '200 degC', flows like '20 sccm', or 'off'",
            )
        return None

    def _step_set(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        node = self.resolve(node)
        if not isinstance(node, Map) or not node.entries:
            self.err(
                "set maps channels to setpoints, like '{substrate: 200 degC, carrier: 20 sccm}'",
                node.loc,
            )
            return None
        points = [self._setvalue(str(k.value), v) for k, v in node.entries]
        good = tuple(p for p in points if p is not None)
        return m.Set(good, loc) if len(good) == len(points) else None

    def _step_ramp(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        node = self.resolve(node)
        if not isinstance(node, Map):
            self.err(
                "ramp needs a channel and a rate, like '{substrate: 250 degC, rate: 5 K/min}'",
                node.loc,
            )
            return None
        if "rate" not in node:
            self.err("ramp needs 'rate'", node.loc, "e.g. 'rate: 5 K/min'")
        chans = [(k, v) for k, v in node.entries if k.value != "rate"]
        if len(chans) != 1:
            self.err("ramp takes exactly one channel", node.loc, "use one ramp step per channel")
            return None
        k, v = chans[0]
        target = self.quantity(v, Kind.TEMPERATURE, f"ramp target of {k.value}", positive=False)
        rate = (
            self.quantity(node.get("rate"), Kind.TEMPERATURE_RATE, "ramp rate")
            if "rate" in node
            else None
        )
        if target is None or rate is None:
            return None
        return m.Ramp(str(k.value), target, rate, loc)

    def _step_wait(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        t = self.time_s(node, "wait time")
        return m.Wait(t, loc) if t is not None else None

    def _step_wait_until(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        node = self.resolve(node)
        if not isinstance(node, Map):
            self.err(
                "wait_until maps channels to conditions, like "
                "'{substrate: {within: 2 K, for: 60 s}, timeout: 45 min}'",
                node.loc,
            )
            return None
        conds: list[m.Condition] = []
        ok = True
        for k, v in node.entries:
            key = str(k.value)
            if key in ("timeout", "on_timeout"):
                continue
            cond = self._condition(key, v)
            if cond is None:
                ok = False
            else:
                conds.append(cond)
        if not conds and ok:
            self.err(
                "wait_until has no condition",
                node.loc,
                "e.g. 'substrate: {within: 2 K, for: 60 s}'",
            )
            return None
        timeout = 3600.0
        if "timeout" in node:
            t = self.time_s(node.get("timeout"), "wait_until timeout")
            ok = ok and t is not None
            timeout = t if t is not None else timeout
        on_timeout = "abort"
        if "on_timeout" in node:
            w = self.word(node.get("on_timeout"), "on_timeout")
            if w not in ("abort", "continue"):
                self.err("on_timeout must be 'abort' or 'continue'", node.key_loc("on_timeout"))
                ok = False
            else:
                on_timeout = w
        return m.WaitUntil(tuple(conds), timeout, on_timeout, loc) if ok else None

    def _condition(self, channel: str, node: Node) -> m.Condition | None:
        node = self.resolve(node)
        mp = self.mapping(node, f"condition on {channel}", ("within", "below", "above", "for"))
        if mp is None:
            return None
        rels = [r for r in ("within", "below", "above") if r in mp]
        if len(rels) != 1:
            self.err(f"condition on {channel} needs exactly one of within/below/above", mp.loc)
            return None
        rel = m.Relation(rels[0])
        vnode = mp.get(rels[0])
        assert vnode is not None
        if channel == "pressure":
            if rel is m.Relation.WITHIN:
                self.err("pressure conditions use below/above", vnode.loc)
                return None
            value = self.quantity(vnode, Kind.PRESSURE, f"pressure {rel.value}")
        elif rel is m.Relation.WITHIN:
            value = self._delta(vnode, channel)
        else:
            value = self._either(vnode, f"{channel} {rel.value}")
        hold_node = mp.get("for")
        hold = self.time_s(hold_node, "hold time 'for'", allow_zero=True) if hold_node else 0.0
        if value is None or hold is None:
            return None
        return m.Condition(channel, rel, value, hold, mp.loc)

    def _delta(self, node: Node, channel: str) -> float | None:
        node = self.resolve(node)
        text = node.value if isinstance(node, Scalar) else None
        if (isinstance(text, str) and "sccm" in text) or (isinstance(text, str) and "slm" in text):
            return self.quantity(node, Kind.FLOW, f"tolerance on {channel}")
        return self.quantity(node, Kind.TEMPERATURE_DELTA, f"tolerance on {channel}")

    def _either(self, node: Node, what: str) -> float | None:
        node = self.resolve(node)
        if isinstance(node, Scalar) and isinstance(node.value, str) and "sccm" in node.value:
            return self.quantity(node, Kind.FLOW, what)
        return self.quantity(node, Kind.TEMPERATURE, what, positive=False)

    def _step_repeat(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        mp = self.mapping(node, "repeat", ("times", "steps"), ("times", "steps"))
        if mp is None:
            return None
        times = self.count(mp.get("times"), "repeat times")
        steps = self.steps(mp.get("steps"), where, "repeat steps")
        if times is None or not steps:
            return None
        return m.Repeat(times, steps, loc)

    def _step_every(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        mp = self.mapping(node, "every", ("n", "offset", "steps"), ("n", "steps"))
        if mp is None:
            return None
        n = self.count(mp.get("n"), "every n")
        off_node = mp.get("offset")
        offset = self.count(off_node, "every offset", lo=0) if off_node is not None else 0
        steps = self.steps(mp.get("steps"), where, "every steps")
        if n is None or offset is None or not steps:
            return None
        return m.Every(n, offset, steps, loc)

    def _repeat_or_target(self, mp: Map, what: str) -> tuple[int | None, float | None, bool]:
        has_r, has_t = "repeat" in mp, "target" in mp
        if has_r == has_t:
            self.err(
                f"{what} needs either 'repeat' or 'target' (not both)",
                mp.loc,
                "e.g. 'repeat: 100' or 'target: 20 nm'",
            )
            return None, None, False
        if has_r:
            r = self.count(mp.get("repeat"), f"{what} repeat")
            return r, None, r is not None
        t = self.quantity(mp.get("target"), Kind.THICKNESS, f"{what} target")
        if t is not None and t > 100_000:
            self.err(f"{what} target of {t:g} nm is more than 100 um", self._loc(mp.get("target")))
            return None, None, False
        return None, t, t is not None

    def _step_cycle(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        node = self.resolve(node)
        if isinstance(node, Scalar):
            name = self.word(node, "cycle")
            if name is None:
                return None
            self._check_cycle_name(name, node.loc)
            return m.CycleRun(name, 1, None, loc)
        mp = self.mapping(node, "cycle", ("name", "repeat", "target"), ("name",))
        if mp is None:
            return None
        name = self.word(mp.get("name"), "cycle name")
        if name is not None:
            self._check_cycle_name(name, self._loc(mp.get("name")))
        repeat, target, ok = self._repeat_or_target(mp, "cycle")
        if name is None or not ok:
            return None
        return m.CycleRun(name, repeat, target, loc)

    def _check_cycle_name(self, name: str, loc: Location) -> None:
        if name not in self.cycle_names:
            self.err(
                f"no cycle named '{name}' under 'cycles:'",
                loc,
                did_you_mean(name, self.cycle_names) or "define it under 'cycles:'",
            )

    def _step_supercycle(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        mp = self.mapping(node, "supercycle", ("ratio", "order", "repeat", "target"), ("ratio",))
        if mp is None:
            return None
        ratio: list[tuple[str, int]] = []
        rnode = mp.get("ratio")
        ok = True
        if rnode is not None:
            rnode = self.resolve(rnode)
            if not isinstance(rnode, Map) or not rnode.entries:
                self.err(
                    "supercycle ratio maps cycle names to counts, like '{Li2O: 1, Ta2O5: 6}'",
                    rnode.loc,
                )
                ok = False
            else:
                for k, v in rnode.entries:
                    self._check_cycle_name(str(k.value), k.loc)
                    c = self.count(v, f"ratio of {k.value}", hi=10_000)
                    if c is None:
                        ok = False
                    else:
                        ratio.append((str(k.value), c))
                if ok and len(ratio) < 2:
                    self.err(
                        "a supercycle needs at least two subcycles in its ratio",
                        rnode.loc,
                        "for one cycle kind use '- cycle: {name: X, repeat: N}'",
                    )
                    ok = False
        order = m.Order.INTERLEAVED
        if "order" in mp:
            w = self.word(mp.get("order"), "supercycle order")
            try:
                order = m.Order(w or "")
            except ValueError:
                self.err(
                    f"supercycle order must be interleaved or blocked, got '{w}'",
                    mp.key_loc("order"),
                    did_you_mean(str(w), [o.value for o in m.Order]),
                )
                ok = False
        repeat, target, ok2 = self._repeat_or_target(mp, "supercycle")
        if not ok or not ok2:
            return None
        return m.Supercycle(tuple(ratio), order, repeat, target, loc)

    def _include_target(self, fname: str, at: Location) -> Path | None:
        """The file an include names, if it is a recipe file inside the include roots."""
        shown = fname if len(fname) <= 80 else fname[:77] + "..."
        if "\x00" in fname:
            self.err(f"include file name '{shown}' contains a NUL byte", at)
            return None
        if any(len(part.encode()) > MAX_NAME_BYTES for part in Path(fname).parts):
            self.err(
                f"include file name '{shown}' has a part longer than {MAX_NAME_BYTES} bytes",
                at,
                "file names on Linux are at most 255 bytes",
            )
            return None
        if Path(fname).suffix.lower() not in _RECIPE_SUFFIXES:
            self.err(
                f"include '{shown}' is not a recipe file",
                at,
                "included recipes are .yaml or .yml files",
            )
            return None
        try:
            # Not strict: whether a file outside the roots exists is none of the recipe's
            # business, so the roots are checked before existence (no "not found" oracle).
            target = (self.path.parent / fname).resolve()
        except RuntimeError:  # Python 3.11 reports a symlink loop so
            self.err(f"include '{shown}': a symbolic link loop", at, "fix the link")
            return None
        except OSError as exc:
            hint = "a symbolic link loop" if exc.errno == errno.ELOOP else ""
            self.err(f"include '{shown}': {exc.strerror}", at, hint)
            return None
        if not any(target.is_relative_to(root) for root in self.roots):
            self.err(
                f"include '{shown}' is outside the recipe's directory",
                at,
                "includes come from the top recipe's directory (and below), the working "
                f"directory the recipe is in, or the directories listed in ${ROOTS_ENV}",
            )
            return None
        if not target.exists():
            self.err(
                f"included file not found: {shown}",
                at,
                f"paths are relative to {self.path.parent or '.'}",
            )
            return None
        if not target.is_file():
            self.err(f"include '{shown}' is not a regular file", at)
            return None
        return target

    def _within_budget(self, at: Location) -> bool:
        """Count one more included document; past a bound, say so once, at this include, and
        load no more (the files already read are counted, so the next refusal is quick)."""
        b = self.budget
        if b.spent:
            return False
        b.documents += 1
        over = None
        if b.documents > MAX_INCLUDES:
            over = f"more than {MAX_INCLUDES} included recipes in all"
        elif b.values > yamlsrc.MAX_NODES:
            over = f"the included recipes expand to more than {yamlsrc.MAX_NODES:,} values"
        if over is None:
            return True
        b.spent = True
        self.err(
            f"{over} (each inclusion counts; includes including includes multiply)",
            at,
            "include a shared step list once and repeat it with '- repeat:', or flatten "
            "the include tree",
        )
        return False

    def _step_include(self, node: Node, loc: Location, where: _Where) -> m.Step | None:
        node = self.resolve(node)
        params: dict[str, str | int | float | bool | None] = {}
        if isinstance(node, Map):
            mp = self.mapping(node, "include", ("file", "params"), ("file",))
            if mp is None:
                return None
            fname = self.word(mp.get("file"), "include file")
            pnode = mp.get("params")
            if pnode is not None:
                if not isinstance(pnode, Map):
                    self.err("include params must be a mapping", pnode.loc)
                    return None
                for k, raw in pnode.entries:
                    v = self.resolve(raw)
                    if isinstance(v, Scalar):
                        params[str(k.value)] = v.value
                    else:
                        self.err(f"include parameter {k.value} must be a single value", v.loc)
            at = self._loc(mp.get("file")) if "file" in mp else node.loc
        else:
            fname = self.word(node, "include file")
            at = node.loc
        if fname is None:
            return None
        target = self._include_target(fname, at)
        if target is None:
            return None
        if target in self.stack:
            chain = " -> ".join(p.name for p in (*self.stack, target))
            self.err(f"circular include: {chain}", at, "a recipe cannot include itself")
            return None
        if len(self.stack) >= MAX_INCLUDE_DEPTH:
            self.err(f"includes nested deeper than {MAX_INCLUDE_DEPTH}", at)
            return None
        if not self._within_budget(at):
            return None
        sub_diags = Diagnostics()
        sub = _load(target, params, self.stack, sub_diags, False, self.budget)
        for d in sub_diags:
            self.d.add(d)
        if sub is not None:
            unknown = set(params) - set(sub.params)
            for name in sorted(unknown):
                self.err(
                    f"included recipe {fname} has no parameter '{name}'",
                    at,
                    did_you_mean(name, sub.params),
                )
        if sub is None or sub_diags.errors:
            self.err(f"included recipe {fname} has errors (listed above)", at)
            return None
        self.includes.append(target)
        self.includes.extend(sub.includes)
        return m.Include(sub, loc)


def _uses_cycle(steps: tuple[m.Step, ...], name: str) -> bool:
    for s in steps:
        if isinstance(s, m.CycleRun) and s.cycle == name:
            return True
        if isinstance(s, m.Supercycle) and any(n == name for n, _ in s.ratio):
            return True
        if isinstance(s, m.Repeat) and _uses_cycle(s.steps, name):
            return True
    return False
