"""Real time, in-process simulator: nothing but the valve write sits between a valve command
and the timestamp the engine takes for it.

The engine times a pulse from the clock reading it takes right after ``set_valve`` returns
(open) to the one after the closing ``set_valve`` (close). If the simulated valve module
brought the reactor model up to the present inside ``set_valve`` (0.05-0.2 ms of
integration, more when reactants overlap), that compute would land between the command
and its timestamp and show up as width error that no real module has. These tests watch
the model's ``advance_to`` from the moment a valve write starts to the engine's next
clock reading, on the wall clock, through the same ``session.execute`` that
``aldctl run --realtime`` and ``aldctl bench realtime`` use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aldctl.engine.clock import RealClock, run_real
from aldctl.engine.devices import Tool
from aldctl.engine.events import DoseStarted, Event, EventBus, PulseDone, State, StateChanged
from aldctl.session import RunRequest, execute, prepare
from drivers.simulated import SimulatedReactor

RECIPE = """
params: {cycles: 2}
setup:
  - set: {carrier: 20 sccm}
cycles:
  A:
    - pulse: {TMA: 15 ms}
    - purge: 60 ms
    - pulse: {H2O: 15 ms}
    - purge: 60 ms
main:
  - cycle: {name: A, repeat: $cycles}
"""


class EdgeWatch:
    """Counts model catch-ups (``Reactor.advance_to``) inside each valve command's window:
    from the start of ``set_valve`` to the engine's next clock reading (its timestamp)."""

    def __init__(self) -> None:
        self.open_window: str | None = None
        self.windows: list[tuple[str, int]] = []
        """(what, catch-ups inside its window) per valve command, in order."""
        self.advances = 0

    def instrument(self, tool: Tool, inject: Callable[[Any], None] | None) -> None:
        sim = tool.simulation
        assert isinstance(sim, SimulatedReactor)
        reactor = sim.reactor
        advance = reactor.advance_to

        def counted_advance(t_ns: int) -> None:
            self.advances += 1
            if self.open_window is not None:
                self.windows[-1] = (self.windows[-1][0], self.windows[-1][1] + 1)
            advance(t_ns)

        reactor.advance_to = counted_advance  # type: ignore[method-assign]
        lines = {(id(bank), ch): line for line, (bank, ch) in tool.valves.items()}
        for bank in tool.banks:
            write = bank.set_valve

            async def watched(
                channel: int, is_open: bool, write: Any = write, bank: Any = bank
            ) -> None:
                # dose lines by name; the pump isolation and carrier shut-off by channel
                what = lines.get((id(bank), channel), f"channel {channel}")
                self.open_window = f"{what} {'open' if is_open else 'close'}"
                self.windows.append((self.open_window, 0))
                await write(channel, is_open)

            bank.set_valve = watched  # type: ignore[method-assign]
        if inject is not None:
            inject(reactor)

    def stamp(self) -> None:
        self.open_window = None


def _run_realtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inject: Callable[[Any], None] | None = None
) -> tuple[EdgeWatch, list[Event], str]:
    watch = EdgeWatch()
    now = RealClock.now

    def stamped_now(self: RealClock) -> float:
        watch.stamp()
        return now(self)

    monkeypatch.setattr(RealClock, "now", stamped_now)
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    prepared = prepare(path, None, [])
    # The read-back after teardown waits (up to verify_time) for the chamber to pump back
    # down to its base, ~3 s of wall clock after these pulses: not what is tested here.
    tool = prepared.tool
    fast = tool.safety.model_copy(update={"verify_time": 0.2})
    prepared = dataclasses.replace(prepared, tool=tool.model_copy(update={"safety": fast}))
    req = RunRequest(prepared, realtime=True, seed=0)
    bus = EventBus()
    events: list[Event] = []
    bus.listen(events.append)
    result = run_real(
        execute(req, None, bus=bus, on_tool=lambda tool: watch.instrument(tool, inject))
    )
    return watch, events, f"{result.outcome}: {result.reason}"


def test_no_model_catch_up_between_a_valve_command_and_its_timestamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch, events, outcome = _run_realtime(tmp_path, monkeypatch)
    assert outcome.startswith("complete"), outcome
    # 2 cycles x TMA, H2O: every pulse timed by the engine
    assert sum(isinstance(e, PulseDone) for e in events) == 4
    # The dose valves' commands: 4 opens and 4 closes, plus the safe state's closes after
    # the run. (The carrier shut-off, opened by setup's `set: carrier`, is no pulse edge.)
    doses = [w for w in watch.windows if w[0].startswith(("TMA ", "H2O "))]
    assert [w for w, _ in doses[:8]] == ["TMA open", "TMA close", "H2O open", "H2O close"] * 2
    assert [n for _, n in doses] == [0] * len(doses), doses
    # the model did catch up, only elsewhere (the polls' reads): the watch sees catch-ups
    assert watch.advances > 0


def test_the_watch_sees_a_catch_up_inside_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: while a fault waits for its time, the simulated module brings the model
    up to the present before it switches (so the fault fires exactly when scheduled), and
    the same instrumentation sees that catch-up inside the command's window."""
    far = 10**15  # a fault scheduled in ~12 days of model time: pending all run long

    def inject(reactor: Any) -> None:
        reactor.faults.inject("gauge_drift", at_ns=far)

    watch, events, outcome = _run_realtime(tmp_path, monkeypatch, inject)
    assert outcome.startswith("complete"), outcome
    assert sum(isinstance(e, PulseDone) for e in events) == 4
    doses = [n for w, n in watch.windows if w.startswith(("TMA ", "H2O "))]
    assert len(doses) >= 8
    assert all(n > 0 for n in doses[:8])


def test_main_starts_when_setup_is_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setup ends with commands (`set: carrier`), which take real time: main's first pulse
    is commanded for when setup is done, not for setup's planned end, which is already
    past by then (that first edge was always late by the commands' time)."""
    _, events, outcome = _run_realtime(tmp_path, monkeypatch)
    assert outcome.startswith("complete"), outcome
    running = next(e.t for e in events if isinstance(e, StateChanged) and e.state is State.RUNNING)
    first_ack = next(e.t for e in events if isinstance(e, DoseStarted))
    first = next(e for e in events if isinstance(e, PulseDone))
    commanded = first_ack - first.open_error_s  # when the engine was to open the valve
    assert commanded >= running


def test_the_end_is_stamped_in_the_step_that_reaches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's process time (the end-of-run drift is measured with it) is read in the
    event-loop step in which the executor's last precise sleep returned, at the recipe's
    end: not turns of the loop later, after other tasks' callbacks, when the supervising
    task noticed the executor was done."""
    import asyncio.events

    from aldctl.engine.runner import Runner

    turns = [0]
    run_handle = asyncio.events.Handle._run

    def counted_run(self: asyncio.events.Handle) -> None:
        turns[0] += 1
        run_handle(self)

    monkeypatch.setattr(asyncio.events.Handle, "_run", counted_run)
    wakes: list[int] = []  # loop turns at each precise wake
    sleep_until = RealClock.sleep_until

    async def watched_sleep(
        self: RealClock, deadline: float, *, precise: bool = True, **kw: Any
    ) -> float:
        woke = await sleep_until(self, deadline, precise=precise, **kw)
        if precise:
            wakes.append(turns[0])
        return woke

    monkeypatch.setattr(RealClock, "sleep_until", watched_sleep)
    readings: list[tuple[float, int, int]] = []  # (process time, turns, precise wakes so far)
    now = Runner.now

    def watched_now(self: Runner) -> float:
        t = now(self)
        readings.append((t, turns[0], len(wakes)))
        return t

    monkeypatch.setattr(Runner, "now", watched_now)
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    prepared = prepare(path, None, [])
    tool = prepared.tool
    fast = tool.safety.model_copy(update={"verify_time": 0.2})
    prepared = dataclasses.replace(prepared, tool=tool.model_copy(update={"safety": fast}))
    result = run_real(execute(RunRequest(prepared, realtime=True, seed=0), None))
    assert result.outcome == "complete"
    stamp = next(r for r in readings if r[0] == result.process_s)
    _, at_turn, n_wakes = stamp
    assert n_wakes == len(wakes)  # after the last precise sleep (the recipe's end)
    assert at_turn == wakes[-1]  # and in the same step of the event loop


def test_each_valve_edge_is_warmed_without_effect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the wall clock the engine hands each dose edge's precise sleep a warm-up: the
    edge's own path (the module's ``warm`` for that channel and state), which the clock
    runs just before the deadline when there is time (tests/engine/test_clock.py). And a
    warm-up changes nothing the module or the model has (deferred commands, the watchdog's
    deadline, health counters, the model's state)."""
    from drivers.simulated import SimValveBank

    warms: list[tuple[int, bool]] = []
    module_warm = SimValveBank.warm

    def watched_warm(self: SimValveBank, channel: int, is_open: bool) -> None:
        warms.append((channel, is_open))
        module_warm(self, channel, is_open)

    monkeypatch.setattr(SimValveBank, "warm", watched_warm)
    handed: list[Callable[[], object] | None] = []  # the warm-up of the last precise sleep
    sleep_until = RealClock.sleep_until

    async def watched_sleep(
        self: RealClock, deadline: float, *, precise: bool = True, **kw: Any
    ) -> float:
        if precise:
            handed.append(kw.get("warm"))
        return await sleep_until(self, deadline, precise=precise, **kw)

    monkeypatch.setattr(RealClock, "sleep_until", watched_sleep)
    edges: list[tuple[int, bool, Callable[[], object] | None]] = []
    write = SimValveBank.set_valve

    async def watched_write(self: SimValveBank, channel: int, is_open: bool) -> None:
        if channel in (0, 1):  # TMA, H2O on the built-in tool
            edges.append((channel, is_open, handed[-1] if handed else None))
        await write(self, channel, is_open)

    monkeypatch.setattr(SimValveBank, "set_valve", watched_write)
    _, _, outcome = _run_realtime(tmp_path, monkeypatch)
    assert outcome.startswith("complete"), outcome
    pulses = edges[:8]  # then the safe state's closes, which are no timed edges
    assert [(c, o) for c, o, _ in pulses] == [(0, True), (0, False), (1, True), (1, False)] * 2
    # without effect: everything the module and the model hold is as it was
    seen: list[tuple[object, ...]] = []

    async def check() -> None:
        for channel, is_open, warm in pulses:  # (the module reads the loop's clock)
            assert warm is not None
            warms.clear()
            warm()
            assert warms == [(channel, is_open)]
        from aldctl.tool import build

        prepared = prepare(tmp_path / "recipe.yaml", None, [])
        tool = build(prepared.tool, seed=0)
        await tool.connect()
        sim = tool.simulation
        assert isinstance(sim, SimulatedReactor)
        bank, ch = tool.valves["TMA"]
        assert isinstance(bank, SimValveBank)

        def state() -> tuple[object, ...]:
            h = bank.health()
            return (
                list(sim._deferred),
                bank.deadline_ns,
                bank.expired,
                dataclasses.asdict(h),  # transactions, failures... (record_ok counts)
                sim.reactor.snapshot_bytes(),
            )

        before = state()
        for is_open in (True, False, True):
            bank.warm(ch, is_open)
        seen.append(before)
        seen.append(state())
        await tool.close()

    run_real(check())
    assert seen[0] == seen[1]
