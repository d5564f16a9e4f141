"""Tool composition, the simulated drivers' link faults, the event bus, the operator API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aldctl import config as cfg
from aldctl.diagnostics import UserError
from aldctl.engine.clock import run_virtual
from aldctl.engine.control import CommandRefused, RunControl
from aldctl.engine.events import EventBus, Message, State
from aldctl.session import provision_lines
from aldctl.tool import ToolError, build
from drivers.base import (
    CommunicationError,
    DeviceTimeout,
    FlowController,
    PressureGauge,
    TemperatureController,
    ValveBank,
)
from drivers.simulated import SimulatedReactor


def sim_tool(**changes: object) -> cfg.ToolConfig:
    tool = provision_lines(cfg.load_builtin(), ["TMA", "H2O"])
    return tool.model_copy(update=changes) if changes else tool


def test_builtin_tool_builds_every_capability() -> None:
    tool = build(sim_tool())
    bank, channel = tool.valves["TMA"]
    assert isinstance(bank, ValveBank)
    assert channel == 0
    assert isinstance(tool.temperatures["substrate"], TemperatureController)
    assert isinstance(tool.flows["carrier"], FlowController)
    assert isinstance(tool.gauge, PressureGauge)
    assert tool.plasma is not None
    assert tool.ozone is not None
    assert tool.qcm is not None
    assert isinstance(tool.simulation, SimulatedReactor)


def test_unknown_driver_is_named() -> None:
    devices = dict(sim_tool().devices)
    devices["gauge"] = cfg.DeviceSpec(driver="pfeifer")
    with pytest.raises(UserError) as ei:
        build(sim_tool(devices=devices))
    assert "device 'gauge': no driver 'pfeifer' is installed (did you mean 'pfeiffer'?)" in str(
        ei.value
    )


def test_device_that_fails_to_connect_is_named() -> None:
    async def main() -> None:
        tool = build(sim_tool())
        assert tool.simulation is not None
        reactor = tool.simulation.reactor  # type: ignore[attr-defined]
        reactor.faults.inject("disconnect", "chamber")  # the gauge's component
        await tool.connect()

    with pytest.raises(ToolError, match=r"device 'gauge' failed to connect: .*disconnected"):
        run_virtual(main())


def test_a_simulated_device_on_a_component_the_simulator_has_not_is_refused_at_build() -> None:
    # (on 5513b8a it failed at connect, after a run record was made)
    devices = dict(sim_tool().devices)
    devices["gauge"] = cfg.DeviceSpec.model_validate(
        {"driver": "simulated-gauge", "component": "foreline"}
    )
    with pytest.raises(UserError, match=r"device 'gauge' .*no component 'foreline'"):
        build(sim_tool(devices=devices))


def test_wrong_capability_is_refused() -> None:
    tool = sim_tool()
    heaters = dict(tool.heaters)
    heaters["substrate"] = cfg.HeaterSpec(device="carrier")
    with pytest.raises(
        UserError, match=r"heater substrate: device 'carrier' .* is not a TemperatureController"
    ):
        build(tool.model_copy(update={"heaters": heaters}))


def test_simulated_link_faults_act_like_a_wire() -> None:
    async def main() -> None:
        tool = build(sim_tool())
        await tool.connect()
        assert tool.gauge is not None
        sim = tool.simulation
        assert isinstance(sim, SimulatedReactor)
        r = sim.sync()
        loop = asyncio.get_running_loop()

        f = r.faults.inject("comm_timeout", "chamber")
        t0 = loop.time()
        with pytest.raises(DeviceTimeout, match="gauge: no answer"):
            await tool.gauge.read_pressure()
        assert loop.time() - t0 == pytest.approx(0.5)  # the driver's transaction timeout
        r.faults.clear(f)
        assert (await tool.gauge.read_pressure()).pressure_torr is not None

        f = r.faults.inject("corrupt_frame", "carrier", probability=1.0)
        with pytest.raises(CommunicationError, match="corrupt frame"):
            await tool.flows["carrier"].read_flow()
        assert tool.flows["carrier"].health().bad_frames == 1
        r.faults.clear(f)

        f = r.faults.inject("disconnect", "substrate")
        with pytest.raises(CommunicationError, match="link down"):
            await tool.temperatures["substrate"].read_temperature()
        r.faults.clear(f)

        f = r.faults.inject("timing_jitter", "valves", jitter_ms=20.0)
        bank, ch = tool.valves["TMA"]
        t0 = loop.time()
        for _ in range(20):
            await bank.set_valve(ch, False)
        spent = loop.time() - t0
        assert 0.05 < spent < 0.4  # 20 commands, each delayed by U(0, 20 ms)
        await tool.close()

    run_virtual(main())


def test_bus_drops_oldest_for_slow_subscribers_but_never_for_listeners() -> None:
    bus = EventBus()
    heard: list[str] = []
    bus.listen(lambda ev: heard.append(ev.text) if isinstance(ev, Message) else None)

    async def main() -> list[str]:
        sub = bus.subscribe(maxsize=3)
        for i in range(10):
            bus.publish(Message(float(i), f"m{i}"))
        assert sub.dropped == 7
        assert bus.dropped() == 7
        return [(await sub.get()).text for _ in range(3)]  # type: ignore[union-attr]

    assert run_virtual(main()) == ["m7", "m8", "m9"]
    assert heard == [f"m{i}" for i in range(10)]


def test_operator_api_transitions() -> None:
    async def main() -> None:
        c = RunControl()
        log: list[tuple[str, str, str]] = []
        c.on_command = lambda *a: log.append(a)
        with pytest.raises(CommandRefused):
            c.pause()  # idle
        c.state = State.RUNNING
        assert "pausing" in c.pause("alice")
        assert c.state is State.PAUSING
        c.state = State.PAUSED
        c.resume("alice")
        assert not c.pause_requested
        c.state = State.RUNNING
        c.stop("bob")
        assert c.stop_requested
        c.abort("test", who="carol")
        assert c.abort_reason == "test"
        assert c.interrupt.is_set()
        c.state = State.ABORTED
        with pytest.raises(CommandRefused):
            c.abort()
        c.clear("dave")
        assert c.state is State.IDLE
        assert [who for _, who, _ in log] == ["alice", "alice", "bob", "carol", "dave"]

    run_virtual(main())


def test_held_run_cannot_be_resumed_by_hand_while_out_of_band() -> None:
    async def main() -> None:
        c = RunControl()
        c.state = State.RUNNING
        c.hold("pressure high", "pressure")
        c.state = State.HELD
        with pytest.raises(CommandRefused, match="still held: pressure high"):
            c.resume()
        c.hold_cleared = True
        c.resume()

    run_virtual(main())


def test_data_dir_override(tmp_path: Path) -> None:
    from aldctl.session import open_journal

    j = open_journal(tmp_path / "d")
    assert j.path == tmp_path / "d" / "journal.sqlite"
    j.close()
