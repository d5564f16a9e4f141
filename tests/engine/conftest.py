"""Engine test harness: the real engine, the built-in simulated tool, virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aldctl.engine.clock import VirtualClock, run_virtual
from aldctl.engine.control import RunControl
from aldctl.engine.devices import Tool
from aldctl.engine.events import Event, EventBus, StateChanged
from aldctl.engine.journal import Journal
from aldctl.engine.runner import Runner, RunOptions, RunResult
from aldctl.session import prepare
from aldctl.tool import build
from drivers.simulated import SimulatedReactor


@dataclass
class Harness:
    """One run: tool, runner, bus and journal, driven inside a virtual-time loop."""

    tool: Tool
    runner: Runner
    bus: EventBus
    control: RunControl
    journal: Journal | None
    run_id: str | None
    events: list[Event] = field(default_factory=list)

    @property
    def sim(self) -> SimulatedReactor:
        assert isinstance(self.tool.simulation, SimulatedReactor)
        return self.tool.simulation

    def states(self) -> list[str]:
        return [str(e.state) for e in self.events if isinstance(e, StateChanged)]

    async def until(self, pred: Callable[[Event], bool], limit_s: float = 1e6) -> Event:
        """Wait (virtual time) for the first event matching ``pred`` from now on."""
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

        def listener(ev: Event) -> None:
            if not fut.done() and pred(ev):
                fut.set_result(ev)

        self.bus.listen(listener)
        try:
            return await asyncio.wait_for(fut, limit_s)
        finally:
            self.bus.listeners.remove(listener)


Script = Callable[[Harness], Awaitable[None]]


@pytest.fixture
def sim_run(tmp_path: Path) -> Iterator[Callable[..., tuple[RunResult, Harness]]]:
    """Run ``recipe`` (a path or YAML text) on the built-in simulated reactor in virtual time.

    ``script(h)`` runs beside the engine (inject faults, press pause...). ``tool_changes``
    patches the tool config (e.g. shorter hold timeouts).
    """

    def run(
        recipe: str | Path,
        *,
        sets: tuple[str, ...] = (),
        script: Script | None = None,
        seed: int = 0,
        journal: bool = True,
        options: RunOptions | None = None,
        tool_changes: Callable[[Any], Any] | None = None,
        data_dir: Path | None = None,
    ) -> tuple[RunResult, Harness]:
        if isinstance(recipe, str) and "\n" in recipe:
            path = tmp_path / "recipe.yaml"
            path.write_text(recipe)
        else:
            path = Path(recipe)
        prepared = prepare(path, None, sets)
        tool_cfg = prepared.tool if tool_changes is None else tool_changes(prepared.tool)
        jr = Journal(data_dir or tmp_path / "data") if journal else None
        run_id = None
        if jr is not None:
            from aldctl.session import RunRequest, new_run

            run_id = new_run(jr, RunRequest(prepared, realtime=False, seed=seed), "virtual")

        async def main() -> tuple[RunResult, Harness]:
            tool = build(tool_cfg, seed=seed)
            await tool.connect()
            bus = EventBus()
            control = RunControl()
            runner = Runner(
                prepared.compiled.schedule,
                tool,
                VirtualClock(),
                journal=jr,
                bus=bus,
                control=control,
                options=options,
            )
            h = Harness(tool, runner, bus, control, jr, run_id)
            bus.listen(h.events.append)
            task = asyncio.get_running_loop().create_task(runner.run(), name="run")
            if script is not None:
                script_task = asyncio.get_running_loop().create_task(script(h), name="script")
                await asyncio.wait({task, script_task}, return_when=asyncio.FIRST_COMPLETED)
                if not script_task.done():
                    # The run ended first: let the script look at the aftermath (a minute of
                    # virtual time), then stop it.
                    await asyncio.wait({script_task}, timeout=60.0)
                if not script_task.done():
                    script_task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await script_task
                else:
                    script_task.result()
            result = await task
            await tool.close()
            leaked = [
                t.get_name()
                for t in asyncio.all_tasks()
                if t is not asyncio.current_task() and not t.done()
            ]
            assert not leaked, f"tasks left running: {leaked}"
            return result, h

        if jr is not None:
            opened.append(jr)
        return run_virtual(main())

    opened: list[Journal] = []
    yield run
    for jr in opened:
        jr.close()
