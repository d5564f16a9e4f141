"""The serial transport every serial driver shares: one port per URL, one lock per bus.

A port is named by a URL the way pyserial names it: a device path (``/dev/ttyUSB0``, a
pseudo-terminal's link such as ``/tmp/aldctl-sim/gauge``) or ``socket://host:port`` for a
serial device server (Moxa NPort, an Alicat TCP gateway). Several instruments on one RS-485
bus (Alicat units A and B, Pfeiffer gauges 001 and 002) share one :class:`SerialPort`: the
first driver built for a URL stores it in ``DriverContext.shared`` and the others reuse it,
so a port is never opened twice (numat/alicat #5 and #144 are exactly that bug).

What the link guarantees (protocols.md section 0):

* **One transaction at a time per bus.** :class:`SerialDevice` holds the port's
  ``asyncio.Lock`` for a whole exchange, retries included, so a reply can only belong to
  the request just sent. The lock is taken *outside* the per-attempt timeout: a healthy
  unit queued behind a silent one waits, it does not time out.
* **No stale replies.** Input is discarded (our buffer and the OS buffer) before every
  request, so a reply that came in after its timeout is not read as the next answer. (One
  that arrives only after the next request has gone out cannot be told from the answer by
  timing; the framers check what the protocol lets them: unit ID, address, parameter or
  command echo.)
* **Garbage is counted, not fatal.** Framers skip junk before and between frames (cheap
  USB-RS485 adapters emit 0xFF runs, py-pfeiffer-vacuum-protocol #1) and report it through
  :meth:`SerialPort.count_garbage`; malformed or checksum-failing frames raise
  :class:`FrameError`, which is counted in ``Health.bad_frames`` and retried.
* **Reconnect.** A port whose transport was lost (the USB adapter unplugged, the emulator
  restarted and its pseudo-terminal replaced, the TCP server gone) is reopened at the next
  attempt; so is one that stayed silent for ``reopen_after`` timeouts in a row (a TCP link
  to a device server can hang half-open without ever reporting an error).

Transport: ``serial_asyncio_fast.create_serial_connection`` with our own protocol object,
the layer under ``open_serial_connection``. The StreamReader that ``open_serial_connection``
returns has no public way to discard what it has buffered, and dropping stale input before
each request is the point of this module.

Pseudo-terminals cannot carry parity (Linux rejects PARENB on a pty with EINVAL), so a port
whose device is a pty is opened 8N1 whatever the options say; the emulators on the other end
do not check parity either (sim.devices.pty).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import stat
import termios
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import serial
import serial_asyncio_fast

from drivers.base import (
    CommunicationError,
    DriverContext,
    Health,
    OptionError,
    unknown_options,
)
from drivers.link import RetryPolicy, transact

T = TypeVar("T")

_PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_STOPBITS = {1: serial.STOPBITS_ONE, 1.5: serial.STOPBITS_ONE_POINT_FIVE, 2: serial.STOPBITS_TWO}
_PTY_MAJORS = range(136, 144)
"""Linux "Unix98 PTY slave" device majors (Documentation/admin-guide/devices.txt)."""

PORT_OPTIONS = frozenset({"port", "baudrate", "bytesize", "parity", "stopbits"})
"""Options :meth:`SerialSettings.from_options` and :func:`shared_port` consume."""


class FrameError(CommunicationError):
    """A reply that is not a valid frame: bad checksum/CRC, wrong length, unparseable.

    Transient (a garbled byte on the line): counted in ``Health.bad_frames`` and retried.
    """


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """Line settings of a port (what the instrument's manual lists as e.g. "9600 8O1")."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1

    @classmethod
    def from_options(
        cls,
        options: dict[str, Any],
        *,
        baudrate: int,
        parity: str = "N",
        bytesize: int = 8,
        stopbits: float = 1,
    ) -> SerialSettings:
        """Pop ``baudrate``/``bytesize``/``parity``/``stopbits`` from ``options`` (defaults
        are the instrument's factory settings); ValueError names a bad option."""
        baud = options.pop("baudrate", baudrate)
        if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
            msg = f"option 'baudrate' must be a positive whole number, not {baud!r}"
            raise OptionError("baudrate", msg)
        size = options.pop("bytesize", bytesize)
        if isinstance(size, bool) or not isinstance(size, int) or size not in (5, 6, 7, 8):
            msg = f"option 'bytesize' must be 5, 6, 7 or 8, not {size!r}"
            raise OptionError("bytesize", msg)
        par = options.pop("parity", parity)
        if not isinstance(par, str) or par.upper()[:1] not in _PARITIES:
            msg = f"option 'parity' must be N, E or O (none, even, odd), not {par!r}"
            raise OptionError("parity", msg)
        stop = options.pop("stopbits", stopbits)
        if isinstance(stop, bool) or not isinstance(stop, int | float) or stop not in _STOPBITS:
            msg = f"option 'stopbits' must be 1, 1.5 or 2, not {stop!r}"
            raise OptionError("stopbits", msg)
        return cls(baud, int(size), par.upper()[:1], float(stop))

    def describe(self) -> str:
        stop = f"{self.stopbits:g}"
        return f"{self.baudrate} {self.bytesize}{self.parity}{stop}"

    def char_time_s(self) -> float:
        """Seconds on the wire per character (start + data + parity + stop bits)."""
        bits = 1 + self.bytesize + (self.parity != "N") + self.stopbits
        return bits / self.baudrate


def _is_pty(url: str) -> bool:
    """Whether ``url`` names a pseudo-terminal slave (through any symlinks)."""
    if "://" in url:
        return False
    try:
        st = os.stat(url)
    except OSError:
        return False
    if not stat.S_ISCHR(st.st_mode):
        return False
    return os.major(st.st_rdev) in _PTY_MAJORS or os.path.realpath(url).startswith("/dev/pts/")


def _abort_if_opened(opening: asyncio.Task[Any]) -> None:
    if opening.cancelled() or opening.exception() is not None:
        return
    transport, _ = opening.result()
    transport.abort()


class _Receiver(asyncio.Protocol):
    """Buffers what the port delivers and wakes the one reader waiting for more."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.buffer = bytearray()
        self.lost = False
        self.error: BaseException | None = None
        self.closed: asyncio.Future[None] = loop.create_future()
        self._waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def more(self) -> None:
        """Wait until new bytes arrive or the link is lost; raise ConnectionError when it
        is lost already (a reader loops: checks the buffer, then calls this)."""
        if self.lost:
            detail = f": {self.error}" if self.error else ""
            msg = f"port closed{detail}"
            raise ConnectionError(msg)
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class SerialPort:
    """One physical port (or serial device server) and the lock of the bus behind it.

    Built by :func:`shared_port`, never directly by a driver. Reads are primitives for
    framers: :meth:`read_until`, :meth:`read_exactly`, :meth:`read_byte`,
    :meth:`skip_until`; bytes a framer throws away are reported with
    :meth:`count_garbage` and collected by :class:`SerialDevice` into the device's health.
    """

    def __init__(self, url: str, settings: SerialSettings, *, reopen_after: int = 3) -> None:
        self.url = url
        self.settings = settings
        self.lock = asyncio.Lock()
        self.devices: list[str] = []
        """Devices configured on this bus (for messages)."""
        self.attached: set[str] = set()
        """Devices connected through it; the last to close closes the port."""
        self.addresses: dict[str, str] = {}
        """Bus address -> the device configured at it."""
        self.reopen_after = reopen_after
        self.timeouts_in_row = 0
        self.opened_once = False
        self.generation = 0
        """Incremented at every open: a device that sees it change knows the link (and
        maybe the instrument) started over."""
        self._transport: asyncio.Transport | None = None
        self._rx: _Receiver | None = None
        self._garbage = 0
        self.written_at = 0.0
        """``time.monotonic()`` of the last write: when the last request went on the wire."""

    def claim(self, address: str, device: str, option: str = "address") -> None:
        """Reserve a bus address for ``device``; ValueError if another device has it (two
        configured units answering one address would garble each other's replies)."""
        other = self.addresses.get(address)
        if other is not None and other != device:
            msg = f"option {option!r}: {address} on {self.url} is already {other}'s"
            raise OptionError(option, msg)
        self.addresses[address] = device

    # ---------------------------------------------------------------- open / close
    @property
    def is_open(self) -> bool:
        return self._rx is not None and not self._rx.lost

    async def open(self) -> None:
        """Open the port (closing a lost transport first). Raises OSError on failure."""
        await self.close()
        loop = asyncio.get_running_loop()
        rx = _Receiver(loop)
        kwargs: dict[str, Any] = {
            "baudrate": self.settings.baudrate,
            "bytesize": self.settings.bytesize,
            "parity": _PARITIES[self.settings.parity],
            "stopbits": _STOPBITS[self.settings.stopbits],
        }
        if "://" not in self.url:
            # a second process (or a stray driver instance) must not share the device
            kwargs["exclusive"] = True
            if _is_pty(self.url):
                kwargs["parity"] = serial.PARITY_NONE
        # pyserial opens in an executor thread that a timeout cannot stop: let the open
        # finish, and close what it opened if nobody waits for it any more, or the
        # handle (and its exclusive lock) would outlive us
        opening = loop.create_task(
            serial_asyncio_fast.create_serial_connection(loop, lambda: rx, self.url, **kwargs),
            name=f"open {self.url}",
        )
        try:
            transport, _ = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_abort_if_opened)
            raise
        except (serial.SerialException, ValueError) as exc:
            # SerialException is an OSError; ValueError is a bad URL or setting
            msg = f"cannot open {self.url}: {exc}"
            raise OSError(msg) from exc
        self._transport = transport
        self._rx = rx
        self.timeouts_in_row = 0
        self.opened_once = True
        self.generation += 1

    async def close(self) -> None:
        """Close the port and wait until the OS handle is released; never raises."""
        transport, rx = self._transport, self._rx
        self._transport = None
        self._rx = None
        if transport is None or rx is None:
            return
        if not transport.is_closing():
            transport.abort()
        with contextlib.suppress(TimeoutError):
            # the transport closes the handle in an executor; a reopen with
            # exclusive=True must not race it
            await asyncio.wait_for(asyncio.shield(rx.closed), 2.0)

    def _hung_up(self) -> bool:
        """Whether the OS already reports the device gone (a pty whose other end closed,
        a USB adapter unplugged), before the event loop has noticed."""
        ser = getattr(self._transport, "serial", None)
        fd = getattr(ser, "fd", None)
        if "://" in self.url or not isinstance(fd, int):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLHUP | select.POLLERR | select.POLLNVAL)
        return bool(poller.poll(0))

    async def ensure_open(self) -> bool:
        """Open the port if it is closed, lost or presumed dead; True if it was reopened
        (rather than opened for the first time or already open)."""
        stale = self.timeouts_in_row >= self.reopen_after > 0
        if self.is_open and not stale and not self._hung_up():
            return False
        reopening = self.opened_once
        await self.open()
        return reopening

    # ---------------------------------------------------------------- I/O primitives
    def _receiver(self) -> _Receiver:
        if self._rx is None:
            msg = f"{self.url} is not open"
            raise ConnectionError(msg)
        return self._rx

    def write(self, data: bytes) -> None:
        rx = self._receiver()
        if rx.lost or self._transport is None:
            msg = f"{self.url} is closed"
            raise ConnectionError(msg)
        self.written_at = time.monotonic()
        self._transport.write(data)

    def discard_input(self) -> int:
        """Drop everything received so far (ours and the OS's); returns the bytes dropped."""
        rx = self._receiver()
        n = len(rx.buffer)
        rx.buffer.clear()
        ser = getattr(self._transport, "serial", None)
        if isinstance(ser, serial.Serial) and "://" not in self.url:
            # a port going away fails here (EIO); the read that follows reports it
            with contextlib.suppress(serial.SerialException, OSError, ValueError, termios.error):
                ser.reset_input_buffer()
        self._garbage += n
        return n

    def count_garbage(self, n: int) -> None:
        """A framer threw ``n`` bytes away."""
        self._garbage += n

    def take_garbage(self) -> int:
        n, self._garbage = self._garbage, 0
        return n

    async def read_until(self, terminator: bytes, limit: int = 512) -> bytes:
        """Bytes up to and including ``terminator``.

        Raises :class:`FrameError` when ``limit`` bytes come without a terminator (those
        bytes are dropped and counted as garbage: a runaway, not a frame).
        """
        rx = self._receiver()
        start = 0
        while True:
            idx = rx.buffer.find(terminator, start)
            if idx >= 0:
                end = idx + len(terminator)
                out = bytes(rx.buffer[:end])
                del rx.buffer[:end]
                return out
            if len(rx.buffer) > limit:
                n = len(rx.buffer)
                rx.buffer.clear()
                self._garbage += n
                msg = f"no frame terminator {terminator!r} within {limit} bytes"
                raise FrameError(self.url, msg)  # renamed to the device by SerialDevice
            start = max(0, len(rx.buffer) - len(terminator) + 1)
            await rx.more()

    async def read_exactly(self, n: int) -> bytes:
        rx = self._receiver()
        while len(rx.buffer) < n:
            await rx.more()
        out = bytes(rx.buffer[:n])
        del rx.buffer[:n]
        return out

    async def read_byte(self) -> int:
        return (await self.read_exactly(1))[0]

    async def skip_until(self, wanted: Callable[[int], bool]) -> int:
        """Discard bytes until one satisfies ``wanted`` (left unread); returns the count
        discarded (also counted as garbage)."""
        rx = self._receiver()
        skipped = 0
        while True:
            for i, b in enumerate(rx.buffer):
                if wanted(b):
                    del rx.buffer[:i]
                    skipped += i
                    self._garbage += i
                    return skipped
            skipped += len(rx.buffer)
            self._garbage += len(rx.buffer)
            rx.buffer.clear()
            await rx.more()


def shared_port(
    ctx: DriverContext,
    device: str,
    options: dict[str, Any],
    *,
    baudrate: int,
    parity: str = "N",
    bytesize: int = 8,
    stopbits: float = 1,
    address: str,
    address_option: str = "address",
) -> SerialPort:
    """The port named by option ``port``, shared by every device on that URL.

    Pops ``port`` and the line settings from ``options``. A second device on the same URL
    gets the same :class:`SerialPort`; line settings that contradict the first device's,
    or an ``address`` another device already has on that bus, raise ValueError (one bus
    has one baud rate, and one unit per address).
    """
    url = options.pop("port", None)
    if not isinstance(url, str) or not url.strip():
        msg = "option 'port' is required: a device path or socket://host:port"
        raise OptionError("port", msg)
    url = url.strip()
    settings = SerialSettings.from_options(
        options, baudrate=baudrate, parity=parity, bytesize=bytesize, stopbits=stopbits
    )
    key = f"serial:{url}"
    port = ctx.shared.get(key)
    if port is None:
        port = SerialPort(url, settings)
        ctx.shared[key] = port
    if not isinstance(port, SerialPort):
        users = ", ".join(getattr(port, "units", {}).values()) or "a device"
        msg = f"option 'port': {url} is already used by {users}, over Modbus RTU"
        raise OptionError("port", msg, "one serial line speaks one protocol")
    if port.settings != settings:
        users = ", ".join(port.devices) or "another device"
        msg = (
            f"options 'baudrate'/'bytesize'/'parity'/'stopbits' give {settings.describe()} but"
            f" {users} on {url} uses {port.settings.describe()} (one bus, one line setting)"
        )
        raise ValueError(msg)
    port.claim(address, device, address_option)
    if device not in port.devices:
        port.devices.append(device)
    return port


def check_no_extra(options: Mapping[str, Any], allowed: set[str], driver: str) -> None:
    """ValueError naming every option ``driver`` does not take."""
    error = unknown_options(options, allowed, driver)
    if error is not None:
        raise error


class SerialDevice:
    """Base of the serial drivers: a named device on a shared :class:`SerialPort`.

    Subclasses write protocol exchanges as ``async def exchange(port) -> T`` (send, then
    read and validate one reply) and run them with :meth:`_request` (one exchange) or,
    for a reading made of several exchanges, inside ``async with self._bus():`` with
    :meth:`_transact` for each. Every exchange gets, per attempt: the port (re)opened if
    needed, stale input discarded, the policy's timeout; garbage and bad frames are
    counted in :attr:`Health`; transient failures retried by :func:`drivers.link.transact`.
    """

    def __init__(self, name: str, port: SerialPort, policy: RetryPolicy) -> None:
        self.name = name
        self.port = port
        self.policy = policy
        self._health = Health()
        self._attached = False
        self._generation: int | None = None
        """The port generation this device last talked through (None: not connected)."""

    def health(self) -> Health:
        return self._health

    @contextlib.asynccontextmanager
    async def _bus(self) -> AsyncIterator[None]:
        if not self._attached:
            # a closed device must not reopen the port behind the bus's back
            raise CommunicationError(self.name, "not connected")
        async with self.port.lock:
            yield

    async def _attempt(self, exchange: Callable[[SerialPort], Awaitable[T]]) -> T:
        port = self.port
        try:
            if await port.ensure_open():
                self._health.reconnects += 1
            port.discard_input()
            if self._generation is None:
                self._generation = port.generation  # connect() does its own handshake
            elif self._generation != port.generation:
                await self._resume(port)
                self._generation = port.generation
            result = await exchange(port)
        except FrameError as exc:
            self._health.bad_frames += 1
            if exc.device != self.name:
                raise FrameError(self.name, exc.detail) from None
            raise
        except asyncio.CancelledError:
            # the per-attempt timeout cancels us: a silent bus, maybe a dead link
            port.timeouts_in_row += 1
            raise
        except OSError:
            self._health.connected = False
            raise
        finally:
            self._health.garbage_bytes += port.take_garbage()
        port.timeouts_in_row = 0
        return result

    async def _resume(self, port: SerialPort) -> None:
        """Exchanges to run on a reopened port before anything else (e.g. reclaim remote
        control of an instrument that was power-cycled); the default needs none."""

    async def _transact(self, exchange: Callable[[SerialPort], Awaitable[T]]) -> T:
        """One exchange under the retry policy; the caller holds the bus lock."""
        if not self.port.lock.locked():
            msg = "SerialDevice._transact needs the bus lock (use _request or _bus)"
            raise RuntimeError(msg)
        return await transact(self.name, self._health, lambda: self._attempt(exchange), self.policy)

    async def _request(self, exchange: Callable[[SerialPort], Awaitable[T]]) -> T:
        """One exchange: take the bus, run it under the retry policy."""
        async with self._bus():
            return await self._transact(exchange)

    async def _open_link(self) -> None:
        """Attach to the port; the first exchange opens it (under the retry policy, so a
        port that is not there yet, or held by another process, is tried again)."""
        self._attached = True
        self._generation = None
        self.port.attached.add(self.name)

    async def close(self) -> None:
        """Detach; the last device on the port closes it. Never raises."""
        self._health.connected = False
        self._generation = None
        if not self._attached:
            return
        self._attached = False
        self.port.attached.discard(self.name)
        if self.port.attached:
            return
        with contextlib.suppress(Exception):
            async with self.port.lock:
                await self.port.close()
