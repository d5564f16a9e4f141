"""A PEALD run (`aldctl run --realtime`) over the real wire protocols: the RF generator on
AE Bus, the O2 MFC, the valve module, the gauge, all served by `aldctl sim serve` in this
process. A fault in the middle of a plasma step must end with the RF off, the feed gas at
zero and the run's reason journaled."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.hil.test_fail_safe import InProcessServer, aldctl, hil_config

ROOT = Path(__file__).resolve().parents[2]
PEALD = ROOT / "recipes" / "coatings" / "al2o3_peald_li_metal.yaml"


def fast_peald(tmp: Path, plasma_s: float = 5.0) -> Path:
    """Short setup (the emulated heaters start settled), 1 s purges; a ``plasma_s`` plasma."""
    text = PEALD.read_text()
    text = text.replace("for: 30 s", "for: 1 s").replace("purge: 5 s", "purge: 1 s")
    text = text.replace("walls: 120 degC", "walls: 150 degC")
    assert "power: 200 W, time: 5 s}" in text
    text = text.replace("time: 5 s}", f"time: {plasma_s:g} s}}")
    path = tmp / "peald.yaml"
    path.write_text(text)
    return path


def wait_for_rf(srv: Any, run: Any, limit_s: float = 90) -> None:
    """Until ``srv``'s RF generator is on; fails if the process ``run`` ends first."""
    deadline = time.monotonic() + limit_s
    while not srv.server.plant.sync().read_plasma().on:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "RF was never turned on"
        time.sleep(0.02)


@pytest.mark.slow
def test_high_reflected_power_mid_plasma_ends_a_real_run_with_the_rf_off(tmp_path: Path) -> None:
    srv = InProcessServer(hil_config(tmp_path), tmp_path / "state")
    try:
        run = aldctl(
            "run", str(fast_peald(tmp_path)), "--config", str(srv.tool), "--set", "cycles=5",
            "--realtime", "--json", "--data-dir", str(tmp_path / "data"),
        )  # fmt: skip
        wait_for_rf(srv, run)
        # past the ignition check (2 s after RF on): lit and matched, now the match loses it
        time.sleep(2.5)
        srv.server.plant.sync().faults.inject("plasma_high_reflected", "rf")
        out, err = run.communicate(timeout=120)
        plasma = srv.server.plant.sync().read_plasma()
        o2 = srv.server.plant.sync().read_mfc("plasma.O2").setpoint_sccm
    finally:
        srv.stop()
    assert run.returncode == 1, err
    summary = json.loads(out)
    assert summary["outcome"] == "aborted"
    assert "reflected power" in summary["reason"], summary["reason"]
    assert not plasma.on
    assert o2 == 0.0


@pytest.mark.slow
def test_a_hold_mid_plasma_turns_the_rf_off_over_the_wire_and_the_run_completes(
    tmp_path: Path, campaign: bool
) -> None:
    # The hold's RF-off (and feed gas off) through the real AE Bus and MFC drivers; the
    # retried cycle lights the plasma again through its own checks. ~50 s of real time:
    # under --campaign (CI has the hold's RF-off in virtual time, test_hold_plasma.py).
    if not campaign:
        pytest.skip("a minute of real time: run with --campaign")
    srv = InProcessServer(hil_config(tmp_path), tmp_path / "state")
    try:
        run = aldctl(
            "run", str(fast_peald(tmp_path, plasma_s=12.0)), "--config", str(srv.tool),
            "--set", "cycles=2", "--realtime", "--json", "--data-dir", str(tmp_path / "data"),
        )  # fmt: skip
        wait_for_rf(srv, run)
        time.sleep(2.5)
        plant = srv.server.plant
        plant.sync().faults.inject("pressure_spike", torr=4.0)  # over the 2 Torr hold limit
        # The step would end by itself 9.5 s later: off within 3 s is the hold's doing.
        deadline = time.monotonic() + 3
        while plant.sync().read_plasma().on:
            assert time.monotonic() < deadline, "the hold left the RF on"
            time.sleep(0.02)
        o2_in_hold = plant.sync().read_mfc("plasma.O2").setpoint_sccm
        out, err = run.communicate(timeout=180)
    finally:
        srv.stop()
    assert run.returncode == 0, err
    summary = json.loads(out)
    assert summary["outcome"] == "complete", summary["reason"]
    assert summary["held_s"] > 0
    assert o2_in_hold == 0.0
