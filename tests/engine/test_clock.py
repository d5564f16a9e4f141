"""Clocks: virtual time jumps, real time hits deadlines."""

from __future__ import annotations

import asyncio
import time

from aldctl.engine.clock import RealClock, VirtualClock, gather_bounded, run_real, run_virtual


def test_virtual_time_runs_hours_in_no_time() -> None:
    async def main() -> tuple[float, float]:
        clock = VirtualClock()
        t0 = clock.now()
        for i in range(1, 3601):
            await clock.sleep_until(t0 + i * 5.0)  # five hours of 5 s steps
        return t0, clock.now()

    wall = time.perf_counter()
    t0, t1 = run_virtual(main())
    assert t1 - t0 == 5 * 3600
    assert time.perf_counter() - wall < 30  # generous: only guards against real sleeping


def test_virtual_loop_orders_concurrent_timers() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        out: list[tuple[str, float]] = []

        async def tick(name: str, period: float, n: int) -> None:
            for _ in range(n):
                await asyncio.sleep(period)
                out.append((name, loop.time()))

        await asyncio.gather(tick("a", 0.3, 3), tick("b", 0.5, 2))
        return out

    got = run_virtual(main())
    assert [n for n, _ in got] == ["a", "b", "a", "a", "b"]
    assert [round(t, 9) for _, t in got] == [0.3, 0.5, 0.6, 0.9, 1.0]


def test_real_clock_wakes_at_the_deadline() -> None:
    async def main() -> list[float]:
        clock = RealClock()
        lates = []
        for _ in range(20):
            deadline = clock.now() + 0.005
            woke = await clock.sleep_until(deadline)
            lates.append(woke - deadline)
        return lates

    lates = run_real(main())
    assert all(late >= 0 for late in lates)  # never early
    # (how late is a benchmark figure, not asserted: this machine is shared)


def test_gather_bounded_names_the_slow_call() -> None:
    async def main() -> dict[str, BaseException | None]:
        async def fast() -> None:
            await asyncio.sleep(0.01)

        async def stuck() -> None:
            await asyncio.sleep(100)

        async def bad() -> None:
            raise OSError("port gone")

        return await gather_bounded({"fast": fast, "stuck": stuck, "bad": bad}, 1.0)

    res = run_virtual(main())
    assert res["fast"] is None
    assert isinstance(res["stuck"], TimeoutError)
    assert isinstance(res["bad"], OSError)
