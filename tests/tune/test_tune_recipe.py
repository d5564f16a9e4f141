"""`aldctl tune RECIPE` on the built-in simulated tool: recommendations, overrides, the
patched copy and the report page; and the evaluation against brute-force saturation and
purge curves on the same simulator (``aldctl simulate``'s truth, not the trial's readings)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from aldctl.front.tunebench import brute_force
from aldctl.front.tunerun import _doses, run_trial
from aldctl.session import prepare
from tests.conftest import RECIPES, CliResult

CliRun = Callable[..., CliResult]
AL2O3 = RECIPES / "al2o3_tma_h2o.yaml"


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


def test_tune_recipe_errors(run_cli: CliRun, tmp_path: Path) -> None:
    res = run_cli("tune", str(AL2O3), "--line", "DEZ")
    assert res.code == 2
    assert "--line DEZ: not dosed in cycle 'Al2O3'" in res.err
    res = run_cli("tune", str(tmp_path / "nope.yaml"))
    assert res.code == 2
    assert "no such recipe file" in res.err


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_recommendations_within_ten_percent_of_brute_force(recipe: Path, campaign: bool) -> None:
    """Every recipe of the library whose lines the QCM sees. In CI only the Al2O3 recipe
    runs (the brute-force sweeps take ~10 s a recipe); ``pytest --campaign`` runs them all."""
    if recipe != AL2O3 and not campaign:
        pytest.skip("brute-force sweeps of every recipe run under --campaign")
    doses, _ = _doses(recipe)
    results = run_trial(prepare(recipe, None, ()), doses, None)
    truth = brute_force(recipe)
    for res in results:
        bf = truth[res.chemical]
        assert res.saturation.dose_s == pytest.approx(bf["dose_s"], rel=0.10), res.chemical
        assert res.purge_s == pytest.approx(bf["purge_s"], rel=0.15), res.chemical
