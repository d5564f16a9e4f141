"""Inficon SQM-160 thin-film rate/thickness monitor on a pty.

Packet (protocols.md section 6; SQM-160 manual section 5.3; lapkindm/sqm160
``protocol.py``, PyExpLabSys ``inficon_sqm160.py``), 19200 8N1, host-initiated only::

    command   !  <len(message)+34>  message  CRC1 CRC2
    response  !  <len(status+message)+35>  status  message  CRC1 CRC2

CRC over the length character and what follows it up to the CRC: start 0x3FFF; per byte
XOR it in, then 8 times shift right, XOR 0x2001 when the bit shifted out was 1; keep 14
bits; CRC1 = low 7 bits + 34, CRC2 = high 7 bits + 34. A command may carry two NUL bytes
instead of its CRC (checking off). A command failing its CRC is not answered. A ``!``
anywhere resets the packet in progress (manual section 5.3: "Anytime this character is
received, the communications for that packet is reset"), so a truncated packet followed by
a good one gets the good one answered.

Status: ``A`` ok, ``C`` invalid command, ``D`` invalid data (e.g. a sensor that is not
there). Commands emulated (``<s>`` = sensor 1-6; only the bound sensor has a crystal):

=========  ===============================================================
``@``      version: ``MON Ver 4.13``
``J``      number of channels: ``2``
``L<s>``   rate, A/s, ``%.2f``
``N<s>``   thickness, kA, ``%.4f`` (high-resolution mode)
``P<s>``   crystal frequency, Hz, ``%.3f``; ``0.000`` when the crystal has failed
``R<s>``   crystal life, %, ``%.2f``
``S``      zero the thickness (and the rate average)
=========  ===============================================================

Values come from the reactor's QCM (``read_qcm``: Sauerbrey mass steps of the film the ALD
model grows); ``S`` calls ``zero_qcm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sim.devices.serial_bus import LineNoise, SerialBusEmulator
from sim.realtime import RealtimePlant

SYNC = ord("!")
VERSION = "MON Ver 4.13"


def crc14(data: bytes) -> int:
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
    crc = crc14(data)
    return bytes([(crc & 0x7F) + 34, ((crc >> 7) & 0x7F) + 34])


@dataclass(frozen=True, slots=True)
class Command:
    message: str
    length: int


class Sqm160(SerialBusEmulator[int, Command]):
    """One SQM-160 on a pty (the protocol has no address: the unit is 1).

    :param plant: the real-time reactor (it must have a QCM).
    :param path: the pty link (e.g. ``/tmp/aldctl-sim/qcm``).
    :param units: ``[(1, "qcm")]``: the monitor and the reactor QCM behind it.
    :param sensor: which sensor input (1-6) the crystal is wired to.
    :param latency_s: the monitor's processing time.
    :param baudrate: 19200 (factory default) for the wire time.
    :param line_noise: junk before replies (None: clean line).
    """

    def __init__(
        self,
        plant: RealtimePlant,
        path: str | Path,
        units: Sequence[tuple[int, str]] = ((1, "qcm"),),
        *,
        sensor: int = 1,
        latency_s: float = 0.01,
        baudrate: int = 19200,
        line_noise: LineNoise | None = None,
    ) -> None:
        if [a for a, _ in units] != [1]:
            msg = "an SQM-160 is alone on its port: units must be [(1, component)]"
            raise ValueError(msg)
        if not 1 <= sensor <= 6:
            msg = f"sensor must be 1-6, not {sensor}"
            raise ValueError(msg)
        if not plant.reactor.has_qcm:
            msg = "the reactor has no QCM to put behind an SQM-160"
            raise ValueError(msg)
        super().__init__(
            plant, path, units, latency_s=latency_s, baudrate=baudrate, line_noise=line_noise
        )
        self.sensor = sensor

    # ---------------------------------------------------------------- protocol
    def _extract(self, buffer: bytearray) -> list[Command]:
        out: list[Command] = []
        while True:
            start = buffer.find(SYNC)
            if start < 0:
                buffer.clear()
                return out
            del buffer[:start]
            if len(buffer) < 2:
                return out
            n = buffer[1] - 34
            if n < 0:
                del buffer[:1]  # not a length: that '!' was junk
                continue
            total = 2 + n + 2
            restart = buffer.find(SYNC, 1, total)
            if restart > 0:
                # manual 5.3: "Anytime this character is received, the communications for
                # that packet is reset" (no length or CRC character is ever '!': both are
                # at least 34)
                del buffer[:restart]
                continue
            if len(buffer) < total:
                return out
            raw = bytes(buffer[:total])
            del buffer[:total]
            crc = raw[-2:]
            if crc != b"\0\0" and crc != crc_chars(raw[1:-2]):
                continue
            try:
                message = raw[2:-2].decode("ascii")
            except UnicodeDecodeError:
                continue
            out.append(Command(message, total))

    def _address(self, request: Command) -> int | None:
        return 1

    def _request_chars(self, request: Command) -> int:
        return request.length

    def _answer(self, address: int, component: str, request: Command) -> bytes:
        status, message = self._execute(request.message)
        body = bytes([len(message) + 1 + 35]) + (status + message).encode("ascii")
        return bytes([SYNC]) + body + crc_chars(body)

    def _execute(self, message: str) -> tuple[str, str]:
        if not message:
            return "C", ""
        cmd, arg = message[0], message[1:]
        r = self.plant.sync()
        if cmd == "@" and not arg:
            return "A", VERSION
        if cmd == "J" and not arg:
            return "A", "2"
        if cmd == "S" and not arg:
            r.zero_qcm()
            return "A", ""
        if cmd in "LNPR":
            if not arg.isdigit() or int(arg) != self.sensor:
                return "D", ""
            st = r.read_qcm()
            if cmd == "L":
                return "A", f"{st.rate_a_s:.2f}"
            if cmd == "N":
                return "A", f"{st.thickness_a / 1000.0:.4f}"
            if cmd == "P":
                return "A", "0.000" if st.failed else f"{st.frequency_hz:.3f}"
            return "A", f"{st.crystal_life_pct:.2f}"
        return "C", ""
