"""Compiler: Recipe + tool configuration -> :class:`~aldctl.recipe.schedule.Schedule`.

The compiler walks the recipe in execution order, keeping the setpoints the recipe has set
so far, and emits timed actions at nanosecond offsets. On the way it checks what can be
checked before a run (every problem with its location, all at once):

* chemicals and lines: every dosed chemical has a line on this tool;
* co-dosing: a precursor never opens together with a co-reactant, two precursors only where
  the tool's ``codose:`` allows it;
* valves: no pulse shorter than the line's minimum;
* purges: shorter than ``purge_factor`` residence times -> warning with the residual fraction;
* setpoints: within each channel's limits and below the substrate's maximum;
* plasma: the tool has a source, the gas has a feed, the power is within the generator's;
* sources and lines: a heated source is set at least as hot as its chemical needs before it
  is dosed, and its delivery line is not colder than the source.

Supercycle order, ``interleaved``: with ``c_k`` subcycles of kind k in a supercycle of
``N = sum(c_k)``, the j-th subcycle of kind k sits at the centre of its share,
``(j + 1/2) N / c_k``; subcycles are sorted by that position, ties in the order the ratio
names them. 1:1 -> A B; 2:3 -> B A B A B; 1:3 -> B A B B (a rotation of A B B B);
1:6 -> B B B A B B B. ``blocked`` runs all of the first kind, then all of the next.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from aldctl.chemfile import unknown_chemical_hint
from aldctl.config import ToolConfig
from aldctl.diagnostics import Diagnostic, Diagnostics, Location, did_you_mean
from aldctl.recipe import model as m
from aldctl.recipe import schedule as s
from aldctl.recipe.schedule import NS, ActionKind, to_ns
from aldctl.units import format_duration
from sim import chemistry, library
from sim.config import heater_settle_s
from sim.purge import residual_cvd

MAX_EVERY_BLOCKS = 6
MAX_BODY_ACTIONS = 20_000
MAX_TOTAL_S = 60 * 86400.0
AMBIENT_C = 25.0
SCCM_TO_TORR_L_S = 1.01325e5 / 133.322 * 1e-3 / 60.0
"""1 sccm in Torr L/s (0 degC, 1 atm standard)."""


@dataclass(frozen=True, slots=True)
class Compiled:
    schedule: s.Schedule
    diagnostics: tuple[Diagnostic, ...]


@dataclass
class _State:
    temps: dict[str, float | None] = field(default_factory=dict)
    flows: dict[str, float] = field(default_factory=dict)
    ozone: float | None = None


def interleave(ratio: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    """The interleaved order of one supercycle (see the module docstring for the rule)."""
    total = sum(c for _, c in ratio)
    slots: list[tuple[float, int, str]] = []
    for order, (name, count) in enumerate(ratio):
        for j in range(count):
            slots.append(((j + 0.5) * total / count, order, name))
    slots.sort()
    return tuple(name for _, _, name in slots)


def blocked(ratio: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    return tuple(name for name, count in ratio for _ in range(count))


def compile_recipe(recipe: m.Recipe, tool: ToolConfig) -> Compiled:
    """Compile, raising UserError with every problem; warnings come back in ``diagnostics``."""
    diags = Diagnostics()
    sched = _Compiler(recipe, tool, diags).run()
    diags.raise_if_errors()
    return Compiled(sched, tuple(diags))


class _Body:
    """Accumulates phases, actions and spans of one body."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.phases: list[s.Phase] = []
        self.actions: list[s.Action] = []
        self.spans: list[s.Span] = []
        self.t = 0

    def act(
        self,
        dt: int,
        kind: ActionKind,
        target: str,
        value: float | None = None,
        duration_ns: int = 0,
        rate: float | None = None,
        loc: Location | None = None,
    ) -> None:
        self.actions.append(s.Action(self.t + dt, kind, target, value, duration_ns, rate, loc))

    def span(self, duration: int, label: str) -> None:
        self.spans.append(s.Span(self.t, self.t + duration, label))
        self.t += duration

    def flush(self) -> None:
        if self.actions or self.t:
            acts = tuple(sorted(self.actions, key=lambda a: a.offset_ns))
            self.phases.append(s.Timed(acts, self.t, tuple(self.spans)))
        self.actions, self.spans, self.t = [], [], 0

    def wait(self, aw: s.Await) -> None:
        self.flush()
        self.phases.append(aw)

    def build(self) -> s.Body:
        self.flush()
        return s.Body(tuple(self.phases), self.label)

    def n_actions(self) -> int:
        return len(self.actions) + sum(
            len(p.actions) for p in self.phases if isinstance(p, s.Timed)
        )


class _Compiler:
    def __init__(self, recipe: m.Recipe, tool: ToolConfig, diags: Diagnostics) -> None:
        self.recipe = recipe
        self.tool = tool
        self.d = diags
        self.gaugeless_said = False
        self.state = _State()
        for name, f in tool.flows.items():
            if f.default is not None:
                self.state.flows[name] = f.default
        self.temp_channels = tool.temperature_channels()
        self.flow_channels = tool.flow_channels()
        self.substrate_max, self.substrate_why = self._substrate_max()
        self.warned_unheated: set[str] = set()
        self.warned_no_process: set[str] = set()
        self.heater_at: dict[str, float] = {}
        """Temperature each heater was last waited to (the start of its next heat-up)."""
        self.sources_seen: dict[str, float] = {}
        """Hottest setpoint each source was given anywhere (for the planner's doses)."""
        self.last_dose: tuple[str, Location] | None = None
        self.purged_since_dose = True
        self.main_substrate: float | None = None

    # ------------------------------------------------------------------ entry

    def run(self) -> s.Schedule:
        setup = self.body(self.recipe.setup, "setup", self.recipe.cycles)
        self.main_substrate = self.state.temps.get("substrate")
        sources = {
            k.removeprefix("source."): v
            for k, v in self.state.temps.items()
            if k.startswith("source.") and v is not None
        }
        main = self.segments(self.recipe.main, self.recipe.cycles)
        # a source first heated inside main (the setup of an included film) counts too
        for k, v in self.sources_seen.items():
            sources.setdefault(k, v)
        teardown = self.body(self.recipe.teardown, "teardown", self.recipe.cycles)
        sched = s.Schedule(
            recipe=self.recipe.name,
            tool=self.tool.name,
            setup=setup,
            main=main,
            teardown=teardown,
            params=self.recipe.param_values(),
            substrate_c=self.main_substrate,
            source_c=sources,
        )
        if not self.d.errors and sched.min_duration_ns > MAX_TOTAL_S * NS:
            self.d.error(
                f"the recipe would run for {format_duration(sched.min_duration_ns / NS)}, "
                f"longer than the {MAX_TOTAL_S / 86400:.0f}-day limit",
                Location(str(self.recipe.path), 1, 1),
                "check repeat counts and targets",
            )
        return sched

    def _substrate_max(self) -> tuple[float | None, str]:
        sub = self.recipe.substrate
        if sub is None:
            return None, ""
        limit = library.substrate_limits().get(sub.material)
        declared = sub.max_temperature_c
        # A recipe may lower the library's limit, never raise it: Li melts at 180.5 degC
        # whatever max_temperature says.
        if declared is not None and (limit is None or declared < limit):
            return declared, f"the substrate's max_temperature ({sub.material})"
        if limit is not None:
            return limit, f"the {sub.material} substrate limit from the process library"
        return None, ""

    # ------------------------------------------------------------------ segments

    def segments(
        self, steps: tuple[m.Step, ...], scope: Mapping[str, m.Cycle]
    ) -> tuple[s.Segment, ...]:
        out: list[s.Segment] = []
        pending: list[m.Step] = []

        def flush() -> None:
            if pending:
                label = ", ".join(_step_label(p) for p in pending[:3])
                out.append(s.Block(self.body(tuple(pending), label, scope)))
                pending.clear()

        for step in steps:
            if isinstance(step, m.CycleRun):
                flush()
                loop = self.cycle_loop(step, scope)
                if loop is not None:
                    out.append(loop)
            elif isinstance(step, m.Supercycle):
                flush()
                loop = self.supercycle_loop(step, scope)
                if loop is not None:
                    out.append(loop)
            elif isinstance(step, m.Include):
                flush()
                sub = step.recipe
                if sub.setup:
                    out.append(s.Block(self.body(sub.setup, f"{sub.name}: setup", sub.cycles)))
                out.extend(self.segments(sub.main, sub.cycles))
            elif isinstance(step, m.Repeat) and _has_loops(step.steps):
                flush()
                inner = self.segments(step.steps, scope)
                if inner:
                    out.append(s.RepeatSegment(step.times, inner))
            else:
                pending.append(step)
        flush()
        return tuple(out)

    def cycle_loop(self, step: m.CycleRun, scope: Mapping[str, m.Cycle]) -> s.Loop | None:
        cyc = scope.get(step.cycle)
        if cyc is None:
            return None
        cdef = self.cycle_def(cyc)
        if cdef is None:
            return None
        repeat = step.repeat
        proc_id = cdef.process
        if step.target_nm is not None:
            repeat = self._target_repeat(
                step.target_nm,
                step.loc,
                proc_id,
                lambda p, t: p.gpc(t, cdef.kind),
                f"cycle '{cyc.name}'",
            )
        if repeat is None:
            return None
        self._check_every_fires(cdef, repeat, cyc)
        return s.Loop(
            label=cyc.name,
            sequence=(cyc.name,),
            repeat=repeat,
            cycles={cyc.name: cdef},
            supercycle=False,
            target_nm=step.target_nm,
            process=proc_id,
            loc=step.loc,
            substrate_c=self.state.temps.get("substrate"),
        )

    def supercycle_loop(self, step: m.Supercycle, scope: Mapping[str, m.Cycle]) -> s.Loop | None:
        cdefs: dict[str, s.CycleDef] = {}
        for name, _ in step.ratio:
            cyc = scope.get(name)
            if cyc is None:
                return None
            cdef = self.cycle_def(cyc)
            if cdef is None:
                return None
            cdefs[name] = cdef
        order = interleave(step.ratio) if step.order is m.Order.INTERLEAVED else blocked(step.ratio)
        found = library.find_supercycle({n: c.chemicals for n, c in cdefs.items()})
        proc_id = None
        if found is not None:
            proc, mapping = found
            proc_id = proc.id
            cdefs = {n: _with_process(c, proc.id, mapping[n]) for n, c in cdefs.items()}
        label = (
            ":".join(f"{n}" for n, _ in step.ratio) + " " + ":".join(str(c) for _, c in step.ratio)
        )
        repeat = step.repeat
        if step.target_nm is not None:
            seq_kinds = [cdefs[n].kind or n for n in order]
            repeat = self._target_repeat(
                step.target_nm,
                step.loc,
                proc_id,
                lambda p, t: sum(p.sequence_growth(seq_kinds, t)),
                "supercycle",
            )
        if repeat is None:
            return None
        for name, cdef in cdefs.items():
            self._check_every_fires(cdef, repeat * order.count(name), scope[name])
        return s.Loop(
            label=label,
            sequence=order,
            repeat=repeat,
            cycles=cdefs,
            supercycle=True,
            target_nm=step.target_nm,
            process=proc_id,
            loc=step.loc,
            substrate_c=self.state.temps.get("substrate"),
        )

    def _target_repeat(
        self, target_nm: float, loc: Location, proc_id: str | None, gpc_of: object, what: str
    ) -> int | None:
        if proc_id is None:
            self.d.error(
                f"{what}: 'target' needs growth data, but its chemistry is not in the "
                "process library",
                loc,
                "give 'repeat: N' instead",
            )
            return None
        t = self.state.temps.get("substrate")
        if t is None:
            self.d.error(
                f"{what}: 'target' needs the substrate temperature to look up the growth per cycle",
                loc,
                "set 'substrate' in setup before this step",
            )
            return None
        proc = library.processes()[proc_id]
        assert callable(gpc_of)
        gpc_a = float(gpc_of(proc, t))
        if gpc_a <= 0:
            self.d.error(f"{what}: the library gives no growth at {t:g} degC", loc)
            return None
        return max(1, math.ceil(target_nm * 10.0 / gpc_a - 1e-9))

    def _check_every_fires(self, cdef: s.CycleDef, reps: int, cyc: m.Cycle) -> None:
        for spec in cdef.every:
            first = spec.offset % spec.n or spec.n
            if first > reps:
                self.d.warning(
                    f"'every: {{n: {spec.n}}}' in cycle '{cyc.name}' never fires: the "
                    f"cycle runs {reps} time(s)",
                    cyc.loc,
                )

    def cycle_def(self, cyc: m.Cycle) -> s.CycleDef | None:
        everies = [st for st in cyc.steps if isinstance(st, m.Every)]
        if len(everies) > MAX_EVERY_BLOCKS:
            self.d.error(
                f"cycle '{cyc.name}' has {len(everies)} 'every' blocks; at most {MAX_EVERY_BLOCKS}",
                cyc.loc,
            )
            return None
        _reject_nested_every(cyc.steps, self.d, top=True)
        entry = copy.deepcopy(self.state)
        variants: dict[frozenset[int], s.Body] = {}
        final_state: _State | None = None
        for k in range(len(everies) + 1):
            for fired in combinations(range(len(everies)), k):
                self.state = copy.deepcopy(entry)
                steps: list[m.Step] = []
                idx = 0
                for st in cyc.steps:
                    if isinstance(st, m.Every):
                        if idx in fired:
                            steps.extend(st.steps)
                        idx += 1
                    else:
                        steps.append(st)
                variants[frozenset(fired)] = self.body(tuple(steps), cyc.name, {})
                if not fired:
                    final_state = self.state
        assert final_state is not None
        self.state = final_state
        base = variants[frozenset()]
        ordered = self._chemicals(base)
        chems = frozenset(ordered)
        found = library.find_cycle(chems)
        if found is None and chems and cyc.name not in self.warned_no_process:
            self._warn_no_process(cyc, ordered)
        return s.CycleDef(
            name=cyc.name,
            every=tuple(s.EverySpec(e.n, e.offset) for e in everies),
            variants=variants,
            chemicals=chems,
            process=found[0].id if found else None,
            kind=found[1] if found else None,
        )

    def _seen_source(self, channel: str, value: float | None) -> None:
        if value is None or not channel.startswith("source."):
            return
        line = channel.removeprefix("source.")
        self.sources_seen[line] = max(value, self.sources_seen.get(line, value))

    def _warn_no_process(self, cyc: m.Cycle, ordered: list[str]) -> None:
        """Said at compile time so that validate, plan, simulate and run all say it."""
        self.warned_no_process.add(cyc.name)
        chems = frozenset(ordered)
        inside = [
            k
            for p in library.processes().values()
            for k in p.cycles.values()
            if _subsequence(k.chemicals, ordered)
        ]
        if inside:
            self.d.warning(
                f"cycle '{cyc.name}': {' + '.join(sorted(chems))} is no process of the "
                "library: no thickness estimate; the model grows only the library cycles its "
                f"doses contain in order ({', '.join(sorted({k.name for k in inside}))})",
                cyc.loc,
            )
            return
        near = sorted(
            (p for p in library.processes().values() if chems & p.chemicals),
            key=lambda p: (-len(chems & p.chemicals), len(p.chemicals - chems)),
        )
        hint = ""
        if near:
            seqs = [" -> ".join(k.chemicals) for k in near[0].cycles.values()]
            hint = f"the nearest library process, {near[0].id}, doses {' | '.join(seqs)}"
        self.d.warning(
            f"cycle '{cyc.name}': {' -> '.join(ordered)} contains no cycle of the process "
            "library: these doses meet no surface reaction the model knows, so the cycle "
            "grows nothing (no thickness estimate; the simulated reactor grows 0 nm)",
            cyc.loc,
            hint,
        )

    def _chemicals(self, body: s.Body) -> list[str]:
        out: list[str] = []
        for p in body.phases:
            if isinstance(p, s.Timed):
                for a in p.actions:
                    if a.kind is ActionKind.PULSE:
                        line = self.tool.lines.get(a.target)
                        out.append(line.chemical if line else a.target)
                    elif a.kind is ActionKind.RF_ON:
                        out.append(a.target)
        return out

    # ------------------------------------------------------------------ bodies

    def body(self, steps: tuple[m.Step, ...], label: str, scope: Mapping[str, m.Cycle]) -> s.Body:
        b = _Body(label)
        for step in steps:
            self.step(step, b)
        return b.build()

    def step(self, step: m.Step, b: _Body) -> None:
        if isinstance(step, m.Pulse):
            self.pulse(step.doses, b, step.loc)
            b.span(to_ns(step.duration_s), _step_label(step))
        elif isinstance(step, m.Purge):
            self.purge(step, b)
        elif isinstance(step, m.Expose):
            self.expose(step, b)
        elif isinstance(step, m.Plasma):
            self.plasma(step, b)
        elif isinstance(step, m.Set):
            for sp in step.setpoints:
                self.setpoint(sp, b)
        elif isinstance(step, m.Ramp):
            self.ramp(step, b)
        elif isinstance(step, m.Wait):
            b.span(to_ns(step.duration_s), _step_label(step))
        elif isinstance(step, m.WaitUntil):
            self.wait_until(step, b)
        elif isinstance(step, m.Repeat):
            if len(step.steps) * step.times + b.n_actions() > MAX_BODY_ACTIONS:
                self.d.error(
                    f"repeat of {step.times} x {len(step.steps)} steps here unrolls to "
                    f"more than {MAX_BODY_ACTIONS:,} actions",
                    step.loc,
                    "repeat cycles from 'main:' with 'cycle:' instead",
                )
                return
            for _ in range(step.times):
                for inner in step.steps:
                    self.step(inner, b)
        elif isinstance(step, m.Every):
            self.d.error("'every' must sit directly in a cycle's step list", step.loc)
        else:  # cycle/supercycle/include outside main: the loader already refused them
            self.d.error(f"{type(step).__name__.lower()} cannot run here", step.loc)

    def _line(self, name: str, loc: Location) -> str | None:
        """Line that doses ``name`` (a line name or a chemical)."""
        if name in self.tool.lines:
            return name
        line = self.tool.line_for_chemical(name)
        if line is not None:
            return line
        chem = chemistry.lookup(name)
        if chem is None:
            self.d.error(
                f"unknown chemical '{name}'",
                loc,
                unknown_chemical_hint(name, [*chemistry.catalogue(), *self.tool.lines]),
            )
        elif chem.name != name:
            self.d.error(f"unknown chemical '{name}'", loc, f"did you mean '{chem.name}'?")
        elif not chem.is_dose:
            self.d.error(
                f"{name} is a {chem.role.value}, not something dosed with a pulse",
                loc,
                "plasma radicals come from a 'plasma:' step; gases from 'set'/'purge'",
            )
        else:
            self.d.error(
                f"tool '{self.tool.name}' has no line for {name}",
                loc,
                "lines: " + ", ".join(f"{n} ({ln.chemical})" for n, ln in self.tool.lines.items())
                if self.tool.lines
                else "the tool config has no lines",
            )
        return None

    def pulse(self, doses: tuple[m.Dose, ...], b: _Body, loc: Location) -> None:
        if not self.tool.gauges and not self.gaugeless_said:
            # The engine runs without one (a valve test stand has no chamber to read), but
            # every pressure safeguard is then off: say so where the first dose is.
            self.gaugeless_said = True
            p = self.tool.limits.pressure
            hold = f"hold above {p.hold_above:g} Torr, " if p.hold_above is not None else ""
            self.d.warning(
                f"tool '{self.tool.name}' has no chamber gauge (no gauges: in its config): "
                f"its pressure limits ({hold}abort above {p.max:g} Torr) are not checked, "
                "a dose valve stuck open cannot raise a pressure hold, and the pulse "
                "monitor is off",
                loc,
                "add the chamber gauge: gauges: {chamber: {device: GAUGE, max: 10 Torr}}",
            )
        resolved: list[tuple[m.Dose, str]] = []
        for dose in doses:
            line = self._line(dose.chemical, dose.loc)
            if line is None:
                continue
            spec = self.tool.lines[line]
            if dose.duration_s + 1e-12 < spec.min_pulse:
                self.d.error(
                    f"pulse of {dose.chemical} is {dose.duration_s * 1000:g} ms, shorter "
                    f"than the {line} valve's minimum of {spec.min_pulse * 1000:g} ms",
                    dose.loc,
                    "valves do not open reliably below their minimum pulse",
                )
            self._check_source(line, dose.loc)
            self._check_interlocks(line, dose.loc)
            if spec.chemical == "O3" and self.state.ozone is None:
                self.d.error(
                    "O3 is dosed but the ozone generator is off",
                    dose.loc,
                    "add 'set: {ozone: 10 %}' to setup",
                )
            self._check_sequence(spec.chemical, dose.loc)
            b.act(0, ActionKind.PULSE, line, duration_ns=to_ns(dose.duration_s), loc=dose.loc)
            resolved.append((dose, line))
        self._check_codose(resolved)

    def _check_interlocks(self, line: str, loc: Location) -> None:
        """A hazardous chemical is dosed only on a tool that declares the interlocks its
        hazard classes need (aldctl.hazards): the error names each missing one."""
        from aldctl.hazards import INTERLOCK_LABELS, required

        spec = self.tool.lines[line]
        chem = chemistry.lookup(spec.chemical)
        hazards = {*(chem.hazards if chem else ()), *spec.hazards}
        for il, why in sorted(required(hazards).items()):
            if il in self.tool.interlocks:
                continue
            self.d.error(
                f"{spec.chemical} is {' and '.join(sorted(why))}: dosing it needs the "
                f"{INTERLOCK_LABELS[il]} interlock ({il}), which tool '{self.tool.name}' "
                "does not declare",
                loc,
                f"if the tool has one, declare it: interlocks: {{{il}: {{note: how it acts}}}}",
            )

    def _check_codose(self, resolved: list[tuple[m.Dose, str]]) -> None:
        for (_, l1), (d2, l2) in combinations(resolved, 2):
            if l1 == l2:
                self.d.error(f"line {l1} is dosed twice in one pulse", d2.loc)
                continue
            c1 = chemistry.get(self.tool.lines[l1].chemical)
            c2 = chemistry.get(self.tool.lines[l2].chemical)
            if _react(c1.name, c2.name):
                self.d.error(
                    f"{c1.name} and {c2.name} would be dosed at the same time: they react "
                    "in the gas phase (CVD, particles)",
                    d2.loc,
                    "separate them with a purge",
                )
            elif not self.tool.codose_allowed(l1, l2):
                self.d.error(
                    f"co-dosing {c1.name} with {c2.name} is not allowed on tool '{self.tool.name}'",
                    d2.loc,
                    f"add [{l1}, {l2}] to 'codose:' in the tool config if the hardware allows it",
                )

    def _check_sequence(self, chemical: str, loc: Location) -> None:
        if self.last_dose is not None and not self.purged_since_dose:
            prev, _ = self.last_dose
            if prev != chemical and _react(prev, chemical):
                self.d.warning(
                    f"{chemical} follows {prev} with no purge between them: expect CVD growth",
                    loc,
                    "add a purge step",
                )
        self.last_dose = (chemical, loc)
        self.purged_since_dose = False

    def _check_source(self, line: str, loc: Location) -> None:
        spec = self.tool.lines[line]
        chem = chemistry.get(spec.chemical)
        if spec.source_heater is None or chem.source_t_min is None:
            return
        key = f"source.{line}"
        src = self.state.temps.get(key)
        need = chem.source_t_min
        if src is None:
            if key not in self.warned_unheated:
                self.warned_unheated.add(key)
                self.d.error(
                    f"{chem.name} is dosed but its source is not heated (needs {need:g} degC)",
                    loc,
                    f"add '{key}: {need:g} degC' to a 'set' step in setup",
                )
            return
        if src + 1e-9 < need:
            msg = f"{chem.name} source at {src:g} degC is colder than the {need:g} degC it needs"
            hint = "raise the source setpoint"
            if chem.source_t_assumed:
                self.d.warning(msg + " (assumed value)", loc, hint)
            else:
                self.d.error(msg, loc, hint)
        lkey = f"line.{line}"
        if spec.line_heater is not None:
            lt = self.state.temps.get(lkey)
            if lt is None:
                if lkey not in self.warned_unheated:
                    self.warned_unheated.add(lkey)
                    self.d.error(
                        f"the {line} delivery line is not heated while its source runs at "
                        f"{src:g} degC: the precursor condenses in the line",
                        loc,
                        f"set '{lkey}' to at least {src + 10:g} degC",
                    )
            elif lt < src:
                self.d.error(
                    f"the {line} delivery line at {lt:g} degC is colder than its source at "
                    f"{src:g} degC: the precursor condenses in the line",
                    loc,
                    f"set '{lkey}' to at least {src + 10:g} degC",
                )

    def purge(self, step: m.Purge, b: _Body) -> None:
        dur = to_ns(step.duration_s)
        if step.carrier_sccm is not None:
            if "carrier" not in self.flow_channels:
                self.d.error("a boosted purge needs a 'carrier' flow channel on the tool", step.loc)
            else:
                base = self.state.flows.get("carrier", 0.0)
                self._check_flow("carrier", step.carrier_sccm, step.loc)
                b.act(0, ActionKind.SET_FLOW, "carrier", step.carrier_sccm, loc=step.loc)
                b.act(dur, ActionKind.SET_FLOW, "carrier", base, loc=step.loc)
        tau = self.tool.chamber.residence_time
        factor = step.duration_s / tau if tau > 0 else math.inf
        if factor < self.tool.chamber.purge_factor:
            residual = math.exp(-factor)
            cvd = residual_cvd(factor)
            # the estimate is first order in the residue: past a few tens of percent, say so
            share = f"~{cvd:.0%} of the film" if cvd < 0.3 else "a large part of the film"
            self.d.warning(
                f"purge of {format_duration(step.duration_s)} is {factor:.1f} residence times "
                f"(tool tau {tau:g} s): {residual:.1%} of the previous dose is still in the "
                f"chamber when the next one starts; expect {share} from CVD",
                step.loc,
                f"purge at least {self.tool.chamber.purge_factor * tau:.2g} s",
            )
        self.purged_since_dose = factor >= 1.0
        b.span(dur, _step_label(step))

    def expose(self, step: m.Expose, b: _Body) -> None:
        if self.tool.pump_isolation is None:
            self.d.error(
                f"tool '{self.tool.name}' has no pump isolation valve for stop-flow exposure",
                step.loc,
                "add 'pump_isolation: {valve: device:channel, fails: open|closed}' to the tool",
            )
        ch = self.tool.chamber
        carrier = self.state.flows.get("carrier")
        isolated_flow = {"stop": 0.0, "reduce": ch.expose_carrier_flow}.get(ch.expose_carrier)
        end = to_ns(step.dose_s + step.hold_s)
        if isolated_flow is not None and carrier and "carrier" in self.flow_channels:
            # the carrier would fill the isolated chamber: the tool says what it does instead
            b.act(0, ActionKind.SET_FLOW, "carrier", isolated_flow, loc=step.loc)
            b.act(end, ActionKind.SET_FLOW, "carrier", carrier, loc=step.loc)
        b.act(0, ActionKind.PUMP_ISOLATION, "pump", 0.0, loc=step.loc)
        self.pulse(step.doses, b, step.loc)
        b.act(end, ActionKind.PUMP_ISOLATION, "pump", 1.0, loc=step.loc)
        self.purged_since_dose = step.pump_s >= self.tool.chamber.residence_time
        b.span(to_ns(step.duration_s), _step_label(step))

    def plasma(self, step: m.Plasma, b: _Body) -> None:
        ps = self.tool.plasma
        chem = f"{step.gas}-plasma"
        channel = f"plasma.{step.gas}"
        if ps is None:
            self.d.error(f"tool '{self.tool.name}' has no plasma source", step.loc)
        else:
            if step.gas not in ps.gases:
                self.d.error(
                    f"the plasma source is not fed with {step.gas}",
                    step.loc,
                    "fed gases: " + ", ".join(ps.gases),
                )
            if step.power_w > ps.max_power:
                self.d.error(
                    f"plasma power {step.power_w:g} W is above the generator's {ps.max_power:g} W",
                    step.loc,
                )
            if channel not in self.flow_channels:
                self.d.error(
                    f"no flow channel '{channel}' feeds the plasma with {step.gas}",
                    step.loc,
                    "add it under 'flows:' in the tool config",
                )
            else:
                self._check_flow(channel, step.flow_sccm, step.loc)
                p = self._pressure_torr(step.flow_sccm)
                if p is not None and not ps.pressure_min <= p <= ps.pressure_max:
                    self.d.warning(
                        f"estimated chamber pressure {p:.3g} Torr during the plasma is "
                        f"outside the source's window {ps.pressure_min:g}-"
                        f"{ps.pressure_max:g} Torr",
                        step.loc,
                    )
            if step.ignition_check and step.duration_s <= ps.ignition_time:
                self.d.warning(
                    f"plasma time {step.duration_s:g} s is not longer than the "
                    f"ignition time {ps.ignition_time:g} s: no ignition check",
                    step.loc,
                )
        if chemistry.lookup(chem) is None:
            self.d.warning(f"no plasma chemistry '{chem}' in the catalogue", step.loc)
        self._check_sequence(chem, step.loc)
        ignition = ps.ignition_time if ps is not None and step.ignition_check else None
        actions = s.plasma_actions(
            step.gas, step.flow_sccm, step.power_w, step.stabilize_s, step.duration_s, ignition
        )
        for a in actions:
            b.act(a.offset_ns, a.kind, a.target, a.value, loc=step.loc)
        b.span(to_ns(step.stabilize_s) + to_ns(step.duration_s), _step_label(step))

    def _pressure_torr(self, extra_sccm: float) -> float | None:
        tau = self.tool.chamber.residence_time
        vol = self.tool.chamber.volume
        if tau <= 0:
            return None
        speed = vol / tau  # L/s
        flow = self.state.flows.get("carrier", 0.0) + extra_sccm
        return flow * SCCM_TO_TORR_L_S / speed

    def _check_flow(self, channel: str, value: float, loc: Location) -> None:
        lo, hi = self.flow_channels[channel]
        if not lo <= value <= hi:
            self.d.error(
                f"{channel} flow {value:g} sccm is outside its range {lo:g}-{hi:g} sccm", loc
            )

    def setpoint(self, sp: m.Setpoint, b: _Body) -> None:
        ch = sp.channel
        if ch == "ozone":
            if self.tool.ozone is None:
                self.d.error(f"tool '{self.tool.name}' has no ozone generator", sp.loc)
                return
            if sp.value is None:
                self.state.ozone = None
                b.act(0, ActionKind.SET_OZONE, "ozone", None, loc=sp.loc)
            elif sp.kind is not m.ValueKind.FRACTION:
                self.d.error("the ozone setpoint is a concentration like '10 %'", sp.loc)
            else:
                self.set_ozone(sp.value, sp.loc, b)
            return
        if ch in self.temp_channels:
            if sp.kind is not m.ValueKind.TEMPERATURE and sp.value is not None:
                self.d.error(f"{ch} is a temperature channel; got a {sp.kind}", sp.loc)
                return
            if sp.value is not None:
                self._check_temperature(ch, sp.value, sp.loc)
            self.state.temps[ch] = sp.value
            self._seen_source(ch, sp.value)
            b.act(0, ActionKind.SET_TEMPERATURE, ch, sp.value, loc=sp.loc)
        elif ch in self.flow_channels:
            if sp.kind is not m.ValueKind.FLOW and sp.value is not None:
                self.d.error(f"{ch} is a flow channel; got a {sp.kind}", sp.loc)
                return
            value = 0.0 if sp.value is None else sp.value
            self._check_flow(ch, value, sp.loc)
            self.state.flows[ch] = value
            b.act(0, ActionKind.SET_FLOW, ch, value, loc=sp.loc)
        else:
            known = [*self.temp_channels, *self.flow_channels] + (
                ["ozone"] if self.tool.ozone else []
            )
            if not self._unknown_chemical_channel(ch, sp.loc):
                self.d.error(
                    f"tool '{self.tool.name}' has no channel '{ch}'",
                    sp.loc,
                    did_you_mean(ch, known) or ("channels: " + ", ".join(sorted(known))),
                )

    def _unknown_chemical_channel(self, ch: str, loc: Location) -> bool:
        """``source.X``/``line.X`` of a chemical nobody knows: say that, not "no channel"
        (one misspelt chemical must not read as a list of missing heaters)."""
        role, sep, name = ch.partition(".")
        if not sep or role not in ("source", "line") or name in self.tool.lines:
            return False
        if chemistry.lookup(name) is not None:
            return False
        self.d.error(
            f"unknown chemical '{name}' (in '{ch}')",
            loc,
            unknown_chemical_hint(name, [*chemistry.catalogue(), *self.tool.lines]),
        )
        return True

    def set_ozone(self, value: float, loc: Location, b: _Body) -> None:
        oz = self.tool.ozone
        if oz is None:
            self.d.error(f"tool '{self.tool.name}' has no ozone generator", loc)
            return
        if not 0 <= value <= oz.max:
            self.d.error(f"ozone setpoint {value:g} % is outside 0-{oz.max:g} %", loc)
        self.state.ozone = value
        b.act(0, ActionKind.SET_OZONE, "ozone", value, loc=loc)

    def _check_temperature(self, ch: str, value: float, loc: Location) -> None:
        lo, hi = self.temp_channels[ch]
        if not lo <= value <= hi:
            self.d.error(
                f"{ch} setpoint {value:g} degC is outside its limits {lo:g}-{hi:g} degC", loc
            )
        if ch == "substrate" and self.substrate_max is not None and value > self.substrate_max:
            self.d.error(
                f"substrate setpoint {value:g} degC is above {self.substrate_why}, "
                f"{self.substrate_max:g} degC",
                loc,
            )

    def ramp(self, step: m.Ramp, b: _Body) -> None:
        ch = step.channel
        if ch not in self.temp_channels:
            self.d.error(
                f"ramp needs a temperature channel; tool '{self.tool.name}' has no '{ch}'",
                step.loc,
                did_you_mean(ch, self.temp_channels),
            )
            return
        self._check_temperature(ch, step.target_c, step.loc)
        heater = self.tool.heaters.get(ch)
        if heater is not None and heater.ramp_max is not None and step.rate_k_min > heater.ramp_max:
            self.d.error(
                f"ramp rate {step.rate_k_min:g} K/min is faster than {ch} can follow "
                f"({heater.ramp_max:g} K/min)",
                step.loc,
            )
        start = self.state.temps.get(ch)
        if start is None:
            start = AMBIENT_C
        duration = abs(step.target_c - start) / step.rate_k_min * 60.0
        b.act(0, ActionKind.SET_TEMPERATURE, ch, step.target_c, rate=step.rate_k_min, loc=step.loc)
        self.state.temps[ch] = step.target_c
        self._seen_source(ch, step.target_c)
        b.span(to_ns(duration), _step_label(step))

    def wait_until(self, step: m.WaitUntil, b: _Body) -> None:
        conds: list[s.Condition] = []
        for c in step.conditions:
            sp: float | None = None
            if c.channel == "pressure":
                if not self.tool.gauges:
                    self.d.error(f"tool '{self.tool.name}' has no pressure gauge", c.loc)
            elif c.channel in self.temp_channels:
                sp = self.state.temps.get(c.channel)
            elif c.channel in self.flow_channels:
                sp = self.state.flows.get(c.channel)
            else:
                known = [*self.temp_channels, *self.flow_channels, "pressure"]
                if not self._unknown_chemical_channel(c.channel, c.loc):
                    self.d.error(
                        f"tool '{self.tool.name}' has no channel '{c.channel}'",
                        c.loc,
                        did_you_mean(c.channel, known),
                    )
                continue
            if c.relation is m.Relation.WITHIN and sp is None:
                self.d.error(
                    f"wait_until {c.channel} within {c.value:g}: {c.channel} has no setpoint yet",
                    c.loc,
                    "set it in an earlier step",
                )
                continue
            conds.append(s.Condition(c.channel, c.relation.value, c.value, to_ns(c.hold_s), sp))
        if conds:
            b.wait(
                s.Await(
                    tuple(conds),
                    to_ns(step.timeout_s),
                    step.on_timeout,
                    _step_label(step),
                    step.loc,
                    expected_ns=min(self._heat_up_ns(conds), to_ns(step.timeout_s)),
                )
            )

    def _heat_up_ns(self, conds: list[s.Condition]) -> int:
        """Expected time for the heaters to reach their setpoints and hold there: the
        simulated heater model on a simulated tool, the heater's ramp_max on a real one
        (none stated: unknown, 0). The planner adds it to the duration."""
        worst = 0.0
        for c in conds:
            if c.channel not in self.temp_channels or c.setpoint is None:
                continue
            start = self.heater_at.get(c.channel, AMBIENT_C)
            self.heater_at[c.channel] = c.setpoint
            if self.tool.simulator:
                t = heater_settle_s(c.channel, start, c.setpoint, AMBIENT_C, c.value)
            else:
                spec = self.tool.heaters.get(c.channel)
                rate = spec.ramp_max if spec is not None else None
                t = abs(c.setpoint - start) / rate * 60.0 if rate else 0.0
            if math.isfinite(t):
                worst = max(worst, t + c.hold_ns / NS)
        return to_ns(worst)


# ---------------------------------------------------------------------- helpers


def _with_process(c: s.CycleDef, proc: str, kind: str) -> s.CycleDef:
    return s.CycleDef(c.name, c.every, c.variants, c.chemicals, proc, kind)


def _subsequence(seq: Sequence[str], doses: Sequence[str]) -> bool:
    """True when ``seq`` appears in ``doses`` in order (other doses may come between)."""
    it = iter(doses)
    return all(c in it for c in seq)


def _has_loops(steps: tuple[m.Step, ...]) -> bool:
    for st in steps:
        if isinstance(st, m.CycleRun | m.Supercycle | m.Include):
            return True
        if isinstance(st, m.Repeat) and _has_loops(st.steps):
            return True
    return False


def _reject_nested_every(steps: tuple[m.Step, ...], d: Diagnostics, top: bool) -> None:
    for st in steps:
        if isinstance(st, m.Every) and not top:
            d.error(
                "'every' must sit directly in a cycle's step list, not inside another block", st.loc
            )
        if isinstance(st, m.Repeat):
            _reject_nested_every(st.steps, d, top=False)
        if isinstance(st, m.Every):
            _reject_nested_every(st.steps, d, top=False)


def _react(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` react with each other (must never meet in the gas)."""
    ca, cb = chemistry.lookup(a), chemistry.lookup(b)
    if ca is None or cb is None:
        return False
    reactive = {chemistry.Role.COREACTANT, chemistry.Role.PLASMA}
    if (ca.role is chemistry.Role.PRECURSOR and cb.role in reactive) or (
        cb.role is chemistry.Role.PRECURSOR and ca.role in reactive
    ):
        return True
    return _library_pair(ca.name, cb.name)


def _library_pair(a: str, b: str) -> bool:
    for proc in library.processes().values():
        for kind in proc.cycles.values():
            seq = kind.chemicals
            for x, y in zip(seq, seq[1:] + seq[:1], strict=True):
                if {x, y} == {a, b}:
                    return True
    return False


def _fmt_t(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    return f"{seconds:g} s"


def _step_label(step: m.Step) -> str:
    if isinstance(step, m.Pulse):
        return "pulse " + " + ".join(f"{d.chemical} {_fmt_t(d.duration_s)}" for d in step.doses)
    if isinstance(step, m.Purge):
        extra = f" at {step.carrier_sccm:g} sccm" if step.carrier_sccm else ""
        return f"purge {_fmt_t(step.duration_s)}{extra}"
    if isinstance(step, m.Expose):
        return (
            "expose " + " + ".join(d.chemical for d in step.doses) + f", hold {_fmt_t(step.hold_s)}"
        )
    if isinstance(step, m.Plasma):
        return f"{step.gas} plasma {step.power_w:g} W {_fmt_t(step.duration_s)}"
    if isinstance(step, m.Set):
        return "set " + ", ".join(
            f"{p.channel} {'off' if p.value is None else f'{p.value:g}'}" for p in step.setpoints
        )
    if isinstance(step, m.Ramp):
        return f"ramp {step.channel} to {step.target_c:g} degC at {step.rate_k_min:g} K/min"
    if isinstance(step, m.Wait):
        return f"wait {_fmt_t(step.duration_s)}"
    if isinstance(step, m.WaitUntil):
        return "wait until " + ", ".join(
            f"{c.channel} {c.relation.value} {c.value:g}" for c in step.conditions
        )
    if isinstance(step, m.Repeat):
        return f"repeat x{step.times}"
    if isinstance(step, m.CycleRun):
        return f"cycle {step.cycle}"
    if isinstance(step, m.Supercycle):
        return "supercycle"
    if isinstance(step, m.Include):
        return f"include {step.recipe.name}"
    return type(step).__name__.lower()
