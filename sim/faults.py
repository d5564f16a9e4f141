"""Fault injection (simulation.md 6.2): every fault is scheduled, active, then cleared.

A fault is created with :meth:`FaultInjector.inject` and a trigger: a virtual time
(``at_ns``), a number of valve actuations (``after_actuations`` of ``actuations_of``, default
the fault's own line: the first N open commands work, the fault is active from the next one
on, before that command takes effect), a
predicate over the reactor (``when``; evaluated after every ``advance_to`` and every actuator
command, so it fires at the first interaction at which it holds), or none (active at once).
``duration_ns`` clears it automatically; :meth:`FaultInjector.clear` clears it by hand.

Physical faults change the model (see each :class:`FaultKind`); communication faults
(timeout, corrupt frame, jitter, disconnect) have no physics: the in-process binding and the
protocol emulators ask :meth:`FaultInjector.comm` and act on the answer, drawing their random
decisions from the seeded RNG it carries, so runs stay reproducible.

Fault parameters (keyword arguments of ``inject``) and their defaults:

========================  ==================  ================================================
kind                      target              params
========================  ==================  ================================================
valve_stuck_closed        line                -
valve_stuck_open          line                leak_fraction=1.0 (1 = wide open, 0.01 = seat leak)
valve_slow                line                factor=3.0 (dead times and stroke multiplied)
mfc_low                   MFC                 max_sccm=None (None: half the setpoint at onset)
mfc_stuck                 MFC                 frozen=1.0 (flow frozen), offset_sccm=0.0 (drift)
heater_runaway            heater              - (output welded at 100 %)
thermocouple_break        heater              - (PV lost, sensor-break output)
pressure_spike            "chamber"           torr=1.0 (burst of carrier), leak_sccm=0.0
pump_degradation          "pump"              factor=0.3 (pumping speed multiplied)
empty_source              line                - (delivers nothing)
cold_source               line                drop_k=30.0 (unheated); heated: element open
gauge_drift               "chamber"           offset_torr=0.05, rate_torr_per_s=0.0
qcm_failure               "qcm"               noise_hz=50.0
plasma_no_ignite          "rf"                -
plasma_high_reflected     "rf"                fraction=0.5 (reflected/forward when lit)
comm_timeout              any device          - (device stops answering)
corrupt_frame             any device          probability=0.2
timing_jitter             any device          jitter_ms=5.0 (uniform extra command latency)
disconnect                any device          - (link closed)
toxic_gas_alarm           "interlocks"        - (the toxic-gas detector's input reads alarm)
exhaust_flow_loss         "interlocks"        - (the exhaust flow switch's input reads no flow)
========================  ==================  ================================================

The two interlock faults have no physics: they change what the tool's interlock inputs
read (the in-process binding's ``simulated-inputs`` device), so that a detector alarm or an
exhaust failure mid-run can be injected like any other fault.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from sim.units import NS_PER_MS


class FaultHost(Protocol):
    """What the injector needs of its reactor (:class:`sim.reactor.Reactor`), so that this
    module sits below the reactor's layers instead of importing them."""

    @property
    def now_ns(self) -> int: ...

    def _check_fault_target(self, kind: FaultKind, target: str) -> None: ...

    def _fault_changed(self, f: Fault, active: bool) -> None: ...

    def _schedule_changed(self) -> None: ...

    def _actuation_counts(self) -> dict[str, int]: ...


class FaultKind(StrEnum):
    VALVE_STUCK_CLOSED = "valve_stuck_closed"
    VALVE_STUCK_OPEN = "valve_stuck_open"
    VALVE_SLOW = "valve_slow"
    MFC_LOW = "mfc_low"
    MFC_STUCK = "mfc_stuck"
    HEATER_RUNAWAY = "heater_runaway"
    THERMOCOUPLE_BREAK = "thermocouple_break"
    PRESSURE_SPIKE = "pressure_spike"
    PUMP_DEGRADATION = "pump_degradation"
    EMPTY_SOURCE = "empty_source"
    COLD_SOURCE = "cold_source"
    GAUGE_DRIFT = "gauge_drift"
    QCM_FAILURE = "qcm_failure"
    PLASMA_NO_IGNITE = "plasma_no_ignite"
    PLASMA_HIGH_REFLECTED = "plasma_high_reflected"
    COMM_TIMEOUT = "comm_timeout"
    CORRUPT_FRAME = "corrupt_frame"
    TIMING_JITTER = "timing_jitter"
    DISCONNECT = "disconnect"
    TOXIC_GAS_ALARM = "toxic_gas_alarm"
    EXHAUST_FLOW_LOSS = "exhaust_flow_loss"


COMM_KINDS = frozenset(
    {
        FaultKind.COMM_TIMEOUT,
        FaultKind.CORRUPT_FRAME,
        FaultKind.TIMING_JITTER,
        FaultKind.DISCONNECT,
    }
)


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One fault parameter: its default (None: decided at onset), the closed range of
    values that mean something (``low_open``: ``low`` itself excluded), and what it is."""

    default: float | None
    low: float
    high: float
    meaning: str
    low_open: bool = False

    def check(self, kind: str, name: str, value: float) -> None:
        """ValueError naming the fault, the parameter and its range, unless ``value`` is a
        finite number inside the range."""
        below = value <= self.low if self.low_open else value < self.low
        if math.isfinite(value) and not below and value <= self.high:
            return
        msg = f"fault {kind}: {name}={value:g} is outside {self.range_text()} ({self.meaning})"
        raise ValueError(msg)

    def range_text(self) -> str:
        lo = "(" if self.low_open else "["
        return f"{lo}{self.low:g}, {self.high:g}]"


PARAM_SPECS: dict[FaultKind, dict[str, ParamSpec]] = {
    FaultKind.VALVE_STUCK_CLOSED: {},
    FaultKind.VALVE_STUCK_OPEN: {
        "leak_fraction": ParamSpec(1.0, 0.0, 1.0, "1 = wide open, 0.01 = seat leak", True)
    },
    FaultKind.VALVE_SLOW: {
        "factor": ParamSpec(3.0, 1.0, 1000.0, "dead times and stroke multiplied", True)
    },
    FaultKind.MFC_LOW: {
        "max_sccm": ParamSpec(None, 0.0, 1e5, "flow cap, sccm; default half the setpoint at onset")
    },
    FaultKind.MFC_STUCK: {
        "frozen": ParamSpec(1.0, 0.0, 1.0, "1: flow frozen at onset, 0: not"),
        "offset_sccm": ParamSpec(0.0, -1e5, 1e5, "drift added to the flow, sccm"),
    },
    FaultKind.HEATER_RUNAWAY: {},
    FaultKind.THERMOCOUPLE_BREAK: {},
    FaultKind.PRESSURE_SPIKE: {
        "torr": ParamSpec(1.0, 0.0, 1000.0, "burst of carrier added to the chamber, Torr"),
        "leak_sccm": ParamSpec(0.0, 0.0, 1e5, "lasting leak into the chamber, sccm"),
    },
    FaultKind.PUMP_DEGRADATION: {
        "factor": ParamSpec(0.3, 0.0, 1.0, "pumping speed multiplied (0: pump stopped)")
    },
    FaultKind.EMPTY_SOURCE: {},
    FaultKind.COLD_SOURCE: {
        "drop_k": ParamSpec(30.0, 0.0, 500.0, "source temperature drop when unheated, K")
    },
    FaultKind.GAUGE_DRIFT: {
        "offset_torr": ParamSpec(0.05, -1000.0, 1000.0, "reading offset, Torr"),
        "rate_torr_per_s": ParamSpec(0.0, -10.0, 10.0, "reading drift, Torr/s"),
    },
    FaultKind.QCM_FAILURE: {"noise_hz": ParamSpec(50.0, 0.0, 1e6, "frequency noise, Hz")},
    FaultKind.PLASMA_NO_IGNITE: {},
    FaultKind.PLASMA_HIGH_REFLECTED: {
        "fraction": ParamSpec(0.5, 0.0, 1.0, "reflected/forward power when lit")
    },
    FaultKind.COMM_TIMEOUT: {},
    FaultKind.CORRUPT_FRAME: {
        "probability": ParamSpec(0.2, 0.0, 1.0, "chance each frame is corrupted", True)
    },
    FaultKind.TIMING_JITTER: {
        "jitter_ms": ParamSpec(5.0, 0.0, 10_000.0, "uniform extra command latency, ms", True)
    },
    FaultKind.DISCONNECT: {},
    FaultKind.TOXIC_GAS_ALARM: {},
    FaultKind.EXHAUST_FLOW_LOSS: {},
}
"""Every kind's parameters: the one source of truth for ``inject``'s checks, ``aldctl run
--fault``'s and ``aldctl sim faults``' listing."""

_PARAMS: dict[FaultKind, dict[str, float | None]] = {
    k: {n: p.default for n, p in ps.items()} for k, ps in PARAM_SPECS.items()
}

TARGETS: dict[FaultKind, str] = {
    FaultKind.VALVE_STUCK_CLOSED: "a dose line (TMA, H2O, ...)",
    FaultKind.VALVE_STUCK_OPEN: "a dose line",
    FaultKind.VALVE_SLOW: "a dose line",
    FaultKind.MFC_LOW: "an MFC (carrier, ...)",
    FaultKind.MFC_STUCK: "an MFC",
    FaultKind.HEATER_RUNAWAY: "a heater (substrate, ...)",
    FaultKind.THERMOCOUPLE_BREAK: "a heater",
    FaultKind.PRESSURE_SPIKE: "chamber",
    FaultKind.PUMP_DEGRADATION: "pump",
    FaultKind.EMPTY_SOURCE: "a dose line",
    FaultKind.COLD_SOURCE: "a dose line",
    FaultKind.GAUGE_DRIFT: "chamber",
    FaultKind.QCM_FAILURE: "qcm",
    FaultKind.PLASMA_NO_IGNITE: "rf",
    FaultKind.PLASMA_HIGH_REFLECTED: "rf",
    FaultKind.COMM_TIMEOUT: "a device of the tool (valves, chamber = the gauge, ...)",
    FaultKind.CORRUPT_FRAME: "a device",
    FaultKind.TIMING_JITTER: "a device",
    FaultKind.DISCONNECT: "a device",
    FaultKind.TOXIC_GAS_ALARM: "interlocks",
    FaultKind.EXHAUST_FLOW_LOSS: "interlocks",
}
"""What each kind hits (its ``:TARGET``)."""

EFFECTS: dict[FaultKind, str] = {
    FaultKind.VALVE_STUCK_CLOSED: "the valve no longer opens",
    FaultKind.VALVE_STUCK_OPEN: "the valve no longer closes",
    FaultKind.VALVE_SLOW: "the valve opens and closes slower",
    FaultKind.MFC_LOW: "the flow is capped",
    FaultKind.MFC_STUCK: "the flow no longer follows its setpoint",
    FaultKind.HEATER_RUNAWAY: "the heater's output is welded at 100 %",
    FaultKind.THERMOCOUPLE_BREAK: "the temperature reading is lost",
    FaultKind.PRESSURE_SPIKE: "a burst of gas into the chamber",
    FaultKind.PUMP_DEGRADATION: "the pump slows",
    FaultKind.EMPTY_SOURCE: "the source delivers nothing",
    FaultKind.COLD_SOURCE: "the source cools (unheated) or its heater element opens",
    FaultKind.GAUGE_DRIFT: "the gauge reads off",
    FaultKind.QCM_FAILURE: "the crystal reading turns to noise",
    FaultKind.PLASMA_NO_IGNITE: "the plasma does not strike",
    FaultKind.PLASMA_HIGH_REFLECTED: "the match reflects power",
    FaultKind.COMM_TIMEOUT: "the device stops answering",
    FaultKind.CORRUPT_FRAME: "the device's frames are corrupted",
    FaultKind.TIMING_JITTER: "commands to the device are delayed",
    FaultKind.DISCONNECT: "the device's link is closed",
    FaultKind.TOXIC_GAS_ALARM: "the toxic-gas detector's input reads alarm",
    FaultKind.EXHAUST_FLOW_LOSS: "the exhaust flow switch's input reads no flow",
}


def check_params(kind: FaultKind | str, params: dict[str, float | None]) -> None:
    """ValueError unless every parameter is one ``kind`` takes, finite and in its range."""
    kind = FaultKind(kind)
    specs = PARAM_SPECS[kind]
    unknown = sorted(set(params) - set(specs))
    if unknown:
        takes = sorted(specs) or "none"
        msg = f"fault {kind}: unknown parameter(s) {unknown}; it takes {takes}"
        raise ValueError(msg)
    for name, value in params.items():
        if value is None:
            if specs[name].default is None:
                continue
            msg = f"fault {kind}: {name} needs a value"
            raise ValueError(msg)
        specs[name].check(str(kind), name, float(value))


_DEFAULT_TARGET: dict[FaultKind, str] = {
    FaultKind.PRESSURE_SPIKE: "chamber",
    FaultKind.PUMP_DEGRADATION: "pump",
    FaultKind.GAUGE_DRIFT: "chamber",
    FaultKind.QCM_FAILURE: "qcm",
    FaultKind.PLASMA_NO_IGNITE: "rf",
    FaultKind.PLASMA_HIGH_REFLECTED: "rf",
    FaultKind.TOXIC_GAS_ALARM: "interlocks",
    FaultKind.EXHAUST_FLOW_LOSS: "interlocks",
}


class FaultState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    CLEARED = "cleared"


@dataclass(slots=True)
class Fault:
    """One injected fault and its life cycle (times in virtual ns)."""

    id: int
    kind: FaultKind
    target: str
    params: dict[str, float | None]
    at_ns: int | None = None
    after_actuations: int | None = None
    actuations_of: str | None = None
    when: Callable[[Any], bool] | None = None
    duration_ns: int | None = None
    state: FaultState = FaultState.PENDING
    activated_ns: int | None = None
    cleared_ns: int | None = None

    def param(self, name: str) -> float:
        value = self.params[name]
        if value is None:
            msg = f"fault {self.kind}: parameter {name} has no value"
            raise ValueError(msg)
        return float(value)

    @property
    def clear_at_ns(self) -> int | None:
        if self.duration_ns is None or self.activated_ns is None:
            return None
        return self.activated_ns + self.duration_ns


@dataclass(slots=True)
class CommFault:
    """What the link to one device suffers right now (union of its active comm faults).

    ``rng`` is the device's seeded decision stream: call :meth:`corrupt` once per frame and
    :meth:`draw_jitter_ns` once per command, in the order they happen.
    """

    device: str
    silent: bool
    disconnected: bool
    corrupt_probability: float
    jitter_ns: int
    rng: random.Random

    def corrupt(self) -> bool:
        """Whether this frame is corrupted."""
        return self.corrupt_probability > 0.0 and self.rng.random() < self.corrupt_probability

    def draw_jitter_ns(self) -> int:
        """Extra latency for this command, uniform in [0, jitter_ns]."""
        if self.jitter_ns <= 0:
            return 0
        return int(self.rng.random() * self.jitter_ns)


@dataclass(slots=True)
class FaultData:
    """The injector's mutable state (part of a reactor snapshot)."""

    seed: int
    faults: list[Fault] = field(default_factory=list)
    next_id: int = 1
    comm_rngs: dict[str, random.Random] = field(default_factory=dict)


class FaultInjector:
    """Schedules, activates and clears faults on one :class:`~sim.reactor.Reactor`.

    Obtain it as ``reactor.faults``; it stays the same object across ``restore``.
    """

    def __init__(self, reactor: FaultHost, data: FaultData) -> None:
        self._reactor = reactor
        self._data = data

    # -- public
    def inject(
        self,
        kind: FaultKind | str,
        target: str | None = None,
        *,
        at_ns: int | None = None,
        after_actuations: int | None = None,
        actuations_of: str | None = None,
        when: Callable[[Any], bool] | None = None,
        duration_ns: int | None = None,
        **params: float | None,
    ) -> Fault:
        """Schedule a fault; with no trigger it is active at once. Returns the fault."""
        kind = FaultKind(kind)
        if target is None:
            if kind not in _DEFAULT_TARGET:
                msg = f"fault {kind}: name its target"
                raise ValueError(msg)
            target = _DEFAULT_TARGET[kind]
        allowed = _PARAMS[kind]
        check_params(kind, params)
        self._reactor._check_fault_target(kind, target)
        if after_actuations is not None:
            actuations_of = actuations_of or target
            self._reactor._check_fault_target(FaultKind.VALVE_SLOW, actuations_of)
        if duration_ns is not None and duration_ns <= 0:
            msg = "duration_ns must be > 0"
            raise ValueError(msg)
        fault = Fault(
            id=self._data.next_id,
            kind=kind,
            target=target,
            params={**allowed, **params},
            at_ns=at_ns,
            after_actuations=after_actuations,
            actuations_of=actuations_of,
            when=when,
            duration_ns=duration_ns,
        )
        self._data.next_id += 1
        self._data.faults.append(fault)
        now = self._reactor.now_ns
        if at_ns is None and after_actuations is None and when is None:
            self._activate(fault, now)
        else:
            self.poll(now)
        self._reactor._schedule_changed()
        return fault

    def clear(self, fault: Fault | int) -> None:
        """Clear a pending or active fault (idempotent)."""
        fid = fault if isinstance(fault, int) else fault.id
        for f in self._data.faults:
            if f.id == fid:
                if f.state is FaultState.ACTIVE:
                    self._deactivate(f, self._reactor.now_ns)
                elif f.state is FaultState.PENDING:
                    f.state = FaultState.CLEARED
                    f.cleared_ns = self._reactor.now_ns
                self._prune()
                self._reactor._schedule_changed()
                return
        raise KeyError(fid)

    def clear_all(self) -> None:
        for f in list(self._data.faults):
            if f.state is not FaultState.CLEARED:
                self.clear(f)

    def active(self, kind: FaultKind | str | None = None, target: str | None = None) -> list[Fault]:
        """Active faults, optionally of one kind and/or on one target."""
        k = FaultKind(kind) if kind is not None else None
        return [
            f
            for f in self._data.faults
            if f.state is FaultState.ACTIVE
            and (k is None or f.kind is k)
            and (target is None or f.target == target)
        ]

    def pending(self) -> list[Fault]:
        return [f for f in self._data.faults if f.state is FaultState.PENDING]

    def none(self) -> bool:
        """No fault set at all, in any state: the usual case, which the simulated devices
        ask about on every transaction (then :meth:`active`, :meth:`pending`,
        :meth:`comm` and :meth:`has_triggers` have nothing to say)."""
        return not self._data.faults

    def comm(self, device: str) -> CommFault | None:
        """The communication faults active on ``device`` (None when its link is healthy)."""
        if not self._data.faults:  # the usual case, asked before every device transaction
            return None
        faults = [f for f in self.active(target=device) if f.kind in COMM_KINDS]
        if not faults:
            return None
        rng = self._data.comm_rngs.get(device)
        if rng is None:
            rng = random.Random(f"{self._data.seed}:comm:{device}")
            self._data.comm_rngs[device] = rng
        prob = 0.0
        jitter = 0
        for f in faults:
            if f.kind is FaultKind.CORRUPT_FRAME:
                prob = max(prob, f.param("probability"))
            elif f.kind is FaultKind.TIMING_JITTER:
                jitter = max(jitter, round(f.param("jitter_ms") * NS_PER_MS))
        return CommFault(
            device=device,
            silent=any(f.kind is FaultKind.COMM_TIMEOUT for f in faults),
            disconnected=any(f.kind is FaultKind.DISCONNECT for f in faults),
            corrupt_probability=prob,
            jitter_ns=jitter,
            rng=rng,
        )

    # -- reactor hooks
    def next_time_ns(self) -> int | None:
        """Earliest scheduled activation or automatic clearing."""
        if not self._data.faults:
            return None
        times: list[int] = []
        for f in self._data.faults:
            if f.state is FaultState.PENDING and f.at_ns is not None:
                times.append(f.at_ns)
            elif f.state is FaultState.ACTIVE and f.clear_at_ns is not None:
                times.append(f.clear_at_ns)
        return min(times) if times else None

    def due(self, now: int) -> None:
        """Activate/clear time-scheduled faults due at ``now``."""
        if not self._data.faults:
            return
        for f in list(self._data.faults):
            if f.state is FaultState.ACTIVE and f.clear_at_ns is not None and f.clear_at_ns <= now:
                self._deactivate(f, now)
        for f in list(self._data.faults):
            if (
                f.state is FaultState.PENDING
                and f.at_ns is not None
                and f.at_ns <= now
                and f.after_actuations is None
                and f.when is None
            ):
                self._activate(f, now)
        self._prune()

    def poll(self, now: int) -> None:
        """Evaluate predicate and actuation triggers (and due times)."""
        self.due(now)
        counts = self._reactor._actuation_counts()
        for f in list(self._data.faults):
            if f.state is not FaultState.PENDING:
                continue
            if f.at_ns is not None and f.at_ns > now:
                continue
            if f.after_actuations is not None:
                assert f.actuations_of is not None
                if counts.get(f.actuations_of, 0) <= f.after_actuations:
                    continue
            if f.when is not None and not f.when(self._reactor):
                continue
            self._activate(f, now)
        self._prune()

    def has_triggers(self) -> bool:
        if not self._data.faults:
            return False
        return any(
            f.state is FaultState.PENDING and (f.when is not None or f.after_actuations is not None)
            for f in self._data.faults
        )

    # -- internals
    def _activate(self, f: Fault, now: int) -> None:
        f.state = FaultState.ACTIVE
        f.activated_ns = now
        self._reactor._fault_changed(f, True)

    def _deactivate(self, f: Fault, now: int) -> None:
        f.state = FaultState.CLEARED
        f.cleared_ns = now
        self._reactor._fault_changed(f, False)

    def _prune(self) -> None:
        # Keep memory bounded over long runs: forget all but the last 64 cleared faults.
        cleared = [f for f in self._data.faults if f.state is FaultState.CLEARED]
        if len(cleared) > 64:
            drop = {f.id for f in cleared[:-64]}
            self._data.faults = [f for f in self._data.faults if f.id not in drop]

    def _rebind(self, data: FaultData) -> None:
        self._data = data

    def describe(self) -> list[dict[str, Any]]:
        """Plain-data view of every fault (for logs and the operator)."""
        return [
            {
                "id": f.id,
                "kind": str(f.kind),
                "target": f.target,
                "state": str(f.state),
                "params": dict(f.params),
                "activated_ns": f.activated_ns,
                "cleared_ns": f.cleared_ns,
            }
            for f in self._data.faults
        ]


def catalogue() -> list[dict[str, Any]]:
    """Every fault kind, what it hits and does, and its parameters (for listings)."""
    return [
        {
            "kind": str(k),
            "target": TARGETS[k],
            "default_target": _DEFAULT_TARGET.get(k),
            "effect": EFFECTS[k],
            "communication": k in COMM_KINDS,
            "params": {
                n: {"default": p.default, "range": p.range_text(), "meaning": p.meaning}
                for n, p in PARAM_SPECS[k].items()
            },
        }
        for k in FaultKind
    ]
