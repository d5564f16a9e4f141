"""Human-readable output for the command line (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from aldctl.diagnostics import neutralise
from aldctl.recipe.plan import Plan
from aldctl.units import format_duration


def _fmt_g(g: float | None) -> str:
    if g is None:
        return "-"
    if g < 0.01:
        return f"{g * 1000:.2f} mg"
    return f"{g:.3f} g"


def render_plan(plan: Plan, console: Console | None = None) -> None:
    con = console or Console()
    bound = ">= " if plan.lower_bound else ""
    con.print(f"[bold]{plan.recipe}[/bold] on [bold]{plan.tool}[/bold]")
    if plan.params:
        # --set values arrive here as typed: shown, never executed or read as markup.
        params = ", ".join(f"{k}={v}" for k, v in plan.params.items())
        con.print("parameters: " + neutralise(params), markup=False)
    con.print(
        f"duration {bound}[bold]{format_duration(plan.duration_s)}[/bold] "
        f"(setup {format_duration(plan.setup_s)}, main {format_duration(plan.main_s)}, "
        f"teardown {format_duration(plan.teardown_s)}); {plan.checkpoints:,} checkpoints"
    )
    if plan.lower_bound:
        con.print(
            f"  waits on conditions: up to {format_duration(plan.wait_timeouts_s)} more "
            "before their timeouts"
        )

    t = Table(title="Cycles", title_justify="left")
    t.add_column("loop")
    t.add_column("repeats", justify="right")
    t.add_column("per pass", justify="right")
    t.add_column("time", justify="right")
    t.add_column("process")
    t.add_column("thickness", justify="right")
    for lp in plan.loops:
        process = lp.process or "-"
        if lp.substrate_c is not None:
            process += f" @ {lp.substrate_c:g} degC"
        label = lp.label
        if lp.supercycle:
            label += "\n" + ", ".join(f"{k} x{v:,}" for k, v in lp.counts.items())
        t.add_row(
            label,
            f"{lp.passes:,}",
            format_duration(lp.pass_s),
            format_duration(lp.duration_s),
            process,
            f"{lp.thickness_nm:.2f} nm" if lp.thickness_nm is not None else "-",
        )
    if plan.loops:
        con.print(t)

    v = Table(title="Valves and doses", title_justify="left")
    for col in ("line", "chemical", "actuations", "open time", "est. consumption"):
        v.add_column(col, justify="left" if col in ("line", "chemical") else "right")
    for name, line in plan.lines.items():
        cp = plan.chemicals.get(line.chemical)
        v.add_row(
            name,
            line.chemical,
            f"{line.actuations:,}",
            format_duration(line.open_s),
            _fmt_g(cp.grams if cp else None),
        )
    if plan.lines:
        con.print(v)

    if plan.thickness_nm is not None:
        unsure = [lp for lp in plan.loops if lp.uncertainty is not None]
        spread = max((lp.uncertainty or 0.0 for lp in unsure), default=0.0)
        bound = f" +-{spread:.0%} (a published range)" if unsure else ""
        con.print(f"expected thickness [bold]{plan.thickness_nm:.2f} nm[/bold]{bound}")
    for lp in plan.loops:
        if lp.basis is not None:
            con.print(f"  {lp.label}: growth per cycle {lp.basis}: {lp.basis_detail}")
    for lp in plan.loops:
        if lp.supercycle:
            fr = ", ".join(f"{k} {v:.1%}" for k, v in lp.subcycle_fraction.items())
            th = ", ".join(f"{k} {v:.1%}" for k, v in lp.thickness_fraction.items())
            con.print(
                f"{lp.label}: subcycles {fr}; thickness {th}"
                if th
                else f"{lp.label}: subcycles {fr}"
            )
    if plan.cations:
        con.print("cation fraction: " + ", ".join(f"{k} {v:.1%}" for k, v in plan.cations.items()))
