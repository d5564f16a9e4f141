"""Pfeiffer (Pfeiffer Vacuum Protocol) and MKS 937B/946 gauge drivers against their
emulators over real pseudo-terminals, the chamber pressure coming from the reactor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import serial

from drivers import mks, pfeiffer
from drivers.base import (
    CommunicationError,
    DeviceFault,
    DeviceTimeout,
    DriverContext,
    PressureGauge,
)
from sim.devices.mks import MksBus
from sim.devices.pfeiffer import PfeifferBus, encode_expo
from sim.devices.serial_bus import LineNoise
from sim.reactor import Reactor, ReactorConfig
from sim.realtime import RealtimePlant

FAST = {"timeout": 0.25, "retries": 2}


@pytest.fixture
def plant() -> RealtimePlant:
    cfg = ReactorConfig.for_lines(["TMA", "H2O"], substrate_c=200.0, walls_c=200.0)
    return RealtimePlant(Reactor(cfg, seed=5))


@pytest.fixture
async def ctx() -> AsyncIterator[DriverContext]:
    """A driver context whose devices are all closed at teardown."""
    context = DriverContext()
    yield context
    for key, port in context.shared.items():
        if key.startswith("serial:"):
            await port.close()


async def raw_exchange(path: str, request: bytes, baud: int = 9600) -> bytes:
    def run() -> bytes:
        with serial.Serial(path, baud, timeout=0.3) as s:
            s.write(request)
            return bytes(s.read(4096))

    return await asyncio.to_thread(run)


async def bracketed(gauge: PressureGauge, plant: RealtimePlant) -> bool:
    """Whether a reading lies between the gauge's own readings just before the request
    and just after the answer (the gauge samples in between; the pressure may move)."""
    before = plant.sync().read_pressure_torr("chamber")
    reading = (await gauge.read_pressure()).pressure_torr
    after = plant.sync().read_pressure_torr("chamber")
    assert before is not None
    assert after is not None
    assert reading is not None
    lo, hi = min(before, after), max(before, after)
    return lo * 0.99 - 1e-3 <= reading <= hi * 1.01 + 1e-3


async def until_status(gauge: PressureGauge, status: str, limit_s: float = 3.0) -> None:
    """Poll until the gauge reports ``status`` (the gauge itself lags ~20 ms)."""
    deadline = time.monotonic() + limit_s
    while (reading := await gauge.read_pressure()).status != status:
        assert time.monotonic() < deadline, f"still {reading}"
    assert reading.pressure_torr is None


# =========================================================================== Pfeiffer

PfMake = Callable[..., Awaitable[pfeiffer.PfeifferGauge]]


@pytest.fixture
async def pf_bus(plant: RealtimePlant, tmp_path: Path) -> AsyncIterator[PfeifferBus]:
    emu = PfeifferBus(plant, tmp_path / "gauge", [(1, "chamber")])
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
def pf(pf_bus: PfeifferBus, ctx: DriverContext) -> PfMake:
    async def build(name: str = "gauge", *, connect: bool = True, **options: Any) -> Any:
        dev = pfeiffer.create(name, {"port": str(pf_bus.path), **FAST, **options}, ctx)
        if connect:
            await dev.connect()
        return dev

    return build


async def test_pfeiffer_reading_tracks_chamber_pressure_through_a_tma_pulse(
    pf: PfMake, plant: RealtimePlant
) -> None:
    gauge = await pf()
    assert isinstance(gauge, PressureGauge)
    assert gauge.device_type == "A3"
    base = await gauge.read_pressure()
    assert base.status == "ok"
    assert await bracketed(gauge, plant)
    plant.set_valve("TMA", True)
    await asyncio.sleep(0.03)
    plant.set_valve("TMA", False)
    peak = 0.0
    for _ in range(8):
        r = await gauge.read_pressure()
        assert r.pressure_torr is not None
        peak = max(peak, r.pressure_torr)
    assert base.pressure_torr is not None
    assert peak > 1.2 * base.pressure_torr  # the dose shows up on the gauge
    assert await bracketed(gauge, plant)  # and the decay after it


async def test_pfeiffer_error_strings_are_device_faults(pf: PfMake, plant: RealtimePlant) -> None:
    gauge = await pf("gauge_a")
    with pytest.raises(DeviceFault, match=r"^gauge_a: read of parameter 999: .*NO_DEF"):
        await gauge.read_parameter(999)
    with pytest.raises(DeviceFault, match=r"write of parameter 349: .*_LOGIC"):
        await gauge.write_parameter(349, "    A1")  # the type is read only
    with pytest.raises(DeviceFault, match=r"write of parameter 741: .*_RANGE"):
        await gauge.write_parameter(741, "002")  # only 000 (low) and 001 (high)
    with pytest.raises(DeviceFault, match=r"write of parameter 742: .*_RANGE"):
        await gauge.set_gas_correction(9.5)
    assert gauge.health().retries == 0
    before = await gauge.read_pressure()
    await gauge.set_gas_correction(2.0)
    assert await gauge.read_parameter(742) == "000200"
    after = await gauge.read_pressure()
    assert before.pressure_torr is not None
    assert after.pressure_torr is not None
    assert after.pressure_torr == pytest.approx(2 * before.pressure_torr, rel=0.05)


async def test_pfeiffer_emulator_ignores_bad_checksums_and_other_addresses(
    pf_bus: PfeifferBus,
) -> None:
    path = str(pf_bus.path)
    body = "0011034906    A3"
    assert await raw_exchange(path, pfeiffer.telegram(1, 349)) == (
        f"{body}{pfeiffer.checksum(body)}\r".encode()
    )
    assert await raw_exchange(path, b"0010074002=?107\r") == b""  # checksum off by one
    assert await raw_exchange(path, pfeiffer.telegram(2, 740)) == b""  # nobody at 002
    assert await raw_exchange(path, pfeiffer.telegram(0, 740)) == b""  # global: no answer


async def test_pfeiffer_over_and_under_range(pf: PfMake, plant: RealtimePlant) -> None:
    gauge = await pf(full_scale_torr=11.0)
    plant.sync().faults.inject("pressure_spike", torr=30.0)
    await until_status(gauge, "over range")
    plant.sync().faults.inject("gauge_drift", offset_torr=-50.0)
    await until_status(gauge, "under range")


async def test_pfeiffer_timeouts_silence_wrong_address(pf: PfMake, plant: RealtimePlant) -> None:
    stranger = await pf("gauge_2", address=2, connect=False, timeout=0.15)
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"^gauge_2: no answer .*after 3 attempts"):
        await stranger.connect()
    gauge = await pf("gauge_1", timeout=0.15)
    plant.sync().faults.inject("comm_timeout", "chamber")
    with pytest.raises(DeviceTimeout, match=r"^gauge_1:"):
        await gauge.read_pressure()
    assert time.monotonic() - t0 < 6.0
    assert gauge.health().timeouts == 3


async def test_pfeiffer_garbage_and_corruption_are_discarded_counted_retried(
    pf_bus: PfeifferBus, pf: PfMake, plant: RealtimePlant
) -> None:
    gauge = await pf(retries=6)
    pf_bus.line_noise = LineNoise(probability=0.8, pattern=b"\xff", min_run=40, max_run=40)
    for _ in range(4):
        assert (await gauge.read_pressure()).status == "ok"
    assert gauge.health().garbage_bytes >= 40
    assert gauge.health().bad_frames == 0
    pf_bus.line_noise = None
    plant.sync().faults.inject("corrupt_frame", "chamber", probability=0.5)
    for _ in range(40):
        assert (await gauge.read_pressure()).status == "ok"
        if gauge.health().bad_frames >= 2:
            break
    assert gauge.health().bad_frames >= 2
    assert gauge.health().failures == gauge.health().bad_frames


async def test_pfeiffer_reconnects_after_the_emulator_restarts(
    pf_bus: PfeifferBus, pf: PfMake
) -> None:
    gauge = await pf()
    await pf_bus.stop()
    with pytest.raises(CommunicationError):
        await gauge.read_pressure()
    await pf_bus.start()
    assert (await gauge.read_pressure()).status == "ok"
    assert gauge.health().reconnects == 1


async def test_pfeiffer_jitter_delays_and_disconnect_drops_the_input(
    pf_bus: PfeifferBus, pf: PfMake, plant: RealtimePlant
) -> None:
    gauge = await pf(timeout=0.4, retries=1)  # jitter (<= 200 ms) stays within the timeout
    t0 = time.monotonic()
    for _ in range(4):
        await gauge.read_pressure()
    clean = time.monotonic() - t0
    jitter = plant.sync().faults.inject("timing_jitter", "chamber", jitter_ms=200.0)
    t0 = time.monotonic()
    for _ in range(4):
        await gauge.read_pressure()
    assert time.monotonic() - t0 > clean + 0.1  # about 4 x 100 ms more, seeded draws
    assert gauge.health().failures == 0
    plant.sync().faults.clear(jitter)
    seen = pf_bus.requests
    cut = plant.sync().faults.inject("disconnect", "chamber")
    with pytest.raises(DeviceTimeout):
        await gauge.read_pressure()
    assert pf_bus.requests == seen  # nothing reached the gauge: the cable is out
    assert pf_bus.bytes_dropped == 2 * len(pfeiffer.telegram(1, 740))
    plant.sync().faults.clear(cut)
    assert (await gauge.read_pressure()).status == "ok"


# =========================================================================== MKS

MksMake = Callable[..., Awaitable[mks.MksGauge]]


@pytest.fixture
async def mks_bus(plant: RealtimePlant, tmp_path: Path) -> AsyncIterator[MksBus]:
    emu = MksBus(plant, tmp_path / "mks", [(253, "chamber")])
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
def mk(mks_bus: MksBus, ctx: DriverContext) -> MksMake:
    async def build(name: str = "mks", *, connect: bool = True, **options: Any) -> Any:
        dev = mks.create(name, {"port": str(mks_bus.path), **FAST, **options}, ctx)
        if connect:
            await dev.connect()
        return dev

    return build


async def test_mks_reads_the_chamber_in_any_unit(mk: MksMake, plant: RealtimePlant) -> None:
    gauge = await mk()
    assert isinstance(gauge, PressureGauge)
    assert await gauge.query("MD?") == "937B"
    assert await bracketed(gauge, plant)
    assert await gauge.query("U!PASCAL") == "PASCAL"
    await gauge.connect()  # reads the unit again
    assert gauge.unit == "PASCAL"
    assert await bracketed(gauge, plant)


async def test_mks_nak_codes_name_their_meaning(mk: MksMake, mks_bus: MksBus) -> None:
    gauge = await mk("pirani")
    with pytest.raises(DeviceFault, match=r"^pirani: XX\? refused: NAK 160 \(unrecognized"):
        await gauge.query("XX?")
    with pytest.raises(DeviceFault, match=r"NAK 169 \(invalid argument\)"):
        await gauge.query("U!FURLONG")
    with pytest.raises(DeviceFault, match=r"NAK 175 \(command/query byte invalid\)"):
        await gauge.query("PR1!5")
    ch2 = await mk("ch2", channel=2)
    with pytest.raises(DeviceFault, match=r"^ch2: PR2\? refused: NAK 163 \(invalid channel\)"):
        await ch2.read_pressure()
    assert gauge.health().retries == 0


async def test_mks_range_status(mk: MksMake, plant: RealtimePlant) -> None:
    gauge = await mk()
    plant.sync().faults.inject("pressure_spike", torr=30.0)
    await until_status(gauge, "over range")
    plant.sync().faults.inject("gauge_drift", offset_torr=-50.0)
    await until_status(gauge, "under range")


async def test_mks_wrong_address_is_silence(mk: MksMake) -> None:
    with pytest.raises(DeviceTimeout, match=r"^mks_1: no answer"):
        await mk("mks_1", address=1, timeout=0.15)


async def test_mks_garbage_and_corruption_are_discarded_counted_retried(
    mk: MksMake, mks_bus: MksBus, plant: RealtimePlant
) -> None:
    gauge = await mk(retries=6)
    mks_bus.line_noise = LineNoise(probability=1.0, pattern=b"\xff\x00")
    assert (await gauge.read_pressure()).status == "ok"
    assert gauge.health().garbage_bytes > 0
    mks_bus.line_noise = None
    plant.sync().faults.inject("corrupt_frame", "chamber", probability=0.5)
    for _ in range(40):
        assert (await gauge.read_pressure()).status == "ok"
        if gauge.health().bad_frames:
            break
    assert gauge.health().bad_frames > 0


async def test_mks_silence_then_reconnect_after_restart(
    mk: MksMake, mks_bus: MksBus, plant: RealtimePlant
) -> None:
    gauge = await mk(timeout=0.15)
    silent = plant.sync().faults.inject("comm_timeout", "chamber")
    with pytest.raises(DeviceTimeout, match=r"^mks: no answer within 0.15 s"):
        await gauge.read_pressure()
    plant.sync().faults.clear(silent)
    assert (await gauge.read_pressure()).status == "ok"
    reconnects = gauge.health().reconnects
    await mks_bus.stop()
    await mks_bus.start()
    assert (await gauge.read_pressure()).status == "ok"
    assert gauge.health().reconnects == reconnects + 1


# =========================================================================== factories


@pytest.mark.parametrize(
    ("factory", "options", "message"),
    [
        (pfeiffer.create, {"port": "/x", "address": 0}, "option 'address'"),
        (pfeiffer.create, {"port": "/x", "address": "1"}, "option 'address'"),
        (pfeiffer.create, {"port": "/x", "full_scale_torr": -1}, "option 'full_scale_torr'"),
        (pfeiffer.create, {"port": "/x", "retries": -1}, "option 'retries'"),
        (pfeiffer.create, {"port": "/x", "unit": "A"}, "unknown option.*'unit'"),
        (mks.create, {"port": "/x", "address": 256}, "option 'address'"),
        (mks.create, {"port": "/x", "channel": 7}, "option 'channel'"),
        (mks.create, {"port": "/x", "stopbits": 3}, "option 'stopbits'"),
        (mks.create, {"address": 253}, "option 'port'"),
    ],
)
def test_gauge_factories_reject_bad_options(
    factory: Callable[..., Any], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        factory("g", options, DriverContext())


def test_pfeiffer_telegram_and_expo_encoding_match_the_manual() -> None:
    # protocols.md 3.1: the P740 query of gauge 001 and the 1.000e3 hPa example
    assert pfeiffer.telegram(1, 740) == b"0010074002=?106\r"
    assert pfeiffer.decode_expo("100023") == pytest.approx(1000.0)
    assert pfeiffer.decode_expo("750015") == pytest.approx(7.5e-5)
    for value in (1e-4, 0.5531, 13.33, 999.95, 1234.0):
        assert pfeiffer.decode_expo(encode_expo(value)) == pytest.approx(value, rel=6e-4)
