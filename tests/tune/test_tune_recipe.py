"""`aldctl tune RECIPE` on the built-in simulated tool: recommendations, overrides, the
patched copy and the report page; and the evaluation against brute-force saturation and
purge curves on the same simulator (``aldctl simulate``'s truth, not the trial's readings)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from aldctl.front.tunebench import brute_force, purge_agrees
from aldctl.front.tunerun import PURGE_FLOOR, all_cycle_doses, cycle_doses, run_trial
from aldctl.session import prepare
from aldctl.tune.trial import TrialError
from tests.conftest import RECIPES, ROOT, CliResult

CliRun = Callable[..., CliResult]
AL2O3 = RECIPES / "al2o3_tma_h2o.yaml"
LITAOX = RECIPES / "litaox_1_6.yaml"


def test_tune_recipe_writes_overrides_a_patched_copy_and_a_report(
    run_cli: CliRun, tmp_path: Path
) -> None:
    out = tmp_path / "tuned.yaml"
    page = tmp_path / "page.html"
    res = run_cli("tune", str(AL2O3), "--write", str(out), "--report", str(page), "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert set(data["lines"]) == {"TMA", "H2O"}
    for line in data["lines"].values():
        assert line["signal"] == "QCM per-pulse mass gain"
        assert 0.005 < line["dose_s"] < 0.2
        assert 0.5 < line["purge_s"] < 10.0
    # The recipe's doses are parameters: overrides for each, the shared purge at its longest.
    assert set(data["set"]) == {"tma_pulse", "h2o_pulse", "purge"}
    # The patched copy is a valid recipe whose growth per cycle is the saturated one (99 %
    # saturating doses, under 1 % extra growth from the purges), against long doses and purges.
    res = run_cli("simulate", str(out), "--set", "cycles=20", "--json")
    assert res.code == 0, res.err
    tuned = json.loads(res.out)["gpc_A"]
    long = ("tma_pulse=150 ms", "h2o_pulse=300 ms", "purge=15 s", "cycles=20")
    res = run_cli("simulate", str(AL2O3), *(x for kv in long for x in ("--set", kv)), "--json")
    saturated = json.loads(res.out)["gpc_A"]
    assert tuned == pytest.approx(saturated, rel=0.015)
    assert not [w for w in json.loads(res.out)["warnings"] if "sub-saturation" in w]
    html = page.read_text()
    assert "saturation curve" in html
    assert "data:image/png;base64," in html
    # Purges under the tool's purge rule are named, and they are exactly the ones `aldctl
    # validate` then warns about in the patched copy: the user hears of it from tune first.
    assert data["purge_rule_s"] == pytest.approx(7 * 0.45)
    named = set(data["purges_under_rule"])
    assert named == {k for k, v in data["lines"].items() if v["purge_s"] < data["purge_rule_s"]}
    res = run_cli("validate", str(out))
    warned = [ln for ln in res.err.splitlines() + res.out.splitlines() if "residence times" in ln]
    assert bool(warned) == bool(named)


def test_tune_recipe_errors(run_cli: CliRun, tmp_path: Path) -> None:
    res = run_cli("tune", str(AL2O3), "--line", "DEZ")
    assert res.code == 2
    assert "--line DEZ: not dosed in cycle(s) 'Al2O3'" in res.err
    res = run_cli("tune", str(tmp_path / "nope.yaml"))
    assert res.code == 2
    assert "no such recipe file" in res.err


_TRUTH: dict[tuple[Path, str | None], dict[str, dict[str, float]]] = {}


def _truth(recipe: Path, cycle: str | None = None) -> dict[str, dict[str, float]]:
    if (recipe, cycle) not in _TRUTH:
        _TRUTH[recipe, cycle] = brute_force(recipe, cycle=cycle)
    return _TRUTH[recipe, cycle]


@pytest.mark.parametrize(
    "recipe",
    sorted(p for p in RECIPES.rglob("*.yaml") if not p.name.startswith(".")),
    ids=lambda p: str(p.relative_to(RECIPES)),
)
def test_recommendations_within_ten_percent_of_brute_force(recipe: Path, campaign: bool) -> None:
    """Every recipe of the library, every cycle (a supercycle's subcycles each, PEALD cycles
    around their plasma; the built-in tool's QCM sees every half-reaction: the smallest
    cycle, V2O5's 0.27 A, is 0.74 Hz against 0.003 Hz for an averaged reading). In CI only
    the Al2O3 recipe runs (the brute-force sweeps take 10-30 s a cycle); ``pytest
    --campaign`` runs them all."""
    if recipe != AL2O3 and not campaign:
        pytest.skip("brute-force sweeps of every recipe run under --campaign")
    try:
        cycles = all_cycle_doses(recipe)
    except TrialError as exc:  # a stack of included recipes: nothing of its own to tune
        pytest.skip(f"nothing to tune: {exc}")
    for cname, doses in cycles:
        results = run_trial(prepare(recipe, None, ()), doses, None, cname)
        truth = _truth(recipe, cname)
        for res in results:
            bf = truth[res.key]
            name = f"{cname}/{res.key}"
            assert res.saturation.dose_s == pytest.approx(bf["dose_s"], rel=0.10), name
            # within 10 %, or 0.1 residence time where that is wider (purge_agrees: Al2O3
            # PEALD's TMA, 34 ms against 44 ms with tau 0.45 s, the 1 % crossing moving from
            # 11 to 44 ms for a 1 % change of the dose). Every line, Li3PO4's TMP included
            # since the simulator's LiOtBu uptake on Li3PO4 conserves lithium (issue 16).
            ok = purge_agrees(res.purge_s, bf["purge_s"], bf["tau_s"])
            assert ok, (name, res.purge_s, bf["purge_s"], bf["tau_s"])


def test_a_purge_agrees_within_ten_percent_or_a_tenth_of_a_residence_time() -> None:
    """The evaluation's verdict on a purge (bench tune-recipes' purge_agrees): 10 % of brute
    force's, or 0.1 residence time where that is wider (purges 0.1 tau apart leave residues
    10 % apart). Figures of the README's table."""
    assert purge_agrees(0.0335, 0.0442, 0.453)  # Al2O3 PEALD's TMA: -24 %, -0.024 tau
    assert not purge_agrees(0.0335, 0.0442, 0.05)  # the same purges in a 50 ms chamber
    assert not purge_agrees(0.913, 1.229, 0.423)  # Li3PO4's TMP on main 049af87: -0.75 tau
    assert purge_agrees(1.30, 1.35, 0.423)  # Li3PO4's LiOtBu: -3.1 %
    assert not purge_agrees(2.0, 2.3, 0.453)  # long purges: the plain 10 %


def _subcycle_gpc(recipe: Path, ta: tuple[float, float], h2o: tuple[float, float]) -> float:
    """Growth per Ta2O5 subcycle on the simulator (aldctl simulate's truth, no QCM) with the
    TaOEt5 and H2O (pulse, purge after it) as given, after the recipe's setup."""
    import yaml

    from aldctl.front.tunebench import _steady_gpc

    doc = yaml.safe_load(recipe.read_text())
    steps = [
        {"pulse": {"TaOEt5": f"{ta[0] * 1000:.2f} ms"}},
        {"purge": f"{ta[1]:.4f} s"},
        {"pulse": {"H2O": f"{h2o[0] * 1000:.2f} ms"}},
        {"purge": f"{h2o[1]:.4f} s"},
    ]
    # Cycles 3-6 (what this check was written against): the steady window the campaign's
    # reference uses costs 4x here (18 vs 74 s under load), over CI's budget.
    return _steady_gpc(recipe, doc, "Ta2O5", steps, (3, 6))


def test_a_supercycles_later_subcycle_is_tuned(run_cli: CliRun, tmp_path: Path) -> None:
    """litaox's Ta2O5 subcycle (the second cycle of the supercycle) gets its own trial, on
    the simulator's truth: the TaOEt5 dose saturates (99 % of the long-dose growth per
    subcycle) and is not wastefully long (90 % of it does not); the purges keep CVD under
    ~1 % and are not wastefully long either (90 % of the water's lets more through). H2O is
    dosed in both subcycles and tuned in each."""
    out = tmp_path / "tuned.yaml"
    args = ("--line", "TaOEt5", "--line", "H2O", "--write", str(out))
    res = run_cli("tune", str(LITAOX), *args, "--report", str(tmp_path / "p.html"), "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["cycles"] == ["Li2O", "Ta2O5"]
    assert set(data["lines"]) == {"Li2O/H2O", "Ta2O5/H2O", "TaOEt5"}
    ta = data["lines"]["TaOEt5"]
    h2o = data["lines"]["Ta2O5/H2O"]
    assert ta["cycle"] == h2o["cycle"] == "Ta2O5"
    assert ta["dose_s"] < 1.0 < ta["recipe_dose_s"]  # the recipe's 2 s is several times enough
    original = LITAOX.read_text().splitlines()
    patched = out.read_text().splitlines()
    changed = [a.strip() for a, b in zip(original, patched, strict=True) if a != b]
    assert "- pulse: {TaOEt5: 2 s}" in changed
    assert "- pulse: {LiOtBu: 2 s}" not in changed  # not asked for
    long = 10.0
    saturated = _subcycle_gpc(out, (5.0, long), (0.1, long))
    dose = ta["dose_s"]
    assert _subcycle_gpc(out, (dose, long), (0.1, long)) >= 0.985 * saturated
    assert _subcycle_gpc(out, (0.9 * dose, long), (0.1, long)) < 0.99 * saturated
    for purge, at in ((ta["purge_s"], 0), (h2o["purge_s"], 1)):

        def grow(p: float, at: int = at) -> float:
            purges = [p if k == at else long for k in range(2)]
            return _subcycle_gpc(out, (dose, purges[0]), (h2o["dose_s"], purges[1]))

        base = grow(long)
        assert grow(purge) < 1.015 * base, at
        if at == 1:
            # The water's CVD decays faster past 3 tau than the one-to-three-tau
            # extrapolation says (+17 % before the bisection on the tool).
            assert grow(0.9 * purge) > 1.01 * base


def test_without_a_qcm_the_pressure_response_gives_the_doses(tmp_path: Path) -> None:
    """A tool without a QCM: the doses from each pulse's pressure area (the surface's uptake
    is the deficit below the saturated pulses' area); the purge from the purge rule on the
    measured residence time (no growth signal to see CVD by)."""
    cfg = tmp_path / "noqcm.yaml"
    builtin = (ROOT / "aldctl" / "data" / "sim-tool.yaml").read_text()
    cfg.write_text("".join(ln for ln in builtin.splitlines(keepends=True) if "qcm" not in ln))
    doses, _ = cycle_doses(AL2O3)
    results = run_trial(prepare(AL2O3, cfg, ()), doses, None)
    truth = _truth(AL2O3, "Al2O3")
    for res in results:
        assert res.signal == "per-pulse pressure response"
        assert res.saturation.dose_s == pytest.approx(truth[res.key]["dose_s"], rel=0.15)
        # The rule is conservative against the measured CVD: longer, never shorter.
        assert truth[res.key]["purge_s"] < res.purge_s < 1.6 * truth[res.key]["purge_s"]


def test_tune_recipe_from_a_thickness_map(run_cli: CliRun, tmp_path: Path) -> None:
    """The user's own trial: a thickness map of one line's under-saturating dose gives the
    dose (tune dose's method); the purge is the tool's rule; works without running anything."""
    trial = tmp_path / "map.csv"
    trial.write_text("fraction\n0.97\n0.94\n0.88\n0.78\n0.62\n")
    out = tmp_path / "tuned.yaml"
    page = tmp_path / "page.html"
    args = ("--line", "TMA", "--map", str(trial), "--trial-dose", "0.5s")
    res = run_cli("tune", str(AL2O3), *args, "--write", str(out), "--report", str(page), "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    tma = data["lines"]["TMA"]
    assert tma["signal"] == "thickness map"
    assert 0.5 < tma["dose_s"] < 5.0
    assert tma["purge_s"] == pytest.approx(0.45 * 7)  # the built-in tool's tau x purge factor
    assert "tma_pulse: " + data["set"]["tma_pulse"] in out.read_text()
    assert "data:image/png;base64," in page.read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("0.9\nnope\n0.5\n0.3\n")
    res = run_cli("tune", str(AL2O3), "--line", "TMA", "--map", str(bad), "--trial-dose", "1s")
    assert res.code == 2
    assert f"{bad}:2:1: error: not a number" in res.err
    res = run_cli("tune", str(AL2O3), "--map", str(trial), "--trial-dose", "1s")
    assert res.code == 2
    assert "exactly one --line" in res.err
    # A line dosed only in a supercycle's later subcycle: found there, patched there.
    out2 = tmp_path / "tuned2.yaml"
    args = ("--line", "TaOEt5", "--map", str(trial), "--trial-dose", "0.1s")
    page2 = str(tmp_path / "p2.html")
    res = run_cli("tune", str(LITAOX), *args, "--write", str(out2), "--report", page2, "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["cycle"] == "Ta2O5"
    assert "- pulse: {TaOEt5: 2 s}" not in out2.read_text()


def test_a_line_dosed_twice_in_one_cycle_is_tuned_per_pulse(
    run_cli: CliRun, tmp_path: Path
) -> None:
    """Li3PO4 doses water twice per cycle (after LiOtBu and after TMP): two pulses, two
    results (H2O#1, H2O#2) with their own purges, each patched in its own place."""
    recipe = RECIPES / "lithium" / "li3po4_liotbu_tmp.yaml"
    out = tmp_path / "tuned.yaml"
    res = run_cli(
        "tune", str(recipe), "--line", "H2O", "--write", str(out), "--report",
        str(tmp_path / "p.html"), "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    lines = json.loads(res.out)["lines"]
    assert set(lines) == {"H2O#1", "H2O#2"}
    assert lines["H2O#1"]["chemical"] == lines["H2O#2"]["chemical"] == "H2O"
    # The purge after the second water (before LiOtBu) is the one CVD needs; after the first
    # (before TMP) nothing reacts, so none is needed (the shortest purge tried).
    assert lines["H2O#2"]["purge_s"] > 2.0 * lines["H2O#1"]["purge_s"]
    assert lines["H2O#1"]["purge_s"] == PURGE_FLOOR  # not one residence time (0.42 s)
    patched = out.read_text()
    assert patched.count("- pulse: {H2O: 50 ms}") == 0


def _cycle_gpc(recipe: Path, cname: str, steps: list[object]) -> float:
    """Steady growth per cycle of ``steps`` after the recipe's setup: ``aldctl simulate``'s
    truth (no QCM), independent of the trial's readings."""
    import yaml

    from aldctl.front.tunebench import _steady_gpc

    # Cycles 3-6, as written (see _subcycle_gpc): the steady window is the campaign's.
    return _steady_gpc(recipe, yaml.safe_load(recipe.read_text()), cname, list(steps), (3, 6))


def _saturates_and_is_not_wasteful(
    recipe: Path, cname: str, make: Callable[[float], list[object]], dose: float, long: float
) -> None:
    saturated = _cycle_gpc(recipe, cname, make(long))
    assert _cycle_gpc(recipe, cname, make(dose)) >= 0.985 * saturated
    assert _cycle_gpc(recipe, cname, make(0.9 * dose)) < 0.99 * saturated


def test_an_ozone_process_is_tuned_with_the_generator_on(run_cli: CliRun, tmp_path: Path) -> None:
    """V2O5 from VTOP and O3: the trial sets the recipe's setup up, the ozone generator
    included (it once left it off, so the O3 line dosed plain O2: O3 dose -64 %, VTOP +2,318 %
    against brute force). On the simulator's truth, each recommended dose grows >= 98.5 % of
    the saturated growth per cycle and 90 % of it does not reach 99 %."""
    recipe = RECIPES / "oxides" / "v2o5_vtop_o3.yaml"
    res = run_cli("tune", str(recipe), "--report", str(tmp_path / "p.html"), "--json")
    assert res.code == 0, res.err
    lines = json.loads(res.out)["lines"]
    vtop, o3 = lines["VTOP"]["dose_s"], lines["O3"]["dose_s"]

    def cycle(v: float, o: float) -> list[object]:
        return [
            {"pulse": {"VTOP": f"{v}s"}},
            {"purge": "10s"},
            {"pulse": {"O3": f"{o}s"}},
            {"purge": "10s"},
        ]

    def with_vtop(x: float) -> list[object]:
        return cycle(x, 0.5)

    def with_o3(x: float) -> list[object]:
        return cycle(3.0, x)

    _saturates_and_is_not_wasteful(recipe, "V2O5", with_vtop, vtop, 3.0)
    _saturates_and_is_not_wasteful(recipe, "V2O5", with_o3, o3, 0.5)


def test_a_peald_cycle_tunes_its_precursor_around_the_plasma(
    run_cli: CliRun, tmp_path: Path
) -> None:
    """ZrO2 by TDMAZr and an O2 plasma: one pulse and a plasma step per cycle. The trial runs
    the plasma step as the recipe has it and tunes the precursor's dose (before: refused, 'no
    cycle with two or more single-chemical pulses'); the plasma's own time is not tuned."""
    recipe = RECIPES / "oxides" / "zro2_peald.yaml"
    out = tmp_path / "tuned.yaml"
    page = str(tmp_path / "p.html")
    res = run_cli("tune", str(recipe), "--write", str(out), "--report", page, "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert set(data["lines"]) == {"TDMAZr"}
    dose = data["lines"]["TDMAZr"]["dose_s"]
    plasma = {"plasma": {"gas": "O2", "flow": "20 sccm", "power": "300 W", "time": "5 s"}}

    def with_dose(x: float) -> list[object]:
        return [{"pulse": {"TDMAZr": f"{x}s"}}, {"purge": "5s"}, plasma, {"purge": "5s"}]

    _saturates_and_is_not_wasteful(recipe, "ZrO2", with_dose, dose, 3.0)
    patched = out.read_text()
    assert "- plasma: {gas: O2, flow: 20 sccm, power: 300 W, time: 5 s}" in patched
    # `purge` is also the purge after the plasma, which no trial measured: not shortened.
    assert data["lines"]["TDMAZr"]["purge_s"] < 1.0
    assert "  purge: 5 s" in patched
    res = run_cli("tune", str(recipe), "--line", "O2-plasma")
    assert res.code == 2
    assert "--line O2-plasma: not dosed" in res.err
