"""Hardware in the loop, end to end: `aldctl sim serve` in one process, `aldctl run` with the
real drivers in another, over Modbus TCP and pseudo-terminals, in real time."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "al2o3_tma_h2o.yaml"
# Short purges keep the run to a minute and a half of real time; the in-process comparison
# run uses the same settings, so the physics compared is the same.
FAST = ("--set", "purge=2 s", "--set", "settle=2 s")
CYCLES = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hil_config(tmp: Path, **valves: Any) -> Path:
    """config/hil.yaml with its endpoints moved into ``tmp`` (tests never share ports)."""
    cfg = yaml.safe_load((ROOT / "config" / "hil.yaml").read_text())
    for dev in cfg["devices"].values():
        if isinstance(dev.get("port"), str):
            dev["port"] = str(tmp / "tty" / Path(dev["port"]).name)
    cfg["devices"]["valves"]["port"] = free_port()
    cfg["devices"]["valves"].update(valves)
    path = tmp / "hil.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def aldctl(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aldctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


class Server:
    def __init__(self, config: Path, state: Path, *extra: str) -> None:
        self.state = state
        self.tool = state / "tool.yaml"
        """The config for this server's endpoints (``sim serve --dir`` writes it)."""
        self.proc = aldctl("sim", "serve", "--config", str(config), "--dir", str(state), *extra)
        deadline = time.monotonic() + 30
        while not (state / "endpoints.json").exists():
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                pytest.fail(f"aldctl sim serve exited: {err}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail("aldctl sim serve did not come up")
            time.sleep(0.05)

    def status(self) -> dict[str, Any]:
        for _ in range(20):
            try:
                out: dict[str, Any] = json.loads((self.state / "status.json").read_text())
                return out
            except (json.JSONDecodeError, FileNotFoundError):
                time.sleep(0.05)
        pytest.fail("no status.json from the server")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        return err


def realtime_run(srv: Server, tmp_path: Path, cycles: int) -> tuple[int, dict[str, Any], str]:
    """``aldctl run --realtime --json`` of the Al2O3 recipe (short purges) on ``srv``'s
    endpoints: its exit code, its JSON summary and its stderr."""
    run = aldctl(
        "run", str(RECIPE), "--config", str(srv.tool), "--set", f"cycles={cycles}", *FAST,
        "--realtime", "--json", "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip
    out, err = run.communicate(timeout=300)
    return run.returncode, json.loads(out), err


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def start(config: Path, *extra: str) -> Server:
        srv = Server(config, tmp_path / f"state{len(servers)}", *extra)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        err = srv.stop()
        assert "Traceback" not in err, err


@pytest.mark.slow
def test_recipe_over_real_protocols_grows_what_the_in_process_run_grows(
    tmp_path: Path, serve: Any
) -> None:
    # Eight real-time cycles are enough to compare growth; each costs ~4 s of wall time.
    config = hil_config(tmp_path)
    srv = serve(config)
    run = aldctl(
        "run",
        str(RECIPE),
        "--config",
        str(srv.tool),
        "--set",
        f"cycles={CYCLES}",
        *FAST,
        "--realtime",
        "--json",
        "--data-dir",
        str(tmp_path / "data"),
    )
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    summary = json.loads(out)
    assert summary["outcome"] == "complete"
    assert summary["cycles_completed"] == CYCLES
    assert "thickness_nm" not in summary  # real drivers: the engine sees no simulator
    time.sleep(0.5)  # one more status write after the teardown
    hil = srv.status()

    ref = aldctl(
        "run",
        str(RECIPE),
        "--set",
        f"cycles={CYCLES}",
        *FAST,
        "--json",
        "--data-dir",
        str(tmp_path / "data"),
    )
    ref_out, ref_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_err
    in_process = json.loads(ref_out)["thickness_nm"]
    # Same recipe, same physics; the valves moved through Modbus TCP instead of a function
    # call, so timing and sensor noise differ a little.
    assert hil["thickness_nm"] == pytest.approx(in_process, rel=0.05)
    assert hil["valve_actuations"]["TMA"] == CYCLES
    assert hil["valve_actuations"]["H2O"] == CYCLES


@pytest.mark.slow
def test_killed_controller_leaves_the_valves_to_the_module_watchdog(
    tmp_path: Path, serve: Any
) -> None:
    # Software-timed pulses so that the valve stays open only while aldctl says so.
    config = hil_config(tmp_path, pulse_outputs=False)
    srv = serve(config)
    run = aldctl(
        "run",
        str(RECIPE),
        "--config",
        str(srv.tool),
        "--set",
        "cycles=5",
        *FAST,
        "--set",
        "tma_pulse=5 s",
        "--realtime",
        "--json",
        "--data-dir",
        str(tmp_path / "data"),
    )
    deadline = time.monotonic() + 120
    while not srv.status()["valves"].get("TMA"):
        assert run.poll() is None, run.communicate()[1]
        assert time.monotonic() < deadline, "the TMA valve never opened"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    t_kill = time.monotonic()
    run.communicate()
    while srv.status()["valves"].get("TMA"):
        assert time.monotonic() - t_kill < 5, "the valve stayed open"
        time.sleep(0.02)
    closed_after = time.monotonic() - t_kill
    # watchdog 1 s (config/hil.yaml) + the status file's 0.2 s refresh + the valve stroke
    assert closed_after < 1.6, closed_after
    assert not any(v for k, v in srv.status()["valves"].items() if k != "pump")


@pytest.mark.slow
def test_a_valve_stuck_open_is_found_by_its_limit_switch_over_modbus(
    tmp_path: Path, serve: Any
) -> None:
    # config/hil.yaml has position_inputs: the hold reads the valves' limit switches (FC02)
    # through the real driver, where the outputs (FC01 at 0x200) read closed. Before
    # (main 049af87) the driver read only the outputs: the hold saw nothing and sat out
    # its 600 s timeout with TMA flowing.
    config = hil_config(tmp_path)
    # the read-back after the abort waits safety.verify_time for a chamber that cannot
    # settle with TMA's stem open: 5 s here, not 30
    doc = yaml.safe_load(config.read_text())
    doc["safety"]["verify_time"] = "5 s"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    srv = serve(config, "--fault", "valve_stuck_open:TMA@10")
    code, summary, err = realtime_run(srv, tmp_path, 30)
    assert code == 1, err
    assert summary["outcome"] == "aborted"
    assert summary["reason"].startswith("dose valve TMA stuck open"), summary["reason"]
    assert summary["held_s"] < 5.0
    assert "valve TMA" in summary["not_verified_safe"]  # its switch still says open
    con = sqlite3.connect(tmp_path / "data" / "journal.sqlite")
    try:
        aborts = con.execute("SELECT message FROM events WHERE kind='alarm.abort'").fetchall()
    finally:
        con.close()
    # one abort, named once: nothing acts on the hold while the safe state is read back
    assert [m for (m,) in aborts if not m.startswith("valve TMA")] == [], aborts


def test_limit_switches_wired_with_the_other_sense_stop_the_run_before_it_starts(
    tmp_path: Path, serve: Any
) -> None:
    # The emulated module's inputs close when a valve is open; a config that says they
    # close when it is closed reads every closed dose valve as open. Before, nothing read
    # the inputs until a hold, where every hold would then have aborted as "stuck open".
    config = hil_config(tmp_path, position_sense="closed")
    srv = serve(config)
    run = aldctl(
        "run", str(RECIPE), "--config", str(srv.tool), "--realtime",
        "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip
    _, err = run.communicate(timeout=120)
    assert run.returncode != 0
    assert "Traceback" not in err, err
    assert "dose valve TMA (valves:0) reads open on its limit switch while its output is off" in err
    assert "position_sense: closed" in err


def test_a_dose_valve_left_open_by_a_process_that_died_is_closed_and_the_run_refused(
    tmp_path: Path, serve: Any
) -> None:
    # modbus-dio's watchdog is off by default, and a reconnect inside its time stops it
    # (connect's simple stop): an output a killed controller left on stays on. Its switch
    # reads open too, so the connect check (switch open, output off) passed it, and the
    # run's setup went on with TMA flowing (here: 4.2 Torr, then a pressure hold and
    # "resuming"; a source too weak to reach the hold limit would have flowed through the
    # whole setup). Reproduced on main 72ee954.
    from pymodbus.client import ModbusTcpClient

    config = hil_config(tmp_path)
    srv = serve(config)
    port = int(yaml.safe_load(srv.tool.read_text())["devices"]["valves"]["port"])
    client = ModbusTcpClient("127.0.0.1", port=port)
    assert client.connect()
    try:
        client.write_coil(0, True, device_id=1)  # TMA: left on by a controller that died
    finally:
        client.close()
    deadline = time.monotonic() + 5
    while not srv.status()["valves"].get("TMA"):
        assert time.monotonic() < deadline, "the TMA output never came on"
        time.sleep(0.05)
    run = aldctl(
        "run", str(RECIPE), "--config", str(srv.tool), "--set", "cycles=1", *FAST,
        "--realtime", "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip
    _, err = run.communicate(timeout=300)
    assert run.returncode != 0, err
    assert "Traceback" not in err, err
    assert "dose valve TMA (valves:0) was open when the tool connected" in err, err
    deadline = time.monotonic() + 2  # the status file refreshes every 0.2 s
    while srv.status()["valves"].get("TMA"):
        assert time.monotonic() < deadline, "TMA was left open"
        time.sleep(0.05)


@pytest.mark.slow
def test_gauge_that_stops_answering_aborts_the_run_naming_it(tmp_path: Path, serve: Any) -> None:
    config = hil_config(tmp_path)
    srv = serve(config, "--fault", "comm_timeout:chamber@8")
    code, summary, err = realtime_run(srv, tmp_path, 20)
    assert code == 1, err
    assert summary["outcome"] == "aborted"
    assert "device 'gauge' stopped answering" in summary["reason"]
    assert summary["safe_state_errors"] == {}


@pytest.mark.slow
def test_pulse_timing_figures_over_modbus_tcp(tmp_path: Path, capsys: Any) -> None:
    """Figures, not assertions: printed for the record (`pytest -s` shows them)."""
    config = hil_config(tmp_path)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "aldctl",
            "bench",
            "timing",
            "--config",
            str(config),
            "-n",
            "50",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert {r["pulses"] for r in rows} == {"software-timed", "module-timed"}
    with capsys.disabled():
        for r in rows:
            print(
                f"\n{r['pulses']}: width error p50 {r['width_err_p50_ms']:.3f} ms, "
                f"p99 {r['width_err_p99_ms']:.3f} ms, max {r['width_err_max_ms']:.3f} ms "
                f"({r['n']} pulses, devices polled {r['polls_at_10hz']} times)"
            )
