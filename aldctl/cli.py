"""The ``aldctl`` command line.

Heavy imports (pint, pydantic, the simulator, pymodbus, textual) happen inside commands,
never at module import: ``aldctl --help`` must stay fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from aldctl._version import __version__

if TYPE_CHECKING:
    from aldctl.config import ToolConfig
    from aldctl.diagnostics import Diagnostic
    from aldctl.recipe.compile import Compiled
    from aldctl.recipe.load import Loaded

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERNAL = 3

F = TypeVar("F", bound=Callable[..., Any])


def _echo_diagnostics(diags: list[Diagnostic] | tuple[Diagnostic, ...]) -> None:
    for d in diags:
        click.echo(d.format(), err=True)


def _fail(diags: list[Diagnostic]) -> NoReturn:
    _echo_diagnostics(diags)
    n = sum(1 for d in diags if d.severity == "error")
    click.echo(f"{n} error{'s' if n != 1 else ''}", err=True)
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


def load_tool(config: Path | None, chemicals: list[str]) -> ToolConfig:
    from aldctl import config as cfg

    tool = cfg.load_builtin() if config is None else cfg.load_tool(config)
    return cfg.provision_lines(tool, chemicals)


def recipe_chemicals(recipe: Any) -> list[str]:
    """Every dose chemical a recipe names (for provisioning the simulated tool's lines)."""
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


def prepare(
    recipe_path: Path, config: Path | None, sets: tuple[str, ...]
) -> tuple[Loaded, ToolConfig, Compiled]:
    """Load, provision and compile; raise UserError with every problem found."""
    from aldctl.diagnostics import Diagnostics, UserError
    from aldctl.recipe.compile import compile_recipe
    from aldctl.recipe.load import load_recipe, parse_overrides

    loaded = load_recipe(recipe_path, parse_overrides(list(sets)))
    tool = load_tool(config, recipe_chemicals(loaded.recipe))
    try:
        compiled = compile_recipe(loaded.recipe, tool)
    except UserError as exc:
        diags = Diagnostics()
        diags.extend(loaded.diagnostics)
        diags.extend(exc.diagnostics)
        raise UserError(list(diags)) from None
    return loaded, tool, compiled


# ---------------------------------------------------------------------- commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="aldctl")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
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
            click.echo(f"{path}: ok ({compiled.schedule.units} checkpoints)")
    if bad:
        click.echo(f"{bad} of {len(recipes)} recipe(s) invalid", err=True)
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
        click.echo(json.dumps(out, indent=2))
        return
    _echo_diagnostics(warnings)
    from aldctl.render import render_plan

    render_plan(result)


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

    try:
        chems = recipe_chemicals(load_recipe(recipe).recipe) if recipe else []
        t = load_tool(config, chems)
    except UserError as exc:
        _fail(exc.diagnostics)
    click.echo(yaml.safe_dump(cfg.plain_for_display(t), sort_keys=False), nl=False)


@cli.group()
def bench() -> None:
    """Benchmarks: print measured figures (wall time, memory, timing errors)."""


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table()
    for key in rows[0]:
        t.add_column(key, justify="right")
    for row in rows:
        t.add_row(*(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()))
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
    from aldctl.bench import bench_compile as run

    _print_rows(run(recipe, list(cycles)), as_json)


def main() -> None:
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(prog_name="aldctl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_INVALID)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        from aldctl.diagnostics import UserError

        if isinstance(exc, UserError):
            _fail(exc.diagnostics)
        if debug:
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("run with --debug for the traceback, and please report it", err=True)
        sys.exit(EXIT_INTERNAL)
