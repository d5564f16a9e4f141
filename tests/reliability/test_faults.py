"""The fault campaign (``aldctl bench faults``): fault kinds injected at each phase of a
run through the real engine and journal, in virtual time. CI runs one phase per kind
(rotating); ``pytest --campaign`` runs the whole matrix. And ``aldctl run --fault``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aldctl.front.bench import (
    FAULT_PHASES,
    FAULT_RECIPE,
    FAULT_TARGETS,
    FAULT_VARIANTS,
    NOT_OBSERVABLE,
    _reactor_safe,
    _verdict,
    bench_faults,
    format_fault_table,
)

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "al2o3_tma_h2o.yaml"


def test_the_table_names_what_it_cannot_observe() -> None:
    report = bench_faults(cells=[("empty_source", "setup"), ("empty_source", "purge")])
    table = format_fault_table(report)
    setup, purge = report["rows"]
    assert not setup["observable"]
    assert "before the first dose" in setup["not_observable_because"]
    assert purge["observable"]
    assert purge["detected"]
    assert "n/o" in table
    assert "before the first dose" in table
    assert "detected 1 of 1 observable (1 not observable" in table


# Faults the engine is built to catch wherever they happen in a cycle
MUST_DETECT = {
    "toxic_gas_alarm",
    "exhaust_flow_loss",
    "valve_stuck_open",
    "heater_runaway",
    "thermocouple_break",
    "comm_timeout",
    "disconnect",
    "qcm_failure",
}
# Observable but not detected, known and reported: none left. (Faults in teardown's last
# seconds are found by the read-back after teardown: the run says the reactor is not
# verified safe, naming the device.)
UNDETECTED: set[tuple[str, str]] = set()
NOT_VERIFIED = {
    "mfc_stuck": "carrier flow reads",
    "heater_runaway": "heater substrate: ",
    "pump_degradation": "the pump or the exhaust is not keeping up",
}
# Caught by the per-pulse diagnostics (aldctl/engine/dosewatch.py) a few doses after the
# fault, once the baselines exist: a warning or an alarm naming the line, the run goes on.
# (A valve 3x slower does not open at all in a 15 ms pulse: no response, like stuck.)
LOW = ("no pressure response", "dose pressure response down")
DOSE_WATCH = {
    "valve_stuck_closed": LOW[:1],
    "valve_slow": LOW,
    "empty_source": LOW,
    "cold_source": LOW,
    "gauge_drift": ("base pressure up",),
    # 5 ms of varying latency on the valve link: the widths between the acknowledgements
    "timing_jitter": ("delivered pulse width",),
}


def _cells(campaign: bool) -> list[tuple[str, str]]:
    kinds = list(FAULT_TARGETS)
    if campaign:
        return [(k, p) for k in [*kinds, *FAULT_VARIANTS] for p in FAULT_PHASES]
    # inside a cycle (not teardown, after which there is nothing left to detect)
    inner = FAULT_PHASES[1:-1]
    cells = [(k, inner[i % len(inner)]) for i, k in enumerate(kinds)]
    # and the two ends for one dose fault: not observable there, and the table says why;
    # and the valve module's link lost mid-pulse (its watchdog must close the valve)
    return [
        *cells,
        ("empty_source", "setup"),
        ("gauge_drift", "teardown"),
        # the read-back after teardown
        ("heater_runaway", "teardown"),
        # a welded heater aborted in setup: over its +15 K limit, climbing ~0.7 K/s (under
        # the 2 K a poll apart of a runaway): on 0b233ca the read-back called it verified
        # safe, and the reactor found 10 s later is at 175 degC and rising
        ("heater_runaway", "setup"),
        ("pump_degradation", "teardown"),
        # a dose valve stuck open in teardown: an abort at once, not a 600 s hold
        ("valve_stuck_open", "teardown"),
        ("comm_timeout", "pulse"),
        ("disconnect", "pulse"),
        # a burst above the hold limit mid-purge, gone before the next 1 s poll
        ("pressure_burst", "purge"),
    ]


def test_the_campaign_covers_every_fault_kind() -> None:
    from sim.faults import FaultKind

    assert set(FAULT_TARGETS) == {k.value for k in FaultKind}


def test_fault_campaign(campaign: bool) -> None:
    report = bench_faults(cells=_cells(campaign))
    rows = report["rows"]
    print(format_fault_table(report))  # the table, for `pytest -s` and the notes
    assert report["internal_errors"] == 0
    for r in rows:
        assert r["journal_complete"], r  # every run's outcome and reason are journaled
        # the reactor physically safe, or unsafe only where the fault itself holds it and
        # the engine said so; nothing unsafe commanded, nothing unsafe left unsaid
        assert r["survived"], r
        assert r["verdict"] in ("safe", "fault-held"), r
        assert not r["unsafe_unreported"], r
        if r["fault"] in ("valve_stuck_open", "heater_runaway"):
            # on 0b233ca counted "survived (reactor safe)": TMA open at 4.31 Torr, the
            # substrate at 178 degC and rising
            assert not r["physically_safe"], r
            assert r["verdict"] == "fault-held", r
            assert "NOT verified safe" in r["reason"], r
        if r["fault"] in MUST_DETECT and r["phase"] != "teardown":
            assert r["outcome"] in ("aborted", "failed"), r
            assert r["reason"], r
        if r["outcome"] in ("aborted", "failed"):
            # the safe state was read back after the abort, and the reason says so when
            # it is not verified safe (a device that does not answer is named)
            assert r["read_back"] == "abort", r
            assert ("NOT verified safe after the abort" in r["reason"]) == bool(
                r["not_verified_safe"]
            ), r
            if r["fault"] in ("comm_timeout", "disconnect"):
                assert "device 'valves' could not be read" in r["reason"], r
        if r["fault"] == "valve_stuck_open":
            # named at once by the hold's valve read-back (not "hold timed out after 600 s")
            assert r["reason"].startswith("dose valve TMA stuck open"), r
            assert r["not_verified_safe"]["valve TMA"] == "dose valve TMA reads open", r
        cell = (r["fault"], r["phase"])
        if cell in NOT_OBSERVABLE:
            assert not r["observable"], r
            assert r["not_observable_because"], r
        elif r["phase"] == "teardown" and r["fault"] in NOT_VERIFIED:
            assert "NOT verified safe after teardown" in r["reason"], r
            assert NOT_VERIFIED[r["fault"]] in r["first_alarm"], r
        elif r["fault"] == "pressure_burst":
            # held by the 0.1 s pressure watch, with the safety monitor's reason; resumed
            assert r["detected"], r
            assert r["first_alarm"].startswith("chamber pressure "), r
            assert r["first_alarm"].endswith(" Torr above 2 Torr"), r
        elif r["fault"] in DOSE_WATCH:
            assert r["outcome"] == "complete", r
            assert any(w in r["first_alarm"] for w in DOSE_WATCH[r["fault"]]), r
    for r in rows:
        cell = (r["fault"], r["phase"])
        if r["observable"]:
            assert r["detected"] == (cell not in UNDETECTED), r


def test_run_fault_injects_into_the_built_in_simulator(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    res = run_cli(
        "run",
        str(RECIPE),
        "--set",
        "cycles=5",
        "--fault",
        "heater_runaway:substrate@200",
        "--json",
        "--data-dir",
        str(tmp_path),
    )
    assert res.code == 1, res.err
    out = json.loads(res.out)
    assert out["outcome"] == "aborted"
    assert "over-temperature on substrate" in out["reason"]
    shown = run_cli("runs", "show", out["run_id"], "--data-dir", str(tmp_path))
    assert "over-temperature" in shown.out


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("nosuch", "no fault kind 'nosuch'"),
        ("disconect:valves", "did you mean 'disconnect'"),
        ("valve_stuck_open:XX@5", "no line 'XX'"),
        ("valve_stuck_open:TMA@-5", "times are seconds"),
        ("valve_stuck_open:TMA@x", "expected KIND"),
    ],
)
def test_run_fault_refuses_bad_specs(
    tmp_path: Path, run_cli: Callable[..., Any], fault: str, message: str
) -> None:
    res = run_cli("run", str(RECIPE), "--fault", fault, "--data-dir", str(tmp_path))
    assert res.code == 2
    assert message in res.err
    assert "internal" not in res.err
    assert _runs(run_cli, tmp_path) == []  # refused before the run was recorded


def test_a_fault_in_teardowns_last_seconds_leaves_the_run_not_verified_safe(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """The pump loses 70 % of its speed 20 s before the end of teardown: the read-back after
    teardown finds the chamber 3x its purged base, and the run says so (on 0461154 it
    ended "recipe complete", exit 0)."""
    res = run_cli(
        "run",
        str(RECIPE),
        "--set",
        "cycles=2",
        "--fault",
        "pump_degradation@480",
        "--json",
        "--data-dir",
        str(tmp_path),
    )
    assert res.code == 1, res.err
    out = json.loads(res.out)
    assert out["outcome"] == "complete"  # the recipe did run to its end
    assert "NOT verified safe after teardown" in out["reason"]
    assert "the pump or the exhaust is not keeping up" in out["not_verified_safe"]["pressure"]
    shown = run_cli("runs", "show", out["run_id"], "--data-dir", str(tmp_path))
    assert "NOT verified safe after teardown (chamber pressure" in shown.out
    assert "alarm.alarm" in shown.out


def _campaign_sim(tmp_path: Path) -> Any:
    from aldctl.session import prepare
    from aldctl.tool import build

    path = tmp_path / "campaign.yaml"
    path.write_text(FAULT_RECIPE)
    tool = prepare(path, None, ()).tool
    return build(tool, seed=0).simulation, tool


def test_the_safe_criterion_checks_the_plasma_and_the_heaters(tmp_path: Path) -> None:
    """A plasma left lit is unsafe (on 0b233ca the criterion, "dose valves closed", called
    it safe although its docstring promised the plasma); a heater at its safe-state
    setting is safe; the same reactor with a commanded-open valve the engine did not
    report is UNSAFE, not "held by the fault"."""
    sim, tool = _campaign_sim(tmp_path)
    quiet = _reactor_safe(sim, "qcm_failure", None, tool, {}, {})
    assert quiet == {"engine": [], "unsafe": [], "held": [], "unsaid": []}
    assert _verdict(quiet, said_reason=False) == "safe"

    sim.reactor.set_rf(True, 200.0)
    lit = _reactor_safe(sim, "plasma_high_reflected", None, tool, {}, {})
    assert "RF commanded on" in lit["engine"]
    assert any(u.startswith("plasma: 200 W forward") for u in lit["unsafe"])
    assert _verdict(lit, said_reason=False) == "UNSAFE"
    sim.reactor.set_rf(False, 0.0)

    # a welded heater output: held by the fault, but only when the engine said so
    sim.reactor.faults.inject("heater_runaway", "substrate")
    hot = _reactor_safe(sim, "heater_runaway", "substrate", tool, {}, {})
    assert hot["held"] == hot["unsafe"]
    assert "rising" in hot["unsafe"][0]
    assert _verdict(hot, said_reason=False) == "UNSAFE"  # unsafe and unsaid
    said = {"substrate": "heater substrate: 190 degC and rising"}
    hot = _reactor_safe(sim, "heater_runaway", "substrate", tool, {}, said)
    assert _verdict(hot, said_reason=True) == "fault-held"
    # the same heater, but the campaign's fault was another: not the fault's to hold
    other = _reactor_safe(sim, "qcm_failure", None, tool, {}, said)
    assert other["held"] == []
    assert _verdict(other, said_reason=True) == "UNSAFE"


def test_the_table_reports_engine_physical_and_held_apart() -> None:
    report = bench_faults(cells=[("valve_stuck_open", "purge"), ("qcm_failure", "purge")])
    stuck, qcm = report["rows"]
    assert stuck["verdict"] == "fault-held"
    assert stuck["engine_safe_state"]  # every valve commanded closed and answered
    assert any(u.startswith("valve TMA open") for u in stuck["unsafe_because"])
    assert qcm["verdict"] == "safe"
    assert qcm["physically_safe"]
    table = format_fault_table(report)
    assert "abort NV HELD" in table
    assert "survived 2 of 2" in table
    assert "reactor physically safe 10 s later" in table
    assert ") 1 of 2; not safe because the fault itself prevents it" in table
    assert "(HELD) 1 of 2" in table


def _runs(run_cli: Callable[..., Any], data: Path) -> list[Any]:
    res = run_cli("runs", "list", "--json", "--data-dir", str(data))
    return json.loads(res.out) if res.code == 0 and res.out.strip() else []


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("pressure_spike@100,torr=nan", "torr=nan is outside [0, 1000]"),
        ("pressure_spike@100,torr=-5", "torr=-5 is outside"),
        ("valve_slow:TMA@100,factor=0", "factor=0 is outside (1, 1000]"),
        ("valve_stuck_open:TMA@100,leak_fraction=inf", "leak_fraction=inf is outside"),
        ("corrupt_frame:valves@100,probability=2", "probability=2 is outside"),
        ("valve_slow:TMA@100,speed=2", "unknown parameter(s) ['speed']; it takes ['factor']"),
    ],
)
def test_run_fault_refuses_bad_parameters_before_the_run(
    tmp_path: Path, run_cli: Callable[..., Any], fault: str, message: str
) -> None:
    """On 0b233ca these were accepted (torr=nan surfaced mid-run as "device 'gauge' stopped
    answering: ValueError")."""
    res = run_cli("run", str(RECIPE), "--fault", fault, "--data-dir", str(tmp_path))
    assert res.code == 2, res.out + res.err
    assert message in res.err
    assert "aldctl sim faults" in res.err  # where the ranges are listed
    assert _runs(run_cli, tmp_path) == []  # refused before any record


def test_run_fault_after_the_planned_end_is_refused_or_warned(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """cycles=2 plans 502 s (a lower bound: the recipe waits on conditions, 2700 s
    at most). On 0b233ca @99999 and @600 were accepted; neither fired, rc 0, nothing said."""
    args = ("run", str(RECIPE), "--set", "cycles=2", "--data-dir", str(tmp_path))
    res = run_cli(*args, "--fault", "valve_stuck_open:TMA@99999")
    assert res.code == 2
    assert "at or after the run's planned end (502 s of process time" in res.err
    assert "the fault would never fire" in res.err
    assert _runs(run_cli, tmp_path) == []
    res = run_cli(*args, "--fault", "valve_stuck_open:TMA@600", "--json")
    assert "warning: --fault valve_stuck_open:TMA@600: 600 s is after the run's planned end" in (
        res.err
    )
    assert json.loads(res.out)["outcome"] == "complete"


def test_run_fault_is_kept_in_the_runs_record(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    """On 0b233ca the journal kept no trace of an injected fault: its record read like a
    real hardware failure."""
    from aldctl.engine.journal import Journal
    from aldctl.front import report

    res = run_cli(
        "run",
        str(RECIPE),
        "--set",
        "cycles=2",
        "--fault",
        "pressure_spike@100,torr=0.5",
        "--fault",
        "comm_timeout:chamber@200+3",
        "--json",
        "--data-dir",
        str(tmp_path),
    )
    run_id = json.loads(res.out)["run_id"]
    want = ["pressure_spike@100,torr=0.5", "comm_timeout:chamber@200+3"]
    shown = run_cli("runs", "show", run_id, "--data-dir", str(tmp_path))
    assert (
        "injected faults (simulator, aldctl run --fault; not a hardware failure): "
        + (", ".join(want))
        in shown.out
    )
    as_json = run_cli("runs", "show", run_id, "--json", "--data-dir", str(tmp_path))
    assert json.loads(as_json.out)["faults"] == want
    journal = Journal(tmp_path, readonly=True)
    try:
        html = report._summary_html(report.load(journal, run_id))
    finally:
        journal.close()
    assert "injected faults" in html
    assert "comm_timeout:chamber@200+3" in html
    plain = run_cli("run", str(RECIPE), "--set", "cycles=1", "--json", "--data-dir", str(tmp_path))
    other = run_cli("runs", "show", json.loads(plain.out)["run_id"], "--data-dir", str(tmp_path))
    assert "injected faults" not in other.out


def test_sim_faults_lists_every_kind_with_its_parameters(run_cli: Callable[..., Any]) -> None:
    from sim.faults import PARAM_SPECS, FaultKind

    res = run_cli("sim", "faults", "--json")
    assert res.code == 0
    rows = {r["kind"]: r for r in json.loads(res.out)}
    assert set(rows) == {k.value for k in FaultKind}
    for kind, specs in PARAM_SPECS.items():
        assert set(rows[kind.value]["params"]) == set(specs)
    assert rows["pressure_spike"]["params"]["torr"]["default"] == 1.0
    assert rows["pressure_spike"]["default_target"] == "chamber"
    text = run_cli("sim", "faults").out
    assert "torr=1  in [0, 1000]" in text
    assert "valve_stuck_open" in text
    # the pointer of `run --help` leads somewhere
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "## Fault injection" in readme or "### Fault injection" in readme
    assert "aldctl sim faults" in readme
    assert "aldctl sim faults" in run_cli("run", "--help").out
