"""A run session: everything between "run this recipe" and a finished, journaled run.

Shared by the command line (``aldctl run``/``resume``) and, later, the operator console:
prepare (load, provision, compile), open the journal, build and connect the tool, run the
engine on the right clock, close everything. Resume checks that it is safe and meaningful
to continue a journaled run before touching any device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aldctl import config as cfg
from aldctl.diagnostics import Diagnostic, Severity, UserError, did_you_mean
from aldctl.engine.clock import (
    RealClock,
    VirtualClock,
    collect_in_slack,
    release_realtime,
    request_realtime,
)
from aldctl.engine.control import RunControl
from aldctl.engine.events import EventBus
from aldctl.engine.journal import Journal, JournalError, RunMeta, RunOwned, sha256_text
from aldctl.engine.runner import Runner, RunOptions, RunResult, restore_actions
from aldctl.recipe.compile import Compiled, compile_recipe
from aldctl.recipe.load import Loaded, load_recipe, parse_overrides
from aldctl.recipe.model import Recipe
from aldctl.tool import Tool, ToolError, build

SIMULATED_PREFIX = "simulated-"


def recipe_chemicals(recipe: Recipe) -> list[str]:
    """Every dose chemical a recipe names (to provision the simulated tool's lines)."""
    from aldctl.recipe import model as m

    out: dict[str, None] = {}

    def walk(steps: tuple[m.Step, ...]) -> None:
        for st in steps:
            if isinstance(st, m.Pulse | m.Expose):
                for d in st.doses:
                    out[d.chemical] = None
            elif isinstance(st, m.Repeat | m.Every):
                walk(st.steps)
            elif isinstance(st, m.Include):
                walk(st.recipe.setup)
                walk(st.recipe.main)
                for c in st.recipe.cycles.values():
                    walk(c.steps)

    walk(recipe.setup)
    walk(recipe.main)
    walk(recipe.teardown)
    for c in recipe.cycles.values():
        walk(c.steps)
    return list(out)


def provision_lines(tool: cfg.ToolConfig, chemicals: Iterable[str]) -> cfg.ToolConfig:
    """Add one line per dosed chemical the tool has no line for (``auto_lines`` tools only).

    Heated chemicals (:func:`sim.config.heated_source_c`, the rule the simulator uses too)
    also get a source heater and a line heater,
    devices named ``source.<line>`` and ``line.<line>`` built from the heater template.
    """
    auto = tool.auto_lines
    if auto is None:
        return tool
    from sim import chemistry
    from sim.config import heated_source_c

    lines = dict(tool.lines)
    devices = dict(tool.devices)
    valves = auto.valves
    used = {line.valve.channel for line in lines.values() if line.valve.device == valves}
    if tool.pump_isolation is not None and tool.pump_isolation.device == valves:
        used.add(tool.pump_isolation.channel)
    channel = 0
    for chem_name in chemicals:
        chem = chemistry.lookup(chem_name)
        if chem is None or not chem.is_dose:
            continue
        if any(line.chemical == chem.name for line in lines.values()):
            continue
        while channel in used:
            channel += 1
        used.add(channel)
        heated = heated_source_c(chem.name) is not None  # the simulator's rule, shared
        gas = chem.state is chemistry.State.GAS
        if heated:
            for role in ("source", "line"):
                dev = f"{role}.{chem.name}"
                devices[dev] = cfg.DeviceSpec.model_validate({**auto.heater, "component": dev})
        flow = f"{auto.gas_flow:g} sccm" if gas and chem.name != "O3" else None
        lines[chem.name] = cfg.LineSpec(
            chemical=chem.name,
            valve=cfg.ChannelRef(device=valves, channel=channel),
            source_heater=f"source.{chem.name}" if heated else None,
            line_heater=f"line.{chem.name}" if heated else None,
            flow=flow,  # type: ignore[arg-type]  # validated with its unit, like YAML
            hazards=chem.hazards,
        )
    return tool.model_copy(update={"lines": lines, "devices": devices})


def known_chemicals() -> cfg.KnownChemicals:
    """The catalogue (shipped and the user's chemistry file) for checking a tool config."""
    from aldctl.chemfile import unknown_chemical_hint
    from sim import chemistry

    cat = chemistry.catalogue()
    return cfg.KnownChemicals(cat, lambda name: unknown_chemical_hint(name, cat))


def load_tool(config: Path | None, chemicals: list[str]) -> cfg.ToolConfig:
    from aldctl import chemfile

    chemfile.ensure()
    tool = cfg.load_builtin() if config is None else cfg.load_tool(config, known_chemicals())
    provisioned = provision_lines(tool, chemicals)
    if config is not None and provisioned is not tool:
        from aldctl import yamlsrc

        cfg.check_provisioned(provisioned, yamlsrc.load_file(config), str(config))
    return provisioned


@dataclass
class Prepared:
    loaded: Loaded
    tool: cfg.ToolConfig
    compiled: Compiled
    overrides: dict[str, Any]
    config_path: Path | None

    @property
    def warnings(self) -> list[Diagnostic]:
        return [*self.loaded.diagnostics, *self.compiled.diagnostics]

    @property
    def simulated(self) -> bool:
        return all(d.driver.startswith(SIMULATED_PREFIX) for d in self.tool.devices.values())

    @property
    def tool_key(self) -> str | None:
        """The name a run locks its tool by; None for a simulated tool (each run has its
        own reactor in its own process, so there is nothing shared to protect)."""
        return None if self.simulated else f"tool:{self.tool.name}"


def prepare(
    recipe_path: Path,
    config: Path | None,
    sets: list[str] | tuple[str, ...] = (),
    overrides: dict[str, Any] | None = None,
) -> Prepared:
    """Load, provision and compile; raise UserError with every problem found."""
    from aldctl.diagnostics import Diagnostics

    ov = dict(overrides) if overrides is not None else parse_overrides(list(sets))
    # Recipe and tool are checked in one pass: a broken recipe does not hide a misspelled
    # driver in the config, or the other way round.
    from aldctl import chemfile

    chemfile.ensure()  # the user's chemistry file: its errors come first, and alone
    problems = Diagnostics()
    loaded: Loaded | None = None
    try:
        loaded = load_recipe(recipe_path, ov)
    except UserError as exc:
        problems.extend(exc.diagnostics)
    try:
        tool = load_tool(config, recipe_chemicals(loaded.recipe) if loaded else [])
    except UserError as exc:
        problems.extend(exc.diagnostics)
    if loaded is None or any(d.severity == "error" for d in problems):
        if loaded is not None:
            problems.extend(loaded.diagnostics)
        raise UserError(list(problems))
    try:
        compiled = compile_recipe(loaded.recipe, tool)
    except UserError as exc:
        diags = Diagnostics()
        diags.extend(loaded.diagnostics)
        diags.extend(exc.diagnostics)
        raise UserError(list(diags)) from None
    peaks = predict_dose_peaks(compiled.schedule, tool)
    if peaks:
        compiled = Compiled(compiled.schedule, (*compiled.diagnostics, *peaks))
    return Prepared(loaded, tool, compiled, ov, config)


PEAK_SETTLE_TAU = 3.0
"""The chamber is watched this many residence times past the end of a dose for its peak."""
RECOVER_TAU = 10.0
"""A pressure hold's ``recover_within`` shorter than this many residence times warns: a
burst several times the hold limit takes a few of them to pump away."""


def predict_dose_peaks(schedule: Any, tool: cfg.ToolConfig) -> list[Diagnostic]:
    """Warn for every dose whose chamber pressure, on the tool's chamber model, peaks above
    the hold limit: each such dose trips the hold, is retried, and trips it again.

    Each distinct (line, pulse width) is dosed once on a fresh reactor model built from the
    tool config (its chamber volume, pumping and carrier; sources at the library's
    temperatures), from the carrier's steady state. Co-doses are checked one line at a time.
    """
    from aldctl.recipe import schedule as sch
    from aldctl.recipe.schedule import NS, ActionKind
    from aldctl.tool import simulated_reactor

    lim = tool.limits.pressure
    hold = lim.hold_above if lim.hold_above is not None else lim.max
    bodies = [schedule.setup, schedule.teardown]
    bodies += [block.body for block, _ in sch.walk_blocks(schedule.main)]
    for loop, _ in sch.walk_loops(schedule.main):
        for cycle in loop.cycles.values():
            bodies += list(cycle.variants.values())
    doses: dict[tuple[str, int], Any] = {}
    exposures: dict[tuple[Any, ...], tuple[Any, list[Any]]] = {}
    for body in bodies:
        for phase in body.phases:
            actions = list(getattr(phase, "actions", ()))
            windows = _isolated_windows(actions, ActionKind.PUMP_ISOLATION)
            for t0, t1, iso in windows:
                inside = [
                    a
                    for a in actions
                    if t0 <= a.offset_ns <= t1
                    and a.kind in (ActionKind.PULSE, ActionKind.SET_FLOW, ActionKind.PUMP_ISOLATION)
                ]
                key = tuple(
                    (a.offset_ns - t0, a.kind, a.target, a.value, a.duration_ns) for a in inside
                )
                exposures.setdefault(key, (iso, inside))
            for a in actions:
                if a.kind is ActionKind.PULSE and not any(
                    t0 <= a.offset_ns <= t1 for t0, t1, _ in windows
                ):
                    doses.setdefault((a.target, a.duration_ns), a)
    if not doses and not exposures:
        return []
    try:
        reactor = simulated_reactor(tool).reactor
    except (ValueError, KeyError):  # a chemical the model does not know: nothing to predict
        return []
    reactor.advance_to(reactor.now_ns + 30 * 10**9)  # carrier at steady state
    base = reactor.snapshot()
    tau = reactor.truth().residence_time_s
    out: list[Diagnostic] = []
    if lim.hold_above is not None and lim.recover_within < RECOVER_TAU * tau:
        out.append(
            Diagnostic(
                Severity.WARNING,
                f"limits.pressure.recover_within ({lim.recover_within:g} s) is under "
                f"{RECOVER_TAU:g} residence times of this chamber's model ({tau:.2g} s "
                "each): a pressure hold may abort before the pump could bring the chamber "
                "back under its hold limit",
                hint=f"set recover_within to at least {RECOVER_TAU * tau:.0f} s",
            )
        )
    for (line, width_ns), action in doses.items():
        chem = tool.lines[line].chemical if line in tool.lines else line
        reactor.restore(base)
        try:
            reactor.set_valve(chem, True)
        except (KeyError, ValueError):
            continue
        peak = reactor.truth().pressure_torr
        t_end = reactor.now_ns + width_ns
        step = max(width_ns // 20, 1_000_000)
        while reactor.now_ns < t_end:
            reactor.advance_to(min(t_end, reactor.now_ns + step))
            peak = max(peak, reactor.truth().pressure_torr)
        reactor.set_valve(chem, False)
        settle = reactor.now_ns + round(PEAK_SETTLE_TAU * min(tau, 10.0) * NS)
        while reactor.now_ns < settle:
            reactor.advance_to(min(settle, reactor.now_ns + 20_000_000))
            peak = max(peak, reactor.truth().pressure_torr)
        if peak > hold:
            out.append(
                Diagnostic(
                    Severity.WARNING,
                    f"a {width_ns / NS:g} s dose of {chem} peaks at {peak:.2g} Torr on this "
                    f"chamber's model, above the {hold:g} Torr hold limit: every such dose "
                    f"would trip the hold (the run aborts after "
                    f"{tool.limits.hold_retries} trips in a row)",
                    action.loc,
                    "shorten the pulse, or raise limits.pressure.hold_above if the chamber "
                    "takes it",
                )
            )
    for iso, inside in exposures.values():
        reactor.restore(base)
        t0 = reactor.now_ns - iso.offset_ns
        events: list[tuple[int, int, Any, bool]] = []
        for a in inside:
            events.append((a.offset_ns, 1, a, True))
            if a.kind is ActionKind.PULSE:
                events.append((a.offset_ns + a.duration_ns, 0, a, False))
        events.sort(key=lambda e: (e[0], e[1]))
        peak = reactor.truth().pressure_torr
        try:
            for offset, _, a, opening in events:
                while reactor.now_ns < t0 + offset:
                    reactor.advance_to(min(t0 + offset, reactor.now_ns + 50_000_000))
                    peak = max(peak, reactor.truth().pressure_torr)
                if a.kind is ActionKind.PULSE:
                    line = tool.lines[a.target].chemical if a.target in tool.lines else a.target
                    reactor.set_valve(line, opening)
                elif a.kind is ActionKind.SET_FLOW:
                    reactor.set_mfc(a.target, a.value or 0.0)
                else:
                    reactor.set_pump_isolation(bool(a.value))
        except (KeyError, ValueError):
            continue
        peak = max(peak, reactor.truth().pressure_torr)
        if peak > hold:
            doses_in = ", ".join(
                f"{a.target} {a.duration_ns / NS:g} s" for a in inside if a.kind is ActionKind.PULSE
            )
            out.append(
                Diagnostic(
                    Severity.WARNING,
                    f"an exposure ({doses_in or 'no dose'}, pump isolated "
                    f"{(max(a.offset_ns for a in inside) - iso.offset_ns) / NS:g} s, carrier "
                    f"'{tool.chamber.expose_carrier}') peaks at {peak:.2g} Torr on this "
                    f"chamber's model, above the {hold:g} Torr hold limit: the run would hold "
                    "at every exposure",
                    iso.loc,
                    "shorten the dose, or set chamber.expose_carrier to what the tool does "
                    "with its carrier while the chamber is isolated",
                )
            )
    return out


def _isolated_windows(actions: list[Any], kind: Any) -> list[tuple[int, int, Any]]:
    """(closed at, reopened at, the closing action) of each pump isolation in a phase."""
    out: list[tuple[int, int, Any]] = []
    start: Any = None
    for a in sorted((a for a in actions if a.kind is kind), key=lambda a: a.offset_ns):
        if not a.value and start is None:
            start = a
        elif a.value and start is not None:
            out.append((start.offset_ns, a.offset_ns, start))
            start = None
    return out


def open_journal(data_dir: Path | None, *, readonly: bool = False) -> Journal:
    from aldctl.engine.journal import default_data_dir

    try:
        return Journal(data_dir or default_data_dir(), readonly=readonly)
    except JournalError as exc:
        raise UserError(str(exc)) from None


@dataclass
class FaultSpec:
    """A simulator fault to inject: ``KIND[:TARGET][@SECONDS][+DURATION][,PARAM=VALUE...]``
    (``aldctl run --fault``, ``aldctl sim serve --fault``)."""

    kind: str
    target: str | None
    at_s: float
    duration_s: float | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """``KIND[:TARGET][@SECONDS][+DURATION][,PARAM=VALUE...]``.

        E.g. ``comm_timeout:chamber@30+10`` (the gauge goes silent 30 s after start, for
        10 s) or ``pressure_spike@20,torr=0,leak_sccm=90``.
        """
        from sim.faults import FaultKind

        usage = "expected KIND[:TARGET][@SECONDS][+DURATION][,PARAM=VALUE...]"
        head, *pairs = text.split(",")
        body, _, rest = head.partition("@")
        kind, _, target = body.partition(":")
        at, _, dur = rest.partition("+")
        kinds = [k.value for k in FaultKind]
        if kind.strip() not in kinds:
            raise UserError(
                Diagnostic(
                    Severity.ERROR,
                    f"--fault {text!r}: no fault kind '{kind.strip()}'",
                    hint=did_you_mean(kind.strip(), kinds) or "`aldctl sim faults` lists them",
                )
            )
        try:
            params = {k.strip(): float(v) for k, v in (p.split("=", 1) for p in pairs)}
            spec = cls(
                kind.strip(),
                target.strip() or None,
                float(at or 0.0),
                float(dur) if dur else None,
                params,
            )
        except ValueError:
            raise UserError(f"--fault {text!r}: {usage}") from None
        if not (0 <= spec.at_s < 1e9) or (spec.duration_s is not None and spec.duration_s <= 0):
            raise UserError(f"--fault {text!r}: times are seconds >= 0 (duration > 0)")
        from sim.faults import check_params

        try:
            check_params(spec.kind, spec.params)
        except ValueError as exc:
            raise UserError(
                Diagnostic(
                    Severity.ERROR,
                    f"--fault {text!r}: {exc}",
                    hint="`aldctl sim faults` lists every kind's parameters and ranges",
                )
            ) from None
        return spec

    def text(self) -> str:
        """The spec as ``--fault`` takes it (what the journal records)."""
        out = self.kind + (f":{self.target}" if self.target else "") + f"@{self.at_s:g}"
        out += f"+{self.duration_s:g}" if self.duration_s is not None else ""
        return out + "".join(f",{k}={v:g}" for k, v in self.params.items())

    def check_before_end(self, planned_s: float, latest_s: float) -> str | None:
        """A fault set for after the run's planned end would never fire: refused when no
        run of the plan lasts that long (every ``wait_until`` to its timeout: ``latest_s``);
        a warning (returned) when it fires only if the waits take that long."""
        if self.at_s >= latest_s:
            waits = (
                f"; {latest_s:.0f} s if every wait_until runs to its timeout"
                if latest_s > planned_s
                else ""
            )
            raise UserError(
                Diagnostic(
                    Severity.ERROR,
                    f"--fault {self.text()}: {self.at_s:g} s is at or after the run's planned "
                    f"end ({planned_s:.0f} s of process time{waits}): the fault would never "
                    "fire",
                    hint=f"give a time before {planned_s:.0f} s (`aldctl plan` shows the timeline)",
                )
            )
        if self.at_s >= planned_s:
            return (
                f"--fault {self.text()}: {self.at_s:g} s is after the run's planned end "
                f"({planned_s:.0f} s when every wait_until is met at once): it fires only if "
                "the waits take that much longer"
            )
        return None

    def inject(self, reactor: Any) -> None:
        """Schedule the fault on a simulated reactor, ``at_s`` after its present."""
        try:
            reactor.faults.inject(
                self.kind,
                self.target,
                at_ns=reactor.now_ns + round(self.at_s * 1e9) if self.at_s else None,
                duration_ns=round(self.duration_s * 1e9) if self.duration_s else None,
                **self.params,
            )
        except (ValueError, KeyError) as exc:
            msg = str(exc).strip("'\"")
            raise UserError(f"--fault {self.kind}: {msg}") from None


@dataclass
class RunRequest:
    prepared: Prepared
    realtime: bool
    seed: int = 0
    resume_of: str | None = None
    start_unit: int = 0
    sim_state: bytes | None = None
    faults: tuple[FaultSpec, ...] = ()
    """Simulator faults to inject (the built-in simulated tool only)."""


CHEMISTRY_KEY = "chemistry:"
"""Prefix of the chemistry file's entry among a run's recorded includes: a resume reads the
same file (and refuses one that changed), whatever $ALDCTL_CHEMISTRY says then."""


def _includes(recipe: Recipe) -> dict[str, str]:
    from aldctl import chemfile

    out = {}
    for p in recipe.includes:
        with contextlib.suppress(OSError):
            out[str(p)] = sha256_text(p.read_text(encoding="utf-8"))
    chem = chemfile.default_path()
    if chem is not None:
        with contextlib.suppress(OSError):
            out[CHEMISTRY_KEY + str(chem.resolve())] = sha256_text(chem.read_text("utf-8"))
    return out


def new_run(journal: Journal, req: RunRequest, realtime_detail: str) -> str:
    """Record the run and take it (and its tool) atomically; RunOwned when a live run
    drives the tool."""
    p = req.prepared
    rec = p.loaded.recipe
    config_text = None
    if p.config_path is not None:
        with contextlib.suppress(OSError):
            config_text = p.config_path.read_text(encoding="utf-8")
    return journal.new_run(
        RunMeta(
            recipe_path=str(rec.path.resolve()),
            recipe_name=rec.name,
            recipe_text=rec.text,
            includes=_includes(rec),
            overrides=p.overrides,
            params=rec.param_values(),
            config_path=str(p.config_path.resolve()) if p.config_path else None,
            config_text=config_text,
            tool=p.tool.name,
            clock="real" if req.realtime else "virtual",
            realtime=realtime_detail,
            units_total=p.compiled.schedule.units,
            faults=tuple(f.text() for f in req.faults),
        ),
        tool_key=p.tool_key,
    )


def check_resumable(journal: Journal, run_id: str) -> tuple[Prepared, int, bytes | None]:
    """Everything a resume needs, or a UserError saying why the run cannot be resumed.

    Read-only: taking the run over is :meth:`Journal.attach`, one transaction that checks
    again (owner dead, units unchanged) so that of two resumes exactly one drives the tool.
    """
    try:
        rec = journal.get(run_id)
    except JournalError as exc:
        raise UserError(str(exc)) from None
    run_id = rec.id
    owner = journal.owner_of(run_id)
    if owner is not None and owner.alive():
        raise RunOwned(f"run {run_id} is being driven by {owner.describe()}")
    if rec.outcome == "complete":
        raise UserError(
            f"run {run_id} completed ({rec.units_done} of {rec.units_total} "
            "units): there is nothing to resume"
        )
    path = Path(rec.recipe_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read the run's recipe {path}: {exc.strerror}") from None
    if sha256_text(text) != rec.recipe_sha256:
        raise UserError(
            f"the recipe {path} changed since run {run_id} started; resuming would "
            "run a different recipe (restore the file, or start a new run)"
        )
    chemistry = ""
    for inc, digest in rec.includes.items():
        is_chem = inc.startswith(CHEMISTRY_KEY)
        file = inc.removeprefix(CHEMISTRY_KEY)
        try:
            now = sha256_text(Path(file).read_text(encoding="utf-8"))
        except OSError:
            now = ""
        if now != digest:
            what = "chemistry file" if is_chem else "included recipe"
            raise UserError(f"the {what} {file} changed since run {run_id} started")
        if is_chem:
            chemistry = file
    # The run's own chemistry (none if it had none), for this process and a detached child.
    import os

    from aldctl.chemfile import ENV

    os.environ[ENV] = chemistry
    config = Path(rec.config_path) if rec.config_path else None
    if config is not None:
        try:
            ctext = config.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read the run's tool config {config}: {exc.strerror}") from None
        if ctext != rec.config_text:
            raise UserError(f"the tool config {config} changed since run {run_id} started")
    prepared = prepare(path, config, overrides=rec.overrides)
    done = journal.done_units(run_id)
    if done != list(range(len(done))):
        raise UserError(
            f"run {run_id}'s journal has gaps in its checkpoints; refusing to guess where to resume"
        )
    # A run that died in teardown (failed) resumes to run setup and teardown again; one
    # stopped or aborted there was ended on purpose.
    if len(done) >= prepared.compiled.schedule.units and rec.outcome != "failed":
        raise UserError(f"run {run_id} already ran every unit of main ({len(done)})")
    return prepared, len(done), journal.sim_state(run_id)


def dose_figures(p: Prepared) -> tuple[dict[str, float], dict[str, int]]:
    """Per line: grams a dose draws (the planner's vapour-draw estimate) and the doses of
    the whole run, for the diagnostics' remaining-doses estimate."""
    from aldctl.recipe.plan import plan

    try:
        pl = plan(p.compiled.schedule, p.tool)
    except Exception:  # an estimate only: a run never fails for want of it
        return {}, {}
    grams: dict[str, float] = {}
    for line, lp in pl.lines.items():
        cp = pl.chemicals.get(lp.chemical)
        if cp is not None and cp.grams is not None and cp.pulses:
            grams[line] = cp.grams / cp.pulses
    return grams, {line: lp.actuations for line, lp in pl.lines.items()}


async def execute(
    req: RunRequest,
    journal: Journal | None,
    *,
    bus: EventBus | None = None,
    control: RunControl | None = None,
    on_tool: Callable[[Tool], None] | None = None,
) -> RunResult:
    """Build and connect the tool, run the engine, close the tool. Inside the event loop."""
    p = req.prepared
    clock = RealClock() if req.realtime else VirtualClock()
    try:
        tool = build(p.tool, seed=req.seed)
    except UserError:
        raise
    if tool.simulation is not None and req.sim_state is not None:
        tool.simulation.restore(req.sim_state)
    if req.faults:
        reactor = getattr(tool.simulation, "reactor", None)
        if reactor is None:
            raise UserError("--fault needs the built-in simulated reactor (no --config)")
        for fault in req.faults:
            fault.inject(reactor)
    try:
        await tool.connect()
    except ToolError as exc:
        if journal is not None:
            journal.finish_if_open(f"devices did not connect: {exc}")
        raise UserError(str(exc)) from None
    if on_tool is not None:
        on_tool(tool)
    options = RunOptions(start_unit=req.start_unit)
    options.dose_grams, options.pulses_planned = dose_figures(p)
    if req.resume_of is not None and journal is not None:
        # The source gave the earlier sessions' doses too.
        options.pulses_before = journal.pulse_counts(req.resume_of)
    if req.resume_of is not None:
        options.restore = restore_actions(p.compiled.schedule, req.start_unit)
    runner = Runner(
        p.compiled.schedule, tool, clock, journal=journal, bus=bus, control=control, options=options
    )
    try:
        with collect_in_slack() if req.realtime else contextlib.nullcontext():
            return await runner.run()
    finally:
        await tool.close()
        if req.realtime:
            release_realtime()


def realtime_setup(realtime: bool) -> str:
    if not realtime:
        return "virtual time"
    status = request_realtime()
    return status.detail


__all__ = [
    "Prepared",
    "RunRequest",
    "check_resumable",
    "execute",
    "new_run",
    "open_journal",
    "prepare",
    "realtime_setup",
    "recipe_chemicals",
]


ANNOUNCE_ENV = "ALDCTL_ANNOUNCE_FD"


@dataclass(frozen=True)
class DetachedRun:
    run_id: str
    pid: int
    log: Path


def announce(run_id: str) -> None:
    """Tell the process that started us detached which run we took (then it may go)."""
    import os

    fd = os.environ.pop(ANNOUNCE_ENV, None)
    if fd is None:
        return
    with contextlib.suppress(OSError, ValueError):
        os.write(int(fd), f"{run_id} {os.getpid()}\n".encode())
        os.close(int(fd))


def start_detached(args: list[str], data_dir: Path, timeout_s: float = 60.0) -> DetachedRun:
    """Start ``aldctl ARGS`` as a run process of its own: a new session (no controlling
    terminal: closing this one, or an SSH drop, never reaches it), output to a log file in
    the data directory. Returns once the run has been taken in the journal, with its id;
    raises UserError with the log's last lines when it fails before that."""
    import os
    import select
    import subprocess
    import sys
    import time

    logs = data_dir / "runs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"detached-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    r, w = os.pipe()
    env = {**os.environ, ANNOUNCE_ENV: str(w), "ALDCTL_DATA_DIR": str(data_dir)}
    # setsid --fork: the run is a grandchild in a session of its own, so nothing here
    # waits on it (or is left holding it) and no terminal signal of ours reaches it. Without
    # util-linux's setsid, a child in a new session does the same (this process then holds
    # its handle until it exits).
    import shutil

    argv = [sys.executable, "-m", "aldctl", *args]
    setsid = shutil.which("setsid")
    with open(log, "wb") as out:
        launcher = subprocess.Popen(
            [setsid, "--fork", *argv] if setsid else argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(w,),
            env=env,
            start_new_session=setsid is None,
        )
    if setsid:
        launcher.wait(timeout=30)
    os.close(w)
    got = b""
    deadline = time.monotonic() + timeout_s
    try:
        while not got.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], 0.2)
            if ready:
                chunk = os.read(r, 256)
                if not chunk:
                    break
                got += chunk
    finally:
        os.close(r)
    # EOF without an id: the run process exited (or closed the pipe) before taking a run.
    run_id, _, pid = got.decode().strip().partition(" ")
    if not run_id:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise UserError(
            [Diagnostic(Severity.ERROR, line) for line in tail]
            or [Diagnostic(Severity.ERROR, "the run process exited before it started")]
        )
    final = logs / f"{run_id}.log"
    with contextlib.suppress(OSError):
        log.rename(final)
        log = final
    return DetachedRun(run_id, int(pid or 0), log)
