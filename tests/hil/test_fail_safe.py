"""Controller death and normal exit leave the chamber pumped (issue 8, item 4).

The emulators run in this test process (a thread with its own event loop, real Modbus TCP
and pseudo-terminals); ``aldctl run`` drives them from another process with the real
drivers. After the controller is gone the module's watchdog drops every output; the test
then stops the emulators and runs the reactor model on for 10 minutes of simulated time
(nothing would act in them any more: the controller is dead) and checks the chamber stays
below the 5 Torr limit. On 39d1077 it reached 30 Torr within 24 s: the pump isolation valve
was a plain output that closed with the others while the carrier kept flowing.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aldctl.config import load_tool
from aldctl.front.simserve import SimServer

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "al2o3_tma_h2o.yaml"
LIMIT_TORR = 5.0


def hil_config(tmp: Path, changes: dict[str, Any] | None = None, **valves: Any) -> Path:
    """config/hil.yaml with changes; the server serves it on free endpoints of its own."""
    cfg = yaml.safe_load((ROOT / "config" / "hil.yaml").read_text())
    cfg["devices"]["valves"].update(valves)
    cfg.update(changes or {})
    path = tmp / "hil.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class InProcessServer:
    """`aldctl sim serve` in a thread of this process, so the test can reach its reactor."""

    def __init__(self, config: Path, state: Path) -> None:
        self.server = SimServer(load_tool(config), state_dir=state, relocate=True, source=config)
        self.server.build()
        self.tool = state / "tool.yaml"
        """The configuration for its endpoints, written when it starts."""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="sim-serve", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            pytest.fail("the emulators did not start")
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                await self.server.start()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.server.stop()

        asyncio.run(main())

    def status(self) -> dict[str, Any]:
        assert self.server.state_dir is not None
        for _ in range(50):
            try:
                out: dict[str, Any] = json.loads(
                    (self.server.state_dir / "status.json").read_text()
                )
                return out
            except (json.JSONDecodeError, FileNotFoundError):
                time.sleep(0.02)
        pytest.fail("no status.json")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def ten_minutes_on(self) -> tuple[float, bool, float]:
        """After :meth:`stop`: run the reactor 600 s on; (peak Torr, pump open, carrier sccm)."""
        r = self.server.plant.sync()
        peak = r.truth().pressure_torr
        for _ in range(600):
            r.advance_to(r.now_ns + 1_000_000_000)
            peak = max(peak, r.truth().pressure_torr)
        return peak, r.read_pump_isolation(), r.read_mfc("carrier").flow_sccm


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    made: list[InProcessServer] = []

    def start(config: Path) -> InProcessServer:
        srv = InProcessServer(config, tmp_path / "state")
        made.append(srv)
        return srv

    yield start
    for srv in made:
        srv.stop()


def aldctl(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aldctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


FAST = ("--set", "purge=2 s", "--set", "settle=2 s")


def kill_mid_pulse(srv: InProcessServer, tmp_path: Path) -> None:
    """Run with software-timed pulses (the valve is open only while aldctl says so) and
    kill -9 the controller while TMA is open; return once the module's watchdog acted."""
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
        str(tmp_path / "d"),
    )
    deadline = time.monotonic() + 120
    while not srv.status()["valves"].get("TMA"):
        assert run.poll() is None, run.communicate()[1]
        assert time.monotonic() < deadline, "the TMA valve never opened"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    t_kill = time.monotonic()
    while srv.status()["valves"].get("TMA"):
        assert time.monotonic() - t_kill < 5, "the module watchdog did not close the valve"
        time.sleep(0.05)
    time.sleep(1.5)


@pytest.mark.slow
def test_kill_9_mid_pulse_leaves_the_chamber_pumped_for_ten_minutes(
    tmp_path: Path, server: Any
) -> None:
    srv = server(hil_config(tmp_path, pulse_outputs=False))
    kill_mid_pulse(srv, tmp_path)
    srv.stop()
    peak, pump_open, carrier = srv.ten_minutes_on()
    assert pump_open, "the pump isolation valve closed with the other outputs"
    assert carrier > 0  # the carrier MFC, on its own supply, still flows: it must be pumped
    assert peak < LIMIT_TORR, f"chamber reached {peak:.1f} Torr after the controller died"


@pytest.mark.slow
def test_normal_exit_leaves_the_chamber_pumped_for_ten_minutes(tmp_path: Path, server: Any) -> None:
    srv = server(hil_config(tmp_path))
    run = aldctl(
        "run",
        str(RECIPE),
        "--config",
        str(srv.tool),
        "--set",
        "cycles=2",
        *FAST,
        "--realtime",
        "--json",
        "--data-dir",
        str(tmp_path / "d"),
    )
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert json.loads(out)["outcome"] == "complete"
    time.sleep(2.0)  # past the 1 s module watchdog: whatever it does after exit, it has done
    srv.stop()
    peak, pump_open, _ = srv.ten_minutes_on()
    assert pump_open
    assert peak < LIMIT_TORR, f"chamber reached {peak:.1f} Torr after a normal exit"


@pytest.mark.slow
def test_normally_closed_pump_valve_with_a_carrier_shutoff_is_safe_too(
    tmp_path: Path, server: Any
) -> None:
    """The other wiring the config allows: pump isolation fails closed, and the carrier is
    cut by a shut-off valve on the same module; the chamber is sealed but not filled."""
    nc = {
        "pump_isolation": {"valve": "valves:15", "fails": "closed"},
        "carrier_shutoff": {"valve": "valves:14", "fails": "closed"},
    }
    srv = server(hil_config(tmp_path, nc, pulse_outputs=False))
    kill_mid_pulse(srv, tmp_path)
    srv.stop()
    peak, pump_open, carrier = srv.ten_minutes_on()
    assert not pump_open  # sealed, as wired
    assert carrier == pytest.approx(0.0, abs=0.5)  # and nothing flows in
    assert peak < LIMIT_TORR, f"chamber reached {peak:.1f} Torr"
