"""A Modbus TCP digital-output module driving the plant's ALD valves (WAGO 750-352 style).

:class:`ModbusDioModule` is a Modbus TCP server whose datastore is one pymodbus 3.16
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
pulse_register=0x2000, normally_open=(), own_thread=False, pulse_unit_ms=1.0)``.
``lines`` maps output channels to plant lines (channels not in it drive nothing);
``port=0`` picks a free port (read :attr:`ModbusDioModule.port` after
:meth:`~ModbusDioModule.start`; restarts keep it); ``component`` is the fault target;
``pulse_unit_ms`` what one count of a pulse register is worth on the module's timer
(1 ms: aldctl's convention; another value emulates a module set to another time base, for
the engine's pulse-width check);
``latency_s`` the module's response time (about a millisecond, aldctl's assumption: no
750-352 response-time figure was found); ``readback_offset=0`` gives an ADAM/Moxa-style
map where coils read back at their own address; ``normally_open`` the channels whose valve
is open when its output is off (the tool config's ``fails: open``), so that a watchdog
expiry leaves each valve where its spring puts it; ``own_thread=True`` runs the module's
sockets and timers on a thread with its own event loop (what ``aldctl sim serve`` does), the
model staying on the caller's loop: valve edges are handed to it with their times, limit
switches are read through it, and link faults are read as of the model's last step.

Timing: the module stamps each request with the kernel's receive time (``SO_TIMESTAMPNS``
through ``recvmsg``, on Linux; elsewhere the loop's clock when it reads the socket) and
logs a command's edge at that time, as a coupler that switches on receipt would; a
module-timed pulse ends at its arrival plus its width (the module's hardware timer), so its
width is exact by construction.

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

Network: plain non-blocking sockets (pymodbus' server cannot hand on a kernel timestamp);
each connection's requests are cut from the stream, checked, decoded by pymodbus and
answered in order by one task, which is also where the link faults and the latency act.
Connections are served independently of one another.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Mapping
from functools import partial
from typing import Any, TypeVar

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from sim.faults import CommFault
from sim.realtime import RealtimePlant

__all__ = ["ModbusDioModule"]

T = TypeVar("T")

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
CARRIER = "__carrier__"


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
        normally_open: Collection[int] = (),
        own_thread: bool = False,
        pulse_unit_ms: float = 1.0,
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
        if not pulse_unit_ms > 0:
            msg = "pulse_unit_ms must be > 0"
            raise ValueError(msg)
        known = set(plant.reactor.lines) | {PUMP, CARRIER}
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
        self.pulse_unit_ms = pulse_unit_ms
        """What one count of a pulse register is worth on this module's timer: 1 ms by
        aldctl's convention; another value stands for a module (or a PLC program) set to
        another time base, a pulse the host commands right and the module times wrong."""
        self.normally_open = frozenset(normally_open)
        """Channels whose valve is open de-energised: when the watchdog drops the outputs
        these open (a normally-open pump isolation valve), every other valve closes."""
        self.outputs = [
            self._plant_state(ch) != (ch in self.normally_open) for ch in range(channels)
        ]
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
        self.kernel_stamps = 0
        """Requests whose arrival time came from the kernel (SO_TIMESTAMPNS)."""
        self.own_thread = own_thread
        self._device = self._build_device()
        self._core = SimCore(self._device)
        self._wire: _Wire | None = None
        self._main: asyncio.AbstractEventLoop | None = None
        """The loop that owns the plant, when the module runs on its own thread."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

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
                own = base or not self.readback_offset
                bits = self.outputs if own else await self._read_inputs()
                _put_bits(registers, start, base, bits)
            return None
        if function == 2:
            _put_bits(registers, start, 0, await self._read_inputs())
            return None
        if function == 4:
            inputs = await self._read_inputs()
            registers[0 - start] = sum(1 << ch for ch, on in enumerate(inputs) if on)
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
        if line == CARRIER:
            return not r.carrier_cut
        return r.read_valves()[line]

    def _inputs(self) -> list[bool]:
        return [self._plant_state(ch) for ch in range(self.channels)]

    async def _read_inputs(self) -> list[bool]:
        """The limit switches: the model is the main loop's, so a module on its own thread
        asks that loop (inputs are polled, never on the timing path)."""
        if self._main is None:
            return self._inputs()
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self._inputs_async(), self._main)
        )

    async def _inputs_async(self) -> list[bool]:
        return self._inputs()

    def _write_output(self, ch: int, on: bool, source: str, at: float | None = None) -> None:
        if source != "pulse":
            self._cancel_pulse(ch)
        if self.outputs[ch] == on:
            return  # the plant only hears about changes, as a valve only sees edges
        self.outputs[ch] = on
        line = self.lines.get(ch)
        if line is not None:
            # stamped here, by the module: a command when its frame arrived, a pulse end or
            # an expiry when the module switched (the model may hear of it a little later)
            if at is None:
                at = self.arrival if source == "command" and self.arrival else time.monotonic()
            # As wired: a normally-open valve opens when its output is off.
            is_open = on != (ch in self.normally_open)
            if self._main is None:
                self.plant.set_valve(line, is_open, source=source, at=at)
            else:
                # RuntimeError: the simulator's loop has closed (it is shutting down) while
                # the module's own thread still switched an output: no plant left to tell
                with contextlib.suppress(RuntimeError):
                    self._main.call_soon_threadsafe(
                        self._set_plant_valve, line, is_open, source, at
                    )

    def _set_plant_valve(self, line: str, on: bool, source: str, at: float) -> None:
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
        # timed from the frame's arrival, as a module switching its output on receipt would
        start = self.arrival or time.monotonic()
        end = start + width_ms * self.pulse_unit_ms / 1000
        self._write_output(ch, True, "pulse", at=start)
        handle = loop.call_at(end, self._end_pulse, ch, end)
        self._pulses[ch] = (handle, end)
        # The end is known now: the model makes it at `end` even if the timer fires late.
        self._to_plant(ch, "schedule", end)

    def _end_pulse(self, ch: int, end: float) -> None:
        # A real module times the pulse in hardware: its output drops at `end`, whenever
        # the emulator gets round to it (the model is told the edge's true time, as for a
        # command's arrival). A module-timed width is therefore exact by construction.
        self._pulses.pop(ch, None)
        self._write_output(ch, False, "pulse", at=end)

    def _cancel_pulse(self, ch: int) -> None:
        pulse = self._pulses.pop(ch, None)
        if pulse is None:
            return
        handle, end = pulse
        handle.cancel()
        if end <= (self.arrival or time.monotonic()):
            # Its end came before this command did (the timer is late): the module dropped
            # the output then, so the model gets that edge rather than losing it.
            self._write_output(ch, False, "pulse", at=end)
        else:
            self._to_plant(ch, "unschedule", 0.0)

    def _to_plant(self, ch: int, what: str, at: float) -> None:
        """Schedule (or drop) a pulse's end in the plant, on the model's loop."""
        line = self.lines.get(ch)
        if line is None:
            return
        if what == "schedule":
            is_open = ch in self.normally_open  # the valve with its output off, as wired
            call: Callable[[], None] = partial(self.plant.schedule_valve, line, is_open, at)
        else:
            call = partial(self.plant.unschedule, line)
        if self._main is None:
            call()
        else:
            # RuntimeError: the simulator's loop has closed (shutting down), as above
            with contextlib.suppress(RuntimeError):
                self._main.call_soon_threadsafe(call)

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
        if self._wire is not None:
            return
        _probe_bind(self.host, self.port)  # a taken port is a plain OSError, at once
        if self.own_thread and self._thread is None:
            self._main = asyncio.get_running_loop()
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="valve module", daemon=True
            )
            self._thread.start()
        wire = _Wire(self)
        await self._in_module(wire.open())
        self._wire = wire
        self.port = wire.port

    async def _in_module(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` where the module lives (its own thread's loop, or this one)."""
        if self._loop is None:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def stop(self) -> None:
        """Pull the network cable: connections drop and nobody can connect. The module
        stays powered: outputs hold and its watchdog keeps running."""
        if self._wire is not None:
            wire, self._wire = self._wire, None
            await self._in_module(wire.close())

    async def shutdown(self) -> None:
        """Power off: stop serving and cancel the module's timers (pulses, watchdog)."""
        await self.stop()
        await self._in_module(self._power_off())
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join)
            self._loop.close()
            self._loop = self._thread = self._main = None

    async def _power_off(self) -> None:
        if self._wd_timer is not None:
            self._wd_timer.cancel()
            self._wd_timer = None
        for ch in list(self._pulses):
            self._cancel_pulse(ch)

    def link_fault(self) -> CommFault | None:
        """The communication faults the plant injects on this module right now."""
        if self._main is not None:
            # On its own thread the module must not advance the model (the main loop
            # does): it reads the faults as of the model's last step, at most a few
            # hundred ms old (the server steps it five times a second at least).
            return self.plant.reactor.faults.comm(self.component)
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


_TIMESPEC = struct.Struct("@ll")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux: SO_TIMESTAMPNS = SCM_...
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive time of a segment (SO_TIMESTAMPNS, CLOCK_REALTIME) on the
    monotonic clock: its age now, taken from the monotonic now."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            age_ns = time.time_ns() - (int(sec) * 1_000_000_000 + int(nsec))
            return time.monotonic() - max(0, age_ns) / 1e9
    return None


class _Wire:
    """The module's Modbus TCP listener: plain non-blocking sockets on the module's loop.

    Not pymodbus' server: a request's arrival is taken from the kernel (SO_TIMESTAMPNS via
    ``recvmsg``, where Linux allows it), which asyncio's transports cannot pass on, so the
    edges the module logs carry the wire's timing, not the emulator's scheduling. pymodbus
    still decodes the requests, builds the replies and holds the datastore (``SimCore``).
    """

    def __init__(self, module: ModbusDioModule) -> None:
        self.module = module
        self.port = module.port
        self._sock: socket.socket | None = None
        self._conns: set[_Conn] = set()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.module.host, self.module.port))
            sock.listen(16)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        loop.add_reader(sock, self._accept)

    def _accept(self) -> None:
        assert self._sock is not None
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        fault = self.module.link_fault()
        if fault is not None and fault.disconnected:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return
        self._conns.add(_Conn(self, conn))

    def forget(self, conn: _Conn) -> None:
        self._conns.discard(conn)

    async def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock)
            self._sock.close()
            self._sock = None
        for conn in list(self._conns):
            conn.close()


class _Conn:
    """One client connection: requests are cut from the stream as they arrive, stamped,
    and answered in order by one task."""

    def __init__(self, wire: _Wire, sock: socket.socket) -> None:
        self.wire = wire
        self.module = wire.module
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):  # Linux only: elsewhere the loop stamps arrivals
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.framer = FramerSocket(DecodePDU(True))
        self.buffer = bytearray()
        self.queue: asyncio.Queue[tuple[ModbusPDU | ExceptionResponse, float]] = asyncio.Queue()
        self.closed = False
        self.loop.add_reader(sock, self._readable)
        self.task = self.loop.create_task(self._serve_all(), name="modbus dio connection")

    def abort(self) -> None:
        """Drop the connection the hard way (a reset), as a link fault does."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.sock)
        self.task.cancel()
        self.sock.close()
        self.wire.forget(self)

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(65536, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        arrival = _arrival(ancillary)
        if arrival is None:
            arrival = time.monotonic()
        else:
            self.module.kernel_stamps += 1
        self.buffer += data
        self._cut(arrival)

    def _cut(self, arrival: float) -> None:
        # Frames are cut from the MBAP header (several in one segment are all served) and
        # checked before pymodbus decodes them, which would answer a request it cannot
        # decode with function code 0 (`80 01`).
        while len(self.buffer) >= 8:
            tid, proto, length, unit = struct.unpack_from(">HHHB", self.buffer)
            if proto != 0 or not 2 <= length <= 254:
                self.close()  # not Modbus: a real coupler drops the connection
                return
            if len(self.buffer) < 6 + length:
                return
            frame = bytes(self.buffer[: 6 + length])
            del self.buffer[: 6 + length]
            refused = frame_problem(frame[7:])
            pdu: ModbusPDU | None = None
            if refused is None:
                try:
                    _, pdu = self.framer.handleFrame(frame, 0, 0)
                except ModbusIOException:
                    pdu = None
            if pdu is None:
                reply = ExceptionResponse(
                    frame[7], exception_code=refused or ExcCodes.ILLEGAL_VALUE, device_id=unit
                )
                reply.transaction_id = tid
                self.queue.put_nowait((reply, arrival))
            else:
                self.queue.put_nowait((pdu, arrival))

    async def _serve_all(self) -> None:
        while True:
            pdu, arrival = await self.queue.get()
            if isinstance(pdu, ExceptionResponse):
                await self._send(self.framer.buildFrame(pdu))
            else:
                await self._serve(pdu, arrival)

    async def _send(self, frame: bytes) -> None:
        try:
            await self.loop.sock_sendall(self.sock, frame)
        except OSError:
            self.close()

    async def _serve(self, pdu: ModbusPDU, arrival: float) -> None:
        module = self.module
        module.requests += 1
        fault = module.link_fault()
        if fault is not None and fault.disconnected:
            self.abort()
            return
        if fault is not None and fault.silent:
            return
        jitter = fault.draw_jitter_ns() / 1e9 if fault is not None else 0.0
        if jitter:  # a timing-jitter fault delays the command itself
            await asyncio.sleep(jitter)
            arrival = time.monotonic()
        # A coupler drives its outputs as the frame arrives and answers afterwards: apply
        # first, then spend the response latency, so that the emulator's own timer jitter
        # does not leak into the output edges it logs.
        refused = module.check(pdu)
        reply: ModbusPDU
        if refused is not None:
            reply = ExceptionResponse(pdu.function_code, refused)
        else:
            module.note_request(pdu.function_code)
            module.arrival = arrival
            try:
                reply = await pdu.datastore_update(self.module._core, pdu.dev_id)  # type: ignore[arg-type]  # SimCore in 3.16
            finally:
                module.arrival = None
        if module.latency_s:
            await asyncio.sleep(module.latency_s)
        reply.transaction_id = pdu.transaction_id
        reply.dev_id = pdu.dev_id
        frame = self.framer.buildFrame(reply)
        if fault is not None and fault.corrupt():
            scrambled = bytes(b ^ fault.rng.randrange(1, 256) for b in frame[8:])
            frame = frame[:7] + b"\x00" + scrambled
        await self._send(frame)
