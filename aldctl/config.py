"""Tool configuration: which devices a reactor has and what each line, heater and MFC does.

A tool config is YAML (``config/*.yaml``); this module turns it into a validated, immutable
:class:`ToolConfig`. Recipes name chemicals and channels (``substrate``, ``carrier``,
``source.TMA``), never valve numbers: this is where the names meet the hardware.

With no ``--config``, aldctl uses the built-in simulated tool (``aldctl/data/sim-tool.yaml``)
and provisions one line per chemical the recipe names (:func:`aldctl.session.provision_lines`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from aldctl import units, yamlsrc
from aldctl.diagnostics import Diagnostics, Location, did_you_mean, shown, unknown_key
from aldctl.units import Kind


def _q(kind: Kind) -> BeforeValidator:
    def conv(v: object) -> float:
        if isinstance(v, float | int) and not isinstance(v, bool) and kind is Kind.FRACTION:
            return float(v)
        return units.parse_value(v, kind)

    return BeforeValidator(conv)


def _out(unit: str) -> PlainSerializer:
    # Written back with its unit, so `aldctl tool show` output loads as a config again.
    return PlainSerializer(lambda v: f"{v:g} {unit}", return_type=str, when_used="json")


Seconds = Annotated[float, _q(Kind.TIME), _out("s")]
DegC = Annotated[float, _q(Kind.TEMPERATURE), _out("degC")]
Kelvin = Annotated[float, _q(Kind.TEMPERATURE_DELTA), _out("K")]
KPerMin = Annotated[float, _q(Kind.TEMPERATURE_RATE), _out("K/min")]
Sccm = Annotated[float, _q(Kind.FLOW), _out("sccm")]
Torr = Annotated[float, _q(Kind.PRESSURE), _out("Torr")]
Watts = Annotated[float, _q(Kind.POWER), _out("W")]
Litres = Annotated[float, _q(Kind.VOLUME), _out("L")]
Grams = Annotated[float, _q(Kind.MASS), _out("g")]
Percent = Annotated[float, _q(Kind.FRACTION), _out("%")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ChannelRef(_Model):
    """``device:channel``, e.g. ``valves:3``."""

    device: str
    channel: int

    @classmethod
    def parse(cls, text: object) -> ChannelRef:
        if isinstance(text, ChannelRef):
            return text
        if isinstance(text, dict):
            return cls.model_validate(text)
        device, sep, chan = str(text).partition(":")
        if not sep or not chan.strip().isdigit():
            msg = f"'{text}' is not a 'device:channel' reference like 'valves:3'"
            raise ValueError(msg)
        return cls(device=device.strip(), channel=int(chan))

    def __str__(self) -> str:
        return f"{self.device}:{self.channel}"


Channel = Annotated[ChannelRef, BeforeValidator(ChannelRef.parse)]


class WordError(ValueError):
    """A word outside a closed vocabulary, with its hint (did you mean)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _closed(*choices: str) -> BeforeValidator:
    """A closed vocabulary: any case and width (NFKC), nothing else. A YAML 1.1 boolean
    (``no``, ``false``, ``on``) is refused, not read as one of the words: parse_tool turns an
    unquoted ``off`` back into the word where ``off`` is one (:data:`_OFF_WORD_FIELDS`)."""
    listed = f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]

    def conv(v: object) -> object:
        if isinstance(v, bool):
            raise WordError(
                f"a YAML boolean (unquoted yes, no, true, false, on, off) is not {listed}",
                f"write {listed}",
            )
        if not isinstance(v, str):
            raise WordError(f"'{shown(v)}' is not {listed}", f"write {listed}")
        word = unicodedata.normalize("NFKC", v).strip().casefold()
        if word in choices:
            return word
        if word in _YAML_BOOLEAN_WORDS:
            raise WordError(
                f"'{shown(v)}' is not {listed} (unquoted, YAML reads it as a boolean)",
                f"write {listed}",
            )
        raise WordError(
            f"'{shown(v)}' is not {listed}", did_you_mean(word, choices) or f"write {listed}"
        )

    return BeforeValidator(conv)


_YAML_BOOLEAN_WORDS = frozenset({"yes", "no", "y", "n", "true", "false", "on", "off"})
_OFF_WORD_FIELDS = (("safety", "heaters_on_safe_state"),)
"""Closed-word settings with the word ``off``: YAML 1.1 reads an unquoted ``off`` as false,
so parse_tool hands these the text as written (``off`` works unquoted, as the README writes
it; ``no`` and ``false`` stay booleans and are refused)."""

FailPosition = Annotated[Literal["closed", "open"], _closed("closed", "open")]
"""Where a valve goes de-energised: when its output drops (the I/O module's watchdog fired
because the controller died, the module lost power, a cable was pulled)."""


class ValveChannel(_Model):
    """A valve on an output channel, with its de-energised position (``fails``)."""

    valve: Channel
    fails: FailPosition

    @classmethod
    def parse(cls, value: object) -> object:
        if isinstance(value, str):
            msg = (
                f"state what the valve does when its output drops: {{valve: {value}, fails: "
                "open} for a normally-open valve, or fails: closed for a normally-closed one"
            )
            raise ValueError(msg)
        return value

    @property
    def device(self) -> str:
        return self.valve.device

    @property
    def channel(self) -> int:
        return self.valve.channel

    def __str__(self) -> str:
        return str(self.valve)


PumpValve = Annotated[ValveChannel, BeforeValidator(ValveChannel.parse)]


class DeviceSpec(BaseModel):
    """A device: its driver (an ``aldctl.drivers`` entry point) and the driver's options."""

    model_config = ConfigDict(extra="allow", frozen=True)
    driver: str
    connect_timeout: Seconds = 5.0

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LineSpec(_Model):
    chemical: str
    valve: Channel
    fails: FailPosition = "closed"
    """De-energised position of the dose valve: ALD dose valves are normally closed (a line
    that fails open is refused)."""
    min_pulse: Seconds = 0.010
    source_heater: str | None = None
    """Device of the source heater (heated sources); channel name ``source.<line>``."""
    line_heater: str | None = None
    """Device of the delivery-line heater; channel name ``line.<line>``."""
    source_max: DegC = 200.0
    line_max: DegC = 200.0
    source_mass: Grams = 25.0
    flow: Sccm | None = None
    """Gas lines (CO2, NH3, H2S, O2 doses): what flows while the valve is open, the MFC
    setpoint or the flow the line's restrictor passes. The simulator and validation's
    pressure prediction dose at this flow."""
    hazards: tuple[str, ...] = ()


class HeaterSpec(_Model):
    device: str
    max: DegC = 400.0
    min: DegC = 0.0
    ramp_max: KPerMin | None = None
    """K/min the heater can follow; faster ramps are refused at compile time."""


class FlowSpec(_Model):
    device: str
    gas: str = "N2"
    default: Sccm | None = None
    max: Sccm = 200.0


class GaugeSpec(_Model):
    device: str
    max: Torr = 10.0


class PlasmaSpec(_Model):
    device: str
    max_power: Watts = 600.0
    gases: tuple[str, ...] = ("O2", "N2", "H2", "Ar")
    pressure_min: Torr = 0.005
    pressure_max: Torr = 1.0
    ignition_time: Seconds = 2.0
    """Time after RF on by which the match has tuned: the ignition check runs then."""
    max_reflected: Watts = 30.0


class OzoneSpec(_Model):
    """The generator; O3 reaches the chamber through an ordinary line (chemical O3)."""

    device: str
    max: Percent = 15.0


class QcmSpec(_Model):
    device: str


DEFAULT_PURGE_FACTOR = 7.0
"""The factor that keeps CVD under 1 % of the film: ``sim.purge.DEFAULT_PURGE_FACTOR``, the
rule the simulator's CVD warning uses too (a literal here: the engine imports this module and
never the simulator; tests/test_sim_fidelity.py keeps the two equal)."""


class ChamberSpec(_Model):
    volume: Litres = 0.3
    residence_time: Seconds = 0.8
    """Chamber gas residence time tau = V/S at process pressure (measure it from a pulse decay)."""
    purge_factor: float = Field(default=DEFAULT_PURGE_FACTOR, gt=0)
    """A purge shorter than this many residence times gets a warning."""
    expose_carrier: Annotated[
        Literal["stop", "reduce", "keep"], _closed("stop", "reduce", "keep")
    ] = "stop"
    """What the carrier does while an ``expose`` step isolates the chamber from the pump,
    as the hardware does it: ``stop`` (its MFC to 0: the usual stop-flow), ``reduce`` (to
    ``expose_carrier_flow``) or ``keep`` (it keeps flowing and fills the chamber; only for
    a tool that bleeds it elsewhere). The compiler emits the carrier setpoints; validation
    predicts each exposure's peak pressure with them."""
    expose_carrier_flow: Sccm = 0.0
    """Carrier flow during an exposure when ``expose_carrier`` is ``reduce``."""


class InterlockSpec(_Model):
    """An interlock the tool has. It acts on the hardware itself (a gas-cabinet controller
    cutting the dose valves' supply); the declaration lets validation refuse a hazardous
    dose on a tool without it. With ``input``, the safety monitor also reads its contact
    every poll and aborts the run (safe state) the moment it leaves its healthy level."""

    note: str = ""
    """How it acts, e.g. 'flow switch in the cabinet exhaust, cuts the dose valves' 24 V'."""
    input: Channel | None = None
    """The digital input (``device:channel``) its contact is wired to, if aldctl reads it."""
    healthy: bool = True
    """The input's level while all is well (True: contact closed)."""


InterlockName = Literal["toxic_gas_detector", "exhaust_flow"]


class LimitAction(StrEnum):
    HOLD = "hold"
    ABORT = "abort"
    WARN = "warn"


class LimitSpec(_Model):
    max: float | None = None
    min: float | None = None
    action: Annotated[LimitAction, _closed(*LimitAction)] = LimitAction.ABORT
    for_: Seconds = Field(default=0.0, alias="for")
    """The value must stay out of band this long before the action fires."""


class PressureLimit(_Model):
    max: Torr = 5.0
    action: Annotated[LimitAction, _closed(*LimitAction)] = LimitAction.ABORT
    hold_above: Torr | None = None
    """Hold (close dose valves, keep carrier) above this; abort above ``max``."""
    for_: Seconds = Field(default=0.0, alias="for")
    recover_within: Seconds = Field(default=30.0, gt=0)
    """A pressure hold closes every dose valve and pumps: a chamber still above the hold
    limit after this long has something feeding it (a dose valve stuck open that a module
    reading back only its outputs cannot see, an MFC over its setpoint, a leak) or a pump
    that cannot clear it, and the run aborts saying so instead of holding to
    ``hold_timeout``. A chamber pumps down in seconds (a few residence times)."""


class Limits(_Model):
    pressure: PressureLimit = PressureLimit()
    over_temperature: Kelvin = 15.0
    """Abort when a heater runs this far above its setpoint."""
    flow_deviation: Percent = 10.0
    """Percent deviation of an MFC from its setpoint (after settling) that triggers a hold."""
    flow_settle: Seconds = 3.0
    reflected_power: Watts | None = None
    hold_timeout: Seconds = 600.0
    """Abort when a unit has been held this long in total (over all its holds)."""
    resume_after: Seconds = 5.0
    """In band this long after a hold before the run resumes on its own."""
    hold_retries: int = Field(default=3, ge=1)
    """A unit that trips the same hold this many times in a row aborts (each resume after
    a hold restarts the unit, so a dose that always trips it would be retried for ever)."""


class SafetySpec(_Model):
    poll_interval: Seconds = 1.0
    watchdog_polls: int = Field(default=3, ge=1)
    heartbeat_interval: Seconds = 0.25
    pressure_interval: Seconds | None = None
    """Read the chamber gauge alone this often between the polls and hold on a burst above
    ``limits.pressure.hold_above`` (None: the poll and the pulse monitor's reads only)."""
    heaters_on_safe_state: Annotated[Literal["hold", "off"], _closed("hold", "off")] = "hold"
    safe_state_timeout: Seconds = 5.0
    verify_time: Seconds = 30.0
    """After teardown the engine reads the tool back (dose valves closed, flows at their
    setpoints, heaters not above their limit nor climbing past their setpoint, the chamber
    back near its purged base pressure) until it is found safe on two reads a poll apart,
    or for at most this long; what is still wrong then is an alarm naming the device."""
    verify_base_factor: float = Field(default=1.5, gt=1)
    """The chamber is not "back near its base" above this many times the run's purged base
    pressure (the pressure when the doses opened)."""


class AutoLines(_Model):
    """How a tool provisions lines for the chemicals a recipe names (simulated tools)."""

    valves: str
    """Device the new lines' valves go on (next free channel)."""
    heater: dict[str, Any] = {}
    """Device spec template for each new source/line heater; ``component`` is filled in."""
    gas_flow: Sccm = 20.0
    """Flow of each gas line provisioned (CO2, NH3, H2S, O2 doses): its MFC setpoint."""


class OperatorSpec(_Model):
    """Who may command a run through its operator API (the socket under the data dir)."""

    group: str | None = None
    """Members of this Unix group may command runs of this tool (besides their owner)."""
    watchers: Annotated[Literal["owner", "group", "any"], _closed("owner", "group", "any")] = (
        "owner"
    )
    """Who may connect to watch: the owner only, the group, or anyone on the host."""


class TlsSpec(_Model):
    """TLS to the broker (``mqtts://`` URLs use it with the system's CAs by default)."""

    ca: Path | None = None
    """CA certificate(s) the broker's certificate must chain to (PEM)."""
    cert: Path | None = None
    """Client certificate (PEM), for brokers that authenticate clients by certificate."""
    key: Path | None = None
    """The client certificate's private key (PEM)."""

    @model_validator(mode="after")
    def _pair(self) -> TlsSpec:
        if self.key is not None and self.cert is None:
            msg = "tls.key needs tls.cert (the certificate it belongs to)"
            raise ValueError(msg)
        return self


class CommandsSpec(_Model):
    """Remote commands on ``<prefix>/<tool>/cmd/<verb>/<sender>`` (off unless enabled)."""

    enabled: bool = False
    allow: tuple[str, ...] = ()
    """Senders (broker users or client ids, as the broker's ACL binds them to the topic's
    last level) that may command; every other sender may only watch."""


_TOPIC_NAME = r"^[^/+#\s]+$"


class TelemetrySpec(_Model):
    """Fleet telemetry over MQTT (``aldctl.front.telemetry``): where to publish and what.

    Credentials never live here (a config is journaled with every run) nor in a recipe:
    the password comes from the environment or from a file this config names.
    """

    broker: str
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` (TLS); a user name may be given
    as ``mqtt://user@host``, a password may not."""
    enabled: bool = True
    tool_id: str | None = Field(default=None, pattern=_TOPIC_NAME)
    """This tool's topic level (default: the tool's name)."""
    prefix: str = Field(default="ald", pattern=_TOPIC_NAME)
    sample_interval: Seconds = 1.0
    """How often the latest channel values go to ``<prefix>/<tool>/telemetry``."""
    queue: int = Field(default=10000, ge=10, le=10_000_000)
    """Messages kept while the broker is slow or away; beyond it the oldest are dropped
    (and counted in the state)."""
    qos_events: Literal[0, 1, 2] = 1
    qos_telemetry: Literal[0, 1, 2] = 0
    username_env: str = "ALDCTL_MQTT_USERNAME"
    password_env: str = "ALDCTL_MQTT_PASSWORD"
    credentials_file: Path | None = None
    """A file with ``user`` on its first line and the password on its second (keep it
    mode 0600); read when the run starts, instead of the environment."""
    tls: TlsSpec | None = None
    mqtt_version: Literal["5", "3.1.1"] = "5"
    """MQTT 5 (replies carry the request's response topic and correlation data) or 3.1.1
    for brokers that speak only that (replies go to ``<prefix>/<tool>/reply/<sender>``)."""
    commands: CommandsSpec = CommandsSpec()

    @field_validator("mqtt_version", mode="before")
    @classmethod
    def _version(cls, v: object) -> object:
        # YAML reads `mqtt_version: 5` as an int and `3.1.1` as a string
        return str(v) if isinstance(v, int | float) else v

    @field_validator("broker")
    @classmethod
    def _url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        u = urlsplit(v)
        if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            msg = f"broker URL {v!r}: scheme must be mqtt:// or mqtts://"
            raise ValueError(msg)
        if not u.hostname:
            msg = f"broker URL {v!r} names no host"
            raise ValueError(msg)
        if u.password is not None:
            msg = (
                "a password in the broker URL would be journaled with every run: put it in "
                "the environment (password_env) or a file (credentials_file)"
            )
            raise ValueError(msg)
        try:
            u.port  # noqa: B018  # raises for a port that is not a number
        except ValueError:
            msg = f"broker URL {v!r}: the port is not a number"
            raise ValueError(msg) from None
        return v


class JournalSpec(_Model):
    sample_interval: Seconds = 5.0
    """How often the polled channels go into the run journal (the safety monitor polls
    more often; every poll goes to the live displays)."""
    trace_interval: Seconds = Field(default=0.05, gt=0)
    """Chamber pressure sampled this often, for the report's traces, in chosen units only:
    the first, the middle and the last of main, the first of a resumed session, and the
    unit of every alarm and the one after it (the journal stays small; the engine stays
    fast). 0 is refused; ``traces: false`` turns them off."""
    traces: bool = True


class DoseWatchSpec(_Model):
    """Per-pulse diagnostics: each dose's pressure response against its running baseline."""

    enabled: bool = True
    band: float = Field(default=0.35, gt=0, lt=1)
    """A response outside 1 +- band of the baseline counts as drifting (widened where a
    dose is noisier than that)."""
    persist: int = Field(default=3, ge=1)
    """Pulses in a row out of band before the warning."""
    missing: float = Field(default=0.15, ge=0, lt=1)
    """Below this fraction of the baseline a pulse counts as having no response."""
    persist_missing: int = Field(default=2, ge=1)
    warmup: int = Field(default=6, ge=3)
    """Pulses whose median is the first baseline."""
    skip: int = Field(default=2, ge=0)
    """First pulses of each dose left out (the line conditions)."""
    alpha: float = Field(default=0.05, gt=0, le=1)
    """Weight of each in-band pulse in the running baseline."""
    noise_sigmas: float = Field(default=6.0, ge=0)
    """The band is at least this many robust standard deviations of the warm-up pulses."""
    qcm_band: float = Field(default=0.5, gt=0, lt=1)
    base_band: float = Field(default=0.05, gt=0, lt=1)
    """The chamber pressure when a dose opens (the purged base) outside 1 +- base_band of
    its running baseline counts as drifting (widened where it is noisier than that)."""
    width_tolerance: float = Field(default=0.05, gt=0, lt=1)
    """A software-timed pulse whose delivered width (between the acknowledgements of its
    open and close commands) differs from the commanded width by more than this fraction
    of the commanded width counts as mistimed ..."""
    width_floor: float = Field(default=0.1, ge=0, le=1)
    """... but never by less than this fraction of the line's ``min_pulse`` (below it the
    valve's own stroke varies more: 1 ms for a 10 ms valve)."""
    width_persist: int = Field(default=2, ge=1)
    """Mistimed pulses of a line, among its last ``width_window``, before the warning (one
    late wake-up of a loaded controller is not a fault; a link that adds latency is)."""
    width_window: int = Field(default=5, ge=1)
    width_gross: float = Field(default=0.5, gt=0)
    """A single pulse off by more than this fraction of its commanded width (and by more
    than the tolerance) is reported at once, not after ``width_persist``: a 15 ms dose
    delivered as 100 ms is an overdose, not jitter (an ``alarm`` when it was long, a
    ``warning`` when short)."""


class ReferenceProblems(ValueError):
    """Cross-reference errors of a tool config, each with its config path."""

    def __init__(self, problems: list[tuple[tuple[str, ...], str, str]]) -> None:
        super().__init__("; ".join(msg for _, msg, _ in problems))
        self.problems = problems


class ToolConfig(_Model):
    name: str = "reactor"
    description: str = ""
    devices: dict[str, DeviceSpec]
    lines: dict[str, LineSpec] = {}
    auto_lines: AutoLines | None = None
    """Provision a line for every chemical a recipe names (the built-in simulated tool)."""
    pump_isolation: PumpValve | None = None
    """The valve between chamber and pump: ``{valve: dev:ch, fails: open|closed}``."""
    carrier_shutoff: PumpValve | None = None
    """A valve that cuts the carrier into the chamber, on the pump isolation valve's module:
    needed when the pump isolation valve fails closed (the engine opens it while the carrier
    flows and in the safe state; the module's watchdog closes it with the pump valve)."""
    heaters: dict[str, HeaterSpec] = {}
    flows: dict[str, FlowSpec] = {}
    gauges: dict[str, GaugeSpec] = {}
    plasma: PlasmaSpec | None = None
    ozone: OzoneSpec | None = None
    qcm: QcmSpec | None = None
    chamber: ChamberSpec = ChamberSpec()
    interlocks: dict[InterlockName, InterlockSpec] = {}
    """The interlocks the tool has; hazardous chemicals need theirs (aldctl.hazards)."""
    codose: tuple[tuple[str, str], ...] = ()
    """Pairs of lines the hardware lets open together (e.g. a dopant co-dose)."""
    limits: Limits = Limits()
    safety: SafetySpec = SafetySpec()
    journal: JournalSpec = JournalSpec()
    dose_watch: DoseWatchSpec = DoseWatchSpec()
    operator: OperatorSpec = OperatorSpec()
    telemetry: TelemetrySpec | None = None
    """Publish state, telemetry, events and pulses to an MQTT broker; accept remote commands
    (``aldctl.front.telemetry``)."""
    simulator: dict[str, Any] = {}
    """Options for the simulated reactor (only read by the simulated drivers)."""

    @field_validator("devices")
    @classmethod
    def _devices_not_empty(cls, v: dict[str, DeviceSpec]) -> dict[str, DeviceSpec]:
        if not v:
            msg = "a tool needs at least one device"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _references(self) -> ToolConfig:
        problems = self.reference_problems()
        if problems:
            raise ReferenceProblems(problems)
        return self

    def reference_problems(self) -> list[tuple[tuple[str, ...], str, str]]:
        """Names that point nowhere: (config path, message, hint) for each, so that the
        loader can say which line is wrong."""
        known = set(self.devices)
        problems: list[tuple[tuple[str, ...], str, str]] = []

        def check(where: str, dev: str | None) -> None:
            if dev is not None and dev not in known:
                hint = did_you_mean(dev, known)
                path: tuple[str, ...] = tuple(where.split("."))
                if path[0] in ("lines", "heaters", "flows", "gauges") and len(path) == 2:
                    path = (*path, "device")
                elif path[0] in ("plasma", "ozone", "qcm"):
                    path = (path[0], "device")
                elif path[0] in ("pump_isolation", "carrier_shutoff"):
                    path = (path[0], "valve")
                problems.append((path, f"{where}: no device '{dev}' in devices", hint))

        for name, line in self.lines.items():
            check(f"lines.{name}.valve", line.valve.device)
            check(f"lines.{name}.source_heater", line.source_heater)
            check(f"lines.{name}.line_heater", line.line_heater)
        for name, h in self.heaters.items():
            check(f"heaters.{name}", h.device)
        for name, f in self.flows.items():
            check(f"flows.{name}", f.device)
        for name, g in self.gauges.items():
            check(f"gauges.{name}", g.device)
        for what, spec in (("plasma", self.plasma), ("ozone", self.ozone), ("qcm", self.qcm)):
            if spec is not None:
                check(what, spec.device)
        if self.pump_isolation is not None:
            check("pump_isolation", self.pump_isolation.device)
        if self.carrier_shutoff is not None:
            check("carrier_shutoff", self.carrier_shutoff.device)
        if self.auto_lines is not None:
            check("auto_lines.valves", self.auto_lines.valves)
        for name, il in self.interlocks.items():
            if il.input is not None:
                check(f"interlocks.{name}.input", il.input.device)
        used: dict[str, str] = {}
        outputs = [(f"lines.{n}", f"line {n}", ln.valve) for n, ln in self.lines.items()]
        for what in ("pump_isolation", "carrier_shutoff"):
            v = getattr(self, what)
            if v is not None:
                outputs.append((what, what, v.valve))
        for where, label, ref in outputs:
            key = str(ref)
            if key in used:
                path = (*where.split("."), "valve")
                problems.append((path, f"{where}: valve {key} is already {used[key]}'s", ""))
            used[key] = label
        for i, (a, b) in enumerate(self.codose):
            for ln in (a, b):
                if ln not in self.lines and self.auto_lines is None:
                    problems.append(
                        (
                            ("codose", str(i)),
                            f"codose: no line '{ln}'",
                            did_you_mean(ln, self.lines),
                        )
                    )
        problems.extend(self.contradictions())
        return problems

    def contradictions(self) -> list[tuple[tuple[str, ...], str, str]]:
        """Values the config gives that contradict each other (a default above its own
        maximum, a hold limit above the abort limit): (config path, message, hint) for each,
        located at the value that cannot be."""
        out: list[tuple[tuple[str, ...], str, str]] = []
        for name, f in self.flows.items():
            if f.default is not None and f.default > f.max:
                out.append(
                    (
                        ("flows", name, "default"),
                        f"flows.{name}.default: {f.default:g} sccm is above the flow's "
                        f"max of {f.max:g} sccm",
                        f"lower default to at most {f.max:g} sccm, or raise max to what "
                        f"the {f.device} MFC may deliver",
                    )
                )
        for name, h in self.heaters.items():
            if h.min > h.max:
                out.append(
                    (
                        ("heaters", name, "min"),
                        f"heaters.{name}.min: {h.min:g} degC is above the heater's max of "
                        f"{h.max:g} degC: no setpoint is allowed",
                        "min is the lowest setpoint a recipe may ask for, max the highest",
                    )
                )
        p = self.limits.pressure
        if p.hold_above is not None and p.hold_above > p.max:
            out.append(
                (
                    ("limits", "pressure", "hold_above"),
                    f"limits.pressure.hold_above: {p.hold_above:g} Torr is above the "
                    f"pressure limit max of {p.max:g} Torr: the run aborts before it can hold",
                    f"hold below the abort limit (hold_above under {p.max:g} Torr), or raise max",
                )
            )
        if self.gauges:
            gname, gauge = next(iter(self.gauges.items()))
            if p.max > gauge.max:
                out.append(
                    (
                        ("limits", "pressure", "max"),
                        f"limits.pressure.max: {p.max:g} Torr is above what the chamber "
                        f"gauge reads (gauges.{gname}.max: {gauge.max:g} Torr): the abort "
                        "limit would never be seen",
                        f"set max to at most {gauge.max:g} Torr, or give the gauge's range "
                        f"in gauges.{gname}.max",
                    )
                )
        if self.plasma is not None:
            pl = self.plasma
            if pl.pressure_min > pl.pressure_max:
                out.append(
                    (
                        ("plasma", "pressure_min"),
                        f"plasma.pressure_min: {pl.pressure_min:g} Torr is above "
                        f"plasma.pressure_max ({pl.pressure_max:g} Torr): no plasma step "
                        "is allowed",
                        "pressure_min is the lowest pressure a plasma step may run at",
                    )
                )
            top = p.max if p.hold_above is None else min(p.max, p.hold_above)
            if pl.pressure_max > top:
                which = "max" if p.hold_above is None or p.max <= p.hold_above else "hold_above"
                out.append(
                    (
                        ("plasma", "pressure_max"),
                        f"plasma.pressure_max: {pl.pressure_max:g} Torr is above "
                        f"limits.pressure.{which} ({top:g} Torr): a plasma step the tool "
                        f"allows would {'abort' if which == 'max' else 'hold'} the run",
                        f"set plasma.pressure_max to at most {top:g} Torr",
                    )
                )
            if pl.max_reflected > pl.max_power:
                out.append(
                    (
                        ("plasma", "max_reflected"),
                        f"plasma.max_reflected: {pl.max_reflected:g} W is above "
                        f"plasma.max_power ({pl.max_power:g} W): the reflected-power limit "
                        "could never trip",
                        "reflected power is a part of the forward power: set the limit "
                        "below max_power",
                    )
                )
        ch = self.chamber
        carrier = self.flows.get("carrier")
        if ch.expose_carrier == "reduce" and carrier and ch.expose_carrier_flow > carrier.max:
            out.append(
                (
                    ("chamber", "expose_carrier_flow"),
                    f"chamber.expose_carrier_flow: {ch.expose_carrier_flow:g} sccm is above "
                    f"the carrier's max of {carrier.max:g} sccm (flows.carrier.max)",
                    f"reduce the carrier to at most {carrier.max:g} sccm during exposures",
                )
            )
        dw = self.dose_watch
        if dw.width_persist > dw.width_window:
            out.append(
                (
                    ("dose_watch", "width_persist"),
                    f"dose_watch.width_persist: {dw.width_persist} mistimed pulses can never "
                    f"be among the last width_window ({dw.width_window}): the warning could "
                    "never fire",
                    f"set width_persist to at most {dw.width_window}, or widen width_window",
                )
            )
        return out

    # ------------------------------------------------------------------ derived views

    def line_for_chemical(self, chemical: str) -> str | None:
        for name, line in self.lines.items():
            if line.chemical == chemical:
                return name
        return None

    def temperature_channels(self) -> dict[str, tuple[float, float]]:
        """Every settable temperature channel -> (min, max) degC."""
        out = {name: (h.min, h.max) for name, h in self.heaters.items()}
        for name, line in self.lines.items():
            if line.source_heater:
                out[f"source.{name}"] = (0.0, line.source_max)
            if line.line_heater:
                out[f"line.{name}"] = (0.0, line.line_max)
        return out

    def flow_channels(self) -> dict[str, tuple[float, float]]:
        return {name: (0.0, f.max) for name, f in self.flows.items()}

    def codose_allowed(self, a: str, b: str) -> bool:
        return (a, b) in self.codose or (b, a) in self.codose

    def fail_safe_problems(self) -> list[tuple[tuple[str, ...], str, str]]:
        """Why the tool's de-energised state (every output dropped) would not be safe:
        (config path, message, hint) for each problem.

        When the controller dies, the valve module's watchdog drops every output; the MFCs,
        on their own supplies, keep their setpoints. So a dose valve must fail closed, and
        the chamber must stay pumped: a pump isolation valve that fails closed is safe only
        if the carrier is cut by the same module (``carrier_shutoff``, failing closed).
        """
        out: list[tuple[tuple[str, ...], str, str]] = []
        for name, line in self.lines.items():
            if line.fails == "open":
                out.append(
                    (
                        ("lines", name, "fails"),
                        f"lines.{name}: the {line.chemical} dose valve fails open: it would "
                        f"dose {line.chemical} whenever the controller or the I/O module dies",
                        "ALD dose valves must be normally closed (fails: closed)",
                    )
                )
        iso = self.pump_isolation
        carrier = self.flows.get("carrier")
        if iso is not None and iso.fails == "closed" and carrier is not None:
            cut = self.carrier_shutoff
            if cut is None or cut.fails != "closed" or cut.device != iso.device:
                out.append(
                    (
                        ("pump_isolation", "fails"),
                        f"pump_isolation: {iso.valve} fails closed while the carrier "
                        f"(flows.carrier on '{carrier.device}') keeps flowing: when the "
                        "controller dies the chamber is sealed and fills with carrier",
                        "use a normally-open pump isolation valve (fails: open), or cut the "
                        "carrier from the same module: carrier_shutoff: {valve: "
                        f"{iso.device}:N, fails: closed}}",
                    )
                )
        return out


# ---------------------------------------------------------------------- loading


def _locate(tree: yamlsrc.Node | None, path: Iterable[int | str], file: str) -> Location:
    node = tree
    loc = tree.loc if tree is not None else Location(file, 1, 1)
    for part in path:
        if isinstance(node, yamlsrc.Map):
            key = str(part)
            if key == "for_":
                key = "for"
            child = node.get(key)
            if child is None:
                return node.loc if key not in node else node.key_loc(key)
            loc = (
                node.key_loc(key) if not isinstance(child, yamlsrc.Map | yamlsrc.Seq) else child.loc
            )
            if isinstance(child, yamlsrc.Scalar):
                loc = child.loc
            node = child
        elif isinstance(node, yamlsrc.Seq) and isinstance(part, int) and part < len(node):
            node = node.items[part]
            loc = node.loc
        else:
            break
    return loc


def _index(part: str) -> int | str:
    return int(part) if part.isdigit() else part


def _off_words(tree: yamlsrc.Map, plain: dict[str, Any]) -> None:
    """The text of an unquoted boolean where a word is meant: YAML 1.1 reads ``off`` and
    ``no`` alike as false; the word's validator accepts ``off`` and refuses ``no``."""
    for path in _OFF_WORD_FIELDS:
        node: yamlsrc.Node | None = tree
        where: Any = plain
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, yamlsrc.Map) else None
            where = where.get(part) if isinstance(where, dict) else None
        leaf = node.get(path[-1]) if isinstance(node, yamlsrc.Map) else None
        if (
            isinstance(leaf, yamlsrc.Scalar)
            and isinstance(leaf.value, bool)
            and isinstance(where, dict)
        ):
            where[path[-1]] = leaf.text


def to_plain(node: yamlsrc.Node | None) -> Any:
    if node is None:
        return None
    if isinstance(node, yamlsrc.Scalar):
        return node.value
    if isinstance(node, yamlsrc.Seq):
        return [to_plain(n) for n in node.items]
    return {str(k.value): to_plain(v) for k, v in node.entries}


def validation_diagnostics(
    exc: ValidationError, tree: yamlsrc.Node | None, file: str, diags: Diagnostics
) -> None:
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ReferenceProblems):
            prefix = tuple(str(p) for p in err["loc"])
            for ref_path, ref_msg, ref_hint in cause.problems:
                full = (*prefix, *ref_path)
                diags.error(ref_msg, _locate(tree, [_index(p) for p in full], file), ref_hint)
            continue
        loc = _locate(tree, err["loc"], file)
        # Keys are the file's words: only plain ones are repeated (see parse_tool).
        path = ".".join(shown(p) for p in err["loc"] if p != "for_") or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        hint = ""
        if isinstance(cause, WordError):
            msg, hint = cause.message, cause.hint
        elif err["type"] in ("literal_error", "enum"):
            expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
            hint = did_you_mean(str(err.get("input", "")), expected)
        if err["type"] == "extra_forbidden":
            msg = unknown_key(err["loc"][-1])
            hint = "check the spelling; see the config reference in README.md"
        elif err["type"] == "missing":
            msg = f"missing required key '{err['loc'][-1]}'"
        diags.error(f"{path}: {msg}", loc, hint)


@dataclass(frozen=True)
class KnownChemicals:
    """The chemicals a config's lines may carry, and the hint for one that is unknown (given
    by the caller: the catalogue lives in the simulator, which the engine never imports)."""

    known: Collection[str]
    hint: Callable[[str], str]


def _valve_plain(v: ValveChannel | None) -> dict[str, Any] | None:
    return None if v is None else {"device": v.device, "channel": v.channel, "fails": v.fails}


def plain_tool(config: ToolConfig) -> dict[str, Any]:
    """The parts of the config a simulated driver binding needs, as plain data (the
    ``tool`` service of :class:`drivers.base.DriverContext`)."""
    return {
        "name": config.name,
        "lines": {
            name: {
                "chemical": ln.chemical,
                "valve": {"device": ln.valve.device, "channel": ln.valve.channel},
                "source_heater": ln.source_heater,
                "line_heater": ln.line_heater,
                "source_mass_g": ln.source_mass,
                "flow_sccm": ln.flow,
            }
            for name, ln in config.lines.items()
        },
        "pump_isolation": _valve_plain(config.pump_isolation),
        "carrier_shutoff": _valve_plain(config.carrier_shutoff),
        "flows": {
            name: {"device": f.device, "gas": f.gas, "max": f.max}
            for name, f in config.flows.items()
        },
        "heaters": {name: {"device": h.device} for name, h in config.heaters.items()},
        "plasma": config.plasma is not None,
        "ozone": config.ozone is not None,
        "simulator": dict(config.simulator),
        "auto_lines": config.auto_lines is not None,
    }


def parse_tool(
    tree: yamlsrc.Node | None, file: str, chemicals: KnownChemicals | None = None
) -> ToolConfig:
    diags = Diagnostics()
    if not isinstance(tree, yamlsrc.Map):
        where = tree.loc if tree is not None else Location(file, 1, 1)
        diags.error("a tool config is a YAML mapping with at least 'devices:'", where)
        diags.raise_if_errors()
    if not yamlsrc.is_document_of(tree, TOP_KEYS):
        # /etc/shadow given as --config parses as a mapping of its lines: say what the file
        # is not, never what it holds.
        raise yamlsrc.not_a_document(
            file,
            "an aldctl tool config",
            "a tool config is a YAML mapping with 'devices:' and optional 'lines:', "
            "'name:', 'limits:', ... (see the config reference in README.md)",
        )
    plain = to_plain(tree)
    if isinstance(tree, yamlsrc.Map) and isinstance(plain, dict):
        _off_words(tree, plain)
    try:
        tool = ToolConfig.model_validate(plain)
    except ValidationError as exc:
        validation_diagnostics(exc, tree, file, diags)
        diags.raise_if_errors()
        raise AssertionError("unreachable") from None
    for path, msg, hint in tool.fail_safe_problems():
        diags.error(msg, _locate(tree, path, file), hint)
    if chemicals is not None:
        for name, line in tool.lines.items():
            if line.chemical not in chemicals.known:
                diags.error(
                    f"lines.{name}.chemical: unknown chemical '{line.chemical}'",
                    _locate(tree, ("lines", name, "chemical"), file),
                    chemicals.hint(line.chemical),
                )
    from drivers import registry

    installed = registry.available()
    for name, spec in tool.devices.items():
        if spec.driver not in installed:
            unknown = registry.UnknownDriver(spec.driver, sorted(installed))
            diags.error(
                f"devices.{name}.driver: no driver '{spec.driver}' is installed",
                _locate(tree, ("devices", name, "driver"), file),
                unknown.hint,
            )
    diags.raise_if_errors()
    _check_driver_options(tool, tree, file, diags)
    diags.raise_if_errors()
    return tool


def _check_driver_options(
    tool: ToolConfig,
    tree: yamlsrc.Node | None,
    file: str,
    diags: Diagnostics,
    *,
    provisioned: bool = False,
) -> None:
    """Build every device (nothing is opened or sent: see ``DriverFactory``) so that a bad
    driver option is an error here, at its line, for ``aldctl validate`` too, and not at
    connect time after a run record was made. A bad option shows as the factory words it.

    ``provisioned``: ``tool`` has the recipe's lines (:func:`aldctl.session.provision_lines`);
    before that, a simulated heater of a line the recipe may add is let through."""
    from drivers import registry
    from drivers.base import DriverContext, OptionError

    services = {"tool": plain_tool(tool), "seed": 0, "provisioned": provisioned}
    ctx = DriverContext(services=services)
    built: dict[str, object] = {}
    for name, spec in tool.devices.items():
        make = registry.factory(spec.driver)
        try:
            built[name] = make(name, spec.options, ctx)
        except OptionError as exc:
            option = exc.option if exc.option in spec.options else None
            path = ("devices", name) if option is None else ("devices", name, option)
            where = f"devices.{name}" if option is None else f"devices.{name}.{option}"
            diags.error(f"{where}: {exc}", _locate(tree, path, file), exc.hint or "")
        except ValueError as exc:  # a driver that does not say which option
            diags.error(
                f"devices.{name} ({spec.driver}): {exc}", _locate(tree, ("devices", name), file)
            )
        except Exception as exc:  # a driver's own bug, or one that opens at build
            diags.error(
                f"devices.{name}: the {spec.driver} driver could not build it: "
                f"{type(exc).__name__}: {exc}",
                _locate(tree, ("devices", name), file),
                "a driver's factory takes its options and builds objects only (see "
                "drivers.base.DriverFactory): check this device's options, or report it "
                "to the driver's authors",
            )
    _check_roles(tool, built, tree, file, diags)


def _roles(tool: ToolConfig) -> list[tuple[tuple[str, ...], str, str, int | None]]:
    """Every place the config names a device for a role: (config path, device, role,
    channel or None), the role a key of ``drivers.base.ROLES``."""
    out: list[tuple[tuple[str, ...], str, str, int | None]] = []
    for name, ln in tool.lines.items():
        out.append((("lines", name, "valve"), ln.valve.device, "valves", ln.valve.channel))
        if ln.source_heater:
            out.append((("lines", name, "source_heater"), ln.source_heater, "temperature", None))
        if ln.line_heater:
            out.append((("lines", name, "line_heater"), ln.line_heater, "temperature", None))
    for what in ("pump_isolation", "carrier_shutoff"):
        v: ValveChannel | None = getattr(tool, what)
        if v is not None:
            out.append(((what, "valve"), v.device, "valves", v.channel))
    if tool.auto_lines is not None:
        out.append((("auto_lines", "valves"), tool.auto_lines.valves, "valves", None))
    out += [
        (("heaters", n, "device"), h.device, "temperature", None) for n, h in tool.heaters.items()
    ]
    out += [(("flows", n, "device"), f.device, "flow", None) for n, f in tool.flows.items()]
    out += [(("gauges", n, "device"), g.device, "pressure", None) for n, g in tool.gauges.items()]
    for what, role in (("plasma", "plasma"), ("ozone", "ozone"), ("qcm", "thickness")):
        spec = getattr(tool, what)
        if spec is not None:
            out.append(((what, "device"), spec.device, role, None))
    for name, il in tool.interlocks.items():
        if il.input is not None:
            out.append((("interlocks", name, "input"), il.input.device, "inputs", il.input.channel))
    return out


def _in_tree(tree: yamlsrc.Node | None, path: tuple[str, ...]) -> bool:
    node = tree
    for part in path:
        if not isinstance(node, yamlsrc.Map) or part not in node:
            return False
        node = node.get(part)
    return True


def _check_roles(
    tool: ToolConfig,
    built: Mapping[str, object],
    tree: yamlsrc.Node | None,
    file: str,
    diags: Diagnostics,
) -> None:
    """Each device the config names for a role has that role's capability (a heater on a
    temperature controller, not on a gauge), and each ``device:channel`` names a channel the
    device has, asked of the devices as built (their Protocols and ``channels``), so that
    a wrong reference is refused at its line and not by the driver at the first pulse."""
    from drivers.base import ROLES, Channelled, describe

    for ref_path, device, role, channel in _roles(tool):
        path = ref_path
        dev = built.get(device)
        if dev is None:  # no such device, or one that did not build: said already
            continue
        where = ".".join(path)
        if path[0] == "lines" and not _in_tree(tree, path[:2]) and tool.auto_lines:
            # a line the tool provisioned for the recipe: its valve comes from auto_lines
            where = f"auto_lines (line {path[1]}, provisioned for the recipe)"
            path = ("auto_lines", "valves")
        proto, noun = ROLES[role]
        driver = tool.devices[device].driver
        if not isinstance(dev, proto):
            diags.error(
                f"{where}: '{device}' is {describe(dev)} ({driver}), not {noun}",
                _locate(tree, path, file),
                f"devices that are {noun.split(' ', 1)[1]}s: {', '.join(fit)}"
                if (fit := sorted(n for n, d in built.items() if isinstance(d, proto)))
                else f"the tool has no device that is {noun}: add one under devices:",
            )
            continue
        chans = dev.channels if isinstance(dev, Channelled) else None
        if channel is not None and isinstance(chans, Collection) and channel not in chans:
            have = sorted(c for c in chans if isinstance(c, int))
            valid = (
                f"{have[0]}..{have[-1]}"
                if have and have == list(range(have[0], have[-1] + 1))
                else (", ".join(str(c) for c in have))
            )
            diags.error(
                f"{where}: '{device}' has no channel {channel} ({driver}, {len(have)} "
                f"channel{'s' if len(have) != 1 else ''})",
                _locate(tree, path, file),
                f"channels of '{device}' are {valid}" if have else f"'{device}' has no channels",
            )


TOP_KEYS: tuple[str, ...] = tuple(f.alias or n for n, f in ToolConfig.model_fields.items())
"""The top-level keys of a tool config, for telling a config from another file."""


def load_tool(path: Path, chemicals: KnownChemicals | None = None) -> ToolConfig:
    return parse_tool(yamlsrc.load_file(path), str(path), chemicals)


def check_provisioned(tool: ToolConfig, tree: yamlsrc.Node | None, file: str) -> None:
    """The device check of :func:`parse_tool` again, on ``tool`` with the recipe's lines
    provisioned: a simulated ``source.<chem>`` heater the config names for a chemical the
    recipe does not dose is an error here, not at connect after a run record was made."""
    diags = Diagnostics()
    _check_driver_options(tool, tree, file, diags, provisioned=True)
    diags.raise_if_errors()


BUILTIN_NAME = "<built-in simulated tool>"


def builtin_text() -> str:
    return resources.files("aldctl.data").joinpath("sim-tool.yaml").read_text(encoding="utf-8")


def load_builtin() -> ToolConfig:
    return parse_tool(yamlsrc.parse_text(builtin_text(), BUILTIN_NAME), BUILTIN_NAME)


def plain_for_display(tool: ToolConfig) -> Mapping[str, Any]:
    return tool.model_dump(mode="json", by_alias=True, exclude_defaults=False)
