"""A manual session's pressure hold (it refuses doses while the chamber is above its hold
limit) ends once the chamber is back in band, as a run's does.

Fails on main 7de8b1a (and 049af87): nothing released the hold, so a session whose chamber
went above the hold limit for a few seconds, and came back, aborted 600 s later with "hold
timed out"."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from aldctl.engine.clock import VirtualClock, run_virtual
from aldctl.engine.control import CommandRefused, RunControl
from aldctl.engine.events import EventBus
from aldctl.engine.manual import ManualSession
from aldctl.session import prepare
from aldctl.tool import build
from drivers.base import DeviceTimeout

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


# The review of 4c24d0e: what the first form of the hold missed (each fails on d1d9156).
# Fakes: the simulated valve bank's ``set_valve`` is wrapped to be slow or to fail, as a
# Modbus write that takes a retry or gets no reply would (no real part here can be told
# to time out one write on command).


def test_a_dose_valve_cannot_be_opened_again_by_hand_during_the_hold_that_closed_it() -> None:
    """The hold closed TMA; a second later the chamber is under the hold limit but the hold
    has not ended (resume_after). The operator opens TMA again: nothing refuses it and
    nothing closes it (the hold's alarm came once), the chamber fills to 4.3 Torr and the
    session aborts on recover_within. A run does not dose during a hold."""

    async def main() -> tuple[str | None, list[str], float]:
        session, control, task = await start_session()
        await session.set("valve:TMA", "open", "operator")
        for _ in range(300):  # the hold closes TMA
            await asyncio.sleep(0.1)
            if control.hold_reason and "TMA" not in session.open_lines:
                break
        for _ in range(300):  # and the chamber pumps down under the hold limit
            await asyncio.sleep(0.1)
            if (session.safety.readings.pressure_torr or 9.0) < 2.0:
                break
        held = control.hold_reason
        refused: list[str] = []
        try:
            await session.set("valve:TMA", "open", "operator")
        except CommandRefused as exc:
            refused.append(str(exc))
        pmax = 0.0
        for _ in range(20):
            await asyncio.sleep(1)
            pmax = max(pmax, session.safety.readings.pressure_torr or 0.0)
        control.stop()
        await task
        return held, refused, pmax

    held, refused, pmax = run_virtual(main())
    assert held is not None  # still the same hold when the operator asked
    assert refused, f"TMA opened by hand during the hold; the chamber went to {pmax:.2f} Torr"
    assert pmax < 2.0, pmax


def test_a_dose_valve_whose_open_is_on_the_wire_when_the_hold_fires_is_closed() -> None:
    """``set`` passes the permissive, then writes; the hold fires during the write. The line
    joins ``open_lines`` only after the write, so the hold finds nothing to close (or not
    this line), and TMA stays open through the hold."""

    async def main() -> tuple[bool, bool]:
        session, control, task = await start_session()
        bank, ch = session.tool.valves["TMA"]
        real = bank.set_valve

        async def slow(channel: int, is_open: bool) -> None:
            await asyncio.sleep(0.2)  # a Modbus write with one retry
            await real(channel, is_open)

        bank.set_valve = slow  # type: ignore[method-assign]
        opening = asyncio.ensure_future(session.set("valve:TMA", "open", "operator"))
        await asyncio.sleep(0.05)
        # the safety monitor's hold, as a poll above the hold limit makes it
        session.safety._hold("pressure", "chamber pressure 2.4 Torr above 2 Torr")
        with contextlib.suppress(CommandRefused):  # refused is fine: closed is what counts
            await opening
        await asyncio.sleep(2)
        held = control.hold_reason is not None
        is_open = bool((await bank.read_valves())[ch])
        control.abort("test over", who="test")
        await task
        return held, is_open

    held, is_open = run_virtual(main())
    assert held
    assert not is_open, "TMA, opened as the hold fired, is still open during the hold"


def test_a_manual_session_that_could_not_close_a_valve_does_not_end_complete() -> None:
    """Stop with TMA open and its close getting no reply: the session ended 'complete:
    manual session ended by the operator' (exit 0), ``open_lines`` (the status verb's
    ``manual_open``, what the console draws) emptied, while the output was still on."""

    async def main() -> tuple[ManualSession, bool]:
        session, control, task = await start_session()
        bank, ch = session.tool.valves["TMA"]
        real = bank.set_valve

        async def no_reply(channel: int, is_open: bool) -> None:
            if channel == ch and not is_open:
                raise DeviceTimeout(bank.name, "no reply")
            await real(channel, is_open)

        bank.set_valve = no_reply  # type: ignore[method-assign]
        await session.set("valve:TMA", "open", "operator")
        control.stop()
        await task
        return session, bool((await bank.read_valves())[ch])

    session, still_on = run_virtual(main())
    assert still_on  # the fake did what it says
    assert session.safe_errors
    assert session.outcome != "complete" or "TMA" in session.reason, (
        session.outcome,
        session.reason,
    )


def test_a_hold_that_cannot_close_a_valve_opened_by_hand_says_why_and_ends() -> None:
    """The close times out: the log said 'could not close TMA ()' (a TimeoutError's empty
    text), and the session went on with TMA open until recover_within aborted it."""

    async def main() -> tuple[list[str], bool]:
        session, control, task = await start_session()
        texts: list[str] = []
        session.bus.listen(lambda ev: texts.append(str(getattr(ev, "text", ""))))
        bank, ch = session.tool.valves["TMA"]
        real = bank.set_valve

        async def hang(channel: int, is_open: bool) -> None:
            if channel == ch and not is_open:
                await asyncio.sleep(3600)
            await real(channel, is_open)

        bank.set_valve = hang  # type: ignore[method-assign]
        await session.set("valve:TMA", "open", "operator")
        await asyncio.sleep(15)  # the close gives up at 11 s (safe_state_timeout 5 s)
        ended = task.done()
        with contextlib.suppress(CommandRefused):  # it may have ended by itself
            control.abort("test over", who="test")
        await task
        return texts, ended

    texts, ended = run_virtual(main())
    failed = [t for t in texts if "could not close" in t]
    assert failed, texts
    assert "TMA ()" not in failed[0], failed[0]
    # as a run's hold that cannot close its doses ("hold could not close valves"): the
    # safe state at once, not TMA feeding the chamber to recover_within's abort at 36 s
    assert ended
