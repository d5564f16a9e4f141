"""What every serial-instrument emulator shares: a bus on a pseudo-terminal.

A :class:`SerialBusEmulator` owns one :class:`~sim.devices.pty.PtyPort` and serves one or
more units on it, each bound to a component of the simulated reactor, the way one RS-485
pair carries several instruments. Requests are answered one at a time in arrival order (a
half-duplex bus: a unit answers after the previous answer has left the wire), after a
response latency plus the time the request and the reply take on the wire at the
configured line settings, because a pty itself moves bytes instantly.

The simulator's communication faults for a unit's component (``reactor.faults.comm``) act
here as on a real line:

* ``silent`` (comm_timeout): the request is understood but never answered;
* ``disconnected``: no answer, and when every unit on the port is disconnected the port's
  input is dropped unread (the cable is out);
* ``corrupt()``: the reply leaves with one byte garbled (a checksum or format error the
  driver must catch); protocols with a handshake may also draw it for the request;
* jitter: extra latency, drawn once per request.

:class:`LineNoise` adds what cheap USB-RS485 adapters do: runs of junk bytes (0xFF, 0x00,
0xA0) before replies (py-pfeiffer-vacuum-protocol #1, numat/alicat #5).

Subclasses implement :meth:`SerialBusEmulator._extract` (cut complete requests out of the
input buffer) and :meth:`SerialBusEmulator._answer` (a request to reply bytes, reading and
commanding the reactor); protocols with a handshake override
:meth:`SerialBusEmulator._handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Self, TypeVar

from sim.devices.pty import PtyPort
from sim.faults import CommFault
from sim.realtime import RealtimePlant

A = TypeVar("A", bound=Hashable)
"""A unit address on the bus (a letter, a number)."""
R = TypeVar("R")
"""A parsed request."""


@dataclass(slots=True)
class LineNoise:
    """Junk bytes before replies, as a cheap RS-485 adapter emits them.

    Each reply is preceded, with ``probability``, by a run of ``min_run``..``max_run``
    bytes drawn from ``pattern``. Seeded, so a test sees the same noise every run.
    """

    probability: float = 1.0
    pattern: bytes = b"\xff"
    min_run: int = 1
    max_run: int = 40
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            msg = "LineNoise.probability must be within 0..1"
            raise ValueError(msg)
        if not self.pattern or not 0 < self.min_run <= self.max_run:
            msg = "LineNoise needs a pattern and 0 < min_run <= max_run"
            raise ValueError(msg)
        self._rng = random.Random(self.seed)

    def draw(self) -> bytes:
        """The junk to send before one reply (often nothing)."""
        if self._rng.random() >= self.probability:
            return b""
        n = self._rng.randint(self.min_run, self.max_run)
        return bytes(self._rng.choice(self.pattern) for _ in range(n))


class SerialBusEmulator(Generic[A, R]):
    """Base of the serial emulators: a pty, its units, latency, faults and line noise.

    :param plant: the real-time reactor the units read and command.
    :param path: where the pty's link goes (the path a tool configuration names).
    :param units: ``(address, component)`` per unit answering on this bus; the component
        names the reactor device whose comm faults apply (``carrier``, ``chamber``...).
    :param latency_s: the instrument's own response time, before its reply goes out.
    :param baudrate: line speed used to add the wire time of request and reply.
    :param bits_per_char: start + data + parity + stop bits (10 for 8N1, 11 for 8O1).
    :param line_noise: junk before replies (None: a clean line); settable at run time.
    """

    def __init__(
        self,
        plant: RealtimePlant,
        path: str | Path,
        units: Sequence[tuple[A, str]],
        *,
        latency_s: float,
        baudrate: int,
        bits_per_char: int = 10,
        line_noise: LineNoise | None = None,
    ) -> None:
        if not units:
            msg = "an emulated bus needs at least one (address, component) unit"
            raise ValueError(msg)
        addresses = [a for a, _ in units]
        if len(set(addresses)) != len(addresses):
            msg = f"duplicate unit addresses on one bus: {addresses}"
            raise ValueError(msg)
        if latency_s < 0 or baudrate <= 0:
            msg = "latency_s must be >= 0 and baudrate > 0"
            raise ValueError(msg)
        known = set(plant.reactor.device_names())
        unknown = sorted({c for _, c in units if c not in known})
        if unknown:
            msg = f"the reactor has no component(s) {unknown}; it has {sorted(known)}"
            raise ValueError(msg)
        self.plant = plant
        self.path = Path(path)
        self.units: dict[A, str] = dict(units)
        self.latency_s = latency_s
        self.baudrate = baudrate
        self.bits_per_char = bits_per_char
        self.line_noise = line_noise
        self.requests = 0
        """Requests answered or refused by a unit on this bus (silenced ones not counted)."""
        self.bytes_dropped = 0
        """Input lost while every unit was disconnected."""
        self._port: PtyPort | None = None
        self._buffer = bytearray()
        self._queue: asyncio.Queue[R] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- life cycle
    @property
    def running(self) -> bool:
        return self._port is not None

    async def start(self) -> None:
        """Create the pty at :attr:`path` and serve (a restart makes a new pty there)."""
        if self._port is not None:
            return
        self._buffer.clear()
        self._queue = asyncio.Queue()
        self._reset()
        self._port = PtyPort(self.path)
        self._port.start(self._on_data)
        self._worker = asyncio.get_running_loop().create_task(
            self._serve(), name=f"{type(self).__name__}:{self.path}"
        )

    async def stop(self) -> None:
        """Stop serving and remove the pty: the driver's port reports the link lost."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        port, self._port = self._port, None
        if port is not None:
            port.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def inject(self, data: bytes) -> None:
        """Put ``data`` on the line now, unasked: crosstalk, or a reply that arrives late."""
        if self._port is not None:
            self._port.write(data)

    # ---------------------------------------------------------------- input
    def _on_data(self, data: bytes) -> None:
        r = self.plant.sync()
        faults = [r.faults.comm(c) for c in self.units.values()]
        if all(f is not None and f.disconnected for f in faults):
            self.bytes_dropped += len(data)
            return  # cable out: nothing reaches the instruments
        self._buffer += data
        for request in self._extract(self._buffer):
            self._queue.put_nowait(request)

    async def _serve(self) -> None:
        while True:
            request = await self._queue.get()
            await self._handle(request)

    # ---------------------------------------------------------------- helpers
    def _link(self, address: A) -> LinkState | None:
        """The link state for a request to ``address``; None when no unit answers it (not
        ours, or silenced/disconnected by a fault). Draws the request's jitter."""
        component = self.units.get(address)
        if component is None:
            return None
        fault = self.plant.sync().faults.comm(component)
        if fault is not None and (fault.silent or fault.disconnected):
            return None
        return LinkState(fault)

    def _answering(self, address: A) -> bool:
        """Whether the unit still answers (a fault may have struck while it worked)."""
        fault = self.plant.sync().faults.comm(self.units[address])
        return fault is None or not (fault.silent or fault.disconnected)

    def wire_time_s(self, n_chars: int) -> float:
        return n_chars * self.bits_per_char / self.baudrate

    async def _delay(self, state: LinkState, n_chars: int) -> None:
        await asyncio.sleep(self.latency_s + self.wire_time_s(n_chars) + state.jitter_s)

    def _send(self, reply: bytes, state: LinkState | None = None) -> None:
        """Put a reply on the line: maybe garbled by a corrupt-frame fault, maybe after
        line noise."""
        if self._port is None:
            return
        if state is not None and state.corrupt():
            reply = self._garble(reply, state.rng())
        if self.line_noise is not None:
            reply = self.line_noise.draw() + reply
        self._port.write(reply)

    def _garble(self, reply: bytes, rng: random.Random) -> bytes:
        """One byte of ``reply`` changed so that the protocol's check catches it (the
        default flips bits of a byte before the last one: the terminator stays)."""
        if len(reply) < 2:
            return bytes([reply[0] ^ 0x55]) if reply else reply
        i = rng.randrange(0, len(reply) - 1)
        out = bytearray(reply)
        out[i] ^= 1 << rng.randrange(0, 7)
        return bytes(out)

    # ---------------------------------------------------------------- protocol hooks
    def _reset(self) -> None:
        """Protocol state to clear when the emulator (re)starts."""

    def _extract(self, buffer: bytearray) -> list[R]:
        """Remove complete requests from ``buffer`` (and junk it cannot parse)."""
        raise NotImplementedError

    def _address(self, request: R) -> A | None:
        """Which unit a request is for (None: nobody answers it)."""
        raise NotImplementedError

    def _answer(self, address: A, component: str, request: R) -> bytes | None:
        """The reply of unit ``address`` to ``request`` (None: the unit stays silent)."""
        raise NotImplementedError

    def _request_chars(self, request: R) -> int:
        """Length of the request on the wire (for the wire time)."""
        return 0

    async def _handle(self, request: R) -> None:
        """One request: resolve the unit and its link, wait, answer."""
        address = self._address(request)
        if address is None:
            return
        state = self._link(address)
        if state is None:
            return
        self.requests += 1
        reply = self._answer(address, self.units[address], request)
        if reply is None:
            return
        await self._delay(state, self._request_chars(request) + len(reply))
        if not self._answering(address):
            return  # went silent while it worked
        self._send(reply, state)


class LinkState:
    """A unit's link for one request, from :class:`sim.faults.CommFault` (or healthy)."""

    __slots__ = ("_fault", "jitter_s")

    def __init__(self, fault: CommFault | None) -> None:
        self._fault = fault
        self.jitter_s = fault.draw_jitter_ns() / 1e9 if fault is not None else 0.0

    def corrupt(self) -> bool:
        return self._fault is not None and self._fault.corrupt()

    def rng(self) -> random.Random:
        if self._fault is None:
            return random.Random(0)
        return self._fault.rng
