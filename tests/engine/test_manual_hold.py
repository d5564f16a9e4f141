"""A manual session's pressure hold (it refuses doses while the chamber is above its hold
limit) ends once the chamber is back in band, as a run's does.

Fails on main 7de8b1a (and 049af87): nothing released the hold, so a session whose chamber
went above the hold limit for a few seconds, and came back, aborted 600 s later with "hold
timed out"."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aldctl.engine.clock import VirtualClock, run_virtual
from aldctl.engine.control import CommandRefused, RunControl
from aldctl.engine.events import EventBus
from aldctl.engine.manual import ManualSession
from aldctl.session import prepare
from aldctl.tool import build

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "al2o3_tma_h2o.yaml"


async def start_session() -> tuple[ManualSession, RunControl, asyncio.Task[None]]:
    """A manual session on the built-in simulated tool, 5 s in (virtual time)."""
    tool = build(prepare(RECIPE, None, ()).tool, seed=0)
    await tool.connect()
    control = RunControl()
    session = ManualSession(tool, VirtualClock(), EventBus(), control, None)
    task = asyncio.get_running_loop().create_task(session.run())
    await asyncio.sleep(5)
    return session, control, task


def test_a_manual_sessions_pressure_hold_ends_when_the_chamber_is_back_in_band() -> None:
    async def main() -> tuple[ManualSession, list[str], str | None]:
        session, control, task = await start_session()
        # 85 sccm of carrier: ~2.3 Torr, above the built-in tool's 2 Torr hold limit
        await session.set("flow:carrier", "85 sccm", "operator")
        await asyncio.sleep(10)
        refused: list[str] = []
        try:
            await session.set("valve:TMA", "open", "operator")
        except CommandRefused as exc:
            refused.append(str(exc))
        held = control.hold_reason
        await session.set("flow:carrier", "20 sccm", "operator")
        await asyncio.sleep(700)  # past limits.hold_timeout (600 s)
        await session.set("valve:TMA", "open", "operator")  # the hold has ended
        await session.set("valve:TMA", "closed", "operator")
        control.stop()
        await task
        return session, refused, held

    session, refused, held = run_virtual(main())
    assert held is not None
    assert "above 2 Torr" in held
    assert len(refused) == 1
    assert "no dose while the chamber pressure" in refused[0]
    assert session.outcome == "complete", session.reason


def test_a_manual_session_that_cannot_pump_down_says_what_the_operator_left_open() -> None:
    # The hold of a manual session refuses doses and closes what was opened by hand (here:
    # nothing, the carrier is too high): after recover_within
    # the session ends, and the reason names the dose valves open by hand (not "every dose
    # valve commanded closed", which is a run's hold).
    async def main() -> ManualSession:
        session, _, task = await start_session()
        # (a dose valve left open would fill the chamber past its 5 Torr maximum: that
        # aborts by itself; here the carrier keeps it between the hold limit and the max)
        await session.set("flow:carrier", "85 sccm", "operator")  # ~2.3 Torr: held
        await asyncio.wait_for(task, 120)
        return session

    session = run_virtual(main())
    assert session.outcome == "aborted"
    assert "still above the 2 Torr hold limit" in session.reason, session.reason
    assert "manual session (dose valves open by hand: none)" in session.reason
    assert "every dose valve commanded closed" not in session.reason


def test_a_manual_sessions_hold_closes_the_dose_valves_opened_by_hand() -> None:
    """A run's hold closes every dose valve; a manual session's did not (5513b8a): TMA
    opened by hand and left open filled the chamber past the hold limit and on to the
    5 Torr maximum, and only that abort closed it. Now the hold closes what the operator
    opened, says so, and the session goes on once the chamber is back in band."""

    async def main() -> tuple[ManualSession, list[str], list[float], bool]:
        session, control, task = await start_session()
        messages: list[str] = []
        session.bus.listen(lambda ev: messages.append(getattr(ev, "text", "")))
        await session.set("valve:TMA", "open", "operator")
        pressures: list[float] = []
        for _ in range(60):
            await asyncio.sleep(1)
            p = session.safety.readings.pressure_torr
            if p is not None:
                pressures.append(p)
        still_open = "TMA" in session.open_lines
        # back in band: the hold has ended and TMA may be dosed again by hand
        await session.set("valve:TMA", "open", "operator")
        await session.set("valve:TMA", "closed", "operator")
        control.stop()
        await task
        return session, messages, pressures, still_open

    session, messages, pressures, still_open = run_virtual(main())
    assert session.outcome == "complete", session.reason
    assert not still_open
    assert max(pressures) < 5.0, max(pressures)  # the maximum's abort was never needed
    assert pressures[-1] < 2.0
    closed = [m for m in messages if "closed TMA" in m]
    assert closed, messages
    assert "opened by hand" in closed[0]
