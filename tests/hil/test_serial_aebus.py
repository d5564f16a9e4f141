"""AE Bus RF generator driver against the AE Bus emulator over a real pseudo-terminal,
the reactor's plasma source behind it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import serial

from drivers import aebus
from drivers.base import (
    CommunicationError,
    DeviceFault,
    DeviceTimeout,
    DriverContext,
    PlasmaReading,
    PlasmaSource,
)
from sim.devices.aebus import FRONT_PANEL, AeBus
from sim.devices.aebus import packet as emulator_packet
from sim.devices.serial_bus import LineNoise
from sim.reactor import Reactor, ReactorConfig
from sim.realtime import RealtimePlant

FAST = {"timeout": 0.25, "retries": 2}


@pytest.fixture
def plant() -> RealtimePlant:
    cfg = ReactorConfig.for_lines(["TMA", "O2-plasma"], substrate_c=200.0)
    return RealtimePlant(Reactor(cfg, seed=3))


@pytest.fixture
async def gen(plant: RealtimePlant, tmp_path: Path) -> AsyncIterator[AeBus]:
    emu = AeBus(plant, tmp_path / "rf", [(1, "rf")])
    await emu.start()
    yield emu
    await emu.stop()


Make = Callable[..., Awaitable[aebus.AeBusGenerator]]


@pytest.fixture
async def make(gen: AeBus) -> AsyncIterator[Make]:
    ctx = DriverContext()
    made: list[aebus.AeBusGenerator] = []

    async def build(name: str = "rf", *, connect: bool = True, **options: Any) -> Any:
        dev = aebus.create(name, {"port": str(gen.path), **FAST, **options}, ctx)
        made.append(dev)
        if connect:
            await dev.connect()
        return dev

    yield build
    for dev in made:
        await dev.close()


async def raw_exchange(path: Path, request: bytes) -> bytes:
    def run() -> bytes:
        with serial.Serial(str(path), 9600, timeout=0.3) as s:
            s.write(request)
            return bytes(s.read(64))

    return await asyncio.to_thread(run)


async def until_lit(rf: aebus.AeBusGenerator, watts: float, limit_s: float = 5.0) -> PlasmaReading:
    """Poll until forward power reaches ``watts`` and the match has tuned."""
    deadline = time.monotonic() + limit_s
    while True:
        r = await rf.read_plasma()
        if abs(r.forward_w - watts) <= 0.02 * watts and r.reflected_w < 0.1 * watts:
            return r
        assert time.monotonic() < deadline, f"never lit: {r}"
        await asyncio.sleep(0.05)


async def test_rf_on_gives_forward_power_from_the_plasma_model(
    gen: AeBus, make: Make, plant: RealtimePlant
) -> None:
    rf = await make()
    assert isinstance(rf, PlasmaSource)
    off = await rf.read_plasma()
    assert off == PlasmaReading(rf_on=False, setpoint_w=0.0, forward_w=0.0, reflected_w=0.0)
    plant.sync().set_mfc("plasma.O2", 20.0)  # feed gas, so it can ignite
    await rf.set_power(250)
    await rf.rf_on()
    lit = await until_lit(rf, 250)
    assert lit.rf_on
    assert lit.setpoint_w == 250
    truth = plant.sync().read_plasma()
    assert truth.on
    assert truth.ignited
    assert abs(truth.forward_w - lit.forward_w) < 5
    await rf.set_power(120)  # a new setpoint while lit takes effect at once
    await until_lit(rf, 120)
    await rf.safe_state()
    assert plant.sync().read_plasma().on is False
    r = await rf.read_plasma()
    assert not r.rf_on
    assert r.forward_w == 0.0
    await rf.safe_state()  # idempotent
    assert rf.health().failures == 0


async def test_csr_codes_are_device_faults_with_their_meaning(gen: AeBus, make: Make) -> None:
    rf = await make("rf_gen", max_power_w=1000)
    with pytest.raises(DeviceFault, match=r"^rf_gen: command 8 refused: CSR 4 \(value out of"):
        await rf.set_power(800)  # the driver allows it, the 600 W generator does not
    gen.set_control_mode(1, FRONT_PANEL)  # an operator takes the generator locally
    with pytest.raises(DeviceFault, match=r"CSR 1 \(wrong control mode"):
        await rf.rf_on()
    await rf.connect()  # claims host control again
    await rf.rf_on()
    await rf.rf_off()
    with pytest.raises(DeviceFault, match=r"outside 0..1000 W"):
        await rf.set_power(-3)
    assert rf.health().retries == 0


async def test_emulator_handshake_ack_nak_and_address_filter(gen: AeBus) -> None:
    good = aebus.packet(1, 155)  # report control mode
    reply = await raw_exchange(gen.path, good)
    assert reply[0] == aebus.ACK
    assert reply[1:] == aebus.packet(1, 155, bytes([FRONT_PANEL]))
    bad = good[:-1] + bytes([good[-1] ^ 0x40])
    assert await raw_exchange(gen.path, bad) == bytes([aebus.NAK])
    assert await raw_exchange(gen.path, aebus.packet(2, 155)) == b""  # not our address
    unknown = await raw_exchange(gen.path, aebus.packet(1, 250))
    assert unknown[1:] == aebus.packet(1, 250, bytes([99]))  # CSR 99 not implemented


async def test_nak_and_retransmit_in_both_directions(
    gen: AeBus, make: Make, plant: RealtimePlant
) -> None:
    rf = await make(retries=5)
    plant.sync().faults.inject("corrupt_frame", "rf", probability=0.35)
    for _ in range(40):
        assert (await rf.read_plasma()).rf_on is False
        if gen.naks_sent and gen.naks_received:
            break
    assert gen.naks_sent > 0  # packets "damaged on the way in": NAKed, sent again
    assert gen.naks_received > 0  # responses failing their checksum: we NAKed them
    h = rf.health()
    assert h.bad_frames >= gen.naks_received
    assert h.retries > 0


async def test_garbage_before_ack_and_response_is_skipped(gen: AeBus, make: Make) -> None:
    gen.line_noise = LineNoise(probability=1.0, pattern=b"\xff", min_run=5, max_run=20)
    rf = await make()
    for _ in range(3):
        await rf.read_plasma()
    h = rf.health()
    assert h.garbage_bytes >= 3 * 4 * 2 * 5  # 4 reports, junk before ACK and response
    assert h.bad_frames == 0
    assert h.failures == 0


async def test_silence_wrong_address_and_reconnect(
    gen: AeBus, make: Make, plant: RealtimePlant
) -> None:
    with pytest.raises(DeviceTimeout, match=r"^rf_7: no answer"):
        await make("rf_7", address=7, timeout=0.15, retries=1)
    rf = await make(timeout=0.15)
    fault = plant.sync().faults.inject("comm_timeout", "rf")
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"^rf:"):
        await rf.rf_on()
    assert time.monotonic() - t0 < 3.0
    plant.sync().faults.clear(fault)
    await gen.stop()
    with pytest.raises(CommunicationError):
        await rf.read_plasma()
    await gen.start()  # a power-cycled generator: back under front-panel control
    plant.sync().set_mfc("plasma.O2", 20.0)
    await rf.set_power(100)  # the driver reclaims host control on the new link first
    await rf.rf_on()
    assert (await until_lit(rf, 100)).rf_on
    assert rf.health().reconnects == 1
    await rf.rf_off()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": "/x", "address": 32}, "option 'address'"),
        ({"port": "/x", "address": 0}, "option 'address'"),
        ({"port": "/x", "max_power_w": 0}, "option 'max_power_w'"),
        ({"port": "/x", "parity": "Q"}, "option 'parity'"),
        ({"port": "/x", "power": 5}, "unknown option.*'power'"),
    ],
)
def test_factory_rejects_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aebus.create("rf", options, DriverContext())


def test_factory_defaults_to_8o1() -> None:
    rf = aebus.create("rf", {"port": "/x"}, DriverContext())
    assert rf.port.settings.describe() == "9600 8O1"


def test_packet_format_and_checksum() -> None:
    # header (1 << 3) | 2, command 8, 300 W little-endian, XOR checksum
    assert aebus.packet(1, 8, (300).to_bytes(2, "little")) == bytes([0x0A, 8, 0x2C, 0x01, 0x2F])
    long = aebus.packet(5, 93, bytes(range(9)))
    assert long[0] == (5 << 3) | 7
    assert long[2] == 9
    assert long == emulator_packet(5, 93, bytes(range(9)))
    for data in (b"", b"\x01", bytes(range(6)), bytes(range(40))):
        p = aebus.packet(31, 200, data)
        assert aebus.xor(p) == 0
