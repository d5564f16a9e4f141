"""Modbus TCP digital-output module driving pneumatic ALD valves (``ValveBank``).

WAGO 750-352/362 fieldbus couplers with digital output terminals, ADAM-6050 and Moxa
ioLogik E1211-style modules: coils are valve channels. Driver ``modbus-dio``.

Options (``config/hil.yaml``):

===================  ========  ==========================================================
``host``             required  module address
``port``             502       Modbus TCP port
``unit``             1         unit id (WAGO couplers ignore it)
``channels``         16        output channels 0..channels-1
``watchdog``         0         host watchdog time in s (0: leave the module's watchdog
                               alone); set at ``connect`` in 100 ms units, fed by
                               ``heartbeat``
``pulse_outputs``    false     the module times pulses itself (``pulse``)
``readback_offset``  0x200     where outputs read back (WAGO: +0x200; ADAM/Moxa: 0)
``position_inputs``  false     each valve's limit switch is wired to the digital input
                               of the same channel (FC02 0..channels-1): read as the
                               valves' positions (``read_positions``); read once at
                               ``connect`` (a module without those inputs fails there)
``position_sense``   open      ``open``: an input reads 1 when its valve is open;
                               ``closed``: when it is closed (a "closed" indicator)
``pulse_register``   0x2000    first pulse-width register (one per channel)
``timeout``          0.5       s per attempt
``retries``          2         extra attempts for transient errors
===================  ========  ==========================================================

Register map (PDU addresses; WAGO 750-341/352 manual "MODBUS registers", protocols.md 4.1):

* coils ``ch`` (FC05 write): the outputs; FC01 at ``readback_offset + ch``: read-back of
  what the module drives (a WAGO coupler reads its *inputs* below 0x200).
* the host watchdog, WAGO 750-352/040-000 manual v1.3.0, section 11.2.5, tables 112-124
  (pp. 173-176): 0x1000 watchdog time in 100 ms ("stored in multiples of 100ms (e.g.,
  0x0009 is .9 seconds)"), 0x1001/0x1002 function-code masks (factory 0xFFFF: any request
  retriggers), 0x1003 trigger, 0x1004 minimum remaining time since the start (0: "a
  fieldbus failure is assumed"), 0x1006 status (0 stopped, 1 running, 2 expired), 0x1008
  simple stop (0xAA55; also resets an expiry). 0x1000..0x1002 cannot be written while the
  watchdog runs.
* holding ``pulse_register + ch`` (FC06) [aldctl's pulse-output convention, after the Moxa
  ioLogik pulse-output mode and what a PLC program would expose]: writing a width in ms
  (1..65535) opens output ``ch`` at once and the module closes it after the width; writing
  0 aborts. The I/O module times the pulse, so its width does not carry the host's or the
  network's jitter.

The watchdog is armed and fed over a second TCP connection of its own, so that a valve
edge never waits behind a heartbeat's round trip on the valves' connection (the number of
simultaneous connections a 750-352 accepts was not verified here; aldctl uses two).

``connect`` follows the manual's sequence: read the status; stop a running or expired
watchdog with the simple stop (a reconnect inside the watchdog time finds it running, and
0x1000 cannot be written then); write the time and the masks (both 0: only the trigger
register retriggers, so the watchdog proves that the heartbeat, not just any poller, is
alive); reset 0x1004 to 0xFFFF; write a trigger value different from the one the module
holds; and read back that it runs.

When the watchdog runs out the module sets every output to 0 and answers process-data
requests with exception 04 (the driver reports a ``DeviceFault`` saying so). A new 0x1003
value would *reset* that fault on a real coupler, and the outputs stay 0, so a heartbeat that
only wrote the trigger would silently clear an expiry. ``heartbeat`` therefore reads 0x1004
and 0x1006 first and raises ``DeviceFault`` (without triggering) if the status is "expired"
or the minimum remaining time is 0; because 0x1004 stays 0 until ``connect`` writes it
again, an expiry that happened between that read and the trigger (or that anybody else
reset) is still reported by the next heartbeat: the engine cannot miss one. Only ``connect``
clears it.

Not verified: which exception a real coupler answers to a write of 0x1000..0x1002 while
the watchdog runs (the manual only says "it is not possible to modify this value"; the
emulator answers 03) and whether a 750-352 answers the watchdog registers themselves while
expired (the manual says it answers "all following" requests with 04, yet resets the fault
through 0x1003; the driver's sequence works either way, since it reads the status first
and stops an expired watchdog with 0x1008 before writing anything else).

``safe_state`` writes 0 to every output in one FC15 request: the device-level safe state
is all valves de-energised, pump isolation included (the engine drives the pump-isolation
channel itself).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from drivers.base import DeviceFault, DriverContext, Health, OptionError
from drivers.modbus_link import ModbusLink, ModbusUnit, Options

__all__ = ["ModbusValveBank", "create"]

WD_TIME = 0x1000
WD_TRIGGER = 0x1003
WD_MIN_REMAINING = 0x1004
WD_STATUS = 0x1006
WD_SIMPLE_STOP = 0x1008
WD_STOPPED, WD_RUNNING, WD_EXPIRED = 0, 1, 2
SLAVE_DEVICE_FAILURE = 4
EXPIRED_HINT = (
    "the module's watchdog has run out and switched every output off; connect again to restart it"
)


class ModbusValveBank:
    """A valve bank on a Modbus TCP I/O module (see the module docstring)."""

    def __init__(
        self,
        name: str,
        unit: ModbusUnit,
        *,
        channels: int,
        watchdog_s: float,
        pulse_outputs: bool,
        readback_offset: int,
        pulse_register: int,
        watchdog_unit: ModbusUnit | None = None,
        position_inputs: bool = False,
        position_sense: str = "open",
    ) -> None:
        self.name = name
        self.positions = position_inputs
        self._closed_sense = position_sense == "closed"
        self._unit = unit
        self._wd = watchdog_unit or unit
        self.channels: Sequence[int] = tuple(range(channels))
        self.hardware_pulse = pulse_outputs
        self.watchdog = watchdog_s > 0
        self.watchdog_s = watchdog_s
        self.readback_offset = readback_offset
        self.pulse_register = pulse_register
        self._beat = 0

    def health(self) -> Health:
        return self._unit.health

    async def connect(self) -> None:
        await self._unit.connect()
        if self.watchdog:
            if self._wd is not self._unit:
                await self._wd.connect()
            await self._arm_watchdog()
        await self.read_valves()
        if self.positions:
            await self.read_positions()  # inputs that are not there fail here, not in a hold

    async def close(self) -> None:
        if self._wd is not self._unit:
            await self._wd.close()
        await self._unit.close()

    async def _arm_watchdog(self) -> None:
        ticks = max(1, min(0xFFFF, round(self.watchdog_s * 10)))
        (status,) = await self._wd.read_holding(WD_STATUS)
        if status != WD_STOPPED:
            # Still running from a previous connection (or expired: the outputs are all off
            # by now); the simple stop ends both, and only then is 0x1000 writable.
            await self._wd.write_register(WD_SIMPLE_STOP, 0xAA55)
        await self._wd.write_registers(WD_TIME, [ticks, 0, 0])
        await self._wd.write_register(WD_MIN_REMAINING, 0xFFFF)
        (held,) = await self._wd.read_holding(WD_TRIGGER)
        self._beat = held % 0xFFFF + 1  # non-zero and different from what the module holds
        await self._wd.write_register(WD_TRIGGER, self._beat)
        (status,) = await self._wd.read_holding(WD_STATUS)
        if status != WD_RUNNING:
            msg = f"the module's watchdog did not start (status register 0x1006 reads {status})"
            raise DeviceFault(self.name, msg)

    def _check_channel(self, channel: int) -> None:
        if channel not in self.channels:
            msg = f"no channel {channel} (have 0..{len(self.channels) - 1})"
            raise DeviceFault(self.name, msg)

    async def set_valve(self, channel: int, is_open: bool) -> None:
        self._check_channel(channel)
        await self._unit.write_coil(channel, is_open)

    async def read_valves(self) -> Mapping[int, bool]:
        bits = await self._unit.read_coils(self.readback_offset, len(self.channels))
        return dict(zip(self.channels, bits, strict=True))

    async def read_positions(self) -> Mapping[int, bool]:
        """The valves' limit switches on the inputs (a WAGO coupler's FC02 reads its input
        image from 0): an output reads off for a valve whose stem is stuck open, its
        switch does not."""
        if not self.positions:
            raise DeviceFault(self.name, "no valve position inputs (position_inputs false)")
        bits = await self._unit.read_discrete(0, len(self.channels))
        return {ch: bit != self._closed_sense for ch, bit in zip(self.channels, bits, strict=True)}

    async def pulse(self, channel: int, duration_s: float) -> None:
        if not self.hardware_pulse:
            raise DeviceFault(self.name, "the module has no pulse outputs (pulse_outputs false)")
        self._check_channel(channel)
        if not math.isfinite(duration_s):
            raise DeviceFault(self.name, f"pulse width {duration_s} s is not a number")
        width_ms = round(duration_s * 1000)
        if not 1 <= width_ms <= 0xFFFF:
            msg = f"pulse width {duration_s:g} s is outside the module's 1 ms .. 65.535 s"
            raise DeviceFault(self.name, msg)
        await self._unit.write_register(self.pulse_register + channel, width_ms)

    async def heartbeat(self) -> None:
        if not self.watchdog:
            return
        least, _, status = await self._wd.read_holding(WD_MIN_REMAINING, 3)
        if status == WD_EXPIRED or least == 0:
            raise DeviceFault(self.name, EXPIRED_HINT)
        self._beat = self._beat % 0xFFFF + 1  # never 0: a 0 would not restart the watchdog
        await self._wd.write_register(WD_TRIGGER, self._beat)

    async def safe_state(self) -> None:
        await self._unit.write_coils(0, [False] * len(self.channels))


def create(name: str, options: Mapping[str, Any], ctx: DriverContext) -> ModbusValveBank:
    """Factory for the ``modbus-dio`` entry point (options: see the module docstring)."""
    opts = Options(options)
    policy = opts.policy()
    endpoint = opts.tcp_endpoint()
    unit = opts.integer("unit", 1, 0, 255)
    channels = opts.integer("channels", 16, 1, 256)
    watchdog = opts.number("watchdog", 0.0, 0.0, 6553.5)
    if 0 < watchdog < 0.1:
        msg = "option 'watchdog' must be 0 (off) or at least 0.1 s (the module counts 100 ms)"
        raise OptionError("watchdog", msg)
    pulse_outputs = opts.flag("pulse_outputs", False)
    readback = opts.integer("readback_offset", 0x200, 0, 0xFFFF - channels + 1)
    positions = opts.flag("position_inputs", False)
    sense = opts.text("position_sense", "open", ("open", "closed"))
    pulse_register = opts.integer("pulse_register", 0x2000, 0, 0xFFFF - channels + 1)
    opts.done("modbus-dio")
    link = ModbusLink.shared(ctx, endpoint)
    link.claim(unit, name, "unit")
    hints = {SLAVE_DEVICE_FAILURE: EXPIRED_HINT} if watchdog else {}
    health = Health()
    # The heartbeat has a connection of its own: on the valves' connection a valve edge due
    # while a heartbeat is in flight would wait for its round trip (a millisecond or more).
    beat = ModbusUnit(name, ModbusLink(endpoint), unit, policy, health, hints=hints)
    return ModbusValveBank(
        name,
        ModbusUnit(name, link, unit, policy, health, hints=hints),
        channels=channels,
        watchdog_s=watchdog,
        pulse_outputs=pulse_outputs,
        readback_offset=readback,
        pulse_register=pulse_register,
        watchdog_unit=beat if watchdog else None,
        position_inputs=positions,
        position_sense=sense,
    )
