"""One RS-485 bus of Modbus RTU instruments on a pseudo-terminal.

:class:`ModbusRtuBus` owns a pseudo-terminal (:class:`sim.devices.pty.PtyPort`) whose slave
end the drivers open like a serial port, and answers for several units by device id:
:class:`Eurotherm3200` and :class:`WatlowPM` temperature controllers bound to a heater of the
plant, and :class:`OzoneGenerator` bound to the plant's ozone generator. Example (what
``aldctl sim serve`` builds from ``config/hil.yaml``)::

    bus = ModbusRtuBus(
        "/tmp/aldctl-sim/rs485-heaters",
        [
            Eurotherm3200(plant, unit=1, heater="substrate"),
            WatlowPM(plant, unit=2, heater="walls"),
            OzoneGenerator(plant, unit=10),
        ],
    )
    await bus.start()
    ...
    await bus.stop()

Why the RTU framing is done here rather than by pymodbus' serial server: a real multi-drop
bus needs behaviour that pymodbus' server does not offer or gets wrong for this purpose
(protocols.md 9.1): a request for an absent unit must meet *silence* (pymodbus answers
exception 04 and logs a traceback); replies must take the time the wire takes at the bus
baud rate (a pty delivers instantly); the communication faults of each unit must act on
that unit's frames only (silence, a corrupted CRC, extra latency); and line noise must be
injectable between frames. Framing a request is small (function codes 1-6 have 8-byte
requests, 15 and 16 carry their byte count), so the bus frames requests itself, checks
their CRC with its own CRC-16/MODBUS (an implementation independent of pymodbus', so the
driver's CRC is checked against another one), and hands each unit the PDU.

Timing: the bus is half duplex and answers one request at a time. A request is taken as
received after its own transmission time; the unit then acts on it after
``turnaround_s`` and the reply is written after its transmission time, with
``10 / baudrate`` seconds per character (8N1). At 19200 baud a one-register read is 8 + 7
characters: about 9 ms per transaction, as on a real bus.

Communication faults (``reactor.faults.comm(unit.component)``), per unit: ``silent`` and
``disconnected`` make the unit not answer (on a shared RS-485 line a unit whose cable is
cut is simply absent; pulling the whole bus is :meth:`ModbusRtuBus.stop`), ``corrupt``
inverts the reply's CRC, jitter delays the reply. :meth:`ModbusRtuBus.inject_noise` puts
garbage bytes in front of the next reply (cheap USB-RS485 adapters do that, protocols.md 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

from sim.config import HeaterConfig
from sim.devices.pty import PtyPort
from sim.faults import CommFault
from sim.realtime import RealtimePlant

__all__ = [
    "UNIT_TYPES",
    "Eurotherm3200",
    "ModbusError",
    "ModbusRtuBus",
    "OzoneGenerator",
    "RtuUnit",
    "WatlowPM",
    "crc16",
]

ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3


def crc16(data: bytes) -> bytes:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), low byte first as on the wire."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes((crc & 0xFF, crc >> 8))


class ModbusError(Exception):
    """Raised by a unit to answer with a Modbus exception response."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# --------------------------------------------------------------------------- units


class RtuUnit:
    """A Modbus slave: turns a request PDU into a reply PDU from its register images.

    Subclasses describe themselves through four images (address -> value, what a read sees
    now; an address missing from an image is illegal, exception 02) and two write hooks.
    """

    readonly_code = ILLEGAL_VALUE
    """Exception for a write to a read-only register (vendor-specific)."""

    def __init__(self, plant: RealtimePlant, unit: int, component: str) -> None:
        if not 1 <= unit <= 247:
            msg = f"unit id {unit} is outside 1..247"
            raise ValueError(msg)
        self.plant = plant
        self.unit = unit
        self.component = component
        self.requests = 0

    # -- images (override) --------------------------------------------------------------
    def holding(self) -> dict[int, int]:
        return {}

    def inputs(self) -> dict[int, int]:
        return {}

    def coils(self) -> dict[int, bool]:
        return {}

    def discrete(self) -> dict[int, bool]:
        return {}

    def write_registers(self, updates: dict[int, int]) -> None:
        raise ModbusError(ILLEGAL_FUNCTION)

    def write_coils(self, updates: dict[int, bool]) -> None:
        raise ModbusError(ILLEGAL_FUNCTION)

    def check_read(self, function: int, address: int, count: int) -> None:
        """Hook: refuse a read the instrument would refuse (e.g. block reads)."""

    def comm_fault(self) -> CommFault | None:
        return self.plant.sync().faults.comm(self.component)

    # -- PDU handling --------------------------------------------------------------------
    def handle(self, pdu: bytes) -> bytes:
        """The reply PDU (or exception PDU) for one request PDU."""
        self.requests += 1
        fc = pdu[0]
        try:
            return self._dispatch(fc, pdu[1:])
        except ModbusError as exc:
            return bytes((fc | 0x80, exc.code))

    def _dispatch(self, fc: int, data: bytes) -> bytes:
        if fc in (1, 2, 3, 4):
            if len(data) != 4:
                raise ModbusError(ILLEGAL_VALUE)
            address, count = struct.unpack(">HH", data)
            limit = 2000 if fc <= 2 else 125
            if not 1 <= count <= limit:
                raise ModbusError(ILLEGAL_VALUE)
            self.check_read(fc, address, count)
            if fc <= 2:
                bits = _take(self.coils() if fc == 1 else self.discrete(), address, count)
                packed = _pack_bits(bits)
                return bytes((fc, len(packed))) + packed
            regs = _take(self.holding() if fc == 3 else self.inputs(), address, count)
            return bytes((fc, 2 * count)) + struct.pack(f">{count}H", *regs)
        if fc == 5:
            if len(data) != 4:
                raise ModbusError(ILLEGAL_VALUE)
            address, value = struct.unpack(">HH", data)
            if value not in (0x0000, 0xFF00):
                raise ModbusError(ILLEGAL_VALUE)
            self._check_exists(self.coils(), address, 1)
            self.write_coils({address: value == 0xFF00})
            return bytes((fc,)) + data
        if fc == 6:
            if len(data) != 4:
                raise ModbusError(ILLEGAL_VALUE)
            address, value = struct.unpack(">HH", data)
            self._check_exists(self.holding(), address, 1)
            self.write_registers({address: value})
            return bytes((fc,)) + data
        if fc in (15, 16):
            if len(data) < 5:
                raise ModbusError(ILLEGAL_VALUE)
            address, count, nbytes = struct.unpack(">HHB", data[:5])
            payload = data[5:]
            if fc == 15:
                if not 1 <= count <= 1968 or nbytes != (count + 7) // 8 or len(payload) != nbytes:
                    raise ModbusError(ILLEGAL_VALUE)
                self._check_exists(self.coils(), address, count)
                bits = _unpack_bits(payload, count)
                self.write_coils({address + i: b for i, b in enumerate(bits)})
            else:
                if not 1 <= count <= 123 or nbytes != 2 * count or len(payload) != nbytes:
                    raise ModbusError(ILLEGAL_VALUE)
                self._check_exists(self.holding(), address, count)
                values = struct.unpack(f">{count}H", payload)
                self.write_registers({address + i: v for i, v in enumerate(values)})
            return bytes((fc,)) + struct.pack(">HH", address, count)
        raise ModbusError(ILLEGAL_FUNCTION)

    @staticmethod
    def _check_exists(image: Mapping[int, object], address: int, count: int) -> None:
        if any(a not in image for a in range(address, address + count)):
            raise ModbusError(ILLEGAL_ADDRESS)


T = TypeVar("T")


def _take(image: Mapping[int, T], address: int, count: int) -> list[T]:
    try:
        return [image[a] for a in range(address, address + count)]
    except KeyError:
        raise ModbusError(ILLEGAL_ADDRESS) from None


def _pack_bits(bits: list[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _unpack_bits(data: bytes, count: int) -> list[bool]:
    return [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]


def _heater_config(plant: RealtimePlant, heater: str) -> HeaterConfig:
    for cfg in plant.reactor.config.heater_configs():
        if cfg.name == heater:
            return cfg
    msg = f"the plant has no heater {heater!r}; have {plant.reactor.heaters}"
    raise ValueError(msg)


# --------------------------------------------------------------------------- Eurotherm


class Eurotherm3200(RtuUnit):
    """Eurotherm 3216/3208/3204 (3200 series) loop on a heater of the plant.

    Constructor: ``Eurotherm3200(plant, unit, heater, *, component=None, decimals=1,
    block_reads=True)``; ``component`` is the fault target (default: the heater's name),
    ``decimals`` the display resolution (DEC.P) that scales the integer registers,
    ``block_reads=False`` makes multi-register reads fail with exception 02, as some units
    do (protocols.md 2.1).

    Registers (FC03 read, FC06/FC16 write; PDU address = Eurotherm parameter number; HA028651
    section 15.5, protocols.md 2.1). Temperatures are signed 16-bit with ``decimals`` implied
    decimal places:

    =====  =======  ==================================================================
    1      PV.IN    process value (R); reads -32768 while the sensor is broken [emulator]
    2      TG.SP    target setpoint = the selected SP1/SP2 (EEPROM, writes counted)
    3      MAN.OP   manual output, 0.1 % (stored; manual mode is not emulated)
    4      WRK.OP   working output, 0.1 % (R) [one decimal assumed, verify]
    5      WKG.SP   working setpoint, follows the ramp (R)
    15     SP.SEL   0 SP1, 1 SP2
    24/25  SP1/SP2  EEPROM setpoints (writes counted)
    26     Rm.SP    remote (comms) setpoint, used while L-R = 1; not EEPROM
    35     SP.RAT   setpoint ramp rate, display units per minute, 0 = off [per-minute
                    ramp units assumed, verify]
    75     status   bit 5 sensor break, bit 13 ramp running (R)
    107    version  0x0211 (R)
    111    SP.HI    setpoint high limit (EEPROM); default: the heater's max
    112    SP.LO    setpoint low limit (EEPROM); default 0
    122    id       instrument id 0x3216 (R)
    199    IM       instrument mode: 0 normal, 1 standby (loop off); 2 (configuration) is
                    refused with exception 03 [emulator]
    276    L-R      0 local setpoint (SP1/SP2), 1 remote (Rm.SP)
    =====  =======  ==================================================================

    A write to a read-only parameter, or a value outside its range or the setpoint limits,
    answers exception 03; an unknown parameter, exception 02.

    IEEE float region: every parameter above also reads as an IEEE-754 float, high word
    first, at ``0x8000 + 2 x parameter`` (two registers; FC03 read, FC16 write of both),
    the region other clients use on 32xx units (protocols.md 2.1 after
    ``thaeber/eurothermlib``; the Eurotherm 2000-series communications handbook describes
    the same region; the 3200 manual page copy reached here does not show it [verify]).
    Values are in engineering units at full resolution: the PV as the model measures it,
    temperatures and outputs without the implied decimals; a broken sensor reads NaN
    [emulator]. A write of a float is rounded to the display resolution and then acts
    exactly as the integer write would.
    """

    readonly_code = ILLEGAL_VALUE

    def __init__(
        self,
        plant: RealtimePlant,
        unit: int,
        heater: str,
        *,
        component: str | None = None,
        decimals: int = 1,
        block_reads: bool = True,
    ) -> None:
        super().__init__(plant, unit, component or heater)
        if not 0 <= decimals <= 3:
            msg = "decimals must be 0..3"
            raise ValueError(msg)
        cfg = _heater_config(plant, heater)
        self.heater = heater
        self.decimals = decimals
        self._scale = float(10**decimals)
        self.block_reads = block_reads
        st = plant.sync().read_heater(heater)
        sp = st.setpoint_c if st.setpoint_c is not None else 0.0
        self.sp = [self._word(sp), self._word(sp)]
        self.sp_sel = 0
        self.rm_sp = self._word(sp)
        self.lr = 0
        self.im = 0 if st.setpoint_c is not None else 1
        self.ramp = 0
        self.man_op = 0
        self.sp_hi = self._word(cfg.max_c)
        self.sp_lo = 0
        self.eeprom_writes = 0
        self._commanded: tuple[float | None, float | None] = (st.setpoint_c, None)

    def _word(self, value: float) -> int:
        scaled = round(value * self._scale)
        return max(-0x8000, min(0x7FFF, scaled)) & 0xFFFF

    def _value(self, word: int) -> float:
        return (word - 0x10000 if word & 0x8000 else word) / self._scale

    def _target(self) -> int:
        return self.rm_sp if self.lr else self.sp[self.sp_sel]

    def check_read(self, function: int, address: int, count: int) -> None:
        if function != 3:
            raise ModbusError(ILLEGAL_FUNCTION)
        if count > 1 and not self.block_reads:
            raise ModbusError(ILLEGAL_ADDRESS)

    def holding(self) -> dict[int, int]:
        st = self.plant.sync().read_heater(self.heater)
        image = self._integers()
        for param, word in list(image.items()):
            if param == 1:
                value = math.nan if st.pv_c is None else st.pv_c
            elif param in _EURO_SCALED:
                value = self._value(word)
            elif param in _EURO_TENTHS:
                value = word / 10.0
            else:
                value = float(word)
            hi, lo = struct.unpack(">HH", struct.pack(">f", value))
            image[_EURO_FLOAT + 2 * param] = hi
            image[_EURO_FLOAT + 2 * param + 1] = lo
        return image

    def _integers(self) -> dict[int, int]:
        st = self.plant.sync().read_heater(self.heater)
        status = (0x20 if st.sensor_break else 0) | (0x2000 if st.ramping else 0)
        working = self._word(st.setpoint_c) if st.setpoint_c is not None else self._target()
        return {
            1: 0x8000 if st.pv_c is None else self._word(st.pv_c),
            2: self.sp[self.sp_sel],
            3: self.man_op,
            4: max(0, min(1000, round(st.output_pct * 10))),
            5: working,
            15: self.sp_sel,
            24: self.sp[0],
            25: self.sp[1],
            26: self.rm_sp,
            35: self.ramp,
            75: status,
            107: 0x0211,
            111: self.sp_hi,
            112: self.sp_lo,
            122: 0x3216,
            199: self.im,
            276: self.lr,
        }

    def write_registers(self, updates: dict[int, int]) -> None:
        for address in updates:
            odd = (address - _EURO_FLOAT) % 2
            if address >= _EURO_FLOAT and odd and address - 1 not in updates:
                raise ModbusError(ILLEGAL_VALUE)  # the second half of a float alone
        for address, word in sorted(updates.items()):
            if address < _EURO_FLOAT:
                self._write(address, word)
                continue
            param, half = divmod(address - _EURO_FLOAT, 2)
            if half:
                continue  # taken with the first half
            second = updates.get(address + 1)
            if second is None:
                raise ModbusError(ILLEGAL_VALUE)  # half a float
            (value,) = struct.unpack(">f", struct.pack(">HH", word, second))
            if not math.isfinite(value):
                raise ModbusError(ILLEGAL_VALUE)
            if param in _EURO_SCALED:
                self._write(param, self._word(value))
            elif param in _EURO_TENTHS:
                self._write(param, round(value * 10) & 0xFFFF)
            else:
                self._write(param, round(value) & 0xFFFF)
        self._command()

    def _in_limits(self, word: int) -> int:
        if not self._value(self.sp_lo) <= self._value(word) <= self._value(self.sp_hi):
            raise ModbusError(ILLEGAL_VALUE)
        return word

    def _write(self, address: int, word: int) -> None:
        if address in (2, 24, 25):
            index = self.sp_sel if address == 2 else address - 24
            self.sp[index] = self._in_limits(word)
            self.eeprom_writes += 1
        elif address == 26:
            self.rm_sp = self._in_limits(word)
        elif address == 3:
            if word > 1000:
                raise ModbusError(ILLEGAL_VALUE)
            self.man_op = word
        elif address == 35:
            if word & 0x8000:
                raise ModbusError(ILLEGAL_VALUE)
            self.ramp = word
        elif address in (111, 112):
            hi, lo = (word, self.sp_lo) if address == 111 else (self.sp_hi, word)
            if self._value(lo) >= self._value(hi):
                raise ModbusError(ILLEGAL_VALUE)
            self.sp_hi, self.sp_lo = hi, lo
            self.eeprom_writes += 1
        elif address in (15, 199, 276):
            if word not in (0, 1):
                raise ModbusError(ILLEGAL_VALUE)
            if address == 15:
                self.sp_sel = word
            elif address == 199:
                self.im = word
            else:
                self.lr = word
        else:
            raise ModbusError(self.readonly_code)

    def _command(self) -> None:
        target = None if self.im == 1 else self._value(self._target())
        ramp = self._value(self.ramp) or None
        if (target, ramp) != self._commanded:
            self._commanded = (target, ramp)
            self.plant.sync().set_heater(self.heater, target, ramp)


_EURO_FLOAT = 0x8000
_EURO_SCALED = frozenset((1, 2, 5, 24, 25, 26, 35, 111, 112))
"""Parameters in display units, carrying DEC.P implied decimals on the integer path."""
_EURO_TENTHS = frozenset((3, 4))
"""Output powers in 0.1 % on the integer path."""


# --------------------------------------------------------------------------- Watlow

_WATLOW_OFF, _WATLOW_AUTO, _WATLOW_MANUAL = 62, 10, 54
_RAMP_OFF, _RAMP_STARTUP, _RAMP_SP_CHANGE, _RAMP_BOTH = 62, 88, 85, 13
_SCALE_HOURS, _SCALE_MINUTES = 39, 57
_INPUT_OK, _INPUT_OPEN = 61, 65
_UNITS_F, _UNITS_C = 30, 15
_NVS_YES, _NVS_NO = 106, 59


class WatlowPM(RtuUnit):
    """Watlow EZ-ZONE PM (Modbus RTU option, loop 1) on a heater of the plant.

    Constructor: ``WatlowPM(plant, unit, heater, *, component=None, word_order="little",
    units="F", nonvolatile_save=True)``; ``word_order`` is the float word order ("little":
    low word first), ``units`` the temperature scale on the wire ("C" or "F"). The defaults
    are the factory's (EZ-ZONE Communications manual, chapter 2 "Modbus RTU & TCP", p. 13:
    "All temperature parameters are in degF through Modbus by default", and register 2160
    "contains the two lower bytes (least significant word)" with 2161 the higher ones; the
    EZ-ZONE user guides: "By default, the low order word contains the two low bytes of the
    32-bit parameter ... the default low/high").

    Holding registers (FC03/FC06/FC16), EZ-ZONE PM "Map 1" relative addresses from the
    EZ-ZONE register list (as carried by ``GraysonBellamy/watlowlib``'s
    ``pm_parameters.json``; 360/362/1904/2160 also in protocols.md 2.2). Floats are IEEE-754
    in two registers and must be written whole (one FC16); enumerations sit in the first
    register of their pair (the second reads 0):

    ====  =============================  =====  ========================================
    360   Analog Input Value (PV)        float  R; holds the last good value on error
    362   Input Error                    enum   R; 61 none, 65 open (sensor break)
    1880  Control Mode                   enum   62 off, 10 auto (54 manual: exception 03,
                                                manual power is not emulated)
    1882  Control Mode Active            enum   R
    1904  Heat Power                     float  R, %
    2160  Closed Loop Set Point          float  within 2164..2166
    2162  Open Loop Set Point            float  %, stored
    2164  Minimum Set Point              float  default 0 degC
    2166  Maximum Set Point              float  default: the heater's max
    2168  Minimum Manual Power           float  %, stored
    2170  Maximum Manual Power           float  %, stored
    2172  Closed-Loop Set Point monitor  float  R; the working set point (follows the ramp)
                                                [this reading of the monitor is aldctl's]
    2186  Ramp Action                    enum   62 off, 88 startup, 85 set point change,
                                                13 both (85 and 13 ramp on a change)
    2188  Ramp Scale                     enum   39 hours, 57 minutes
    2190  Ramp Set Point monitor         float  R
    2192  Ramp Rate                      float  degrees per Ramp Scale unit, >= 0
    2198  Ramp Target Set Point monitor  float  R
    2490  Communications temperature     enum   30 degF, 15 degC (the scale on the wire;
          units                                 Communications manual p. 13, firmware 2+)
    2494  Non-volatile Save              enum   106 yes (factory), 59 no (Communications
                                                manual, "Saving Settings to Non-volatile
                                                Memory": EEPROM wears after about
                                                1,000,000 writes)
    ====  =============================  =====  ========================================

    While Non-volatile Save is yes, every write of a setpoint, limit, mode or ramp setting
    counts as an EEPROM write (``eeprom_writes``); with no, none does (2494 itself always
    does).

    Exceptions: 02 for an unknown address and for a write to a read-only parameter
    [aldctl's choice: watlowlib maps 01/02 to "parameter unsupported"], 03 for a value out
    of range or half a float.
    """

    readonly_code = ILLEGAL_ADDRESS

    def __init__(
        self,
        plant: RealtimePlant,
        unit: int,
        heater: str,
        *,
        component: str | None = None,
        word_order: Literal["big", "little"] = "little",
        units: Literal["C", "F"] = "F",
        nonvolatile_save: bool = True,
    ) -> None:
        super().__init__(plant, unit, component or heater)
        if word_order not in ("big", "little") or units not in ("C", "F"):
            msg = "word_order must be big|little and units C|F"
            raise ValueError(msg)
        cfg = _heater_config(plant, heater)
        self.heater = heater
        self.word_order = word_order
        self.units = units
        st = plant.sync().read_heater(heater)
        self.mode = _WATLOW_AUTO if st.setpoint_c is not None else _WATLOW_OFF
        self.sp_c = st.setpoint_c if st.setpoint_c is not None else cfg.start_c or 25.0
        self.open_loop = 0.0
        self.sp_lo_c = 0.0
        self.sp_hi_c = cfg.max_c
        self.man_lo = 0.0
        self.man_hi = 100.0
        self.ramp_action = _RAMP_OFF
        self.ramp_scale = _SCALE_MINUTES
        self.ramp_rate = 1.0
        self.last_pv_c = st.pv_c if st.pv_c is not None else self.sp_c
        self.nonvolatile_save = nonvolatile_save
        self.eeprom_writes = 0
        self._commanded: tuple[float | None, float | None] = (st.setpoint_c, None)

    # -- units on the wire ---------------------------------------------------------------
    def _t_out(self, c: float) -> float:
        return c * 1.8 + 32.0 if self.units == "F" else c

    def _t_in(self, v: float) -> float:
        return (v - 32.0) / 1.8 if self.units == "F" else v

    def _rate_k_per_min(self) -> float:
        per_unit = self.ramp_rate / 1.8 if self.units == "F" else self.ramp_rate
        return per_unit / 60.0 if self.ramp_scale == _SCALE_HOURS else per_unit

    def _float(self, value: float) -> tuple[int, int]:
        hi, lo = struct.unpack(">HH", struct.pack(">f", value))
        return (hi, lo) if self.word_order == "big" else (lo, hi)

    def _unfloat(self, first: int, second: int) -> float:
        hi, lo = (first, second) if self.word_order == "big" else (second, first)
        value: float = struct.unpack(">f", struct.pack(">HH", hi, lo))[0]
        if not math.isfinite(value):
            raise ModbusError(ILLEGAL_VALUE)
        return value

    def _floats(self) -> tuple[dict[int, float], bool]:
        st = self.plant.sync().read_heater(self.heater)
        if st.pv_c is not None:
            self.last_pv_c = st.pv_c
        working = st.setpoint_c if st.setpoint_c is not None else self.sp_c
        return {
            360: self._t_out(self.last_pv_c),
            1904: st.output_pct,
            2160: self._t_out(self.sp_c),
            2162: self.open_loop,
            2164: self._t_out(self.sp_lo_c),
            2166: self._t_out(self.sp_hi_c),
            2168: self.man_lo,
            2170: self.man_hi,
            2172: self._t_out(working),
            2190: self._t_out(working),
            2192: self.ramp_rate,
            2198: self._t_out(self.sp_c),
        }, st.sensor_break

    def holding(self) -> dict[int, int]:
        floats, sensor_break = self._floats()
        image: dict[int, int] = {}
        for address, value in floats.items():
            image[address], image[address + 1] = self._float(value)
        enums = {
            2490: _UNITS_F if self.units == "F" else _UNITS_C,
            2494: _NVS_YES if self.nonvolatile_save else _NVS_NO,
            362: _INPUT_OPEN if sensor_break else _INPUT_OK,
            1880: self.mode,
            1882: self.mode,
            2186: self.ramp_action,
            2188: self.ramp_scale,
        }
        for address, value in enums.items():
            image[address], image[address + 1] = value, 0
        return image

    def write_registers(self, updates: dict[int, int]) -> None:
        writable_floats = (2160, 2162, 2164, 2166, 2168, 2170, 2192)
        writable_enums = (1880, 2186, 2188, 2490, 2494)
        pending = dict(updates)
        for address in sorted(updates):
            if address not in pending:
                continue
            if address in writable_floats:
                if address + 1 not in pending:
                    raise ModbusError(ILLEGAL_VALUE)
                value = self._unfloat(pending.pop(address), pending.pop(address + 1))
                self._write_float(address, value)
            elif address in writable_enums:
                self._write_enum(address, pending.pop(address))
                if pending.pop(address + 1, 0) != 0:
                    raise ModbusError(ILLEGAL_VALUE)
            elif address - 1 in writable_floats:
                raise ModbusError(ILLEGAL_VALUE)  # the low half of a float on its own
            else:
                raise ModbusError(self.readonly_code)
            if self.nonvolatile_save or address == 2494:
                self.eeprom_writes += 1
        self._command()

    def _write_float(self, address: int, value: float) -> None:
        if address == 2160:
            c = self._t_in(value)
            if not self.sp_lo_c <= c <= self.sp_hi_c:
                raise ModbusError(ILLEGAL_VALUE)
            self.sp_c = c
        elif address in (2164, 2166):
            lo, hi = (
                (self._t_in(value), self.sp_hi_c)
                if address == 2164
                else (self.sp_lo_c, self._t_in(value))
            )
            if lo >= hi:
                raise ModbusError(ILLEGAL_VALUE)
            self.sp_lo_c, self.sp_hi_c = lo, hi
        elif address == 2192:
            if value < 0:
                raise ModbusError(ILLEGAL_VALUE)
            self.ramp_rate = value
        else:
            if not -100.0 <= value <= 100.0:
                raise ModbusError(ILLEGAL_VALUE)
            if address == 2162:
                self.open_loop = value
            elif address == 2168:
                self.man_lo = value
            else:
                self.man_hi = value

    def _write_enum(self, address: int, value: int) -> None:
        if address == 2490:
            if value not in (_UNITS_F, _UNITS_C):
                raise ModbusError(ILLEGAL_VALUE)
            self.units = "F" if value == _UNITS_F else "C"
        elif address == 2494:
            if value not in (_NVS_YES, _NVS_NO):
                raise ModbusError(ILLEGAL_VALUE)
            self.nonvolatile_save = value == _NVS_YES
        elif address == 1880:
            if value not in (_WATLOW_OFF, _WATLOW_AUTO):
                raise ModbusError(ILLEGAL_VALUE)
            self.mode = value
        elif address == 2186:
            if value not in (_RAMP_OFF, _RAMP_STARTUP, _RAMP_SP_CHANGE, _RAMP_BOTH):
                raise ModbusError(ILLEGAL_VALUE)
            self.ramp_action = value
        else:
            if value not in (_SCALE_HOURS, _SCALE_MINUTES):
                raise ModbusError(ILLEGAL_VALUE)
            self.ramp_scale = value

    def _command(self) -> None:
        target = self.sp_c if self.mode == _WATLOW_AUTO else None
        ramping = self.ramp_action in (_RAMP_SP_CHANGE, _RAMP_BOTH) and self.ramp_rate > 0
        ramp = self._rate_k_per_min() if ramping else None
        if (target, ramp) != self._commanded:
            self._commanded = (target, ramp)
            self.plant.sync().set_heater(self.heater, target, ramp)


# --------------------------------------------------------------------------- ozone

_OZ_ON, _OZ_READY, _OZ_LOW, _OZ_HIGH = 0x01, 0x02, 0x04, 0x08


class OzoneGenerator(RtuUnit):
    """An ozone generator with a Modbus RTU interface, driving the plant's ozone generator.

    Constructor: ``OzoneGenerator(plant, unit, *, component="ozone")``.

    There is no public register map for the generators used on ALD tools (protocols.md 8);
    this one is aldctl's own, a generic "enable coil + analog setpoint + alarm" generator
    (IEEE floats high word first in input registers), documented with ``drivers.ozone``.
    It follows no vendor's manual (it is not the BMT 964 analyzer's map, which uses FC03
    holding registers numbered from 1).

    ============  ====  =========================================================
    coil 0        RW    generator enable (high voltage on)
    coil 1        W     alarm reset: writing 1 clears latched alarms; reads 0
    discrete 0-3  R     on, at setpoint, low-concentration alarm, high alarm
    holding 0     RW    setpoint, 0.01 wt % O3 (0..max: above it, exception 03)
    holding 1     RW    alarm band, 0.01 wt % (default 100 = 1 wt %)
    holding 2     RW    alarm delay after a setpoint change or switch-on, 0.1 s
                        (default 300 = 30 s)
    input 0       R     status word: bit 0 on, 1 at setpoint (within the band),
                        2 low-concentration alarm, 3 high-concentration alarm
    input 1-2     R     concentration, wt % O3 in O2, float
    input 3-4     R     measuring range (the generator's maximum), float
    input 25      R     concentration unit code, 1 = wt %
    ============  ====  =========================================================

    The alarms latch: once the alarm delay has passed, a concentration below (above) the
    setpoint by more than the band sets the low (high) alarm until it is reset with the
    condition gone. A write to a read-only register answers exception 02.
    """

    readonly_code = ILLEGAL_ADDRESS

    def __init__(self, plant: RealtimePlant, unit: int, *, component: str = "ozone") -> None:
        super().__init__(plant, unit, component)
        if plant.reactor.config.ozone is None:
            msg = "the plant has no ozone generator"
            raise ValueError(msg)
        self.max_pct = plant.reactor.config.ozone.max_pct
        st = plant.sync().read_ozone()
        self.on = st.on
        self.setpoint = round(st.setpoint_pct * 100)
        self.band = 100
        self.delay = 300
        self.alarms = 0
        self.changed_at = plant.now()

    def _status(self) -> tuple[int, float]:
        st = self.plant.sync().read_ozone()
        c = st.concentration_pct
        sp = self.setpoint / 100
        band = self.band / 100
        settled = self.plant.now() - self.changed_at >= self.delay / 10
        if self.on and settled:
            if c < sp - band:
                self.alarms |= _OZ_LOW
            if c > sp + band:
                self.alarms |= _OZ_HIGH
        word = self.alarms
        if self.on:
            word |= _OZ_ON
            if abs(c - sp) <= band:
                word |= _OZ_READY
        return word, c

    def coils(self) -> dict[int, bool]:
        return {0: self.on, 1: False}

    def discrete(self) -> dict[int, bool]:
        word, _ = self._status()
        return {i: bool(word >> i & 1) for i in range(4)}

    def holding(self) -> dict[int, int]:
        return {0: self.setpoint, 1: self.band, 2: self.delay}

    def inputs(self) -> dict[int, int]:
        word, c = self._status()
        conc = struct.unpack(">HH", struct.pack(">f", c))
        rng = struct.unpack(">HH", struct.pack(">f", self.max_pct))
        return {0: word, 1: conc[0], 2: conc[1], 3: rng[0], 4: rng[1], 25: 1}

    def write_coils(self, updates: dict[int, bool]) -> None:
        if updates.get(1):
            self._status()
            self.alarms = 0
        if 0 in updates and updates[0] != self.on:
            self.on = updates[0]
            self._apply()

    def write_registers(self, updates: dict[int, int]) -> None:
        for address, value in updates.items():
            if address == 0:
                if value > round(self.max_pct * 100):
                    raise ModbusError(ILLEGAL_VALUE)
            elif address in (1, 2):
                if value == 0:
                    raise ModbusError(ILLEGAL_VALUE)
            else:
                raise ModbusError(self.readonly_code)
        if 1 in updates:
            self.band = updates[1]
        if 2 in updates:
            self.delay = updates[2]
        if 0 in updates and updates[0] != self.setpoint:
            self.setpoint = updates[0]
            self._apply()

    def _apply(self) -> None:
        self.changed_at = self.plant.now()
        self.plant.sync().set_ozone(self.on, self.setpoint / 100)


UNIT_TYPES: dict[str, type[RtuUnit]] = {
    "eurotherm3200": Eurotherm3200,
    "watlow-pm": WatlowPM,
    "ozone-modbus": OzoneGenerator,
}
"""The emulated unit for each Modbus RTU driver name of a tool configuration (``driver:`` in
``config/hil.yaml``), so a server can build a bus from the devices that share a ``port``."""


# --------------------------------------------------------------------------- the bus

_FIXED_LENGTH = {1: 8, 2: 8, 3: 8, 4: 8, 5: 8, 6: 8}
_COUNTED = (15, 16)


class ModbusRtuBus:
    """One RS-485 line on a pseudo-terminal, with its units (see the module docstring).

    Constructor: ``ModbusRtuBus(path, units, *, baudrate=19200, turnaround_s=0.0015)``;
    ``path`` is where the serial port appears (the drivers' ``port`` option), ``units`` the
    instruments on the line (distinct unit ids), ``baudrate`` sets the time each character
    takes on the wire, ``turnaround_s`` each instrument's processing time.
    """

    def __init__(
        self,
        path: str | Path,
        units: Iterable[RtuUnit],
        *,
        baudrate: int = 19200,
        turnaround_s: float = 0.0015,
    ) -> None:
        self.path = Path(path)
        self.units: dict[int, RtuUnit] = {}
        for u in units:
            if u.unit in self.units:
                msg = f"two units with id {u.unit} on {self.path}"
                raise ValueError(msg)
            self.units[u.unit] = u
        if baudrate <= 0 or turnaround_s < 0:
            msg = "baudrate must be > 0 and turnaround_s >= 0"
            raise ValueError(msg)
        self.char_s = 10.0 / baudrate
        self.turnaround_s = turnaround_s
        self.gap_s = max(3.5 * self.char_s, 0.005)
        """Silence that ends a frame (t3.5, at least 5 ms: pty writes may split)."""
        self.frames = 0
        self.bad_frames = 0
        """Requests dropped for a bad CRC or a length the bus cannot frame."""
        self._port: PtyPort | None = None
        self._buf = bytearray()
        self._gap: asyncio.TimerHandle | None = None
        self._queue: asyncio.Queue[bytes] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._noise = b""

    @property
    def running(self) -> bool:
        return self._port is not None

    async def start(self) -> None:
        """Create the pseudo-terminal at ``path`` and answer requests."""
        if self._port is not None:
            return
        self._queue = asyncio.Queue()
        self._buf.clear()
        self._port = PtyPort(self.path)
        self._port.start(self._on_data)
        self._worker = asyncio.get_running_loop().create_task(
            self._serve(), name=f"modbus rtu bus {self.path}"
        )

    async def stop(self) -> None:
        """Pull the cable: the pseudo-terminal disappears (drivers see the port fail)."""
        if self._gap is not None:
            self._gap.cancel()
            self._gap = None
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._port is not None:
            self._port.close()
            self._port = None
        self._queue = None

    def inject_noise(self, data: bytes = b"\xff" * 8) -> None:
        """Put ``data`` on the line right before the next reply (line noise)."""
        self._noise += data

    # -- receive: frame the requests ---------------------------------------------------
    def _on_data(self, chunk: bytes) -> None:
        self._buf += chunk
        self._extract()
        if self._gap is not None:
            self._gap.cancel()
        self._gap = (
            asyncio.get_running_loop().call_later(self.gap_s, self._silence) if self._buf else None
        )

    def _extract(self) -> None:
        while len(self._buf) >= 2:
            fc = self._buf[1]
            if fc in _FIXED_LENGTH:
                need = _FIXED_LENGTH[fc]
            elif fc in _COUNTED:
                if len(self._buf) < 7:
                    return
                need = 9 + self._buf[6]
            else:
                return  # unknown length: the silence after it delimits it
            if len(self._buf) < need:
                return
            frame = bytes(self._buf[:need])
            if crc16(frame[:-2]) != frame[-2:]:
                # a real slave drops the frame and resynchronises on the next silence
                self.bad_frames += 1
                self._buf.clear()
                return
            del self._buf[:need]
            self._accept(frame)

    def _silence(self) -> None:
        self._gap = None
        frame = bytes(self._buf)
        self._buf.clear()
        if len(frame) >= 4 and crc16(frame[:-2]) == frame[-2:]:
            self._accept(frame)  # a function code we cannot frame: answered with 01
        elif frame:
            self.bad_frames += 1

    def _accept(self, frame: bytes) -> None:
        self.frames += 1
        if self._queue is not None:
            self._queue.put_nowait(frame)

    # -- answer, one request at a time -------------------------------------------------
    async def _serve(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            frame = await queue.get()
            await self._answer(frame)

    async def _answer(self, frame: bytes) -> None:
        unit_id, pdu = frame[0], frame[1:-2]
        await asyncio.sleep(len(frame) * self.char_s + self.turnaround_s)
        if unit_id == 0:
            for each in self.units.values():  # broadcast: everybody acts, nobody answers
                each.handle(pdu)
            return
        unit = self.units.get(unit_id)
        if unit is None:
            return  # nobody at that address: silence, as on a real bus
        fault = unit.comm_fault()
        if fault is not None and (fault.silent or fault.disconnected):
            return
        jitter = fault.draw_jitter_ns() / 1e9 if fault is not None else 0.0
        body = bytes((unit_id,)) + unit.handle(pdu)
        reply = body + crc16(body)
        if fault is not None and fault.corrupt():
            reply = body + bytes(b ^ 0xFF for b in reply[-2:])
        await asyncio.sleep(len(reply) * self.char_s + jitter)
        noise, self._noise = self._noise, b""
        if self._port is not None:
            self._port.write(noise + reply)
