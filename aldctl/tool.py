"""Tool composition: a tool configuration becomes a live :class:`Tool` of connected devices.

This is the one composition root: the only module that instantiates concrete drivers (found
by name in the ``aldctl.drivers`` entry-point group). Everything above it sees capabilities
(``drivers.base``) addressed by the recipe's names: lines, temperature channels, flow
channels, the chamber gauge, the plasma source, the ozone generator, the QCM.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aldctl.config import ToolConfig, ValveChannel, plain_tool
from aldctl.diagnostics import Diagnostic, Severity, UserError
from aldctl.engine.devices import Tool, ToolError
from drivers import registry
from drivers.base import (
    Device,
    DigitalInputs,
    DriverContext,
    FlowController,
    OzoneGenerator,
    PlasmaSource,
    PressureGauge,
    SimulationHandle,
    TemperatureController,
    ThicknessMonitor,
    ValveBank,
)

if TYPE_CHECKING:
    from drivers.simulated import SimulatedReactor

__all__ = ["Tool", "ToolError", "build", "simulated_reactor"]


def build(config: ToolConfig, *, seed: int = 0, services: Mapping[str, Any] | None = None) -> Tool:
    """Instantiate every device of ``config`` (not connected yet)."""
    ctx = DriverContext(services={"tool": plain_tool(config), "seed": seed, **(services or {})})
    devices: dict[str, Device] = {}
    problems: list[str] = []
    for name, spec in config.devices.items():
        try:
            make = registry.factory(spec.driver)
        except registry.UnknownDriver as exc:
            problems.append(f"device '{name}': {exc}")
            continue
        try:
            devices[name] = make(name, spec.options, ctx)
        except ValueError as exc:
            problems.append(f"device '{name}' ({spec.driver}): {exc}")
    if problems:
        raise UserError([Diagnostic(Severity.ERROR, p) for p in problems])

    def need(dev_name: str, proto: type, what: str) -> Any:
        dev = devices[dev_name]
        if not isinstance(dev, proto):
            problems.append(
                f"{what}: device '{dev_name}' ({config.devices[dev_name].driver}) "
                f"is not a {proto.__name__}"
            )
        return dev

    valves: dict[str, tuple[ValveBank, int]] = {}
    temps: dict[str, TemperatureController] = {}
    for line, ln in config.lines.items():
        valves[line] = (need(ln.valve.device, ValveBank, f"line {line}"), ln.valve.channel)
        if ln.source_heater:
            temps[f"source.{line}"] = need(
                ln.source_heater, TemperatureController, f"line {line} source heater"
            )
        if ln.line_heater:
            temps[f"line.{line}"] = need(
                ln.line_heater, TemperatureController, f"line {line} line heater"
            )
    for name, h in config.heaters.items():
        temps[name] = need(h.device, TemperatureController, f"heater {name}")
    flows = {
        name: need(f.device, FlowController, f"flow {name}") for name, f in config.flows.items()
    }
    gauge = None
    if config.gauges:
        first = next(iter(config.gauges.values()))
        gauge = need(first.device, PressureGauge, "chamber gauge")

    def output(v: ValveChannel | None, what: str) -> tuple[ValveBank, int] | None:
        return None if v is None else (need(v.device, ValveBank, what), v.channel)

    iso = output(config.pump_isolation, "pump isolation")
    cut = output(config.carrier_shutoff, "carrier shut-off")
    plasma = need(config.plasma.device, PlasmaSource, "plasma") if config.plasma else None
    ozone = need(config.ozone.device, OzoneGenerator, "ozone") if config.ozone else None
    qcm = need(config.qcm.device, ThicknessMonitor, "qcm") if config.qcm else None
    interlocks: dict[str, tuple[DigitalInputs, int, bool]] = {}
    for il_name, il in config.interlocks.items():
        if il.input is not None:
            dev = need(il.input.device, DigitalInputs, f"interlock {il_name}")
            interlocks[il_name] = (dev, il.input.channel, il.healthy)
    if problems:
        raise UserError([Diagnostic(Severity.ERROR, p) for p in problems])
    sim = ctx.shared.get("simulation")
    return Tool(
        config=config,
        devices=devices,
        valves=valves,
        pump_isolation=iso,
        carrier_shutoff=cut,
        temperatures=temps,
        flows=flows,
        gauge=gauge,
        plasma=plasma,
        ozone=ozone,
        qcm=qcm,
        simulation=sim if isinstance(sim, SimulationHandle) else None,
        ctx=ctx,
        interlocks=interlocks,
    )


def simulated_reactor(config: ToolConfig, seed: int = 0) -> SimulatedReactor:
    """The simulated reactor a tool configuration describes (for ``aldctl simulate``)."""
    from drivers.simulated import SimulatedReactor as _Sim

    return _Sim(plain_tool(config), seed)
