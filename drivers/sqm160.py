"""Inficon SQM-160 rate/thickness monitor (QCM) over its serial protocol.

Packet (protocols.md section 6; SQM-160 manual section 5.3; lapkindm/sqm160
``protocol.py``, PyExpLabSys ``drivers/inficon_sqm160.py``); 19200 8N1; host-initiated::

    command   !  chr(len(message) + 34)  message  CRC1 CRC2
    response  !  chr(len(status + message) + 35)  status  message  CRC1 CRC2

CRC (:func:`crc14`) over the length character through the end of the message: start
0x3FFF; for each byte XOR it in, then 8 times: shift right, and XOR 0x2001 if the bit
shifted out was 1; keep 14 bits. CRC1 = (crc & 0x7F) + 34, CRC2 = ((crc >> 7) & 0x7F) + 34.
Worked example (lapkindm/sqm160 ``build_command`` doctest): ``@`` -> ``!#@O7``.

Status character: ``A`` ok; ``C`` invalid command, ``D`` invalid data
(-> :class:`~drivers.base.DeviceFault`); SQC-3x0 units add ``B`` (ok, but the unit was
reset) and ``E`` (wrong mode).

Commands used (``<s>`` = sensor, option ``sensor``):

=========  ===========================================
``@``      firmware version (read at connect)
``L<s>``   rate, A/s
``N<s>``   thickness, kA (converted to A)
``P<s>``   crystal frequency, Hz (0: crystal failed)
``R<s>``   crystal life, %
``S``      zero thickness
=========  ===========================================

The CRC covers the length character and the message: the SQC-310 manual (same protocol),
section 4.2.3, says "The Sync character and CRC are not included in the CRC calculation.
All other characters should be included", while its step 3 (and the SQM-160 manual's,
section 5.3) says "excluding the sync and length characters"; the two sentences disagree,
and the working drivers (lapkindm/sqm160, PyExpLabSys) include the length, as this one
does. A ``!`` anywhere resets the packet on the monitor (section 5.3).

Stale input is discarded before every command (expctl discards it for the same reason: a
late reply must not answer the next command); junk before the ``!`` is skipped and
counted; a response failing its CRC or length is a bad frame (counted, retried).

Options: ``port`` (required), ``sensor`` (1-6, default 1), ``baudrate`` (19200),
``parity``/``stopbits``/``bytesize``, ``timeout`` (s, 1.0), ``retries`` (2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from drivers.base import DeviceFault, DriverContext, OptionError, ThicknessReading
from drivers.link import RetryPolicy
from drivers.serial_link import (
    PORT_OPTIONS,
    FrameError,
    SerialDevice,
    SerialPort,
    check_no_extra,
    shared_port,
)

SYNC = ord("!")
STATUS = {
    "C": "invalid command (C)",
    "D": "invalid data (D)",
    "E": "wrong mode (E)",
}
_OPTIONS = PORT_OPTIONS | {"sensor", "timeout", "retries"}


def crc14(data: bytes) -> int:
    """The SQM-160 14-bit CRC of ``data`` (length character through message)."""
    crc = 0x3FFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            carry = crc & 1
            crc >>= 1
            if carry:
                crc ^= 0x2001
    return crc & 0x3FFF


def crc_chars(data: bytes) -> bytes:
    """CRC1, CRC2 as sent on the wire."""
    crc = crc14(data)
    return bytes([(crc & 0x7F) + 34, ((crc >> 7) & 0x7F) + 34])


def command_packet(message: str) -> bytes:
    """``!`` + length + message + CRC."""
    if len(message) > 200:
        msg = "SQM-160 messages are at most 200 characters"
        raise ValueError(msg)
    body = bytes([len(message) + 34]) + message.encode("ascii")
    return b"!" + body + crc_chars(body)


class Sqm160Monitor(SerialDevice):
    """An Inficon SQM-160 (``ThicknessMonitor``) reading one sensor."""

    def __init__(self, name: str, port: SerialPort, policy: RetryPolicy, *, sensor: int) -> None:
        super().__init__(name, port, policy)
        self.sensor = sensor
        self.version = ""

    async def _exchange(self, port: SerialPort, message: str) -> str:
        port.write(command_packet(message))
        await port.skip_until(lambda b: b == SYNC)
        head = await port.read_exactly(2)
        n = head[1] - 35
        if n < 1:
            msg = f"response length character {head[1]} is below 36"
            raise FrameError(self.name, msg)
        rest = await port.read_exactly(n + 2)
        body = head[1:] + rest[:-2]
        if rest[-2:] != crc_chars(body):
            msg = f"CRC mismatch in response to {message!r}"
            raise FrameError(self.name, msg)
        status = chr(rest[0])
        try:
            text = rest[1:-2].decode("ascii")
        except UnicodeDecodeError:
            msg = "non-ASCII response with a valid CRC"
            raise FrameError(self.name, msg) from None
        if status in ("A", "B"):
            return text
        if status in STATUS:
            raise DeviceFault(self.name, f"{message!r} refused: {STATUS[status]}")
        msg = f"unknown status {status!r}"
        raise FrameError(self.name, msg)

    async def _number(self, port: SerialPort, message: str) -> float:
        text = await self._exchange(port, message)
        try:
            value = float(text)
        except ValueError:
            raise DeviceFault(self.name, f"{message!r} answered {text!r}") from None
        if not math.isfinite(value):
            raise DeviceFault(self.name, f"{message!r} answered {text!r}")
        return value

    async def query(self, message: str) -> str:
        """Send one command (e.g. ``@``); returns the response message."""
        return await self._request(lambda port: self._exchange(port, message))

    # ---------------------------------------------------------------- Device
    async def connect(self) -> None:
        """Open the port and read the firmware version."""
        await self._open_link()
        self.version = await self.query("@")

    async def safe_state(self) -> None:
        """A monitor has no unsafe state."""

    # ---------------------------------------------------------------- ThicknessMonitor
    async def read_thickness(self) -> ThicknessReading:
        s = self.sensor
        async with self._bus():
            rate = await self._transact(lambda port: self._number(port, f"L{s}"))
            kilo_a = await self._transact(lambda port: self._number(port, f"N{s}"))
            freq = await self._transact(lambda port: self._number(port, f"P{s}"))
            life = await self._transact(lambda port: self._number(port, f"R{s}"))
        if freq <= 0.0:
            raise DeviceFault(self.name, f"crystal failure: sensor {s} does not oscillate")
        return ThicknessReading(kilo_a * 1000.0, rate, freq, life)

    async def zero(self) -> None:
        await self.query("S")


def create(name: str, options: Mapping[str, Any], ctx: DriverContext) -> Sqm160Monitor:
    """Build an SQM-160 from its tool-config options (see the module docstring)."""
    opts = dict(options)
    check_no_extra(opts, set(_OPTIONS), "sqm160")
    sensor = opts.pop("sensor", 1)
    if isinstance(sensor, bool) or not isinstance(sensor, int) or not 1 <= sensor <= 6:
        msg = f"option 'sensor' must be a sensor input 1-6, not {sensor!r}"
        raise OptionError("sensor", msg)
    policy = RetryPolicy.from_options(opts, timeout_s=1.0)
    # the protocol has no address: one monitor per port
    port = shared_port(ctx, name, opts, baudrate=19200, address="SQM-160", address_option="port")
    return Sqm160Monitor(name, port, policy, sensor=sensor)
