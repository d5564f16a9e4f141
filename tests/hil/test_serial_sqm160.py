"""Inficon SQM-160 driver against the SQM-160 emulator over a real pseudo-terminal, the
reactor's QCM (Sauerbrey mass steps of the film the ALD model grows) behind it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import serial
from hypothesis import given
from hypothesis import strategies as st

from drivers import sqm160
from drivers.base import (
    CommunicationError,
    DeviceFault,
    DeviceTimeout,
    DriverContext,
    ThicknessMonitor,
)
from sim.devices import sqm160 as emulator
from sim.devices.serial_bus import LineNoise
from sim.reactor import Reactor, ReactorConfig
from sim.realtime import RealtimePlant

FAST = {"timeout": 0.25, "retries": 2}


def reference_crc(data: bytes) -> tuple[int, int]:
    """The CRC exactly as protocols.md section 6 words it, bit by bit."""
    crc = 0x3FFF
    for byte in data:
        crc = crc ^ byte
        for _ in range(8):
            shifted_out = crc & 1
            crc = crc >> 1
            if shifted_out == 1:
                crc = crc ^ 0x2001
    crc = crc & 0x3FFF
    return (crc & 0b1111111) + 34, ((crc >> 7) & 0b1111111) + 34


@pytest.fixture
def plant() -> RealtimePlant:
    cfg = ReactorConfig.for_lines(["TMA", "H2O"], substrate_c=200.0, walls_c=200.0)
    return RealtimePlant(Reactor(cfg, seed=9))


@pytest.fixture
async def qcm(plant: RealtimePlant, tmp_path: Path) -> AsyncIterator[emulator.Sqm160]:
    emu = emulator.Sqm160(plant, tmp_path / "qcm")
    await emu.start()
    yield emu
    await emu.stop()


Make = Callable[..., Awaitable[sqm160.Sqm160Monitor]]


@pytest.fixture
async def make(qcm: emulator.Sqm160) -> AsyncIterator[Make]:
    made: list[sqm160.Sqm160Monitor] = []

    async def build(name: str = "qcm", *, connect: bool = True, **options: Any) -> Any:
        dev = sqm160.create(name, {"port": str(qcm.path), **FAST, **options}, DriverContext())
        made.append(dev)
        if connect:
            await dev.connect()
        return dev

    yield build
    for dev in made:
        await dev.close()


async def raw_exchange(path: Path, request: bytes) -> bytes:
    def run() -> bytes:
        with serial.Serial(str(path), 19200, timeout=0.3) as s:
            s.write(request)
            return bytes(s.read(256))

    return await asyncio.to_thread(run)


async def ald_cycle(plant: RealtimePlant) -> None:
    """TMA / purge / H2O / purge, short purges (real time: the test must stay fast)."""
    for line in ("TMA", "H2O"):
        plant.set_valve(line, True)
        await asyncio.sleep(0.03)
        plant.set_valve(line, False)
        await asyncio.sleep(0.3)


async def test_thickness_from_the_film_the_reactor_grows(make: Make, plant: RealtimePlant) -> None:
    mon = await make()
    assert isinstance(mon, ThicknessMonitor)
    assert mon.version == "MON Ver 4.13"
    start = await mon.read_thickness()
    assert abs(start.thickness_a) < 0.5
    assert start.frequency_hz == pytest.approx(6.0e6, rel=1e-6)
    assert start.crystal_life_pct == pytest.approx(100.0, abs=0.01)
    await ald_cycle(plant)
    before = plant.sync().read_qcm().thickness_a
    grown = await mon.read_thickness()
    after = plant.sync().read_qcm().thickness_a
    assert grown.thickness_a > start.thickness_a + 1.0  # about an angstrom a cycle, or more
    # the film may still grow while we read (kA with 4 decimals: 0.1 A steps)
    assert before - 0.15 <= grown.thickness_a <= after + 0.15
    assert grown.frequency_hz < start.frequency_hz  # Sauerbrey: mass lowers the frequency
    at_zero = plant.sync().truth().thickness_a
    await mon.zero()
    zeroed = await mon.read_thickness()
    since = plant.sync().truth().thickness_a - at_zero  # the film may still grow
    assert -0.15 <= zeroed.thickness_a <= 1.2 * since + 0.15
    assert zeroed.frequency_hz < start.frequency_hz  # zeroing does not unload the crystal


async def test_status_c_and_d_are_device_faults(make: Make) -> None:
    mon = await make("qcm_1")
    with pytest.raises(DeviceFault, match=r"^qcm_1: 'X' refused: invalid command \(C\)"):
        await mon.query("X")
    await mon.close()  # the port is exclusive: hand it to the next driver
    other = await make("qcm_2", sensor=2)
    with pytest.raises(DeviceFault, match=r"^qcm_2: 'L2' refused: invalid data \(D\)"):
        await other.read_thickness()
    assert mon.health().retries == 0


async def test_crystal_failure_is_a_device_fault(make: Make, plant: RealtimePlant) -> None:
    mon = await make()
    plant.sync().faults.inject("qcm_failure")
    with pytest.raises(DeviceFault, match="crystal failure"):
        await mon.read_thickness()


async def test_emulator_ignores_bad_crc_and_honours_crc_off(qcm: emulator.Sqm160) -> None:
    good = await raw_exchange(qcm.path, sqm160.command_packet("@"))
    body = bytes([len("AMON Ver 4.13") + 35]) + b"AMON Ver 4.13"
    assert good == b"!" + body + sqm160.crc_chars(body)
    assert await raw_exchange(qcm.path, b"!#@O8") == b""  # CRC off by one: not answered
    assert (await raw_exchange(qcm.path, b"!#@\0\0")).startswith(b"!0AMON")  # CRC off


async def test_silence_garbage_corruption_and_reconnect(
    make: Make, qcm: emulator.Sqm160, plant: RealtimePlant
) -> None:
    mon = await make(retries=6)
    qcm.line_noise = LineNoise(probability=1.0, pattern=b"\xff\x00", min_run=3, max_run=9)
    await mon.read_thickness()
    assert mon.health().garbage_bytes >= 4 * 3
    qcm.line_noise = None
    corrupt = plant.sync().faults.inject("corrupt_frame", "qcm", probability=0.4)
    for _ in range(20):
        await mon.read_thickness()
        if mon.health().bad_frames:
            break
    assert mon.health().bad_frames > 0
    plant.sync().faults.clear(corrupt)
    quick = await make("qcm_quick", timeout=0.1, retries=1, connect=False)
    await mon.close()  # one monitor per port: hand it over
    await quick.connect()
    silent = plant.sync().faults.inject("comm_timeout", "qcm")
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"^qcm_quick: .*after 2 attempts"):
        await quick.zero()
    assert time.monotonic() - t0 < 2.0
    plant.sync().faults.clear(silent)
    await qcm.stop()
    with pytest.raises(CommunicationError):
        await quick.read_thickness()
    await qcm.start()
    assert (await quick.read_thickness()).crystal_life_pct > 99.0
    assert quick.health().reconnects == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": "/x", "sensor": 0}, "option 'sensor'"),
        ({"port": "/x", "sensor": 7}, "option 'sensor'"),
        ({"port": "/x", "timeout": -1}, "option 'timeout'"),
        ({"port": "/x", "address": 1}, "unknown option.*'address'"),
        ({"port": 5}, "option 'port'"),
    ],
)
def test_factory_rejects_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sqm160.create("qcm", options, DriverContext())


def test_one_monitor_per_port() -> None:
    ctx = DriverContext()
    sqm160.create("qcm", {"port": "/x"}, ctx)
    with pytest.raises(ValueError, match="option 'port': SQM-160 on /x is already qcm's"):
        sqm160.create("qcm2", {"port": "/x"}, ctx)


def test_crc_worked_example() -> None:
    # lapkindm/sqm160 protocol.build_command doctest: "@" -> b'!#@O7'
    assert sqm160.command_packet("@") == b"!#@O7"
    assert sqm160.crc_chars(b"#@") == bytes(reference_crc(b"#@")) == b"O7"


@given(st.binary(max_size=64))
def test_crc_matches_the_worked_algorithm(data: bytes) -> None:
    assert tuple(sqm160.crc_chars(data)) == reference_crc(data)
    assert emulator.crc_chars(data) == sqm160.crc_chars(data)
