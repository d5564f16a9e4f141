"""Planner: what a compiled recipe will take and give, before anything runs.

Duration (a lower bound when the recipe waits on conditions), cycle counts, valve
actuations and open time per line, dose time and estimated consumption per chemical,
expected thickness and composition from the process library, and temperature-window
warnings. Everything is computed from the Schedule arithmetically: a 10,000-cycle plan
costs the same as a 10-cycle one.

Consumption uses the vapour-draw delivery model of :mod:`sim.delivery` at the source
temperatures the recipe sets (room temperature for unheated sources): an estimate for
ordering precursor, not a metered figure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aldctl.config import ToolConfig
from aldctl.diagnostics import Diagnostic, Diagnostics
from aldctl.recipe import schedule as s
from aldctl.recipe.schedule import NS
from aldctl.units import format_duration
from sim import chemistry, delivery, growthbasis, library

ROOM_C = 25.0


@dataclass(slots=True)
class LoopPlan:
    label: str
    supercycle: bool
    passes: int
    counts: dict[str, int]
    process: str | None
    substrate_c: float | None
    pass_s: float
    duration_s: float
    thickness_nm: float | None
    gpc_per_pass_a: float | None
    subcycle_fraction: dict[str, float] = field(default_factory=dict)
    thickness_fraction: dict[str, float] = field(default_factory=dict)
    cations: dict[str, float] = field(default_factory=dict)
    target_nm: float | None = None
    basis: str | None = None
    """What the growth figure rests on: published, interpolated, single point, range,
    extrapolated, derived or assumed (sim.growthbasis)."""
    basis_detail: str = ""
    uncertainty: float | None = None
    """Relative half-width of a published range, where the data give one."""


@dataclass(slots=True)
class LinePlan:
    chemical: str
    actuations: int
    open_s: float


@dataclass(slots=True)
class ChemicalPlan:
    pulses: int
    dose_s: float
    grams: float | None


@dataclass(slots=True)
class Plan:
    recipe: str
    tool: str
    params: dict[str, Any]
    duration_s: float
    lower_bound: bool
    setup_s: float
    main_s: float
    teardown_s: float
    wait_timeouts_s: float
    checkpoints: int
    loops: list[LoopPlan]
    lines: dict[str, LinePlan]
    chemicals: dict[str, ChemicalPlan]
    thickness_nm: float | None
    cations: dict[str, float]
    warnings: list[Diagnostic]

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "tool": self.tool,
            "params": dict(self.params),
            "duration_s": round(self.duration_s, 6),
            "duration": format_duration(self.duration_s),
            "duration_is_lower_bound": self.lower_bound,
            "setup_s": round(self.setup_s, 6),
            "main_s": round(self.main_s, 6),
            "teardown_s": round(self.teardown_s, 6),
            "wait_until_timeouts_s": round(self.wait_timeouts_s, 3),
            "checkpoints": self.checkpoints,
            "loops": [
                {
                    "label": lp.label,
                    "kind": "supercycle" if lp.supercycle else "cycle",
                    "repetitions": lp.passes,
                    "cycles": lp.counts,
                    "process": lp.process,
                    "substrate_c": lp.substrate_c,
                    "pass_s": round(lp.pass_s, 6),
                    "duration_s": round(lp.duration_s, 6),
                    "target_nm": lp.target_nm,
                    "thickness_nm": _r(lp.thickness_nm),
                    "gpc_A": _r(lp.gpc_per_pass_a),
                    "gpc_basis": lp.basis,
                    "gpc_basis_detail": lp.basis_detail,
                    "gpc_uncertainty": None if lp.uncertainty is None else round(lp.uncertainty, 4),
                    "subcycle_fraction": {k: round(v, 4) for k, v in lp.subcycle_fraction.items()},
                    "thickness_fraction": {
                        k: round(v, 4) for k, v in lp.thickness_fraction.items()
                    },
                    "cation_fraction": {k: round(v, 4) for k, v in lp.cations.items()},
                }
                for lp in self.loops
            ],
            "valves": {
                name: {
                    "chemical": lp.chemical,
                    "actuations": lp.actuations,
                    "open_s": round(lp.open_s, 6),
                }
                for name, lp in self.lines.items()
            },
            "chemicals": {
                name: {
                    "pulses": cp.pulses,
                    "dose_time_s": round(cp.dose_s, 6),
                    "estimated_g": _r(cp.grams, 6),
                }
                for name, cp in self.chemicals.items()
            },
            "thickness_nm": _r(self.thickness_nm),
            "cation_fraction": {k: round(v, 4) for k, v in self.cations.items()},
            "warnings": [d.format() for d in self.warnings],
        }


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(v, nd)


def _awaits(body: s.Body) -> float:
    return sum(p.timeout_ns for p in body.phases if isinstance(p, s.Await)) / NS


def plan(schedule: s.Schedule, tool: ToolConfig) -> Plan:
    diags = Diagnostics()
    actuations: Counter[str] = Counter()
    open_ns: Counter[str] = Counter()
    main_ns = 0
    timeouts = _awaits(schedule.setup) + _awaits(schedule.teardown)

    def add_stats(st: s.BodyStats, times: int) -> None:
        for k, v in st.actuations.items():
            actuations[k] += v * times
        for k, v in st.open_ns.items():
            open_ns[k] += v * times

    add_stats(schedule.setup.stats, 1)
    add_stats(schedule.teardown.stats, 1)
    for block, times in s.walk_blocks(schedule.main):
        add_stats(block.body.stats, times)
        main_ns += block.body.expected_ns * times
        timeouts += _awaits(block.body) * times

    loops: list[LoopPlan] = []
    film_moles: dict[str, float] = {}
    thickness_total: float | None = 0.0
    for loop, times in s.walk_loops(schedule.main):
        loop_ns = 0
        for name, reps in loop.counts().items():
            st, dur = loop.cycles[name].stats_for(reps)
            add_stats(st, times)
            loop_ns += dur
            for body in loop.cycles[name].variants.values():
                timeouts += _awaits(body) * reps * times / max(1, len(loop.cycles[name].variants))
        main_ns += loop_ns * times
        lp = _loop_plan(loop, times, loop_ns, diags)
        loops.append(lp)
        if lp.thickness_nm is None:
            thickness_total = None
        elif thickness_total is not None:
            thickness_total += lp.thickness_nm
        for el, frac in lp.cations.items():
            film_moles[el] = film_moles.get(el, 0.0) + frac * (lp.thickness_nm or 0.0)

    lines: dict[str, LinePlan] = {}
    chems: dict[str, ChemicalPlan] = {}
    for line in sorted(actuations):
        spec = tool.lines.get(line)
        chem = spec.chemical if spec else line
        lines[line] = LinePlan(chem, actuations[line], open_ns[line] / NS)
        n = actuations[line]
        mean_s = open_ns[line] / NS / n if n else 0.0
        src = schedule.source_c.get(line, ROOM_C) if spec and spec.source_heater else ROOM_C
        grams: float | None = None
        c = chemistry.lookup(chem)
        if c is not None and c.vapour is not None:
            grams = delivery.pulse_grams(chem, src, mean_s) * n
        prev = chems.get(chem)
        if prev is None:
            chems[chem] = ChemicalPlan(n, open_ns[line] / NS, grams)
        else:
            prev.pulses += n
            prev.dose_s += open_ns[line] / NS
            prev.grams = None if prev.grams is None or grams is None else prev.grams + grams

    for line, lp_ in lines.items():
        spec = tool.lines.get(line)
        cp = chems.get(lp_.chemical)
        if spec is None or cp is None or cp.grams is None:
            continue
        grams = cp.grams * (lp_.actuations / cp.pulses if cp.pulses else 1.0)
        if grams > spec.source_mass:
            diags.warning(
                f"line {line}: the recipe draws about {grams * 1e3:.3g} mg of {lp_.chemical}, "
                f"more than the {spec.source_mass * 1e3:.3g} mg its source holds "
                "(source_mass in the tool config): the doses fall short before the end",
            )
    total_cat = sum(film_moles.values())
    cations = {k: v / total_cat for k, v in film_moles.items()} if total_cat else {}
    # awaits count at their expected time (heat-up after a set), not just their hold
    setup_s = schedule.setup.expected_ns / NS
    teardown_s = schedule.teardown.expected_ns / NS
    return Plan(
        recipe=schedule.recipe,
        tool=schedule.tool,
        params=dict(schedule.params),
        duration_s=setup_s + main_ns / NS + teardown_s,
        lower_bound=schedule.has_await,
        setup_s=setup_s,
        main_s=main_ns / NS,
        teardown_s=teardown_s,
        wait_timeouts_s=timeouts,
        checkpoints=schedule.units,
        loops=loops,
        lines=lines,
        chemicals=chems,
        thickness_nm=thickness_total if loops else None,
        cations=cations,
        warnings=list(diags),
    )


def _loop_plan(loop: s.Loop, times: int, loop_ns: int, diags: Diagnostics) -> LoopPlan:
    counts = loop.counts()
    passes = loop.repeat * times
    total_sub = sum(counts.values())
    lp = LoopPlan(
        label=loop.label,
        supercycle=loop.supercycle,
        passes=passes,
        counts={k: v * times for k, v in counts.items()},
        process=loop.process,
        substrate_c=loop.substrate_c,
        pass_s=loop.pass_ns / NS,
        duration_s=loop_ns * times / NS,
        thickness_nm=None,
        gpc_per_pass_a=None,
        subcycle_fraction={k: v / total_sub for k, v in counts.items()},
        target_nm=loop.target_nm,
    )
    if loop.process is None:
        if all(cd.process is not None for cd in loop.cycles.values()):
            chems = sorted({c for cd in loop.cycles.values() for c in cd.chemicals})
            diags.warning(
                f"{loop.label}: {' + '.join(chems) or 'no doses'} matches no process in the "
                "library: no thickness estimate",
                loop.loc,
            )
        # a cycle with no process at all: the compiler has warned (every command shows it)
        return lp
    proc = library.processes()[loop.process]
    t = loop.substrate_c
    if t is None:
        diags.warning(
            f"{loop.label}: the recipe never sets the substrate temperature: no "
            f"thickness estimate for {proc.id}",
            loop.loc,
        )
        return lp
    lo, hi = proc.valid_range
    if t < lo:
        diags.warning(
            f"{loop.label}: substrate {t:g} degC is below the {proc.id} window "
            f"({lo:g}-{hi:g} degC): expect condensation and extra, non-uniform growth",
            loop.loc,
        )
    elif t > proc.decomposition_onset:
        diags.warning(
            f"{loop.label}: substrate {t:g} degC is above the decomposition onset of "
            f"{proc.decomposing_precursor} ({proc.decomposition_onset:g} degC): it decomposes "
            "on every hot surface, growth is not self-limited (longer purges do not help): "
            "lower the temperature",
            loop.loc,
        )
    elif t > hi:
        diags.warning(
            f"{loop.label}: substrate {t:g} degC is above the {proc.id} window "
            f"({lo:g}-{hi:g} degC): expect lower growth (desorption)",
            loop.loc,
        )
    kinds = [loop.cycles[n].kind or n for n in loop.sequence]
    growth = proc.sequence_growth(kinds, t) if proc.is_supercycle else [proc.gpc(t)]
    per_pass = sum(growth)
    lp.gpc_per_pass_a = per_pass
    b = growthbasis.basis(proc, t)
    lp.basis, lp.basis_detail, lp.uncertainty = b.label, b.detail, b.uncertainty
    lp.thickness_nm = per_pass * passes / 10.0
    by_kind: dict[str, float] = {}
    for name, g in zip(loop.sequence, growth, strict=True):
        by_kind[name] = by_kind.get(name, 0.0) + g
    lp.thickness_fraction = {k: v / per_pass for k, v in by_kind.items()} if per_pass else {}
    moles: dict[str, float] = {}
    for name, kind in zip(loop.sequence, kinds, strict=True):
        phase = proc.cycles[kind].phase
        for el, mol in phase.cation_moles(by_kind[name] / loop.sequence.count(name)).items():
            moles[el] = moles.get(el, 0.0) + mol
    tot = sum(moles.values())
    lp.cations = {k: v / tot for k, v in moles.items()} if tot else {}
    return lp
