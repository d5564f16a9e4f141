"""MKS 937B / 946 vacuum gauge controllers (ASCII ``@...;FF`` protocol) on one pty.

Frame (protocols.md 3.3; MKS 902B/910 query lists, 946 manual table 9-15; PyExpLabSys
``mks_925_pirani.py``, pylablib ``MKS9xx``)::

    request   @<addr 3 digits><command>?;FF        query
              @<addr 3 digits><command>!<value>;FF set
    answer    @<addr>ACK<value>;FF
              @<addr>NAK<code>;FF

``FF`` stands in for the checksum and is always accepted; any other two characters are
checked as the hex sum (mod 256) of the characters from ``@`` through ``;`` [verify], and a
frame failing that is not answered. Addresses 001-253; 254 and 255 are broadcast (answered
when the bus has a single unit, as a lone transducer does).

Commands this emulated controller knows:

=============  ======================================================================
``PR<n>?``     pressure on channel n (1 is the bound gauge), ``%.2E`` in the unit set;
               ``LO<`` + low limit under range, ``ATM`` over range [verify wording]
``U?``/``U!``  pressure unit: ``TORR``, ``MBAR``, ``PASCAL``
``MD?``        model (``937B``)
``SN?``        serial number
``FV?``        firmware version
=============  ======================================================================

NAK codes (946 manual, CODE mode): 160 unrecognized message, 163 invalid channel, 169
invalid argument, 175 command/query byte invalid.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sim.devices.serial_bus import LineNoise, SerialBusEmulator
from sim.realtime import RealtimePlant

_FRAME = re.compile(r"@(\d{3})([^;@]*);(..)")
_COMMAND = re.compile(r"([A-Z]+)(\d?)([?!])(.*)")
_UNITS = {"TORR": 1.0, "MBAR": 1.333223684, "PASCAL": 133.3223684}
NAK_UNRECOGNIZED = 160
NAK_INVALID_CHANNEL = 163
NAK_INVALID_ARGUMENT = 169
NAK_QUERY_BYTE = 175


@dataclass(frozen=True, slots=True)
class Request:
    address: int
    command: str
    channel: str
    mode: str
    """``?`` query or ``!`` set."""
    value: str
    length: int


@dataclass(slots=True)
class _Unit:
    component: str
    unit: str = "TORR"
    serial: str = field(default="")


class MksBus(SerialBusEmulator[int, Request]):
    """MKS 937B/946 controllers sharing one pty, channel 1 of each bound to a gauge.

    :param plant: the real-time reactor.
    :param path: the pty link.
    :param units: ``(address 1-253, gauge name)`` pairs, e.g. ``[(253, "chamber")]``.
    :param latency_s: the controller's processing time.
    :param baudrate: 9600 (factory default) for the wire time.
    :param range_torr: (low, high) measuring range; default from the reactor gauge: its
        resolution up to 1.1 x full scale.
    :param line_noise: junk before replies (None: clean line).
    """

    def __init__(
        self,
        plant: RealtimePlant,
        path: str | Path,
        units: Sequence[tuple[int, str]],
        *,
        latency_s: float = 0.015,
        baudrate: int = 9600,
        range_torr: tuple[float, float] | None = None,
        line_noise: LineNoise | None = None,
    ) -> None:
        for address, _ in units:
            if not 1 <= address <= 253:
                msg = f"MKS addresses are 1-253 (254/255 broadcast), not {address}"
                raise ValueError(msg)
        super().__init__(
            plant, path, units, latency_s=latency_s, baudrate=baudrate, line_noise=line_noise
        )
        gauge = plant.reactor.config.gauge
        self.range_torr = range_torr or (gauge.resolution_torr, 1.1 * gauge.full_scale_torr)
        self._units = {a: _Unit(c, serial=f"0{a:03d}1937") for a, c in units}

    def _reset(self) -> None:
        for u in self._units.values():
            u.unit = "TORR"

    # ---------------------------------------------------------------- protocol
    def _extract(self, buffer: bytearray) -> list[Request]:
        out: list[Request] = []
        while True:
            end = buffer.find(b";")
            if end < 0 or len(buffer) < end + 3:
                if len(buffer) > 256:
                    buffer.clear()  # runaway junk, nothing to parse
                return out
            raw = bytes(buffer[: end + 3])
            del buffer[: end + 3]
            start = raw.rfind(b"@")
            if start < 0:
                continue
            req = _parse(raw[start:])
            if req is not None:
                out.append(req)

    def _address(self, request: Request) -> int | None:
        if request.address in (254, 255):
            return next(iter(self.units)) if len(self.units) == 1 else None
        return request.address

    def _request_chars(self, request: Request) -> int:
        return request.length

    def _answer(self, address: int, component: str, request: Request) -> bytes:
        ok, value = self._execute(self._units[address], request)
        kind = "ACK" if ok else "NAK"
        return f"@{address:03d}{kind}{value};FF".encode("ascii")

    def _execute(self, unit: _Unit, req: Request) -> tuple[bool, str]:
        cmd, mode = req.command, req.mode
        if cmd == "PR":
            if mode != "?":
                return False, str(NAK_QUERY_BYTE)
            if req.channel != "1":
                return False, str(NAK_INVALID_CHANNEL)
            return True, self._pressure(unit)
        if req.channel:
            return False, str(NAK_UNRECOGNIZED)
        if cmd == "U":
            if mode == "?":
                return True, unit.unit
            if req.value not in _UNITS:
                return False, str(NAK_INVALID_ARGUMENT)
            unit.unit = req.value
            return True, unit.unit
        readonly = {"MD": "937B", "SN": unit.serial, "FV": "1.20"}
        if cmd in readonly:
            if mode != "?":
                return False, str(NAK_QUERY_BYTE)
            return True, readonly[cmd]
        return False, str(NAK_UNRECOGNIZED)

    def _pressure(self, unit: _Unit) -> str:
        torr = self.plant.sync().read_pressure_torr(unit.component)
        lo, hi = self.range_torr
        scale = _UNITS[unit.unit]
        if torr is None or torr > hi:
            return "ATM"
        if torr < lo:
            return f"LO<{lo * scale:.2E}"
        return f"{torr * scale:.2E}"

    def _garble(self, reply: bytes, rng: random.Random) -> bytes:
        # FF is a placeholder, not a checksum: what a host can catch is a byte that is
        # not ASCII any more (a framing error sets the high bit)
        out = bytearray(reply)
        i = rng.randrange(1, max(2, len(out) - 3))
        out[i] |= 0x80
        return bytes(out)


def _parse(raw: bytes) -> Request | None:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    m = _FRAME.fullmatch(text)
    if m is None:
        return None
    cs = m.group(3)
    if cs != "FF":
        body = text[: text.index(";") + 1]
        if cs.upper() != f"{sum(body.encode('ascii')) % 256:02X}":
            return None
    address = int(m.group(1))
    c = _COMMAND.fullmatch(m.group(2))
    if c is None:
        # addressed to a unit but not a command it can parse: it answers NAK 160
        return Request(address, "", "", "?", "", len(raw))
    return Request(address, c.group(1), c.group(2), c.group(3), c.group(4), len(raw))
