"""The recipe language: every step kind loads and compiles to the right timed actions."""

from __future__ import annotations

from pathlib import Path

import pytest

from aldctl import config as cfg
from aldctl.diagnostics import UserError
from aldctl.recipe import model as m
from aldctl.recipe import schedule as s
from aldctl.recipe.compile import blocked, compile_recipe, interleave
from aldctl.recipe.load import load_recipe, parse_overrides
from aldctl.recipe.schedule import NS, ActionKind, iter_units

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "recipes"


def tool_for(recipe: m.Recipe) -> cfg.ToolConfig:
    from aldctl.session import provision_lines, recipe_chemicals

    return provision_lines(cfg.load_builtin(), recipe_chemicals(recipe))


def compile_text(tmp_path: Path, text: str, **overrides: object) -> s.Schedule:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    rec = load_recipe(p, overrides).recipe  # type: ignore[arg-type]
    return compile_recipe(rec, tool_for(rec)).schedule


AL2O3 = """
params: {T: 200 degC, cycles: 10, purge: 5 s}
setup:
  - set: {substrate: $T, carrier: 20 sccm}
cycles:
  A:
    - pulse: {TMA: 15 ms}
    - purge: $purge
    - pulse: {H2O: 15 ms}
    - purge: $purge
main:
  - cycle: {name: A, repeat: $cycles}
"""


def test_every_step_kind_loads_and_compiles() -> None:
    rec = load_recipe(FIX / "every_step.yaml").recipe
    kinds: set[str] = set()

    def walk(steps: tuple[m.Step, ...]) -> None:
        for st in steps:
            kinds.add(type(st).__name__)
            if isinstance(st, m.Repeat | m.Every):
                walk(st.steps)

    walk(rec.setup)
    walk(rec.main)
    for c in rec.cycles.values():
        walk(c.steps)
    assert kinds >= {
        "Pulse",
        "Purge",
        "Expose",
        "Plasma",
        "Set",
        "Ramp",
        "Wait",
        "WaitUntil",
        "Repeat",
        "Every",
        "CycleRun",
        "Supercycle",
        "Include",
    }
    compiled = compile_recipe(rec, tool_for(rec))
    sched = compiled.schedule
    # A x3, then 2 x (supercycle A:B 2:3 x2 + a wait block), A:B 1:1 x1, A to 2 nm (20 at
    # 1.0 A/cycle), then the include: its setup block and C x2.
    assert sched.units == 3 + 2 * (5 * 2 + 1) + 2 + 20 + 1 + 2


def test_pulse_purge_timing_and_duration(tmp_path: Path) -> None:
    sched = compile_text(tmp_path, AL2O3)
    (loop,) = sched.main
    assert isinstance(loop, s.Loop)
    body = loop.cycles["A"].body(1)
    (timed,) = body.phases
    assert isinstance(timed, s.Timed)
    assert [(a.offset_ns, a.kind, a.target, a.duration_ns) for a in timed.actions] == [
        (0, ActionKind.PULSE, "TMA", 15_000_000),
        (5_015_000_000, ActionKind.PULSE, "H2O", 15_000_000),
    ]
    assert timed.duration_ns == 10_030_000_000
    assert sched.min_duration_ns == 10 * 10_030_000_000


def test_set_overrides_param(tmp_path: Path) -> None:
    sched = compile_text(tmp_path, AL2O3, cycles=1000, purge="2 s")
    assert sched.units == 1000
    assert sched.min_duration_ns == 1000 * 4_030_000_000
    assert sched.params["cycles"] == 1000


def test_unknown_set_param_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(AL2O3)
    with pytest.raises(UserError) as ei:
        load_recipe(p, {"cylces": 5})
    text = str(ei.value)
    assert "no parameter 'cylces'" in text
    assert "did you mean 'cycles'" in text


def test_parse_overrides_types() -> None:
    assert parse_overrides(["cycles=1000", "T=250 degC", "x=1.5"]) == {
        "cycles": 1000,
        "T": "250 degC",
        "x": 1.5,
    }
    with pytest.raises(UserError):
        parse_overrides(["nonsense"])


def test_boosted_purge_sets_and_restores_carrier(tmp_path: Path) -> None:
    sched = compile_text(
        tmp_path,
        AL2O3.replace(
            "- purge: $purge\n    - pulse: {H2O",
            "- purge: {time: 4 s, carrier: 80 sccm}\n    - pulse: {H2O",
        ),
    )
    (loop,) = sched.main
    assert isinstance(loop, s.Loop)
    (timed,) = loop.cycles["A"].body(1).phases
    assert isinstance(timed, s.Timed)
    flows = [(a.offset_ns, a.value) for a in timed.actions if a.kind is ActionKind.SET_FLOW]
    assert flows == [(15_000_000, 80.0), (4_015_000_000, 20.0)]


def test_expose_closes_and_reopens_pump(tmp_path: Path) -> None:
    sched = compile_text(
        tmp_path,
        """
setup: [{set: {substrate: 200 degC}}]
cycles:
  X:
    - expose: {dose: {TMA: 50 ms}, hold: 10 s, pump: 5 s}
    - pulse: {H2O: 15 ms}
    - purge: 5 s
main: [{cycle: {name: X, repeat: 1}}]
""",
    )
    (loop,) = sched.main
    assert isinstance(loop, s.Loop)
    (timed,) = loop.cycles["X"].body(1).phases
    assert isinstance(timed, s.Timed)
    iso = [(a.offset_ns, a.value) for a in timed.actions if a.kind is ActionKind.PUMP_ISOLATION]
    assert iso == [(0, 0.0), (10_050_000_000, 1.0)]
    h2o = next(a for a in timed.actions if a.target == "H2O")
    assert h2o.offset_ns == 15_050_000_000


def test_plasma_step_sequence(tmp_path: Path) -> None:
    sched = compile_text(
        tmp_path,
        """
setup: [{set: {substrate: 150 degC, carrier: 20 sccm}}]
cycles:
  P:
    - pulse: {TMA: 20 ms}
    - purge: 5 s
    - plasma: {gas: O2, flow: 20 sccm, power: 300 W, time: 4 s, stabilize: 2 s}
    - purge: 5 s
main: [{cycle: {name: P, repeat: 5}}]
""",
    )
    (loop,) = sched.main
    assert isinstance(loop, s.Loop)
    assert loop.process == "Al2O3-TMA-O2plasma"
    (timed,) = loop.cycles["P"].body(1).phases
    assert isinstance(timed, s.Timed)
    t0 = 5_020_000_000
    seq = [(a.offset_ns - t0, a.kind, a.value) for a in timed.actions if a.offset_ns >= t0]
    assert seq == [
        (0, ActionKind.SET_FLOW, 20.0),
        (2 * NS, ActionKind.RF_ON, 300.0),
        (4 * NS, ActionKind.CHECK_PLASMA, 300.0),  # 2 s stabilize + 2 s ignition time
        (6 * NS, ActionKind.RF_OFF, None),
        (6 * NS, ActionKind.SET_FLOW, 0.0),
    ]


def test_ramp_duration_from_known_start(tmp_path: Path) -> None:
    sched = compile_text(
        tmp_path,
        """
setup:
  - set: {substrate: 100 degC}
  - ramp: {substrate: 250 degC, rate: 10 K/min}
main: [{wait: 1 s}]
""",
    )
    assert sched.setup.timed_ns == 15 * 60 * NS
    (timed,) = sched.setup.phases
    assert isinstance(timed, s.Timed)
    ramp = timed.actions[-1]
    assert (ramp.kind, ramp.value, ramp.rate) == (ActionKind.SET_TEMPERATURE, 250.0, 10.0)


def test_wait_until_is_a_lower_bound(tmp_path: Path) -> None:
    sched = compile_text(
        tmp_path,
        """
setup:
  - set: {substrate: 200 degC}
  - wait_until: {substrate: {within: 2 K, for: 60 s}, timeout: 30 min}
main: [{wait: 10 s}]
""",
    )
    aw = sched.setup.phases[-1]
    assert isinstance(aw, s.Await)
    assert aw.conditions[0].setpoint == 200.0
    assert aw.conditions[0].value == 2.0
    assert aw.timeout_ns == 30 * 60 * NS
    assert sched.has_await
    assert sched.min_duration_ns == 70 * NS


@pytest.mark.parametrize(
    ("ratio", "order", "expected"),
    [
        ((("A", 1), ("B", 1)), "interleaved", "AB"),
        ((("A", 1), ("B", 3)), "interleaved", "BABB"),
        ((("A", 2), ("B", 3)), "interleaved", "BABAB"),
        ((("A", 1), ("B", 10)), "interleaved", "BBBBBABBBBB"),
        ((("A", 5), ("B", 1)), "interleaved", "AAABAA"),
        ((("A", 1), ("B", 1)), "blocked", "AB"),
        ((("A", 1), ("B", 3)), "blocked", "ABBB"),
        ((("A", 2), ("B", 3)), "blocked", "AABBB"),
        ((("A", 1), ("B", 10)), "blocked", "ABBBBBBBBBB"),
        ((("A", 5), ("B", 1)), "blocked", "AAAAAB"),
    ],
)
def test_supercycle_expansion(
    tmp_path: Path, ratio: tuple[tuple[str, int], ...], order: str, expected: str
) -> None:
    fn = interleave if order == "interleaved" else blocked
    assert "".join(fn(ratio)) == expected
    ra, rb = ratio[0][1], ratio[1][1]
    sched = compile_text(
        tmp_path,
        f"""
setup: [{{set: {{substrate: 225 degC}}}}]
cycles:
  A: [{{pulse: {{TMA: 15 ms}}}}, {{purge: 5 s}}, {{pulse: {{H2O: 15 ms}}}}, {{purge: 5 s}}]
  B: [{{pulse: {{DEZ: 15 ms}}}}, {{purge: 5 s}}, {{pulse: {{H2O: 15 ms}}}}, {{purge: 5 s}}]
main:
  - supercycle: {{ratio: {{A: {ra}, B: {rb}}}, order: {order}, repeat: 3}}
""",
    )
    units = list(iter_units(sched.main))
    assert "".join(u.cycle or "" for u in units) == expected * 3
    assert [u.rep for u in units][: len(expected) + 1] == [1] * len(expected) + [2]


def test_every_nth_fires_on_multiples(tmp_path: Path) -> None:
    sched = compile_text(
        tmp_path,
        """
setup:
  - set: {substrate: 80 degC, source.LiHMDS: 60 degC, line.LiHMDS: 70 degC}
  - set: {source.EG: 30 degC, line.EG: 40 degC}
cycles:
  L:
    - pulse: {LiHMDS: 2 s}
    - purge: 10 s
    - pulse: {EG: 1 s}
    - purge: 10 s
    - every: {n: 3, steps: [{pulse: {CO2: 1 s}}, {purge: 10 s}]}
main: [{cycle: {name: L, repeat: 10}}]
""",
    )
    units = list(iter_units(sched.main))
    with_co2 = [u.index + 1 for u in units if "CO2" in u.body.stats.actuations]
    assert with_co2 == [3, 6, 9]
    (loop,) = sched.main
    assert isinstance(loop, s.Loop)
    assert loop.process == "lithicone-LiHMDS-EG-CO2"
    base, extra = 23 * NS, 34 * NS
    assert sched.min_duration_ns == 7 * base + 3 * extra


def test_every_counts_per_cycle_inside_supercycles(tmp_path: Path) -> None:
    sched = compile_text(
        tmp_path,
        """
setup: [{set: {substrate: 150 degC}}]
cycles:
  A:
    - pulse: {TMA: 15 ms}
    - purge: 5 s
    - pulse: {H2O: 15 ms}
    - purge: 5 s
    - every: {n: 2, steps: [{wait: 1 s}]}
  B: [{pulse: {DEZ: 15 ms}}, {purge: 5 s}, {pulse: {H2O: 15 ms}}, {purge: 5 s}]
main:
  - supercycle: {ratio: {A: 3, B: 1}, order: blocked, repeat: 2}
""",
    )
    durations = [u.body.min_ns for u in iter_units(sched.main) if u.cycle == "A"]
    # A's own count runs 1..6 across both supercycles; every 2nd one waits 1 s more.
    assert [d - durations[0] for d in durations] == [0, NS, 0, NS, 0, NS]


def test_include_runs_setup_and_main_with_params(tmp_path: Path) -> None:
    (tmp_path / "film.yaml").write_text("""
params: {k: 2}
setup: [{set: {substrate: 150 degC}}]
cycles:
  C: [{pulse: {TMA: 15 ms}}, {purge: 5 s}, {pulse: {H2O: 15 ms}}, {purge: 5 s}]
main: [{cycle: {name: C, repeat: $k}}]
""")
    sched = compile_text(
        tmp_path,
        """
main:
  - include: {file: film.yaml, params: {k: 4}}
  - include: film.yaml
""",
    )
    loops = [seg for seg in sched.main if isinstance(seg, s.Loop)]
    assert [lp.repeat for lp in loops] == [4, 2]
    assert sched.units == 1 + 4 + 1 + 2


def test_target_thickness_from_library(tmp_path: Path) -> None:
    sched = compile_text(
        tmp_path, AL2O3.replace("repeat: $cycles", "target: 20 nm").replace("cycles: 10, ", "")
    )
    (loop,) = sched.main
    assert isinstance(loop, s.Loop)
    # Al2O3-TMA-H2O at 200 degC: 1.0 A/cycle -> 200 cycles for 20 nm.
    assert loop.repeat == 200


def test_supercycle_target_uses_sequence_growth() -> None:
    rec = load_recipe(ROOT / "recipes" / "litaox_1_6.yaml").recipe
    text = rec.text.replace("repeat: $supercycles", "target: 52 nm").replace(
        "  supercycles: 40\n", ""
    )
    p = ROOT / "tests" / "recipes" / "_tmp_target.yaml"
    try:
        p.write_text(text)
        r2 = load_recipe(p).recipe
        sched = compile_recipe(r2, tool_for(r2)).schedule
    finally:
        p.unlink()
    (loop,) = sched.main
    assert isinstance(loop, s.Loop)
    # 5.2 A per 1:6 supercycle at 225 degC -> 100 supercycles for 52 nm.
    assert loop.repeat == 100
    assert loop.process == "LiTaOx-LiOtBu-TaOEt5"


def test_resume_iteration_starts_mid_supercycle(tmp_path: Path) -> None:
    sched = compile_text(
        tmp_path,
        """
setup: [{set: {substrate: 225 degC}}]
cycles:
  A: [{pulse: {TMA: 15 ms}}, {purge: 5 s}, {pulse: {H2O: 15 ms}}, {purge: 5 s}]
  B: [{pulse: {DEZ: 15 ms}}, {purge: 5 s}, {pulse: {H2O: 15 ms}}, {purge: 5 s}]
main:
  - cycle: {name: A, repeat: 2}
  - repeat: {times: 3, steps: [{supercycle: {ratio: {A: 1, B: 2}, repeat: 2}}, {wait: 1 s}]}
""",
    )
    everything = list(iter_units(sched.main))
    assert [u.index for u in everything] == list(range(sched.units))
    for start in range(sched.units):
        tail = list(iter_units(sched.main, start))
        assert [(u.index, u.cycle, u.rep, u.position) for u in tail] == [
            (u.index, u.cycle, u.rep, u.position) for u in everything[start:]
        ]


def test_ten_thousand_cycles_share_one_body(tmp_path: Path) -> None:
    sched = compile_text(tmp_path, AL2O3, cycles=10_000)
    (loop,) = sched.main
    assert isinstance(loop, s.Loop)
    assert loop.repeat == 10_000
    assert len(loop.cycles["A"].variants) == 1
    assert sched.min_duration_ns == 10_000 * 10_030_000_000
