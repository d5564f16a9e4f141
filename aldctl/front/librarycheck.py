"""``aldctl library check``: every published growth figure against its recipe, simulated.

For every library process with growth figures, the recipe in ``recipes/`` whose header names
it is prepared and simulated through the same path as ``aldctl simulate`` (load, provision
the built-in tool, compile, grow on the reactor model), once per published temperature and
subcycle ratio (``--set T=...`` and the recipe's ratio parameters). Each row gives the
simulated and the published growth per cycle, the relative error, the leave-one-out
prediction error of the library at that point (:func:`sim.calibration.leave_one_out`, where
the process has several points), whether the recipe's purges clear the chemistry (CVD share
under the simulator's 1 % limit) and what the figure rests on (:mod:`sim.growthbasis`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from aldctl.diagnostics import UserError
from aldctl.front.simulate import simulate
from aldctl.session import prepare

TOLERANCE = 0.05
"""A published point is off when the simulated growth differs by more than this."""

_HEADER = re.compile(r"^# Growth data: process (\S+) ", re.M)


@dataclass
class Row:
    process: str
    recipe: str
    t_c: float
    ratio: dict[str, int] | None
    per: str
    published: float | None
    published_range: tuple[float, float] | None
    simulated: float | None
    error: float | None
    loo_error: float | None
    cvd_share: float | None
    purge_ok: bool | None
    basis: str
    problem: str = ""

    @property
    def off(self) -> bool:
        return self.error is None or abs(self.error) > TOLERANCE

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["off"] = self.off
        return out


def recipes_by_process(root: Path) -> dict[str, Path]:
    """Library process id -> the recipe whose header names it (the first, by path)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.yaml")):
        if path.name.startswith("."):
            continue  # an editor's or a tune brute force's scratch copy, not a recipe
        m = _HEADER.search(path.read_text(encoding="utf-8", errors="replace"))
        if m and m.group(1) not in out:
            out[m.group(1)] = path
    return out


def _ratio_params(path: Path) -> dict[str, str]:
    """Recipe subcycle name -> the parameter its supercycle ratio uses (``$n_ta``)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for step in data.get("main") or ():
        sc = step.get("supercycle") if isinstance(step, dict) else None
        if isinstance(sc, dict):
            return {
                str(k): str(v)[1:]
                for k, v in (sc.get("ratio") or {}).items()
                if str(v).startswith("$")
            }
    return {}


def check(root: Path, cycles: int = 10, supercycles: int = 3) -> list[Row]:
    from sim import calibration, growthbasis, library
    from sim.purge import CVD_LIMIT

    loo = {(r.process, r.t_c): r.error for r in calibration.leave_one_out()}
    by_proc = recipes_by_process(root)
    rows: list[Row] = []
    for proc in library.processes().values():
        figures = [p for p in proc.published if p.value is not None or p.value_range]
        if not figures:
            continue
        path = by_proc.get(proc.id)
        for pub in figures:
            basis = growthbasis.basis(proc, pub.t_c).label
            row = Row(
                process=proc.id,
                recipe=str(path) if path else "",
                t_c=pub.t_c,
                ratio=dict(pub.ratio) if pub.ratio else None,
                per=pub.per,
                published=pub.value,
                published_range=pub.value_range,
                simulated=None,
                error=None,
                loo_error=loo.get((proc.id, pub.t_c)),
                cvd_share=None,
                purge_ok=None,
                basis=basis,
            )
            rows.append(row)
            if path is None:
                row.problem = "no recipe in recipes/ names this process"
                continue
            sets = [f"T={pub.t_c:g} degC"]
            params = yaml.safe_load(path.read_text(encoding="utf-8")).get("params") or {}
            count = "supercycles" if "supercycles" in params else "cycles"
            if count in params:
                sets.append(f"{count}={supercycles if count == 'supercycles' else cycles}")
            names = _ratio_params(path)
            for kind, n in (pub.ratio or {}).items():
                if kind not in names:
                    row.problem = f"the recipe has no ratio parameter for subcycle {kind}"
                    break
                sets.append(f"{names[kind]}={n}")
            if row.problem:
                continue
            try:
                out = simulate(prepare(path, None, sets))
            except UserError as exc:
                row.problem = "; ".join(d.message for d in exc.diagnostics[:2])
                continue
            per_pass = out["gpc_A"]
            if per_pass is None or not out["subcycles"]:
                row.problem = "the recipe grew nothing"
                continue
            n_sub = sum(k["count"] for k in out["subcycles"].values())
            passes = n_sub / max(sum((pub.ratio or {"x": 1}).values()), 1)
            sim_val = per_pass if pub.per == "supercycle" else out["thickness_nm"] * 10 / n_sub
            if pub.per == "supercycle" and passes:
                sim_val = per_pass
            row.simulated = sim_val
            if pub.value is not None:
                row.error = (sim_val - pub.value) / pub.value
            elif pub.value_range is not None:
                lo, hi = pub.value_range
                row.error = (
                    0.0
                    if lo <= sim_val <= hi
                    else min(abs(sim_val - lo) / lo, abs(sim_val - hi) / hi)
                )
            thick = out["thickness_nm"]
            row.cvd_share = out["cvd_thickness_nm"] / thick if thick else None
            row.purge_ok = row.cvd_share is not None and row.cvd_share <= CVD_LIMIT
            for w in out["warnings"]:
                if w.startswith("no growth"):
                    row.problem = w
    return rows


def table(rows: list[Row]) -> str:
    """The check as Markdown (the README shows it)."""
    lines = [
        "| process | T (degC) | ratio | published (A) | simulated (A) | error | "
        "leave-one-out | purges | growth rests on |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = ":".join(str(v) for v in r.ratio.values()) if r.ratio else "-"
        pub = (
            f"{r.published:g}"
            if r.published is not None
            else f"{r.published_range[0]:g}-{r.published_range[1]:g}"
            if r.published_range
            else "-"
        )
        per = "/supercycle" if r.per == "supercycle" else "/cycle"
        sim = f"{r.simulated:.3f}" if r.simulated is not None else "-"
        err = f"{r.error:+.1%}" if r.error is not None else "-"
        loo = f"{r.loo_error:+.1%}" if r.loo_error is not None else "n/a"
        purge = (
            "-"
            if r.purge_ok is None
            else (f"clear (CVD {r.cvd_share:.2%})" if r.purge_ok else f"CVD {r.cvd_share:.1%}")
        )
        flag = " **off**" if r.off else ""
        note = f" ({r.problem})" if r.problem else ""
        lines.append(
            f"| {r.process} | {r.t_c:g} | {ratio} | {pub}{per} | {sim}{note} | {err}{flag} | "
            f"{loo} | {purge} | {r.basis} |"
        )
    off = [r for r in rows if r.off]
    lines.append("")
    lines.append(
        f"{len(rows) - len(off)} of {len(rows)} published points within "
        f"{TOLERANCE:.0%}"
        + (f"; off: {', '.join(f'{r.process} @ {r.t_c:g}' for r in off)}" if off else ".")
    )
    return "\n".join(lines)
