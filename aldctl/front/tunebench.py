"""`aldctl bench tune`: the trial-profile method against brute-force dose sweeps on the
cross-flow simulator (:mod:`sim.crossflow`).

For each random condition (sticking probability over three decades, carrier flow, pressure,
chamber length, temperature, precursor feed and molar mass) the ground truth is found on the
simulator itself: a bisection over dose times, each a full dose + purge run of the cell model,
for the shortest dose whose outlet growth reaches 99 % of saturation. Nothing of the method's
closed form enters the truth. The trial is then a simulated run at 5-95 % of that dose, measured
at N in {5, 10, 20} points with 0 or 0.5 % noise (of saturated growth), and the method's answer
is compared with the truth. Two populations: ideal plug flow (no axial diffusion: the method's
assumptions hold, any error is the method's and the discretisation's) and plug flow with
kinetic-theory axial diffusion (the realistic chamber).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aldctl.tune.dose import (
    COVERAGE,
    RESIDUAL_EDGES,
    STEEPNESS_EDGES,
    Z_COVERAGE,
    Refusal,
    fit_class,
    fit_profile,
    steepness_bin,
)
from sim.crossflow import Chamber, Reactant, damkohler, delivery_time_s, saturation_profile

CELLS = 100
STEPS = 300
NS = (5, 10, 20)
NOISES = (0.0, 0.005)


@dataclass(frozen=True, slots=True)
class Condition:
    chamber: Chamber
    precursor: Reactant


def conditions(n: int, seed: int, diffusion: bool) -> list[Condition]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ch = Chamber(
            length_m=float(rng.uniform(0.1, 0.4)),
            width_m=0.15,
            gap_m=float(rng.uniform(0.003, 0.01)),
            temperature_c=float(rng.uniform(150.0, 300.0)),
            pressure_torr=float(10 ** rng.uniform(math.log10(0.3), math.log10(3.0))),
            carrier_sccm=float(10 ** rng.uniform(math.log10(50.0), math.log10(500.0))),
            cells=CELLS,
            axial_diffusion=diffusion,
        )
        feed_sccm = ch.carrier_sccm * float(rng.uniform(0.01, 0.1))
        pre = Reactant(
            name="P",
            molar_mass=float(rng.uniform(60.0, 300.0)),
            beta=float(10 ** rng.uniform(-4.5, -1.5)),
            sites_per_m2=float(rng.uniform(2e18, 6e18)),
            feed_mol_s=feed_sccm * 7.4367e-7,
        )
        out.append(Condition(ch, pre))
    return out


def outlet(conds: list[Condition], dose: np.ndarray) -> np.ndarray:
    prof = saturation_profile(
        [c.chamber for c in conds], [c.precursor for c in conds], dose, [1.0], steps=STEPS
    )
    return np.asarray(prof[:, 0])


def truth(conds: list[Condition], rel_tol: float = 2e-4) -> np.ndarray:
    """Brute force: bisection (in log time) on the simulated outlet growth."""
    lo = np.empty(len(conds))
    hi = np.empty(len(conds))
    for i, c in enumerate(conds):
        td = delivery_time_s(c.chamber, c.precursor)
        # A bracket from delivery alone: never less than 1 % of one monolayer's delivery,
        # and an upper bound that is checked, not assumed.
        lo[i] = 0.01 * td
        hi[i] = 50.0 * td * (1.0 + 1.0 / max(damkohler(c.chamber, c.precursor), 1e-3))
    top = outlet(conds, hi)
    if np.any(top < 0.99):
        bad = int(np.sum(top < 0.99))
        msg = f"{bad} conditions do not saturate within the bracket"
        raise RuntimeError(msg)
    while np.max(hi / lo) > 1.0 + rel_tol:
        mid = np.sqrt(lo * hi)
        f = outlet(conds, mid)
        below = f < 0.99
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    out: np.ndarray = np.sqrt(lo * hi)
    return out


def trials(n: int, seed: int) -> list[dict[str, Any]]:
    """Every trial of the benchmark: the method's answer against the truth (or refused)."""
    detail: list[dict[str, Any]] = []
    for diffusion in (False, True):
        conds = conditions(n, seed, diffusion)
        t99 = truth(conds)
        rng = np.random.default_rng(seed + 7)
        frac = rng.uniform(0.05, 0.95, size=n)
        ns = rng.choice(NS, size=n)
        for nn in NS:
            idx = np.nonzero(ns == nn)[0]
            if len(idx) == 0:
                continue
            pos = np.arange(1, nn + 1) / nn
            sub = [conds[i] for i in idx]
            prof = saturation_profile(
                [c.chamber for c in sub],
                [c.precursor for c in sub],
                frac[idx] * t99[idx],
                pos,
                steps=STEPS,
            )
            for noise in NOISES:
                noisy = prof + rng.normal(0.0, noise, size=prof.shape) if noise else prof
                for row, i in enumerate(idx):
                    trial = float(frac[i] * t99[i])
                    rec: dict[str, Any] = {
                        "diffusion": diffusion,
                        "noise": noise,
                        "n": int(nn),
                        "da": damkohler(conds[i].chamber, conds[i].precursor),
                        "peclet": conds[i].chamber.peclet,
                        "trial_fraction": float(frac[i]),
                        "truth_s": float(t99[i]),
                        "fit": None,
                    }
                    try:
                        fit = fit_profile(
                            list(np.clip(noisy[row], 0.0, None)), trial, fraction=True
                        )
                    except Refusal:
                        detail.append(rec)
                        continue
                    rec["fit"] = fit
                    rec["error"] = fit.saturation_dose_s / float(t99[i]) - 1.0
                    rec["covered"] = abs(fit.saturation_dose_s - float(t99[i])) <= fit.uncertainty_s
                    detail.append(rec)
    return detail


def run(n: int = 2000, seed: int = 1) -> dict[str, Any]:
    t_start = time.perf_counter()
    detail = trials(n, seed)
    rows: list[dict[str, Any]] = []
    for diffusion in (False, True):
        for noise in NOISES:
            for nn in ("all", *NS):
                sel = [
                    d
                    for d in detail
                    if d["diffusion"] == diffusion
                    and d["noise"] == noise
                    and (nn == "all" or d["n"] == nn)
                ]
                rows.append(_row(diffusion, noise, str(nn), sel))
    return {
        "rows": rows,
        "by_damkohler": _by_da([d for d in detail if d["fit"] is not None]),
        "conditions": n,
        "coverage_goal_pct": COVERAGE * 100.0,
        "wall_s": time.perf_counter() - t_start,
        "fit_ms_n20": _fit_time(),
    }


def calibrate(n: int = 2000, seed: int = 2) -> dict[str, Any]:
    """The model-error table of :mod:`aldctl.tune.dose` from brute-force truth: per fit class
    and steepness bin, the relative error that the noise's part of the uncertainty leaves
    uncovered, at its COVERAGE quantile (non-decreasing with steepness)."""
    detail = [d for d in trials(n, seed) if d["fit"] is not None]
    nbins = len(STEEPNESS_EDGES) + 1
    table: list[list[float]] = []
    counts: list[list[int]] = []
    for cls in range(len(RESIDUAL_EDGES) + 1):
        row: list[float] = []
        cnt: list[int] = []
        for b in range(nbins):
            need = []
            for d in detail:
                f = d["fit"]
                if fit_class(f.residual) != cls or steepness_bin(f.steepness) != b:
                    continue
                err = f.saturation_dose_s - d["truth_s"]
                covered = (Z_COVERAGE * f.statistical_s) ** 2 + (Z_COVERAGE * f.correction_s) ** 2
                need.append(math.sqrt(max(err**2 - covered, 0.0)) / f.saturation_dose_s)
            cnt.append(len(need))
            # Too few trials for a quantile: the neighbour's value (filled below).
            row.append(float(np.quantile(need, COVERAGE)) if len(need) >= 10 else math.nan)
        # Non-decreasing with steepness; empty bins take the last measured one.
        last = 0.0
        for b in range(nbins):
            last = row[b] = max(last, row[b]) if not math.isnan(row[b]) else last
        table.append([round(v, 4) for v in row])
        counts.append(cnt)
    return {"seed": seed, "conditions": n, "model_error": table, "counts": counts}


def _row(diffusion: bool, noise: float, n: str, sel: list[dict[str, Any]]) -> dict[str, Any]:
    ans = [d for d in sel if d["fit"] is not None]
    errs = [d["error"] for d in ans]
    a = np.abs(np.array(errs)) if errs else np.array([math.nan])
    return {
        "chamber": "plug flow + axial diffusion" if diffusion else "ideal plug flow",
        "noise": f"{noise:.1%}",
        "N": n,
        "answered": len(errs),
        "refused": len(sel) - len(ans),
        "median_err_pct": float(np.median(a) * 100),
        "p90_err_pct": float(np.percentile(a, 90) * 100),
        "bias_pct": float(np.median(np.array(errs)) * 100) if errs else math.nan,
        "coverage_pct": 100.0 * sum(1 for d in ans if d["covered"]) / len(ans) if ans else math.nan,
        "median_width_pct": float(
            np.median([d["fit"].uncertainty_s / d["fit"].saturation_dose_s for d in ans]) * 100
        )
        if ans
        else math.nan,
    }


def _by_da(detail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    edges = [0.0, 0.3, 1.0, 3.0, 10.0, 30.0, math.inf]
    for diffusion in (False, True):
        for noise in NOISES:
            for lo, hi in itertools.pairwise(edges):
                sel = [
                    d
                    for d in detail
                    if d["diffusion"] == diffusion and d["noise"] == noise and lo <= d["da"] < hi
                ]
                if not sel:
                    continue
                a = np.abs([d["error"] for d in sel])
                out.append(
                    {
                        "chamber": "axial diffusion" if diffusion else "ideal plug flow",
                        "noise": f"{noise:.1%}",
                        "Da": f"{lo:g}-{hi:g}",
                        "count": len(sel),
                        "median_err_pct": float(np.median(a) * 100),
                        "p90_err_pct": float(np.percentile(a, 90) * 100),
                        "coverage_pct": 100.0 * sum(1 for d in sel if d["covered"]) / len(sel),
                    }
                )
    return out


def _fit_time() -> float:
    x = np.arange(1, 21) / 20
    prof = list(1.0 / (1.0 + np.exp(8.0 * x - 4.0)))
    t0 = time.perf_counter()
    for _ in range(20):
        fit_profile(prof, 5.0, fraction=True)
    return (time.perf_counter() - t0) / 20 * 1000.0


# --- tune RECIPE against brute-force saturation and purge curves on the 0-D simulator -----


def _grow(recipe: Path, doc: dict[str, Any], cname: str, steps: list[Any], n: int) -> float:
    """Film grown by ``n`` cycles of ``steps`` after the recipe's setup (simulated truth)."""
    return float(_simulate_cycles(recipe, doc, cname, steps, n)["thickness_nm"])


def _simulate_cycles(
    recipe: Path, doc: dict[str, Any], cname: str, steps: list[Any], n: int
) -> dict[str, Any]:
    """``aldctl simulate``'s result for ``n`` cycles of ``steps`` after the recipe's setup."""
    import tempfile

    import yaml as _yaml

    from aldctl.front.simulate import simulate
    from aldctl.session import prepare

    d = dict(doc)
    d["cycles"] = {**(doc.get("cycles") or {}), cname: steps}
    d["main"] = [{"cycle": {"name": cname, "repeat": n}}]
    with tempfile.NamedTemporaryFile(
        "w", suffix=".yaml", dir=recipe.parent, prefix=".bf-", delete=False
    ) as f:
        f.write(_yaml.safe_dump(d, sort_keys=False))
        path = Path(f.name)
    try:
        return simulate(prepare(path, None, ()))
    finally:
        path.unlink()


STEADY_CYCLES = (60, 120)
"""The cycles the brute force's growth per cycle is read between (the steady state). Cycles
3-6 were not: with a short purge the CVD share still builds up over ~50 cycles (lithicone's
LiHMDS at a 0.588 s purge: +0.87 % over cycles 3-6, +0.95 % over 10-30, +1.13 % over 30-60,
+1.26 % over 60-120 and over 120-240), so the reference purge was that of a process's first
cycles, not of the film it grows (LiHMDS 0.588 s, steady 0.72 s)."""


PURGE_TOL = 0.10
"""How close a recommended purge must be to the brute force's: 10 % of it, or 10 % of the
chamber's residence time where that is more (:func:`purge_agrees`)."""


def purge_agrees(purge_s: float, reference_s: float, tau_s: float) -> bool:
    """True when ``purge_s`` is within 10 % of ``reference_s`` or within 0.1 residence time
    of it, whichever is wider.

    A purge acts through the residue it leaves, ``exp(-purge / tau)``: two purges 0.1 tau
    apart leave residues 10 % apart, so the CVD they let through differs by 10 % of itself
    (1.00 % against 1.10 % at the limit), however short they are. Under one residence time a
    10 % difference of the purge itself is a far smaller difference of what it does (0.4 %
    at Al2O3 PEALD's 44 ms against its 0.42 s), and below what defines the reference: there
    the CVD share with no purge at all is 1.00-1.06 %, so the 1 % crossing,
    ``tau ln(A / 1 %)``, moves from 11 to 44 ms for a 1 % change of the dose. Above one
    residence time this is the plain 10 %."""
    return abs(purge_s - reference_s) <= PURGE_TOL * max(reference_s, tau_s)


def _steady_gpc(
    recipe: Path,
    doc: dict[str, Any],
    cname: str,
    steps: list[Any],
    cycles: tuple[int, int] = STEADY_CYCLES,
) -> float:
    a, b = cycles
    return (_grow(recipe, doc, cname, steps, b) - _grow(recipe, doc, cname, steps, a)) / (b - a)


def brute_force(
    recipe: Path,
    rel_tol: float = 0.01,
    cycle: str | None = None,
    trial: dict[str, tuple[float, float]] | None = None,
) -> dict[str, dict[str, float]]:
    """Saturating dose and shortest purge of every line, from growth curves on the simulator
    (each point the steady growth per cycle, cycles ``STEADY_CYCLES``).

    Doses: bisection on each line's pulse (the others 10x the recipe's, purges long) for 99 %
    of the saturated growth per cycle. Purges: with every line at its saturating dose,
    bisection on the purge after each line (the others long) for CVD <= 1 % of the growth.
    ``cycle``: which of the recipe's cycles (default: the first with doses), run on its own
    after the recipe's setup. A purge counts as enough when the growth per cycle is within
    1 % of the long-purge growth (CVD above it, or a loss below it), from the shortest purge
    tried (10 ms: then none is needed) up. Plasma steps run as the recipe has them.

    ``trial``: a recommendation (dose, purge) per line to read on the same truth: the growth
    at that dose as a fraction of the saturated growth (``growth_at_trial_dose``) and the
    growth's change at that purge (``cvd_at_trial_purge``), which say what a miss costs.
    """
    import yaml as _yaml

    from aldctl import yamlsrc
    from aldctl.front.tunerun import PURGE_FLOOR, all_cycle_doses, line_key
    from aldctl.session import load_tool

    doc = _yaml.safe_load(yamlsrc.read_source(recipe))  # bounded like every recipe read
    cycles = all_cycle_doses(recipe)
    cname, doses = next(((c, d) for c, d in cycles if c == cycle), cycles[0])
    long = max(10.0, *(3.0 * d.purge_s for d in doses))
    sat = [max(d.pulse_s * 10.0, 0.1) for d in doses]
    tool = load_tool(None, [d.chemical for d in doses if d.tunable])

    raw_steps = doc["cycles"][cname]
    plasma_steps = [st for st in raw_steps if isinstance(st, dict) and "plasma" in st]

    def steps(pulses: list[float], purges: list[float]) -> list[Any]:
        out: list[Any] = []
        plasmas = iter(plasma_steps)
        for k, d in enumerate(doses):
            if d.plasma is not None:
                # The cycle's plasma step as the recipe has it (without it LiPON's N2 plasma
                # never turned the surface over and nothing grew: a 10 ms "saturating" dose).
                out.append(next(plasmas))
            else:
                out.append({"pulse": {d.chemical: f"{pulses[k] * 1000:.4f} ms"}})
            out.append({"purge": f"{purges[k]:.4f} s"})
        return out

    longs = [long] * len(doses)
    g_sat = _steady_gpc(recipe, doc, cname, steps(sat, longs))
    best: list[float] = []
    for i, d in enumerate(doses):
        if not d.tunable:
            best.append(d.pulse_s)
            continue
        spec = tool.lines.get(d.chemical)
        lo, hi = (float(spec.min_pulse) if spec is not None else 0.0005), sat[i]

        def with_pulse(x: float, i: int = i) -> list[Any]:
            return steps([x if k == i else sat[k] for k in range(len(doses))], longs)

        if _steady_gpc(recipe, doc, cname, with_pulse(lo)) >= 0.99 * g_sat:
            hi = lo  # the valve's shortest pulse already saturates
        while hi / lo > 1.0 + rel_tol:
            mid = math.sqrt(lo * hi)
            if _steady_gpc(recipe, doc, cname, with_pulse(mid)) < 0.99 * g_sat:
                lo = mid
            else:
                hi = mid
        best.append(hi)
    g_best = _steady_gpc(recipe, doc, cname, steps(best, longs))
    # The chamber's residence time at these doses (the simulator's truth, not the trial's
    # fit of a pressure decay): the scale purge differences are judged on (purge_agrees).
    tau = float(_simulate_cycles(recipe, doc, cname, steps(best, longs), 3)["residence_time_s"])
    out: dict[str, dict[str, float]] = {}

    def off(p: float, i: int) -> bool:
        # Growth more than 1 % away from the long-purge growth: CVD above it, or a loss
        # below it (a short purge after LiPON's water loses 42 %; counting only the excess,
        # this reference once called 10 ms enough there).
        purges = [p if k == i else long for k in range(len(doses))]
        return abs(_steady_gpc(recipe, doc, cname, steps(best, purges)) / g_best - 1.0) > 0.01

    for i in range(len(doses)):
        if not doses[i].tunable:
            continue
        lo, hi = PURGE_FLOOR, long
        if not off(lo, i):
            hi = lo  # no purge needed: the shortest tried is the answer, not a bracket's edge
        while hi / lo > 1.0 + rel_tol:
            mid = math.sqrt(lo * hi)
            if off(mid, i):
                lo = mid
            else:
                hi = mid
        key = line_key(doses, i)
        out[key] = {"dose_s": best[i], "purge_s": hi, "gpc_nm": g_best, "tau_s": tau}
        if trial is not None and key in trial:
            dose, purge = trial[key]
            pulses = [dose if k == i else sat[k] for k in range(len(doses))]
            g = _steady_gpc(recipe, doc, cname, steps(pulses, longs))
            out[key]["growth_at_trial_dose"] = g / g_sat
            purges = [purge if k == i else long for k in range(len(doses))]
            g = _steady_gpc(recipe, doc, cname, steps(best, purges))
            out[key]["cvd_at_trial_purge"] = g / g_best - 1.0
    return out


def run_recipes(recipes: list[Path]) -> list[dict[str, Any]]:
    """For every recipe and reactant line: the trial's recommendation against brute force."""
    from aldctl.front.tunerun import all_cycle_doses, run_trial
    from aldctl.session import prepare
    from aldctl.tune.trial import TrialError

    rows: list[dict[str, Any]] = []
    for recipe in recipes:
        try:
            for cname, doses in all_cycle_doses(recipe):
                rows += _recipe_rows(recipe, cname, doses, prepare, run_trial)
        except TrialError as exc:
            rows.append({"recipe": recipe.name, "cycle": "", "line": "", "refused": str(exc)})
    return rows


def _recipe_rows(
    recipe: Path, cname: str, doses: list[Any], prepare: Any, run_trial: Any
) -> list[dict[str, Any]]:
    rows = []
    t0 = time.perf_counter()
    results = run_trial(prepare(recipe, None, ()), doses, None, cname)
    t_trial = time.perf_counter() - t0
    truth = brute_force(
        recipe, cycle=cname, trial={r.key: (r.saturation.dose_s, r.purge_s) for r in results}
    )
    for res in results:
        bf = truth[res.key]
        rows.append(
            {
                "recipe": recipe.name,
                "cycle": cname,
                "line": res.key,
                "signal": "QCM" if res.signal.startswith("QCM") else "pressure",
                "dose_ms": res.saturation.dose_s * 1000,
                "brute_dose_ms": bf["dose_s"] * 1000,
                "dose_err_pct": (res.saturation.dose_s / bf["dose_s"] - 1) * 100,
                "purge_s": res.purge_s,
                "brute_purge_s": bf["purge_s"],
                "purge_err_pct": (res.purge_s / bf["purge_s"] - 1) * 100,
                # The same difference in residence times (what decides the residue) and the
                # verdict: within 10 %, or within 0.1 tau (purge_agrees).
                "tau_s": bf["tau_s"],
                "purge_err_tau": (res.purge_s - bf["purge_s"]) / bf["tau_s"],
                "purge_agrees": purge_agrees(res.purge_s, bf["purge_s"], bf["tau_s"]),
                # What the recommendation does on the simulator's truth (a miss's cost).
                "growth_at_dose_pct": bf["growth_at_trial_dose"] * 100,
                "cvd_at_purge_pct": bf["cvd_at_trial_purge"] * 100,
                "trial_wall_s": t_trial,
            }
        )
    return rows
