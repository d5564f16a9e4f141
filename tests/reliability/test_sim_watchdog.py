"""The in-process simulated valve module has the watchdog of the WAGO-style module the
emulator serves (sim/devices/modbus_dio.py, WAGO 750-352/040-000 manual 11.2.5): when no
request reaches it for its watchdog time, every output drops and the dose valves close by
themselves, and it refuses process data until connected again. So a link lost in the
middle of a pulse leaves the chamber as safe in the simulated tool as on the real module
(tests/reliability/test_crash_realtime.py shows the emulated module doing it)."""

from __future__ import annotations

import asyncio

import pytest

from aldctl.engine.clock import run_virtual
from aldctl.session import load_tool
from aldctl.tool import build
from drivers.base import DeviceFault
from drivers.simulated import SimulatedReactor, SimValveBank


def _bank() -> tuple[SimValveBank, SimulatedReactor, int]:
    tool = build(load_tool(None, ["TMA", "H2O"]))
    bank = tool.devices["valves"]
    assert isinstance(bank, SimValveBank)
    sim = tool.simulation
    assert isinstance(sim, SimulatedReactor)
    channel = next(ch for (dev, ch), line in sim.line_of.items() if line == "TMA")
    return bank, sim, channel


def test_the_built_in_tool_s_valve_module_has_a_watchdog() -> None:
    bank, _, _ = _bank()
    assert bank.watchdog  # so the engine feeds it (safety.heartbeat)
    assert bank.watchdog_s == pytest.approx(1.0)


def test_a_link_lost_mid_pulse_closes_the_valve_within_the_watchdog_time() -> None:
    async def main() -> tuple[float, float, bool]:
        bank, sim, ch = _bank()
        await bank.connect()
        await bank.set_valve(ch, True)
        loop = asyncio.get_running_loop()
        # fed for 3 s: the valve stays open (the heartbeat keeps the module alive)
        for _ in range(12):
            await asyncio.sleep(0.25)
            await bank.heartbeat()
        fed_open = sim.sync().truth().valve_positions["TMA"]
        sim.reactor.faults.inject("disconnect", "valves")
        t_lost = loop.time()
        while sim.sync().truth().valve_positions["TMA"] > 0.0 and loop.time() - t_lost < 5:
            with pytest.raises(Exception, match="link down"):
                await bank.heartbeat()
            await asyncio.sleep(0.05)
        closed_after = loop.time() - t_lost
        sim.reactor.faults.clear_all()
        # expired: process data refused until connect restarts the watchdog
        refused = False
        try:
            await bank.set_valve(ch, True)
        except DeviceFault as exc:
            refused = "watchdog" in str(exc)
        return fed_open, closed_after, refused

    fed_open, closed_after, refused = run_virtual(main())
    assert fed_open > 0.0
    assert 0.9 <= closed_after <= 1.1
    assert refused


def test_the_valve_closes_even_when_nothing_talks_to_the_module() -> None:
    async def main() -> float:
        bank, sim, ch = _bank()
        await bank.connect()
        await bank.set_valve(ch, True)
        await asyncio.sleep(0.5)
        opened = sim.sync().truth().valve_positions["TMA"]
        assert opened > 0.0
        await asyncio.sleep(1.0)  # no request at all, e.g. the controller died
        return sim.sync().truth().valve_positions["TMA"]

    assert run_virtual(main()) == 0.0


def test_connect_restarts_an_expired_watchdog() -> None:
    async def main() -> float:
        bank, sim, ch = _bank()
        await bank.connect()
        await asyncio.sleep(2.0)
        await bank.connect()
        await bank.set_valve(ch, True)
        await asyncio.sleep(0.5)
        return sim.sync().truth().valve_positions["TMA"]

    assert run_virtual(main()) > 0.0


def test_outputs_read_back_the_commands_and_the_limit_switches_the_stem() -> None:
    # What a hold and the read-back rely on (position_inputs): the outputs (read_valves)
    # follow the commands and the watchdog, the limit switches (read_positions) the stem.
    async def main() -> list[tuple[bool, bool]]:
        bank, sim, ch = _bank()
        assert bank.positions  # the built-in tool has its limit switches wired
        await bank.connect()
        seen: list[tuple[bool, bool]] = []

        async def look() -> None:
            await asyncio.sleep(0.1)  # a valve stroke
            seen.append(((await bank.read_valves())[ch], (await bank.read_positions())[ch]))

        await bank.set_valve(ch, True)
        await look()  # (on, open)
        sim.reactor.faults.inject("valve_stuck_open", "TMA")
        await bank.set_valve(ch, False)
        await look()  # (off, open): the stem stuck open
        sim.reactor.faults.clear_all()
        await bank.set_valve(ch, True)
        await asyncio.sleep(2.0)  # unfed: the watchdog drops the output
        await bank.connect()  # restarts it
        await look()  # (off, closed)
        return seen

    assert run_virtual(main()) == [(True, True), (False, True), (False, False)]
