"""The ``aldctl`` command line.

Heavy imports (pint, pydantic, the simulator, pymodbus, textual) happen inside commands,
never at module import: ``aldctl --help`` must stay fast.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from aldctl._version import __version__
from aldctl.front.echo import echo

if TYPE_CHECKING:
    from aldctl.config import ToolConfig
    from aldctl.diagnostics import Diagnostic
    from aldctl.engine.journal import Journal
    from aldctl.engine.runner import RunResult
    from aldctl.recipe.compile import Compiled
    from aldctl.recipe.load import Loaded

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERNAL = 3

F = TypeVar("F", bound=Callable[..., Any])


def _echo_diagnostics(diags: list[Diagnostic] | tuple[Diagnostic, ...]) -> None:
    for d in diags:
        echo(d.format(), err=True)


def _fail(diags: list[Diagnostic]) -> NoReturn:
    _echo_diagnostics(diags)
    n = sum(1 for d in diags if d.severity == "error")
    echo(f"{n} error{'s' if n != 1 else ''}", err=True)
    sys.exit(EXIT_INVALID)


def _writable_journal(data_dir: Path | None) -> Journal:
    """The journal to record a run in, with a word on what opening it did (a migration)."""
    from aldctl.session import open_journal

    journal = open_journal(data_dir)
    if journal.notice is not None:
        echo(f"note: {journal.notice}", err=True)
    return journal


def _refuse(message: str) -> NoReturn:
    """A one-line refusal (exit 2): the command cannot go ahead, nothing was touched."""
    echo(f"error: {message}", err=True)
    sys.exit(EXIT_INVALID)


def config_option(f: F) -> F:
    return click.option(
        "--config",
        "-c",
        "config",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Tool configuration YAML (default: the built-in simulated reactor).",
    )(f)


def set_option(f: F) -> F:
    return click.option(
        "--set",
        "-s",
        "sets",
        multiple=True,
        metavar="NAME=VALUE",
        help="Override a recipe parameter, e.g. --set cycles=1000 --set 'T=250 degC'.",
    )(f)


def prepare(
    recipe_path: Path, config: Path | None, sets: tuple[str, ...]
) -> tuple[Loaded, ToolConfig, Compiled]:
    """Load, provision and compile; raise UserError with every problem found."""
    from aldctl.session import prepare as _prepare

    p = _prepare(recipe_path, config, sets)
    return p.loaded, p.tool, p.compiled


# ---------------------------------------------------------------------- commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="aldctl")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option(
    "--chemistry",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Your own chemicals and processes (YAML; default $ALDCTL_CHEMISTRY, else "
    "chemistry.yaml in the user config dir). See `aldctl chemicals --help`.",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, chemistry: Path | None) -> None:
    """Control and sequencing for ALD reactors.

    Recipes are YAML files that name chemicals, not valves; a tool configuration says
    which line carries what. Without --config every command uses the built-in simulated
    reactor, provisioned with a line for each chemical the recipe names.

    \b
    Quick start:
      aldctl validate recipes/*.yaml
      aldctl plan recipes/al2o3_tma_h2o.yaml --set cycles=1000
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if chemistry is not None:
        import os

        # Through the environment, so run processes started from here (detached runs,
        # the console's) read the same file.
        os.environ["ALDCTL_CHEMISTRY"] = str(chemistry.absolute())


@cli.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@config_option
@set_option
@click.option("--quiet", "-q", is_flag=True, help="Print errors only, no warnings or summary.")
def validate(
    recipes: tuple[Path, ...], config: Path | None, sets: tuple[str, ...], quiet: bool
) -> None:
    """Check recipes against a tool without running them.

    Every problem is reported, one line each, as FILE:LINE:COL: error: MESSAGE (hint:
    ...). Exit status 0 when every recipe is valid, 2 when any is not.

    \b
    Examples:
      aldctl validate recipes/*.yaml
      aldctl validate my.yaml --config config/hil.yaml
      aldctl validate recipes/al2o3_tma_h2o.yaml --set 'T=300 degC'
    """
    from aldctl.diagnostics import UserError
    from aldctl.recipe.load import parse_overrides

    bad = 0
    try:
        parse_overrides(list(sets))
    except UserError as exc:
        _fail(exc.diagnostics)
    for path in recipes:
        try:
            loaded, _, compiled = prepare(path, config, sets)
        except UserError as exc:
            bad += 1
            errors = [d for d in exc.diagnostics if d.severity == "error" or not quiet]
            _echo_diagnostics(errors)
            continue
        if not quiet:
            _echo_diagnostics([*loaded.diagnostics, *compiled.diagnostics])
            echo(f"{path}: ok ({compiled.schedule.units} checkpoints)")
    if bad:
        echo(f"{bad} of {len(recipes)} recipe(s) invalid", err=True)
        sys.exit(EXIT_INVALID)


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
@config_option
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def plan(recipe: Path, config: Path | None, sets: tuple[str, ...], as_json: bool) -> None:
    """Plan a recipe: duration, cycles, valve actuations, doses, thickness.

    Computed from the compiled schedule and the process library, without running
    anything. A duration with '>=' is a lower bound: the recipe waits on conditions
    (wait_until) that may take longer.

    \b
    Examples:
      aldctl plan recipes/al2o3_tma_h2o.yaml
      aldctl plan recipes/al2o3_tma_h2o.yaml --set cycles=1000 --json
      aldctl plan recipes/litaox_1_6.yaml --set n_ta=10
    """
    from aldctl.diagnostics import UserError
    from aldctl.recipe.plan import plan as make_plan

    try:
        loaded, tool, compiled = prepare(recipe, config, sets)
    except UserError as exc:
        _fail(exc.diagnostics)
    result = make_plan(compiled.schedule, tool)
    warnings = [*loaded.diagnostics, *compiled.diagnostics, *result.warnings]
    if as_json:
        out = result.to_json()
        out["warnings"] = [d.format() for d in warnings]
        echo(json.dumps(out, indent=2))
        return
    _echo_diagnostics(warnings)
    from aldctl.front.render import render_plan

    render_plan(result)


def data_dir_option(f: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="ALDCTL_DATA_DIR",
        help="Where the run journal lives (default: the user data directory, or $ALDCTL_DATA_DIR).",
    )(f)


def _expected(schedule: Any, tool: Any) -> tuple[float, float | None]:
    """(planned duration s, thickness nm at the end) for the displays: the plan's, which
    includes heat-up, or the schedule's minimum duration when the plan cannot be made."""
    from aldctl.recipe.plan import plan as make_plan

    try:
        p = make_plan(schedule, tool)
    except Exception:  # the plan is a courtesy for the displays: never a reason not to run
        return schedule.min_duration_ns / 1e9, None
    return p.duration_s, p.thickness_nm


def _detach(args: list[str], data_dir: Path | None, as_json: bool, child_json: bool = True) -> None:
    from aldctl.diagnostics import UserError
    from aldctl.engine.journal import default_data_dir
    from aldctl.session import start_detached

    data = data_dir or default_data_dir()
    try:
        started = start_detached([*args, "--json"] if child_json else args, data)
    except UserError as exc:
        _fail(exc.diagnostics)
    if as_json:
        echo(json.dumps({"run_id": started.run_id, "pid": started.pid, "log": str(started.log)}))
        return
    echo(f"run {started.run_id} started in the background (pid {started.pid})")
    echo(f"  watch and command it: aldctl tui --attach {started.run_id}")
    echo(f"  its output: {started.log}")


def _growth_warnings(result: RunResult) -> list[str]:
    """What the simulated film says about the run, as ``aldctl simulate`` says it: a run
    whose cycles grew nothing on the model says so (the same threshold)."""
    from aldctl.front.simulate import NO_GROWTH_A

    sim = result.simulation
    if sim is None or not result.cycles_completed:
        return []
    grown_a = float(sim.get("thickness_nm") or 0.0) * 10.0
    if grown_a >= NO_GROWTH_A * result.cycles_completed:
        return []
    return [
        f"no growth: {result.cycles_completed} cycles grew {grown_a / 10:.3f} nm on the "
        "simulated reactor: the doses meet no surface reaction of the process library "
        "(a missing co-reactant, or a chemistry the library does not have)"
    ]


def _publisher(tool_cfg: Any, api: Any, journal: Any, *, own_thread: bool) -> Any:
    """The run's MQTT bridge when the tool config enables telemetry, else None. A broker
    that cannot be set up (credentials file, TLS files) leaves the run without telemetry,
    said on stderr: telemetry is never a reason for a run not to run."""
    spec = tool_cfg.telemetry
    if spec is None or not spec.enabled:
        return None
    from aldctl.diagnostics import UserError
    from aldctl.front.telemetry.publisher import Publisher

    try:
        return Publisher(spec, tool=tool_cfg.name, api=api, journal=journal, own_thread=own_thread)
    except UserError as exc:
        for d in exc.diagnostics:
            echo(f"warning: telemetry off: {d.message}", err=True)
        return None


def _execute_run(
    req: Any,
    journal: Any,
    run_id: str,
    realtime_detail: str,
    as_json: bool,
    quiet_warnings: list[Any],
) -> None:
    from rich.console import Console

    from aldctl.engine.clock import run_real, run_virtual
    from aldctl.engine.control import RunControl
    from aldctl.engine.events import EventBus
    from aldctl.engine.opapi import Access, ApiServer, OperatorApi, RunStatus, socket_path
    from aldctl.front.runview import (
        Keys,
        ProgressView,
        interactive_terminal,
        print_summary,
        summary_json,
    )
    from aldctl.session import announce, execute

    console = Console(stderr=as_json)
    bus = EventBus()
    control = RunControl()
    sched = req.prepared.compiled.schedule
    tool_cfg = req.prepared.tool
    planned_s, expected_nm = _expected(sched, tool_cfg)
    status = RunStatus(
        run_id=run_id,
        recipe=sched.recipe,
        tool=sched.tool,
        units_total=sched.units,
        planned_s=planned_s,
        lines={name: ln.chemical for name, ln in tool_cfg.lines.items()},
        units_done=req.start_unit,
        expected_nm=expected_nm,
    )
    bus.listen(status.listener)
    api = OperatorApi(control, status)
    op = tool_cfg.operator
    server = ApiServer(
        api,
        bus,
        socket_path(journal.data_dir, run_id),
        Access(group=op.group, watchers_any=op.watchers == "any"),
    )
    publisher = _publisher(tool_cfg, api, journal, own_thread=not req.realtime)
    if not as_json:
        _echo_diagnostics(quiet_warnings)
        mode = f"real time; {realtime_detail}" if req.realtime else "virtual time"
        console.print(f"run [bold]{run_id}[/]: {sched.recipe} on {sched.tool} ({mode})")
        if publisher is not None:
            console.print(f"telemetry: {publisher.broker.url} as {publisher.t('#')}", markup=False)

    async def main() -> Any:
        keys = Keys(api, console, interactive_terminal() and not as_json)
        keys.install()
        try:
            await server.start()
        except OSError as exc:  # the run goes on without remote control, and says so
            console.print(f"operator API not available: {exc}", style="yellow", markup=False)
        if publisher is not None:
            publisher.start()
            bus.listen(publisher.listener)
        announce(run_id)  # a console that started us detached may attach now
        try:
            if as_json:
                return await execute(req, journal, bus=bus, control=control)
            view = ProgressView(
                console, sched.units, sched.min_duration_ns / 1e9, req.start_unit, req.realtime
            )
            keys.view = view
            bus.listen(view.listener)
            with view:
                return await execute(req, journal, bus=bus, control=control)
        finally:
            keys.remove()
            if publisher is not None:
                await publisher.stop()  # bounded: a broker that is away costs FLUSH_S at most
            await server.stop()

    runner = run_real if req.realtime else run_virtual
    try:
        result = runner(main())
    except BaseException as exc:
        # Whatever ended the process here (devices that would not connect, an internal
        # error), the run row must not stay "running" for ever.
        from aldctl.diagnostics import UserError

        why = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        journal.finish_if_open(f"failed before the run could start or finish: {why}")
        raise
    finally:
        journal.close()
    result.warnings.extend(_growth_warnings(result))
    try:
        if as_json:
            out = summary_json(run_id, result)
            # the recipe's own warnings too: a JSON reader sees what a terminal is shown
            out["warnings"] = [d.format() for d in quiet_warnings] + out["warnings"]
            echo(json.dumps(out, indent=2))
        else:
            print_summary(console, run_id, result, req.realtime)
        if publisher is not None:
            c = publisher.counters
            if c.dropped or c.sent < c.seq - c.dropped:
                why = f"; last error: {publisher.last_error}" if publisher.last_error else ""
                echo(
                    f"warning: telemetry: {c.sent} of {c.seq} messages reached "
                    f"{publisher.broker.url}, {c.dropped} dropped from the full queue{why}",
                    err=True,
                )
    except OSError:  # the terminal went away (SIGHUP): the journal has the record
        pass
    if result.journal_error is not None:
        with contextlib.suppress(OSError):
            echo(
                f"error: {result.journal_error}; the run was aborted to the safe state "
                "(`aldctl runs list` marks it failed once the journal can be written)",
                err=True,
            )
        sys.exit(EXIT_FAILED)
    if result.outcome != "complete" or result.not_verified_safe:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
@config_option
@set_option
@click.option(
    "--realtime",
    is_flag=True,
    help="Run on the wall clock (always so for real hardware). Without it the "
    "built-in simulator runs in virtual time, thousands of times faster.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the simulated reactor's noise."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON summary object instead of progress and text.",
)
@click.option(
    "--detach",
    is_flag=True,
    help="Start the run as a process of its own and return: it outlives this terminal. "
    "Watch and command it with `aldctl tui --attach RUN_ID`.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="KIND[:TARGET][@T]",
    help="Inject a fault into the built-in simulated reactor, T seconds of process time "
    "after the start (repeatable; before the planned end), e.g. valve_stuck_open:TMA@600, "
    "comm_timeout:chamber@200+5, pressure_spike@100,torr=2. `aldctl sim faults` lists the "
    "kinds, their targets and parameters (README, Fault injection). The run's record "
    "keeps the faults injected.",
)
@data_dir_option
def run(
    recipe: Path,
    config: Path | None,
    sets: tuple[str, ...],
    realtime: bool,
    seed: int,
    as_json: bool,
    detach: bool,
    faults: tuple[str, ...],
    data_dir: Path | None,
) -> None:
    """Run a recipe.

    Without --config it runs on the built-in simulated reactor in virtual time and
    reports the simulated film. Every run is journaled (SQLite under the data
    directory): `aldctl runs list` shows them, `aldctl resume RUN_ID` continues one
    after a crash or an abort.

    Ctrl-C opens a menu (one keypress): pause at the next checkpoint, resume, stop after
    this cycle, abort now. The run serves the operator API on a socket under the data
    directory: `aldctl tui --attach RUN_ID` watches and commands it from any terminal.
    Exit status: 0 complete, 1 stopped/aborted/failed, 2 invalid input or refused.

    \b
    Examples:
      aldctl run recipes/al2o3_tma_h2o.yaml
      aldctl run recipes/al2o3_tma_h2o.yaml --set cycles=1000 --json
      aldctl run recipes/al2o3_tma_h2o.yaml --config config/hil.yaml --realtime
      aldctl run recipes/al2o3_tma_h2o.yaml --detach
      aldctl run recipes/al2o3_tma_h2o.yaml --fault valve_stuck_open:TMA@900
    """
    from aldctl.diagnostics import UserError
    from aldctl.engine.journal import JournalError
    from aldctl.session import (
        FaultSpec,
        RunRequest,
        new_run,
        prepare,
        realtime_setup,
    )

    try:
        prepared = prepare(recipe, config, sets)
        fault_specs = tuple(FaultSpec.parse(f) for f in faults)
        if fault_specs and not prepared.simulated:
            raise UserError(
                "--fault injects into the built-in simulated reactor; with --config use "
                "`aldctl sim serve --fault` and the real drivers"
            )
        if fault_specs:
            from aldctl.recipe.plan import plan

            planned = plan(prepared.compiled.schedule, prepared.tool)
            # with wait_until steps the plan's duration is a lower bound; the run lasts at
            # most that plus every wait's timeout (holds aside)
            latest = planned.duration_s + (planned.wait_timeouts_s if planned.lower_bound else 0)
            for spec in fault_specs:
                late = spec.check_before_end(planned.duration_s, latest)
                if late is not None:
                    click.echo(f"warning: {late}", err=True)
            # the targets are checked on a reactor of this tool before the run is recorded
            from aldctl.tool import build

            probe = getattr(build(prepared.tool, seed=seed).simulation, "reactor", None)
            if probe is not None:
                for spec in fault_specs:
                    spec.inject(probe)
    except UserError as exc:
        _fail(exc.diagnostics)
    if detach:
        args = ["run", str(recipe), "--seed", str(seed)]
        args += ["--config", str(config)] if config else []
        args += [a for kv in sets for a in ("--set", kv)]
        args += [a for f in faults for a in ("--fault", f)]
        args += ["--realtime"] if realtime else []
        _detach(args, data_dir, as_json)
        return
    rt = realtime or not prepared.simulated
    req = RunRequest(prepared=prepared, realtime=rt, seed=seed, faults=fault_specs)
    journal = _writable_journal(data_dir)
    try:
        run_id = new_run(journal, req, "real time" if rt else "virtual time")
    except JournalError as exc:
        journal.close()
        _refuse(str(exc))
    detail = realtime_setup(rt)
    journal.note_realtime(detail)
    if rt and "not permitted" in detail and not as_json:
        echo(f"warning: {detail}", err=True)
    _execute_run(req, journal, run_id, detail, as_json, prepared.warnings)


@cli.command()
@click.argument("run_id")
@click.option("--realtime", is_flag=True, help="Run on the wall clock (as for `aldctl run`).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object.")
@click.option("--detach", is_flag=True, help="Resume as a process of its own and return.")
@data_dir_option
def resume(
    run_id: str, realtime: bool, seed: int, as_json: bool, detach: bool, data_dir: Path | None
) -> None:
    """Continue a crashed, aborted or stopped run at its next cycle.

    Setup runs again (temperatures, waits), setpoints that main had changed are restored,
    then the run continues at the first unit the journal does not hold as done: no cycle
    lost, none doubled. Refused for a completed run, one still running, or one whose
    recipe, includes or tool config changed since it started.

    \b
    Examples:
      aldctl runs list
      aldctl resume 20261123-153012-ab12
    """
    from aldctl.diagnostics import UserError
    from aldctl.engine.journal import JournalError
    from aldctl.session import (
        RunRequest,
        check_resumable,
        realtime_setup,
    )

    if detach:
        args = ["resume", run_id, "--seed", str(seed)] + (["--realtime"] if realtime else [])
        _detach(args, data_dir, as_json)
        return
    journal = _writable_journal(data_dir)
    try:
        prepared, start, sim_state = check_resumable(journal, run_id)
    except JournalError as exc:  # owned by a live process
        journal.close()
        _refuse(str(exc))
    except UserError as exc:
        journal.close()
        _fail(exc.diagnostics)
    run_id = journal.get(run_id).id
    rt = realtime or not prepared.simulated
    try:
        # The one atomic step: of two resumes started together exactly one gets here.
        journal.attach(
            run_id,
            "real time" if rt else "virtual time",
            expect_units=start,
            tool_key=prepared.tool_key,
        )
        journal.event(
            0.0, "resume", f"resumed at unit {start} of {prepared.compiled.schedule.units}"
        )
    except JournalError as exc:
        journal.close()
        _refuse(str(exc))
    detail = realtime_setup(rt)
    journal.note_realtime(detail)
    req = RunRequest(
        prepared=prepared,
        realtime=rt,
        seed=seed,
        resume_of=run_id,
        start_unit=start,
        sim_state=sim_state,
    )
    if not as_json:
        echo(f"resuming run {run_id} at unit {start}", err=True)
    _execute_run(req, journal, run_id, detail, as_json, [])


@cli.command()
@click.argument("recipe", required=False, type=click.Path(path_type=Path, dir_okay=False))
@config_option
@set_option
@click.option(
    "--attach", "attach", metavar="RUN_ID", help="Attach to this run (any unique prefix of its id)."
)
@click.option("--light", is_flag=True, help="Light theme (for a light terminal background).")
@click.option(
    "--virtual",
    is_flag=True,
    help="Start runs on the built-in simulator in virtual time (seconds for hours); by "
    "default the console starts them on the wall clock, to be watched.",
)
@data_dir_option
def tui(
    recipe: Path | None,
    config: Path | None,
    sets: tuple[str, ...],
    attach: str | None,
    light: bool,
    virtual: bool,
    data_dir: Path | None,
) -> None:
    """The operator console: start runs, attach to them, watch and command them.

    Runs are processes of their own: the console starts them detached (g) or attaches to
    one already running on this host, like tmux. Closing the console, an SSH drop or
    killing it never touches the run; `aldctl tui --attach RUN_ID` (or plain `aldctl tui`,
    which attaches to the newest live run) picks it up again from any terminal.

    Keys: o open a recipe, g start it, p pause, r resume, s stop after this cycle,
    a abort (confirmed), c clear an abort, k acknowledge alarms, / filter the log, q quit
    (the run goes on).

    \b
    Examples:
      aldctl tui recipes/al2o3_tma_h2o.yaml
      aldctl tui --attach 20261206-0624
      aldctl tui
    """
    from aldctl.engine.journal import default_data_dir
    from aldctl.front.tui.app import Console

    app = Console(
        data_dir=data_dir or default_data_dir(),
        recipe=recipe,
        config=config,
        sets=sets,
        attach=attach,
        recipes_root=recipe.parent if recipe is not None else Path.cwd(),
        light=light,
        realtime=not virtual,
    )
    app.run()


@cli.command()
@click.option(
    "--recipe",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Provision the built-in simulated tool with this recipe's lines.",
)
@click.option("--chemical", "chemicals", multiple=True, help="Provision a line for this chemical.")
@config_option
@click.option("--detach", is_flag=True, help="Start the session as a process of its own.")
@data_dir_option
def manual(
    recipe: Path | None,
    chemicals: tuple[str, ...],
    config: Path | None,
    detach: bool,
    data_dir: Path | None,
) -> None:
    """Manual mode: hold the tool, with the safety monitor on, and take commands.

    The session serves the operator API like a run; its `set` verb toggles a valve or
    changes a setpoint through the same permissives and interlocks as a recipe (no dose
    above the hold pressure, no two dose lines open together unless the tool allows the
    pair, setpoints inside their ranges). `aldctl tui` drives it (m); stop (s) ends it in
    the safe state. Always on the wall clock.

    \b
    Examples:
      aldctl manual --config config/hil.yaml --detach
      aldctl manual --recipe recipes/al2o3_tma_h2o.yaml
    """
    from aldctl.diagnostics import UserError
    from aldctl.engine.journal import JournalError, RunMeta
    from aldctl.session import load_tool, recipe_chemicals

    if detach:
        args = ["manual"] + (["--recipe", str(recipe)] if recipe else [])
        args += [a for c in chemicals for a in ("--chemical", c)]
        args += ["--config", str(config)] if config else []
        _detach(args, data_dir, False, child_json=False)
        return
    chems = list(chemicals)
    try:
        if recipe is not None:
            from aldctl.recipe.load import load_recipe

            chems += recipe_chemicals(load_recipe(recipe, {}).recipe)
        tool_cfg = load_tool(config, chems)
    except UserError as exc:
        _fail(exc.diagnostics)
    simulated = all(d.driver.startswith("simulated-") for d in tool_cfg.devices.values())
    journal = _writable_journal(data_dir)
    config_text = config.read_text(encoding="utf-8") if config else None
    try:
        run_id = journal.new_run(
            RunMeta(
                recipe_path="(manual)",
                recipe_name="manual session",
                recipe_text="",
                includes={},
                overrides={},
                params={"chemicals": chems},
                config_path=str(config.resolve()) if config else None,
                config_text=config_text,
                tool=tool_cfg.name,
                clock="real",
                realtime="manual",
                units_total=0,
            ),
            tool_key=None if simulated else f"tool:{tool_cfg.name}",
        )
    except JournalError as exc:
        journal.close()
        _refuse(str(exc))
    _manual_session(tool_cfg, journal, run_id)


def _manual_session(tool_cfg: Any, journal: Any, run_id: str) -> None:
    from rich.console import Console

    from aldctl.engine.clock import RealClock, run_real
    from aldctl.engine.control import RunControl
    from aldctl.engine.events import EventBus
    from aldctl.engine.journal import JournalError
    from aldctl.engine.manual import ManualSession
    from aldctl.engine.opapi import Access, ApiServer, OperatorApi, RunStatus, socket_path
    from aldctl.front.runview import Keys
    from aldctl.session import announce
    from aldctl.tool import ToolError, build

    console = Console(stderr=True)
    bus = EventBus()
    control = RunControl()
    status = RunStatus(
        run_id=run_id,
        recipe="manual session",
        tool=tool_cfg.name,
        units_total=0,
        planned_s=0.0,
        lines={n: ln.chemical for n, ln in tool_cfg.lines.items()},
    )
    bus.listen(status.listener)

    async def main() -> tuple[str, str]:
        tool = build(tool_cfg)
        try:
            await tool.connect()
        except ToolError as exc:
            journal.finish_if_open(f"devices did not connect: {exc}")
            raise
        session = ManualSession(tool, RealClock(), bus, control, journal)
        api = OperatorApi(control, status, manual=session)
        op = tool_cfg.operator
        server = ApiServer(
            api,
            bus,
            socket_path(journal.data_dir, run_id),
            Access(group=op.group, watchers_any=op.watchers == "any"),
        )
        keys = Keys(api, console, False)
        keys.install()
        await server.start()
        announce(run_id)
        console.print(
            f"manual session {run_id} on {tool_cfg.name}: aldctl tui --attach {run_id}",
            markup=False,
        )
        try:
            await session.run()
            # Recorded before the API closes: a console reads the record the moment the API
            # goes away, and must find the session's outcome there, not "running".
            with contextlib.suppress(JournalError):
                journal.finish(
                    session.outcome, session.reason, 0.0, {"safe_state_errors": session.safe_errors}
                )
        finally:
            keys.remove()
            await server.stop()
            await tool.close()
        return session.outcome, session.reason

    try:
        outcome, reason = run_real(main())
    except BaseException as exc:
        journal.finish_if_open(f"manual session failed: {type(exc).__name__}: {exc}")
        journal.close()
        raise
    journal.close()
    console.print(f"{outcome}: {reason}", markup=False)
    if outcome != "complete":
        sys.exit(EXIT_FAILED)


@cli.group()
def runs() -> None:
    """Inspect the run journal."""


@runs.command("list")
@click.option("-n", "limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
def runs_list(limit: int, as_json: bool, data_dir: Path | None) -> None:
    """List recent runs, newest first.

    \b
    Examples:
      aldctl runs list
      aldctl runs list -n 100 --json
    """
    from aldctl.session import open_journal

    journal = open_journal(data_dir, readonly=True)
    _warn_damaged(journal)
    rows = journal.runs(limit)
    journal.close()
    if as_json:
        echo(json.dumps([_run_json(r) for r in rows], indent=2))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    wide = console.width >= 110
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    # The id is what show and resume need: it never wraps or shortens; the others give way
    # (the tool and the process time only where there is room: runs show has them all).
    t.add_column("run", no_wrap=True, min_width=20)
    t.add_column("recipe", overflow="ellipsis", no_wrap=True, max_width=26)
    if wide:
        t.add_column("tool", overflow="ellipsis", no_wrap=True, max_width=16)
    t.add_column("started", no_wrap=True, min_width=11)
    t.add_column("outcome", no_wrap=True, min_width=8)
    t.add_column("units", no_wrap=True, justify="right")
    if wide:
        t.add_column("process", no_wrap=True)
    from aldctl.units import format_duration

    for r in rows:
        cells = [r.id, r.recipe_name, r.tool, r.started_at[5:16].replace("T", " ")]
        cells += [r.outcome, f"{r.units_done}/{r.units_total}", format_duration(r.process_s)]
        if not wide:
            cells = [c for i, c in enumerate(cells) if i not in (2, 6)]
        t.add_row(*cells)
    console.print(t)


def _warn_damaged(journal: Any) -> None:
    if journal.damaged is not None:
        echo(
            f"warning: the journal {journal.path} is damaged ({journal.damaged}): what is "
            "shown may be incomplete, and no new run will be added to it",
            err=True,
        )


def _run_json(r: Any) -> dict[str, Any]:
    return {
        "run_id": r.id,
        "recipe": r.recipe_name,
        "recipe_path": r.recipe_path,
        "tool": r.tool,
        "user": r.user,
        "host": r.host,
        "clock": r.clock,
        "realtime": r.realtime,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "outcome": r.outcome,
        "reason": r.reason,
        "units_done": r.units_done,
        "units_total": r.units_total,
        "process_s": r.process_s,
        "params": r.params,
        "overrides": r.overrides,
        "faults": r.faults,
        "summary": r.summary,
    }


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--plot",
    "plot",
    type=click.Path(path_type=Path, dir_okay=False),
    is_flag=False,
    flag_value=Path("-"),
    default=None,
    help="Also draw the dose responses, growth and temperatures into a PNG (default "
    "RUN_ID.png here) and print its path: for SSH sessions, copy it or open it remotely.",
)
@data_dir_option
def runs_show(run_id: str, as_json: bool, plot: Path | None, data_dir: Path | None) -> None:
    """Show one run: its record, events and pulse statistics.

    \b
    Examples:
      aldctl runs show 20261123-153012-ab12
      aldctl runs show 20261123-153012-ab12 --json
      aldctl runs show 2026112 --plot            # writes ./RUN_ID.png
      aldctl runs show 2026112 --plot /tmp/r.png
    """
    if plot is not None:
        _show_plot(run_id, plot, data_dir)
    from aldctl.diagnostics import UserError
    from aldctl.engine.journal import JournalError
    from aldctl.session import open_journal

    journal = open_journal(data_dir, readonly=True)
    _warn_damaged(journal)
    try:
        r = journal.get(run_id)
    except JournalError as exc:
        journal.close()
        _fail([UserError(str(exc)).diagnostics[0]])
    run_id = r.id
    events = list(journal.events(run_id))
    pulses = journal.pulses(run_id)
    journal.close()
    per_line: dict[str, dict[str, Any]] = {}
    for p in pulses:
        d = per_line.setdefault(p.line, {"chemical": p.chemical, "pulses": 0, "areas": []})
        d["pulses"] += 1
        if p.area_torr_s is not None:
            d["areas"].append(p.area_torr_s)
    lines = {
        k: {
            "chemical": v["chemical"],
            "pulses": v["pulses"],
            "mean_area_torr_s": (sum(v["areas"]) / len(v["areas"])) if v["areas"] else None,
        }
        for k, v in per_line.items()
    }
    if as_json:
        out = _run_json(r)
        out["events"] = [{"t": t, "kind": k, "state": st, "message": m} for t, k, st, m in events]
        out["lines"] = lines
        echo(json.dumps(out, indent=2))
        return
    from aldctl.units import format_duration

    echo(f"run {r.id}: {r.recipe_name} ({r.recipe_path}) on {r.tool}")
    echo(f"  by {r.user}@{r.host}, {r.clock} clock ({r.realtime}), started {r.started_at}")
    echo(f"  outcome: {r.outcome} {('- ' + r.reason) if r.reason else ''}")
    echo(f"  units {r.units_done}/{r.units_total}, process time {format_duration(r.process_s)}")
    if r.params:
        echo("  params: " + ", ".join(f"{k}={v}" for k, v in r.params.items()))
    if r.faults:
        echo(
            "  injected faults (simulator, aldctl run --fault; not a hardware failure): "
            + ", ".join(r.faults)
        )
    for line, d in lines.items():
        area = d["mean_area_torr_s"]
        echo(
            f"  {line}: {d['pulses']} pulses"
            + (f", mean pressure response {area:.3g} Torr s" if area is not None else "")
        )
    for name, dw in (r.summary.get("dose_watch") or {}).items():
        if dw.get("baseline") is None:
            continue
        left = dw.get("remaining_doses")
        echo(
            f"  diagnostics: {name}: {dw.get('seen')} seen, last "
            f"{max(0.0, dw.get('last_ratio') or 0.0):.0%} / lowest "
            f"{max(0.0, dw.get('min_ratio') or 0.0):.0%} of its baseline, "
            f"{dw.get('out_of_band')} out of band"
            + (f", about {left} doses left" if left is not None else "")
        )
    for line, pw in (r.summary.get("pulse_width") or {}).items():
        if pw.get("mistimed"):
            echo(
                f"  pulse width: {line}: {pw.get('mistimed')} of {pw.get('pulses')} pulses "
                f"outside the tolerance, worst {pw.get('worst_error_ms', 0.0):.1f} ms off"
            )
    if r.summary.get("host_stalls"):
        from aldctl.front.runview import host_stalls_line

        stall_line = host_stalls_line(r.summary["host_stalls"])
        if stall_line:
            click.echo(f"  {stall_line}")
    if r.summary.get("read_back"):
        from aldctl.engine.runner import after_words

        after = after_words(r.summary["read_back"])
        nvs = r.summary.get("not_verified_safe") or {}
        if nvs:
            echo(f"  safe state read back {after}: NOT verified safe:")
            for dev, what in nvs.items():
                echo(f"    {dev}: {what}")
        else:
            echo(f"  safe state read back {after}: verified safe")
    echo("  events:")
    for t, kind, _, msg in events[-30:]:
        echo(f"    {t:10.1f} s  {kind:<14} {msg}")


def _show_plot(run_id: str, plot: Path, data_dir: Path | None) -> None:
    from aldctl.diagnostics import UserError
    from aldctl.engine.journal import JournalError
    from aldctl.front.report import overview_png
    from aldctl.session import open_journal

    journal = open_journal(data_dir, readonly=True)
    try:
        full = journal.resolve(run_id)
        path = overview_png(journal, full, Path(f"{full}.png") if str(plot) == "-" else plot)
    except JournalError as exc:
        _fail([UserError(str(exc)).diagnostics[0]])
    finally:
        journal.close()
    echo(f"plot: {path}")


@cli.command()
@click.argument("run_id")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Directory the report goes into (as RUN_ID.html or RUN_ID.pdf).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "pdf"]),
    default="html",
    show_default=True,
    help="html: one self-contained file (figures embedded, opens offline); pdf: the same "
    "figures a page each, for print.",
)
@data_dir_option
def report(run_id: str, out: Path, fmt: str, data_dir: Path | None) -> None:
    """Write a run's report: summary, recipe, pressure traces, dose responses, pulse timing,
    temperatures and flows, growth, alarms and events.

    \b
    Examples:
      aldctl run recipes/al2o3_tma_h2o.yaml && aldctl report 20261206     # a run id prefix
      aldctl report 20261206-0649 --out reports/ --format pdf
    """
    from aldctl.diagnostics import UserError
    from aldctl.engine.journal import JournalError
    from aldctl.front.report import write
    from aldctl.session import open_journal

    journal = open_journal(data_dir, readonly=True)
    _warn_damaged(journal)
    try:
        path = write(journal, run_id, out, fmt)
    except JournalError as exc:
        _fail([UserError(str(exc)).diagnostics[0]])
    except OSError as exc:
        _fail([UserError(f"cannot write the report into {out}: {exc.strerror}").diagnostics[0]])
    finally:
        journal.close()
    echo(f"report: {path}")


@runs.command("export")
@click.argument("run_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "parquet"]),
    required=True,
    help="csv: a directory of one CSV per table plus run.json; json: one file with every "
    "table, the recipe text and the tool config; parquet: a directory of Parquet files "
    "(needs pip install 'aldctl[parquet]').",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Directory to write into.",
)
@data_dir_option
def runs_export(run_id: str, fmt: str, out: Path, data_dir: Path | None) -> None:
    """Export every table of a run (run, events, checkpoints, pulses, samples); the README
    documents the columns.

    \b
    Examples:
      aldctl runs export 20261206-0649 --format json
      aldctl runs export 20261206-0649 --format csv --out exports/
      aldctl runs export 20261206-0649 --format parquet
    """
    from aldctl.diagnostics import UserError
    from aldctl.engine.journal import JournalError
    from aldctl.front.export import export
    from aldctl.session import open_journal

    journal = open_journal(data_dir, readonly=True)
    _warn_damaged(journal)
    try:
        paths = export(journal, run_id, fmt, out)
    except JournalError as exc:
        _fail([UserError(str(exc)).diagnostics[0]])
    except UserError as exc:
        _fail(exc.diagnostics)
    except OSError as exc:
        _fail([UserError(f"cannot write into {out}: {exc.strerror}").diagnostics[0]])
    finally:
        journal.close()
    for p in paths:
        echo(str(p))


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
@config_option
@set_option
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the simulated sensors' noise."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--trace",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the full trace (pressures, coverage, thickness...) to this CSV file.",
)
@click.option(
    "--trace-interval",
    type=float,
    default=0.05,
    show_default=True,
    help="Trace sample interval, seconds of process time.",
)
@click.option(
    "--cells",
    type=click.IntRange(1, 200),
    help="Cut the simulated chamber into N cells along the flow (a cross-flow reactor; "
    "overrides the tool's `simulator: chamber: cells:`). Without it and without that option "
    "the chamber is well-stirred (0-D).",
)
@click.option(
    "--map",
    "map_at",
    metavar="X,X,...",
    help="Measure the film's thickness at these positions (fractions of the chamber length "
    "from the inlet, 0..1) after the run: an ellipsometry map.",
)
@click.option(
    "--map-points",
    type=click.IntRange(2, 50),
    help="Measure the thickness map at N points k/N of the length (k = 1..N, the last at the "
    "outlet): the layout `aldctl tune dose --profile` reads.",
)
@click.option(
    "--map-noise",
    default="0%",
    show_default=True,
    metavar="NOISE",
    help="Gaussian noise of the map's points: a share of the thickness (0.5%) or a length "
    "(0.2A, 0.05nm); seeded by --seed.",
)
@click.option(
    "--map-out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the map as CSV (thickness_nm,position per line) to this file.",
)
def simulate(
    recipe: Path,
    config: Path | None,
    sets: tuple[str, ...],
    seed: int,
    as_json: bool,
    trace: Path | None,
    trace_interval: float,
    cells: int | None,
    map_at: str | None,
    map_points: int | None,
    map_noise: str,
    map_out: Path | None,
) -> None:
    """Grow a recipe's film on the reactor model, without the engine.

    The compiled schedule is applied straight to the physics in virtual time: the answer
    to "what does this recipe grow" in a second. Reports thickness, growth per cycle and
    per cycle kind, composition, precursor drawn, and warns about sub-saturated doses and
    CVD growth from purges too short for the chamber's residence time.

    \b
    Examples:
      aldctl simulate recipes/al2o3_tma_h2o.yaml
      aldctl simulate recipes/al2o3_tma_h2o.yaml --set 'purge=0.5 s'
      aldctl simulate recipes/litaox_1_6.yaml --json --trace litaox.csv

    A cross-flow chamber (N cells along the flow) and its thickness map:

    \b
      aldctl simulate recipes/al2o3_tma_h2o.yaml --cells 10 --map 0,0.5,1
      aldctl simulate recipes/al2o3_tma_h2o.yaml --cells 20 --set tma_pulse=10ms \\
          --map-points 10 --map-noise 0.5% --map-out map.csv
    """
    from aldctl.diagnostics import UserError
    from aldctl.front import simulate as simmod
    from aldctl.session import prepare as _prepare

    spec: simmod.MapSpec | None = None
    try:
        noise_rel, noise_a = simmod.parse_noise(map_noise)
        if map_at is not None and map_points is not None:
            _refuse("--map and --map-points both give the map's positions (hint: use one)")
        if map_at is not None:
            spec = simmod.MapSpec(simmod.parse_positions(map_at), noise_rel, noise_a)
        elif map_points is not None:
            spec = simmod.MapSpec(simmod.map_points(map_points), noise_rel, noise_a)
    except ValueError as exc:
        _refuse(str(exc))
    if spec is None and map_out is not None:
        _refuse("--map-out needs the map's positions (hint: --map 0,0.5,1 or --map-points 10)")
    try:
        prepared = _prepare(recipe, config, sets)
    except UserError as exc:
        _fail(exc.diagnostics)
    if cells is not None:
        prepared = simmod.with_cells(prepared, cells)
    if trace_interval <= 0:
        _fail([UserError("--trace-interval must be positive").diagnostics[0]])
    try:
        out = simmod.simulate(
            prepared,
            seed=seed,
            trace=trace,
            trace_interval_s=trace_interval,
            thickness_map=spec,
        )
    except OSError as exc:
        _fail([UserError(f"cannot write the trace {trace}: {exc.strerror}").diagnostics[0]])
    except ValueError as exc:
        _refuse(f"{exc} (hint: check the tool config's `simulator:` section)")
    tmap = out.get("thickness_map")
    if map_out is not None and tmap is not None:
        rows = "".join(
            f"{v:.6f},{x:g}\n" for v, x in zip(tmap["thickness_nm"], tmap["positions"], strict=True)
        )
        tmp = map_out.with_name(map_out.name + ".tmp")
        try:
            tmp.write_text("thickness_nm,position\n" + rows, encoding="utf-8")
            tmp.replace(map_out)  # all or nothing
        except OSError as exc:
            _refuse(f"cannot write the map {map_out}: {exc.strerror}")
    if as_json:
        out["warnings"] = [d.format() for d in prepared.warnings] + out["warnings"]
        echo(json.dumps(out, indent=2))
        return
    _echo_diagnostics(prepared.warnings)
    from aldctl.units import format_duration

    echo(
        f"{out['recipe']}: {out['thickness_nm']:.2f} nm in {out['cycles']} cycles, "
        f"{format_duration(out['process_time_s'])} of process time"
    )
    if out["gpc_A"] is not None:
        echo(f"  growth per cycle {out['gpc_A']:.3f} A")
    for name, k in out["subcycles"].items():
        if len(out["subcycles"]) > 1:
            echo(f"  {name}: {k['count']} x {k['gpc_A']:.3f} A = {k['growth_nm']:.2f} nm")
    if len(out["composition"]) > 1:
        echo(
            "  cation fraction: "
            + ", ".join(f"{el} {v:.1%}" for el, v in out["composition"].items())
        )
    echo(
        "  precursor drawn: "
        + ", ".join(f"{c} {g * 1000:.2f} mg" for c, g in out["precursor_g"].items())
    )
    if out["cvd_thickness_nm"] > 0.0005:
        echo(f"  of which CVD {out['cvd_thickness_nm']:.3f} nm")
    for gb in out["growth_basis"]:
        u = f" +-{gb['uncertainty']:.0%}" if gb["uncertainty"] is not None else ""
        echo(f"  {gb['loop']}: library growth {gb['basis']}{u}: {gb['detail']}")
    chamber = out.get("chamber")
    if chamber is not None:
        echo(
            f"  chamber: {chamber['cells']} cells along the flow; the film above is at "
            f"{chamber['substrate_at']:g} of the length (the substrate); inlet "
            f"{chamber['thickness_nm'][0]:.2f} nm, outlet {chamber['thickness_nm'][-1]:.2f} nm"
        )
    if tmap is not None:
        kind = " (well-stirred chamber: one film everywhere)" if tmap["well_stirred"] else ""
        echo(f"  thickness map{kind}:")
        for x, v, tv in zip(tmap["positions"], tmap["thickness_nm"], tmap["truth_nm"], strict=True):
            echo(f"    {x:5.3f}  {v:8.3f} nm  (truth {tv:.3f} nm)")
    for w in out["warnings"]:
        echo(f"warning: {w}", err=True)
    if trace is not None:
        echo(f"  trace written to {trace}")
    if map_out is not None:
        echo(f"  thickness map written to {map_out}")


@cli.group()
def sim() -> None:
    """The simulated reactor behind the real wire protocols (hardware in the loop)."""


@sim.command("profile")
@click.option("--dose", "dose", required=True, metavar="TIME", help="Trial dose, e.g. 2s.")
@click.option("--chemical", default="TMA", show_default=True, help="Precursor (catalogue).")
@click.option("--points", type=click.IntRange(4, 20), default=10, show_default=True)
@click.option("--noise", type=float, default=0.0, show_default=True, help="Fraction of sat.")
@click.option("--length-cm", type=float, default=20.0, show_default=True)
@click.option("--width-cm", type=float, default=15.0, show_default=True)
@click.option("--gap-mm", type=float, default=5.0, show_default=True)
@click.option("--temperature-c", type=float, default=200.0, show_default=True)
@click.option("--pressure-torr", type=float, default=1.0, show_default=True)
@click.option("--carrier-sccm", type=float, default=100.0, show_default=True)
@click.option("--feed-sccm", type=float, default=1.0, show_default=True, help="Precursor feed.")
@click.option("--sites-per-nm2", type=float, default=4.0, show_default=True)
@click.option("--cells", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--diffusion/--no-diffusion", default=True, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--truth", is_flag=True, help="Also find the model's own saturation dose (stderr).")
def sim_profile(
    dose: str,
    chemical: str,
    points: int,
    noise: float,
    length_cm: float,
    width_cm: float,
    gap_mm: float,
    temperature_c: float,
    pressure_torr: float,
    carrier_sccm: float,
    feed_sccm: float,
    sites_per_nm2: float,
    cells: int,
    diffusion: bool,
    seed: int,
    truth: bool,
) -> None:
    """A trial dose on the cross-flow chamber model, as a thickness map (CSV on stdout).

    The chamber is a flat channel (length, width, gap) cut into --cells cells along the
    flow, plug flow with axial diffusion; the precursor's sticking probability at the
    temperature comes from the kinetics data. Prints the growth as a fraction of
    saturation at --points equally spaced points, the last at the outlet: the file
    `aldctl tune dose` reads. --noise adds Gaussian noise (a fraction of saturated growth).

    \b
    Examples:
      aldctl sim profile --dose 0.8s > trial.csv
      aldctl tune dose --profile trial.csv --trial-dose 0.8s
      aldctl sim profile --dose 0.8s --points 5 --noise 0.005 --truth > trial.csv
    """
    from aldctl.units import Kind, UnitError, parse

    try:
        t_s = parse(dose, Kind.TIME)
    except UnitError as exc:
        _refuse(f"--dose: {exc} (hint: a time with its unit, e.g. 2s)")
    if not t_s > 0.0:
        _refuse("--dose must be a positive time (hint: e.g. 2s)")
    from aldctl.front import simprofile as sp

    try:
        ch, r = sp.build(
            chemical,
            length_cm=length_cm,
            width_cm=width_cm,
            gap_mm=gap_mm,
            temperature_c=temperature_c,
            pressure_torr=pressure_torr,
            carrier_sccm=carrier_sccm,
            feed_sccm=feed_sccm,
            sites_per_nm2=sites_per_nm2,
            cells=cells,
            diffusion=diffusion,
        )
    except ValueError as exc:
        _refuse(str(exc))
    echo("fraction")
    for v in sp.profile(ch, r, t_s, points, noise, seed):
        echo(f"{v:.6f}")
    info = sp.describe(ch, r)
    echo(
        f"# {chemical}: beta {info['beta']:.3g}, Damkoehler {info['damkohler']:.3g}, "
        f"Peclet {info['peclet']:.3g}, residence {info['residence_time_s']:.3g} s",
        err=True,
    )
    if truth:
        echo(f"# saturation dose time on the model: {sp.true_saturation(ch, r):.4g} s", err=True)


@sim.command("faults")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def sim_faults(as_json: bool) -> None:
    """List the faults the simulator can inject: each kind, its target, what it does, and
    its parameters with their defaults and ranges.

    Give them to `aldctl run --fault` (the built-in simulated reactor, virtual time) or
    `aldctl sim serve --fault` (the emulators behind the real drivers) as
    KIND[:TARGET][@SECONDS][+DURATION][,PARAM=VALUE...]; a kind whose target is a fixed
    word (chamber, pump, rf, qcm, interlocks) takes it by default.

    \b
    Examples:
      aldctl sim faults
      aldctl run recipes/al2o3_tma_h2o.yaml --fault valve_stuck_open:TMA@300
      aldctl run recipes/al2o3_tma_h2o.yaml --fault pressure_spike@100,torr=2
      aldctl run recipes/al2o3_tma_h2o.yaml --fault comm_timeout:chamber@200+5
    """
    from sim.faults import catalogue

    rows = catalogue()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["kind"]) for r in rows) + 2
    for r in rows:
        target = r["target"] + (" (default)" if r["default_target"] else "")
        click.echo(f"{r['kind'].ljust(width)}:TARGET = {target}")
        click.echo(f"{''.ljust(width)}{r['effect']}")
        for name, p in r["params"].items():
            default = "none" if p["default"] is None else f"{p['default']:g}"
            click.echo(f"{''.ljust(width)}  {name}={default}  in {p['range']}: {p['meaning']}")
    click.echo(
        "\nas --fault KIND[:TARGET][@SECONDS][+DURATION][,PARAM=VALUE...], e.g. "
        "valve_stuck_open:TMA@300 or pressure_spike@100,torr=2 (`aldctl run --help`)"
    )


@sim.command("serve")
@config_option
@click.option(
    "--dir",
    "state_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Serve everything inside DIR: serial ports as pseudo-terminals in DIR/tty/, Modbus "
    "TCP on free ports, and DIR/tool.yaml = the config with those endpoints, for `aldctl run "
    "--config DIR/tool.yaml`; plus endpoints.json, status.json, edges.csv. Without it the "
    "config's own endpoints are served and the files go next to its first serial port.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="KIND[:TARGET][@S][+DUR][,P=V]",
    help="Inject a simulator fault, e.g. comm_timeout:chamber@30+10 or "
    "pressure_spike@20,torr=0,leak_sccm=90. Repeatable. `aldctl sim faults` lists the kinds, "
    "their targets and parameters.",
)
def sim_serve(
    config: Path | None, state_dir: Path | None, seed: int, faults: tuple[str, ...]
) -> None:
    """Serve the simulated reactor over Modbus TCP/RTU and serial pseudo-terminals.

    For every device of the tool configuration (default config/hil.yaml), the matching
    emulator listens where the configuration says: Modbus TCP servers on their ports,
    pseudo-terminals linked at the serial ports' paths. The physics runs in real time.
    Then, in another terminal, run recipes against it with the real drivers. Stop with
    Ctrl-C. With --dir, several servers run side by side (their own ports and files).

    \b
    Examples:
      aldctl sim serve
      aldctl run recipes/al2o3_tma_h2o.yaml --config config/hil.yaml   # other terminal
      aldctl sim serve --dir /tmp/me
      aldctl run recipes/al2o3_tma_h2o.yaml --config /tmp/me/tool.yaml --realtime
      aldctl sim serve --fault comm_timeout:chamber@60+20
    """
    from aldctl import config as cfg
    from aldctl.diagnostics import UserError
    from aldctl.engine.clock import run_real
    from aldctl.front.simserve import SimServer, serve_forever
    from aldctl.session import FaultSpec, known_chemicals

    path = config or Path("config/hil.yaml")
    _load_chemistry()  # the lines may carry a lab's own chemicals
    try:
        tool = cfg.load_tool(path, known_chemicals())
        server = SimServer(
            tool,
            seed=seed,
            state_dir=state_dir,
            faults=[FaultSpec.parse(f) for f in faults],
            relocate=state_dir is not None,
            source=path,
        )
        server.build()
    except UserError as exc:
        _fail(exc.diagnostics)

    def ready(srv: SimServer) -> None:
        echo(f"serving {tool.name} (simulated reactor, real time) from {path}:")
        for s in srv.served:
            echo(f"  {s.kind:<22} {s.where:<34} {', '.join(s.devices)}")
        if srv.relocate:
            echo(f"tool config for these endpoints: {srv.state_dir}/tool.yaml")
        echo(
            f"status: {srv.state_dir}/status.json, valve edges: "
            f"{srv.state_dir}/edges.csv; Ctrl-C stops"
        )

    try:
        run_real(serve_forever(server, ready))
    except UserError as exc:
        _fail(exc.diagnostics)
    echo("stopped", err=True)


def _load_chemistry() -> Path | None:
    from aldctl import chemfile
    from aldctl.diagnostics import UserError

    try:
        return chemfile.ensure()
    except UserError as exc:
        _fail(exc.diagnostics)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
def chemicals(as_json: bool) -> None:
    """List the chemicals aldctl knows, with sources and what is assumed.

    The shipped catalogue (sim/data/chemicals.yaml) plus your own chemistry file, which
    adds chemicals or replaces shipped entries. The file is found in this order:
    --chemistry FILE, $ALDCTL_CHEMISTRY, chemistry.yaml in the user config directory
    (~/.config/aldctl/ on Linux).

    \b
    A chemistry file (every value with its unit; errors are FILE:LINE:COL like a recipe's):
      chemicals:
        TEMAHf:
          name: tetrakis(ethylmethylamido)hafnium
          role: precursor              # precursor | coreactant | gas | plasma
          state: liquid                # liquid | solid | gas
          molar_mass: 410.9 g/mol
          element: Hf                  # the cation it brings to the film
          source_T: 75 degC
          vapour: [{T: 75 degC, p: 0.1 Torr}, {T: 100 degC, p: 0.45 Torr}]
          hazards: [water-reactive]
          decomposition: {onset: 275 degC, from: literature, note: "where it comes from"}
      processes:
        HfO2-TEMAHf-H2O:
          film: HfO2
          half_reactions: [TEMAHf, H2O]
          phase: {formula: HfO2, density: 9.7 g/cm**3, molar_mass: 210.5 g/mol,
                  cations: {Hf: 1}}
          window: [200 degC, 300 degC]
          gpc: [{T: 250 degC, value: 1.0 angstrom}]
          source: "our ellipsometry, 2026-11"

    \b
    Examples:
      aldctl chemicals
      aldctl --chemistry lab.yaml chemicals --json
    """
    from aldctl.hazards import INTERLOCK_LABELS, required
    from sim import chemistry

    path = _load_chemistry()
    rows: list[dict[str, Any]] = []
    for c in chemistry.catalogue().values():
        vp = None
        if c.vapour is not None and c.source_t_min is not None:
            vp = c.vapour_pressure_torr(c.source_t_min)
        rows.append(
            {
                "name": c.name,
                "role": c.role.value,
                "state": c.state.value,
                "molar_mass_g_mol": c.molar_mass,
                "source_T_C": c.source_t_min,
                "source_T": None
                if c.source_t_min is None
                else ("assumed" if c.source_t_assumed else "data"),
                "vapour_torr_at_source_T": vp,
                "vapour": None
                if c.vapour is None
                else ("assumed" if c.vapour_assumed else "curve"),
                "decomposition_onset_C": c.decomposition_onset_c,
                "decomposition": c.decomposition_from or None,
                "decomposition_note": c.decomposition_note or None,
                "hazards": list(c.hazards),
                "interlocks": sorted(required(c.hazards)),
                "origin": c.origin or "shipped",
                "source": c.source or None,
            }
        )
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"chemicals (user file: {path or 'none'})", title_justify="left")
    for col in ("name", "role", "M g/mol", "source", "p at source", "onset", "hazards", "from"):
        t.add_column(col)
    for r in rows:
        src = "-" if r["source_T_C"] is None else f"{r['source_T_C']:g} degC ({r['source_T']})"
        vp_text = (
            "-"
            if r["vapour_torr_at_source_T"] is None
            else f"{r['vapour_torr_at_source_T']:.2g} Torr ({r['vapour']})"
        )
        onset = (
            "-"
            if r["decomposition_onset_C"] is None
            else f"{r['decomposition_onset_C']:g} degC ({r['decomposition']})"
        )
        hz = ", ".join(r["hazards"]) or "-"
        if r["interlocks"]:
            hz += " -> " + ", ".join(INTERLOCK_LABELS[i] for i in r["interlocks"])
        t.add_row(
            r["name"], r["role"], f"{r['molar_mass_g_mol']:g}", src, vp_text, onset, hz, r["origin"]
        )
    Console().print(t)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
def processes(as_json: bool) -> None:
    """List the processes of the library, with their growth data and what it rests on.

    The shipped library (sim/data/processes.yaml, five review papers) plus the processes
    of your own chemistry file (see `aldctl chemicals --help`), which may replace a
    shipped process with your tool's calibration: the same id with your 'gpc:' points.

    \b
    Examples:
      aldctl processes
      aldctl --chemistry lab.yaml processes --json
    """
    from sim import growthbasis, library

    path = _load_chemistry()
    rows: list[dict[str, Any]] = []
    for p in library.processes().values():
        b = growthbasis.summary(p)
        rows.append(
            {
                "id": p.id,
                "film": p.film,
                "kind": p.kind,
                "cycles": {k: list(c.chemicals) for k, c in p.cycles.items()},
                "range_C": list(p.valid_range),
                "window_C": list(p.window) if p.window else None,
                "gpc_A": {k: [list(pt) for pt in c.points] for k, c in p.cycles.items()},
                "basis": b.label,
                "basis_detail": b.detail,
                "uncertainty": b.uncertainty,
                "source": p.source or ("" if p.origin else "processes.yaml (five reviews)"),
                "origin": p.origin or "shipped",
            }
        )
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"processes (user file: {path or 'none'})", title_justify="left")
    for col in ("id", "doses", "range degC", "growth A/cycle (T degC)", "rests on", "from"):
        t.add_column(col)
    for r in rows:
        doses = " | ".join(
            f"{k}: {'/'.join(v)}" if len(r["cycles"]) > 1 else "/".join(v)
            for k, v in r["cycles"].items()
        )
        gpc = "; ".join(
            (f"{k}: " if len(r["gpc_A"]) > 1 else "")
            + ", ".join(f"{g:g} ({t_:g})" for t_, g in pts)
            for k, pts in r["gpc_A"].items()
        )
        lo, hi = r["range_C"]
        u = f" +-{r['uncertainty']:.0%}" if r["uncertainty"] is not None else ""
        t.add_row(r["id"], doses, f"{lo:g}-{hi:g}", gpc, r["basis"] + u, r["origin"])
    Console().print(t)


@cli.group()
def library() -> None:
    """The process library: its growth data checked against the recipes."""


@library.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
@click.option(
    "--recipes",
    "root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("recipes"),
    show_default=True,
    help="Where the recipes are (each names its process in its header).",
)
@click.option("--cycles", type=int, default=10, show_default=True, help="Cycles per simulation.")
@click.option(
    "--supercycles", type=int, default=3, show_default=True, help="Supercycles per simulation."
)
def library_check(as_json: bool, root: Path, cycles: int, supercycles: int) -> None:
    """Simulate every published growth figure with its recipe and compare.

    For every library process with growth figures, its recipe (the one in RECIPES whose
    header says 'Growth data: process ID') is simulated as `aldctl simulate` would, on the
    built-in tool, at each published temperature and subcycle ratio. Prints simulated vs
    published growth per cycle (or per supercycle, as the data give it), the relative
    error, the library's leave-one-out prediction error at that point (processes with
    several points), whether the purges clear the chemistry (CVD under 1 % of the film)
    and what the figure rests on. Exit status 1 when a point is off by more than 5 %.

    \b
    Examples:
      aldctl library check
      aldctl --chemistry lab.yaml library check --json
    """
    from aldctl.front.librarycheck import check, table

    _load_chemistry()
    if not root.is_dir():
        _refuse(f"{root}: no such directory (give the recipes' directory with --recipes)")
    rows = check(root, cycles=cycles, supercycles=supercycles)
    if as_json:
        echo(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        echo(table(rows))
    if any(r.off for r in rows):
        sys.exit(EXIT_FAILED)


@cli.group()
def tool() -> None:
    """Inspect tool configurations."""


@tool.command("show")
@click.argument("recipe", required=False, type=click.Path(path_type=Path, dir_okay=False))
@config_option
def tool_show(recipe: Path | None, config: Path | None) -> None:
    """Print a tool configuration as aldctl reads it.

    With RECIPE, the tool is shown provisioned for that recipe's chemicals: for the
    built-in simulated reactor, a starting point for your own reactor's config.

    \b
    Examples:
      aldctl tool show
      aldctl tool show recipes/litaox_1_6.yaml > my-tool.yaml
    """
    import yaml

    from aldctl import config as cfg
    from aldctl.diagnostics import UserError
    from aldctl.recipe.load import load_recipe
    from aldctl.session import load_tool, recipe_chemicals

    try:
        chems = recipe_chemicals(load_recipe(recipe).recipe) if recipe else []
        t = load_tool(config, chems)
    except UserError as exc:
        _fail(exc.diagnostics)
    echo(yaml.safe_dump(cfg.plain_for_display(t), sort_keys=False), nl=False)


def broker_options(f: F) -> F:
    """--broker and how to log in, shared by `monitor` and `record`."""
    opts = [
        click.option(
            "--broker",
            default="mqtt://localhost",
            show_default=True,
            envvar="ALDCTL_MQTT_BROKER",
            help="mqtt://host[:port] or mqtts://host[:port] (TLS); also $ALDCTL_MQTT_BROKER. "
            "User name and password come from $ALDCTL_MQTT_USERNAME/$ALDCTL_MQTT_PASSWORD "
            "or --credentials, never the URL.",
        ),
        click.option(
            "--credentials",
            type=click.Path(path_type=Path, dir_okay=False),
            help="File with the user name on line 1 and the password on line 2.",
        ),
        click.option("--ca", type=click.Path(path_type=Path, dir_okay=False), help="CA (PEM)."),
        click.option(
            "--cert", type=click.Path(path_type=Path, dir_okay=False), help="Client cert (PEM)."
        ),
        click.option(
            "--key", type=click.Path(path_type=Path, dir_okay=False), help="Client key (PEM)."
        ),
        click.option("--prefix", default="ald", show_default=True, help="Topic root."),
        click.option(
            "--mqtt-version",
            type=click.Choice(["5", "3.1.1"]),
            default="5",
            show_default=True,
            help="3.1.1 for brokers that speak only that.",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _broker(
    url: str,
    credentials: Path | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    mqtt_version: str = "5",
) -> Any:
    from aldctl.diagnostics import UserError
    from aldctl.front.telemetry.broker import connect_info

    try:
        return connect_info(
            url, credentials_file=credentials, ca=ca, cert=cert, key=key, mqtt_version=mqtt_version
        )
    except UserError as exc:
        _fail(exc.diagnostics)


@cli.command()
@broker_options
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one per change of a tool.")
@click.option(
    "--once",
    is_flag=True,
    help="Print the fleet as the broker holds it (after --wait seconds) and exit.",
)
@click.option("--wait", type=float, default=1.0, show_default=True, help="With --once.")
def monitor(
    broker: str,
    credentials: Path | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    prefix: str,
    mqtt_version: str,
    as_json: bool,
    once: bool,
    wait: float,
) -> None:
    """Watch every tool that publishes to an MQTT broker.

    One row per tool: online or offline (the run process's last will), run state,
    recipe, cycle n/N, ETA and the last alarm; the selected tool's run panel below.
    Tools publish when their config has a `telemetry:` section (README: "Fleet telemetry").

    \b
    Examples:
      aldctl monitor --broker mqtt://broker.lab
      aldctl monitor --once --json | jq '.[] | select(.state == "held")'
      aldctl monitor --json            # a JSON line per change, for scripts
    """
    import asyncio

    from aldctl.front.telemetry.monitor import Fleet, make_app, text_table, watch

    target = _broker(broker, credentials, ca, cert, key, mqtt_version)
    if once or as_json:
        fleet = Fleet(prefix)

        def changed(tool: str) -> None:
            if as_json and not once:
                echo(json.dumps(fleet.tools[tool].row()))

        def link(text: str) -> None:
            if "retrying" in text:
                echo(f"warning: {text}", err=True)

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(watch(target, fleet, changed, on_link=link, stop=stop))
            try:
                if once:
                    await asyncio.sleep(wait)
                    stop.set()
                await task
            finally:
                stop.set()
                await task

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
        if once:
            if as_json:
                echo(json.dumps(fleet.rows(), indent=2))
            else:
                from rich.console import Console

                Console().print(text_table(fleet.rows()))
        return
    make_app(target, prefix).run()


@cli.command()
@broker_options
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory of the record: OUT/<tool>/<YYYY-MM-DD>.sqlite.",
)
@click.option(
    "--client-id",
    help="The historian's MQTT session (default aldctl-record-<host>). Keep it fixed: the "
    "broker holds what arrives while the historian is down for this id.",
)
def record(
    broker: str,
    credentials: Path | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    prefix: str,
    mqtt_version: str,
    out: Path,
    client_id: str | None,
) -> None:
    """Record every tool's telemetry, pulses, events and alarms from a broker.

    Appends to SQLite files partitioned by tool and UTC day, OUT/<tool>/<day>.sqlite
    (tables telemetry, pulses, events). Restart-safe: a persistent session keeps what
    arrives while it is down, and a message stored twice is stored once. Runs until
    Ctrl-C or SIGTERM.

    \b
    Examples:
      aldctl record --broker mqtt://broker.lab --out /srv/ald-history
      sqlite3 /srv/ald-history/reactor-a/2026-12-06.sqlite 'select count(*) from pulses'
    """
    import asyncio
    import signal

    from aldctl.front.telemetry.historian import record as run_record

    target = _broker(broker, credentials, ca, cert, key, mqtt_version)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _refuse(f"cannot create {out}: {exc.strerror}")

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_record(
            target,
            out,
            client_id=client_id,
            prefix=prefix,
            stop=stop,
            on_status=lambda text: echo(text, err=True),
        )

    stats = asyncio.run(main())
    echo(
        f"stored {stats.new} messages ({stats.duplicates} duplicates ignored, "
        f"{stats.rejected} not ours) in {out}",
        err=True,
    )


class _TuneGroup(click.Group):
    """`aldctl tune RECIPE` as well as `aldctl tune dose ...`: a first argument that is not a
    subcommand is the recipe of `tune recipe`."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return "recipe", self.commands["recipe"], args
        return super().resolve_command(ctx, args)


@cli.group(cls=_TuneGroup)
def tune() -> None:
    """Saturating dose and purge times from one trial.

    \b
    aldctl tune RECIPE [--config C] [--line CHEM] [--write OUT.yaml] [--report PAGE.html]
      run a short trial on the tool (simulated, or real with --yes); dose and purge per line
    aldctl tune dose --profile FILE --trial-dose T [--json]
      saturation dose time of a cross-flow reactor from one trial's thickness profile
    """


@tune.command("recipe")
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
@config_option
@click.option("--line", "lines", multiple=True, metavar="CHEM", help="Tune only this line.")
@click.option(
    "--write",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a copy of the recipe with the recommended values.",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The report page (default: tune-RECIPE.html here).",
)
@click.option(
    "--map",
    "map_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A thickness map measured after your own trial of --line (with --trial-dose).",
)
@click.option("--trial-dose", "trial_dose", metavar="TIME", help="With --map: its trial dose.")
@click.option(
    "--yes",
    is_flag=True,
    help="On a real tool: go ahead without asking (the trial doses precursor).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@data_dir_option
def tune_recipe_cmd(
    recipe: Path,
    config: Path | None,
    lines: tuple[str, ...],
    write: Path | None,
    report: Path | None,
    map_file: Path | None,
    trial_dose: str | None,
    yes: bool,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """Dose and purge of every reactant line from a short trial on the tool.

    The trial runs on the tool of --config (the built-in simulated one without it): for each
    reactant of every cycle with a line's pulse and a second reactant step, pulse or plasma
    (a supercycle's subcycles each get their own trial; a line in several is tuned in each,
    shown as CYCLE/LINE; a plasma step runs as the recipe has it, its time untuned, on the
    simulated tool only), a train of
    short pulses on a surface ready for it, the
    QCM's mass gain per pulse (the pressure response's per pulse without a QCM) giving the
    saturation curve; two calibration pulses giving the valve's dead width; the pressure
    decay giving the residence time; and cycles with that line's purge cut short giving the
    CVD share, hence the shortest purge with CVD under 1 %. Prints the recommendations and
    the --set overrides, writes a report page (saturation curve, data, fit) and, with
    --write, a patched copy of the recipe.

    On a real tool (a config with real drivers) the trial drives the devices through their
    drivers in real time (minutes per line): it takes the tool's lock, is journaled as a run
    (aldctl runs show), DOSES PRECURSOR (asks first; --yes to go ahead without asking, and
    required without a terminal), and runs under the safety monitor: a limit, a device
    fault, Ctrl-C or an error ends it in the safe state.

    Without a QCM or gauge worth trusting: run the trial yourself (the
    recipe with one line's dose cut to a time that leaves the outlet under-saturated),
    measure the thickness map along the flow and give it with --map and --trial-dose: the
    dose comes from the map (as `aldctl tune dose`), the purge from the tool's purge rule.

    \b
    Examples:
      aldctl tune recipes/al2o3_tma_h2o.yaml
      aldctl tune recipes/al2o3_tma_h2o.yaml --line TMA --write tuned.yaml --json
      aldctl tune recipes/al2o3_tma_h2o.yaml --line TMA --map trial.csv --trial-dose 0.8s
      aldctl tune recipes/litaox_1_6.yaml --line TaOEt5 --write tuned.yaml
      aldctl tune recipes/al2o3_tma_h2o.yaml --config mytool.yaml --line TMA --yes
    """
    if not recipe.is_file():
        _refuse(f"{recipe}: no such recipe file")
    if map_file is not None or trial_dose is not None:
        if map_file is None or trial_dose is None or len(lines) != 1:
            _refuse(
                "--map needs --trial-dose and exactly one --line (hint: --line TMA --map "
                "trial.csv --trial-dose 0.8s)"
            )
        from aldctl.units import Kind, UnitError, parse

        try:
            t_s = parse(trial_dose, Kind.TIME)
        except UnitError as exc:
            _refuse(f"--trial-dose: {exc} (hint: a time with its unit, e.g. 0.8s)")
        from aldctl.front.tunerun import tune_from_map

        tune_from_map(recipe, config, lines[0], map_file, t_s, write, report, as_json)
        return
    from aldctl.front.tunerun import tune_recipe

    tune_recipe(recipe, config, lines, write, report, as_json, yes, data_dir)


@tune.command("dose")
@click.option(
    "--profile",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The trial's growth at N = 4..20 equal steps from inlet to outlet, one a line.",
)
@click.option("--trial-dose", "trial_dose", metavar="TIME", help="The trial dose, e.g. 6.5s.")
@click.option(
    "--saturated",
    type=float,
    help="The saturated growth in the profile's unit (default: fractions, or fitted).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def tune_dose(
    profile: Path | None, trial_dose: str | None, saturated: float | None, as_json: bool
) -> None:
    """Saturation dose time of a cross-flow reactor from one trial's thickness profile.

    The profile: growth after one trial dose of TIME that left the outlet under-saturated,
    at N = 4..20 points, the k-th at k/N of the length from the inlet (the last at the
    outlet), one value a line (CSV, first column, optional header). Values <= 1 (or a header
    saying 'fraction') are fractions of saturated growth; otherwise thicknesses in any unit,
    and the saturated growth is fitted (or give --saturated). Prints the saturation dose
    time (the outlet at 99 % of saturated growth), its uncertainty and the reasoning. Refuses
    a profile that is saturated everywhere, at noise level, or not a self-limiting front (CVD).

    \b
    Examples:
      aldctl tune dose --profile trial.csv --trial-dose 6.5s
      aldctl tune dose --profile trial.csv --trial-dose 800ms --json
      aldctl tune dose --profile ellipsometry.csv --trial-dose 2s --saturated 11.0
    """
    _tune_dose(profile, trial_dose, saturated, as_json)


def _tune_dose(
    profile: Path | None, trial_dose: str | None, saturated: float | None, as_json: bool
) -> None:
    if profile is None:
        _refuse("tune dose needs --profile FILE (hint: the trial's growth, one value a line)")
    if trial_dose is None:
        _refuse("tune dose needs --trial-dose TIME (hint: the trial's dose time, e.g. 6.5s)")
    from aldctl.units import Kind, UnitError, parse

    try:
        t_s = parse(trial_dose, Kind.TIME)
    except UnitError as exc:
        _refuse(f"--trial-dose: {exc} (hint: a time with its unit, e.g. 6.5s or 800ms)")
    if not t_s > 0.0:
        _refuse(f"--trial-dose: {trial_dose} is not a positive time (hint: e.g. 6.5s)")
    if saturated is not None and not saturated > 0.0:
        _refuse("--saturated must be > 0 (hint: the saturated growth in the profile's unit)")
    from aldctl.tune.dose import COVERAGE, ProfileError, Refusal, fit_profile, read_profile

    try:
        prof = read_profile(profile)
        fit = fit_profile(prof, t_s, saturated=saturated)
    except ProfileError as exc:
        echo(str(exc), err=True)
        sys.exit(EXIT_INVALID)
    except Refusal as exc:
        _refuse(f"{profile}: {exc.message} (hint: {exc.hint})")
    if as_json:
        echo(
            json.dumps(
                {
                    "saturation_dose_s": fit.saturation_dose_s,
                    "uncertainty_s": fit.uncertainty_s,
                    "uncertainty_coverage": COVERAGE,
                    "trial_dose_s": fit.trial_dose_s,
                    "damkohler": fit.damkohler,
                    "trailing_edge_damkohler": fit.kinetic_damkohler,
                    "rate_per_s": fit.rate_per_s,
                    "front": fit.front if math.isfinite(fit.front) else None,
                    "saturated_growth": fit.saturated,
                    "fit_rms": fit.residual,
                    "fractions": list(fit.fractions),
                    "reasoning": fit.reasoning(),
                },
                indent=2,
            )
        )
        return
    echo(
        f"saturation dose time: {fit.saturation_dose_s:.3g} s "
        f"+/- {fit.uncertainty_s:.2g} s ({COVERAGE:.0%} interval)  (trial {fit.trial_dose_s:g} s)"
    )
    echo("")
    echo(fit.reasoning())


@cli.group()
def bench() -> None:
    """Benchmarks: print measured figures (wall time, memory, timing errors)."""


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    t = Table()
    if len(rows) <= 2:  # few rows, many figures: one figure per line reads better
        t.add_column("figure")
        for i in range(len(rows)):
            t.add_column(f"run {i + 1}" if len(rows) > 1 else "value", justify="right")
        for key in rows[0]:
            t.add_row(key, *(fmt(r[key]) for r in rows))
    else:
        # Columns from the fullest row: a refused recipe's row has only its reason.
        keys: list[str] = []
        for r in sorted(rows, key=lambda r: -len(r)):
            keys += [k for k in r if k not in keys]
        for key in keys:
            t.add_column(key, justify="right")
        for row in rows:
            t.add_row(*(fmt(row.get(k, "")) for k in keys))
    Console().print(t)


@bench.command("compile")
@click.option(
    "--recipe",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("recipes/al2o3_tma_h2o.yaml"),
    show_default=True,
    help="A recipe with a 'cycles' parameter.",
)
@click.option(
    "--cycles",
    "-n",
    multiple=True,
    type=int,
    default=(100, 1000, 10000),
    show_default=True,
    help="Cycle counts to compile.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
def bench_compile(recipe: Path, cycles: tuple[int, ...], as_json: bool) -> None:
    """Compile and plan a recipe at several cycle counts: time and peak memory.

    The schedule keeps one compiled body per cycle kind, so memory must not grow with
    the cycle count.

    \b
    Examples:
      aldctl bench compile
      aldctl bench compile -n 10000 -n 100000 --json
    """
    from aldctl.front.bench import bench_compile as run

    _print_rows(run(recipe, list(cycles)), as_json)


@bench.command("clock")
@click.option("--hops", type=int, default=20_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
def bench_clock(hops: int, as_json: bool) -> None:
    """Virtual-time event loops: aldctl's own against looptime (when installed).

    \b
    Examples:
      aldctl bench clock
      pip install looptime && aldctl bench clock --hops 50000
    """
    from aldctl.front.bench import bench_clock as run

    _print_rows(run(hops), as_json)


@bench.command("engine")
@click.option("--cycles", "-n", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
def bench_engine(cycles: int, as_json: bool) -> None:
    """The whole engine in virtual time, journal on: TMA/H2O 15 ms / 5 s / 15 ms / 5 s.

    Prints wall time and the run's CPU time (compare CPU time on a busy machine),
    speed-up over real time, peak memory, journal size and the simulated thickness.

    \b
    Examples:
      aldctl bench engine
      aldctl bench engine -n 10000
    """
    from aldctl.front.bench import bench_engine as run

    _print_rows(run(cycles), as_json)


@bench.command("report")
@click.option("--cycles", "-n", type=int, default=10_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
def bench_report(cycles: int, as_json: bool) -> None:
    """``aldctl report`` on a long run: runs the benchmark recipe for N cycles (virtual
    time), then times the report in a process of its own.

    Prints the report's wall time, its peak memory (maximum resident set of that process)
    and the sizes of the journal and the report.

    \b
    Examples:
      aldctl bench report
      aldctl bench report -n 1000
    """
    from aldctl.front.bench import bench_report as run

    _print_rows(run(cycles), as_json)


@bench.command("realtime")
@click.option(
    "--cycles",
    "-n",
    type=int,
    default=150,
    show_default=True,
    help="Cycles of 15 ms TMA / 100 ms / 15 ms H2O / 100 ms (two pulses each).",
)
@click.option(
    "--trace",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write one CSV row per pulse here: commanded time, open, close and width error.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
def bench_realtime(cycles: int, trace: Path | None, as_json: bool) -> None:
    """Pulse timing on the wall clock, in-process simulator: width error, drift, and
    which late pulses were the machine's.

    Asks for SCHED_FIFO and says whether it got it. Width and open errors are percentiles
    over the run's pulses (absolute, ms); drift_ms is the end of the recipe against its
    plan from the RUNNING state, drift_from_anchor_ms the same from main's first
    commanded edge. Goals: width error p99 < 0.1 ms, max < 0.5 ms.

    The machine's part: while the engine spins the last 3 ms to a valve edge, nothing of
    ours runs, so a gap between two consecutive clock reads (normally ~0.1 us) is time
    the thread was not running: the host (hypervisor, interrupts) or the kernel took the
    CPU. stalls counts such gaps over 0.05 ms over the run, stall_longest_ms is the
    longest, stall_deadlines_covered how many edges fell inside one (each late by the
    rest of it). late_wakes: edges whose sleep the event loop woke after their time,
    idle_late_wakes those whose delay the thread spent off the CPU (the machine's too);
    late_calls: edges whose sleep the engine reached after their time.

    Each pulse is judged at the edge that made its width wrong (the close of a long
    pulse, the open of a short one). late_pulses: pulses whose width error is over 0.1
    ms; of them, late_pulses_stalled were the machine's (a stall at that edge, or an idle
    late wake; late_pulses_deadline_in_stall: the edge's time itself fell inside it),
    late_pulses_woken_late were woken late by a busy event loop, late_pulses_called_late
    reached the edge late; the rest had nothing the clock could see. None of those three
    is attributed. unstalled_width_err_p99_ms / unstalled_width_err_max_ms: the width
    error of the unstalled_pulses (all but the stalled): what the engine does when the
    machine lets it run. If the late pulses are all stalled and the unstalled figures
    meet the goals, the misses are the host's; many stalls or long ones say this host is
    unfit for software-timed pulses (use module-timed pulses, or a dedicated controller).
    The trace's open_stall_ms / close_stall_ms give the stall at each edge, host what
    judged the pulse. See docs/benchmarks.md, "Host stalls".

    \b
    Examples:
      aldctl bench realtime
      aldctl bench realtime -n 100 --json
      aldctl bench realtime --trace pulses.csv   # which pulses were late, at which edge
    """
    from aldctl.front.bench import bench_realtime as run

    rows = run(cycles, trace)
    _print_rows(rows, as_json)
    if not as_json:
        r = rows[0]
        kinds = ("late_pulses_stalled", "late_pulses_woken_late", "late_pulses_called_late")
        nothing = r["late_pulses"] - sum(r[k] for k in kinds)
        click.echo(
            f"{r['late_pulses']} of {r['pulses']} pulses over 0.1 ms of width error; "
            f"{r['late_pulses_stalled']} of them were the machine's (a host stall at the "
            f"late edge; {r['late_pulses_deadline_in_stall']} with the edge's time inside "
            "it), "
            f"{r['late_pulses_woken_late']} were woken late by a busy loop, "
            f"{r['late_pulses_called_late']} reached their edge late, "
            f"{nothing} showed nothing"
        )


@bench.command("telemetry")
@click.option("--broker", help="Use this broker (default: start a mosquitto on loopback).")
@click.option("--tools", type=int, default=3, show_default=True, help="Simulated tools at once.")
@click.option("--cycles", "-n", type=int, default=30, show_default=True, help="Cycles per run.")
@click.option("--rate", type=float, default=50.0, show_default=True, help="Telemetry rate, Hz.")
@click.option("--rounds", type=int, default=2, show_default=True, help="Off/on pairs, alternated.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
def bench_telemetry(
    broker: str | None, tools: int, cycles: int, rate: float, rounds: int, as_json: bool
) -> None:
    """What MQTT telemetry costs real-time runs: N tools, one broker, on vs off.

    Runs N simulated tools in real time without telemetry, then publishing at --rate to
    one broker while a subscriber here takes everything: messages/s delivered, latency
    p50/p99 (event to subscriber), pulse-timing p99 on and off and their ratio.

    \b
    Examples:
      aldctl bench telemetry
      aldctl bench telemetry --broker mqtt://broker.lab --tools 5 --json
    """
    from aldctl.front.telemetry.bench import bench_telemetry as run

    _print_rows([run(broker, tools, cycles, rate, rounds)], as_json)


@bench.command("timing")
@config_option
@click.option("--pulses", "-n", type=int, default=300, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
def bench_timing(config: Path | None, pulses: int, as_json: bool) -> None:
    """15 ms pulses over the real Modbus TCP path, every other device polled at 10 Hz.

    Starts `aldctl sim serve` in its own process, drives the valve module with the real
    driver (software-timed pulses, then module-timed ones where the module can), and
    measures the widths the emulated module actually applied.

    \b
    Examples:
      aldctl bench timing --config config/hil.yaml
      aldctl bench timing --config config/hil.yaml -n 1000 --json
    """
    from aldctl.front.bench import bench_timing as run

    _print_rows(run(config or Path("config/hil.yaml"), pulses), as_json)


@bench.command("faults")
@click.option(
    "--fault",
    "kinds",
    multiple=True,
    help="Only this fault kind (repeatable; default: every kind of sim/faults.py).",
)
@click.option(
    "--phase",
    "phases",
    multiple=True,
    help="Only this phase (repeatable): setup, pulse, purge, plasma, exposure, checkpoint, "
    "teardown.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print every run as JSON.")
def bench_faults(kinds: tuple[str, ...], phases: tuple[str, ...], seed: int, as_json: bool) -> None:
    """The fault campaign: every fault kind injected at each phase of a run.

    Each cell is one run of a short recipe (setup, pulse, purge, exposure, plasma,
    checkpoints, teardown) through the real engine and journal on the built-in simulated
    reactor, in virtual time, with the fault injected inside that phase (what
    `aldctl run --fault` does). The table says what the run did (abort, alarm, or '-' for
    not detected), and "survived N of M": the reactor safe afterwards (every dose valve
    closed) and the journal holding the outcome and its reason. Besides the fault kinds,
    `pressure_burst`: a 2 Torr burst (above the built-in tool's 2 Torr hold) with the
    0.1 s pressure watch on (`safety.pressure_interval`).

    \b
    Examples:
      aldctl bench faults
      aldctl bench faults --fault pressure_burst --fault timing_jitter
      aldctl bench faults --fault comm_timeout --fault disconnect --json
    """
    from aldctl.front.bench import FAULT_PHASES, FAULT_TARGETS, FAULT_VARIANTS, format_fault_table
    from aldctl.front.bench import bench_faults as run

    known = [*FAULT_TARGETS, *FAULT_VARIANTS]
    for k in kinds:
        if k not in known:
            _refuse(f"no fault kind '{k}' ({did_you_mean_hint(k, known)})")
    for p in phases:
        if p not in FAULT_PHASES:
            _refuse(f"no phase '{p}' ({did_you_mean_hint(p, FAULT_PHASES)})")
    report = run(list(kinds) or None, list(phases) or None, seed)
    if as_json:
        echo(json.dumps(report, indent=2))
    else:
        echo(format_fault_table(report))


def did_you_mean_hint(word: str, choices: Any) -> str:
    from aldctl.diagnostics import did_you_mean

    return did_you_mean(word, list(choices)) or "see --help"


@bench.command("startup")
@click.option("--repeat", "-n", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_startup(repeat: int, as_json: bool) -> None:
    """Start-up time: `aldctl --help`, `--version` and the core imports, in fresh processes.

    \b
    Examples:
      aldctl bench startup
      aldctl bench startup -n 20 --json
    """
    from aldctl.front.bench import bench_startup as run

    _print_rows(run(repeat), as_json)


@bench.command("sim")
@click.option("--cycles", "-n", multiple=True, type=int, default=(1000, 10000), show_default=True)
@click.option(
    "--cells",
    type=click.IntRange(1, 200),
    help="The chamber as N cells along the flow (default: the well-stirred 0-D chamber).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
def bench_sim(cycles: tuple[int, ...], cells: int | None, as_json: bool) -> None:
    """The reactor model alone: TMA/H2O 15 ms / 5 s / 15 ms / 5 s, wall time and memory.

    \b
    Examples:
      aldctl bench sim
      aldctl bench sim -n 100000
      aldctl bench sim -n 1000 --cells 20
    """
    from sim.bench import run_benchmark

    _print_rows([run_benchmark(n, cells) for n in cycles], as_json)


@bench.command("tune")
@click.option("--n", "n", type=int, default=2000, show_default=True, help="Random conditions.")
@click.option("--seed", type=int, default=None, help="Default: 1, or 2 with --calibrate.")
@click.option(
    "--calibrate",
    is_flag=True,
    help="Measure tune dose's model-error table instead (on seed 2, which the figures do not use).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_tune(n: int, seed: int | None, calibrate: bool, as_json: bool) -> None:
    """`tune dose` against brute-force dose sweeps on the cross-flow simulator.

    Random conditions (sticking probability 3e-5..3e-2, flow, pressure, length, gap,
    temperature, feed), each with its true saturation dose found by bisection on the
    simulator; trials at 5-95 % of it measured at N = 5, 10, 20 points with 0 and 0.5 %
    noise. Prints median and 90th-percentile relative error, for ideal plug flow and with
    axial diffusion, and the coverage: how often the truth lies within the stated uncertainty
    (meant to be 95 %). Takes a few minutes at the default size.

    --calibrate measures the model-error table that the stated uncertainty uses (the relative
    error the noise's part leaves uncovered, per front steepness and fit class) on a seed the
    figures do not use, and prints it as the Python constant of aldctl/tune/dose.py.

    \b
    Examples:
      aldctl bench tune --n 200
      aldctl bench tune --json > tune-bench.json
      aldctl bench tune --calibrate
    """
    from aldctl.front.tunebench import calibrate as calibrate_bench
    from aldctl.front.tunebench import run as run_bench

    if calibrate:
        cal = calibrate_bench(n, 2 if seed is None else seed)
        if as_json:
            echo(json.dumps(cal, indent=2))
            return
        echo(f"# {cal['conditions']} conditions per chamber kind, seed {cal['seed']}")
        echo("MODEL_ERROR: tuple[tuple[float, ...], ...] = (")
        for row, cnt in zip(cal["model_error"], cal["counts"], strict=True):
            echo(f"    ({', '.join(f'{v:g}' for v in row)}),  # trials per bin: {cnt}")
        echo(")")
        return
    res = run_bench(n, 1 if seed is None else seed)
    if as_json:
        echo(json.dumps(res, indent=2))
        return
    _print_rows(res["rows"], False)
    _print_rows(res["by_damkohler"], False)
    echo(
        f"{res['conditions']} conditions per chamber kind, {res['wall_s']:.0f} s; coverage "
        f"goal {res['coverage_goal_pct']:.0f} %; "
        f"one fit of N = 20 points: {res['fit_ms_n20']:.2f} ms"
    )


@bench.command("tune-recipes")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("recipes"),
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
def bench_tune_recipes(directory: Path, as_json: bool) -> None:
    """`tune RECIPE` on the built-in tool against brute-force curves, for every recipe.

    For each recipe under DIR (subdirectories included) and each reactant line of each of its
    cycles: the trial's dose and purge against bisections of the simulated growth per cycle
    (dose for 99 % of saturated growth, purge for growth within 1 % of the long-purge
    growth), and what the trial's values grow on that truth (growth_at_dose_pct,
    cvd_at_purge_pct). purge_agrees: the trial's purge is within 10 % of brute force's, or
    within 0.1 residence time (tau_s, the simulator's) where that is wider: purges 0.1 tau
    apart leave residues 10 % apart. A recipe the trial refuses is a row with the reason.
    About 10-30 s a cycle.

    \b
    Examples:
      aldctl bench tune-recipes
      aldctl bench tune-recipes --dir my-recipes --json
    """
    from aldctl.front.tunebench import run_recipes

    # Not the brute force's own temporary recipes (.bf-*.yaml beside the recipe: another
    # evaluation running on the same directory, or one that was killed).
    found = sorted(p for p in directory.rglob("*.yaml") if not p.name.startswith("."))
    _print_rows(run_recipes(found), as_json)


def main() -> None:
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(prog_name="aldctl", standalone_mode=False)
    except click.exceptions.Abort:
        echo("aborted", err=True)
        sys.exit(EXIT_FAILED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_INVALID)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        from aldctl.diagnostics import UserError

        if isinstance(exc, UserError):
            _fail(exc.diagnostics)
        if debug:
            raise
        echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
        echo("run with --debug for the traceback, and please report it", err=True)
        sys.exit(EXIT_INTERNAL)
