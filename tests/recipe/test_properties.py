"""Property tests: random recipes round-trip through YAML, durations add up, ratios hold."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aldctl import config as cfg
from aldctl.recipe import model as m
from aldctl.recipe import schedule as s
from aldctl.recipe.compile import blocked, compile_recipe, interleave
from aldctl.recipe.load import load_recipe
from aldctl.recipe.schedule import NS, iter_units

CHEMS = ["TMA", "H2O", "DEZ", "TiCl4", "O3"]
PRECURSORS = ["TMA", "DEZ", "TiCl4"]

ms = st.integers(min_value=10, max_value=5000)  # pulse times in ms (>= valve minimum)
purge_ds = st.integers(min_value=20, max_value=300)  # purge times in 0.1 s (>= 2 s)


@st.composite
def cycle_steps(draw: st.DrawFn) -> list[dict[str, Any]]:
    """An ALD cycle: alternating precursor / co-reactant doses separated by purges."""
    n_half = draw(st.integers(min_value=1, max_value=3))
    steps: list[dict[str, Any]] = []
    for _ in range(n_half):
        prec = draw(st.sampled_from(PRECURSORS))
        co = draw(st.sampled_from(["H2O", "O3"]))
        steps.append({"pulse": {prec: f"{draw(ms)} ms"}})
        steps.append({"purge": f"{draw(purge_ds) / 10:g} s"})
        steps.append({"pulse": {co: f"{draw(ms)} ms"}})
        if draw(st.booleans()):
            steps.append(
                {
                    "purge": {
                        "time": f"{draw(purge_ds) / 10:g} s",
                        "carrier": f"{draw(st.integers(20, 150))} sccm",
                    }
                }
            )
        else:
            steps.append({"purge": f"{draw(purge_ds) / 10:g} s"})
        if draw(st.booleans()):
            steps.append({"wait": f"{draw(st.integers(1, 50))} s"})
    return steps


@st.composite
def recipes(draw: st.DrawFn) -> dict[str, Any]:
    n_cycles = draw(st.integers(min_value=1, max_value=3))
    cycles = {f"C{i}": draw(cycle_steps()) for i in range(n_cycles)}
    main: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if n_cycles >= 2 and draw(st.booleans()):
            names = draw(
                st.lists(st.sampled_from(list(cycles)), min_size=2, max_size=n_cycles, unique=True)
            )
            main.append(
                {
                    "supercycle": {
                        "ratio": {n: draw(st.integers(1, 6)) for n in names},
                        "order": draw(st.sampled_from(["interleaved", "blocked"])),
                        "repeat": draw(st.integers(1, 50)),
                    }
                }
            )
        else:
            main.append(
                {
                    "cycle": {
                        "name": draw(st.sampled_from(list(cycles))),
                        "repeat": draw(st.integers(1, 500)),
                    }
                }
            )
    return {
        "name": "random",
        "setup": [
            {
                "set": {
                    "substrate": f"{draw(st.integers(100, 300))} degC",
                    "carrier": "20 sccm",
                    "ozone": "10 %",
                }
            }
        ],
        "cycles": cycles,
        "main": main,
        "teardown": [{"set": {"substrate": "off"}}],
    }


def _load(doc: dict[str, Any]) -> tuple[m.Recipe, s.Schedule]:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.yaml"
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
        rec = load_recipe(p).recipe
    from aldctl.session import provision_lines, recipe_chemicals

    tool = provision_lines(cfg.load_builtin(), recipe_chemicals(rec))
    return rec, compile_recipe(rec, tool).schedule


def _seconds(text: str) -> float:
    num, unit = text.split()
    return float(num) * {"ms": 1e-3, "s": 1.0}[unit]


def _step_seconds(step: dict[str, Any]) -> float:
    ((kind, val),) = step.items()
    if kind == "pulse":
        return max(_seconds(v) for v in val.values())
    if kind == "purge":
        return _seconds(val["time"] if isinstance(val, dict) else val)
    if kind == "wait":
        return _seconds(val)
    raise AssertionError(kind)


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(recipes())
def test_random_recipes_round_trip(doc: dict[str, Any]) -> None:
    rec, _ = _load(doc)
    assert set(rec.cycles) == set(doc["cycles"])
    for name, steps in doc["cycles"].items():
        loaded = rec.cycles[name].steps
        assert len(loaded) == len(steps)
        for raw, step in zip(steps, loaded, strict=True):
            ((kind, val),) = raw.items()
            assert type(step).__name__.lower() == kind
            if isinstance(step, m.Pulse):
                assert {d.chemical: round(d.duration_s, 9) for d in step.doses} == {
                    k: round(_seconds(v), 9) for k, v in val.items()
                }
            elif isinstance(step, m.Purge):
                assert abs(step.duration_s - _step_seconds(raw)) < 1e-9
                if isinstance(val, dict):
                    assert step.carrier_sccm == float(val["carrier"].split()[0])
    for raw, step in zip(doc["main"], rec.main, strict=True):
        if "cycle" in raw:
            assert isinstance(step, m.CycleRun)
            assert (step.cycle, step.repeat) == (raw["cycle"]["name"], raw["cycle"]["repeat"])
        else:
            assert isinstance(step, m.Supercycle)
            assert dict(step.ratio) == raw["supercycle"]["ratio"]
            assert step.order.value == raw["supercycle"]["order"]


@FAST
@given(recipes())
def test_compiled_duration_equals_sum_of_step_times(doc: dict[str, Any]) -> None:
    _, sched = _load(doc)
    expected = 0.0
    per_cycle = {n: sum(_step_seconds(st) for st in steps) for n, steps in doc["cycles"].items()}
    for raw in doc["main"]:
        if "cycle" in raw:
            expected += per_cycle[raw["cycle"]["name"]] * raw["cycle"]["repeat"]
        else:
            sc = raw["supercycle"]
            expected += sc["repeat"] * sum(per_cycle[n] * c for n, c in sc["ratio"].items())
    assert abs(sched.min_duration_ns / NS - expected) < 1e-6 * max(1.0, expected)
    # The unit-by-unit walk the engine does gives the same total.
    walked = sum(u.body.min_ns for u in iter_units(sched.main))
    assert walked == sched.min_duration_ns


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from("ABCDE"), st.integers(1, 40), min_size=2, max_size=5))
def test_interleaving_keeps_exact_counts(ratio: dict[str, int]) -> None:
    pairs = list(ratio.items())
    for fn in (interleave, blocked):
        seq = fn(pairs)
        assert Counter(seq) == Counter(ratio)
        assert len(seq) == sum(ratio.values())


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30))
def test_interleaving_spreads_the_minority(a: int, b: int) -> None:
    """Between two minority subcycles there are floor or ceil(majority/minority) others."""
    seq = interleave([("A", a), ("B", b)])
    minority = "A" if a <= b else "B"
    n_min, n_maj = min(a, b), max(a, b)
    pos = [i for i, x in enumerate(seq) if x == minority]
    gaps = (
        [(pos[(i + 1) % n_min] - pos[i] - 1) % len(seq) for i in range(n_min)]
        if n_min > 1
        else [n_maj]
    )
    lo, hi = n_maj // n_min, -(-n_maj // n_min)
    assert all(lo <= g <= hi for g in gaps), (seq, gaps)


@FAST
@given(recipes(), st.data())
def test_resume_from_any_checkpoint_matches_the_full_walk(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    _, sched = _load(doc)
    start = data.draw(st.integers(0, sched.units - 1))
    head = [(u.index, u.cycle, u.rep, u.position) for u in iter_units(sched.main)]
    tail = [(u.index, u.cycle, u.rep, u.position) for u in iter_units(sched.main, start)]
    assert tail == head[start:]
