"""The emulated serial instruments, driven by clients nobody on this project wrote.

* Pfeiffer PPT 100: ``pfeiffer-vacuum-protocol`` 1.0 (electronsandstuff), synchronous, on
  the pty through pyserial. CPT/RPT/PPT/HPT 100 operating instructions: section 6.3
  telegram frame (p. 13) and the parameter table with "Transmitter adjustment" (p. 12):
  740 current pressure (readable, writable for the adjustment), 741 adjustment low/high
  pressure ("000"/"001"), 742 correction factor, 349 transmitter type ("    A3" = PPT 100).
* Alicat MFCs: numat's ``alicat`` 0.9.0 ``FlowController`` (asyncio). Alicat Standard
  Devices User Manual (January 2023, Rev. 0), "Quick Command Reference", p. 32: "Serial
  commands are not case-sensitive"; the MC-series manual's "Quick Serial Command Guide"
  (p. 43) writes every example in lower case (``a<CR>`` polls).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pfeiffer_vacuum_protocol as pvp
import pytest
import serial
from alicat import FlowController

from sim.devices.alicat import AlicatBus
from sim.devices.pfeiffer import HPA_PER_TORR, PfeifferBus
from sim.reactor import Reactor, ReactorConfig
from sim.realtime import RealtimePlant


@pytest.fixture
def plant() -> RealtimePlant:
    cfg = ReactorConfig.for_lines(["TMA", "H2O", "O2-plasma"], substrate_c=200.0)
    return RealtimePlant(Reactor(cfg, seed=4))


# =========================================================================== Pfeiffer


@pytest.fixture
async def gauge(plant: RealtimePlant, tmp_path: Path) -> AsyncIterator[PfeifferBus]:
    emu = PfeifferBus(plant, tmp_path / "gauge", [(1, "chamber")])
    await emu.start()
    yield emu
    await emu.stop()


def port(path: Path, baudrate: int, timeout: float = 0.5) -> serial.Serial:
    return serial.Serial(str(path), baudrate=baudrate, timeout=timeout)


async def test_pfeiffer_identity_and_pressure(gauge: PfeifferBus, plant: RealtimePlant) -> None:
    with port(gauge.path, 9600) as s:
        assert await asyncio.to_thread(pvp.read_gauge_type, s, 1) == "PPT 100"
        assert await asyncio.to_thread(pvp.read_error_code, s, 1) == pvp.ErrorCode.NO_ERROR
        bar = await asyncio.to_thread(pvp.read_pressure, s, 1)
    torr = plant.sync().read_pressure_torr("chamber")
    assert torr is not None
    assert bar * 1000 == pytest.approx(torr * HPA_PER_TORR, rel=0.05)


async def test_pfeiffer_pirani_reads_up_to_atmosphere(
    gauge: PfeifferBus, plant: RealtimePlant
) -> None:
    """A Pirani transmitter (the PPT 100 the gauge says it is) reads far above a 10 Torr
    capacitance manometer's top (the emulator used to saturate at 1.1 x 10 Torr)."""
    plant.sync().faults.inject("pressure_spike", torr=30.0)
    await asyncio.sleep(0.2)
    with port(gauge.path, 9600) as s:
        bar = await asyncio.to_thread(pvp.read_pressure, s, 1)
    assert bar * 1000 > 1.1 * 10.0 * HPA_PER_TORR


async def test_pfeiffer_adjustment_writes_741_then_740(gauge: PfeifferBus) -> None:
    """The manual's example: "0011074103001130" (P741 = high pressure) then
    "0011074006100023025" (P740 = 1000 hPa, the atmosphere the transmitter is at)."""
    with port(gauge.path, 9600) as s:
        await asyncio.to_thread(pvp.write_pressure_setpoint, s, 1, 1)
        s.write(b"0011074006100023025\r")
        answer = await asyncio.to_thread(s.read_until, b"\r")
        assert answer == b"0011074006100023025\r"  # accepted, echoed
        bar = await asyncio.to_thread(pvp.read_pressure, s, 1)
        assert bar == pytest.approx(1.0, rel=0.01)  # now reads the adjusted 1000 hPa
        await asyncio.to_thread(pvp.write_correction_value, s, 1, 1.5)
        assert await asyncio.to_thread(pvp.read_correction_value, s, 1) == 1.5


# =========================================================================== Alicat


@pytest.fixture
async def mfcs(plant: RealtimePlant) -> AsyncIterator[AlicatBus]:
    # numat's client takes a port for serial only if its name starts with /dev or COM
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        emu = AlicatBus(plant, Path(d) / "mfcs", [("A", "carrier"), ("B", "plasma.O2")])
        await emu.start()
        yield emu
        await emu.stop()


async def test_numat_flow_controller_starts_reads_and_sets(
    mfcs: AlicatBus, plant: RealtimePlant
) -> None:
    """numat's FlowController reads register 122 (the loop variable) as it starts and
    ``ALS`` to confirm a setpoint that has not settled yet."""
    async with FlowController(address=str(mfcs.path), unit="A") as fc:
        await fc._init_task  # the R122 read numat starts in __init__
        assert fc.control_point == "mass flow"
        state = await fc.get()
        assert state["gas"] == "N2"
        assert state["mass_flow"] == pytest.approx(
            plant.sync().read_mfc("carrier").flow_sccm, abs=1.0
        )
        await fc.set_flow_rate(35.0)
        assert plant.sync().read_mfc("carrier").setpoint_sccm == pytest.approx(35.0)
        assert (await fc.get())["setpoint"] == pytest.approx(35.0)


async def test_alicat_commands_are_not_case_sensitive(mfcs: AlicatBus) -> None:
    with port(mfcs.path, 19200) as s:
        s.write(b"a\r")
        lower = await asyncio.to_thread(s.read_until, b"\r")
        s.write(b"A\r")
        upper = await asyncio.to_thread(s.read_until, b"\r")
        s.write(b"bve\r")
        version = await asyncio.to_thread(s.read_until, b"\r")
        s.write(b"aLs\r")
        setpoint = await asyncio.to_thread(s.read_until, b"\r")
    assert lower.split()[0] == upper.split()[0] == b"A"
    assert len(lower.split()) == len(upper.split())
    assert version.startswith(b"B ")
    assert b"10v20" in version
    # ALS query (alicatlib's capture on 10v20): "<uid> <current> <requested> 12 SCCM"
    assert setpoint.split()[0] == b"A"
    assert setpoint.split()[-2:] == [b"12", b"SCCM"]
