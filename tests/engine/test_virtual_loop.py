"""The virtual-time loop's own timer queue changes nothing a run shows.

:class:`VirtualTimeLoop` keeps its timers in a heap of its own (deadlines compared in C)
instead of asyncio's heap of TimerHandle objects, and polls its self-pipe alone at most
every ``REAL_IO_POLL_S`` of wall time (other descriptors every iteration). The reference
here is asyncio's own code for both (``BaseEventLoop.call_at`` and ``_run_once`` on the
same virtual clock; ``call_soon`` too, which the loop also builds its handles for in one
frame): same callback order, ties included, and a whole engine run journals
exactly the same rows.
"""

from __future__ import annotations

import asyncio
import random
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aldctl.engine.clock import VirtualTimeLoop
from tests.conftest import RECIPES


class AsyncioTimers(VirtualTimeLoop):
    """The same virtual clock on asyncio's own timer queue and iteration."""

    call_at = asyncio.BaseEventLoop.call_at  # type: ignore[assignment]
    call_soon = asyncio.BaseEventLoop.call_soon  # type: ignore[assignment]
    _run_once = asyncio.BaseEventLoop._run_once  # type: ignore[attr-defined]


def _order(factory: type[VirtualTimeLoop], seed: int) -> list[tuple[int, float]]:
    """Timers set at random (many due at the same instant, some cancelled, some set from
    callbacks): the order they ran in, with the loop time each saw."""
    rng = random.Random(seed)
    out: list[tuple[int, float]] = []
    loop = factory()
    try:

        def fire(i: int) -> None:
            out.append((i, loop.time()))
            if rng.random() < 0.3:  # a timer that sets another, as a periodic task does
                loop.call_later(rng.choice([0.0, 0.25, 0.5, 1.0]), fire, 1000 + i)

        handles = []
        for i in range(600):
            handles.append(loop.call_at(rng.choice([0.25, 0.5, 1.0, 1.0, 2.0, 7.5]), fire, i))
        for h in rng.sample(handles, 250):  # > half of them at once: the heap is rebuilt
            h.cancel()
        loop.call_at(50.0, loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    return out


def test_timers_run_in_asyncios_order_ties_included() -> None:
    for seed in range(5):
        ours = _order(VirtualTimeLoop, seed)
        ref = _order(AsyncioTimers, seed)
        assert len(ours) > 350
        assert ours == ref


def test_on_a_python_whose_handles_differ_the_loop_builds_them_as_asyncio_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aldctl.engine import clock

    monkeypatch.setattr(clock, "_BUILD_HANDLES", False)
    assert _order(VirtualTimeLoop, 0) == _order(AsyncioTimers, 0)


def _journal_rows(data: Path) -> dict[str, list[Any]]:
    db = sqlite3.connect(data / "journal.sqlite")
    try:
        return {
            "samples": db.execute(
                "SELECT t, channel, value FROM samples ORDER BY rowid"
            ).fetchall(),
            "pulses": db.execute(
                "SELECT unit, line, chemical, commanded_open, achieved_open, commanded_close,"
                " achieved_close, hardware, area_torr_s FROM pulses ORDER BY rowid"
            ).fetchall(),
            "events": db.execute("SELECT seq, t, kind, state, message FROM events").fetchall(),
            "checkpoints": db.execute(
                "SELECT unit, label, rep, position, t_start, t_end FROM checkpoints ORDER BY rowid"
            ).fetchall(),
            "sim_states": db.execute("SELECT state FROM sim_states").fetchall(),
        }
    finally:
        db.close()


def _engine_run(factory: type[VirtualTimeLoop], data: Path) -> tuple[Any, dict[str, list[Any]]]:
    from aldctl.engine.journal import Journal
    from aldctl.session import RunRequest, execute, new_run, prepare

    sets = ["cycles=12", "tma_pulse=15 ms", "h2o_pulse=15 ms", "purge=5 s"]
    prepared = prepare(RECIPES / "al2o3_tma_h2o.yaml", None, sets)
    req = RunRequest(prepared, realtime=False, seed=3)
    journal = Journal(data)
    try:
        new_run(journal, req, "virtual")
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(execute(req, journal))
    finally:
        journal.close()
    return result, _journal_rows(data)


def test_an_engine_run_journals_the_same_on_asyncios_timer_queue(tmp_path: Path) -> None:
    ours, ours_rows = _engine_run(VirtualTimeLoop, tmp_path / "ours")
    ref, ref_rows = _engine_run(AsyncioTimers, tmp_path / "asyncio")
    assert ours.outcome == ref.outcome == "complete"
    assert ours.simulation["thickness_nm"] == ref.simulation["thickness_nm"]  # bit for bit
    assert ours.pulse_timing == ref.pulse_timing
    assert len(ours_rows["pulses"]) == 24
    for table, rows in ref_rows.items():
        assert ours_rows[table] == rows, table


def test_real_io_is_seen_while_virtual_time_runs() -> None:
    """Bytes from another thread reach a reader while a heartbeat keeps virtual time
    racing."""

    async def main() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        got: asyncio.Future[bytes] = loop.create_future()
        loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(16)))

        async def beat() -> None:
            for _ in range(10**7):  # a heartbeat: virtual time runs while we wait
                await asyncio.sleep(0.25)

        beater = loop.create_task(beat())
        threading.Timer(0.05, lambda: b.send(b"resume")).start()
        t0 = time.perf_counter()
        try:
            data = await got
        finally:
            loop.remove_reader(a)
            beater.cancel()
            a.close()
            b.close()
        return data, time.perf_counter() - t0

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        data, wall = runner.run(main())
    assert data == b"resume"
    assert wall < 5.0  # seen at once (0.05 s + a poll), not never: a bound for a busy machine


def test_handles_behave_as_asyncio_s_closed_loop_debug_mode_and_context() -> None:
    """The loop builds its handles itself (outside debug mode): what asyncio's own do."""
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []
    loop = VirtualTimeLoop()
    try:
        ctx = contextvars.copy_context()
        ctx.run(var.set, "given")
        loop.call_soon(lambda: seen.append(var.get()), context=ctx)
        loop.call_at(1.0, lambda: seen.append(var.get()), context=ctx)
        h = loop.call_soon(seen.append, "cancelled")
        t = loop.call_at(2.0, seen.append, "cancelled timer")
        h.cancel()
        t.cancel()
        loop.call_at(3.0, loop.stop)
        loop.run_forever()
        assert seen == ["given", "given"]
        assert loop.time() == 3.0
        loop.set_debug(True)  # asyncio's own path: the handle knows where it was made
        assert loop.call_soon(seen.append, "x")._source_traceback  # type: ignore[attr-defined]
        assert loop.call_at(4.0, seen.append, "y")._source_traceback  # type: ignore[attr-defined]
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon(print)
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_at(5.0, print)
