"""Alicat driver against the Alicat emulator over a real pseudo-terminal.

Two units (A on the carrier MFC, B on the O2 plasma-feed MFC) share one pty, as two
Alicats share one RS-485 pair; the reactor behind them runs in real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import serial

from drivers import alicat
from drivers.base import (
    CommunicationError,
    DeviceFault,
    DeviceTimeout,
    DriverContext,
    FlowController,
)
from sim.devices.alicat import AlicatBus
from sim.devices.serial_bus import LineNoise
from sim.reactor import Reactor, ReactorConfig
from sim.realtime import RealtimePlant

FAST = {"timeout": 0.2, "retries": 2}


@pytest.fixture
def plant() -> RealtimePlant:
    cfg = ReactorConfig.for_lines(["TMA", "H2O", "O2-plasma"], substrate_c=200.0)
    return RealtimePlant(Reactor(cfg, seed=11))


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "rs485-mfcs")


@pytest.fixture
async def bus(plant: RealtimePlant, path: str) -> AsyncIterator[AlicatBus]:
    emu = AlicatBus(plant, path, [("A", "carrier"), ("B", "plasma.O2")])
    await emu.start()
    yield emu
    await emu.stop()


Make = Callable[..., Awaitable[alicat.AlicatFlowController]]


@pytest.fixture
async def make(path: str) -> AsyncIterator[Make]:
    """``await make(unit="A", **options)`` -> a connected driver (closed at teardown)."""
    ctx = DriverContext()
    made: list[alicat.AlicatFlowController] = []

    async def build(name: str = "mfc", *, connect: bool = True, **options: Any) -> Any:
        dev = alicat.create(name, {"port": path, **FAST, **options}, ctx)
        made.append(dev)
        if connect:
            await dev.connect()
        return dev

    yield build
    for dev in made:
        await dev.close()


async def raw_exchange(path: str, request: bytes, listen_s: float = 0.3) -> bytes:
    """What a bare serial client gets back for ``request`` (the driver not connected)."""

    def run() -> bytes:
        with serial.Serial(path, 19200, timeout=listen_s) as s:
            s.write(request)
            return bytes(s.read(4096))

    return await asyncio.to_thread(run)


async def until(
    read: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], limit_s: float = 5.0
) -> Any:
    """Poll ``read`` until ``ok`` holds (generous limit: the physics takes its time)."""
    deadline = time.monotonic() + limit_s
    value = await read()
    while not ok(value):
        assert time.monotonic() < deadline, f"never reached: last {value}"
        await asyncio.sleep(0.05)
        value = await read()
    return value


# --------------------------------------------------------------------------- commands


async def test_poll_setpoint_and_gas_follow_the_reactor(
    bus: AlicatBus, make: Make, plant: RealtimePlant
) -> None:
    mfc = await make("mfc_n2", unit="A", gas="N2")
    assert isinstance(mfc, FlowController)
    first = await mfc.read_flow()
    assert first.gas == "N2"
    assert first.setpoint_sccm == pytest.approx(20.0)  # the reactor's carrier default
    await mfc.set_flow(85.5)
    assert plant.sync().read_mfc("carrier").setpoint_sccm == pytest.approx(85.5)
    reading = await until(mfc.read_flow, lambda r: abs(r.flow_sccm - 85.5) < 1.0)
    truth = plant.sync().read_mfc("carrier")
    assert reading.setpoint_sccm == pytest.approx(85.5)
    assert abs(truth.flow_sccm - reading.flow_sccm) < 1.0
    assert reading.status == ()
    assert mfc.health().transactions >= 4
    assert mfc.health().failures == 0


async def test_gas_select_modern_and_legacy_firmware(
    plant: RealtimePlant, path: str, make: Make
) -> None:
    async with AlicatBus(plant, path, [("A", "carrier")]) as emu:
        mfc = await make(unit="A", gas="Ar")
        assert emu.unit_gas("A") == "Ar"
        assert (await mfc.read_flow()).gas == "Ar"
        assert mfc.health().failures == 0
        await mfc.close()
    # firmware before 10v05 answers ? to AGS: the driver falls back to register 46
    async with AlicatBus(plant, path, [("A", "carrier")], firmware="7v09.0-R22") as emu:
        assert await raw_exchange(path, b"AGS 11\r") == b"?\r"
        mfc = await make(unit="A", gas="O2")
        assert emu.unit_gas("A") == "O2"
        assert (await mfc.read_flow()).gas == "O2"
        assert mfc.health().failures == 0
        await mfc.close()


async def test_question_mark_reply_is_a_device_fault_naming_the_device(
    bus: AlicatBus, make: Make, path: str
) -> None:
    assert await raw_exchange(path, b"AXYZ\r") == b"?\r"
    # the driver believes in a 500 sccm unit; the 200 sccm unit refuses 300 with '?'
    mfc = await make("mfc_n2", unit="A", full_scale=500)
    with pytest.raises(DeviceFault, match=r"^mfc_n2: .*rejected AS300") as info:
        await mfc.set_flow(300)
    assert info.value.device == "mfc_n2"
    assert mfc.health().retries == 0  # an answer, not a transient: not retried
    with pytest.raises(DeviceFault, match=r"outside 0..500"):
        await mfc.set_flow(-1)


async def test_status_tokens_reach_the_reading(bus: AlicatBus, make: Make, path: str) -> None:
    frame = await raw_exchange(path, b"AHP\r")
    assert frame.endswith(b" HLD\r")
    mfc = await make(unit="A")
    assert (await mfc.read_flow()).status == ("HLD",)
    with pytest.raises(serial.SerialException, match="Could not exclusively lock"):
        serial.Serial(path, 19200, exclusive=True)  # the driver holds the port
    await mfc.close()
    assert (await raw_exchange(path, b"AC\r")).endswith(b"N2\r")
    await mfc.connect()
    assert (await mfc.read_flow()).status == ()


async def test_two_units_on_one_port_polled_concurrently(
    bus: AlicatBus, make: Make, plant: RealtimePlant
) -> None:
    a = await make("mfc_n2", unit="A", gas="N2")
    b = await make("mfc_o2", unit="B", gas="O2")
    assert a.port is b.port
    await asyncio.gather(a.set_flow(50.0), b.set_flow(12.0))

    async def poll(dev: alicat.AlicatFlowController, n: int) -> list[Any]:
        return [await dev.read_flow() for _ in range(n)]

    ra, rb = await asyncio.gather(poll(a, 12), poll(b, 12))
    assert {(r.gas, r.setpoint_sccm) for r in ra} == {("N2", 50.0)}
    assert {(r.gas, r.setpoint_sccm) for r in rb} == {("O2", 12.0)}
    assert plant.sync().read_mfc("plasma.O2").setpoint_sccm == 12.0
    assert a.health().bad_frames == b.health().bad_frames == 0


# --------------------------------------------------------------------------- errors


async def test_wrong_unit_id_is_silence_then_timeout(bus: AlicatBus, make: Make) -> None:
    mfc = await make("mfc_c", unit="C", connect=False, timeout=0.1, retries=1)
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"^mfc_c: no answer within 0.1 s \(after 2"):
        await mfc.connect()
    assert time.monotonic() - t0 < 3.0
    assert mfc.health().timeouts == 2


async def test_silent_unit_times_out_after_retries_and_recovers(
    bus: AlicatBus, make: Make, plant: RealtimePlant
) -> None:
    a = await make("mfc_n2", unit="A")
    b = await make("mfc_o2", unit="B")
    fault = plant.sync().faults.inject("comm_timeout", "carrier")
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"^mfc_n2:"):
        await a.read_flow()
    assert time.monotonic() - t0 < 3.0
    assert a.health().timeouts == 3
    assert a.health().consecutive_failures == 3
    assert (await b.read_flow()).gas == "O2"  # the other unit on the bus still answers
    plant.sync().faults.clear(fault)
    assert (await a.read_flow()).gas == "N2"
    assert a.health().consecutive_failures == 0


async def test_line_noise_is_discarded_and_counted(bus: AlicatBus, make: Make) -> None:
    bus.line_noise = LineNoise(probability=1.0, pattern=b"\xff\x00\xa0", seed=3)
    mfc = await make(unit="A")
    for _ in range(5):
        assert (await mfc.read_flow()).gas == "N2"
    h = mfc.health()
    assert h.garbage_bytes >= 6
    assert h.bad_frames == 0
    assert h.failures == 0


async def test_stale_reply_is_never_taken_for_the_next_answer(bus: AlicatBus, make: Make) -> None:
    mfc = await make(unit="A")
    stale = b"A +014.70 +025.00 +999.00 +999.00 +999.00     N2\r"
    bus.inject(stale)
    await asyncio.sleep(0.05)  # it sits in the driver's input by now
    reading = await mfc.read_flow()
    assert reading.setpoint_sccm == pytest.approx(20.0)
    assert mfc.health().garbage_bytes >= len(stale)


async def test_corrupt_frames_are_counted_and_retried(
    bus: AlicatBus, make: Make, plant: RealtimePlant
) -> None:
    mfc = await make(unit="A", retries=6)
    fault = plant.sync().faults.inject("corrupt_frame", "carrier", probability=0.4)
    for _ in range(8):
        assert (await mfc.read_flow()).gas == "N2"
    h = mfc.health()
    assert h.bad_frames > 0
    assert h.retries == h.bad_frames  # every garbled frame cost one retry, nothing else
    plant.sync().faults.clear(fault)
    plant.sync().faults.inject("corrupt_frame", "carrier", probability=1.0)
    with pytest.raises(CommunicationError, match=r"^mfc: garbled reply .*after 7 attempts"):
        await mfc.read_flow()


async def test_reconnects_after_the_emulator_restarts(bus: AlicatBus, make: Make) -> None:
    mfc = await make(unit="A", retries=1)
    await mfc.set_flow(33.0)
    await bus.stop()
    with pytest.raises(CommunicationError, match=r"^mfc:"):
        await mfc.read_flow()
    await bus.start()  # a new pty at the same path: the cable is back
    reading = await mfc.read_flow()
    assert reading.setpoint_sccm == pytest.approx(33.0)  # the reactor kept its state
    assert mfc.health().reconnects == 1


# --------------------------------------------------------------------------- factory


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "option 'port' is required"),
        ({"port": "/dev/null", "unit": "a1"}, "option 'unit'"),
        ({"port": "/dev/null", "gas": "Unobtainium"}, "option 'gas'"),
        ({"port": "/dev/null", "full_scale": -5}, "option 'full_scale'"),
        ({"port": "/dev/null", "timeout": 0}, "option 'timeout'"),
        ({"port": "/dev/null", "baudrate": "fast"}, "option 'baudrate'"),
        ({"port": "/dev/null", "parity": "X"}, "option 'parity'"),
        ({"port": "/dev/null", "baud": 9600}, "unknown option.*'baud'"),
    ],
)
def test_factory_rejects_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        alicat.create("mfc", options, DriverContext())


def test_factory_shares_one_port_per_url_and_guards_the_bus() -> None:
    ctx = DriverContext()
    a = alicat.create("a", {"port": "/tmp/x", "unit": "A"}, ctx)
    b = alicat.create("b", {"port": "/tmp/x", "unit": "B", "gas": 11}, ctx)
    assert a.port is b.port
    assert b.gas == 11
    with pytest.raises(ValueError, match="option 'unit': A on /tmp/x is already a's"):
        alicat.create("c", {"port": "/tmp/x", "unit": "A"}, ctx)
    with pytest.raises(ValueError, match="9600 8N1 but a, b on /tmp/x uses 19200 8N1"):
        alicat.create("d", {"port": "/tmp/x", "unit": "D", "baudrate": 9600}, ctx)
