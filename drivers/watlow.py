"""Watlow EZ-ZONE PM temperature controller over Modbus RTU (loop 1).

Driver ``watlow-pm`` (``TemperatureController``). The PM must have the Modbus RTU option and
be switched to Modbus (its factory protocol is Standard Bus, parameter 17009). Options:

==============  ========  ===============================================================
``port``        required  serial port (device path, pty, or ``socket://host:port``)
``address``     required  Modbus address (1..247)
``word_order``  big       float word order set by the PM's Data Map (16562): ``big`` high
                          word first, ``little`` low word first. A mismatch reads as
                          1e-12 or 1e34 degrees.
``units``       C         temperature scale on the wire (the PM's communications units)
``baudrate``    19200     line settings, shared by every device on the port
``parity``      N
``stopbits``    1
``timeout``     0.5       s per attempt
``retries``     2         extra attempts for transient errors
==============  ========  ===============================================================

Registers (FC03 read, FC06/FC16 write), EZ-ZONE PM "Map 1" relative addresses from the
EZ-ZONE register list (carried by ``GraysonBellamy/watlowlib``'s ``pm_parameters.json``;
360, 362, 1904 and 2160 in protocols.md 2.2). Floats are IEEE-754 in two registers, always
written whole with FC16; enumerations are read and written in the first register of their
pair:

====  =============================  ======  =============================================
360   Analog Input Value (PV)        float   R
362   Input Error                    enum    R; 61 none, anything else: sensor error
1880  Control Mode                   enum    62 off, 10 auto (``set_temperature(None)``
                                             switches the loop off); EEPROM-backed, so
                                             written only when it changes
1882  Control Mode Active            enum    R
1904  Heat Power                     float   R, %
2160  Closed Loop Set Point          float   the setpoint
2172  Closed-Loop Set Point monitor  float   R; read as the working setpoint (follows
                                             the ramp) [aldctl's reading of the monitor]
2186  Ramp Action                    enum    62 off, 85 ramp on a set point change
2188  Ramp Scale                     enum    57 minutes (set at connect if it differs)
2192  Ramp Rate                      float   degrees per minute
====  =============================  ======  =============================================

A reading with an input error reports ``pv_c=None`` and ``sensor_break``. ``safe_state``
leaves the loop as it is (heaters hold on abort; the engine turns them off with
``set_temperature(None)`` when configured to).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, cast

from drivers.base import DeviceFault, DriverContext, Health, TemperatureReading
from drivers.modbus_link import (
    ModbusLink,
    ModbusUnit,
    Options,
    WordOrder,
    float_to_registers,
    registers_to_float,
)

__all__ = ["WatlowPM", "create"]

PV = 360
INPUT_ERROR = 362
CONTROL_MODE = 1880
CONTROL_MODE_ACTIVE = 1882
HEAT_POWER = 1904
SETPOINT = 2160
WORKING_SETPOINT = 2172
RAMP_ACTION = 2186
RAMP_SCALE = 2188
RAMP_RATE = 2192

MODE_OFF, MODE_AUTO = 62, 10
RAMP_OFF, RAMP_ON_CHANGE = 62, 85
SCALE_MINUTES = 57
INPUT_OK = 61


class WatlowPM:
    """An EZ-ZONE PM loop (see the module docstring)."""

    def __init__(
        self, name: str, unit: ModbusUnit, *, word_order: WordOrder, units: Literal["C", "F"]
    ) -> None:
        self.name = name
        self._unit = unit
        self.word_order: WordOrder = word_order
        self.units = units

    def health(self) -> Health:
        return self._unit.health

    async def connect(self) -> None:
        await self._unit.connect()
        await self._read_float(PV)
        (scale,) = await self._unit.read_holding(RAMP_SCALE)
        if scale != SCALE_MINUTES:
            await self._unit.write_register(RAMP_SCALE, SCALE_MINUTES)

    async def close(self) -> None:
        await self._unit.close()

    async def safe_state(self) -> None:
        """Hold: a heater keeps its setpoint on abort (see the module docstring)."""

    # -- conversions ---------------------------------------------------------------------
    def _to_wire(self, c: float) -> float:
        return c * 1.8 + 32.0 if self.units == "F" else c

    def _from_wire(self, v: float) -> float:
        return (v - 32.0) / 1.8 if self.units == "F" else v

    async def _read_float(self, address: int) -> float:
        regs = await self._unit.read_holding(address, 2)
        return registers_to_float(regs, self.word_order)

    async def _write_float(self, address: int, value: float) -> None:
        await self._unit.write_registers(address, float_to_registers(value, self.word_order))

    async def _set_mode(self, mode: int) -> None:
        (current,) = await self._unit.read_holding(CONTROL_MODE)
        if current != mode:
            await self._unit.write_register(CONTROL_MODE, mode)

    # -- TemperatureController -----------------------------------------------------------
    async def set_temperature(self, setpoint_c: float | None) -> None:
        if setpoint_c is None:
            await self._set_mode(MODE_OFF)
            return
        if not math.isfinite(setpoint_c):
            raise DeviceFault(self.name, f"setpoint {setpoint_c} is not a number")
        await self._write_float(SETPOINT, self._to_wire(setpoint_c))
        await self._set_mode(MODE_AUTO)

    async def set_ramp_rate(self, k_per_min: float | None) -> None:
        rate = k_per_min or 0.0
        if not math.isfinite(rate) or rate < 0:
            raise DeviceFault(self.name, f"ramp rate {rate} K/min is not a rate")
        if rate == 0:
            await self._unit.write_register(RAMP_ACTION, RAMP_OFF)
            return
        await self._write_float(RAMP_RATE, rate * 1.8 if self.units == "F" else rate)
        await self._unit.write_register(RAMP_ACTION, RAMP_ON_CHANGE)

    async def read_temperature(self) -> TemperatureReading:
        ai = await self._unit.read_holding(PV, 4)
        pv = registers_to_float(ai[0:2], self.word_order)
        sensor_break = ai[2] != INPUT_OK
        (mode,) = await self._unit.read_holding(CONTROL_MODE_ACTIVE)
        power = await self._read_float(HEAT_POWER)
        sp = await self._unit.read_holding(SETPOINT, WORKING_SETPOINT + 2 - SETPOINT)
        target = self._from_wire(registers_to_float(sp[0:2], self.word_order))
        working = self._from_wire(registers_to_float(sp[-2:], self.word_order))
        on = mode != MODE_OFF
        return TemperatureReading(
            pv_c=None if sensor_break else self._from_wire(pv),
            setpoint_c=working if on else None,
            output_pct=power,
            sensor_break=sensor_break,
            ramping=on and abs(working - target) > 0.05,
        )


def create(name: str, options: Mapping[str, Any], ctx: DriverContext) -> WatlowPM:
    """Factory for the ``watlow-pm`` entry point (options: see the module docstring)."""
    opts = Options(options)
    policy = opts.policy()
    endpoint = opts.serial_endpoint()
    address = opts.integer("address", None, 1, 247)
    word_order = cast(WordOrder, opts.text("word_order", "big", ("big", "little")))
    units = cast(Literal["C", "F"], opts.text("units", "C", ("C", "F")))
    opts.done("watlow-pm")
    link = ModbusLink.shared(ctx, endpoint)
    unit = ModbusUnit(name, link, address, policy, Health())
    return WatlowPM(name, unit, word_order=word_order, units=units)
