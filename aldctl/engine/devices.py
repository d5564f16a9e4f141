"""The live tool as the engine sees it: capabilities addressed by the recipe's names.

Built by :mod:`aldctl.tool` (the composition root, which knows the concrete drivers); the
engine only ever sees the Protocols of :mod:`drivers.base` through this view.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aldctl.config import ToolConfig
from drivers.base import (
    Device,
    DeviceError,
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


class ToolError(Exception):
    """A device could not be built or connected; the message names it."""


@dataclass
class Tool:
    config: ToolConfig
    devices: dict[str, Device]
    valves: dict[str, tuple[ValveBank, int]]
    """Line -> (bank, channel)."""
    pump_isolation: tuple[ValveBank, int] | None
    temperatures: dict[str, TemperatureController]
    flows: dict[str, FlowController]
    gauge: PressureGauge | None
    plasma: PlasmaSource | None
    ozone: OzoneGenerator | None
    qcm: ThicknessMonitor | None
    simulation: SimulationHandle | None = None
    ctx: DriverContext = field(default_factory=DriverContext)
    carrier_shutoff: tuple[ValveBank, int] | None = None
    interlocks: dict[str, tuple[DigitalInputs, int, bool]] = field(default_factory=dict)
    """Interlock name -> (input device, channel, healthy level): read every safety poll."""

    def _energise(self, which: str, is_open: bool) -> tuple[ValveBank, int, bool] | None:
        ref = getattr(self, which)
        if ref is None:
            return None
        spec = getattr(self.config, which)
        # A normally-open valve closes when its output is energised.
        return ref[0], ref[1], is_open != (spec is not None and spec.fails == "open")

    async def set_pump_isolation(self, is_open: bool) -> None:
        """Open (pump) or close (stop-flow) the pump isolation valve, as wired."""
        target = self._energise("pump_isolation", is_open)
        if target is not None:
            await target[0].set_valve(target[1], target[2])

    async def set_carrier_shutoff(self, is_open: bool) -> None:
        target = self._energise("carrier_shutoff", is_open)
        if target is not None:
            await target[0].set_valve(target[1], target[2])

    @property
    def banks(self) -> list[ValveBank]:
        out: dict[int, ValveBank] = {}
        for bank, _ in self.valves.values():
            out[id(bank)] = bank
        for ref in (self.pump_isolation, self.carrier_shutoff):
            if ref is not None:
                out[id(ref[0])] = ref[0]
        return list(out.values())

    def device_name(self, device: Device) -> str:
        return getattr(device, "name", type(device).__name__)

    def line_devices(self) -> dict[str, str]:
        """Dose line -> the name of the valve module it is on."""
        return {line: self.device_name(bank) for line, (bank, _) in self.valves.items()}

    async def connect(self) -> None:
        """Connect every device concurrently, each within its own timeout."""

        async def one(name: str, dev: Device) -> None:
            timeout = self.config.devices[name].connect_timeout
            try:
                async with asyncio.timeout(timeout):
                    await dev.connect()
            except TimeoutError:
                msg = f"device '{name}' did not answer within {timeout:g} s"
                raise ToolError(msg) from None
            except DeviceError as exc:
                msg = f"device '{name}' failed to connect: {exc.detail}"
                raise ToolError(msg) from exc
            except OSError as exc:
                msg = f"device '{name}' failed to connect: {exc}"
                raise ToolError(msg) from exc
            except Exception as exc:  # a driver bug is still that device failing
                msg = f"device '{name}' failed to connect: {type(exc).__name__}: {exc}"
                raise ToolError(msg) from exc

        errors: list[str] = []
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(one(n, d), name=f"connect:{n}") for n, d in self.devices.items()]
        for t in tasks:
            try:
                await t
            except ToolError as exc:
                errors.append(str(exc))
        if not errors:
            errors = await self._positions_agree()
        if errors:
            await self.close()
            raise ToolError("; ".join(errors))

    async def _positions_agree(self) -> list[str]:
        """Before anything starts, every dose valve closed, as its output and (where the
        bank has them) its limit switch say.

        An output on: a controller that died with the valve open left it so (a module with
        no watchdog, or a reconnect inside its time, whose simple stop ends it): the valve
        is closed here and nothing starts, since the chamber has been dosed for no one
        knows how long. A switch that reads open with the output off: a valve stuck open,
        or a switch wired with the other sense (every hold would then abort on it)."""
        errors: list[str] = []
        for bank in self.banks:
            name = self.device_name(bank)
            sensed = bool(getattr(bank, "positions", False))
            try:
                async with asyncio.timeout(self.config.devices[name].connect_timeout):
                    outputs = await bank.read_valves()
                    positions = await valve_positions(bank)() if sensed else {}
            except (DeviceError, OSError, TimeoutError) as exc:
                errors.append(f"device '{name}': the valves' positions could not be read: {exc}")
                continue
            for line, (b, ch) in self.valves.items():
                if b is not bank:
                    continue
                if outputs.get(ch):
                    closed = "closed it now"
                    try:
                        async with asyncio.timeout(self.config.devices[name].connect_timeout):
                            await bank.set_valve(ch, False)
                    except (DeviceError, OSError, TimeoutError) as exc:
                        closed = f"could not close it ({exc}): close the source's manual valve"
                    errors.append(
                        f"dose valve {line} ({name}:{ch}) was open when the tool connected "
                        f"(its output on: left by a controller that ended without closing "
                        f"it); {closed}. The chamber may hold {line}: pump and check it "
                        "before running again"
                    )
                elif sensed and positions.get(ch):
                    errors.append(
                        f"dose valve {line} ({name}:{ch}) reads open on its limit switch while "
                        "its output is off: the valve is stuck open (close the source's manual "
                        "valve), or its switch closes when the valve is closed "
                        "(position_sense: closed)"
                    )
        return errors

    async def close(self) -> None:
        for dev in self.devices.values():
            with contextlib.suppress(Exception):  # closing is best effort, device by device
                await asyncio.wait_for(dev.close(), 2.0)


def valve_positions(bank: ValveBank) -> Callable[[], Awaitable[Mapping[int, bool]]]:
    """How to read where ``bank``'s valves are: their limit switches where the bank has
    them (``positions``), else its outputs (which still show an output that would not
    switch off, though not a stem stuck open: the pressure hold's ``recover_within`` is
    the backstop for that)."""
    reader = getattr(bank, "read_positions", None)
    if getattr(bank, "positions", False) and reader is not None:
        return reader  # type: ignore[no-any-return]
    return bank.read_valves
