"""A Modbus TCP digital-output module driving the plant's ALD valves (WAGO 750-352 style).

:class:`ModbusDioModule` is a pymodbus 3.16 ``ModbusTcpServer`` whose datastore is one
``SimDevice`` (device id 0: the module answers any unit id, as a WAGO coupler does) with an
``action`` callback that carries the module's behaviour: coils drive valves
(``plant.set_valve(line, on, source="command")`` through a channel -> line map, with the
line ``"__pump__"`` for the pump isolation valve), outputs read back at +0x200, pulse
outputs timed by the module itself, and the WAGO host watchdog. Example (what ``aldctl sim
serve`` builds from ``config/hil.yaml``)::

    module = ModbusDioModule(
        plant, {0: "TMA", 1: "H2O", 2: "O3", 15: "__pump__"}, host="127.0.0.1", port=15502
    )
    await module.start()
    ...
    await module.stop()       # the network cable is pulled; the module stays powered
    await module.start()      # plugged back in
    await module.shutdown()   # power off

Constructor: ``ModbusDioModule(plant, lines, *, host="127.0.0.1", port=502, channels=16,
component="valves", latency_s=0.001, readback_offset=0x200, pulse_outputs=True,
pulse_register=0x2000)``. ``lines`` maps output channels to plant lines (channels not in it
drive nothing); ``port=0`` picks a free port (read :attr:`ModbusDioModule.port` after
:meth:`~ModbusDioModule.start`; restarts keep it); ``component`` is the fault target;
``latency_s`` the module's response time (a WAGO 750-352 answers in about a millisecond);
``readback_offset=0`` gives an ADAM/Moxa-style map where coils read back at their own
address.

Register map (PDU addresses; WAGO 750-341/352 manual "MODBUS registers", protocols.md 4.1,
unless marked):

=====================  ====  ==========================================================
coil 0..N-1            W     outputs (FC05/FC15); a write cancels a running pulse
coil 0..N-1            R     WAGO: the *inputs* (FC01 below 0x200 reads the input image)
coil 0x200..0x200+N-1  RW    outputs read-back (and mirror for writes)
discrete 0..N-1        R     inputs: each valve's "open" limit switch (the plant's
                             valve position, past half stroke) [aldctl]
input reg 0            R     the inputs packed in a word, channel 0 = bit 0 [aldctl]
holding 0x1000         RW    watchdog time, 100 ms units (default 0x0064; 0 = off);
                             refused (exception 03) unless the watchdog is stopped
holding 0x1001         RW    function-code mask FC1..FC16 (bit n-1 = FC n), default
                             0xFFFF: every request with a masked code retriggers a
                             running watchdog; refused (03) unless stopped
holding 0x1002         RW    the same for FC17..FC32 (stored only), default 0xFFFF
holding 0x1003         RW    trigger: a write of a value different from the last one
                             retriggers a running watchdog; a different non-zero value
                             starts a stopped one and resets an expired one (the fault
                             clears and process data is accepted again; the outputs
                             stay as the expiry left them)
holding 0x1004         RW    minimum remaining time since the watchdog started, 100 ms
                             units (default 0xFFFF); 0 after an expiry, until written;
                             writing sets it (0 refused with 03)
holding 0x1005         RW    stop: write 0xAAAA then 0x5555
holding 0x1006         R     watchdog status: 0 stopped, 1 running, 2 expired
holding 0x1007         RW    restart: writing 1 restarts an expired watchdog (outputs
                             stay off) or retriggers a running one; a stopped one stays
                             stopped
holding 0x1008         RW    simple stop: 0xAA55 or 0x55AA stops the watchdog and
                             resets an expiry
holding 0x1009, 0x100B RW    close sockets on timeout, save (stored only) [emulator]
holding 0x100A         RW    alternative watchdog: only 0 accepted [not emulated]
holding 0x2000+ch      RW    pulse output [aldctl, after the Moxa ioLogik pulse
                             mode]: writing w (1..65535) opens output ch now and closes
                             it w ms later, timed by the module; 0 aborts the pulse;
                             reads the remaining ms
=====================  ====  ==========================================================

The watchdog follows the WAGO 750-352/040-000 (FC ETHERNET G3 XTR) manual, version 1.3.0,
section 11.2.5 "Modbus Watchdog", tables 112-124 (pp. 173-176; the register set the
750-352 coupler family shares, also worded so in the 750-882 manual 1.5.0, tables 132-135,
p. 250). When it runs out, every output goes to 0 (each valve closes: ``source="watchdog"``),
0x1004 reads 0 ("if this time value is 0, a fieldbus failure is assumed") and the module
answers every process-data request with exception 04 (slave device failure) until the fault
is reset by a new 0x1003 value, a 0x1007 restart or a 0x1008 simple stop (or the module is
powered off and on: a new instance). The manual says "all following requests"; since it also
resets the fault through 0x1003, the emulator keeps the watchdog registers themselves
(0x1000..0x100B) reachable [emulator's reading]. The manual names no exception code for a
write to 0x1000..0x1002 while the watchdog runs ("it is not possible to modify this
value"); the emulator answers 03 [emulator's choice].

Requests the module refuses before acting (Modbus Application Protocol v1.1b3, section 7
"MODBUS Exception Responses" and the per-function state diagrams of section 6): a function
code it does not implement answers ``fc | 0x80`` with code 01; a quantity outside the
function's range (FC01/02 1..2000, FC03/04 1..125, FC15 1..1968, FC16 1..123), a byte count
that does not match it, or an FC05 value other than 0x0000/0xFF00 answers code 03. The
module implements FC 1, 2, 3, 4, 5, 6, 15 and 16 (a 750-352 also has FC 7, 11 and 23,
which are not emulated).

Communication faults (``reactor.faults.comm(component)``), checked on each request:
``silent`` drops it (no answer), ``disconnected`` drops the connection (new connections are
dropped too), ``corrupt`` answers with a garbled frame (MBAP header intact, the PDU
scrambled so no Modbus decoder accepts it), jitter adds to the latency.

pymodbus integration notes (3.16.1): the server hands each request to
``ServerRequestHandler.handle_request``, which reads the handler's ``last_pdu`` again after
awaiting the datastore, so a slow answer could go out with the next request's transaction
id; the connection class here captures each request and answers it in order on its own
task, which is also where the link faults and the latency act.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.transaction import TransactionManager

from sim.faults import CommFault
from sim.realtime import RealtimePlant

__all__ = ["ModbusDioModule"]

WD_TIME = 0x1000
WD_MASK_LO = 0x1001
WD_MASK_HI = 0x1002
WD_TRIGGER = 0x1003
WD_REMAINING = 0x1004
WD_STOP = 0x1005
WD_STATUS = 0x1006
WD_RESTART = 0x1007
WD_SIMPLE_STOP = 0x1008
WD_CLOSE_SOCKETS = 0x1009
WD_ALTERNATIVE = 0x100A
WD_SAVE = 0x100B

STOPPED, RUNNING, EXPIRED = 0, 1, 2
WD_TIME_DEFAULT = 0x0064
IMPLEMENTED = frozenset((1, 2, 3, 4, 5, 6, 15, 16))
# Quantity ranges per function (Modbus Application Protocol v1.1b3, section 6).
_QUANTITY = {1: 2000, 2: 2000, 3: 125, 4: 125, 15: 1968, 16: 123}
PUMP = "__pump__"


_PULSE_SPIN_S = 0.0015
"""How long before a module-timed pulse ends the emulator stops sleeping and spins."""


class ModbusDioModule:
    """The valve I/O module (see the module docstring for the map and behaviour)."""

    def __init__(
        self,
        plant: RealtimePlant,
        lines: Mapping[int, str],
        *,
        host: str = "127.0.0.1",
        port: int = 502,
        channels: int = 16,
        component: str = "valves",
        latency_s: float = 0.001,
        readback_offset: int = 0x200,
        pulse_outputs: bool = True,
        pulse_register: int = 0x2000,
    ) -> None:
        if not 1 <= channels <= 256:
            msg = "channels must be 1..256"
            raise ValueError(msg)
        if readback_offset and readback_offset < channels:
            msg = "readback_offset must be 0 or at least the number of channels"
            raise ValueError(msg)
        if latency_s < 0:
            msg = "latency_s must be >= 0"
            raise ValueError(msg)
        known = set(plant.reactor.lines) | {PUMP}
        for ch, line in lines.items():
            if not 0 <= ch < channels:
                msg = f"channel {ch} is outside 0..{channels - 1}"
                raise ValueError(msg)
            if line not in known:
                msg = f"channel {ch}: the plant has no line {line!r}; have {sorted(known)}"
                raise ValueError(msg)
        self.plant = plant
        self.lines = dict(lines)
        self.host = host
        self.port = port
        self.channels = channels
        self.component = component
        self.latency_s = latency_s
        self.readback_offset = readback_offset
        self.pulse_outputs = pulse_outputs
        self.pulse_register = pulse_register
        self.outputs = [self._plant_state(ch) for ch in range(channels)]
        self.wd_time = WD_TIME_DEFAULT
        self.wd_status = STOPPED
        self.wd_mask = [0xFFFF, 0xFFFF]
        self.wd_min = 0xFFFF
        self._wd_trigger = 0
        self._wd_deadline = 0.0
        self._wd_timer: asyncio.TimerHandle | None = None
        self._wd_stop_armed = False
        self._pulses: dict[int, tuple[asyncio.TimerHandle, float]] = {}
        self.arrival: float | None = None
        """When the request being applied reached the module (monotonic clock)."""
        self.requests = 0
        self._device = self._build_device()
        self._server: _Server | None = None

    # -- the datastore -----------------------------------------------------------------
    def _build_device(self) -> SimDevice:
        n = self.channels
        coils = [SimData(0, values=[False] * n, datatype=DataType.BITS)]
        if self.readback_offset:
            coils.append(SimData(self.readback_offset, values=[False] * n, datatype=DataType.BITS))
        discrete = [SimData(0, values=[False] * n, datatype=DataType.BITS)]
        holding = [
            SimData(WD_TIME, count=WD_TRIGGER - WD_TIME + 1, datatype=DataType.REGISTERS),
            SimData(WD_REMAINING, datatype=DataType.REGISTERS),
            SimData(WD_STOP, datatype=DataType.REGISTERS),
            SimData(WD_STATUS, datatype=DataType.REGISTERS, readonly=True),
            SimData(WD_RESTART, count=WD_SAVE - WD_RESTART + 1, datatype=DataType.REGISTERS),
        ]
        if self.pulse_outputs:
            holding.append(SimData(self.pulse_register, count=n, datatype=DataType.REGISTERS))
        inputs = [SimData(0, datatype=DataType.REGISTERS, readonly=True)]
        return SimDevice(0, simdata=(coils, discrete, holding, inputs), action=self._action)

    async def _action(
        self,
        function: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus' hook on every datastore access (reads: before the registers are
        sliced for the reply; writes: before the values are stored)."""
        if function in (1, 5, 15):
            if values is not None:
                for i, on in enumerate(values):
                    self._write_output(self._channel(address + i), bool(on), "command")
            elif function == 1:
                base = self.readback_offset if address >= self.readback_offset else 0
                bits = self.outputs if base or not self.readback_offset else self._inputs()
                _put_bits(registers, start, base, bits)
            return None
        if function == 2:
            _put_bits(registers, start, 0, self._inputs())
            return None
        if function == 4:
            registers[0 - start] = sum(1 << ch for ch, on in enumerate(self._inputs()) if on)
            return None
        if values is not None:
            for i, word in enumerate(values):
                problem = self._write_register(address + i, int(word))
                if problem is not None:
                    return problem
            return None
        if function == 3:  # not the FC06/FC16 echo, which must repeat what was written
            self._refresh(start, registers)
        return None

    def _channel(self, address: int) -> int:
        return address - self.readback_offset if address >= self.readback_offset else address

    def _refresh(self, start: int, registers: list[int]) -> None:
        now = asyncio.get_running_loop().time()
        words = {
            WD_TIME: self.wd_time,
            WD_MASK_LO: self.wd_mask[0],
            WD_MASK_HI: self.wd_mask[1],
            WD_TRIGGER: self._wd_trigger,
            WD_REMAINING: self._min_remaining(),
            WD_STATUS: self.wd_status,
        }
        for address, word in words.items():
            if 0 <= address - start < len(registers):
                registers[address - start] = word
        if self.pulse_outputs:
            for ch in range(self.channels):
                pulse = self._pulses.get(ch)
                left = max(0.0, pulse[1] - now) if pulse is not None else 0.0
                registers[self.pulse_register + ch - start] = math.ceil(left * 1000)

    # -- the module's behaviour --------------------------------------------------------
    def _plant_state(self, ch: int) -> bool:
        line = self.lines.get(ch)
        if line is None:
            return False
        r = self.plant.sync()
        if line == PUMP:
            return math.isfinite(r.residence_time_s())  # infinite only in stop-flow
        return r.read_valves()[line]

    def _inputs(self) -> list[bool]:
        return [self._plant_state(ch) for ch in range(self.channels)]

    def _write_output(self, ch: int, on: bool, source: str) -> None:
        if source != "pulse":
            self._cancel_pulse(ch)
        if self.outputs[ch] == on:
            return  # the plant only hears about changes, as a valve only sees edges
        self.outputs[ch] = on
        line = self.lines.get(ch)
        if line is not None:
            at = self.arrival if source == "command" else None
            self.plant.set_valve(line, on, source=source, at=at)

    def _write_register(self, address: int, word: int) -> ExcCodes | None:
        if self.pulse_outputs and 0 <= address - self.pulse_register < self.channels:
            ch = address - self.pulse_register
            if word == 0:
                if ch in self._pulses:
                    self._cancel_pulse(ch)
                    self._write_output(ch, False, "pulse")
            else:
                self._start_pulse(ch, word)
            return None
        if address in (WD_TIME, WD_MASK_LO, WD_MASK_HI):
            if self.wd_status != STOPPED:  # "not possible to modify ... while running"
                return ExcCodes.ILLEGAL_VALUE
            if address == WD_TIME:
                self.wd_time = word
            else:
                self.wd_mask[address - WD_MASK_LO] = word
        elif address == WD_TRIGGER:
            if word != self._wd_trigger:
                self._wd_trigger = word
                if not self.wd_time:
                    pass  # "cannot be triggered if the watchdog timer register is 0"
                elif self.wd_status == RUNNING:
                    self._retrigger()
                elif word != 0:
                    self._arm()  # starts it, or resets an expiry
        elif address == WD_REMAINING:
            if word == 0:
                return ExcCodes.ILLEGAL_VALUE  # "0x0000 is not permissible"
            self.wd_min = word
        elif address == WD_RESTART:
            if word != 1:
                return ExcCodes.ILLEGAL_VALUE
            if self.wd_status == RUNNING:
                self._retrigger()
            elif self.wd_status == EXPIRED and self.wd_time:
                self._arm()
        elif address == WD_STOP:
            if word == 0xAAAA:
                self._wd_stop_armed = True
            elif word == 0x5555 and self._wd_stop_armed:
                self._wd_stop_armed = False
                self._stop_watchdog()
            else:
                self._wd_stop_armed = False
                return ExcCodes.ILLEGAL_VALUE
        elif address == WD_SIMPLE_STOP:
            if word not in (0xAA55, 0x55AA):
                return ExcCodes.ILLEGAL_VALUE
            self._stop_watchdog()
            self.wd_status = STOPPED  # "if there is an existing watchdog fault, it is reset"
        elif address == WD_ALTERNATIVE:
            if word != 0:
                return ExcCodes.ILLEGAL_VALUE
        elif address in (WD_CLOSE_SOCKETS, WD_SAVE) and word not in (0, 1):
            return ExcCodes.ILLEGAL_VALUE
        return None

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        if self._wd_timer is not None:
            self._wd_timer.cancel()
        self._wd_deadline = loop.time() + self.wd_time / 10
        self._wd_timer = loop.call_at(self._wd_deadline, self._timeout)
        self.wd_status = RUNNING

    def _remaining_ticks(self) -> int:
        # Rounded up: a running watchdog never reads 0, which means "a fault happened".
        left = self._wd_deadline - asyncio.get_running_loop().time()
        return max(1, min(0xFFFF, math.ceil(left * 10)))

    def _min_remaining(self) -> int:
        if self.wd_status == RUNNING:
            return min(self.wd_min, self._remaining_ticks())
        return self.wd_min

    def _retrigger(self) -> None:
        self.wd_min = self._min_remaining()
        self._arm()

    def note_request(self, function: int) -> None:
        """A request the module accepted: retriggers a running watchdog if its function
        code is in the mask (0x1001 for FC1..16, 0x1002 for FC17..32)."""
        if self.wd_status != RUNNING or not 1 <= function <= 32:
            return
        word, bit = divmod(function - 1, 16)
        if self.wd_mask[word] >> bit & 1:
            self._retrigger()

    def _timeout(self) -> None:
        self.wd_min = 0
        self._expire()

    def _stop_watchdog(self) -> None:
        if self._wd_timer is not None:
            self._wd_timer.cancel()
            self._wd_timer = None
        if self.wd_status == RUNNING:
            self.wd_status = STOPPED

    def _expire(self) -> None:
        self._wd_timer = None
        self.wd_status = EXPIRED
        for ch in range(self.channels):
            self._cancel_pulse(ch)
            self._write_output(ch, False, "watchdog")

    def _start_pulse(self, ch: int, width_ms: int) -> None:
        loop = asyncio.get_running_loop()
        self._cancel_pulse(ch)
        end = time.monotonic() + width_ms / 1000  # before the write: it catches the physics up
        self._write_output(ch, True, "pulse")
        # A real module times the pulse in hardware: wake a little early and spin to the
        # end, so the emulator's event-loop latency does not lengthen the pulse.
        handle = loop.call_at(end - _PULSE_SPIN_S, self._end_pulse, ch, end)
        self._pulses[ch] = (handle, end)

    def _end_pulse(self, ch: int, end: float) -> None:
        while time.monotonic() < end:
            pass
        self._pulses.pop(ch, None)
        self._write_output(ch, False, "pulse")

    def _cancel_pulse(self, ch: int) -> None:
        pulse = self._pulses.pop(ch, None)
        if pulse is not None:
            pulse[0].cancel()

    def check(self, pdu: ModbusPDU) -> ExcCodes | None:
        """What the module refuses before its datastore sees the request: everything but
        the watchdog registers while the watchdog has expired, and bits outside the process image
        (pymodbus' bit blocks are only checked to 16-bit granularity)."""
        fc = pdu.function_code
        if self.wd_status == EXPIRED:
            n = len(pdu.registers) if fc == 16 else 1 if fc == 6 else pdu.count
            in_block = pdu.address >= WD_TIME and pdu.address + n - 1 <= WD_SAVE
            if not (fc in (3, 6, 16) and in_block):
                return ExcCodes.DEVICE_FAILURE
        if fc in (1, 2, 5, 15):
            n = len(pdu.bits) if fc in (5, 15) else pdu.count
            first, last = pdu.address, pdu.address + n - 1
            regions = [(0, self.channels - 1)]
            if fc != 2 and self.readback_offset:
                ro = self.readback_offset
                regions.append((ro, ro + self.channels - 1))
            if not any(lo <= first and last <= hi for lo, hi in regions):
                return ExcCodes.ILLEGAL_ADDRESS
        return None

    # -- network ------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on ``host:port`` (plug the cable in)."""
        if self._server is not None:
            return
        # pymodbus turns a failed bind into a logged traceback and a RuntimeError; bind a
        # probe first so that a taken port is the plain OSError it is
        _probe_bind(self.host, self.port)
        server = _Server(self)
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            _probe_bind(self.host, self.port)
            raise
        self._server = server
        transport: Any = server.transport
        self.port = int(transport.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Pull the network cable: connections drop and nobody can connect. The module
        stays powered: outputs hold and its watchdog keeps running."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus 3.16

    async def shutdown(self) -> None:
        """Power off: stop serving and cancel the module's timers (pulses, watchdog)."""
        await self.stop()
        if self._wd_timer is not None:
            self._wd_timer.cancel()
            self._wd_timer = None
        for ch in list(self._pulses):
            self._cancel_pulse(ch)

    def link_fault(self) -> CommFault | None:
        """The communication faults the plant injects on this module right now."""
        return self.plant.sync().faults.comm(self.component)


def _probe_bind(host: str, port: int) -> None:
    """Raise the OSError a listener on ``host:port`` would meet (port 0 always binds)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's listener
        probe.bind((host, port))


def frame_problem(pdu: bytes) -> ExcCodes | None:
    """The exception a request PDU earns before any address is looked at (Modbus
    Application Protocol v1.1b3, section 6 state diagrams and section 7): 01 for a function
    the module does not implement, 03 for a quantity, byte count or coil value out of range."""
    fc = pdu[0]
    if fc not in IMPLEMENTED:
        return ExcCodes.ILLEGAL_FUNCTION
    body = pdu[1:]
    if fc in (5, 6):
        if len(body) != 4:
            return ExcCodes.ILLEGAL_VALUE
        value = int.from_bytes(body[2:4], "big")
        return ExcCodes.ILLEGAL_VALUE if fc == 5 and value not in (0, 0xFF00) else None
    if len(body) < 4:
        return ExcCodes.ILLEGAL_VALUE
    quantity = int.from_bytes(body[2:4], "big")
    if not 1 <= quantity <= _QUANTITY[fc]:
        return ExcCodes.ILLEGAL_VALUE
    if fc in (15, 16):
        need = (quantity + 7) // 8 if fc == 15 else 2 * quantity
        if len(body) < 5 or body[4] != need or len(body) != 5 + need:
            return ExcCodes.ILLEGAL_VALUE
    elif len(body) != 4:
        return ExcCodes.ILLEGAL_VALUE
    return None


def _put_bits(registers: list[int], start: int, address: int, bits: list[bool]) -> None:
    """Write ``bits`` at bit ``address`` of a pymodbus bit block (16 bits a register,
    bit 0 first; ``start`` is the block's first register)."""
    for i, on in enumerate(bits):
        reg, bit = divmod(address + i, 16)
        if on:
            registers[reg - start] |= 1 << bit
        else:
            registers[reg - start] &= ~(1 << bit)


class _Server(ModbusTcpServer):
    def __init__(self, module: ModbusDioModule) -> None:
        super().__init__(module._device, address=(module.host, module.port))
        self.module = module

    def callback_new_connection(self) -> _Connection:
        return _Connection(self)


class _Connection(ServerRequestHandler):
    """One client connection: requests are captured as they arrive and answered in order."""

    def __init__(self, server: _Server) -> None:
        super().__init__(  # type: ignore[no-untyped-call]  # untyped in pymodbus 3.16
            server, server.trace_packet, server.trace_pdu, server.trace_connect
        )
        self.module = server.module
        self._order = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def callback_connected(self) -> None:
        super().callback_connected()
        fault = self.module.link_fault()
        if fault is not None and fault.disconnected:
            self.loop.call_soon(self.close)

    def callback_disconnected(self, exc: Exception | None) -> None:
        super().callback_disconnected(exc)
        for task in list(self._tasks):
            task.cancel()

    def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        # Frames are cut here from the MBAP header (so several in one segment are all
        # served) and checked before pymodbus decodes them, which would answer a request
        # it cannot decode with function code 0 (`80 01`).
        arrival = time.monotonic()
        used = 0
        while len(data) - used >= 8:
            tid, proto, length, unit = struct.unpack_from(">HHHB", data, used)
            if proto != 0 or not 2 <= length <= 254:
                self.close()  # not Modbus: a real coupler drops the connection
                return len(data)
            end = used + 6 + length
            if len(data) < end:
                break
            frame = data[used:end]
            used = end
            refused = frame_problem(frame[7:])
            if refused is None:
                try:
                    TransactionManager.callback_data(self, frame, addr)
                except ModbusIOException:
                    refused = ExcCodes.ILLEGAL_VALUE
            pdu, self.last_pdu = self.last_pdu, None
            if refused is not None or pdu is None:
                reply = ExceptionResponse(
                    frame[7], exception_code=refused or ExcCodes.ILLEGAL_VALUE, device_id=unit
                )
                reply.transaction_id = tid
                self.pdu_send(reply, addr=addr)
                continue
            task = self.loop.create_task(self._serve(pdu, addr, arrival), name="modbus dio request")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return used

    async def _serve(self, pdu: ModbusPDU, addr: tuple[Any, ...] | None, arrival: float) -> None:
        module = self.module
        async with self._order:
            module.requests += 1
            fault = module.link_fault()
            if fault is not None and fault.disconnected:
                self.close()
                return
            if fault is not None and fault.silent:
                return
            jitter = fault.draw_jitter_ns() / 1e9 if fault is not None else 0.0
            module.arrival = arrival
            if jitter:  # a timing-jitter fault delays the command itself
                await asyncio.sleep(jitter)
                module.arrival = time.monotonic()
            # A coupler drives its outputs as the frame arrives and answers afterwards: apply
            # first, then spend the response latency, so that the emulator's own timer jitter
            # does not leak into the output edges it logs.
            refused = module.check(pdu)
            reply: ModbusPDU
            if refused is not None:
                reply = ExceptionResponse(pdu.function_code, refused)
            else:
                module.note_request(pdu.function_code)
                reply = await pdu.datastore_update(self.server.context, pdu.dev_id)
            if module.latency_s:
                await asyncio.sleep(module.latency_s)
            reply.transaction_id = pdu.transaction_id
            reply.dev_id = pdu.dev_id
            if fault is not None and fault.corrupt():
                frame = self.framer.buildFrame(reply)
                scrambled = bytes(b ^ fault.rng.randrange(1, 256) for b in frame[8:])
                self.send(frame[:7] + b"\x00" + scrambled)
                return
            self.pdu_send(reply, addr=addr)
