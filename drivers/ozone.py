"""Ozone generator with a Modbus RTU interface (``OzoneGenerator``).

Driver ``ozone-modbus``. Options:

==============  ========  ===============================================================
``port``        required  serial port (device path, pty, or ``socket://host:port``)
``address``     required  Modbus address (1..247)
``baudrate``    19200     line settings, shared by every device on the port
``parity``      N
``stopbits``    1
``timeout``     0.5       s per attempt
``retries``     2         extra attempts for transient errors
==============  ========  ===============================================================

There is no public Modbus map for the generators found on ALD tools (MKS O3MEGA, IN USA,
Anseros, Absolute Ozone are mostly 0-10 V plus relays; protocols.md 8). This map is aldctl's
own: the generic "enable coil + analog setpoint + alarm status" generator protocols.md 8
recommends, floats IEEE-754 high word first in input registers (PDU addresses as in the
table). It does not follow any vendor's manual; in particular it is *not* the BMT 964
ozone analyzer's map (that one uses FC03 holding registers numbered from 1, protocols.md 8),
which an earlier version claimed. A gateway or PLC in front of a real generator can expose
exactly this map; ``sim.devices.modbus_rtu.OzoneGenerator`` emulates it.

============  ====  =========================================================
coil 0        RW    generator enable (high voltage on)
coil 1        W     alarm reset: writing 1 clears latched alarms
discrete 0-3  R     on, at setpoint, low-concentration alarm, high alarm
holding 0     RW    setpoint, 0.01 wt % O3 (above the generator's range: exception 03)
holding 1     RW    alarm band, 0.01 wt %
holding 2     RW    alarm delay after a setpoint change or switch-on, 0.1 s
input 0       R     status word: bit 0 on, bit 1 at setpoint, bit 2 low-concentration
                    alarm, bit 3 high-concentration alarm (latched until reset)
input 1-2     R     concentration, wt % O3 in O2, float
input 3-4     R     measuring range (the generator's maximum), float
input 25      R     unit code, 1 = wt %
============  ====  =========================================================

``set_ozone`` writes the setpoint before switching on and switches off before writing the
setpoint, so the generator never runs at a stale setpoint. ``read_ozone`` reads the status
word with the concentration (one request) and the setpoint; latched alarms are reported in
``OzoneReading.fault``. ``safe_state`` switches the generator off and the setpoint to 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from drivers.base import DeviceFault, DriverContext, Health, OzoneReading
from drivers.modbus_link import ModbusLink, ModbusUnit, Options, registers_to_float

__all__ = ["ModbusOzoneGenerator", "create"]

ENABLE = 0
ALARM_RESET = 1
SETPOINT = 0
STATUS = 0
STATUS_ON = 1 << 0
STATUS_LOW = 1 << 2
STATUS_HIGH = 1 << 3


class ModbusOzoneGenerator:
    """An ozone generator on Modbus RTU (see the module docstring)."""

    def __init__(self, name: str, unit: ModbusUnit) -> None:
        self.name = name
        self._unit = unit
        self.range_pct: float | None = None

    def health(self) -> Health:
        return self._unit.health

    async def connect(self) -> None:
        await self._unit.connect()
        regs = await self._unit.read_input(STATUS, 5)
        self.range_pct = registers_to_float(regs[3:5])

    async def close(self) -> None:
        await self._unit.close()

    async def set_ozone(self, on: bool, setpoint_pct: float) -> None:
        if not math.isfinite(setpoint_pct) or setpoint_pct < 0:
            raise DeviceFault(self.name, f"setpoint {setpoint_pct} wt % is not a concentration")
        word = round(setpoint_pct * 100)
        if word > 0xFFFF:
            raise DeviceFault(self.name, f"setpoint {setpoint_pct:g} wt % is out of range")
        if on:
            await self._unit.write_register(SETPOINT, word)
            await self._unit.write_coil(ENABLE, True)
        else:
            await self._unit.write_coil(ENABLE, False)
            await self._unit.write_register(SETPOINT, word)

    async def reset_alarms(self) -> None:
        """Clear latched alarms (they stay set while their condition lasts)."""
        await self._unit.write_coil(ALARM_RESET, True)

    async def read_ozone(self) -> OzoneReading:
        regs = await self._unit.read_input(STATUS, 3)
        (setpoint,) = await self._unit.read_holding(SETPOINT)
        status = regs[0]
        faults = []
        if status & STATUS_LOW:
            faults.append("low-concentration alarm")
        if status & STATUS_HIGH:
            faults.append("high-concentration alarm")
        return OzoneReading(
            on=bool(status & STATUS_ON),
            setpoint_pct=setpoint / 100,
            concentration_pct=registers_to_float(regs[1:3]),
            fault=", ".join(faults),
        )

    async def safe_state(self) -> None:
        await self.set_ozone(False, 0.0)


def create(name: str, options: Mapping[str, Any], ctx: DriverContext) -> ModbusOzoneGenerator:
    """Factory for the ``ozone-modbus`` entry point (options: see the module docstring)."""
    opts = Options(options)
    policy = opts.policy()
    endpoint = opts.serial_endpoint()
    address = opts.integer("address", None, 1, 247)
    opts.done("ozone-modbus")
    link = ModbusLink.shared(ctx, endpoint)
    link.claim(address, name, "address")
    return ModbusOzoneGenerator(name, ModbusUnit(name, link, address, policy, Health()))
