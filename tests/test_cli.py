"""The command line as a user meets it: validate, plan, tool show, help, version."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_every_shipped_recipe_validates(run_cli: Callable[..., Any]) -> None:
    assert RECIPES
    res = run_cli("validate", *map(str, RECIPES))
    assert res.code == 0, res.err
    for r in RECIPES:
        assert f"{r}: ok" in res.out


def test_plan_json(run_cli: Callable[..., Any]) -> None:
    res = run_cli("plan", "recipes/al2o3_tma_h2o.yaml", "--set", "cycles=1000", "--json")
    assert res.code == 0, res.err
    plan = json.loads(res.out)
    assert plan["checkpoints"] == 1000
    assert plan["duration_is_lower_bound"] is True  # the setup waits for the substrate
    # 1000 x (15 ms + 5 s + 30 ms + 5 s) plus 60 s of setup and 30 s of teardown, plus
    # the substrate's heat-up from 25 to 150 degC on the simulated heater (sim.config).
    from sim.config import heater_settle_s

    heat = heater_settle_s("substrate", 25.0, 150.0)
    assert 300 < heat < 900
    assert plan["duration_s"] == pytest.approx(1000 * 10.045 + 60 + 30 + heat)
    assert plan["valves"]["TMA"]["actuations"] == 1000
    assert plan["valves"]["H2O"]["open_s"] == pytest.approx(30.0)
    (loop,) = plan["loops"]
    assert loop["process"] == "Al2O3-TMA-H2O"
    # 150 degC lies between the 120 (1.05 A) and 180 degC (1.0 A) points: 0.536 of the
    # way in 1/T (the library interpolates in 1/T).
    assert loop["gpc_A"] == pytest.approx(1.0232, abs=1e-4)
    assert plan["thickness_nm"] == pytest.approx(102.32, abs=0.01)
    assert plan["chemicals"]["TMA"]["estimated_g"] > 0


def test_plan_supercycle_composition(run_cli: Callable[..., Any]) -> None:
    res = run_cli("plan", "recipes/litaox_1_6.yaml", "--json")
    assert res.code == 0, res.err
    plan = json.loads(res.out)
    (loop,) = plan["loops"]
    assert loop["kind"] == "supercycle"
    assert loop["cycles"] == {"Ta2O5": 240, "Li2O": 40}
    assert loop["subcycle_fraction"] == {
        "Ta2O5": pytest.approx(6 / 7, abs=1e-4),
        "Li2O": pytest.approx(1 / 7, abs=1e-4),
    }
    assert loop["gpc_A"] == pytest.approx(5.2)
    assert plan["thickness_nm"] == pytest.approx(40 * 0.52)


def test_plan_warns_outside_the_window(run_cli: Callable[..., Any]) -> None:
    res = run_cli("plan", "recipes/al2o3_tma_h2o.yaml", "--set", "T=320 degC")
    assert res.code == 0, res.err
    assert "above the Al2O3-TMA-H2O window (80-250 degC)" in res.err


def test_plan_warns_about_short_purges(run_cli: Callable[..., Any]) -> None:
    res = run_cli("plan", "recipes/al2o3_tma_h2o.yaml", "--set", "purge=0.5 s")
    assert res.code == 0
    assert "warning: purge of 500 ms is 1.1 residence times" in res.err  # tau 0.45 s
    assert "recipes/al2o3_tma_h2o.yaml:" in res.err


def test_plan_human_output(run_cli: Callable[..., Any]) -> None:
    res = run_cli("plan", "recipes/al2o3_tma_h2o.yaml")
    assert res.code == 0
    assert "duration >= 24 min 46 s" in res.out  # heat-up 25 -> 150 degC included
    assert "expected thickness 10.23 nm" in res.out


def test_tool_show_provisions_lines(run_cli: Callable[..., Any]) -> None:
    res = run_cli("tool", "show", "recipes/litaox_1_6.yaml")
    assert res.code == 0, res.err
    tool = yaml.safe_load(res.out)
    assert set(tool["lines"]) == {"LiOtBu", "H2O", "TaOEt5"}
    assert tool["lines"]["LiOtBu"]["source_heater"] == "source.LiOtBu"
    assert tool["devices"]["source.LiOtBu"]["driver"] == "simulated-heater"


def test_tool_show_output_is_a_valid_config(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    res = run_cli("tool", "show", "recipes/al2o3_tma_h2o.yaml")
    p = tmp_path / "tool.yaml"
    p.write_text(res.out)
    res2 = run_cli("validate", "recipes/al2o3_tma_h2o.yaml", "--config", str(p))
    assert res2.code == 0, res2.err


def test_bad_config_is_located(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    p = tmp_path / "tool.yaml"
    p.write_text(
        "devices:\n  v: {driver: x}\nlines:\n  TMA: {chemical: TMA, valve: v:0, "
        "min_pulse: 10 sccm}\nchamber: {volume: 1 L, tau: 1 s}\n"
    )
    res = run_cli("validate", "recipes/al2o3_tma_h2o.yaml", "--config", str(p))
    assert res.code == 2
    assert f"{p}:4:" in res.err
    assert "is not a time" in res.err
    assert f"{p}:5:" in res.err
    assert "unknown key 'tau'" in res.err


def test_version(run_cli: Callable[..., Any]) -> None:
    from aldctl import __version__

    res = run_cli("--version")
    assert res.code == 0
    assert __version__ in res.out


@pytest.mark.parametrize("cmd", [[], ["validate"], ["plan"], ["tool", "show"]])
def test_help_teaches_with_examples(run_cli: Callable[..., Any], cmd: list[str]) -> None:
    res = run_cli(*cmd, "--help")
    assert res.code == 0
    assert "Usage: aldctl" in res.out
    assert "aldctl " in res.out.split("Usage:", 1)[1]
    if cmd:
        assert "Examples:" in res.out


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys; sys.argv=['aldctl','--help']\n"
        "from aldctl.front.cli import main\n"
        "try:\n main()\nexcept SystemExit: pass\n"
        "heavy=[m for m in ('pint','pydantic','pymodbus','textual','matplotlib','sim') "
        "if m in sys.modules]\nprint('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in out


def test_bench_engine_runs_the_shipped_recipe(run_cli: Any) -> None:
    """The figure is of the shipped TMA/H2O recipe at 15 ms / 5 s (it once fell back to a
    built-in recipe without those parameters and failed after a move of the module)."""
    res = run_cli("bench", "engine", "-n", "20", "--json")
    assert res.code == 0, res.err
    rows = json.loads(res.out)
    assert rows[0]["cycles"] == 20
    assert rows[0]["outcome"] == "complete"
    # the run's own CPU time beside its wall time, and the film it grew (~0.094 nm/cycle)
    assert rows[0]["cpu_s"] > 0
    assert 20 * 0.08 < rows[0]["thickness_nm"] < 20 * 0.11


def test_bench_realtime_traces_each_pulse(run_cli: Any, tmp_path: Path) -> None:
    """`--trace` writes one row per pulse of the real-time run: which line, when it was
    commanded (from main's first commanded edge: the recipe's own grid, 15 + 100 ms apart),
    and how late the opening and the closing were; the width error is their difference."""
    import csv

    trace = tmp_path / "pulses.csv"
    res = run_cli("bench", "realtime", "-n", "2", "--trace", str(trace), "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)[0]["pulses"] == 4
    with trace.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["line"] for r in rows] == ["TMA", "H2O", "TMA", "H2O"]
    assert [r["commanded_open_s"] for r in rows] == ["0.000000", "0.115000", "0.230000", "0.345000"]
    assert {r["duration_ms"] for r in rows} == {"15"}
    for r in rows:
        opened, closed, width = (
            float(r[k]) for k in ("open_error_ms", "close_error_ms", "width_error_ms")
        )
        # the valve is never written before its deadline
        assert opened >= 0
        assert closed >= 0
        assert abs((closed - opened) - width) < 2e-4


def test_bench_realtime_says_which_late_pulses_met_a_host_stall(
    run_cli: Any, tmp_path: Path
) -> None:
    """The host-stall figures are in the bench's JSON beside the old ones, and agree with
    the per-edge stalls of its trace: the unstalled pulses are those with no stall at
    either edge."""
    import csv

    trace = tmp_path / "pulses.csv"
    res = run_cli("bench", "realtime", "-n", "3", "--trace", str(trace), "--json")
    assert res.code == 0, res.err
    [row] = json.loads(res.out)
    for old in ("pulses", "width_err_p50_ms", "width_err_p99_ms", "width_err_max_ms",
                "open_err_p99_ms", "drift_ms", "drift_from_anchor_ms", "scheduler",
                "width_warnings"):  # fmt: skip
        assert old in row  # other tooling reads these
    assert row["stalls"] >= 0
    assert row["stall_longest_ms"] >= (0.05 if row["stalls"] else 0.0)
    attributed = ("late_pulses_stalled", "late_pulses_woken_late", "late_pulses_called_late")
    assert 0 <= sum(row[k] for k in attributed) <= row["late_pulses"]
    assert row["stall_records_dropped"] == 0
    with trace.open() as f:
        rows = list(csv.DictReader(f))
    clean = [r for r in rows if r["host"] not in ("stall", "idle wake")]
    assert row["unstalled_pulses"] == len(clean)
    for r in rows:
        if r["host"] == "stall":  # a stall the clock saw at the edge that made it wrong
            late_edge = "close" if float(r["width_error_ms"]) > 0 else "open"
            assert r[f"{late_edge}_stall_ms"]
    assert row["late_pulses"] == sum(abs(float(r["width_error_ms"])) > 0.1 for r in rows)
    if clean:
        worst = max(abs(float(r["width_error_ms"])) for r in clean)
        assert row["unstalled_width_err_max_ms"] == pytest.approx(worst, abs=1e-4)
    for r in rows:
        for k in ("open_stall_ms", "close_stall_ms"):
            assert not r[k] or float(r[k]) >= 0.05  # over the threshold (4 decimals)
    help_text = run_cli("bench", "realtime", "--help").out
    assert "late_pulses_stalled" in help_text
    assert "unstalled_width_err_p99_ms" in help_text


def test_a_real_time_run_records_the_host_stalls(run_cli: Any, tmp_path: Path) -> None:
    """After a run on the wall clock, its summary and its journal say how often the
    machine stalled the engine at a valve edge (an operator sees a host unfit for it)."""
    from aldctl.front.bench import REALTIME_RECIPE

    recipe = tmp_path / "rt.yaml"
    recipe.write_text(REALTIME_RECIPE.replace("cycles: 150", "cycles: 2"))
    data = str(tmp_path / "data")
    res = run_cli("run", str(recipe), "--realtime", "--json", "--data-dir", data)
    assert res.code == 0, res.err
    out = json.loads(res.out)
    stalls = out["host_stalls"]
    # every edge spun toward: 2 cycles of 2 pulses, and setup's and the end's deadlines
    assert stalls["spins"] >= 8
    assert stalls["threshold_ms"] == pytest.approx(0.05)
    assert stalls["stalls"] >= stalls["stalled_sleeps"] >= stalls["deadlines_covered"]
    assert (stalls["longest_ms"] > 0.05) == (stalls["stalls"] > 0)
    shown = json.loads(run_cli("runs", "show", out["run_id"], "--json", "--data-dir", data).out)
    assert shown["summary"]["host_stalls"] == stalls
    virtual = json.loads(run_cli("run", str(recipe), "--json", "--data-dir", data).out)
    assert "host_stalls" not in virtual  # nothing spins in virtual time


def test_late_pulses_are_attributed_to_the_stalls_at_their_edges() -> None:
    """A pulse is judged at the edge that made its width wrong (the close of a long pulse,
    the open of a short one): the machine's when the clock saw a stall while spinning
    toward that edge, or a late wake-up there that the thread spent off the CPU; a late
    wake of a busy thread, or a sleep called late, is counted apart and stays among the
    unstalled (not known to be the machine's), and so does a pulse late at an edge where
    the clock saw nothing, whatever happened at its other edge; a stall at some other
    deadline belongs to no pulse."""
    from aldctl.engine.clock import Stall
    from aldctl.front.bench import attribute_stalls

    def spin(deadline: float, length_ms: float, late_ms: float = 0.0) -> Stall:
        return Stall(
            "spin", deadline, deadline - 0.001, length_ms / 1e3, 1, late_ms > 0, late_ms / 1e3
        )

    pulses = [
        (0.000, 0.015, 0.00030),  # long: a stall at its close
        (0.115, 0.130, -0.00020),  # short: woken after its opening's time
        (0.230, 0.245, 0.00002),  # on time, though a stall came at its opening
        (0.345, 0.360, 0.00015),  # long, and nothing the clock saw
        (0.460, 0.475, 0.00001),
        (0.575, 0.590, -0.00200),  # short: its opening's deadline fell inside a stall
        (0.690, 0.705, -0.00240),  # short, nothing seen at its opening; a stall at its close
        (0.805, 0.820, 0.00300),  # long: woken 3 ms late to close, the thread off the CPU
        (0.920, 0.935, -0.00100),  # short: the engine reached its opening's sleep late
    ]
    stalls = [
        spin(0.015 + 1e-12, 0.4),  # (the deadline computed another way: the last bits)
        Stall("wake", 0.115, 0.115, 0.0002, 1, True, 0.0002),
        spin(0.230, 0.08),
        spin(0.400, 3.0),  # a precise sleep that is no pulse's edge
        spin(0.575, 2.5, late_ms=2.0),
        spin(0.705, 0.09),
        Stall("wake", 0.820, 0.820, 0.003, 1, True, 0.003, idle_s=0.0031),
        Stall("call", 0.920, 0.920, 0.001, 0, False, 0.001),
    ]
    got = attribute_stalls(pulses, stalls)
    assert got == {
        "late_pulses": 7,
        "late_pulses_stalled": 3,
        "late_pulses_deadline_in_stall": 2,
        "late_pulses_woken_late": 1,
        "late_pulses_called_late": 1,
        # all but the first, the sixth and the eighth (the third's stall was at its open,
        # and it came out 0.02 ms long: judged at its close)
        "unstalled_pulses": 6,
        "unstalled_width_err_p99_ms": pytest.approx(2.4),
        "unstalled_width_err_max_ms": pytest.approx(2.4),
    }
    everything_stalled = attribute_stalls(pulses[:1], stalls)
    assert everything_stalled["unstalled_pulses"] == 0
    assert everything_stalled["unstalled_width_err_max_ms"] is None
