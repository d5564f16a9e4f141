"""Pfeiffer Vacuum Protocol gauges (RS-485 telegrams) on one pty.

Telegram (protocols.md 3.1; Pfeiffer PPT 100 manual section 6; electronsandstuff/
py-pfeiffer-vacuum-protocol)::

    aaa  AA  ppp  ll  data...  ccc  CR
    addr act param len         checksum = sum of the ASCII codes before it, mod 256

``AA`` is ``00`` for a query (data ``=?``) and ``10`` for a control telegram and for every
answer. A gauge answers only its own address (001-255); ``000`` (global) and ``9xx``
(group) telegrams are acted on without an answer. A telegram with a wrong checksum or a
malformed field is not answered (the host times out and repeats it).

The emulated gauge is a PPT 100 digital Pirani transmitter, and behaves as one. Its
parameters (CPT/RPT/PPT/HPT 100 operating instructions, parameter table and "Transmitter
adjustment", p. 12; telegram examples in section 6.3, p. 13):

=====  ====================  =========  ==============================================
P      meaning               type       here
=====  ====================  =========  ==============================================
740    pressure, hPa         u_expo_new ``abcdEF`` = a.bcd x 10^(EF-20); readable, and
                                        writable for the adjustment (below)
741    adjustment low/high   u_short    ``000`` low pressure (zero), ``001`` high
                                        pressure (atmosphere); readable, writable
742    gas correction factor u_real     ``000100`` = 1.00; writable 0.10..8.00
303    error code            string     ``000000`` (no error), read only
312    software version      string     ``010300``, read only
349    device type           string     ``    A3`` (PPT 100), read only
=====  ====================  =========  ==============================================

Adjustment, as the manual's example does it ("0011074103001130" then
"0011074006100023025": adjust transmitter 1 at atmosphere): write P741 to choose the point,
then write P740 with the pressure the transmitter is really at. At the high point the
emulator scales its reading so that it reads the written value there; at the low point it
takes the present reading as its zero. The manual gives the sequence, not the limits a real
transmitter puts on an adjustment: the emulator accepts any u_expo_new value [emulator].

Error answers carry one of three strings as data: ``NO_DEF`` (no such parameter),
``_RANGE`` (value out of range), ``_LOGIC`` (write to a read-only parameter, or a query
with data other than ``=?``).

The pressure is the reactor gauge's measured reading (lag, noise, quantisation from the
model; where the model's own capacitance gauge is over its range, the chamber's true
pressure), converted to hPa, adjusted and multiplied by the gas correction factor. A Pirani
reads from the fine vacuum up to atmosphere: the default measuring range is 5 x 10^-4 ..
1000 hPa (a Pirani's usual span; the PPT 100 data sheet with its exact limits could not be
reached here [verify]). Above the range P740 carries its upper limit; below it
``000000``. Drivers read those as over and under range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sim.devices.serial_bus import LineNoise, SerialBusEmulator
from sim.realtime import RealtimePlant

HPA_PER_TORR = 1.333223684
PIRANI_RANGE_HPA = (5e-4, 1000.0)


def checksum(text: str) -> str:
    """The telegram checksum: sum of the characters' codes mod 256, three digits."""
    return f"{sum(text.encode('ascii')) % 256:03d}"


def encode_expo(value: float) -> str:
    """``u_expo_new``: ``abcdEF`` = a.bcd x 10^(EF-20); zero as ``000000``."""
    if value <= 0.0:
        return "000000"
    exp = math.floor(math.log10(value))
    mant = round(value / 10.0**exp * 1000)
    if mant >= 10000:
        mant //= 10
        exp += 1
    exp = min(max(exp, -20), 79)
    return f"{mant:04d}{exp + 20:02d}"


def decode_expo(text: str) -> float | None:
    """``u_expo_new`` back to a number (None when it is not six digits)."""
    if len(text) != 6 or not text.isdigit():
        return None
    return int(text[:4]) / 1000.0 * 10.0 ** (int(text[4:]) - 20)


@dataclass(frozen=True, slots=True)
class Telegram:
    address: int
    action: int
    parameter: int
    data: str
    length: int
    """Characters on the wire, CR included."""


class PfeifferBus(SerialBusEmulator[int, Telegram]):
    """Pfeiffer gauges (Pfeiffer Vacuum Protocol) sharing one pty.

    :param plant: the real-time reactor.
    :param path: the pty link (e.g. ``/tmp/aldctl-sim/gauge``).
    :param units: ``(address 1-255, gauge name)`` pairs, e.g. ``[(1, "chamber")]``.
    :param latency_s: the gauge's processing time (10-20 ms typical).
    :param baudrate: 9600 (factory default) for the wire time of each exchange.
    :param range_hpa: measuring range (low, high) in hPa; default a Pirani's 5e-4..1000.
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
        range_hpa: tuple[float, float] | None = None,
        line_noise: LineNoise | None = None,
    ) -> None:
        for address, _ in units:
            if not 1 <= address <= 255:
                msg = f"Pfeiffer gauge addresses are 1-255, not {address}"
                raise ValueError(msg)
        super().__init__(
            plant, path, units, latency_s=latency_s, baudrate=baudrate, line_noise=line_noise
        )
        self.range_hpa = range_hpa or PIRANI_RANGE_HPA
        self.gas_correction: dict[int, float] = {a: 1.0 for a, _ in units}
        self.adjust_point: dict[int, int] = {a: 0 for a, _ in units}
        self.zero_hpa: dict[int, float] = {a: 0.0 for a, _ in units}
        self.gain: dict[int, float] = {a: 1.0 for a, _ in units}

    def _reset(self) -> None:
        # a power cycle restores the factory correction factor (the adjustment is kept)
        self.gas_correction = dict.fromkeys(self.units, 1.0)

    # ---------------------------------------------------------------- protocol
    def _extract(self, buffer: bytearray) -> list[Telegram]:
        out: list[Telegram] = []
        while (i := buffer.find(b"\r")) >= 0:
            raw = bytes(buffer[:i])
            del buffer[: i + 1]
            t = _parse(raw)
            if t is not None:
                out.append(t)
        return out

    def _address(self, request: Telegram) -> int | None:
        if request.address == 0 or request.address >= 900:
            # global / group telegrams: every addressed gauge acts, none answers
            for address in self.units:
                self._apply(address, self.units[address], request)
            return None
        return request.address

    def _request_chars(self, request: Telegram) -> int:
        return request.length

    def _answer(self, address: int, component: str, request: Telegram) -> bytes:
        data = self._apply(address, component, request)
        body = f"{address:03d}10{request.parameter:03d}{len(data):02d}{data}"
        return f"{body}{checksum(body)}\r".encode("ascii")

    def _apply(self, address: int, component: str, t: Telegram) -> str:
        """Execute a telegram; returns the answer's data field."""
        if t.action == 0:
            if t.data != "=?":
                return "_LOGIC"
            return self._read(address, component, t.parameter)
        if t.action != 10:
            return "_LOGIC"
        if t.parameter == 742:
            if len(t.data) != 6 or not t.data.isdigit():
                return "_RANGE"
            factor = int(t.data) / 100.0
            if not 0.10 <= factor <= 8.00:
                return "_RANGE"
            self.gas_correction[address] = factor
            return t.data
        if t.parameter == 741:
            if t.data not in ("000", "001"):
                return "_RANGE"
            self.adjust_point[address] = int(t.data)
            return t.data
        if t.parameter == 740:
            written = decode_expo(t.data)
            if written is None:
                return "_RANGE"
            raw = self._raw_hpa(component)
            if self.adjust_point[address]:
                if raw - self.zero_hpa[address] <= 0 or written <= 0:
                    return "_RANGE"
                self.gain[address] = written / (raw - self.zero_hpa[address])
            else:
                self.zero_hpa[address] = raw - written / self.gain[address]
            return t.data
        if t.parameter in (303, 312, 349):
            return "_LOGIC"
        return "NO_DEF"

    def _raw_hpa(self, component: str) -> float:
        r = self.plant.sync()
        torr = r.read_pressure_torr(component)
        if torr is None:  # the model's capacitance gauge is over range; a Pirani is not
            torr = r.truth().pressure_torr
        return torr * HPA_PER_TORR

    def _read(self, address: int, component: str, parameter: int) -> str:
        if parameter == 740:
            lo, hi = self.range_hpa
            adjusted = (self._raw_hpa(component) - self.zero_hpa[address]) * self.gain[address]
            hpa = adjusted * self.gas_correction[address]
            if hpa < lo:
                return "000000"
            return encode_expo(min(hpa, hi))
        if parameter == 741:
            return f"{self.adjust_point[address]:03d}"
        if parameter == 742:
            return f"{round(self.gas_correction[address] * 100):06d}"
        if parameter == 303:
            return "000000"
        if parameter == 312:
            return "010300"
        if parameter == 349:
            return "    A3"
        return "NO_DEF"


def _parse(raw: bytes) -> Telegram | None:
    """A received telegram, or None when it is malformed or fails its checksum."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    if len(text) < 13 or not text[:10].isdigit() or not text[-3:].isdigit():
        return None
    body, cs = text[:-3], text[-3:]
    if checksum(body) != cs:
        return None
    length = int(body[8:10])
    data = body[10:]
    if len(data) != length:
        return None
    return Telegram(int(body[0:3]), int(body[3:5]), int(body[5:8]), data, len(raw) + 1)
