"""The shared Modbus transport (TCP and RTU) under every Modbus driver, over pymodbus 3.16.

Every pymodbus import of the project lives here (the pin is ``pymodbus~=3.16.1``: its API
moves every minor release), so a driver speaks to a :class:`ModbusUnit` with plain Python
values and never sees a pymodbus object.

One endpoint, one client, one lock
    A :class:`ModbusLink` is one endpoint: a Modbus TCP server (``host:port``) or one serial
    line (``/dev/ttyUSB0``, a pseudo-terminal, ``socket://host:port`` for an RS-485 device
    server). Every device on it shares the link through ``DriverContext.shared`` (keyed by
    the endpoint URL): one pymodbus client, because pymodbus opens serial ports exclusively,
    and one :class:`asyncio.Lock`, held for a whole transaction *including its retries*, so
    units on a half-duplex bus never interleave and a slow unit never makes another one time
    out while it waits for the bus.

One retry policy
    pymodbus' own retries are off (``retries=0``), its automatic reconnection is off
    (``reconnect_delay=0``) and its response timeout is set well beyond the driver's, so
    :func:`drivers.link.transact` is the single place that times out, retries with backoff
    and reconnects (close and reopen: a TCP server that restarted, a USB adapter that was
    replugged, a pseudo-terminal that was recreated).

Errors
    Every failure is raised as the :class:`~drivers.base.DeviceError` tree naming the device:
    an exception response is a :class:`ModbusFault` (a ``DeviceFault`` carrying the Modbus
    exception code and its meaning; not retried); no answer within the attempt's timeout is
    a ``DeviceTimeout``; a dropped connection, a port that cannot be opened, a frame that
    fails pymodbus' CRC or cannot be decoded, or a reply that does not match the request (a
    stale reply after a timeout) is a ``CommunicationError`` (retried).

Bad frames
    pymodbus checks the RTU CRC and silently drops a frame that fails it (the request would
    then only time out). The link installs framers that report those drops: the frame is
    counted in ``Health.bad_frames`` of the device whose transaction was on the line, bytes
    discarded around a good frame in ``Health.garbage_bytes``, and the transaction fails at
    once with a ``CommunicationError`` instead of waiting out its timeout. On a half-duplex
    bus the slave has answered by then, so nothing else is coming.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import math
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

from drivers.base import (
    CommunicationError,
    DeviceError,
    DeviceFault,
    DeviceTimeout,
    DriverContext,
    Health,
    OptionError,
    unknown_options,
)
from drivers.link import RetryPolicy, transact

# pymodbus logs protocol oddities at ERROR level straight to the user's terminal (a reply
# that arrives after its request was cancelled by an abort, say). This module turns every
# such condition into a DeviceError or a Health counter, so the library's own log is noise.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

__all__ = [
    "EXCEPTION_MEANINGS",
    "Endpoint",
    "ModbusFault",
    "ModbusLink",
    "ModbusUnit",
    "Options",
    "SerialSettings",
    "WordOrder",
    "float_to_registers",
    "registers_to_float",
    "signed16",
    "unsigned16",
]

WordOrder = Literal["big", "little"]

EXCEPTION_MEANINGS: Mapping[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "slave device failure",
    5: "acknowledge",
    6: "slave device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
"""Modbus Application Protocol v1.1b3, section 7."""

_CLIENT_TIMEOUT_S = 30.0
"""pymodbus' own response/connect timeout: far beyond any driver's per-attempt timeout, so
``transact`` always fires first (and pymodbus never counts "no response" towards closing a
connection on its own)."""


SETTLE_MIN_S = 0.05
"""The least quiet time after an abandoned serial request: a short timeout (a fast poll)
says nothing about how late the device's answer may still come (a slave's turnaround
under its own load); 50 ms is a few frames at 19200 baud and costs nothing when no
request is abandoned."""


class ModbusFault(DeviceFault):
    """The device answered with a Modbus exception response (not retried)."""

    def __init__(self, device: str, code: int, operation: str, hint: str = "") -> None:
        meaning = EXCEPTION_MEANINGS.get(code, "unknown exception")
        text = f"{operation}: Modbus exception {code:02d} ({meaning})"
        super().__init__(device, f"{text}; {hint}" if hint else text)
        self.code = code
        self.operation = operation


# --------------------------------------------------------------------------- values


def signed16(word: int) -> int:
    """A register read as two's complement (Eurotherm temperatures below zero)."""
    return word - 0x10000 if word & 0x8000 else word


def unsigned16(value: int) -> int:
    """A signed value as the register that carries it; ValueError outside int16."""
    if not -0x8000 <= value <= 0x7FFF:
        msg = f"{value} does not fit a signed 16-bit register"
        raise ValueError(msg)
    return value & 0xFFFF


def registers_to_float(regs: Sequence[int], word_order: WordOrder = "big") -> float:
    """IEEE-754 single from two registers; ``big`` = high word first (ABCD).

    Returned as the shortest decimal that is the same single (31.2, not
    31.200000762939453): what the instrument meant, and what it displays.
    """
    hi, lo = (regs[0], regs[1]) if word_order == "big" else (regs[1], regs[0])
    raw = struct.pack(">HH", hi, lo)
    value: float = struct.unpack(">f", raw)[0]
    if not math.isfinite(value):
        return value
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.pack(">f", short) == raw:
            return short
    return value


def float_to_registers(value: float, word_order: WordOrder = "big") -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo] if word_order == "big" else [lo, hi]


# --------------------------------------------------------------------------- options


class Options:
    """Validated reading of a driver's options; every error names the option."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._opts: dict[str, object] = dict(options)
        self._known: set[str] = set()
        """Every option name asked for: what :meth:`done` suggests for a misspelt one."""

    def _take(self, name: str, default: object) -> object:
        self._known.add(name)
        return self._opts.pop(name, default)

    def _required(self, name: str) -> OptionError:
        # A required option missing is most often a misspelt one: point at that.
        close = difflib.get_close_matches(name, sorted(self._opts), n=1, cutoff=0.6)
        if close:
            hint = f"'{close[0]}' is not an option of this driver: did you mean '{name}'?"
            return OptionError(close[0], f"option '{name}' is required", hint)
        return OptionError(name, f"option '{name}' is required")

    def policy(self, **defaults: float) -> RetryPolicy:
        """``timeout`` (s per attempt) and ``retries`` (extra attempts)."""
        self._known.update(("timeout", "retries"))
        return RetryPolicy.from_options(self._opts, **defaults)

    def integer(self, name: str, default: int | None, lo: int, hi: int) -> int:
        value = self._take(name, default)
        if value is None:
            raise self._required(name)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            msg = f"option '{name}' must be a whole number from {lo} to {hi} (got {value!r})"
            raise OptionError(name, msg)
        return value

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self._take(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not lo <= value <= hi
        ):
            msg = f"option '{name}' must be a number from {lo:g} to {hi:g} (got {value!r})"
            raise OptionError(name, msg)
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self._take(name, default)
        if not isinstance(value, bool):
            msg = f"option '{name}' must be true or false (got {value!r})"
            raise OptionError(name, msg)
        return value

    def text(self, name: str, default: str | None, choices: Sequence[str] | None = None) -> str:
        value = self._take(name, default)
        if value is None:
            raise self._required(name)
        if not isinstance(value, str) or not value:
            msg = f"option '{name}' must be a non-empty string (got {value!r})"
            raise OptionError(name, msg)
        if choices is not None and value not in choices:
            msg = f"option '{name}' must be one of {', '.join(choices)} (got {value!r})"
            raise OptionError(name, msg)
        return value

    def serial_endpoint(self) -> Endpoint:
        """``port`` (device path or pyserial URL), ``baudrate``, ``parity``, ``stopbits``."""
        port = self.text("port", None)
        settings = SerialSettings(
            baudrate=self.integer("baudrate", 19200, 300, 4_000_000),
            parity=self.text("parity", "N", ("N", "E", "O")),
            stopbits=self.integer("stopbits", 1, 1, 2),
        )
        return Endpoint.serial(port, settings)

    def tcp_endpoint(self) -> Endpoint:
        """``host`` and ``port`` (default 502)."""
        return Endpoint.tcp(self.text("host", None), self.integer("port", 502, 1, 65535))

    def done(self, driver: str) -> None:
        """Reject whatever option nobody read (typos must not pass silently)."""
        error = unknown_options(self._opts, self._known, driver)
        if error is not None:
            raise error


# --------------------------------------------------------------------------- endpoints


@dataclass(frozen=True, slots=True)
class SerialSettings:
    baudrate: int = 19200
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a link goes: ``kind`` "tcp" (``address`` = host, ``port``) or "serial"
    (``address`` = device path or pyserial URL, ``settings`` the line settings)."""

    kind: Literal["tcp", "serial"]
    address: str
    port: int = 0
    settings: SerialSettings | None = None

    @classmethod
    def tcp(cls, host: str, port: int = 502) -> Endpoint:
        return cls("tcp", host, port)

    @classmethod
    def serial(cls, port: str, settings: SerialSettings | None = None) -> Endpoint:
        return cls("serial", port, 0, settings or SerialSettings())

    @property
    def key(self) -> str:
        """The ``DriverContext.shared`` key: the bus URL, as every bus driver keys it."""
        # a serial line's key is the one the ASCII drivers' SerialPort uses (serial_link):
        # two protocols on one port are then found, and refused, by whichever comes second
        return (
            f"modbus-tcp://{self.address}:{self.port}"
            if self.kind == "tcp"
            else f"serial:{self.address}"
        )

    def __str__(self) -> str:
        return f"{self.address}:{self.port}" if self.kind == "tcp" else self.address


# --------------------------------------------------------------------------- framers


class _Watcher(Protocol):
    """What the framers report to (the link)."""

    def bad_frame(self, why: str, nbytes: int) -> None: ...

    def garbage(self, nbytes: int) -> None: ...


class _WatchedRTU(FramerRTU):
    """pymodbus' RTU framer (and its CRC check), reporting what it throws away."""

    def __init__(self, watcher: _Watcher) -> None:
        super().__init__(DecodePDU(False))
        self._watcher = watcher

    def decode(self, data: bytes) -> tuple[int, int, int, bytes]:
        used, dev_id, tid, frame = super().decode(data)
        if used and not frame:
            # FramerRTU.decode consumed the buffer without a frame: the CRC check failed
            self._watcher.bad_frame("CRC mismatch", used)
        elif frame and used > len(frame) + 3:
            # a good frame, with line noise before or after it (unit id + fc..data + CRC)
            self._watcher.garbage(used - len(frame) - 3)
        return used, dev_id, tid, frame

    def handleFrame(  # noqa: N802 (pymodbus' name)
        self, data: bytes, exp_devid: int, exp_tid: int
    ) -> tuple[int, ModbusPDU | None]:
        try:
            return super().handleFrame(data, exp_devid, exp_tid)
        except ModbusIOException as exc:
            # a CRC-valid frame whose PDU does not decode; left alone it would escape from
            # the protocol's data_received and make asyncio abort the transport
            self._watcher.bad_frame(f"undecodable reply ({exc.string})", len(data))
            return len(data), None


class _WatchedSocket(FramerSocket):
    """pymodbus' Modbus TCP (MBAP) framer, reporting garbled headers and PDUs."""

    def __init__(self, watcher: _Watcher) -> None:
        super().__init__(DecodePDU(False))
        self._watcher = watcher

    def decode(self, data: bytes) -> tuple[int, int, int, bytes]:
        if len(data) >= self.MIN_SIZE and data[2:4] != b"\x00\x00":
            # not Modbus (protocol id must be 0); pymodbus would keep waiting on it
            self._watcher.bad_frame("bad MBAP protocol id", len(data))
            return len(data), 0, 0, self.EMPTY
        return super().decode(data)

    def handleFrame(  # noqa: N802 (pymodbus' name)
        self, data: bytes, exp_devid: int, exp_tid: int
    ) -> tuple[int, ModbusPDU | None]:
        try:
            return super().handleFrame(data, exp_devid, exp_tid)
        except ModbusIOException as exc:
            self._watcher.bad_frame(f"undecodable reply ({exc.string})", len(data))
            return len(data), None


# --------------------------------------------------------------------------- link

Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class ModbusLink:
    """One Modbus endpoint shared by every device on it (see the module docstring)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.lock = asyncio.Lock()
        self._client: Client | None = None
        self._users: set[str] = set()
        self._healths: dict[str, Health] = {}
        self._interrupt: asyncio.Future[DeviceError] | None = None
        self._current: tuple[str, Health] | None = None
        self._stray: set[asyncio.Task[Any]] = set()
        self._lost = False
        """The connection dropped under us (not closed by us): reopening it is a reconnect."""
        self.late_reply_possible = False
        """A request was abandoned unanswered: its reply may still come (serial lines)."""
        self.stray_bad_frames = 0
        """Bad frames seen while no transaction was on the line (noise between requests)."""
        self.units: dict[int, str] = {}
        """Unit id -> the device configured at it (see :meth:`claim`)."""

    def claim(self, unit: int, device: str, option: str) -> None:
        """Reserve unit id ``unit`` on this bus for ``device`` (two configured devices at
        one unit id would each take the other's replies)."""
        other = self.units.get(unit)
        if other is not None and other != device:
            msg = f"option '{option}': unit {unit} on {self.endpoint} is already {other}'s"
            raise OptionError(option, msg, "every device on one bus needs its own address")
        self.units[unit] = device

    @classmethod
    def shared(cls, ctx: DriverContext, endpoint: Endpoint) -> ModbusLink:
        """The link for ``endpoint`` in this tool, created on first use.

        Devices on one serial line must agree on its settings; a different driver family
        already holding the same port is refused too.
        """
        existing = ctx.shared.get(endpoint.key)
        if existing is None:
            link = cls(endpoint)
            ctx.shared[endpoint.key] = link
            return link
        if not isinstance(existing, ModbusLink):
            users = ", ".join(getattr(existing, "devices", ())) or "a device"
            msg = f"option 'port': {endpoint} is already used by {users}, not a Modbus driver"
            raise OptionError("port", msg, "one serial line speaks one protocol")
        if existing.endpoint != endpoint:
            msg = (
                f"option 'baudrate'/'parity'/'stopbits': {endpoint} is already configured as "
                f"{existing.endpoint.settings}, and every device on one line must agree"
            )
            raise ValueError(msg)
        return existing

    # -- what the framers and pymodbus report ------------------------------------------
    def bad_frame(self, why: str, nbytes: int) -> None:
        if self._current is None:
            self.stray_bad_frames += 1
            return
        device, health = self._current
        health.bad_frames += 1
        health.garbage_bytes += nbytes
        self._fail_current(CommunicationError(device, f"bad frame from {self.endpoint}: {why}"))

    def garbage(self, nbytes: int) -> None:
        if self._current is not None:
            self._current[1].garbage_bytes += nbytes

    def _on_connection(self, up: bool) -> None:
        if up:
            return
        self._lost = True
        for health in self._healths.values():
            health.connected = False
        if self._current is not None:
            self._fail_current(CommunicationError(self._current[0], f"{self.endpoint}: link lost"))

    def _fail_current(self, error: DeviceError) -> None:
        if self._interrupt is not None and not self._interrupt.done():
            self._interrupt.set_result(error)

    # -- open / close -------------------------------------------------------------------
    def _new_client(self) -> Client:
        ep = self.endpoint
        client: Client
        if ep.kind == "tcp":
            client = AsyncModbusTcpClient(
                ep.address,
                port=ep.port,
                name=f"modbus {ep}",
                reconnect_delay=0,
                timeout=_CLIENT_TIMEOUT_S,
                retries=0,
                trace_connect=self._on_connection,
            )
            client.ctx.framer = _WatchedSocket(self)
        else:
            s = ep.settings or SerialSettings()
            client = AsyncModbusSerialClient(
                ep.address,
                baudrate=s.baudrate,
                bytesize=s.bytesize,
                parity=s.parity,
                stopbits=s.stopbits,
                name=f"modbus {ep}",
                reconnect_delay=0,
                timeout=_CLIENT_TIMEOUT_S,
                retries=0,
                trace_connect=self._on_connection,
            )
            client.ctx.framer = _WatchedRTU(self)
        return client

    async def _ensure_open(self, device: str, health: Health | None = None) -> Client:
        """The connected client, opening it first if needed (a port that was pulled and is
        back, a server that restarted); call with the lock held."""
        if self._client is None:
            self._client = self._new_client()
        client = self._client
        if not client.connected:
            if not await client.connect():
                msg = f"cannot open {self.endpoint}"
                raise CommunicationError(device, msg)
            if self._lost and health is not None:
                health.reconnects += 1
            self._lost = False
            for each in self._healths.values():
                each.connected = True
        return client

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def reopen(self, device: str) -> None:
        """Close and reopen the endpoint (``transact``'s reconnect, which counts it)."""
        self._drop()
        self._lost = False
        try:
            await self._ensure_open(device)
        except DeviceError:
            self._lost = True  # still down: whoever gets it back up counts the reconnect
            raise

    def attach(self, device: str, health: Health) -> None:
        self._healths[device] = health

    def use(self, device: str) -> None:
        self._users.add(device)

    def release(self, device: str) -> None:
        """The device is done with the link; the last one out closes it."""
        self._users.discard(device)
        if not self._users:
            self._drop()
            self._lost = False
            for health in self._healths.values():
                health.connected = False

    # -- one request on the wire --------------------------------------------------------
    async def execute(
        self,
        device: str,
        health: Health,
        request: Callable[[Client], Awaitable[ModbusPDU]],
    ) -> ModbusPDU:
        """Send one request and return its reply PDU; call with the lock held.

        The request runs as a task beside an interrupt future that the framers and the
        connection callback complete, so a garbled frame or a dropped connection fails the
        transaction at once; the caller's timeout cancels both.
        """
        client = await self._ensure_open(device, health)
        loop = asyncio.get_running_loop()
        interrupt: asyncio.Future[DeviceError] = loop.create_future()
        self._interrupt = interrupt
        self._current = (device, health)

        async def run() -> ModbusPDU:
            return await request(client)

        task: asyncio.Task[ModbusPDU] = loop.create_task(run(), name=f"modbus request {device}")
        try:
            await asyncio.wait((task, interrupt), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._interrupt = None
            self._current = None
            if not task.done():
                task.cancel()
                # keep a reference until it has unwound, and swallow its outcome
                self._stray.add(task)
                task.add_done_callback(self._reap)
                if not interrupt.done():
                    # given up by the caller's timeout, not failed by a frame that came
                    # back garbled: the answer may still be on its way
                    self.late_reply_possible = True
            if not interrupt.done():
                interrupt.cancel()
        if not task.done():
            raise interrupt.result()
        try:
            return task.result()
        except ModbusIOException as exc:
            if "No response" in exc.string:
                raise DeviceTimeout(device, f"{self.endpoint}: no reply") from None
            raise CommunicationError(device, f"{self.endpoint}: {exc.string}") from None
        except ConnectionException as exc:
            raise CommunicationError(device, f"{self.endpoint}: {exc.string}") from None
        except ModbusException as exc:
            raise CommunicationError(device, f"{self.endpoint}: {exc.string}") from None

    async def settle(self, quiet_s: float) -> None:
        """After an abandoned request on a serial line, keep the line quiet for ``quiet_s``
        before anyone sends again; call with the lock held.

        An RTU reply carries no transaction id and no register address, so a late answer
        to one request is indistinguishable from the answer to the next request of the same
        shape to the same unit (protocols.md 0, "stale replies"). Whatever arrives while
        nothing is outstanding is dropped by pymodbus, so waiting out the stragglers here,
        before the bus is released, keeps them from being taken for another answer.
        """
        if self.late_reply_possible and self.endpoint.kind == "serial":
            await asyncio.sleep(quiet_s)
        self.late_reply_possible = False

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._stray.discard(task)
        if not task.cancelled():
            task.exception()


# --------------------------------------------------------------------------- one unit


class ModbusUnit:
    """One device (Modbus unit id) on a link, with its retry policy and health.

    Each method is one transaction under ``transact`` with the link's lock held: timeout per
    attempt, retries with backoff for transient errors, reconnect in between, and the
    device named in every error.
    """

    def __init__(
        self,
        name: str,
        link: ModbusLink,
        unit: int,
        policy: RetryPolicy,
        health: Health,
        *,
        hints: Mapping[int, str] | None = None,
    ) -> None:
        """``hints``: what an exception code means on this device, added to its error."""
        self.name = name
        self.hints = dict(hints or {})
        self.link = link
        self.unit = unit
        self.policy = policy
        self.health = health
        link.attach(name, health)

    async def connect(self) -> None:
        """Open the endpoint (shared: opened once for all its devices)."""
        self.link.use(self.name)
        async with self.link.lock:
            await transact(self.name, self.health, self._open, self.policy)

    async def _open(self) -> None:
        await self.link._ensure_open(self.name)

    async def close(self) -> None:
        async with self.link.lock:
            self.link.release(self.name)
        self.health.connected = False

    async def _reconnect(self) -> None:
        await self.link.reopen(self.name)

    async def _transact(
        self,
        operation: str,
        request: Callable[[Client], Awaitable[ModbusPDU]],
        check: Callable[[ModbusPDU], str | None],
    ) -> ModbusPDU:
        async def attempt() -> ModbusPDU:
            reply = await self.link.execute(self.name, self.health, request)
            if isinstance(reply, ExceptionResponse) or reply.isError():
                code = reply.exception_code
                raise ModbusFault(self.name, code, operation, self.hints.get(code, ""))
            problem = check(reply)
            if problem is not None:
                # most likely the late answer to an earlier request that timed out
                msg = f"{operation}: reply does not match the request ({problem})"
                raise CommunicationError(self.name, msg)
            return reply

        # A serial port that failed is reopened by the next attempt itself; a TCP connection
        # can also hang half-open (the server died without closing it), so after a timeout
        # or a garbled reply it is closed and opened afresh.
        reconnect = self._reconnect if self.link.endpoint.kind == "tcp" else None
        async with self.link.lock:
            try:
                return await transact(
                    self.name, self.health, attempt, self.policy, reconnect=reconnect
                )
            except CommunicationError:
                self.health.connected = self.link._client is not None and bool(
                    self.link._client.connected
                )
                raise
            finally:
                # a reply that missed the timeout usually comes within another one or two
                await self.link.settle(max(2 * self.policy.timeout_s, SETTLE_MIN_S))

    # -- reads ---------------------------------------------------------------------------
    async def read_holding(self, address: int, count: int = 1) -> list[int]:
        """FC03."""
        reply = await self._transact(
            f"read holding register {address} x{count}",
            lambda c: c.read_holding_registers(address, count=count, device_id=self.unit),
            lambda r: _expect(r, 3, count=count),
        )
        return list(reply.registers)

    async def read_input(self, address: int, count: int = 1) -> list[int]:
        """FC04."""
        reply = await self._transact(
            f"read input register {address} x{count}",
            lambda c: c.read_input_registers(address, count=count, device_id=self.unit),
            lambda r: _expect(r, 4, count=count),
        )
        return list(reply.registers)

    async def read_coils(self, address: int, count: int = 1) -> list[bool]:
        """FC01."""
        reply = await self._transact(
            f"read coil {address} x{count}",
            lambda c: c.read_coils(address, count=count, device_id=self.unit),
            lambda r: _expect(r, 1, bits=count),
        )
        return list(reply.bits[:count])

    async def read_discrete(self, address: int, count: int = 1) -> list[bool]:
        """FC02."""
        reply = await self._transact(
            f"read discrete input {address} x{count}",
            lambda c: c.read_discrete_inputs(address, count=count, device_id=self.unit),
            lambda r: _expect(r, 2, bits=count),
        )
        return list(reply.bits[:count])

    # -- writes --------------------------------------------------------------------------
    async def write_register(self, address: int, value: int) -> None:
        """FC06."""
        await self._transact(
            f"write register {address} = {value}",
            lambda c: c.write_register(address, value, device_id=self.unit),
            lambda r: _expect(r, 6, address=address),
        )

    async def write_registers(self, address: int, values: Sequence[int]) -> None:
        """FC16."""
        vals = list(values)
        await self._transact(
            f"write registers {address} = {vals}",
            lambda c: c.write_registers(address, vals, device_id=self.unit),
            lambda r: _expect(r, 16, address=address),
        )

    async def write_coil(self, address: int, value: bool) -> None:
        """FC05."""
        await self._transact(
            f"write coil {address} = {int(value)}",
            lambda c: c.write_coil(address, value, device_id=self.unit),
            lambda r: _expect(r, 5, address=address),
        )

    async def write_coils(self, address: int, values: Sequence[bool]) -> None:
        """FC15."""
        vals = list(values)
        await self._transact(
            f"write coils {address} x{len(vals)}",
            lambda c: c.write_coils(address, vals, device_id=self.unit),
            lambda r: _expect(r, 15, address=address),
        )


def _expect(
    reply: ModbusPDU,
    function_code: int,
    *,
    count: int | None = None,
    bits: int | None = None,
    address: int | None = None,
) -> str | None:
    """Why ``reply`` cannot be the answer to the request, or None."""
    if reply.function_code != function_code:
        return f"function code {reply.function_code}, expected {function_code}"
    if count is not None and len(reply.registers) != count:
        return f"{len(reply.registers)} registers, expected {count}"
    if bits is not None and not bits <= len(reply.bits) < bits + 8:
        return f"{len(reply.bits)} bits, expected {bits}"
    if address is not None and reply.address != address:
        return f"echoes address {reply.address}, expected {address}"
    return None
