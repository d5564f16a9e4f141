"""The emulated Modbus RTU instruments, driven by minimalmodbus (2.1.1) over a pty.

minimalmodbus is synchronous; each exchange runs in a thread while the emulated bus serves
on the event loop. Nothing from ``drivers/`` is used.

* Eurotherm 3200: HA028651 Iss.7 section 15.5 "Parameter Modbus Addresses" (PV.IN = 1,
  Rm.SP = 26, L-R = 276, instrument id = 122); the IEEE float region at 0x8000 + 2 x
  parameter, high word first (protocols.md 2.1, the region other 32xx clients use).
* Watlow EZ-ZONE PM: EZ-ZONE Communications manual, chapter 2 "Modbus RTU & TCP", p. 13:
  temperatures in degrees F by default; "Register 2160 contains the two lower bytes (least
  significant word, LSW) while register 2161 contains the two higher bytes"; 2490
  communications units (30 degF, 15 degC); 2494 Non-volatile Save (106 yes, 59 no).
* The ozone generator: aldctl's own map (``drivers/ozone.py``), no vendor manual.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import minimalmodbus
import pytest

from sim.devices.modbus_rtu import Eurotherm3200, ModbusRtuBus, OzoneGenerator, WatlowPM
from sim.reactor import Reactor, ReactorConfig
from sim.realtime import RealtimePlant

SUBSTRATE_C = 200.0
WALLS_C = 150.0


@pytest.fixture
def plant() -> RealtimePlant:
    cfg = ReactorConfig.for_lines(["TMA", "O3"], substrate_c=SUBSTRATE_C, walls_c=WALLS_C)
    return RealtimePlant(Reactor(cfg, seed=2))


@pytest.fixture
async def bus(plant: RealtimePlant, tmp_path: Path) -> AsyncIterator[ModbusRtuBus]:
    emu = ModbusRtuBus(
        tmp_path / "rs485",
        [
            Eurotherm3200(plant, 1, "substrate"),
            WatlowPM(plant, 2, "walls"),  # as it leaves the factory
            OzoneGenerator(plant, 10),
        ],
    )
    await emu.start()
    yield emu
    await emu.stop()


def instrument(bus: ModbusRtuBus, address: int) -> minimalmodbus.Instrument:
    inst = minimalmodbus.Instrument(str(bus.path), address)
    inst.serial.baudrate = 19200
    inst.serial.timeout = 0.5
    inst.close_port_after_each_call = True
    return inst


async def test_eurotherm_integer_parameters(bus: ModbusRtuBus) -> None:
    euro = instrument(bus, 1)
    pv = await asyncio.to_thread(euro.read_register, 1, 1, signed=True)  # one decimal
    assert pv == pytest.approx(SUBSTRATE_C, abs=1.0)
    ident = await asyncio.to_thread(euro.read_register, 122)
    assert ident >> 8 == 0x32  # "32..." = 3200 series (protocols.md 2.1)
    await asyncio.to_thread(euro.write_register, 26, 210.5, 1, 6, True)  # Rm.SP
    assert await asyncio.to_thread(euro.read_register, 26, 1, 3, True) == 210.5


async def test_eurotherm_ieee_float_region(bus: ModbusRtuBus, plant: RealtimePlant) -> None:
    euro = instrument(bus, 1)
    pv = await asyncio.to_thread(euro.read_float, 0x8000 + 2 * 1)
    assert pv == pytest.approx(SUBSTRATE_C, abs=1.0)
    truth = plant.sync().read_heater("substrate").pv_c
    assert truth is not None
    assert pv == pytest.approx(truth, abs=0.5)
    await asyncio.to_thread(euro.write_float, 0x8000 + 2 * 26, 212.26)  # Rm.SP, FC16
    assert await asyncio.to_thread(euro.read_register, 26, 1, 3, True) == pytest.approx(212.3)
    assert await asyncio.to_thread(euro.read_float, 0x8000 + 2 * 26) == pytest.approx(212.3)
    with pytest.raises(minimalmodbus.IllegalRequestError):  # half a float
        await asyncio.to_thread(euro.write_register, 0x8000 + 2 * 26, 0x4354, 0, 6)


async def test_watlow_factory_word_order_and_units(bus: ModbusRtuBus) -> None:
    pm = instrument(bus, 2)
    low_word_first = minimalmodbus.BYTEORDER_LITTLE_SWAP  # CDAB: low word, then high word
    pv_f = await asyncio.to_thread(pm.read_float, 360, 3, 2, low_word_first)
    assert (pv_f - 32) / 1.8 == pytest.approx(WALLS_C, abs=1.0)  # degrees F by default
    assert await asyncio.to_thread(pm.read_register, 2490) == 30  # "30 for degF"
    # read high word first, the factory's float is not a temperature at all
    wrong = await asyncio.to_thread(pm.read_float, 360)
    assert not 100 < abs(wrong) < 1000 or math.isnan(wrong)
    await asyncio.to_thread(pm.write_float, 2160, 320.0, 2, low_word_first)  # 160 degC
    assert await asyncio.to_thread(pm.read_float, 2160, 3, 2, low_word_first) == 320.0


async def test_watlow_communications_units_and_nonvolatile_save(bus: ModbusRtuBus) -> None:
    pm = instrument(bus, 2)
    unit = bus.units[2]
    assert isinstance(unit, WatlowPM)
    assert await asyncio.to_thread(pm.read_register, 2494) == 106  # saves by default
    before = unit.eeprom_writes
    await asyncio.to_thread(pm.write_float, 2160, 330.0, 2, minimalmodbus.BYTEORDER_LITTLE_SWAP)
    assert unit.eeprom_writes == before + 1
    await asyncio.to_thread(pm.write_register, 2494, 59)  # "set register 2494 to 59"
    before = unit.eeprom_writes
    await asyncio.to_thread(pm.write_float, 2160, 340.0, 2, minimalmodbus.BYTEORDER_LITTLE_SWAP)
    assert unit.eeprom_writes == before
    await asyncio.to_thread(pm.write_register, 2490, 15)  # "15 for degC"
    pv_c = await asyncio.to_thread(pm.read_float, 360, 3, 2, minimalmodbus.BYTEORDER_LITTLE_SWAP)
    assert pv_c == pytest.approx(WALLS_C, abs=1.0)


async def test_ozone_generator_map(bus: ModbusRtuBus, plant: RealtimePlant) -> None:
    oz = instrument(bus, 10)
    await asyncio.to_thread(oz.write_register, 0, 800)  # 8.00 wt %
    await asyncio.to_thread(oz.write_bit, 0, 1)  # FC05 enable
    assert plant.sync().read_ozone().on is True
    rng = await asyncio.to_thread(oz.read_float, 3, 4)  # FC04, high word first
    assert rng == pytest.approx(plant.reactor.config.ozone.max_pct)  # type: ignore[union-attr]
    status = await asyncio.to_thread(oz.read_register, 0, 0, 4)
    assert status & 1 == 1
    await asyncio.to_thread(oz.write_bit, 0, 0)
    assert plant.sync().read_ozone().on is False


async def test_unknown_unit_is_silent(bus: ModbusRtuBus) -> None:
    stranger = instrument(bus, 7)
    stranger.serial.timeout = 0.1
    with pytest.raises(minimalmodbus.NoResponseError):
        await asyncio.to_thread(stranger.read_register, 1)
