"""The ``modbus-dio`` valve driver against the emulated WAGO-style module, over real TCP.

A real :class:`sim.reactor.Reactor` sits behind a :class:`sim.realtime.RealtimePlant`; the
module (a pymodbus server) listens on an ephemeral port on 127.0.0.1; the driver is built
through its entry point factory, exactly as the tool builds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from drivers.base import (
    CommunicationError,
    DeviceFault,
    DeviceTimeout,
    DriverContext,
    ValveBank,
)
from drivers.modbus_dio import ModbusValveBank, create
from drivers.modbus_link import ModbusFault
from sim.devices.modbus_dio import EXPIRED, ModbusDioModule
from sim.reactor import Reactor, ReactorConfig
from sim.realtime import RealtimePlant

LINES = {0: "TMA", 1: "H2O", 2: "O3", 15: "__pump__"}
MS = 1_000_000


@pytest.fixture
def plant() -> RealtimePlant:
    cfg = ReactorConfig.for_lines(["TMA", "H2O", "O3"], substrate_c=200.0, walls_c=150.0)
    return RealtimePlant(Reactor(cfg, seed=7))


@pytest.fixture
async def module(plant: RealtimePlant) -> AsyncIterator[ModbusDioModule]:
    mod = ModbusDioModule(plant, LINES, port=0)
    await mod.start()
    yield mod
    await mod.shutdown()


Make = Callable[..., Awaitable[ModbusValveBank]]


@pytest.fixture
async def make(module: ModbusDioModule) -> AsyncIterator[Make]:
    """``await make(**options)``: a connected driver for the module (closed afterwards)."""
    made: list[ModbusValveBank] = []

    async def build(connect: bool = True, **options: Any) -> ModbusValveBank:
        opts = {"host": "127.0.0.1", "port": module.port, "timeout": 0.2, **options}
        dev = create("valves", opts, DriverContext())
        made.append(dev)
        if connect:
            await dev.connect()
        return dev

    yield build
    for dev in made:
        await dev.close()


def valves(plant: RealtimePlant) -> dict[str, bool]:
    """What the plant's valves actually do (stems past half stroke)."""
    return plant.sync().read_valves()


def pumping(plant: RealtimePlant) -> bool:
    return math.isfinite(plant.sync().residence_time_s())


async def settle() -> None:
    """Let the valves finish their stroke (dead time + stroke are a few ms)."""
    await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- factory


# The factory tests are coroutines too: the looptime pytest plugin (installed for `aldctl
# bench clock`) makes a stray event loop for every plain test that pytest-asyncio later
# drops unclosed, which the warnings-as-errors setting turns into a session error.


async def test_factory_builds_a_valve_bank_from_the_hil_options() -> None:
    dev = create(
        "valves",
        {
            "host": "127.0.0.1",
            "port": 15502,
            "unit": 1,
            "channels": 16,
            "watchdog": 1.0,
            "pulse_outputs": True,
        },
        DriverContext(),
    )
    assert isinstance(dev, ValveBank)
    assert dev.channels == tuple(range(16))
    assert dev.hardware_pulse is True
    assert dev.watchdog is True
    plain = create("v2", {"host": "10.0.0.9"}, DriverContext())
    assert plain.hardware_pulse is False
    assert plain.watchdog is False


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({}, "host"),
        ({"host": ""}, "host"),
        ({"host": "h", "port": 70000}, "port"),
        ({"host": "h", "channels": 0}, "channels"),
        ({"host": "h", "channels": "16"}, "channels"),
        ({"host": "h", "watchdog": -1}, "watchdog"),
        ({"host": "h", "watchdog": 0.05}, "watchdog"),
        ({"host": "h", "pulse_outputs": "yes"}, "pulse_outputs"),
        ({"host": "h", "unit": 300}, "unit"),
        ({"host": "h", "timeout": 0}, "timeout"),
        ({"host": "h", "retries": -1}, "retries"),
        ({"host": "h", "readback": 512}, "readback"),
    ],
)
async def test_factory_rejects_bad_options_naming_them(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        create("valves", options, DriverContext())


# --------------------------------------------------------------------------- commands


async def test_set_valve_moves_the_plant_and_reads_back(plant: RealtimePlant, make: Make) -> None:
    dev = await make()
    assert (await dev.read_valves())[0] is False
    await dev.set_valve(0, True)
    await dev.set_valve(1, True)
    await settle()
    assert valves(plant) == {"TMA": True, "H2O": True, "O3": False}
    back = await dev.read_valves()
    assert [back[0], back[1], back[2]] == [True, True, False]
    await dev.set_valve(0, False)
    await settle()
    assert valves(plant)["TMA"] is False
    assert (await dev.read_valves())[0] is False
    edges = [(e.line, e.is_open, e.source) for e in plant.edges]
    assert edges == [
        ("TMA", True, "command"),
        ("H2O", True, "command"),
        ("TMA", False, "command"),
    ]
    assert dev.health().failures == 0


async def test_pump_isolation_channel_and_safe_state(plant: RealtimePlant, make: Make) -> None:
    dev = await make()
    assert pumping(plant)
    assert (await dev.read_valves())[15] is True  # the module started as the plant was
    await dev.set_valve(15, False)
    assert not pumping(plant)  # stop-flow
    await dev.set_valve(15, True)
    await dev.set_valve(2, True)
    await settle()
    await dev.safe_state()
    await settle()
    assert set((await dev.read_valves()).values()) == {False}
    assert valves(plant) == {"TMA": False, "H2O": False, "O3": False}
    assert not pumping(plant)


async def test_adam_style_readback_at_the_coil_itself(plant: RealtimePlant) -> None:
    mod = ModbusDioModule(plant, {0: "TMA", 1: "H2O"}, port=0, channels=6, readback_offset=0)
    await mod.start()
    dev = create(
        "adam",
        {"host": "127.0.0.1", "port": mod.port, "channels": 6, "readback_offset": 0},
        DriverContext(),
    )
    try:
        await dev.connect()
        await dev.set_valve(1, True)
        assert await dev.read_valves() == dict.fromkeys(range(6), False) | {1: True}
    finally:
        await dev.close()
        await mod.shutdown()


async def test_exception_replies_are_device_faults_naming_the_device(
    plant: RealtimePlant, make: Make
) -> None:
    dev = await make(connect=False, channels=32)  # the module only has 16
    with pytest.raises(ModbusFault) as err:
        await dev.connect()  # reading back 32 outputs
    assert err.value.code == 2
    with pytest.raises(ModbusFault) as err:
        await dev.set_valve(20, True)
    assert err.value.code == 2
    assert err.value.device == "valves"
    assert "illegal data address" in str(err.value)
    assert str(err.value).startswith("valves: write coil 20")
    with pytest.raises(DeviceFault, match="no channel 40"):
        await dev.set_valve(40, True)
    assert dev.health().failures == 2  # the local refusal never reached the wire


async def test_pulse_is_refused_where_the_module_cannot_time_it(
    plant: RealtimePlant, make: Make
) -> None:
    dev = await make()
    with pytest.raises(DeviceFault, match="no pulse outputs"):
        await dev.pulse(0, 0.05)
    mod = ModbusDioModule(plant, LINES, port=0, pulse_outputs=False)
    await mod.start()
    liar = create(
        "liar", {"host": "127.0.0.1", "port": mod.port, "pulse_outputs": True}, DriverContext()
    )
    try:
        await liar.connect()
        with pytest.raises(ModbusFault) as err:
            await liar.pulse(0, 0.05)
        assert err.value.code == 2
    finally:
        await liar.close()
        await mod.shutdown()
    fine = await make(pulse_outputs=True)
    with pytest.raises(DeviceFault, match="outside"):
        await fine.pulse(0, 70.0)


async def test_hardware_timed_pulses_have_the_commanded_width(
    plant: RealtimePlant, make: Make
) -> None:
    dev = await make(pulse_outputs=True)
    widths = [0.015, 0.05, 0.1]
    loop = asyncio.get_running_loop()
    looked = 0
    for w in widths:
        sent = loop.time()
        await dev.pulse(1, w)
        still_open = (await dev.read_valves())[1]
        if loop.time() - sent < w / 2:  # (a loaded machine may look after the pulse's end)
            assert still_open is True  # returns once commanded, still open
            looked += 1
        await asyncio.sleep(w + 0.05)
    assert looked >= 1
    pulses = plant.pulse_widths("H2O")
    assert [p[3] for p in pulses] == ["pulse"] * 3
    for (_, _, width, _), commanded in zip(pulses, widths, strict=True):
        assert width == pytest.approx(commanded, abs=0.004)
    assert (await dev.read_valves())[1] is False


async def test_a_coil_write_takes_over_a_running_pulse(plant: RealtimePlant, make: Make) -> None:
    dev = await make(pulse_outputs=True)
    await dev.pulse(0, 1.0)
    await dev.set_valve(0, False)
    await asyncio.sleep(0.05)
    assert [(e.is_open, e.source) for e in plant.edges] == [(True, "pulse"), (False, "command")]


# --------------------------------------------------------------------------- watchdog


async def test_watchdog_fed_keeps_the_valves_as_commanded(
    plant: RealtimePlant, module: ModbusDioModule, make: Make
) -> None:
    dev = await make(watchdog=1.0)
    assert module.wd_time == 10  # 1 s in 100 ms units
    await dev.set_valve(1, True)
    await dev.set_valve(2, True)
    for _ in range(8):  # 2 s, twice the watchdog time
        await asyncio.sleep(0.25)
        await dev.heartbeat()
    assert valves(plant) == {"TMA": False, "H2O": True, "O3": True}
    assert module.wd_status == 1


async def test_watchdog_starved_closes_every_valve_and_refuses_process_data(
    plant: RealtimePlant, module: ModbusDioModule, make: Make
) -> None:
    # (two co-reactants, not a precursor and its co-reactant: the plant's CVD physics
    # would cost tens of ms of computing per second, late on every timestamp)
    dev = await make(watchdog=1.0)
    await dev.set_valve(1, True)
    await dev.set_valve(2, True)
    await settle()
    assert valves(plant) == {"TMA": False, "H2O": True, "O3": True}
    # The module triggers when the request arrives, somewhere between sending it and
    # reading the reply (a loaded machine stretches that): bound the trigger on both sides.
    sent = plant.now()
    await dev.heartbeat()
    answered = plant.now()
    await asyncio.sleep(1.3)  # the module's 1 s, plus the valves' closing stroke
    assert valves(plant) == {"TMA": False, "H2O": False, "O3": False}
    assert not pumping(plant)  # every output to 0, pump isolation included
    closed = [(e.line, e.source) for e in plant.edges if not e.is_open]
    assert closed == [("H2O", "watchdog"), ("O3", "watchdog")]
    for edge in list(plant.edges)[-2:]:
        # timed by the module, 1 s from the last trigger
        assert sent + 1.0 <= edge.t < answered + 1.1, (sent, answered, edge.t)
    assert module.wd_status == EXPIRED
    # the heartbeat reads the expiry from the module and does not trigger (which would
    # reset the fault, 750-352 manual table 115): a DeviceFault, not a quiet success
    with pytest.raises(DeviceFault, match="watchdog has run out") as beat:
        await dev.heartbeat()
    assert beat.value.device == "valves"
    assert module.wd_status == EXPIRED
    for op in (dev.set_valve(1, True), dev.read_valves()):
        with pytest.raises(ModbusFault) as err:
            await op
        assert err.value.code == 4
        assert err.value.device == "valves"
        assert "watchdog" in str(err.value)
    await settle()
    assert valves(plant)["H2O"] is False  # the refused command did nothing
    # restarted by the next connect: the valves are still closed, and answer again
    await dev.connect()
    assert module.wd_status == 1
    await dev.heartbeat()
    assert (await dev.read_valves())[1] is False
    await dev.set_valve(1, True)
    await settle()
    assert valves(plant)["H2O"] is True


async def test_an_expiry_reset_behind_the_drivers_back_is_still_reported(
    plant: RealtimePlant, module: ModbusDioModule, make: Make
) -> None:
    """A new 0x1003 value resets the fault on a real coupler while every output stays 0
    (750-352 manual, table 115); the expiry must still reach the engine, through 0x1004
    (0 after a fault, table 116) on the next heartbeat."""
    dev = await make(watchdog=0.5)
    other = await make(watchdog=0.0)  # a second master that only writes the trigger
    await dev.set_valve(1, True)
    await asyncio.sleep(0.8)
    assert module.wd_status == EXPIRED
    await other._unit.write_register(0x1003, 0x4242)  # resets the fault
    assert module.wd_status == 1
    await settle()
    assert valves(plant)["H2O"] is False  # the outputs stayed off
    await dev.read_valves()  # process data is accepted again ...
    with pytest.raises(DeviceFault, match="watchdog has run out"):
        await dev.heartbeat()  # ... but the heartbeat does not miss what happened
    with pytest.raises(DeviceFault, match="watchdog has run out"):
        await dev.heartbeat()  # and keeps saying so until connect clears it
    await dev.connect()
    await dev.heartbeat()


async def test_reconnect_inside_the_watchdog_time_stops_and_restarts_it(
    plant: RealtimePlant, module: ModbusDioModule, make: Make
) -> None:
    """0x1000 cannot be written while the watchdog runs (table 112): a controller that
    restarts within the watchdog time must stop it first, then arm it again."""
    first = await make(watchdog=1.0)
    await first.set_valve(1, True)
    assert module.wd_status == 1
    await first.close()
    second = await make(watchdog=2.0)  # connects while the first watchdog still runs
    assert module.wd_status == 1
    assert module.wd_time == 20
    await second.heartbeat()
    await settle()
    assert valves(plant)["H2O"] is True  # the restart did not touch the outputs


async def test_polling_alone_does_not_feed_the_drivers_watchdog(
    plant: RealtimePlant, module: ModbusDioModule, make: Make
) -> None:
    """The driver clears the function-code mask (factory 0xFFFF: any request retriggers,
    table 113), so only the heartbeat, not a poller that outlived it, keeps valves open."""
    dev = await make(watchdog=0.5)
    assert module.wd_mask == [0, 0]
    await dev.set_valve(1, True)
    for _ in range(6):
        await asyncio.sleep(0.15)
        with contextlib.suppress(ModbusFault):
            await dev.read_valves()
    assert module.wd_status == EXPIRED
    await settle()
    assert valves(plant)["H2O"] is False


# --------------------------------------------------------------------------- link faults


async def test_silent_module_times_out_after_the_retries_in_bounded_time(
    plant: RealtimePlant, make: Make
) -> None:
    dev = await make(timeout=0.1, retries=2)
    fault = plant.sync().faults.inject("comm_timeout", "valves")
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout) as err:
        await dev.set_valve(0, True)
    elapsed = time.monotonic() - t0
    assert err.value.device == "valves"
    assert "3 attempts" in str(err.value)
    assert 0.3 <= elapsed < 1.0  # 3 x 0.1 s plus backoff and reconnects
    health = dev.health()
    assert health.timeouts == 3
    assert health.retries == 2
    assert health.consecutive_failures == 3
    plant.sync().faults.clear(fault)
    await dev.set_valve(0, True)
    assert dev.health().consecutive_failures == 0


async def test_garbled_frames_are_counted_retried_and_then_fail_cleanly(
    plant: RealtimePlant, make: Make
) -> None:
    dev = await make(timeout=0.2, retries=2)
    fault = plant.sync().faults.inject("corrupt_frame", "valves", probability=1.0)
    t0 = time.monotonic()
    with pytest.raises(CommunicationError, match="bad frame") as err:
        await dev.read_valves()
    assert time.monotonic() - t0 < 0.5  # detected at once, not waited out
    assert err.value.device == "valves"
    assert dev.health().bad_frames == 3
    plant.sync().faults.clear(fault)
    await dev.read_valves()


async def test_some_garbled_frames_are_absorbed_by_the_retries(
    plant: RealtimePlant, make: Make
) -> None:
    dev = await make(timeout=0.2, retries=5)
    plant.sync().faults.inject("corrupt_frame", "valves", probability=0.4)
    for i in range(20):
        await dev.set_valve(2, i % 2 == 0)
    health = dev.health()
    assert health.bad_frames > 0
    assert health.retries == health.bad_frames
    assert health.consecutive_failures == 0
    assert (await dev.read_valves())[2] is False or health.bad_frames > 0


async def test_dropped_connection_then_recovery(plant: RealtimePlant, make: Make) -> None:
    dev = await make(timeout=0.2, retries=1)
    fault = plant.sync().faults.inject("disconnect", "valves")
    with pytest.raises(CommunicationError, match="valves"):
        await dev.set_valve(0, True)
    plant.sync().faults.clear(fault)
    await dev.set_valve(0, True)
    assert dev.health().reconnects >= 1
    assert dev.health().connected


async def test_jitter_delays_but_does_not_break(plant: RealtimePlant, make: Make) -> None:
    dev = await make(timeout=0.2)
    plant.sync().faults.inject("timing_jitter", "valves", jitter_ms=20.0)
    t0 = time.monotonic()
    for _ in range(5):
        await dev.read_valves()
    assert time.monotonic() - t0 > 0.005
    assert dev.health().failures == 0


async def test_cable_pull_and_back_without_recreating_the_driver(
    plant: RealtimePlant, module: ModbusDioModule, make: Make
) -> None:
    dev = await make(timeout=0.1, retries=1)
    await dev.set_valve(0, True)
    await module.stop()
    with pytest.raises(CommunicationError, match="valves"):
        await dev.set_valve(1, True)
    assert not dev.health().connected
    await module.start()  # same port
    assert (await dev.read_valves())[0] is True  # the module kept its outputs
    await dev.set_valve(1, True)
    assert dev.health().connected
    assert dev.health().reconnects >= 1
    await settle()
    assert valves(plant)["H2O"] is True


# --------------------------------------------------------------------------- own thread


async def test_module_on_its_own_thread_drives_the_plant_and_stamps_from_the_kernel(
    plant: RealtimePlant,
) -> None:
    """What ``aldctl sim serve`` runs: the module's sockets and timers on a thread with its
    own event loop, the model on the main loop; edges carry the kernel's arrival stamps
    (SO_TIMESTAMPNS) on Linux, and the watchdog still drops the outputs."""
    mod = ModbusDioModule(plant, LINES, port=0, own_thread=True)
    await mod.start()
    dev = create(
        "valves", {"host": "127.0.0.1", "port": mod.port, "watchdog": 0.5}, DriverContext()
    )
    try:
        await dev.connect()
        sent = time.monotonic()
        await dev.set_valve(1, True)
        await settle()
        assert valves(plant)["H2O"] is True
        opened = next(e for e in plant.edges if e.line == "H2O" and e.is_open)
        assert opened.source == "command"
        assert opened.t + plant.origin >= sent  # the frame left after `sent`
        assert (await dev.read_valves())[1] is True
        assert mod.kernel_stamps > 0
        await asyncio.sleep(0.8)  # no heartbeat: the module's 0.5 s run out
        assert mod.wd_status == EXPIRED
        await settle()
        assert valves(plant)["H2O"] is False
        with pytest.raises(DeviceFault, match="watchdog has run out"):
            await dev.heartbeat()
    finally:
        await dev.close()
        await mod.shutdown()
    assert mod._thread is None


async def test_a_module_outliving_the_simulators_loop_expires_without_a_traceback(
    plant: RealtimePlant, caplog: pytest.LogCaptureFixture
) -> None:
    """``sim serve`` stopped without powering the module off (Ctrl-C, a test's end): the
    module's own thread and its watchdog outlive the loop that owns the plant. When the
    watchdog then drops the outputs there is nobody left to tell, and the module must not
    print an asyncio traceback for it."""
    mod = ModbusDioModule(plant, LINES, port=0, own_thread=True)

    def simulator() -> None:
        async def serve() -> None:
            await mod.start()
            dev = create(
                "valves", {"host": "127.0.0.1", "port": mod.port, "watchdog": 0.3}, DriverContext()
            )
            await dev.connect()
            await dev.set_valve(1, True)
            await settle()
            await dev.close()  # the watchdog keeps running in the module

        asyncio.run(serve())  # the simulator's loop ends here, the module's thread lives on

    await asyncio.to_thread(simulator)
    try:
        await asyncio.sleep(0.6)  # the 0.3 s watchdog runs out on the module's thread
        assert mod.wd_status == EXPIRED
        assert "Exception in callback" not in caplog.text
        assert "Event loop is closed" not in caplog.text
    finally:
        await mod.shutdown()  # from this test's loop: the module lives on its own thread
