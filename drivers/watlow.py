"""Watlow EZ-ZONE PM temperature controller over Modbus RTU (loop 1).

Driver ``watlow-pm`` (``TemperatureController``). The PM must have the Modbus RTU option and
be switched to Modbus (its factory protocol is Standard Bus, parameter 17009). Options:

==============  ========  ===============================================================
``port``        required  serial port (device path, pty, or ``socket://host:port``)
``address``     required  Modbus address (1..247)
``word_order``  little    float word order (Setup page, Communications menu): ``little``
                          low word first, the factory's; ``big`` high word first. A
                          mismatch reads as nonsense (150 degC as 2.4e-41): refused as
                          implausible, never taken as a value.
``units``       F         temperature scale on the wire (the PM's communications units,
                          register 2490), the factory's degrees F; checked against what
                          the controller reports at ``connect``
``sensor_min``  -200      plausible PV range in degC (default: a type K thermocouple's
``sensor_max``  1372      span); a reading outside it is a device error
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
                                             the ramp): aldctl's reading of the
                                             monitor, not verified (the register list
                                             names it; no manual page reached here
                                             says that it follows the ramp)
2186  Ramp Action                    enum    62 off, 85 ramp on a set point change
2188  Ramp Scale                     enum    57 minutes (set at connect if it differs)
2192  Ramp Rate                      float   degrees per minute
====  =============================  ======  =============================================

Factory defaults (EZ-ZONE Communications manual, chapter 2 "Modbus RTU & TCP", p. 13):
"All temperature parameters are in degF through Modbus by default", and floats are low word
first ("Register 2160 contains the two lower bytes (least significant word, LSW) while
register 2161 contains the two higher bytes"; the user guides: "By default, the low order
word contains the two low bytes of the 32-bit parameter"). Both are options; make them
explicit in a tool config (``config/example-lab.yaml``).

What the driver reads back at ``connect``:

* register 2490, communications temperature units (30 degF, 15 degC; firmware 2 and
  later): a controller that disagrees with ``units`` is refused with a ``DeviceFault``
  naming both (an exception 02 from older firmware leaves the option in charge);
* register 2494, Non-volatile Save (106 yes, 59 no): the Communications manual, "Saving
  Settings to Non-volatile Memory", says the EEPROM "will wear out after about 1,000,000
  writes" and that a host writing settings over the network can wear it; writing 2160 on
  every ``set_temperature`` with the save on would do exactly that (a setpoint a minute is
  a million writes in two years). The driver sets it to 59 (no) once, when it is not
  already, which is the manual's non-persistent route ("If using Modbus set register 2494
  to 59"; firmware 2 and later; older firmware answers 02 and the driver goes on, with the
  wear). The word order cannot be read back through the documented map: the plausibility
  check below is what catches a mismatch.

Every float the driver reads is checked before it is used: NaN, infinity, a denormal (a
word-order mismatch turns 150 degC into 2.4e-41), a PV outside ``sensor_min``..
``sensor_max`` (after the unit conversion), a setpoint outside the same span or a power
outside -100..100 % is a ``DeviceFault`` naming the register and the value, never a reading.

A reading with an input error reports ``pv_c=None`` and ``sensor_break``. ``safe_state``
leaves the loop as it is (heaters hold on abort; the engine turns them off with
``set_temperature(None)`` when configured to).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, cast

from drivers.base import DeviceFault, DriverContext, Health, OptionError, TemperatureReading
from drivers.modbus_link import (
    ModbusFault,
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

COMM_UNITS = 2490
NONVOLATILE_SAVE = 2494
UNITS_F, UNITS_C = 30, 15
SAVE_YES, SAVE_NO = 106, 59
ILLEGAL_ADDRESS = 2
FLOAT32_MIN_NORMAL = 1.1754944e-38
MODE_OFF, MODE_AUTO = 62, 10
RAMP_OFF, RAMP_ON_CHANGE = 62, 85
SCALE_MINUTES = 57
INPUT_OK = 61


class WatlowPM:
    """An EZ-ZONE PM loop (see the module docstring)."""

    def __init__(
        self,
        name: str,
        unit: ModbusUnit,
        *,
        word_order: WordOrder,
        units: Literal["C", "F"],
        sensor_range_c: tuple[float, float] = (-200.0, 1372.0),
    ) -> None:
        self.name = name
        self._unit = unit
        self.word_order: WordOrder = word_order
        self.units = units
        self.sensor_range_c = sensor_range_c

    def health(self) -> Health:
        return self._unit.health

    async def connect(self) -> None:
        await self._unit.connect()
        reported = await self._optional(COMM_UNITS)
        if reported is not None:
            theirs = {UNITS_F: "F", UNITS_C: "C"}.get(reported, f"code {reported}")
            if theirs != self.units:
                msg = (
                    f"the controller sends temperatures in degrees {theirs} (register 2490) "
                    f"but the config says units: {self.units}; set units: {theirs}"
                )
                raise DeviceFault(self.name, msg)
        save = await self._optional(NONVOLATILE_SAVE)
        if save is not None and save != SAVE_NO:
            await self._unit.write_register(NONVOLATILE_SAVE, SAVE_NO)
        self._temperature(PV, await self._read_float(PV))
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

    async def _optional(self, address: int) -> int | None:
        """A register older firmware may not have (exception 02: None)."""
        try:
            (word,) = await self._unit.read_holding(address)
        except ModbusFault as exc:
            if exc.code != ILLEGAL_ADDRESS:
                raise
            return None
        return word

    async def _read_float(self, address: int) -> float:
        regs = await self._unit.read_holding(address, 2)
        return self._plausible(address, registers_to_float(regs, self.word_order))

    def _plausible(self, address: int, value: float) -> float:
        if not math.isfinite(value) or (value != 0.0 and abs(value) < FLOAT32_MIN_NORMAL):
            msg = (
                f"register {address} reads {value!r}, not a number a PM sends: is the "
                f"controller's float word order really {self.word_order!r}?"
            )
            raise DeviceFault(self.name, msg)
        return value

    def _temperature(self, address: int, wire: float) -> float:
        c = self._from_wire(self._plausible(address, wire))
        lo, hi = self.sensor_range_c
        if not lo <= c <= hi:
            msg = (
                f"register {address} reads {c:.6g} degC, outside the sensor's {lo:g}..{hi:g} "
                f"degC: check the units ({self.units}) and word order ({self.word_order})"
            )
            raise DeviceFault(self.name, msg)
        return c

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
        sensor_break = ai[2] != INPUT_OK
        pv = None
        if not sensor_break:
            pv = self._temperature(PV, registers_to_float(ai[0:2], self.word_order))
        (mode,) = await self._unit.read_holding(CONTROL_MODE_ACTIVE)
        power = await self._read_float(HEAT_POWER)
        if not -100.0 <= power <= 100.0:
            raise DeviceFault(self.name, f"register {HEAT_POWER} reads {power:.6g} % power")
        sp = await self._unit.read_holding(SETPOINT, WORKING_SETPOINT + 2 - SETPOINT)
        target = self._temperature(SETPOINT, registers_to_float(sp[0:2], self.word_order))
        working = self._temperature(WORKING_SETPOINT, registers_to_float(sp[-2:], self.word_order))
        on = mode != MODE_OFF
        return TemperatureReading(
            pv_c=pv,
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
    word_order = cast(WordOrder, opts.text("word_order", "little", ("big", "little")))
    units = cast(Literal["C", "F"], opts.text("units", "F", ("C", "F")))
    lo = opts.number("sensor_min", -200.0, -273.15, 2500.0)
    hi = opts.number("sensor_max", 1372.0, -273.15, 2500.0)
    if lo >= hi:
        msg = "option 'sensor_min' must be below 'sensor_max'"
        raise OptionError("sensor_min", msg)
    opts.done("watlow-pm")
    link = ModbusLink.shared(ctx, endpoint)
    link.claim(address, name, "address")
    unit = ModbusUnit(name, link, address, policy, Health())
    return WatlowPM(name, unit, word_order=word_order, units=units, sensor_range_c=(lo, hi))
