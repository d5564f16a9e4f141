"""Device capabilities: the small Protocols the engine programs against.

The engine never sees a concrete driver. It sees a *valve bank*, a *flow controller*, a
*temperature controller*, a *pressure gauge*, a *plasma source*, an *ozone generator* and a
*thickness monitor*, each with ``connect``/``close``, reads, sets, ``safe_state`` and
``health``. A driver for new hardware implements one of these and registers a factory in
the ``aldctl.drivers`` entry-point group (see :mod:`drivers.registry`).

Rules every driver keeps:

* Every await on a device has a timeout; a device that does not answer raises
  :class:`DeviceTimeout`, never hangs.
* Errors are raised, never returned, and always name the device (``DeviceError.device``).
* ``safe_state`` is idempotent and bounded in time; it is what runs on abort, on Ctrl-C and
  when the process is told to terminate.
* Units are fixed by the method names: seconds, degC, sccm, Torr, W, Angstrom, percent.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# --------------------------------------------------------------------------- errors


class DeviceError(Exception):
    """A device did not do what it was asked. ``device`` names it for the operator."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device
        self.detail = message


class CommunicationError(DeviceError):
    """The link failed: bad frame, checksum or CRC, disconnect, unexpected reply."""


class DeviceTimeout(DeviceError):
    """The device did not answer in time (after the driver's retries)."""


class DeviceFault(DeviceError):
    """The device answered and reports a fault or refused the command."""


class OptionError(ValueError):
    """A driver option the factory cannot take: ``option`` names it (None: the device's
    options as a whole), so the tool config's checker can point at its line; ``hint`` says
    what would be right."""

    def __init__(self, option: str | None, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.option = option
        self.hint = hint


def unknown_options(
    options: Collection[str], allowed: Collection[str], driver: str
) -> OptionError | None:
    """The error for the options ``driver`` does not take (None: there are none), located
    at the first of them, with the closest option it does take as the hint."""
    extra = sorted(set(options) - set(allowed))
    if not extra:
        return None
    close = difflib.get_close_matches(extra[0], sorted(allowed), n=1, cutoff=0.6)
    hint = (
        f"did you mean '{close[0]}'?"
        if close
        else f"the {driver} driver takes: {', '.join(sorted(allowed))}"
    )
    names = ", ".join(f"'{o}'" for o in extra)
    return OptionError(extra[0], f"unknown option(s) for the {driver} driver: {names}", hint)


# --------------------------------------------------------------------------- health


@dataclass(slots=True)
class Health:
    """Link statistics a driver keeps; the safety watchdog and the operator read them."""

    connected: bool = False
    transactions: int = 0
    consecutive_failures: int = 0
    failures: int = 0
    retries: int = 0
    timeouts: int = 0
    garbage_bytes: int = 0
    bad_frames: int = 0
    reconnects: int = 0
    last_error: str = ""

    def record_ok(self) -> None:
        self.transactions += 1
        self.consecutive_failures = 0

    def record_failure(self, error: BaseException) -> None:
        self.transactions += 1
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = str(error)
        if isinstance(error, DeviceTimeout):
            self.timeouts += 1


# --------------------------------------------------------------------------- readings


@dataclass(frozen=True, slots=True)
class FlowReading:
    flow_sccm: float
    setpoint_sccm: float
    gas: str = ""
    status: tuple[str, ...] = ()
    """Device status flags, e.g. Alicat ``MOV`` (mass flow over range) or ``HLD``."""


@dataclass(frozen=True, slots=True)
class TemperatureReading:
    pv_c: float | None
    """Process value in degC; None when the sensor is broken."""
    setpoint_c: float | None
    """Working setpoint; None when the loop is off (standby)."""
    output_pct: float
    sensor_break: bool = False
    ramping: bool = False


@dataclass(frozen=True, slots=True)
class PressureReading:
    pressure_torr: float | None
    """None when the gauge reports under/over-range or a sensor error (see ``status``)."""
    status: str = "ok"
    asked_at: float | None = None
    """When the request that got this reading went on the wire (``time.monotonic()``), where
    the driver knows it: the gauge answers with the pressure it had then. A request that
    waited for the bus (another poll in flight) went out later than it was made, and its
    reply comes a transaction after it went out, so neither time dates the reading."""


@dataclass(frozen=True, slots=True)
class PlasmaReading:
    rf_on: bool
    setpoint_w: float
    forward_w: float
    reflected_w: float
    fault: str = ""


@dataclass(frozen=True, slots=True)
class OzoneReading:
    on: bool
    setpoint_pct: float
    concentration_pct: float
    """O3 in O2, weight percent."""
    fault: str = ""


@dataclass(frozen=True, slots=True)
class ThicknessReading:
    thickness_a: float
    rate_a_s: float
    frequency_hz: float
    crystal_life_pct: float


# --------------------------------------------------------------------------- capabilities


@runtime_checkable
class Device(Protocol):
    """What every device offers."""

    name: str

    async def connect(self) -> None:
        """Open the link and check the device answers (raises DeviceError otherwise)."""

    async def close(self) -> None:
        """Release the link; never raises."""

    async def safe_state(self) -> None:
        """Drive the device to its safe state: idempotent, time-bounded, best effort."""

    def health(self) -> Health:
        """Link statistics (no I/O)."""


@runtime_checkable
class ValveBank(Device, Protocol):
    """Digital outputs driving pneumatic ALD valves, addressed by channel number.

    Optional (looked up with ``getattr``, not part of the Protocol): ``warm(channel,
    is_open)``, which runs what :meth:`set_valve` runs on its way to the write, without any
    effect; the engine calls it just before a valve edge on the wall clock so that the edge
    runs from warm caches (the in-process simulator has it: see ``aldctl.engine.clock.WARM_S``).

    Optional as well: ``positions`` (bool) and ``read_positions()``, each valve's position
    from its "open" limit switch wired to an input of the module (True: open). An output
    reads off for a valve whose stem is stuck open; only a position sees it. The engine
    reads positions, where the bank has them, to find a dose valve stuck open after a hold
    and to verify the safe state (``aldctl.engine.devices.valve_positions``).
    """

    channels: Sequence[int]
    hardware_pulse: bool
    """True when :meth:`pulse` is timed by the module itself."""
    watchdog: bool
    """True when the module has its own watchdog that :meth:`heartbeat` feeds."""

    async def set_valve(self, channel: int, is_open: bool) -> None: ...

    async def read_valves(self) -> Mapping[int, bool]:
        """Read back the outputs (what the module drives, not what was asked)."""
        ...

    async def pulse(self, channel: int, duration_s: float) -> None:
        """Open ``channel`` for ``duration_s``, timed by the module; returns once commanded.

        Only valid when :attr:`hardware_pulse` is true.
        """
        ...

    async def heartbeat(self) -> None:
        """Retrigger the module's watchdog (no-op where there is none)."""
        ...


@runtime_checkable
class FlowController(Device, Protocol):
    full_scale_sccm: float

    async def set_flow(self, sccm: float) -> None: ...

    async def read_flow(self) -> FlowReading: ...


@runtime_checkable
class TemperatureController(Device, Protocol):
    async def set_temperature(self, setpoint_c: float | None) -> None:
        """Set the (remote) setpoint; None switches the loop off (standby)."""
        ...

    async def set_ramp_rate(self, k_per_min: float | None) -> None:
        """Setpoint ramp rate; None or 0 steps immediately."""
        ...

    async def read_temperature(self) -> TemperatureReading: ...


@runtime_checkable
class PressureGauge(Device, Protocol):
    async def read_pressure(self) -> PressureReading: ...


@runtime_checkable
class PlasmaSource(Device, Protocol):
    max_power_w: float

    async def set_power(self, watts: float) -> None: ...

    async def rf_on(self) -> None: ...

    async def rf_off(self) -> None: ...

    async def read_plasma(self) -> PlasmaReading: ...


@runtime_checkable
class OzoneGenerator(Device, Protocol):
    async def set_ozone(self, on: bool, setpoint_pct: float) -> None: ...

    async def read_ozone(self) -> OzoneReading: ...


@runtime_checkable
class ThicknessMonitor(Device, Protocol):
    async def read_thickness(self) -> ThicknessReading: ...

    async def zero(self) -> None:
        """Zero the thickness (start of a film)."""
        ...


@runtime_checkable
class DigitalInputs(Device, Protocol):
    """Digital inputs: interlock contacts (a toxic-gas detector's alarm relay, an exhaust
    flow switch) the safety monitor reads every poll."""

    async def read_inputs(self) -> Mapping[int, bool]:
        """Channel -> level (True: contact closed / input energised)."""
        ...


@runtime_checkable
class Channelled(Protocol):
    """A device addressed by channel number (a valve bank's outputs, an input module's
    inputs): the channels it has, known once it is built, before anything connects, so
    that a tool config's ``device:channel`` references are checked when it loads."""

    channels: Sequence[int]


ROLES: Mapping[str, tuple[type, str]] = {
    "valves": (ValveBank, "a valve module"),
    "flow": (FlowController, "a mass-flow controller"),
    "temperature": (TemperatureController, "a temperature controller"),
    "pressure": (PressureGauge, "a pressure gauge"),
    "plasma": (PlasmaSource, "a plasma source"),
    "ozone": (OzoneGenerator, "an ozone generator"),
    "thickness": (ThicknessMonitor, "a thickness monitor (QCM)"),
    "inputs": (DigitalInputs, "a digital-input module"),
}
"""The roles a tool config gives devices: the capability each needs and its name."""


def describe(device: object) -> str:
    """What ``device`` is, by the first capability it has ("a pressure gauge")."""
    for proto, noun in ROLES.values():
        if isinstance(device, proto):
            return noun
    return "a device with none of the engine's capabilities"


# --------------------------------------------------------------------------- factories


@dataclass(slots=True)
class DriverContext:
    """What a driver factory gets besides its own options.

    ``shared`` lets devices on one bus share one port and its lock: the first factory for a
    bus URL creates the bus object and stores it under the URL; the others reuse it.
    ``services`` carries objects a binding needs, e.g. the simulated reactor for the
    in-process simulated drivers.
    """

    shared: dict[str, Any] = field(default_factory=dict)
    services: dict[str, Any] = field(default_factory=dict)


class DriverFactory(Protocol):
    """The object an ``aldctl.drivers`` entry point names."""

    def __call__(self, name: str, options: Mapping[str, Any], ctx: DriverContext) -> Device:
        """Build (not connect) the device ``name`` from its ``options`` in the tool config.

        Raises ValueError with a message naming the bad option on invalid options, best as
        :class:`OptionError` (the config checker then points at that option's line).
        Builds objects only: no port is opened and nothing is sent, so ``aldctl validate``
        can check a tool's options on a machine without its hardware.
        """
        ...


@runtime_checkable
class SimulationHandle(Protocol):
    """Offered by simulated tools (``DriverContext.shared["simulation"]``): the simulated
    reactor's ground truth, and its persistence across a crash and resume (a real reactor
    keeps its film; a simulated one must be told to)."""

    def summary(self) -> dict[str, Any]:
        """Ground truth so far: at least ``thickness_nm``; JSON-serialisable."""
        ...

    def snapshot(self) -> bytes: ...

    def restore(self, state: bytes) -> None: ...
