"""AE Bus, SQM-160 and MKS emulators, driven by clients written here from the manuals' frame
descriptions alone (no client exists on the package index; ``drivers/`` is not used).

* AE Bus: Cesar 1312 manual, chapter 4 (protocols.md 5.1): header byte = address << 3 |
  data length (7: a length byte follows), command, data, checksum = XOR of the preceding
  bytes; the generator answers ACK 0x06 (NAK 0x15 on a bad checksum), then its response
  packet, which the host acknowledges. Set commands answer a one-byte CSR (0 = OK).
* SQM-160: operating manual section 5.3 "SQM-160 Communications Protocol" (sync ``!``,
  length character = characters + 34, CRC: start 0x3FFF, XOR, 8 shifts with 0x2001, 14
  bits split in two 7-bit halves + 34; "Anytime this character is received, the
  communications for that packet is reset"). Which characters the CRC covers: the SQC-310
  manual (same protocol), section 4.2.3: "The Sync character and CRC are not included in
  the CRC calculation. All other characters should be included" (its step 3, like the
  SQM-160's, also says "excluding the sync and length characters": the two sentences
  disagree; working units follow the first, and so does this client). The response length
  character adds 35 (SQC-310 section 4.2.2), the status ``A`` = understood.
* MKS 937B/9xx: ``@<addr>`` + command + ``?`` + ``;FF`` (MKS 902B/910 operation manuals,
  "Query Command list", p. 46: ``@xxxPR1?;FF`` -> ``@xxxACK1.23E-3;FF``, ``@xxxU?;FF`` ->
  ``@xxxACKTORR;FF``); NAK codes from the 946 manual (160 unrecognized message).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import reduce
from pathlib import Path

import pytest
import serial

from sim.devices.aebus import AeBus
from sim.devices.mks import MksBus
from sim.devices.sqm160 import Sqm160
from sim.reactor import Reactor, ReactorConfig
from sim.realtime import RealtimePlant


@pytest.fixture
def plant() -> RealtimePlant:
    cfg = ReactorConfig.for_lines(["TMA", "H2O", "O2-plasma"], substrate_c=200.0)
    return RealtimePlant(Reactor(cfg, seed=6))


async def exchange(s: serial.Serial, data: bytes, until: bytes | int) -> bytes:
    """Write ``data``; read up to the terminator ``until`` or that many bytes."""

    def run() -> bytes:
        s.reset_input_buffer()
        s.write(data)
        if isinstance(until, int):
            return bytes(s.read(until))
        return bytes(s.read_until(until))

    return await asyncio.to_thread(run)


# =========================================================================== AE Bus


def ae_packet(address: int, command: int, data: bytes = b"") -> bytes:
    assert len(data) <= 6
    body = bytes([(address << 3) | len(data), command]) + data
    return body + bytes([reduce(lambda a, b: a ^ b, body, 0)])


async def ae_transaction(s: serial.Serial, address: int, command: int, data: bytes = b"") -> bytes:
    """One command: the ACK, the response packet (checked), our ACK; the response data."""
    ack = await exchange(s, ae_packet(address, command, data), 1)
    assert ack == b"\x06"
    head = await asyncio.to_thread(s.read, 2)
    assert head[0] >> 3 == address
    assert head[1] == command
    n = head[0] & 7
    rest = await asyncio.to_thread(s.read, n + 1)
    packet = head + rest
    assert reduce(lambda a, b: a ^ b, packet, 0) == 0  # XOR over everything incl. checksum
    s.write(b"\x06")
    return bytes(rest[:n])


@pytest.fixture
async def rf(plant: RealtimePlant, tmp_path: Path) -> AsyncIterator[AeBus]:
    emu = AeBus(plant, tmp_path / "rf", [(1, "rf")])
    await emu.start()
    yield emu
    await emu.stop()


async def test_aebus_host_control_setpoint_and_power(rf: AeBus, plant: RealtimePlant) -> None:
    with serial.Serial(str(rf.path), 9600, parity=serial.PARITY_ODD, timeout=0.5) as s:
        assert await ae_transaction(s, 1, 2) == bytes([1])  # RF on refused: not host mode
        assert await ae_transaction(s, 1, 14, bytes([2])) == bytes([0])  # host control
        assert await ae_transaction(s, 1, 155) == bytes([2])
        assert await ae_transaction(s, 1, 8, (150).to_bytes(2, "little")) == bytes([0])
        reply = await ae_transaction(s, 1, 164)  # setpoint (2 bytes LE) + regulation mode
        assert int.from_bytes(reply[:2], "little") == 150
        assert await ae_transaction(s, 1, 1) == bytes([0])  # RF off
        forward = await ae_transaction(s, 1, 165)
        assert len(forward) == 2


async def test_aebus_bad_checksum_is_nakked(rf: AeBus) -> None:
    with serial.Serial(str(rf.path), 9600, parity=serial.PARITY_ODD, timeout=0.5) as s:
        bad = bytearray(ae_packet(1, 155))
        bad[-1] ^= 0xFF
        assert await exchange(s, bytes(bad), 1) == b"\x15"


# =========================================================================== SQM-160


def sqm_crc(data: bytes) -> bytes:
    crc = 0x3FFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            out = crc & 1
            crc >>= 1
            if out:
                crc ^= 0x2001
    crc &= 0x3FFF
    return bytes([(crc & 0x7F) + 34, (crc >> 7 & 0x7F) + 34])


def sqm_packet(message: str) -> bytes:
    body = bytes([len(message) + 34]) + message.encode("ascii")
    return b"!" + body + sqm_crc(body)


async def sqm_read(s: serial.Serial) -> tuple[str, str]:
    head = await asyncio.to_thread(s.read, 2)
    assert head[:1] == b"!"
    n = head[1] - 35
    rest = await asyncio.to_thread(s.read, n + 2)
    assert rest[-2:] == sqm_crc(head[1:] + rest[:-2])
    text = rest[:-2].decode("ascii")
    return text[0], text[1:]


@pytest.fixture
async def qcm(plant: RealtimePlant, tmp_path: Path) -> AsyncIterator[Sqm160]:
    emu = Sqm160(plant, tmp_path / "qcm")
    await emu.start()
    yield emu
    await emu.stop()


async def test_sqm160_version_and_thickness(qcm: Sqm160, plant: RealtimePlant) -> None:
    with serial.Serial(str(qcm.path), 19200, timeout=0.5) as s:
        s.write(sqm_packet("@"))
        assert await sqm_read(s) == ("A", "MON Ver 4.13")
        s.write(sqm_packet("N1"))
        status, value = await sqm_read(s)
        assert status == "A"
        assert float(value) * 1000 == pytest.approx(plant.sync().read_qcm().thickness_a, abs=0.1)
        s.write(sqm_packet("Q"))  # not a command
        assert (await sqm_read(s))[0] == "C"


async def test_sqm160_a_sync_character_resets_a_truncated_packet(qcm: Sqm160) -> None:
    """Manual 5.3: "Anytime this character is received, the communications for that
    packet is reset": half a packet, then a whole one, gets the whole one answered."""
    with serial.Serial(str(qcm.path), 19200, timeout=0.5) as s:
        truncated = sqm_packet("N1")[:3]  # sync, length, first character: no CRC
        s.write(truncated + sqm_packet("@"))
        assert await sqm_read(s) == ("A", "MON Ver 4.13")


async def test_sqm160_nul_crc_disables_checking(qcm: Sqm160) -> None:
    # manual 5.3 NOTE: "send two Null characters (CHR$0) for the CRC"
    with serial.Serial(str(qcm.path), 19200, timeout=0.5) as s:
        s.write(b"!" + bytes([1 + 34]) + b"@" + b"\0\0")
        assert await sqm_read(s) == ("A", "MON Ver 4.13")


# =========================================================================== MKS


@pytest.fixture
async def mks(plant: RealtimePlant, tmp_path: Path) -> AsyncIterator[MksBus]:
    emu = MksBus(plant, tmp_path / "mks", [(253, "chamber")])
    await emu.start()
    yield emu
    await emu.stop()


async def test_mks_pressure_unit_and_nak(mks: MksBus, plant: RealtimePlant) -> None:
    with serial.Serial(str(mks.path), 9600, timeout=0.5) as s:
        assert await exchange(s, b"@253U?;FF", b";FF") == b"@253ACKTORR;FF"
        reply = await exchange(s, b"@253PR1?;FF", b";FF")
        assert reply.startswith(b"@253ACK")
        torr = plant.sync().read_pressure_torr("chamber")
        assert torr is not None
        assert float(reply[7:-3]) == pytest.approx(torr, rel=0.05)
        assert await exchange(s, b"@253XYZ?;FF", b";FF") == b"@253NAK160;FF"
        s.timeout = 0.1
        assert await exchange(s, b"@017PR1?;FF", b";FF") == b""  # nobody at 017
