"""The simulator on real recipes, through the CLI on the built-in tool (issue 11).

The built-in tool has a plasma source, so every plasma process of the library is loaded next
to the recipe's own: what a hand-built reactor in tests/sim cannot show. Expected growth is
the library's curve for each film dosed, at the recipe's temperature.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sim import library
from sim.purge import CVD_LIMIT, DEFAULT_PURGE_FACTOR
from sim.units import SCCM_MOL_S

Run = Callable[..., Any]
HERE = Path(__file__).parent / "recipes" / "fidelity"


def sim_json(run_cli: Run, *args: str) -> dict[str, Any]:
    res = run_cli("simulate", *args, "--json")
    assert res.code == 0, res.err
    out: dict[str, Any] = json.loads(res.out)
    return out


def _gpc(pid: str, t_c: float, kind: str | None = None) -> float:
    return library.processes()[pid].gpc(t_c, kind)


def test_stack_grows_each_film_at_its_library_gpc(run_cli: Run) -> None:
    # LiNbOx 1:1 at 235 C, then an Al2O3 cap at 150 C. Before: the cap grew 1.485 A/cycle
    # (LiAlOx's Al2O3 subcycle extrapolated below its data) instead of 1.025.
    out = sim_json(run_cli, str(HERE / "linbox_al2o3_cap.yaml"))
    sub = out["subcycles"]
    assert sub["Al2O3"]["gpc_A"] == pytest.approx(_gpc("Al2O3-TMA-H2O", 150.0), rel=0.05)
    assert sub["Li2O"]["gpc_A"] == pytest.approx(
        _gpc("LiNbOx-LiOtBu-NbOEt5", 235.0, "Li2O"), rel=0.05
    )
    assert sub["Nb2O5"]["gpc_A"] == pytest.approx(
        _gpc("LiNbOx-LiOtBu-NbOEt5", 235.0, "Nb2O5"), rel=0.05
    )
    assert not [w for w in out["warnings"] if "CVD" in w or "decomposition" in w]


def test_a_stack_of_litaox_and_li3po4_grows_each_film_at_its_library_gpc(run_cli: Run) -> None:
    # Li3PO4's LiOtBu, H2O, TMP, H2O starts with Li2O's LiOtBu, H2O. Before: with TMP in the
    # recipe the Li2O subcycle was skipped as a prefix: LiTaOx grew 0.000 A of Li2O and
    # 0.008 A of Ta2O5 per cycle ("no growth"), the stack 1.4 nm instead of 22.
    out = sim_json(run_cli, str(HERE / "stack_litaox_li3po4.yaml"))
    sub = out["subcycles"]
    pid = "LiTaOx-LiOtBu-TaOEt5"
    assert sub["Li2O"]["gpc_A"] == pytest.approx(_gpc(pid, 225.0, "Li2O"), rel=0.05)
    assert sub["Ta2O5"]["gpc_A"] == pytest.approx(_gpc(pid, 225.0, "Ta2O5"), rel=0.05)
    assert sub["Li3PO4"]["gpc_A"] == pytest.approx(_gpc("Li3PO4-LiOtBu-TMP", 275.0), rel=0.05)
    assert out["warnings"] == []


def test_the_stack_runs_as_it_simulates(run_cli: Run, tmp_path: Path) -> None:
    # Through the engine, each Li3PO4 cycle takes back exactly the Li2O it closed on the way,
    # even when stray Ta2O5 sites close in the same water doses (an earlier version left
    # 0.13 nm of Li2O behind: 6.52 nm run against 6.39 simulated).
    recipe = str(HERE / "stack_litaox_li3po4.yaml")
    ran = _run(run_cli, tmp_path / "r", recipe)
    assert ran["outcome"] == "complete"
    grown = ran["simulation"]["growth_by_kind_nm"]
    sub = sim_json(run_cli, recipe)["subcycles"]
    assert grown["Li2O"] == pytest.approx(sub["Li2O"]["growth_nm"], rel=0.005)
    assert grown["Li3PO4-LiOtBu-TMP"] == pytest.approx(sub["Li3PO4"]["growth_nm"], rel=0.005)
    total = sum(g["growth_nm"] for g in sub.values())
    assert ran["thickness_nm"] == pytest.approx(total, rel=0.005)


@pytest.mark.parametrize("extra", [["TEOS"], ["TEOS", "TMP"]])
def test_lines_the_recipe_does_not_use_change_nothing(
    run_cli: Run, tmp_path: Path, extra: list[str]
) -> None:
    # A tool with more lines than the recipe doses. Before: a TEOS line made the first Li2O
    # cycle of a LiNbOx film grow LiSiOx's 1.09 A (the first-loaded supercycle) instead of
    # LiNbOx's 2.6; a TMP line as well made every Li2O cycle grow nothing.
    from aldctl import config

    tool = tmp_path / "tool.yaml"
    lines = "".join(
        f"  {c}: {{chemical: {c}, valve: 'valves:{9 + i}'}}\n" for i, c in enumerate(extra)
    )
    tool.write_text(config.builtin_text() + "lines:\n" + lines, encoding="utf-8")
    recipe = str(HERE / "linbox_al2o3_cap.yaml")
    alone = sim_json(run_cli, recipe)["subcycles"]
    beside = sim_json(run_cli, recipe, "-c", str(tool))["subcycles"]
    for film in ("Li2O", "Nb2O5", "Al2O3"):
        assert beside[film]["gpc_A"] == pytest.approx(alone[film]["gpc_A"], rel=0.01), film


def test_lipon_next_to_an_idle_ethylene_glycol_line(run_cli: Run, tmp_path: Path) -> None:
    # The same LiPON recipe with a cycle that doses EG defined but never run: the built-in
    # tool provisions an EG line. Before: 656 nm, 99 % CVD; the library says 0.7 A/cycle.
    text = (HERE / "lipon_lihmds_depa.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "main:",
        "  unused:\n    - pulse: {LiHMDS: 1 s}\n    - purge: 5 s\n"
        "    - pulse: {EG: 1 s}\n    - purge: 5 s\nmain:",
    )
    recipe = tmp_path / "lipon_eg.yaml"
    recipe.write_text(text, encoding="utf-8")
    for path in (HERE / "lipon_lihmds_depa.yaml", recipe):
        out = sim_json(run_cli, str(path))
        assert out["gpc_A"] == pytest.approx(_gpc("LiPON-LiHMDS-DEPA", 290.0), rel=0.05)
        assert out["cvd_thickness_nm"] < 0.01 * out["thickness_nm"]


def test_tma_h2o_at_250_c_is_inside_its_window(run_cli: Run) -> None:
    # Before: 1.52 A/cycle and "lengthen the purges" (TMA's onset taken from the one-point
    # TMA/O2-plasma process the plasma source loads).
    out = sim_json(
        run_cli, "recipes/al2o3_tma_h2o.yaml", "--set", "T=250 degC", "--set", "cycles=20"
    )
    assert out["gpc_A"] == pytest.approx(_gpc("Al2O3-TMA-H2O", 250.0), rel=0.03)
    assert out["warnings"] == []


def test_decomposition_is_named_as_such(run_cli: Run) -> None:
    out = sim_json(
        run_cli, "recipes/al2o3_tma_h2o.yaml", "--set", "T=390 degC", "--set", "cycles=10"
    )
    dec = [w for w in out["warnings"] if "decomposition" in w]
    assert dec
    assert "TMA" in dec[0]
    assert "longer purges do not help" in dec[0]
    assert not [w for w in out["warnings"] if "lengthen the purges" in w]


def test_peald_on_the_built_in_tool_warns_nothing(run_cli: Run) -> None:
    # Before: "sub-saturation: O2-plasma ... 0 %" on every PEALD recipe (a dose was opened for
    # every configured feed gas at ignition, and each one ended the one before).
    out = sim_json(run_cli, str(HERE / "al2o3_peald.yaml"))
    assert out["gpc_A"] == pytest.approx(_gpc("Al2O3-TMA-O2plasma", 150.0), rel=0.05)
    assert out["warnings"] == []
    assert out["saturation"]["O2-plasma"]["min"] > 0.9
    assert "N2-plasma" not in out["saturation"]


def test_no_growth_is_said_by_every_command(run_cli: Run) -> None:
    # LiOtBu and TMP without water: nothing in the library grows from them.
    recipe = str(HERE / "li3po4_no_water.yaml")
    for cmd in ("validate", "plan"):
        res = run_cli(cmd, recipe)
        assert res.code == 0, res.err
        assert "grows nothing" in res.err + res.out, cmd
    out = sim_json(run_cli, recipe)
    assert out["thickness_nm"] == pytest.approx(0.0, abs=1e-6)
    assert any("grows nothing" in w for w in out["warnings"])  # the compiler's, as run shows
    assert any(w.startswith("no growth") for w in out["warnings"])  # the simulation's own
    assert not [w for w in out["warnings"] if "CVD" in w]  # no shares of a 0 nm film


def test_a_run_that_grows_nothing_says_so(run_cli: Run, tmp_path: Path) -> None:
    # Before: `aldctl run --json` reported warnings [] for 10 cycles that grew 0.000 A (the
    # compiler's warning went to a terminal only, and the run's own film was not looked at).
    recipe = str(HERE / "li3po4_no_water.yaml")
    out = _run(run_cli, tmp_path / "j", recipe)
    assert out["outcome"] == "complete"
    assert any("grows nothing" in w for w in out["warnings"])
    assert any(w.startswith("no growth: 10 cycles") for w in out["warnings"])
    res = run_cli("run", recipe, "--data-dir", str(tmp_path / "t"))
    assert "no growth: 10 cycles" in " ".join((res.out + res.err).split())
    healthy = _run(run_cli, tmp_path / "h", "recipes/al2o3_tma_h2o.yaml", "--set", "cycles=3")
    assert healthy["warnings"] == []


def test_tool_configs_default_to_the_simulators_purge_rule() -> None:
    from aldctl import config

    assert config.DEFAULT_PURGE_FACTOR == DEFAULT_PURGE_FACTOR
    assert config.ChamberSpec().purge_factor == DEFAULT_PURGE_FACTOR
    assert config.load_builtin().chamber.purge_factor == DEFAULT_PURGE_FACTOR


def test_the_built_in_tool_declares_the_residence_time_its_model_has(run_cli: Run) -> None:
    out = sim_json(run_cli, "recipes/al2o3_tma_h2o.yaml", "--set", "cycles=1")
    res = run_cli("tool", "show", "recipes/al2o3_tma_h2o.yaml")
    assert res.code == 0, res.err
    assert "residence_time: 0.45" in res.out
    assert out["residence_time_s"] == pytest.approx(0.45, rel=0.03)


@pytest.mark.parametrize(("n_tau", "flagged"), [(DEFAULT_PURGE_FACTOR, False), (5.5, True)])
def test_validation_and_simulation_share_one_purge_rule(
    run_cli: Run, n_tau: float, flagged: bool
) -> None:
    # Before: validation accepted 1.4 s (3 tau) for which the simulation showed 27 % CVD.
    purge = f"purge={n_tau * 0.45:.3f} s"
    val = run_cli("validate", "recipes/al2o3_tma_h2o.yaml", "--set", purge)
    assert val.code == 0, val.err
    assert ("residence times" in val.err + val.out) is flagged
    out = sim_json(run_cli, "recipes/al2o3_tma_h2o.yaml", "--set", purge, "--set", "cycles=20")
    share = out["cvd_thickness_nm"] / out["thickness_nm"]
    assert (share > CVD_LIMIT) is flagged
    assert any("CVD overlap" in w for w in out["warnings"]) is flagged


@pytest.mark.parametrize("held", [180.0, 200.0])
def test_calibration_through_the_cli_predicts_a_held_out_point(
    run_cli: Run, monkeypatch: pytest.MonkeyPatch, held: float
) -> None:
    # Leave-one-out through the whole path: the library without Al2O3-TMA-H2O's point at
    # `held` (an interior point), the shipped saturating recipe, `aldctl simulate` on the
    # built-in tool. The prediction is compared with the published value it never saw.
    spec = next(
        p for p in library._read("processes.yaml")["processes"] if p["id"] == "Al2O3-TMA-H2O"
    )
    published = next(float(p["value"]) for p in spec["gpc"] if float(p["T"]) == held)
    rest = [p for p in spec["gpc"] if float(p["T"]) != held]
    params = library._read("library.yaml")["processes"]["Al2O3-TMA-H2O"]
    without = dict(library.processes())
    without["Al2O3-TMA-H2O"] = library._build({**spec, "gpc": rest}, params)
    monkeypatch.setattr(library, "processes", lambda: without)
    out = sim_json(
        run_cli, "recipes/al2o3_tma_h2o.yaml", "--set", f"T={held:g} degC", "--set", "cycles=10"
    )
    assert out["gpc_A"] == pytest.approx(published, rel=0.10)
    assert out["gpc_A"] != pytest.approx(library.processes()["Al2O3-TMA-H2O"].gpc(held), abs=0)


def test_built_in_tool_and_simulator_heat_the_same_sources() -> None:
    # Before: the built-in tool heated sources above 30 degC, the simulator above 27 degC,
    # so ethylene glycol (30 degC) had a source heater in one and not the other.
    from aldctl import config, session
    from sim import chemistry
    from sim.config import ReactorConfig

    names = [c.name for c in chemistry.catalogue().values() if c.is_dose]
    tool = session.provision_lines(config.load_builtin(), names)
    tool_heated = {ln.chemical for ln in tool.lines.values() if ln.source_heater}
    sim_heated = {ln.chemical for ln in ReactorConfig.for_lines(names).lines if ln.source_t_c}
    assert tool_heated == sim_heated
    assert "EG" in tool_heated


def test_an_include_stack_plans_the_doses_of_its_heated_precursors(run_cli: Run) -> None:
    # Before: 0.00 mg of LiOtBu (the source temperature was set inside the included film).
    def chems(path: str) -> dict[str, Any]:
        res = run_cli("plan", path, "--json")
        assert res.code == 0, res.err
        out: dict[str, Any] = json.loads(res.out)["chemicals"]
        return out

    stack = chems(str(HERE / "stack_include.yaml"))
    alone = chems("recipes/litaox_1_6.yaml")
    for chem in ("LiOtBu", "TaOEt5"):
        assert stack[chem]["estimated_g"] == pytest.approx(alone[chem]["estimated_g"], rel=1e-6)
        assert stack[chem]["estimated_g"] > 1e-3


def test_source_mass_is_honoured(run_cli: Run, tmp_path: Path) -> None:
    # Before: a 5 mg TMA source delivered 10.7 mg over 100 cycles, and nothing said so.
    from aldctl import config

    tool = tmp_path / "tool.yaml"
    tool.write_text(
        config.builtin_text()
        + "lines:\n  TMA: {chemical: TMA, valve: valves:0, source_mass: 5 mg}\n",
        encoding="utf-8",
    )
    plan = run_cli("plan", "recipes/al2o3_tma_h2o.yaml", "-c", str(tool))
    assert plan.code == 0, plan.err
    assert "more than the 5 mg its source holds" in plan.err + plan.out
    out = sim_json(run_cli, "recipes/al2o3_tma_h2o.yaml", "-c", str(tool))
    assert out["precursor_g"]["TMA"] <= 5e-3 * (1 + 1e-9)
    assert any(w.startswith("source TMA") for w in out["warnings"])
    assert out["thickness_nm"] < 0.8 * 10.23  # the film stops growing when the source is dry


def test_a_gas_dose_flows_at_its_line_flow(run_cli: Run, tmp_path: Path) -> None:
    # Before: a gas line was a 20 Torr supply through an ALD valve, ~380 sccm: a 1 s CO2
    # pulse reached 6.8 Torr and aborted the run. A gas line now doses at its flow (the
    # built-in tool provisions 20 sccm); validation predicts the pressure on that flow.
    from aldctl import config

    recipe = str(HERE / "lithicone_co2.yaml")
    val = run_cli("validate", recipe)
    assert val.code == 0, val.err
    assert "peaks at" not in val.err + val.out
    out = sim_json(run_cli, recipe)
    mol = 5 * 20.0 * SCCM_MOL_S * 1.0  # five 1 s pulses at 20 sccm
    assert out["precursor_g"]["CO2"] == pytest.approx(mol * 44.01, rel=0.02)
    fast = tmp_path / "tool.yaml"
    fast.write_text(
        config.builtin_text()
        + "lines:\n  CO2: {chemical: CO2, valve: valves:0, flow: 1000 sccm}\n",
        encoding="utf-8",
    )
    val = run_cli("validate", recipe, "-c", str(fast))
    assert val.code == 0, val.err
    assert "dose of CO2 peaks at" in val.err + val.out


def _run(run_cli: Run, data: Path, *args: str) -> dict[str, Any]:
    res = run_cli("run", *args, "--data-dir", str(data), "--json")
    out: dict[str, Any] = json.loads(res.out)
    return out


def test_a_stop_flow_exposure_runs_on_the_built_in_tool(run_cli: Run, tmp_path: Path) -> None:
    # Before: validation and simulation passed, and `run` aborted at the first dose: the
    # carrier kept filling the isolated chamber (over the 5 Torr limit). The tool now says
    # what its carrier does during an exposure (the built-in: stop).
    recipe = str(HERE / "al2o3_expose.yaml")
    val = run_cli("validate", recipe)
    assert val.code == 0, val.err
    assert "peaks at" not in val.err + val.out
    out = _run(run_cli, tmp_path / "a", recipe)
    assert out["outcome"] == "complete", out["reason"]
    assert out["thickness_nm"] == pytest.approx(5 * _gpc("Al2O3-TMA-H2O", 200.0) / 10, rel=0.05)


def test_an_exposure_that_trips_the_hold_is_predicted_and_the_hold_pumps(
    run_cli: Run, tmp_path: Path
) -> None:
    # A 200 ms TMA exposure peaks at ~3 Torr in the isolated chamber, over the 2 Torr hold.
    # Validation says so; in the run the hold reopens the pump, so the pressure clears and
    # the retries end in the "trips the hold every time" abort, not a 600 s hold timeout.
    recipe = str(HERE / "al2o3_expose.yaml")
    val = run_cli("validate", recipe, "--set", "tma=200 ms")
    assert "an exposure (TMA 0.2 s" in val.err + val.out
    out = _run(run_cli, tmp_path / "b", recipe, "--set", "tma=200 ms")
    assert out["outcome"] != "complete"
    assert "trips the pressure hold every time" in out["reason"]
    assert out["held_s"] < 60.0


def test_an_exposure_with_a_flowing_carrier_is_predicted(run_cli: Run, tmp_path: Path) -> None:
    from aldctl import config

    tool = tmp_path / "keep.yaml"
    tool.write_text(
        config.builtin_text().replace(
            "  purge_factor: 7", "  expose_carrier: keep\n  purge_factor: 7"
        ),
        encoding="utf-8",
    )
    val = run_cli("validate", str(HERE / "al2o3_expose.yaml"), "-c", str(tool))
    assert val.code == 0, val.err
    assert "carrier 'keep') peaks at" in val.err + val.out


@pytest.mark.parametrize("recipe", ["recipes/litaox_1_6.yaml", str(HERE / "linbox_al2o3_cap.yaml")])
def test_the_plan_includes_heat_up(run_cli: Run, recipe: str) -> None:
    # Before: the plan counted a wait_until at its hold time only (25 min planned for a
    # LiNbOx recipe that ran 37); now the heaters' heat-up (and cool-down) after each set.
    res = run_cli("plan", recipe, "--json")
    assert res.code == 0, res.err
    planned = json.loads(res.out)["duration_s"]
    ran = sim_json(run_cli, recipe)["process_time_s"]
    assert planned == pytest.approx(ran, rel=0.05)


def test_validate_warns_when_a_pressure_hold_could_not_recover_in_time(
    run_cli: Run, tmp_path: Path
) -> None:
    # recover_within aborts a pressure hold the pump has not ended: on a chamber slower to
    # pump than that, every burst would abort. The built-in chamber (tau ~0.4 s) is far
    # inside the default 30 s; 2 s is under ten residence times.
    import yaml

    from aldctl import config

    doc = yaml.safe_load(config.builtin_text())
    doc["limits"]["pressure"]["recover_within"] = "2 s"
    tight = tmp_path / "tight.yaml"
    tight.write_text(yaml.safe_dump(doc), encoding="utf-8")
    val = run_cli("validate", "recipes/al2o3_tma_h2o.yaml", "-c", str(tight))
    assert val.code == 0, val.err
    assert "recover_within (2 s) is under 10 residence times" in val.err
    assert "recover_within" not in run_cli("validate", "recipes/al2o3_tma_h2o.yaml").err
