"""Advanced Energy RF generators (Cesar, Paramount, Apex, HPG) over AE Bus (binary).

Packet (protocols.md 5.1; Cesar 1312 manual ch. 4 at manualshive p. 81/116, Apex manual
table 4-6; InstrumentKit ``dressler/cesar_1312.py``); 9600 8O1 on a Cesar, values
little-endian::

    header    (address << 3) | length     address 1-31 (0 = broadcast); length 0-6 data
                                          bytes, 7 = an extra length byte follows
    command   1 byte
    [length]  7-255, only when the header's length is 7
    data
    checksum  XOR of all preceding bytes (so the XOR of a whole packet is 0)

Handshake in both directions: host packet -> generator ACK 0x06 (NAK 0x15 on a bad
checksum: this driver sends the packet again, up to 3 times) -> generator response packet
(same address and command) -> host ACK (or NAK when the response fails its checksum; the
generator then sends it again, up to 3 times). Set commands answer one CSR byte.

Commands used:

=====  ======================  ======================================================
cmd    meaning                 data
=====  ======================  ======================================================
1      RF off                  - -> CSR
2      RF on                   - -> CSR
8      power setpoint          2 bytes W -> CSR
14     control mode            1 byte: 2 host (sent at connect), 4 user port, 6 panel
162    process status          -> 4 bytes, byte 0 bit 5 (0x20) = RF on (Cesar; the
                               rest of the bit map is generator-specific and was not
                               verified: no manual page with it was reached here, so
                               the driver reads only this bit)
164    setpoint and reg. mode  -> 3 bytes: W (2), regulation mode (1)
165    forward power           -> 2 bytes W
166    reflected power         -> 2 bytes W
=====  ======================  ======================================================

CSR codes (-> :class:`~drivers.base.DeviceFault` with the meaning): see :data:`CSR`.

Garbage before the ACK and before the response header is skipped and counted; a response
that fails its checksum is NAKed and counted as a bad frame; a NAK from the generator is
answered by sending the packet again (each resend counted as a retry).

Options: ``port`` (required), ``address`` (1-31, default 1), ``max_power_w`` (default
600), ``baudrate`` (9600), ``parity`` (O), ``stopbits`` (1), ``bytesize`` (8),
``timeout`` (s, 0.5), ``retries`` (2).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

from drivers.base import CommunicationError, DeviceFault, DriverContext, OptionError, PlasmaReading
from drivers.link import RetryPolicy
from drivers.serial_link import (
    PORT_OPTIONS,
    SerialDevice,
    SerialPort,
    check_no_extra,
    shared_port,
)

ACK = 0x06
NAK = 0x15
HANDSHAKE_TRIES = 3
HOST_MODE = 2
RF_ON_BIT = 0x20
CSR = {
    0: "OK",
    1: "wrong control mode (not in host control)",
    2: "not allowed while RF is on",
    4: "value out of range",
    5: "RF off by the user port interlock",
    7: "active fault",
    9: "wrong number of data bytes",
    19: "recipe active",
    50: "pulse frequency out of range",
    51: "pulse duty cycle out of range",
    99: "command not implemented",
}
"""Command status response codes (Cesar/Apex manuals, InstrumentKit ``Cesar1312``)."""
_OPTIONS = PORT_OPTIONS | {"address", "max_power_w", "timeout", "retries"}


def xor(data: bytes) -> int:
    out = 0
    for b in data:
        out ^= b
    return out


def packet(address: int, command: int, data: bytes = b"") -> bytes:
    """An AE Bus packet, checksum included."""
    n = len(data)
    if n > 255:
        msg = "AE Bus data is at most 255 bytes"
        raise ValueError(msg)
    head = [(address << 3) | n, command] if n <= 6 else [(address << 3) | 7, command, n]
    body = bytes(head) + data
    return body + bytes([xor(body)])


class AeBusGenerator(SerialDevice):
    """An AE Bus RF generator (``PlasmaSource``)."""

    def __init__(
        self, name: str, port: SerialPort, policy: RetryPolicy, *, address: int, max_power_w: float
    ) -> None:
        super().__init__(name, port, policy)
        self.address = address
        self.max_power_w = max_power_w

    # ---------------------------------------------------------------- wire
    async def _exchange(self, port: SerialPort, command: int, data: bytes = b"") -> bytes:
        """One command with both handshakes; returns the response's data bytes."""
        request = packet(self.address, command, data)
        for attempt in range(HANDSHAKE_TRIES):
            if attempt:
                self._health.retries += 1
            port.write(request)
            await port.skip_until(lambda b: b in (ACK, NAK))
            if await port.read_byte() == ACK:
                break
        else:
            msg = f"command {command}: the generator NAKed it {HANDSHAKE_TRIES} times"
            raise CommunicationError(self.name, msg)
        for _ in range(HANDSHAKE_TRIES):
            response = await self._read_packet(port, command)
            if response is not None:
                port.write(bytes([ACK]))
                return response
            self._health.bad_frames += 1
            port.write(bytes([NAK]))
            # whatever is left is the rest of the damaged packet; the resend comes clean
            port.discard_input()
        msg = f"command {command}: {HANDSHAKE_TRIES} responses failed their checksum"
        raise CommunicationError(self.name, msg)

    async def _read_packet(self, port: SerialPort, command: int) -> bytes | None:
        """The response's data, or None when its checksum fails."""
        await port.skip_until(lambda b: b >> 3 == self.address)
        head = await port.read_exactly(2)
        n = head[0] & 7
        if n == 7:
            head += await port.read_exactly(1)
            n = head[2]
        rest = await port.read_exactly(n + 1)
        raw = head + rest
        if xor(raw) != 0 or raw[1] != command:
            return None
        return rest[:-1]

    async def _command(self, port: SerialPort, command: int, data: bytes = b"") -> None:
        """A set command: raise DeviceFault unless the CSR is 0."""
        reply = await self._exchange(port, command, data)
        if len(reply) != 1:
            msg = f"command {command} answered {reply.hex()} instead of one CSR byte"
            raise DeviceFault(self.name, msg)
        if reply[0] != 0:
            meaning = CSR.get(reply[0], "unknown code")
            raise DeviceFault(self.name, f"command {command} refused: CSR {reply[0]} ({meaning})")

    async def _report(self, port: SerialPort, command: int, size: int) -> bytes:
        reply = await self._exchange(port, command)
        if len(reply) == size:
            return reply
        if len(reply) == 1:
            meaning = CSR.get(reply[0], "unknown code")
            raise DeviceFault(self.name, f"report {command} refused: CSR {reply[0]} ({meaning})")
        msg = f"report {command}: {len(reply)} data bytes, expected {size}"
        raise DeviceFault(self.name, msg)

    # ---------------------------------------------------------------- Device
    async def connect(self) -> None:
        """Open the port and take host control (command 14 with 2), which RF on needs."""
        await self._open_link()
        await self._request(lambda port: self._command(port, 14, bytes([HOST_MODE])))

    async def _resume(self, port: SerialPort) -> None:
        # a generator that was power-cycled (or re-cabled) is back under panel control
        await self._command(port, 14, bytes([HOST_MODE]))

    async def safe_state(self) -> None:
        """RF off (idempotent; raises if the generator cannot be told)."""
        await self.rf_off()

    # ---------------------------------------------------------------- PlasmaSource
    async def set_power(self, watts: float) -> None:
        if not math.isfinite(watts) or not 0.0 <= watts <= self.max_power_w:
            msg = f"power {watts:g} W outside 0..{self.max_power_w:g} W"
            raise DeviceFault(self.name, msg)
        data = struct.pack("<H", round(watts))
        await self._request(lambda port: self._command(port, 8, data))

    async def rf_on(self) -> None:
        await self._request(lambda port: self._command(port, 2))

    async def rf_off(self) -> None:
        await self._request(lambda port: self._command(port, 1))

    async def read_plasma(self) -> PlasmaReading:
        async with self._bus():
            status = await self._transact(lambda port: self._report(port, 162, 4))
            sp = await self._transact(lambda port: self._report(port, 164, 3))
            fwd = await self._transact(lambda port: self._report(port, 165, 2))
            refl = await self._transact(lambda port: self._report(port, 166, 2))
        setpoint, _mode = struct.unpack("<HB", sp)
        return PlasmaReading(
            rf_on=bool(status[0] & RF_ON_BIT),
            setpoint_w=float(setpoint),
            forward_w=float(struct.unpack("<H", fwd)[0]),
            reflected_w=float(struct.unpack("<H", refl)[0]),
        )


def create(name: str, options: Mapping[str, Any], ctx: DriverContext) -> AeBusGenerator:
    """Build an AE Bus generator from its tool-config options (see the module docstring)."""
    opts = dict(options)
    check_no_extra(opts, set(_OPTIONS), "aebus")
    address = opts.pop("address", 1)
    if isinstance(address, bool) or not isinstance(address, int) or not 1 <= address <= 31:
        msg = f"option 'address' must be an AE Bus address 1-31, not {address!r}"
        raise OptionError("address", msg)
    max_w = opts.pop("max_power_w", 600.0)
    if isinstance(max_w, bool) or not isinstance(max_w, int | float) or not 0 < max_w <= 0xFFFF:
        msg = f"option 'max_power_w' must be a positive number of W up to 65535, not {max_w!r}"
        raise OptionError("max_power_w", msg)
    policy = RetryPolicy.from_options(opts)
    port = shared_port(ctx, name, opts, baudrate=9600, parity="O", address=str(address))
    return AeBusGenerator(name, port, policy, address=address, max_power_w=float(max_w))
