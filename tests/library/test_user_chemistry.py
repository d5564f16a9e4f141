"""A lab's own chemistry file: new chemicals and processes, overrides, located errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

LAB = """\
chemicals:
  TEMAHf:
    name: tetrakis(ethylmethylamido)hafnium
    formula: Hf(NEtMe)4
    role: precursor
    state: liquid
    molar_mass: 410.9 g/mol
    element: Hf
    source_T: 75 degC
    vapour: [{T: 75 degC, p: 0.1 Torr}, {T: 100 degC, p: 0.45 Torr}]
    hazards: [water-reactive]
    decomposition: {onset: 300 degC, from: literature, note: "Hausmann et al. 2002"}
    source: "supplier data sheet"
processes:
  HfO2-TEMAHf-H2O:
    film: HfO2
    half_reactions: [TEMAHf, H2O]
    phase: {formula: HfO2, density: 9.7 g/cm**3, molar_mass: 210.49 g/mol, cations: {Hf: 1}}
    window: [200 degC, 300 degC]
    gpc: [{T: 250 degC, value: 1.2 angstrom}]
    source: "our ellipsometry, 2026-11"
"""

RECIPE = """\
name: HfO2 from TEMAHf and H2O
params:
  T: 250 degC
  cycles: 20
substrate: {material: Si}
setup:
  - set: {carrier: 20 sccm, walls: 150 degC, substrate: $T}
  - set: {source.TEMAHf: 75 degC, line.TEMAHf: 90 degC}
  - wait_until: {substrate: {within: 2 K, for: 30 s}, timeout: 45 min}
cycles:
  HfO2:
    - pulse: {TEMAHf: 400 ms}
    - purge: 5 s
    - pulse: {H2O: 30 ms}
    - purge: 5 s
main:
  - cycle: {name: HfO2, repeat: $cycles}
teardown:
  - set: {substrate: off, source.TEMAHf: off, line.TEMAHf: off}
"""


@pytest.fixture
def lab(tmp_path: Path) -> tuple[Path, Path]:
    chem = tmp_path / "lab-chemistry.yaml"
    chem.write_text(LAB)
    recipe = tmp_path / "hfo2.yaml"
    recipe.write_text(RECIPE)
    return chem, recipe


def test_without_the_file_temahf_is_a_located_error_saying_how_to_add_it(
    run_cli: Callable[..., Any], lab: tuple[Path, Path]
) -> None:
    _, recipe = lab
    res = run_cli("validate", str(recipe))
    assert res.code == 2
    line = next(ln for ln in res.err.splitlines() if "pulse" not in ln and ":12:" in ln)
    assert re.match(rf"{re.escape(str(recipe))}:12:15: error: unknown chemical 'TEMAHf'", line)
    assert "chemistry file" in line
    assert "--chemistry" in line
    # one cause, said as one: no "tool has no channel source.TEMAHf" among the errors
    assert "no channel" not in res.err
    assert "Traceback" not in res.err


def test_user_file_adds_temahf_and_hfo2_recipe_validates_plans_simulates(
    run_cli: Callable[..., Any], lab: tuple[Path, Path]
) -> None:
    chem, recipe = lab
    res = run_cli("--chemistry", str(chem), "validate", str(recipe))
    assert res.code == 0, res.err
    res = run_cli("--chemistry", str(chem), "plan", str(recipe), "--json")
    assert res.code == 0, res.err
    (loop,) = json.loads(res.out)["loops"]
    assert loop["process"] == "HfO2-TEMAHf-H2O"
    assert loop["gpc_A"] == pytest.approx(1.2)  # the lab's own figure, not a default
    res = run_cli("--chemistry", str(chem), "simulate", str(recipe), "--json")
    assert res.code == 0, res.err
    sim = json.loads(res.out)
    # a saturated dose grows the lab's 1.2 A/cycle on the reactor model
    assert sim["gpc_A"] == pytest.approx(1.2, rel=0.05)
    assert set(sim["composition"]) == {"Hf"}


def test_the_environment_variable_finds_the_file_and_listings_show_it(
    run_cli: Callable[..., Any], lab: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    chem, _ = lab
    monkeypatch.setenv("ALDCTL_CHEMISTRY", str(chem))
    res = run_cli("chemicals", "--json")
    assert res.code == 0, res.err
    rows = {r["name"]: r for r in json.loads(res.out)}
    assert rows["TEMAHf"]["origin"] == str(chem)
    assert rows["TEMAHf"]["source"] == "supplier data sheet"
    assert rows["TEMAHf"]["decomposition"] == "literature"
    assert rows["TEMAHf"]["vapour"] == "curve"
    assert rows["TEMAHf"]["vapour_torr_at_source_T"] == pytest.approx(0.1, rel=0.01)
    assert rows["TMA"]["origin"] == "shipped"
    assert "exhaust_flow" in rows["TMA"]["interlocks"]  # pyrophoric
    res = run_cli("processes", "--json")
    procs = {r["id"]: r for r in json.loads(res.out)}
    assert procs["HfO2-TEMAHf-H2O"]["source"] == "our ellipsometry, 2026-11"
    assert procs["HfO2-TEMAHf-H2O"]["basis"] == "single point"
    assert procs["lithicone-LiHMDS-EG-CO2"]["basis"] == "assumed"
    assert procs["LiNbOx-LiOtBu-NbOEt5"]["basis"] == "range"


def test_a_lab_calibration_overrides_a_shipped_process_for_target(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    chem = tmp_path / "cal.yaml"
    chem.write_text(
        "processes:\n"
        "  Al2O3-TMA-H2O:\n"
        "    gpc: [{T: 150 degC, value: 1.25 angstrom}, {T: 200 degC, value: 1.2 angstrom}]\n"
        "    source: our ellipsometry\n"
    )
    recipe = tmp_path / "target.yaml"
    recipe.write_text(
        "params: {T: 150 degC}\n"
        "setup: [{set: {substrate: $T, carrier: 20 sccm}}]\n"
        "cycles: {A: [{pulse: {TMA: 15 ms}}, {purge: 5 s}, {pulse: {H2O: 30 ms}}, {purge: 5 s}]}\n"
        "main: [{cycle: {name: A, target: 10 nm}}]\n"
    )
    base = json.loads(run_cli("plan", str(recipe), "--json").out)
    ours = json.loads(run_cli("--chemistry", str(chem), "plan", str(recipe), "--json").out)
    assert base["loops"][0]["repetitions"] == 98  # 10 nm / 1.023 A (shipped library)
    assert ours["loops"][0]["repetitions"] == 80  # 10 nm / 1.25 A (the lab's)


BAD = """\
chemicals:
  TEMAHf:
    role: precurser
    state: liquid
    molar_mass: 410.9
    element: Hf
    hazards: [pyrophoric, explosive]
processes:
  HfO2-TEMAHf-H2O:
    film: HfO2
    half_reactions: [TEMAHF, H2O]
    phase: {formula: HfO2, density: 9.7 g/cm**3, molar_mass: 210.49 g/mol, cations: {Hf: 1}}
    gpc: [{T: 250 degC, value: 1.2}]
"""


def test_a_malformed_chemistry_file_gives_every_error_located(
    run_cli: Callable[..., Any], tmp_path: Path, lab: tuple[Path, Path]
) -> None:
    _, recipe = lab
    chem = tmp_path / "bad.yaml"
    chem.write_text(BAD)
    res = run_cli("--chemistry", str(chem), "validate", str(recipe))
    assert res.code == 2
    assert "Traceback" not in res.err
    errs = [ln for ln in res.err.splitlines() if ": error: " in ln]
    f = re.escape(str(chem))
    expect = [
        rf"{f}:3:11: error: chemicals.TEMAHf.role: 'precurser' is not one of "
        ".*did you mean 'precursor'",
        rf"{f}:5:17: error: chemicals.TEMAHf.molar_mass: '410.9' has no unit",
        rf"{f}:7:14: error: chemicals.TEMAHf.hazards: unknown hazard class 'explosive'",
        rf"{f}:2:3: error: chemicals.TEMAHf: a liquid source needs its vapour pressure",
        rf"{f}:11:21: error: processes.HfO2-TEMAHf-H2O.half_reactions: unknown chemical "
        "'TEMAHF'.*did you mean 'TEMAHf'",
        rf"{f}:13:32: error: processes.HfO2-TEMAHf-H2O.gpc.value: '1.2' has no unit",
        rf"{f}:9:3: error: processes.HfO2-TEMAHf-H2O: say where the growth figures come from",
    ]
    for pattern in expect:
        assert any(re.match(pattern, e) for e in errs), (pattern, errs)
    # the recipe is not checked against a half-read chemistry: only the file's errors
    assert all(e.startswith(str(chem)) for e in errs)


def test_an_unknown_chemical_in_a_tool_config_line_is_located(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    cfg = tmp_path / "tool.yaml"
    cfg.write_text(
        "devices:\n"
        "  valves: {driver: simulated-valves, channels: 8}\n"
        "lines:\n"
        "  Hf: {chemical: TEMAHf, valve: valves:0}\n"
    )
    res = run_cli("validate", "recipes/al2o3_tma_h2o.yaml", "--config", str(cfg))
    assert res.code == 2
    assert "KeyError" not in res.err
    assert "Traceback" not in res.err
    assert re.search(
        rf"{re.escape(str(cfg))}:4:18: error: lines.Hf.chemical: unknown chemical 'TEMAHf' "
        r"\(hint: .*chemistry file",
        res.err,
    ), res.err


def test_a_resume_reads_the_runs_own_chemistry_file_and_refuses_a_changed_one(
    run_cli: Callable[..., Any],
    lab: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aldctl.session import RunRequest, new_run, open_journal, prepare

    chem, recipe = lab
    data = tmp_path / "data"
    monkeypatch.setenv("ALDCTL_CHEMISTRY", str(chem))
    prepared = prepare(recipe, None, ["cycles=2"])
    journal = open_journal(data)
    run_id = new_run(journal, RunRequest(prepared, realtime=False), "virtual time")
    journal.finish("aborted", "operator abort before the first cycle", 0.0, {})
    journal.close()
    # later, in a shell without the variable: the run still knows its chemistry
    monkeypatch.setenv("ALDCTL_CHEMISTRY", "")
    res = run_cli("resume", run_id, "--data-dir", str(data), "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["outcome"] == "complete"
    # a second aborted run, then the lab edits its calibration: that resume is refused
    monkeypatch.setenv("ALDCTL_CHEMISTRY", str(chem))
    journal = open_journal(data)
    run_id = new_run(journal, RunRequest(prepare(recipe, None, ["cycles=2"]), realtime=False), "v")
    journal.finish("aborted", "operator abort", 0.0, {})
    journal.close()
    chem.write_text(LAB.replace("value: 1.2 angstrom", "value: 1.3 angstrom"))
    res = run_cli("resume", run_id, "--data-dir", str(data))
    assert res.code == 2
    assert f"the chemistry file {chem.resolve()} changed since run {run_id} started" in res.err
