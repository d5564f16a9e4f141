"""The live tool as the engine sees it: capabilities addressed by the recipe's names.

Built by :mod:`aldctl.tool` (the composition root, which knows the concrete drivers); the
engine only ever sees the Protocols of :mod:`drivers.base` through this view.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aldctl.config import ToolConfig
from drivers.base import (
    Device,
    DeviceError,
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

    @property
    def banks(self) -> list[ValveBank]:
        out: dict[int, ValveBank] = {}
        for bank, _ in self.valves.values():
            out[id(bank)] = bank
        if self.pump_isolation is not None:
            out[id(self.pump_isolation[0])] = self.pump_isolation[0]
        return list(out.values())

    def device_name(self, device: Device) -> str:
        return getattr(device, "name", type(device).__name__)

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
        if errors:
            await self.close()
            raise ToolError("; ".join(errors))

    async def close(self) -> None:
        for dev in self.devices.values():
            with contextlib.suppress(Exception):  # closing is best effort, device by device
                await asyncio.wait_for(dev.close(), 2.0)
