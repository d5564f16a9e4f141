"""Advanced Energy RF generators (Cesar, Paramount, Apex) speaking AE Bus, on one pty.

Packet (protocols.md 5.1; Cesar 1312 manual ch. 4, Apex manual table 4-6; InstrumentKit
``dressler/cesar_1312.py``), 9600 8O1, multi-byte values little-endian::

    header    (address << 3) | length     address 1-31 (0 broadcast); length 0-6 data
                                          bytes, 7 = a length byte follows
    command   1 byte
    [length]  only when the header says 7
    data      0-255 bytes
    checksum  XOR of every byte before it

Handshake, both directions: the host sends a packet; the generator answers ACK (0x06) or,
on a bad checksum or format, NAK (0x15) and the host sends it again; then the generator
sends its response packet (same address and command) and the host answers ACK, or NAK to
have the response sent again (up to three times here).

Commands of this emulated generator:

=====  ===========================  =========================================
cmd    meaning                      data -> response
=====  ===========================  =========================================
1      RF off                       - -> CSR
2      RF on                        - -> CSR (1 unless in host control mode)
3      regulation mode              1 byte (6 fwd, 7 load, 8 ext) -> CSR
8      power setpoint               2 bytes W -> CSR (4 above the maximum)
14     control mode                 1 byte (2 host, 4 user port, 6 panel) -> CSR
154    report regulation mode       -> 1 byte
155    report control mode          -> 1 byte
162    report process status        -> 4 bytes; byte 0 bit 5 (0x20) = RF on
164    report setpoint, reg. mode   -> 3 bytes: setpoint W (2), mode (1)
165    report forward power         -> 2 bytes W
166    report reflected power       -> 2 bytes W
167    report delivered power       -> 2 bytes W
=====  ===========================  =========================================

Anything else gets CSR 99 (not implemented); data of the wrong size CSR 9. Only the RF-on
bit of the process status is given: the rest of the bit map is generator-specific and
unverified (protocols.md section 12, gap 5). Leaving host control turns RF off, as the
manuals state; the generator starts under front-panel control (6), so a host must claim
control (command 14 with 2) before RF on is accepted (CSR 1 otherwise).

Values come from the reactor's RF source (``set_rf``/``read_plasma``: forward power ramps
and ignites per the plasma model, reflected power tunes down).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sim.devices.serial_bus import LineNoise, LinkState, SerialBusEmulator
from sim.realtime import RealtimePlant

ACK = 0x06
NAK = 0x15
CSR_OK = 0
CSR_WRONG_MODE = 1
CSR_RF_ON = 2
CSR_OUT_OF_RANGE = 4
CSR_BYTE_COUNT = 9
CSR_NOT_IMPLEMENTED = 99
HOST, USER_PORT, FRONT_PANEL = 2, 4, 6
_INTER_BYTE_GAP_S = 0.05
"""A packet whose bytes stop for this long is abandoned (the generator resynchronises)."""


def xor(data: bytes) -> int:
    out = 0
    for b in data:
        out ^= b
    return out


def packet(address: int, command: int, data: bytes = b"") -> bytes:
    """Build a packet, checksum included."""
    n = len(data)
    head = (
        bytes([(address << 3) | n, command]) if n <= 6 else bytes([(address << 3) | 7, command, n])
    )
    body = head + data
    return body + bytes([xor(body)])


@dataclass(frozen=True, slots=True)
class Packet:
    address: int
    command: int
    data: bytes
    valid: bool
    """False when the checksum failed (the generator NAKs it)."""
    length: int


@dataclass(slots=True)
class _Generator:
    component: str
    control_mode: int = FRONT_PANEL
    regulation_mode: int = 6
    setpoint_w: int = 0


class AeBus(SerialBusEmulator[int, Packet]):
    """AE Bus RF generators on one pty (usually one: AE Bus hosts are point-to-point).

    :param plant: the real-time reactor (it must have a plasma source).
    :param path: the pty link (e.g. ``/tmp/aldctl-sim/rf``).
    :param units: ``(address 1-31, "rf")`` pairs.
    :param latency_s: the generator's processing time before its response packet.
    :param baudrate: 9600 (Cesar default) for the wire time; 11 bits a character (8O1).
    :param line_noise: junk before the ACK and the response (None: clean line).
    """

    def __init__(
        self,
        plant: RealtimePlant,
        path: str | Path,
        units: Sequence[tuple[int, str]],
        *,
        latency_s: float = 0.005,
        baudrate: int = 9600,
        line_noise: LineNoise | None = None,
    ) -> None:
        for address, _ in units:
            if not 1 <= address <= 31:
                msg = f"AE Bus addresses are 1-31, not {address}"
                raise ValueError(msg)
        if plant.reactor.config.plasma is None:
            msg = "the reactor has no plasma source to put behind an AE Bus generator"
            raise ValueError(msg)
        super().__init__(
            plant,
            path,
            units,
            latency_s=latency_s,
            baudrate=baudrate,
            bits_per_char=11,
            line_noise=line_noise,
        )
        self.max_power_w = plant.reactor.config.plasma.max_power_w
        self._gens = {a: _Generator(c) for a, c in units}
        self._host_reply: asyncio.Future[int] | None = None
        self._last_byte_t = 0.0
        self.naks_sent = 0
        """Packets this emulator refused (bad checksum or a corrupt-frame fault)."""
        self.naks_received = 0
        """Responses the host asked to have sent again."""

    def _reset(self) -> None:
        for g in self._gens.values():
            # power-up state: panel control, RF off (the reactor's RF stays as it was)
            g.control_mode = FRONT_PANEL
        self._host_reply = None

    def set_control_mode(self, address: int, mode: int) -> None:
        """An operator takes control at the generator (front panel 6, user port 4)."""
        gen = self._gens[address]
        gen.control_mode = mode
        if mode != HOST:
            self._rf(gen, on=False)

    # ---------------------------------------------------------------- input
    def _on_data(self, data: bytes) -> None:
        now = asyncio.get_running_loop().time()
        if self._buffer and now - self._last_byte_t > _INTER_BYTE_GAP_S:
            self._buffer.clear()  # the stub of a packet abandoned mid-way
        self._last_byte_t = now
        super()._on_data(data)

    def _extract(self, buffer: bytearray) -> list[Packet]:
        out: list[Packet] = []
        while buffer:
            waiting = self._host_reply
            if waiting is not None and not waiting.done():
                b = buffer.pop(0)
                waiting.set_result(b)
                if b in (ACK, NAK):
                    continue
                buffer.insert(0, b)  # not a handshake byte: the start of a new packet
            n = buffer[0] & 7
            head = 3 if n == 7 else 2
            if len(buffer) < head:
                break
            size = buffer[2] if n == 7 else n
            total = head + size + 1
            if len(buffer) < total:
                break
            raw = bytes(buffer[:total])
            del buffer[:total]
            out.append(Packet(raw[0] >> 3, raw[1], raw[head:-1], xor(raw) == 0, len(raw)))
        return out

    # ---------------------------------------------------------------- requests
    def _address(self, request: Packet) -> int | None:
        return request.address

    async def _handle(self, request: Packet) -> None:
        address = request.address
        if address == 0:
            for a, gen in self._gens.items():
                if request.valid:
                    self._execute(a, gen, request)
            return
        state = self._link(address)
        if state is None:
            return
        self.requests += 1
        wire = self.wire_time_s(request.length + 1)
        if not request.valid or state.corrupt():
            # a bad checksum, or a corrupt-frame fault damaging the packet on its way in
            self.naks_sent += 1
            await asyncio.sleep(wire)
            self._send_raw(bytes([NAK]))
            return
        await asyncio.sleep(wire)
        self._send_raw(bytes([ACK]))
        data = self._execute(address, self._gens[address], request)
        response = packet(address, request.command, data)
        await self._delay(state, len(response))
        for _ in range(3):
            if not self._answering(address):
                return
            reply = await self._exchange_response(response, state)
            if reply != NAK:
                return
            self.naks_received += 1

    async def _exchange_response(self, response: bytes, state: LinkState) -> int | None:
        """Send the response and wait for the host's ACK/NAK (None: nothing came)."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._host_reply = fut
        try:
            self._send(response, state)
            async with asyncio.timeout(0.2):
                return await fut
        except TimeoutError:
            return None
        finally:
            self._host_reply = None

    def _send_raw(self, data: bytes) -> None:
        # ACK/NAK bytes: line noise may precede them, corruption does not apply
        if self._port is None:
            return
        noise = self.line_noise.draw() if self.line_noise is not None else b""
        self._port.write(noise + data)

    # ---------------------------------------------------------------- commands
    def _rf(self, gen: _Generator, *, on: bool) -> None:
        self.plant.sync().set_rf(on, float(gen.setpoint_w))

    def _execute(self, address: int, gen: _Generator, p: Packet) -> bytes:
        r = self.plant.sync()
        st = r.read_plasma()
        cmd, data = p.command, p.data

        def csr(code: int) -> bytes:
            return bytes([code])

        sets = {1: 0, 2: 0, 3: 1, 8: 2, 14: 1}
        if cmd in sets:
            if len(data) != sets[cmd]:
                return csr(CSR_BYTE_COUNT)
            if cmd == 1:
                self._rf(gen, on=False)
                return csr(CSR_OK)
            if cmd == 2:
                if gen.control_mode != HOST:
                    return csr(CSR_WRONG_MODE)
                self._rf(gen, on=True)
                return csr(CSR_OK)
            if cmd == 3:
                if data[0] not in (6, 7, 8):
                    return csr(CSR_OUT_OF_RANGE)
                if st.on:
                    return csr(CSR_RF_ON)
                gen.regulation_mode = data[0]
                return csr(CSR_OK)
            if cmd == 8:
                watts = struct.unpack("<H", data)[0]
                if watts > self.max_power_w:
                    return csr(CSR_OUT_OF_RANGE)
                gen.setpoint_w = watts
                r.set_rf(st.on, float(watts))
                return csr(CSR_OK)
            if data[0] not in (HOST, USER_PORT, FRONT_PANEL):
                return csr(CSR_OUT_OF_RANGE)
            self.set_control_mode(address, data[0])
            return csr(CSR_OK)
        if data:
            return csr(CSR_BYTE_COUNT)
        if cmd == 154:
            return bytes([gen.regulation_mode])
        if cmd == 155:
            return bytes([gen.control_mode])
        if cmd == 162:
            return bytes([0x20 if st.on else 0x00, 0, 0, 0])
        if cmd == 164:
            return struct.pack("<HB", gen.setpoint_w, gen.regulation_mode)
        if cmd in (165, 166, 167):
            value = {
                165: st.forward_w,
                166: st.reflected_w,
                167: max(0.0, st.forward_w - st.reflected_w),
            }[cmd]
            return struct.pack("<H", min(0xFFFF, round(value)))
        return csr(CSR_NOT_IMPLEMENTED)
