"""The Modbus RTU drivers (Eurotherm 3200, Watlow EZ-ZONE PM, ozone generator) against
their emulators on one RS-485 bus on a pseudo-terminal.

A real :class:`sim.reactor.Reactor` behind a :class:`sim.realtime.RealtimePlant`; the bus
(:class:`sim.devices.modbus_rtu.ModbusRtuBus`) answers at 19200 baud timing; the drivers are
built through their entry-point factories with one shared :class:`DriverContext`, as the tool
builds them from ``config/hil.yaml``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from drivers import eurotherm, ozone, watlow
from drivers.base import (
    CommunicationError,
    Device,
    DeviceError,
    DeviceFault,
    DeviceTimeout,
    DriverContext,
    OzoneGenerator,
    TemperatureController,
)
from drivers.eurotherm import Eurotherm3200
from drivers.modbus_link import ModbusFault
from drivers.ozone import ModbusOzoneGenerator
from drivers.watlow import WatlowPM
from sim.devices import modbus_rtu as emu
from sim.reactor import Reactor, ReactorConfig
from sim.realtime import RealtimePlant

D = TypeVar("D", bound=Device)
SUBSTRATE_C = 200.0
WALLS_C = 150.0


@pytest.fixture
def plant() -> RealtimePlant:
    cfg = ReactorConfig.for_lines(["TMA", "H2O", "O3"], substrate_c=SUBSTRATE_C, walls_c=WALLS_C)
    return RealtimePlant(Reactor(cfg, seed=3))


@pytest.fixture
def port(tmp_path: Path) -> str:
    return str(tmp_path / "rs485-heaters")


class Rig:
    """The bus, its emulated units, and drivers made for it (closed at teardown)."""

    def __init__(self, plant: RealtimePlant, port: str) -> None:
        self.plant = plant
        self.port = port
        self.ctx = DriverContext()
        self.tc = emu.Eurotherm3200(plant, 1, "substrate")
        self.tw = emu.WatlowPM(plant, 2, "walls")
        self.oz = emu.OzoneGenerator(plant, 10)
        self.bus = emu.ModbusRtuBus(port, [self.tc, self.tw, self.oz])
        self.made: list[Device] = []

    def options(self, address: int, **extra: Any) -> dict[str, Any]:
        return {"port": self.port, "address": address, "timeout": 0.15, **extra}

    async def eurotherm(
        self, address: int = 1, *, connect: bool = True, **extra: Any
    ) -> Eurotherm3200:
        dev = eurotherm.create("tc_sub", self.options(address, **extra), self.ctx)
        if not connect:
            self.made.append(dev)
            await dev._unit.connect()  # the port only: the test talks registers
            return dev
        return await self._connect(dev)

    async def watlow(self, address: int = 2, **extra: Any) -> WatlowPM:
        dev = watlow.create("tc_walls", self.options(address, **extra), self.ctx)
        return await self._connect(dev)

    async def ozone(self, address: int = 10, **extra: Any) -> ModbusOzoneGenerator:
        dev = ozone.create("ozone", self.options(address, **extra), self.ctx)
        return await self._connect(dev)

    async def _connect(self, dev: D) -> D:
        self.made.append(dev)
        await dev.connect()
        return dev

    def heater(self, name: str) -> tuple[float | None, float | None]:
        st = self.plant.sync().read_heater(name)
        return st.setpoint_c, st.pv_c


@pytest.fixture
async def rig(plant: RealtimePlant, port: str) -> AsyncIterator[Rig]:
    r = Rig(plant, port)
    await r.bus.start()
    yield r
    for dev in r.made:
        await dev.close()
    await r.bus.stop()


# --------------------------------------------------------------------------- factories


async def test_factories_build_the_protocols_from_the_hil_options(port: str) -> None:
    ctx = DriverContext()
    tc = eurotherm.create("tc_sub", {"port": port, "address": 1}, ctx)
    tw = watlow.create("tc_walls", {"port": port, "address": 2}, ctx)
    oz = ozone.create("ozone", {"port": port, "address": 10}, ctx)
    assert isinstance(tc, TemperatureController)
    assert isinstance(tw, TemperatureController)
    assert isinstance(oz, OzoneGenerator)
    assert len(ctx.shared) == 1  # one port, one link (one client, one lock)


@pytest.mark.parametrize(
    ("factory", "options", "named"),
    [
        (eurotherm.create, {"address": 1}, "port"),
        (eurotherm.create, {"port": "/dev/x"}, "address"),
        (eurotherm.create, {"port": "/dev/x", "address": 0}, "address"),
        (eurotherm.create, {"port": "/dev/x", "address": 248}, "address"),
        (eurotherm.create, {"port": "/dev/x", "address": 1, "decimals": 5}, "decimals"),
        (eurotherm.create, {"port": "/dev/x", "address": 1, "block_read": "no"}, "block_read"),
        (eurotherm.create, {"port": "/dev/x", "address": 1, "baudrate": 0}, "baudrate"),
        (eurotherm.create, {"port": "/dev/x", "address": 1, "parity": "X"}, "parity"),
        (eurotherm.create, {"port": "/dev/x", "address": 1, "adress": 1}, "adress"),
        (watlow.create, {"port": "/dev/x", "address": 2, "word_order": "mid"}, "word_order"),
        (watlow.create, {"port": "/dev/x", "address": 2, "units": "K"}, "units"),
        (watlow.create, {"port": "/dev/x", "address": 2, "timeout": -1}, "timeout"),
        (ozone.create, {"port": "/dev/x"}, "address"),
        (ozone.create, {"port": "", "address": 3}, "port"),
    ],
)
async def test_factories_reject_bad_options_naming_them(
    factory: Callable[..., Device], options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        factory("dev", options, DriverContext())


async def test_devices_on_one_line_must_agree_on_its_settings(port: str) -> None:
    ctx = DriverContext()
    eurotherm.create("a", {"port": port, "address": 1, "baudrate": 9600}, ctx)
    with pytest.raises(ValueError, match="baudrate"):
        watlow.create("b", {"port": port, "address": 2}, ctx)


# --------------------------------------------------------------------------- Eurotherm


async def test_eurotherm_takes_over_bumplessly_with_the_remote_setpoint(rig: Rig) -> None:
    tc = await rig.eurotherm()
    assert rig.tc.lr == 1  # comms remote setpoint selected (L-R 276)
    assert rig.tc.rm_sp == 2000  # loaded with the working setpoint first
    reading = await tc.read_temperature()
    assert reading.pv_c == pytest.approx(SUBSTRATE_C, abs=0.5)
    assert reading.setpoint_c == SUBSTRATE_C
    assert 0 < reading.output_pct < 100
    assert reading.sensor_break is False
    assert rig.heater("substrate")[0] == SUBSTRATE_C  # nothing moved


async def test_eurotherm_setpoint_ramp_and_standby(rig: Rig) -> None:
    tc = await rig.eurotherm()
    await tc.set_temperature(212.5)
    assert rig.tc.rm_sp == 2125
    assert rig.heater("substrate")[0] == 212.5
    assert rig.tc.eeprom_writes == 0  # never the EEPROM setpoint
    await tc.set_ramp_rate(30.0)  # K/min
    assert rig.tc.ramp == 300
    await tc.set_temperature(260.0)
    reading = await tc.read_temperature()
    assert reading.ramping is True
    assert reading.setpoint_c is not None
    assert reading.setpoint_c < 260.0
    await tc.set_ramp_rate(None)
    assert rig.tc.ramp == 0
    await tc.set_temperature(None)
    assert rig.tc.im == 1  # standby
    assert rig.heater("substrate")[0] is None
    reading = await tc.read_temperature()
    assert reading.setpoint_c is None
    assert reading.output_pct == 0.0
    await tc.set_temperature(205.0)
    assert rig.tc.im == 0
    assert rig.heater("substrate")[0] == 205.0
    assert rig.tc.eeprom_writes == 0


async def test_eurotherm_negative_temperatures_are_twos_complement(rig: Rig) -> None:
    tc = await rig.eurotherm()
    rig.tc.sp_lo = rig.tc._word(-50.0)
    await tc.set_temperature(-12.3)
    assert rig.tc.rm_sp == 0x10000 - 123
    assert rig.heater("substrate")[0] == pytest.approx(-12.3)


async def test_eurotherm_refusals_name_the_device(rig: Rig) -> None:
    tc = await rig.eurotherm()
    with pytest.raises(ModbusFault) as err:
        await tc.set_temperature(900.0)  # above SP.HI (the heater's maximum)
    assert err.value.code == 3
    assert err.value.device == "tc_sub"
    assert "illegal data value" in str(err.value)
    with pytest.raises(DeviceFault, match="does not fit") as local:
        await tc.set_temperature(4000.0)  # 40000 does not fit int16 with one decimal
    assert local.value.device == "tc_sub"
    assert rig.heater("substrate")[0] == SUBSTRATE_C


async def test_eurotherm_scaling_follows_the_decimals(plant: RealtimePlant, port: str) -> None:
    unit = emu.Eurotherm3200(plant, 4, "substrate", decimals=2)
    bus = emu.ModbusRtuBus(port, [unit])
    await bus.start()
    tc = eurotherm.create("tc", {"port": port, "address": 4, "decimals": 2}, DriverContext())
    try:
        await tc.connect()
        await tc.set_temperature(201.25)
        assert unit.rm_sp == 20125
        assert (await tc.read_temperature()).setpoint_c == 201.25
    finally:
        await tc.close()
        await bus.stop()


async def test_eurotherm_sensor_break(rig: Rig) -> None:
    tc = await rig.eurotherm()
    rig.plant.sync().faults.inject("thermocouple_break", "substrate")
    reading = await tc.read_temperature()
    assert reading.sensor_break is True
    assert reading.pv_c is None


async def test_eurotherm_falls_back_to_single_reads(plant: RealtimePlant, port: str) -> None:
    unit = emu.Eurotherm3200(plant, 1, "substrate", block_reads=False)
    bus = emu.ModbusRtuBus(port, [unit])
    await bus.start()
    tc = eurotherm.create("tc", {"port": port, "address": 1}, DriverContext())
    try:
        await tc.connect()
        reading = await tc.read_temperature()
        assert tc.block_read is False
        assert reading.pv_c == pytest.approx(SUBSTRATE_C, abs=0.5)
        assert tc.health().failures == 1  # the one refused block read
    finally:
        await tc.close()
        await bus.stop()


# --------------------------------------------------------------------------- Watlow


async def test_watlow_setpoint_ramp_and_off(rig: Rig) -> None:
    tw = await rig.watlow()
    reading = await tw.read_temperature()
    assert reading.pv_c == pytest.approx(WALLS_C, abs=0.5)
    assert reading.setpoint_c == pytest.approx(WALLS_C, abs=1e-3)  # degF in float32
    await tw.set_temperature(155.5)
    assert rig.tw.sp_c == pytest.approx(155.5, abs=1e-3)
    assert rig.heater("walls")[0] == pytest.approx(155.5, abs=1e-3)
    await tw.set_ramp_rate(6.0)
    assert rig.tw.ramp_action == 85
    await tw.set_temperature(180.0)
    reading = await tw.read_temperature()
    assert reading.ramping is True
    assert reading.setpoint_c is not None
    assert reading.setpoint_c < 180.0
    await tw.set_ramp_rate(0)
    assert rig.tw.ramp_action == 62
    await tw.set_temperature(None)
    assert rig.tw.mode == 62
    assert rig.heater("walls")[0] is None
    assert (await tw.read_temperature()).setpoint_c is None
    await tw.set_temperature(150.0)
    assert rig.tw.mode == 10


async def test_watlow_refusal_and_sensor_error(rig: Rig) -> None:
    tw = await rig.watlow()
    with pytest.raises(ModbusFault) as err:
        await tw.set_temperature(900.0)
    assert err.value.code == 3
    assert err.value.device == "tc_walls"
    rig.plant.sync().faults.inject("thermocouple_break", "walls")
    reading = await tw.read_temperature()
    assert reading.sensor_break is True
    assert reading.pv_c is None


@pytest.mark.parametrize(("word_order", "units"), [("little", "C"), ("big", "F")])
async def test_watlow_word_order_and_units(
    plant: RealtimePlant, port: str, word_order: str, units: str
) -> None:
    unit = emu.WatlowPM(plant, 2, "walls", word_order=word_order, units=units)  # type: ignore[arg-type]
    bus = emu.ModbusRtuBus(port, [unit])
    await bus.start()
    ctx = DriverContext()
    right = watlow.create(
        "tw", {"port": port, "address": 2, "word_order": word_order, "units": units}, ctx
    )
    try:
        await right.connect()
        assert (await right.read_temperature()).pv_c == pytest.approx(WALLS_C, abs=0.5)
        await right.set_temperature(160.0)
        assert plant.sync().read_heater("walls").setpoint_c == pytest.approx(160.0)
    finally:
        await right.close()
        await bus.stop()


async def test_watlow_factory_defaults_on_both_sides_read_true_values(
    plant: RealtimePlant, port: str
) -> None:
    """A PM as it leaves the factory (low word first, degF over Modbus: EZ-ZONE
    Communications manual, Modbus chapter, p. 13) and a driver with no options agree."""
    unit = emu.WatlowPM(plant, 2, "walls")
    bus = emu.ModbusRtuBus(port, [unit])
    await bus.start()
    tw = watlow.create("tw", {"port": port, "address": 2}, DriverContext())
    try:
        await tw.connect()
        assert (await tw.read_temperature()).pv_c == pytest.approx(WALLS_C, abs=0.5)
        # 2494 Non-volatile Save switched off once at connect ("If using Modbus set
        # register 2494 to 59"): setpoint writes no longer wear the EEPROM
        assert unit.nonvolatile_save is False
        writes = unit.eeprom_writes
        for sp in (160.0, 161.0, 162.0):
            await tw.set_temperature(sp)
        assert unit.eeprom_writes == writes
        assert unit.sp_c == pytest.approx(162.0, abs=1e-3)
    finally:
        await tw.close()
        await bus.stop()


async def test_watlow_word_order_mismatch_is_a_device_error_never_a_value(
    plant: RealtimePlant, port: str
) -> None:
    bus = emu.ModbusRtuBus(port, [emu.WatlowPM(plant, 2, "walls", units="C")])
    await bus.start()
    tw = watlow.create(
        "tw", {"port": port, "address": 2, "word_order": "big", "units": "C"}, DriverContext()
    )
    try:
        with pytest.raises(DeviceFault, match=r"register 360 reads .*word order"):
            await tw.connect()  # 150 degC low word first, read high word first: 2.4e-41
    finally:
        await tw.close()
        await bus.stop()


async def test_watlow_units_are_checked_against_the_controller(
    plant: RealtimePlant, port: str
) -> None:
    bus = emu.ModbusRtuBus(port, [emu.WatlowPM(plant, 2, "walls")])  # degF on the wire
    await bus.start()
    tw = watlow.create("tw", {"port": port, "address": 2, "units": "C"}, DriverContext())
    try:
        with pytest.raises(DeviceFault, match=r"degrees F \(register 2490\).*units: C"):
            await tw.connect()
    finally:
        await tw.close()
        await bus.stop()


# --------------------------------------------------------------------------- ozone


async def test_ozone_on_setpoint_read_back_and_off(rig: Rig) -> None:
    oz = await rig.ozone()
    assert oz.range_pct == 20.0
    await oz.set_ozone(True, 10.0)
    st = rig.plant.sync().read_ozone()
    assert (st.on, st.setpoint_pct) == (True, 10.0)
    await asyncio.sleep(0.3)
    reading = await oz.read_ozone()
    assert reading.on is True
    assert reading.setpoint_pct == 10.0
    assert 0.05 < reading.concentration_pct < 10.0  # rising with the generator's lag
    assert reading.fault == ""
    await oz.safe_state()
    st = rig.plant.sync().read_ozone()
    assert (st.on, st.setpoint_pct) == (False, 0.0)
    assert (await oz.read_ozone()).on is False


async def test_ozone_refusal_and_latched_alarm(rig: Rig) -> None:
    oz = await rig.ozone()
    with pytest.raises(ModbusFault) as err:
        await oz.set_ozone(True, 25.0)  # above the generator's 20 wt %
    assert err.value.code == 3
    assert err.value.device == "ozone"
    rig.oz.delay = 1  # alarm delay 0.1 s, so the first-order lag trips it
    await oz.set_ozone(True, 12.0)
    await asyncio.sleep(0.2)
    assert "low-concentration alarm" in (await oz.read_ozone()).fault
    await oz.set_ozone(False, 0.0)
    await oz.reset_alarms()
    assert (await oz.read_ozone()).fault == ""


# --------------------------------------------------------------------------- the bus


async def test_two_heaters_and_the_ozone_generator_polled_at_once(rig: Rig) -> None:
    tc, tw, oz = await rig.eurotherm(), await rig.watlow(), await rig.ozone()
    await oz.set_ozone(True, 8.0)
    before = {u: u.requests for u in (rig.tc, rig.tw, rig.oz)}

    async def poll(read: Callable[[], Awaitable[Any]], n: int = 8) -> list[Any]:
        return [await read() for _ in range(n)]

    temps_sub, temps_walls, ozones = await asyncio.gather(
        poll(tc.read_temperature), poll(tw.read_temperature), poll(oz.read_ozone)
    )
    assert all(r.pv_c == pytest.approx(SUBSTRATE_C, abs=0.5) for r in temps_sub)
    assert all(r.setpoint_c == SUBSTRATE_C for r in temps_sub)
    assert all(r.pv_c == pytest.approx(WALLS_C, abs=0.5) for r in temps_walls)
    assert all(r.setpoint_c == WALLS_C for r in temps_walls)
    assert all(r.setpoint_pct == 8.0 and r.on for r in ozones)
    for dev in (tc, tw, oz):
        health = dev.health()
        assert health.failures == 0
        assert health.retries == 0
    # each unit saw exactly its own requests: 3 per Eurotherm read, 4 per Watlow, 2 ozone
    assert rig.tc.requests - before[rig.tc] == 8 * 3
    assert rig.tw.requests - before[rig.tw] == 8 * 4
    assert rig.oz.requests - before[rig.oz] == 8 * 2
    assert rig.bus.bad_frames == 0


async def test_unknown_unit_is_silent_and_times_out(rig: Rig) -> None:
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout) as err:
        await rig.eurotherm(address=7, retries=1)
    assert time.monotonic() - t0 < 1.0
    assert err.value.device == "tc_sub"
    assert rig.made[-1].health().timeouts == 2


async def test_a_silent_unit_times_out_and_the_others_still_answer(rig: Rig) -> None:
    tc, tw = await rig.eurotherm(), await rig.watlow()
    fault = rig.plant.sync().faults.inject("comm_timeout", "substrate")
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match="3 attempts") as err:
        await tc.read_temperature()
    assert 0.45 <= time.monotonic() - t0 < 1.2  # 3 x 0.15 s plus backoff
    assert err.value.device == "tc_sub"
    assert tc.health().timeouts == 3
    assert (await tw.read_temperature()).pv_c == pytest.approx(WALLS_C, abs=0.5)
    rig.plant.sync().faults.clear(fault)
    await tc.read_temperature()
    assert tc.health().consecutive_failures == 0


async def test_corrupt_crc_is_counted_retried_and_then_fails_cleanly(rig: Rig) -> None:
    tw = await rig.watlow(retries=2)
    fault = rig.plant.sync().faults.inject("corrupt_frame", "walls", probability=1.0)
    t0 = time.monotonic()
    with pytest.raises(CommunicationError, match="CRC") as err:
        await tw.read_temperature()
    assert time.monotonic() - t0 < 0.4  # rejected on arrival, not waited out
    assert err.value.device == "tc_walls"
    assert tw.health().bad_frames == 3
    rig.plant.sync().faults.clear(fault)
    await tw.read_temperature()


async def test_some_corrupt_frames_are_absorbed_by_the_retries(rig: Rig) -> None:
    tw = await rig.watlow(retries=5)
    rig.plant.sync().faults.inject("corrupt_frame", "walls", probability=0.3)
    for _ in range(6):
        reading = await tw.read_temperature()
        assert reading.pv_c == pytest.approx(WALLS_C, abs=0.5)
    health = tw.health()
    assert health.bad_frames > 0
    assert health.retries == health.bad_frames
    assert health.consecutive_failures == 0


async def test_line_noise_before_a_reply_is_retried_and_counted(rig: Rig) -> None:
    tc = await rig.eurotherm()
    rig.bus.inject_noise(b"\xff" * 40)  # what a cheap USB-RS485 adapter does
    reading = await tc.read_temperature()
    assert reading.pv_c == pytest.approx(SUBSTRATE_C, abs=0.5)
    health = tc.health()
    assert health.bad_frames == 1
    assert health.garbage_bytes >= 40
    assert health.retries == 1


async def test_late_replies_are_never_taken_for_another_request(rig: Rig) -> None:
    tw = await rig.watlow(timeout=0.1, retries=3)
    rig.plant.sync().faults.inject("timing_jitter", "walls", jitter_ms=120.0)
    answered = 0
    for _ in range(6):
        try:
            reading = await tw.read_temperature()
        except DeviceError:
            continue
        answered += 1
        assert reading.pv_c == pytest.approx(WALLS_C, abs=0.5)
        assert 0 <= reading.output_pct <= 100
        assert reading.setpoint_c == WALLS_C
    assert answered > 0
    assert tw.health().timeouts > 0


async def test_a_reply_after_the_timeout_is_not_the_answer_to_the_next_request(
    rig: Rig,
) -> None:
    # An RTU reply names neither the request nor the register: the late answer to "read
    # 122" (instrument id 0x3216) has the very shape of the answer to "read 107" (version
    # 0x0211). A one-register transaction takes ~9 ms at 19200 baud, so 6 ms always misses.
    impatient = await rig.eurotherm(timeout=0.006, retries=0, connect=False)
    with pytest.raises(DeviceTimeout):
        await impatient._unit.read_holding(122)
    patient = await rig.eurotherm(connect=False)
    assert await patient._unit.read_holding(107) == [0x0211]
    assert await patient._unit.read_holding(122) == [0x3216]


async def test_cable_pull_and_back_without_recreating_the_drivers(rig: Rig) -> None:
    tc, oz = await rig.eurotherm(retries=1), await rig.ozone(retries=1)
    await rig.bus.stop()
    with pytest.raises(CommunicationError, match="tc_sub"):
        await tc.read_temperature()
    with pytest.raises(CommunicationError, match="ozone"):
        await oz.read_ozone()
    assert not tc.health().connected
    await rig.bus.start()  # a new pseudo-terminal at the same path
    assert (await tc.read_temperature()).pv_c == pytest.approx(SUBSTRATE_C, abs=0.5)
    assert (await oz.read_ozone()).on is False
    assert tc.health().connected
    assert tc.health().reconnects + oz.health().reconnects >= 1
