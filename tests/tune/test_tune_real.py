"""`aldctl tune RECIPE` on a real tool: the trial through the real drivers and protocols.

`aldctl sim serve` runs in this test process (tests/hil/test_fail_safe.py's InProcessServer:
real Modbus TCP for the valve module, pseudo-terminals for the serial devices) and the trial
drives it in real time through the drivers, under the safety monitor, the valve module's
watchdog heartbeat and the journal, reading only the QCM and the gauge over their protocols
(the residence time from the pressure decay). Its recommendations are held against the
in-process simulated trial of the same design on the same reactor config (the same
physics, read without a wire: full-precision QCM, gauge every 5 ms, exact valve timing).

CI: one line (TMA) with a cut-down design (purges of 3 residence times, one priming cycle,
the dose only: ~30 s). ``pytest --campaign``: the full design, both lines, dose and purge.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aldctl.front.tunerun import TrialDesign, all_cycle_doses, run_on_tool, run_trial
from aldctl.session import prepare
from tests.conftest import RECIPES, ROOT

sys.path.insert(0, str(ROOT / "tests" / "hil"))
from test_fail_safe import InProcessServer, hil_config

AL2O3 = RECIPES / "al2o3_tma_h2o.yaml"
HIL = ROOT / "config" / "hil.yaml"
QUICK = TrialDesign(long_taus=5.0, prime_cycles=1, purges=False, qcm_reads=3)
FAST_PUMP = {
    "chamber": {"volume": "0.3 L", "residence_time": "0.14 s", "purge_factor": 3},
    "simulator": {
        "preset": "savannah_like",
        "substrate_c": 150,
        "walls_c": 150,
        "pump_speed_l_s": 1.5,
    },
    "limits": {
        "pressure": {"max": "5 Torr", "hold_above": "2 Torr"},
        "over_temperature": "15 K",
        "flow_deviation": "10 %",
        "resume_after": "1 s",
    },
}
"""CI's reactor: config/hil.yaml with a pump three times faster (residence time 0.14 s
instead of 0.42 s) and pressure holds that resume after 1 s in band instead of 5 s (the
priming cycle's 150 ms water pulse trips the 2 Torr hold), so that a trial fits the CI
budget; the campaign runs config/hil.yaml as it is."""
DOSE_TOL = 0.10
"""Real against in-process trial, relative, quick design (CI): measured -0.0 % and -0.6 %
(20.49 and 20.37 ms against 20.50 ms). Before sim/realtime.py applied a valve edge at the
module's time rather than when the model heard of it, the same test measured +13 % and
-21 %: this tolerance catches that."""
FULL_TOL = 0.15
"""The full design (campaign), dose and purge: measured on config/hil.yaml TMA dose +4 %,
purge -4 %."""


def fast_recipe(tmp: Path, purge: str = "0.5 s") -> Path:
    """The Al2O3 recipe with a short setup (the emulated heaters start settled at 150 degC;
    walls kept there, so nothing cools during the trial) and the given purge."""
    text = AL2O3.read_text()
    text = text.replace("settle: 30 s", "settle: 1 s").replace("purge: 5 s", f"purge: {purge}")
    text = text.replace("walls: 120 degC", "walls: 150 degC")
    path = tmp / "al2o3_fast.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def served(tmp_path: Path) -> Any:
    made: list[InProcessServer] = []

    def start(changes: dict[str, Any] | None = None) -> InProcessServer:
        srv = InProcessServer(hil_config(tmp_path, changes), tmp_path / "state")
        made.append(srv)
        return srv

    yield start
    for srv in made:
        srv.stop()


def _valves_closed(srv: InProcessServer) -> None:
    valves = srv.server.plant.sync().read_valves()
    assert not any(valves[line] for line in ("TMA", "H2O", "O3")), valves
    assert srv.server.plant.sync().read_pump_isolation(), "pump isolation closed"


def _virtual(recipe: Path, tool: Path, line: str, design: TrialDesign) -> dict[str, Any]:
    prepared = prepare(recipe, tool, ())
    ((cname, doses),) = all_cycle_doses(recipe)
    return {r.chemical: r for r in run_trial(prepared, doses, {line}, cname, design=design)}


def _agree(real: Any, virtual: Any, purge: bool, tol: float) -> None:
    d_real, d_virt = real.saturation.dose_s, virtual.saturation.dose_s
    assert d_real == pytest.approx(d_virt, rel=tol), (d_real, d_virt)
    assert real.tau_s == pytest.approx(virtual.tau_s, rel=0.1)
    assert real.saturation.dead_s == pytest.approx(virtual.saturation.dead_s, abs=0.0015)
    if purge:
        assert real.purge_s == pytest.approx(virtual.purge_s, rel=tol)


@pytest.mark.timeout(900)  # ~240 s alone; over pytest's 300 s on the shared machine
def test_quick_trial_on_the_real_drivers_agrees_with_the_simulated_tool(
    tmp_path: Path, served: Any, campaign: bool
) -> None:
    if not campaign:
        # 35 s before the trial's analysis of main 3df9271 (issue 16's library work), which
        # measures growth per cycle by bisection: ~240 s now, over the CI budget.
        pytest.skip("the quick real-time trial takes ~4 min since 3df9271: under --campaign")
    srv = served(FAST_PUMP)
    recipe = fast_recipe(tmp_path)
    prepared = prepare(recipe, srv.tool, ())
    assert not prepared.simulated
    tuned = all_cycle_doses(recipe)
    t0 = time.monotonic()
    results, run_id = run_on_tool(prepared, recipe, tuned, ("TMA",), True, tmp_path / "data", QUICK)
    wall = time.monotonic() - t0
    print(f"quick real trial (TMA): {wall:.1f} s wall")
    ((real,),) = [[r for r in results if r.chemical == "TMA"]]
    virtual = _virtual(recipe, srv.tool, "TMA", QUICK)["TMA"]
    print(
        f"TMA dose real {real.saturation.dose_s * 1e3:.2f} ms, simulated "
        f"{virtual.saturation.dose_s * 1e3:.2f} ms; tau {real.tau_s:.3f} / {virtual.tau_s:.3f}"
    )
    dead = (real.saturation.dead_s * 1e3, virtual.saturation.dead_s * 1e3)
    print(f"valve dead width {dead[0]:.1f} / {dead[1]:.1f} ms")
    _agree(real, virtual, purge=False, tol=DOSE_TOL)
    _valves_closed(srv)
    # The trial is a run of the journal: its pulses, its outcome, the tool's lock released.
    con = sqlite3.connect(tmp_path / "data" / "journal.sqlite")
    try:
        outcome, summary = con.execute(
            "SELECT outcome, summary FROM runs WHERE id=?", (run_id,)
        ).fetchone()
        pulses = con.execute(
            "SELECT COUNT(*) FROM pulses WHERE run_id=? AND line='TMA'", (run_id,)
        ).fetchone()[0]
        locks = con.execute("SELECT COUNT(*) FROM tool_locks").fetchone()[0]
    finally:
        con.close()
    assert outcome == "complete"
    assert json.loads(summary)["tune"]["TMA"]["dose_s"] == pytest.approx(real.saturation.dose_s)
    assert pulses >= len(real.saturation.gains)
    assert locks == 0


def _journal_run(data: Path) -> tuple[str, str, int]:
    con = sqlite3.connect(data / "journal.sqlite")
    try:
        outcome, reason, run_id = con.execute("SELECT outcome, reason, id FROM runs").fetchone()
        pulses = con.execute("SELECT COUNT(*) FROM pulses WHERE run_id=?", (run_id,)).fetchone()
    finally:
        con.close()
    return str(outcome), str(reason), int(pulses[0])


def _tune(tool: Path, recipe: Path, data: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aldctl",
            "tune",
            str(recipe),
            "--config",
            str(tool),
            *extra,
            "--data-dir",
            str(data),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


def test_a_real_tool_is_not_dosed_without_yes_in_non_interactive_use(
    tmp_path: Path, run_cli: Any
) -> None:
    # config/hil.yaml names real drivers: the refusal comes before any device is touched
    # (no emulator runs here, so connecting would fail differently). stdin is no terminal.
    data = tmp_path / "data"
    res = run_cli(
        "tune", str(AL2O3), "--config", str(HIL), "--line", "TMA", "--data-dir", str(data)
    )
    assert res.code == 2, res.err
    assert res.err.startswith("error: ")
    assert res.err.count("\n") == 1, res.err
    assert "doses H2O, TMA into hil-reactor's chamber" in res.err
    assert "--yes" in res.err
    assert not (data / "journal.sqlite").exists()


def _wait_for_pulses(srv: InProcessServer, n: int, run: subprocess.Popen[str]) -> None:
    assert srv.server.state_dir is not None
    edges = srv.server.state_dir / "edges.csv"
    deadline = time.monotonic() + 60
    while True:
        text = edges.read_text() if edges.exists() else ""
        if sum(1 for ln in text.splitlines() if ",TMA,1," in ln) >= n:
            return
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the trial never pulsed TMA"
        time.sleep(0.1)


def test_ctrl_c_mid_trial_leaves_the_tool_safe_and_the_run_aborted(
    tmp_path: Path, served: Any
) -> None:
    srv = served(FAST_PUMP)
    run = _tune(srv.tool, fast_recipe(tmp_path), tmp_path / "data", "--line", "TMA", "--yes")
    _wait_for_pulses(srv, 1, run)  # the residence time's pulse
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 1, err
    assert "trial aborted: interrupted (SIGINT); the tool is in its safe state" in err
    assert "Traceback" not in err
    _valves_closed(srv)
    outcome, reason, pulses = _journal_run(tmp_path / "data")
    assert outcome == "aborted"
    assert "SIGINT" in reason
    assert pulses >= 1


def test_the_emulator_dying_mid_trial_ends_it_with_one_error_line(
    tmp_path: Path, served: Any
) -> None:
    srv = served(FAST_PUMP)
    run = _tune(srv.tool, fast_recipe(tmp_path), tmp_path / "data", "--line", "TMA", "--yes")
    _wait_for_pulses(srv, 1, run)
    srv.stop()
    t = time.monotonic()
    _, err = run.communicate(timeout=60)
    print(f"trial ended {time.monotonic() - t:.1f} s after the emulators stopped")
    assert run.returncode == 1, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "trial aborted: device '" in line, err
    assert "Traceback" not in err
    outcome, _, _ = _journal_run(tmp_path / "data")
    assert outcome == "aborted"
    # With the module gone, nothing is left open: its pulses are timed by the module itself
    # and the last one was over before the server stopped, or cut with it.
    valves = srv.server.plant.sync().read_valves()
    assert not any(valves[ln] for ln in ("TMA", "H2O", "O3")), valves


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("line", ["TMA", "H2O"])
def test_full_trial_on_config_hil_agrees_with_the_simulated_tool(
    tmp_path: Path, served: Any, campaign: bool, line: str
) -> None:
    if not campaign:
        pytest.skip("the full trial in real time (minutes per line) runs under --campaign")
    srv = served()
    recipe = fast_recipe(tmp_path)
    t0 = time.monotonic()
    run = _tune(
        srv.tool,
        recipe,
        tmp_path / "data",
        "--line",
        line,
        "--yes",
        "--json",
        "--report",
        str(tmp_path / "page.html"),
    )
    out, err = run.communicate(timeout=1800)
    wall = time.monotonic() - t0
    assert run.returncode == 0, err
    real = json.loads(out)["lines"][line]
    virtual = _virtual(recipe, srv.tool, line, TrialDesign())[line]
    print(
        f"{line}: full real trial {wall:.0f} s wall; dose real {real['dose_s'] * 1e3:.1f} ms, "
        f"simulated {virtual.saturation.dose_s * 1e3:.1f} ms; purge real {real['purge_s']:.2f} s,"
        f" simulated {virtual.purge_s:.2f} s"
    )
    assert real["dose_s"] == pytest.approx(virtual.saturation.dose_s, rel=FULL_TOL)
    assert real["purge_s"] == pytest.approx(virtual.purge_s, rel=FULL_TOL)
    _valves_closed(srv)
    outcome, _, _ = _journal_run(tmp_path / "data")
    assert outcome == "complete"


O3_RECIPE = """\
name: Al2O3 from TMA and O3
substrate: {material: Si}
setup:
  - set: {carrier: 20 sccm, walls: 150 degC, substrate: 150 degC, ozone: 10 %}
  - wait_until: {substrate: {within: 2 K, for: 1 s}, timeout: 5 min}
  - purge: 1 s
cycles:
  Al2O3:
    - pulse: {TMA: 15 ms}
    - purge: 0.5 s
    - pulse: {O3: 30 ms}
    - purge: 0.5 s
main:
  - cycle: {name: Al2O3, repeat: 10}
teardown:
  - set: {ozone: off}
"""


def _driver_trial(srv: InProcessServer, recipe: Path, body: Any) -> Any:
    """``body(trial)`` in a worker thread against a DriverTrial on the served tool, as
    ``run_on_tool`` runs the design; returns (its result, the safe state's errors)."""
    import asyncio

    from aldctl.engine.control import RunControl
    from aldctl.engine.events import EventBus
    from aldctl.engine.trialtool import DriverTrial
    from aldctl.tool import build

    prepared = prepare(recipe, srv.tool, ())
    assert not prepared.simulated

    async def main() -> Any:
        tool = build(prepared.tool)
        await tool.connect()
        trial = DriverTrial(tool, prepared.compiled.schedule, EventBus(), RunControl(), None)
        try:
            await trial.start()
            out = await asyncio.to_thread(body, trial)
        finally:
            errors = await trial.finish()
            await tool.close()
        return out, errors

    return asyncio.run(main())


def test_the_trial_setup_on_a_real_tool_turns_the_ozone_generator_on(
    tmp_path: Path, served: Any
) -> None:
    # Before: DriverTrial.setup applied heaters and flows only, so the O3 line dosed O2.
    srv = served()
    recipe = tmp_path / "al2o3_o3.yaml"
    recipe.write_text(O3_RECIPE)
    plant = srv.server.plant
    assert not plant.sync().read_ozone().on

    def body(trial: Any) -> Any:
        trial.setup()
        return plant.sync().read_ozone()

    during, errors = _driver_trial(srv, recipe, body)
    assert during.on, during
    assert during.setpoint_pct == pytest.approx(10.0)
    assert errors == {}
    # The safe state at the trial's end turns the generator off again.
    after = plant.sync().read_ozone()
    assert not after.on, after
    _valves_closed(srv)


def test_a_real_pulse_area_counts_the_open_valve_and_grows_with_the_width(
    tmp_path: Path, served: Any
) -> None:
    # The pressure area of a pulse longer than the residence time: read only from the valve's
    # close (before), it was the decay tail p_ss tau whatever the width (ratio 1.09 measured).
    # Read from the opening, it is the dose's gas over the pumping speed (mass balance: the
    # charging lag cancels the decay tail), so twice the width gives twice the area. Holds
    # out of reach: a long TMA pulse reaches its steady-state pressure.
    from aldctl.front.tunerun import _Trial

    changes = {**FAST_PUMP, "limits": {**FAST_PUMP["limits"], "pressure": {"max": "10 Torr"}}}
    srv = served(changes)
    recipe = fast_recipe(tmp_path)

    def body(trial: Any) -> Any:
        return [trial.pulse("TMA", w, 1.0, record=True) for w in (0.3, 0.6)]

    (short, long), errors = _driver_trial(srv, recipe, body)
    assert errors == {}
    a_short, ts, _, _ = short
    a_long = long[0]
    # The simulated tool's pulses of the same widths on the same reactor, read without a wire.
    sim = _Trial(prepare(recipe, srv.tool, ()))
    v_short, v_long = (sim.pulse("TMA", w, 1.0, record=True)[0] for w in (0.3, 0.6))
    ratio = a_long / a_short
    print(
        f"areas real {a_short:.4g} / {a_long:.4g} Torr s (ratio {ratio:.2f}), "
        f"simulated {v_short:.4g} / {v_long:.4g} (ratio {v_long / v_short:.2f})"
    )
    assert ratio == pytest.approx(2.0, rel=0.1)
    assert a_short == pytest.approx(v_short, rel=0.1)
    assert a_long == pytest.approx(v_long, rel=0.1)
    # Sampled while the valve is open too, from its opening.
    assert ts[0] < 0.1
    assert sum(1 for t in ts if t < 0.3) >= 3
    _valves_closed(srv)


CI_DESIGN = TrialDesign(
    long_taus=4.0, prime_cycles=1, purges=False, qcm_reads=3, growth_check=False
)
"""The quick design without the growth-per-cycle check of the uptake law's dose (its
bisections take minutes of real time): the pulse train on the QCM, the calibration pulses'
pressure areas, the valve's dead width and the residence time, all through the wire."""


def test_the_real_trial_readings_agree_with_the_simulated_tool_in_ci(
    tmp_path: Path, served: Any, campaign: bool
) -> None:
    if not campaign:
        # CI runs the same design and readings on the PEALD recipe instead (TMA through the
        # wire as here, the O2 plasma in place of water: test_tune_real_plasma.py), which
        # costs the same ~31 s; this thermal one runs under --campaign.
        pytest.skip("the thermal CI-design agreement runs under --campaign; CI runs PEALD's")
    srv = served(FAST_PUMP)
    recipe = fast_recipe(tmp_path)
    prepared = prepare(recipe, srv.tool, ())
    ((cname, doses),) = all_cycle_doses(recipe)
    t0 = time.monotonic()
    (results, errors) = _driver_trial(
        srv, recipe, lambda trial: run_trial(prepared, doses, {"TMA"}, cname, trial, CI_DESIGN)
    )
    wall = time.monotonic() - t0
    assert errors == {}
    ((real,),) = [[r for r in results if r.chemical == "TMA"]]
    virtual = _virtual(recipe, srv.tool, "TMA", CI_DESIGN)["TMA"]
    print(
        f"CI design (TMA), {wall:.1f} s wall: dose real {real.saturation.dose_s * 1e3:.2f} ms,"
        f" simulated {virtual.saturation.dose_s * 1e3:.2f} ms; tau {real.tau_s:.3f} /"
        f" {virtual.tau_s:.3f} s; dead width {real.saturation.dead_s * 1e3:.1f} /"
        f" {virtual.saturation.dead_s * 1e3:.1f} ms"
    )
    _agree(real, virtual, purge=False, tol=DOSE_TOL)
    _valves_closed(srv)
