"""In-process simulated devices: the capability Protocols on top of :mod:`sim.reactor`.

Every simulated device of a tool shares one :class:`SimulatedReactor` (kept in
``DriverContext.shared["simulation"]``). Before each command or read, the reactor is
advanced to the event loop's current time, so the same drivers work in virtual time (the
engine's fast-forwarding loop: a five-hour recipe in seconds) and in real time.

The simulator's communication faults act here as they would on a wire: a device marked
silent makes every call time out (``DeviceTimeout`` after the driver timeout), a corrupt
frame raises ``CommunicationError``, timing jitter delays the command.

Device names in the simulator: lines by chemical, heaters ``substrate``, ``walls``,
``source.<line>``, ``line.<line>``, MFCs ``carrier`` and ``plasma.<gas>``, ``chamber``
(gauge), ``rf``, ``ozone``, ``qcm``, ``valves`` (the valve bank). Each tool device names
its simulator component with the ``component`` option (default: the device's name).
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from drivers.base import (
    CommunicationError,
    DeviceError,
    DeviceFault,
    DeviceTimeout,
    DriverContext,
    FlowReading,
    Health,
    OptionError,
    OzoneReading,
    PlasmaReading,
    PressureReading,
    TemperatureReading,
    ThicknessReading,
    unknown_options,
)
from sim.chemistry import catalogue
from sim.config import OzoneConfig, PlasmaConfig, ReactorConfig, gas_line_flow, heated_source_c
from sim.reactor import Reactor, Snapshot, UnknownComponentError

TIMEOUT_S = 0.5
"""What a silent simulated device costs a caller before DeviceTimeout (as a real driver's
transaction timeout would)."""


class SimulatedReactor:
    """The reactor behind a simulated tool; also the tool's :class:`SimulationHandle`."""

    def __init__(self, tool: Mapping[str, Any], seed: int) -> None:
        opts = dict(tool.get("simulator") or {})
        lines: Mapping[str, Mapping[str, Any]] = tool.get("lines") or {}
        self.line_of: dict[tuple[str, int], str] = {}
        chems: list[str] = []
        for name, ln in lines.items():
            valve = ln["valve"]
            self.line_of[(valve["device"], int(valve["channel"]))] = ln["chemical"]
            chems.append(ln["chemical"])
            if ln["chemical"] != name and name in chems:
                msg = f"simulated tool: line {name!r} and another both carry {ln['chemical']}"
                raise ValueError(msg)
        iso = tool.get("pump_isolation")
        self.pump_channel = (iso["device"], int(iso["channel"])) if iso else None
        # Outputs are modelled as wired: a normally-open valve closes when energised.
        self.pump_fails_open = bool(iso and iso.get("fails") == "open")
        cut = tool.get("carrier_shutoff")
        self.carrier_channel = (cut["device"], int(cut["channel"])) if cut else None
        self.carrier_fails_open = bool(cut and cut.get("fails") == "open")
        try:
            cfg = ReactorConfig.from_mapping({"chemicals": chems, **opts})
        except ValueError as exc:
            msg = f"simulator options: {exc}"
            raise ValueError(msg) from exc
        feeds = [f["gas"] for n, f in (tool.get("flows") or {}).items() if n.startswith("plasma.")]
        if tool.get("plasma") and feeds:
            have = cfg.plasma.feed_gases if cfg.plasma is not None else ()
            gases = tuple(dict.fromkeys([*have, *feeds]))
            base = cfg.plasma if cfg.plasma is not None else PlasmaConfig()
            cfg = dataclasses.replace(cfg, plasma=dataclasses.replace(base, feed_gases=gases))
        if tool.get("ozone") and cfg.ozone is None:
            cfg = dataclasses.replace(cfg, ozone=OzoneConfig())
        # The tool config says how much precursor each source holds: the model starts there.
        masses = {
            ln["chemical"]: ln.get("source_mass_g")
            for ln in lines.values()
            if catalogue_state(ln["chemical"]) != "gas"  # cylinders: regulated supply
        }
        cfg = dataclasses.replace(
            cfg,
            lines=tuple(
                # a small source runs dry at its end, not in proportion from the start
                dataclasses.replace(lc, mass_g=float(m), reserve_g=min(lc.reserve_g, 0.1 * m))
                if (m := masses.get(lc.chemical)) is not None
                else lc
                for lc in cfg.lines
            ),
        )
        # A gas line doses at its stated flow (MFC setpoint or restrictor).
        flows = {ln["chemical"]: ln.get("flow_sccm") for ln in lines.values()}
        cfg = dataclasses.replace(
            cfg,
            lines=tuple(
                dataclasses.replace(lc, **gas_line_flow(float(f), cfg.ambient_c))
                if (f := flows.get(lc.chemical)) is not None
                and catalogue_state(lc.chemical) == "gas"
                and lc.chemical != "O3"  # ozone comes from the generator's own flow
                else lc
                for lc in cfg.lines
            ),
        )
        self.config = cfg
        self.reactor = Reactor(cfg, seed=seed)
        self.origin: float | None = None
        self._synced_at = float("nan")
        """The event-loop time :meth:`sync` last brought the model to (NaN: none)."""
        self._deferred: list[tuple[int, Callable[[Reactor], None]]] = []
        self.line_names = frozenset(lc.name for lc in cfg.lines)
        self.auto_lines = bool(tool.get("auto_lines"))
        self.provisioned = True
        """The tool's lines are the recipe's (``provision_lines`` ran): a component the
        reactor lacks is then missing, not yet to come. False only for the check of a
        tool config as written, before any recipe."""
        """Lines come per recipe (``provision_lines``), with the heated chemicals' heaters."""
        self.watchdogs: list[SimValveBank] = []
        """Valve modules with a watchdog: each drops its outputs at its deadline in model
        time, whether or not anything is talking to the simulation then."""

    def _now_ns(self) -> int:
        now = asyncio.get_running_loop().time()
        if self.origin is None:
            self.origin = now - self.reactor.now_ns / 1e9
        return round((now - self.origin) * 1e9)

    def sync(self) -> Reactor:
        """Advance the reactor to the event loop's now (applying deferred commands at their
        own times on the way) and return it."""
        now = asyncio.get_running_loop().time()
        # A safety poll reads a dozen devices at one instant (virtual time stands still
        # while it runs): after the first, the model is there already. Nothing can fall
        # due at an instant the model has been brought to: deferred commands are queued
        # at it or later, and a watchdog's deadline is always ahead of its last request.
        if now == self._synced_at and not self._deferred:
            return self.reactor
        r = self.advance_to(self._now_ns())
        self._synced_at = now
        return r

    def advance_to(self, t_ns: int) -> Reactor:
        """Advance the model to ``t_ns``, with every deferred command and every valve
        module's watchdog expiry applied at its own time on the way."""
        r = self._apply_deferred()
        banks = self.watchdogs
        if len(banks) > 1:  # the earliest expiry first
            banks = sorted(banks, key=lambda b: b.deadline_ns or 0)
        for bank in banks:
            due = bank.deadline_ns
            if due is not None and due <= t_ns:
                if due > r.now_ns:
                    r.advance_to(due)
                bank.expire(r)
        if t_ns > r.now_ns:
            r.advance_to(t_ns)
        return r

    def defer(self, command: Callable[[Reactor], None]) -> bool:
        """Take a command now and apply it at this instant of model time later, at the next
        :meth:`sync`: a valve edge then costs the caller no model catch-up between the
        command and the timestamp it takes after it (the model computes the elapsed
        interval on the next read, which nothing times). Refused (False) while a fault
        waits for a time or a trigger: those must see the model brought up to now first."""
        r = self.reactor
        if r.faults.pending() or r.faults.has_triggers():
            return False
        self._deferred.append((max(self._now_ns(), r.now_ns), command))
        return True

    def _apply_deferred(self) -> Reactor:
        r = self.reactor
        if self._deferred:
            todo, self._deferred = self._deferred, []
            for t_ns, command in todo:
                if t_ns > r.now_ns:
                    r.advance_to(t_ns)
                command(r)
        return r

    # SimulationHandle ------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        r = self._apply_deferred()
        t = r.truth()
        out = {
            "thickness_nm": t.thickness_a / 10.0,
            "ald_thickness_nm": t.ald_thickness_a / 10.0,
            "cvd_thickness_nm": t.cvd_thickness_a / 10.0,
            "composition": dict(t.composition),
            "growth_by_kind_nm": {k: v / 10.0 for k, v in t.growth_by_kind_a.items()},
            "cycles_by_kind": dict(t.cycles_by_kind),
            "consumed_g": dict(t.consumed_g),
            "source_mass_g": dict(t.source_mass_g),
            "valve_actuations": dict(t.valve_actuations),
            "saturation": {
                k: {"doses": v.doses, "min": v.min_fraction, "mean": v.mean_fraction}
                for k, v in t.saturation.items()
            },
            "processes": list(t.processes),
            "process_time_s": t.now_ns / 1e9,
        }
        ch = r.config.chamber
        if ch is not None:
            # a cross-flow chamber: the film per position (the thickness above is the
            # substrate's)
            prof = r.cell_profile()
            out["chamber"] = {
                "cells": ch.cells,
                "substrate_at": ch.substrate_at,
                "positions": list(prof.positions),
                "thickness_nm": [v / 10.0 for v in prof.thickness_a],
            }
        return out

    def snapshot(self) -> bytes:
        return self._apply_deferred().snapshot_bytes()

    def restore(self, state: bytes) -> None:
        self._deferred.clear()
        self.reactor.restore(Snapshot.from_bytes(state))
        self.origin = None
        self._synced_at = float("nan")


def _reactor(ctx: DriverContext) -> SimulatedReactor:
    sim = ctx.shared.get("simulation")
    if sim is None:
        tool = ctx.services.get("tool")
        if not isinstance(tool, Mapping):
            msg = "simulated devices need the tool description in the driver context"
            raise ValueError(msg)
        sim = SimulatedReactor(tool, int(ctx.services.get("seed", 0)))
        sim.provisioned = bool(ctx.services.get("provisioned", True))
        ctx.shared["simulation"] = sim
    assert isinstance(sim, SimulatedReactor)
    return sim


class _SimDevice:
    def __init__(self, name: str, component: str, sim: SimulatedReactor) -> None:
        self.name = name
        self.component = component
        self.sim = sim
        self._health = Health()

    async def _link(self) -> Reactor:
        """Apply the simulator's comm faults for this device, then sync the reactor."""
        r = self.sim.sync()
        fault = r.faults.comm(self.component)
        if fault is not None:
            jitter = fault.draw_jitter_ns()
            if jitter > 0:
                await asyncio.sleep(jitter / 1e9)
                r = self.sim.sync()
            if fault.disconnected:
                err0: DeviceError = CommunicationError(self.name, "link down (disconnected)")
                self._health.record_failure(err0)
                raise err0
            if fault.silent:
                await asyncio.sleep(TIMEOUT_S)
                self.sim.sync()
                err: DeviceError = DeviceTimeout(self.name, f"no answer within {TIMEOUT_S:g} s")
                self._health.record_failure(err)
                raise err
            if fault.corrupt():
                self._health.bad_frames += 1
                err = CommunicationError(self.name, "corrupt frame (checksum mismatch)")
                self._health.record_failure(err)
                raise err
        self._health.record_ok()
        return r

    async def connect(self) -> None:
        r = await self._link()
        if self.component not in r.device_names():
            msg = f"the simulated reactor has no component '{self.component}'"
            raise DeviceFault(self.name, msg)
        self._health.connected = True

    async def close(self) -> None:
        self._health.connected = False

    def health(self) -> Health:
        return self._health

    def _fault(self, exc: Exception) -> DeviceError:
        return DeviceFault(self.name, str(exc))


WATCHDOG_EXPIRED = (
    "the module's watchdog has run out and switched every output off; connect again to restart it"
)


class SimValveBank(_SimDevice):
    """The valve module, with the host watchdog of the WAGO-style module the emulator serves
    (sim/devices/modbus_dio.py; WAGO 750-352/040-000 manual v1.3.0, 11.2.5) when the
    ``watchdog`` option is set: started at ``connect``, retriggered by every request the
    module accepts (the factory function mask: any request), and when it runs out every
    output drops (dose valves close, the pump isolation and carrier shut-off go to their
    de-energised position) and process data is refused until ``connect`` restarts it."""

    hardware_pulse = False
    watchdog = False

    def __init__(
        self,
        name: str,
        component: str,
        sim: SimulatedReactor,
        channels: int,
        watchdog_s: float = 0.0,
        position_inputs: bool = False,
    ) -> None:
        super().__init__(name, component, sim)
        self.channels: Sequence[int] = tuple(range(channels))
        self.positions = position_inputs
        """Each valve's "open" limit switch is wired to an input (:meth:`read_positions`)."""
        self.outputs: dict[int, bool] = {}
        """What the module drives (:meth:`read_valves`): a valve stuck open reads closed."""
        self.watchdog_s = watchdog_s
        self._watchdog_ns = round(watchdog_s * 1e9)
        self.deadline_ns: int | None = None
        """When the running watchdog drops the outputs (model time); None: not running."""
        self.expired = False
        if watchdog_s > 0:
            self.watchdog = True
            sim.watchdogs.append(self)

    def _retrigger(self) -> None:
        if self.deadline_ns is not None:
            self.deadline_ns = self.sim._now_ns() + self._watchdog_ns

    def expire(self, r: Reactor) -> None:
        """The watchdog ran out (at the model's present time): every output off."""
        self.deadline_ns = None
        self.expired = True
        for ch in self.channels:
            self._write(r, ch, False)

    def _write(self, r: Reactor, channel: int, is_open: bool) -> None:
        self.outputs[channel] = is_open
        target = self._target(channel)
        if target == "__pump__":
            r.set_pump_isolation(is_open != self.sim.pump_fails_open)
        elif target == "__carrier__":
            r.set_carrier_shutoff(is_open != self.sim.carrier_fails_open)
        elif target is not None:
            r.set_valve(target, is_open)

    async def _link(self) -> Reactor:
        r = await super()._link()  # raises on a lost link: no retrigger then
        if self.expired:
            err = DeviceFault(self.name, WATCHDOG_EXPIRED)
            self._health.record_failure(err)
            raise err
        self._retrigger()
        return r

    async def connect(self) -> None:
        await _SimDevice._link(self)  # the link, without the expired check: this restarts
        self.expired = False
        if self.watchdog_s > 0:
            self.deadline_ns = self.sim._now_ns() + self._watchdog_ns
        await super().connect()

    def _target(self, channel: int) -> str | None:
        if self.sim.pump_channel == (self.name, channel):
            return "__pump__"
        if self.sim.carrier_channel == (self.name, channel):
            return "__carrier__"
        return self.sim.line_of.get((self.name, channel))

    def warm(self, channel: int, is_open: bool) -> None:
        """What :meth:`set_valve` reads on its way to the write, without writing: the engine
        runs it just before a valve edge on the wall clock, so that the edge itself runs
        from warm caches (``aldctl.engine.clock.WARM_S``). No effect on the model, the
        watchdog or the health counters."""
        target = self._target(channel)
        faults = self.sim.reactor.faults
        if target is not None and faults.comm(self.component) is None:
            _ = target in self.sim.line_names and not self.expired
            _ = self.deadline_ns is None or self.deadline_ns > self.sim._now_ns()
            _ = faults.pending() or faults.has_triggers()
        _ = self._health.connected

    async def set_valve(self, channel: int, is_open: bool) -> None:
        # ``is_open`` is the output (energised); for the dose lines that is "open".
        target = self._target(channel)
        if (
            target is not None
            and not target.startswith("__")
            and self.sim.reactor.faults.comm(self.component) is None
        ):
            line = target

            def command(r: Reactor) -> None:
                r.set_valve(line, is_open)

            if (
                line in self.sim.line_names
                and not self.expired
                # a deadline already passed: the request goes through the link, which
                # applies the expiry first and refuses it
                and (self.deadline_ns is None or self.deadline_ns > self.sim._now_ns())
                and self.sim.defer(command)
            ):
                self._health.record_ok()
                self._retrigger()
                self.outputs[channel] = is_open
                return
        r = await self._link()
        if channel in self.channels:
            self.outputs[channel] = is_open
        if target == "__pump__":
            r.set_pump_isolation(is_open != self.sim.pump_fails_open)
        elif target == "__carrier__":
            r.set_carrier_shutoff(is_open != self.sim.carrier_fails_open)
        elif target is not None:
            try:
                r.set_valve(target, is_open)
            except UnknownComponentError as exc:
                raise self._fault(exc) from None
        elif channel not in self.channels:
            raise DeviceFault(self.name, f"no channel {channel}")

    async def read_valves(self) -> Mapping[int, bool]:
        await self._link()
        return {ch: self.outputs.get(ch, False) for ch in self.channels}

    async def read_positions(self) -> Mapping[int, bool]:
        r = await self._link()
        if not self.positions:
            raise DeviceFault(self.name, "no valve position inputs (position_inputs false)")
        actual = r.read_valves()
        out: dict[int, bool] = {}
        for ch in self.channels:  # True: the valve is open (not: the output is on)
            target = self._target(ch)
            if target == "__pump__":
                out[ch] = r.read_pump_isolation()
            elif target == "__carrier__":
                out[ch] = not r.carrier_cut
            elif target is not None:
                out[ch] = bool(actual.get(target, False))
            else:
                out[ch] = False
        return out

    async def pulse(self, channel: int, duration_s: float) -> None:
        raise DeviceFault(self.name, "simulated valves are software-timed (hardware_pulse False)")

    async def heartbeat(self) -> None:
        # Four times a second for hours of virtual time: without a fault that could touch
        # the link (none active on it, none waiting for a time or a trigger) the beat only
        # retriggers the watchdog, without bringing the model up to now (as a deferred
        # valve edge): the next read does that, expiries included.
        faults = self.sim.reactor.faults
        now_ns = self.sim._now_ns()
        if (
            not self.expired
            and self.deadline_ns is not None
            and self.deadline_ns > now_ns
            and (
                faults.none()
                or (
                    not faults.pending()
                    and not faults.has_triggers()
                    and faults.comm(self.component) is None
                )
            )
        ):
            self._health.record_ok()
            self.deadline_ns = now_ns + self._watchdog_ns  # retriggered
            return
        await self._link()

    async def safe_state(self) -> None:
        r = await self._link()
        for line in self.sim.line_of.values():
            r.set_valve(line, False)


class SimHeater(_SimDevice):
    _rate: float | None = None

    async def set_temperature(self, setpoint_c: float | None) -> None:
        r = await self._link()
        r.set_heater(self.component, setpoint_c, self._rate)

    async def set_ramp_rate(self, k_per_min: float | None) -> None:
        await self._link()
        self._rate = k_per_min or None

    async def read_temperature(self) -> TemperatureReading:
        r = await self._link()
        try:
            st = r.read_heater(self.component)
        except UnknownComponentError as exc:
            raise self._fault(exc) from None
        return TemperatureReading(
            st.pv_c, st.setpoint_c, st.output_pct, st.sensor_break, st.ramping
        )

    async def safe_state(self) -> None:
        await self._link()


class SimMfc(_SimDevice):
    def __init__(self, name: str, component: str, sim: SimulatedReactor, full_scale: float) -> None:
        super().__init__(name, component, sim)
        self.full_scale_sccm = full_scale

    async def set_flow(self, sccm: float) -> None:
        r = await self._link()
        r.set_mfc(self.component, max(0.0, min(sccm, self.full_scale_sccm)))

    async def read_flow(self) -> FlowReading:
        r = await self._link()
        st = r.read_mfc(self.component)
        return FlowReading(st.flow_sccm, st.setpoint_sccm)

    async def safe_state(self) -> None:
        await self._link()


class SimGauge(_SimDevice):
    async def read_pressure(self) -> PressureReading:
        r = await self._link()
        p = r.read_pressure_torr(self.component)
        return PressureReading(p, "ok" if p is not None else "sensor error")

    async def safe_state(self) -> None:
        await self._link()


class SimPlasma(_SimDevice):
    def __init__(self, name: str, component: str, sim: SimulatedReactor, max_w: float) -> None:
        super().__init__(name, component, sim)
        self.max_power_w = max_w
        self._setpoint = 0.0
        self._on = False

    async def set_power(self, watts: float) -> None:
        r = await self._link()
        if watts > self.max_power_w:
            raise DeviceFault(self.name, f"{watts:g} W is above the {self.max_power_w:g} W limit")
        self._setpoint = watts
        if self._on:
            r.set_rf(True, watts)

    async def rf_on(self) -> None:
        r = await self._link()
        self._on = True
        r.set_rf(True, self._setpoint)

    async def rf_off(self) -> None:
        r = await self._link()
        self._on = False
        r.set_rf(False, self._setpoint)

    async def read_plasma(self) -> PlasmaReading:
        r = await self._link()
        st = r.read_plasma()
        return PlasmaReading(st.on, st.setpoint_w, st.forward_w, st.reflected_w)

    async def safe_state(self) -> None:
        await self.rf_off()


class SimOzone(_SimDevice):
    async def set_ozone(self, on: bool, setpoint_pct: float) -> None:
        r = await self._link()
        r.set_ozone(on, setpoint_pct)

    async def read_ozone(self) -> OzoneReading:
        r = await self._link()
        st = r.read_ozone()
        return OzoneReading(st.on, st.setpoint_pct, st.concentration_pct)

    async def safe_state(self) -> None:
        await self.set_ozone(False, 0.0)


class SimQcm(_SimDevice):
    async def read_thickness(self) -> ThicknessReading:
        r = await self._link()
        st = r.read_qcm()
        if st.failed:
            raise DeviceFault(self.name, "crystal failure")
        return ThicknessReading(st.thickness_a, st.rate_a_s, st.frequency_hz, st.crystal_life_pct)

    async def zero(self) -> None:
        r = await self._link()
        r.zero_qcm()

    async def safe_state(self) -> None:
        await self._link()


def _heated(role: str, chem: str) -> bool:
    """``role.chem`` names the source or line heater of a heated chemical."""
    return role in ("source", "line") and chem in catalogue() and heated_source_c(chem) is not None


def _provisioned_heater(sim: SimulatedReactor, comp: str) -> bool:
    """``source.<chem>``/``line.<chem>`` of a heated chemical on a tool whose lines come
    per recipe: the heater exists once the recipe's lines are provisioned, which the tool
    config is checked before (and checked again on the provisioned tool)."""
    role, _, chem = comp.partition(".")
    return sim.auto_lines and not sim.provisioned and _heated(role, chem)


def _component(name: str, options: Mapping[str, Any], sim: SimulatedReactor | None = None) -> str:
    """The simulator component a device binds to (its own name by default); with ``sim``,
    one the simulated reactor has, checked when the tool config loads, not at connect."""
    comp = options.get("component", name)
    if not isinstance(comp, str):
        msg = "option 'component' must be a simulator component name"
        raise OptionError("component", msg)
    if sim is not None:
        known = sim.reactor.device_names()
        role, _, chem = comp.partition(".")
        if comp not in known and sim.auto_lines and sim.provisioned and _heated(role, chem):
            msg = (
                f"the simulated reactor has no component '{comp}': the recipe doses no {chem}, "
                "and this tool's lines and their heaters come from the recipe (auto_lines)"
            )
            hint = f"remove this device, or use it with a recipe that doses {chem}"
            raise OptionError("component" if "component" in options else None, msg, hint)
        if comp not in known and not _provisioned_heater(sim, comp):
            close = difflib.get_close_matches(comp, sorted(known), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "it has: " + ", ".join(sorted(known))
            msg = f"the simulated reactor has no component '{comp}'"
            raise OptionError("component" if "component" in options else None, msg, hint)
    return comp


def _no_extra(options: Mapping[str, Any], allowed: set[str]) -> None:
    error = unknown_options(options, allowed, "simulated")
    if error is not None:
        raise error


def make_valves(name: str, options: Mapping[str, Any], ctx: DriverContext) -> SimValveBank:
    _no_extra(options, {"component", "channels", "watchdog", "position_inputs"})
    positions = options.get("position_inputs", False)
    if not isinstance(positions, bool):
        msg = "option 'position_inputs' must be true or false"
        raise OptionError("position_inputs", msg)
    channels = options.get("channels", 16)
    if not isinstance(channels, int) or channels < 1:
        msg = "option 'channels' must be a positive whole number"
        raise OptionError("channels", msg)
    # as the modbus-dio driver's option: seconds, 0 = none, 0.1 s steps up to 6553.5 s
    watchdog = options.get("watchdog", 0.0)
    if isinstance(watchdog, bool) or not isinstance(watchdog, int | float):
        msg = "option 'watchdog' must be a number of seconds (0: no watchdog)"
        raise OptionError("watchdog", msg)
    if not 0.0 <= watchdog <= 6553.5:
        msg = "option 'watchdog' must be 0..6553.5 s"
        raise OptionError("watchdog", msg)
    w = 0.0 if watchdog == 0 else max(1, round(watchdog * 10)) / 10
    sim = _reactor(ctx)
    return SimValveBank(name, _component(name, options, sim), sim, channels, w, positions)


def make_heater(name: str, options: Mapping[str, Any], ctx: DriverContext) -> SimHeater:
    _no_extra(options, {"component"})
    sim = _reactor(ctx)
    return SimHeater(name, _component(name, options, sim), sim)


def _positive(options: Mapping[str, Any], option: str, default: float, unit: str) -> float:
    value = options.get(option, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        msg = f"option '{option}' must be a positive number of {unit}, not {value!r}"
        raise OptionError(option, msg)
    return float(value)


def make_mfc(name: str, options: Mapping[str, Any], ctx: DriverContext) -> SimMfc:
    _no_extra(options, {"component", "full_scale_sccm"})
    fs = _positive(options, "full_scale_sccm", 200.0, "sccm")
    sim = _reactor(ctx)
    return SimMfc(name, _component(name, options, sim), sim, fs)


def make_gauge(name: str, options: Mapping[str, Any], ctx: DriverContext) -> SimGauge:
    _no_extra(options, {"component"})
    sim = _reactor(ctx)
    return SimGauge(name, _component(name, options, sim), sim)


def make_rf(name: str, options: Mapping[str, Any], ctx: DriverContext) -> SimPlasma:
    _no_extra(options, {"component", "max_power_w"})
    max_w = _positive(options, "max_power_w", 600.0, "W")
    sim = _reactor(ctx)
    return SimPlasma(name, _component(name, options, sim), sim, max_w)


def make_ozone(name: str, options: Mapping[str, Any], ctx: DriverContext) -> SimOzone:
    _no_extra(options, {"component"})
    sim = _reactor(ctx)
    return SimOzone(name, _component(name, options, sim), sim)


def make_qcm(name: str, options: Mapping[str, Any], ctx: DriverContext) -> SimQcm:
    _no_extra(options, {"component"})
    sim = _reactor(ctx)
    return SimQcm(name, _component(name, options, sim), sim)


INTERLOCK_INPUTS = {"toxic_gas_alarm": 0, "exhaust_flow_loss": 1}
"""The simulated interlock inputs: channel 0 the toxic-gas detector (closed: no gas),
channel 1 the exhaust flow switch (closed: exhaust flowing); each opens while its fault
(``toxic_gas_alarm``, ``exhaust_flow_loss``) is active."""


class SimInputs(_SimDevice):
    """Interlock inputs of the simulated tool: healthy (closed) unless a fault says not."""

    channels: Sequence[int] = tuple(sorted(INTERLOCK_INPUTS.values()))

    async def connect(self) -> None:
        await self._link()  # not a physics component: no component check
        self._health.connected = True

    async def safe_state(self) -> None:
        return None

    async def read_inputs(self) -> Mapping[int, bool]:
        r = await self._link()
        if r.faults.none():  # every poll: healthy unless a fault says not
            return dict.fromkeys(INTERLOCK_INPUTS.values(), True)
        return {
            ch: not r.faults.active(kind, self.component) for kind, ch in INTERLOCK_INPUTS.items()
        }


def make_inputs(name: str, options: Mapping[str, Any], ctx: DriverContext) -> SimInputs:
    _no_extra(options, {"component"})
    return SimInputs(name, _component(name, options), _reactor(ctx))


__all__ = ["SimulatedReactor"]


def catalogue_state(chemical: str) -> str | None:
    """How the source holds ``chemical`` ("liquid", "solid", "gas"); None if unknown."""
    chem = catalogue().get(chemical)
    return chem.state.value if chem is not None else None
