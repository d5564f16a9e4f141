"""Eurotherm 3200 series (3216/3208/3204) temperature controller over Modbus RTU.

Driver ``eurotherm3200`` (``TemperatureController``). Options:

==============  ========  ===============================================================
``port``        required  serial port (device path, pty, or ``socket://host:port``)
``address``     required  Modbus address of the instrument (ADDR, 1..247)
``decimals``    1         display resolution DEC.P: the implied decimal places of every
                          temperature register (250.1 degC reads 2501 with 1)
``block_read``  true      read PV..WKG.SP (1-5) in one request; some units refuse block
                          reads, and the driver falls back to single reads by itself
``baudrate``    19200     line settings, shared by every device on the port
``parity``      N
``stopbits``    1
``timeout``     0.5       s per attempt
``retries``     2         extra attempts for transient errors
==============  ========  ===============================================================

Registers (FC03 read, FC06 write; the PDU address is the Eurotherm parameter number, as
every working driver uses it: HA028651 Iss.7 section 15.5, protocols.md 2.1):

====  ======  ======================================================================
1     PV.IN   process value (read)
4     WRK.OP  working output, 0.1 % (one decimal: not verified, see below)
5     WKG.SP  working setpoint (follows the ramp)
26    Rm.SP   remote (comms) setpoint: the register written on every setpoint change
35    SP.RAT  setpoint ramp rate, display units per minute, 0 = off (per minute: not
              verified, see below)
75    status  bit 5 sensor break, bit 13 ramp running
122   id      instrument identity (read at connect: proves the unit answers)
199   IM      instrument mode: 0 normal, 1 standby (outputs off: ``set_temperature(None)``)
276   L-R     0 local, 1 remote setpoint: set to 1 at ``connect``
====  ======  ======================================================================

The EEPROM-backed target setpoint (2, also SP1/SP2 at 24/25, about 100 000 writes) is never
written: setpoints go to the remote setpoint 26. At ``connect`` the remote setpoint is first
loaded with the working setpoint, then remote is selected, so taking over is bumpless.
Temperatures are signed 16-bit (two's complement below zero) with ``decimals`` places; a
setpoint that does not fit is refused before anything is sent.

Not verified against a manual, and why: the resolution of WRK.OP (4) and the time unit of
SP.RAT (35). The HA028651 section 15.5 page copy reached here lists parameter addresses, not
their scaling; the driver assumes one decimal for the output (as DLS's EPICS templates
scale it) and the ramp unit the 3200 ships with (per minute, parameter RAMP.U), which a
unit configured otherwise would scale by 60. Everything else in the table is from section
15.5. The IEEE float region (0x8000 + 2 x parameter) is not used by this driver.

``safe_state`` leaves the loop as it is (heaters hold their setpoint on abort; the engine
switches them to standby with ``set_temperature(None)`` when the tool is configured so).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from drivers.base import DeviceFault, DriverContext, Health, TemperatureReading
from drivers.modbus_link import ModbusFault, ModbusLink, ModbusUnit, Options, signed16, unsigned16

__all__ = ["Eurotherm3200", "create"]

PV = 1
WRK_OP = 4
WKG_SP = 5
RM_SP = 26
SP_RAT = 35
STATUS = 75
INSTRUMENT_ID = 122
IM = 199
L_R = 276

STATUS_SENSOR_BREAK = 1 << 5
STATUS_RAMPING = 1 << 13
MODE_NORMAL, MODE_STANDBY = 0, 1
ILLEGAL_ADDRESS, ILLEGAL_VALUE = 2, 3


class Eurotherm3200:
    """A Eurotherm 3200 loop (see the module docstring)."""

    def __init__(self, name: str, unit: ModbusUnit, *, decimals: int, block_read: bool) -> None:
        self.name = name
        self._unit = unit
        self.decimals = decimals
        self._scale = float(10**decimals)
        self.block_read = block_read

    def health(self) -> Health:
        return self._unit.health

    async def connect(self) -> None:
        await self._unit.connect()
        await self._unit.read_holding(INSTRUMENT_ID)
        (working,) = await self._unit.read_holding(WKG_SP)
        await self._unit.write_register(RM_SP, working)
        await self._unit.write_register(L_R, 1)

    async def close(self) -> None:
        await self._unit.close()

    async def safe_state(self) -> None:
        """Hold: a heater keeps its setpoint on abort (see the module docstring)."""

    def _word(self, what: str, value: float) -> int:
        if not math.isfinite(value):
            raise DeviceFault(self.name, f"{what} {value} is not a number")
        try:
            return unsigned16(round(value * self._scale))
        except ValueError:
            lim = 0x7FFF / self._scale
            msg = (
                f"{what} {value:g} does not fit the register (+-{lim:g} with DEC.P {self.decimals})"
            )
            raise DeviceFault(self.name, msg) from None

    def _value(self, word: int) -> float:
        return signed16(word) / self._scale

    async def set_temperature(self, setpoint_c: float | None) -> None:
        if setpoint_c is None:
            await self._unit.write_register(IM, MODE_STANDBY)
            return
        await self._unit.write_register(RM_SP, self._word("setpoint", setpoint_c))
        await self._unit.write_register(IM, MODE_NORMAL)

    async def set_ramp_rate(self, k_per_min: float | None) -> None:
        rate = k_per_min or 0.0
        if rate < 0:
            raise DeviceFault(self.name, f"ramp rate {rate:g} K/min is negative")
        await self._unit.write_register(SP_RAT, self._word("ramp rate", rate))

    async def read_temperature(self) -> TemperatureReading:
        if self.block_read:
            try:
                pv, _tg_sp, _man_op, output, working = await self._unit.read_holding(PV, 5)
            except ModbusFault as exc:
                if exc.code not in (ILLEGAL_ADDRESS, ILLEGAL_VALUE):
                    raise
                self.block_read = False  # this unit refuses block reads: from now on, singles
                return await self.read_temperature()
        else:
            (pv,) = await self._unit.read_holding(PV)
            (output,) = await self._unit.read_holding(WRK_OP)
            (working,) = await self._unit.read_holding(WKG_SP)
        (status,) = await self._unit.read_holding(STATUS)
        (mode,) = await self._unit.read_holding(IM)
        sensor_break = bool(status & STATUS_SENSOR_BREAK)
        return TemperatureReading(
            pv_c=None if sensor_break else self._value(pv),
            setpoint_c=None if mode == MODE_STANDBY else self._value(working),
            output_pct=signed16(output) / 10.0,
            sensor_break=sensor_break,
            ramping=bool(status & STATUS_RAMPING),
        )


def create(name: str, options: Mapping[str, Any], ctx: DriverContext) -> Eurotherm3200:
    """Factory for the ``eurotherm3200`` entry point (options: see the module docstring)."""
    opts = Options(options)
    policy = opts.policy()
    endpoint = opts.serial_endpoint()
    address = opts.integer("address", None, 1, 247)
    decimals = opts.integer("decimals", 1, 0, 3)
    block_read = opts.flag("block_read", True)
    opts.done("eurotherm3200")
    link = ModbusLink.shared(ctx, endpoint)
    link.claim(address, name, "address")
    unit = ModbusUnit(name, link, address, policy, Health())
    return Eurotherm3200(name, unit, decimals=decimals, block_read=block_read)
