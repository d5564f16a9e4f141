"""Growth figures say what they rest on: a published point, an interpolation, a single
point, a range or an assumption, in plan and simulate."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

AL2O3 = "recipes/al2o3_tma_h2o.yaml"


@pytest.mark.parametrize(
    ("t", "basis"),
    [("180 degC", "published"), ("150 degC", "interpolated"), ("275 degC", "extrapolated")],
)
def test_plan_marks_what_the_growth_rests_on(
    run_cli: Callable[..., Any], t: str, basis: str
) -> None:
    res = run_cli("plan", AL2O3, "--set", f"T={t}", "--json")
    assert res.code == 0, res.err
    (loop,) = json.loads(res.out)["loops"]
    assert loop["gpc_basis"] == basis
    assert loop["gpc_uncertainty"] is None  # points, not a range


def test_plan_and_simulate_text_show_the_basis(run_cli: Callable[..., Any]) -> None:
    res = run_cli("plan", AL2O3, "--set", "T=275 degC")
    assert "growth per cycle extrapolated" in res.out.replace("\n", " ")
    res = run_cli("simulate", AL2O3, "--set", "cycles=3", "--json")
    (gb,) = json.loads(res.out)["growth_basis"]
    assert gb["basis"] == "interpolated"
    assert "120-250 degC" in gb["detail"]


def test_a_published_range_carries_its_uncertainty() -> None:
    from sim import growthbasis, library

    b = growthbasis.basis(library.processes()["LiNbOx-LiOtBu-NbOEt5"], 235.0)
    assert b.label == "range"
    assert b.uncertainty == pytest.approx((2.87 - 1.82) / (2.87 + 1.82))
    assert growthbasis.summary(library.processes()["TiO2-TiCl4-H2O"]).label == "single point"
