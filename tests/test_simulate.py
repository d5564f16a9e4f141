"""`aldctl simulate`: the schedule straight on the reactor model, as a user runs it."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., Any]


def sim_json(run_cli: Run, *args: str) -> dict[str, Any]:
    res = run_cli("simulate", *args, "--json")
    assert res.code == 0, res.err
    out: dict[str, Any] = json.loads(res.out)
    return out


def test_al2o3_grows_about_one_angstrom_per_cycle(run_cli: Run) -> None:
    out = sim_json(run_cli, "recipes/al2o3_tma_h2o.yaml")
    assert out["completed"] is True
    assert out["cycles"] == 100
    # Al2O3-TMA-H2O at 150 degC: 1.023 A/cycle in the library; saturated doses reach it.
    assert out["gpc_A"] == pytest.approx(1.025, rel=0.03)
    assert out["thickness_nm"] == pytest.approx(10.25, rel=0.03)
    assert out["composition"] == {"Al": pytest.approx(1.0)}
    assert set(out["precursor_g"]) == {"TMA", "H2O"}
    assert out["precursor_g"]["TMA"] > 0
    assert out["process_time_s"] > 100 * 10
    assert not [w for w in out["warnings"] if "sub-saturation" in w or "CVD" in w]
    for key in (
        "thickness_nm",
        "cycles",
        "gpc_A",
        "subcycles",
        "composition",
        "precursor_g",
        "process_time_s",
        "warnings",
    ):
        assert key in out


def test_short_purge_shows_cvd_excess_and_warns(run_cli: Run) -> None:
    good = sim_json(run_cli, "recipes/al2o3_tma_h2o.yaml")
    short = sim_json(run_cli, "recipes/al2o3_tma_h2o.yaml", "--set", "purge=0.6 s")
    # Under ~3 residence times of purge, the reactants meet in the gas: growth above ALD.
    assert short["gpc_A"] > 1.15 * good["gpc_A"]
    assert short["cvd_thickness_nm"] > 0.1 * short["thickness_nm"]
    assert any("CVD overlap" in w for w in short["warnings"])
    assert any("residence times" in w for w in short["warnings"])  # the validator too


def test_undersized_dose_warns_about_saturation(run_cli: Run) -> None:
    out = sim_json(
        run_cli, "recipes/al2o3_tma_h2o.yaml", "--set", "h2o_pulse=10 ms", "--set", "T=100 degC"
    )
    assert any("sub-saturation: H2O" in w for w in out["warnings"])


def test_supercycle_breakdown_and_composition(run_cli: Run) -> None:
    out = sim_json(run_cli, "recipes/litaox_1_6.yaml", "--set", "supercycles=10")
    assert out["cycles"] == 10
    assert out["subcycles"]["Li2O"]["count"] == 10
    assert out["subcycles"]["Ta2O5"]["count"] == 60
    # 5.2 A per 1:6 supercycle at 225 degC (process library, published)
    assert out["gpc_A"] == pytest.approx(5.2, rel=0.05)
    assert set(out["composition"]) == {"Li", "Ta"}
    assert 0.5 < out["composition"]["Li"] < 0.75


def test_trace_is_written(run_cli: Run, tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    res = run_cli(
        "simulate",
        "recipes/al2o3_tma_h2o.yaml",
        "--set",
        "cycles=3",
        "--trace",
        str(trace),
        "--trace-interval",
        "0.1",
    )
    assert res.code == 0, res.err
    with trace.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 100
    for channel in (
        "t_s",
        "pressure_torr",
        "p:TMA",
        "p:H2O",
        "coverage:ready",
        "valve:TMA",
        "thickness_a",
        "cvd_thickness_a",
    ):
        assert channel in rows[0], sorted(rows[0])
    # the trace sees the doses: TMA partial pressure rises above zero somewhere
    assert max(float(r["p:TMA"]) for r in rows) > 1e-3


def test_same_seed_same_answer(run_cli: Run) -> None:
    a = sim_json(run_cli, "recipes/al2o3_tma_h2o.yaml", "--set", "cycles=5", "--seed", "7")
    b = sim_json(run_cli, "recipes/al2o3_tma_h2o.yaml", "--set", "cycles=5", "--seed", "7")
    assert a == b


def test_invalid_recipe_is_refused(run_cli: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("main:\n  - pulse: {TMA: 2 ms}\n")
    res = run_cli("simulate", str(bad))
    assert res.code == 2
    assert "shorter than the TMA valve's minimum" in res.err


def test_cross_flow_chamber_and_its_thickness_map(run_cli: Run, tmp_path: Path) -> None:
    """`--cells N` cuts the chamber along the flow; a short TMA dose leaves a film thinner at
    the outlet; `--map` measures it where asked, `--map-out` writes it as CSV."""
    out_csv = tmp_path / "map.csv"
    args = ("recipes/al2o3_tma_h2o.yaml", "--set", "cycles=3", "--set", "tma_pulse=10 ms")
    out = sim_json(
        run_cli,
        *args,
        "--cells",
        "10",
        "--map",
        "0,0.5,1",
        "--map-noise",
        "1%",
        "--map-out",
        str(out_csv),
    )
    ch = out["chamber"]
    assert ch["cells"] == 10
    assert len(ch["thickness_nm"]) == 10
    assert ch["positions"][0] == pytest.approx(0.05)
    # the run's thickness is the substrate's (mid-chamber) cell's
    assert out["thickness_nm"] == pytest.approx(ch["thickness_nm"][5], rel=1e-12)
    m = out["thickness_map"]
    assert m["positions"] == [0.0, 0.5, 1.0]
    assert m["truth_nm"][0] == pytest.approx(ch["thickness_nm"][0])
    assert m["truth_nm"][2] == pytest.approx(ch["thickness_nm"][-1])
    assert m["truth_nm"][0] > m["truth_nm"][1] > m["truth_nm"][2]
    noise = [abs(a - b) / b for a, b in zip(m["thickness_nm"], m["truth_nm"], strict=True)]
    assert 0.0 < max(noise) < 0.05  # 1 % Gaussian: noisy, not wild
    rows = list(csv.reader(out_csv.read_text(encoding="utf-8").splitlines()))
    assert rows[0] == ["thickness_nm", "position"]
    assert [float(r[0]) for r in rows[1:]] == pytest.approx(m["thickness_nm"], abs=1e-6)
    # same seed, same map; another seed, another noise draw
    again = sim_json(run_cli, *args, "--cells", "10", "--map", "0,0.5,1", "--map-noise", "1%")
    assert again["thickness_map"] == m
    text = run_cli("simulate", *args, "--cells", "10", "--map-points", "4")
    assert text.code == 0, text.err
    assert "10 cells along the flow" in text.out
    assert "thickness map:" in text.out
    assert "1.000" in text.out
    assert "0.250" in text.out


def test_thickness_map_refuses_bad_input(run_cli: Run) -> None:
    for extra, want in (
        (("--map", "0,1.5"), "outside the chamber"),
        (("--map", "0,x"), "not a number"),
        (("--map", "0,1", "--map-points", "3"), "use one"),
        (("--map-out", "m.csv"), "--map-out needs"),
        (("--map", "0,1", "--map-noise", "lots"), "--map-noise"),
    ):
        res = run_cli("simulate", "recipes/al2o3_tma_h2o.yaml", *extra)
        assert res.code != 0
        assert res.err.startswith("error: ")
        assert want in res.err
        assert "hint" in res.err
        assert "Traceback" not in res.err
