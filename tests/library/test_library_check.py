"""`aldctl library check`: every published growth figure, simulated with its recipe through
the CLI's own path on the built-in tool, within 5 %."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

KNOWN_OFF: set[tuple[str, float]] = set()
"""Points the simulator is known to miss, each with its reason (none since issue 11's
attribution by what meets in the chamber: before it, LiFePO4's Li subcycle grew nothing)."""


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    # Once for the module (the check simulates 34 points): the CLI's own command, in-process.
    import contextlib
    import io
    import os
    import sys

    from aldctl.front.cli import main

    saved = (sys.argv, os.environ.get("ALDCTL_CHEMISTRY"))
    sys.argv = ["aldctl", "library", "check", "--json"]
    os.environ["ALDCTL_CHEMISTRY"] = ""
    buf = io.StringIO()
    code: object = 0
    try:
        with contextlib.redirect_stdout(buf):
            main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = saved[0]
        if saved[1] is None:
            os.environ.pop("ALDCTL_CHEMISTRY", None)
        else:
            os.environ["ALDCTL_CHEMISTRY"] = saved[1]
    out = list(json.loads(buf.getvalue()))
    assert code == (1 if any(r["off"] for r in out) else 0)
    return out


def test_every_published_point_is_checked(rows: list[dict[str, Any]]) -> None:
    from sim import library

    expected = sum(
        1 for p in library.processes().values() for f in p.published if f.value or f.value_range
    )
    assert len(rows) == expected
    assert all(r["recipe"] for r in rows), [r["process"] for r in rows if not r["recipe"]]


def test_every_published_point_within_5_percent(rows: list[dict[str, Any]]) -> None:
    off = {(r["process"], r["t_c"]): r for r in rows if r["off"]}
    unexpected = {
        k: (v["simulated"], v["published"], v["problem"])
        for k, v in off.items()
        if k not in KNOWN_OFF
    }
    assert not unexpected
    fixed = KNOWN_OFF - set(off)
    assert not fixed, f"now within 5 %: remove from KNOWN_OFF: {fixed}"


def test_purges_clear_and_leave_one_out_is_reported(rows: list[dict[str, Any]]) -> None:
    assert all(r["purge_ok"] for r in rows if r["simulated"] is not None)
    al = [r for r in rows if r["process"] == "Al2O3-TMA-H2O"]
    assert [r["t_c"] for r in al] == [120, 180, 200, 250]
    assert all(r["loo_error"] is not None for r in al)  # several points: predictable
    single = next(r for r in rows if r["process"] == "TiO2-TiCl4-H2O")
    assert single["loo_error"] is None
    nb = [r for r in rows if r["process"] == "LiNbOx-LiOtBu-NbOEt5"]
    assert {tuple(r["ratio"].values()) for r in nb} == {(1, 1), (1, 2), (1, 4), (2, 1)}
    assert all(1.82 <= r["simulated"] <= 2.87 for r in nb)
    assert all(r["basis"] == "range" for r in nb)


def test_exit_status_says_whether_every_point_holds(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    # a recipe directory whose only recipe under-doses water: the 120 degC point is off
    src = (ROOT / "recipes" / "oxides" / "al2o3_tma_h2o.yaml").read_text(encoding="utf-8")
    (tmp_path / "al2o3.yaml").write_text(src.replace("h2o_pulse: 60 ms", "h2o_pulse: 10 ms"))
    res = run_cli("library", "check", "--recipes", str(tmp_path))
    assert res.code == 1
    assert "| Al2O3-TMA-H2O | 120 |" in res.out
    assert "**off**" in res.out
    assert "no recipe in recipes/ names this process" in res.out  # the others have none here
