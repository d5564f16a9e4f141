"""Benchmarks that print figures (``aldctl bench ...``); never timed assertions in tests.

Each function returns a dict of figures so the CLI can print it as a table or JSON.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from pathlib import Path
from typing import Any


def bench_compile(recipe: Path, cycles: list[int]) -> list[dict[str, Any]]:
    """Load, compile and plan ``recipe`` with ``--set cycles=N``: wall time and peak memory."""
    from aldctl import config as cfg
    from aldctl.recipe.compile import compile_recipe
    from aldctl.recipe.load import load_recipe
    from aldctl.recipe.plan import plan
    from aldctl.recipe.schedule import iter_units
    from aldctl.session import provision_lines

    rows = []
    # Warm the unit registry and the YAML/pydantic machinery so the figures are the work's.
    rec0 = load_recipe(recipe, {"cycles": 1}).recipe
    tool = provision_lines(cfg.load_builtin(), ["TMA", "H2O"])
    compile_recipe(rec0, tool)
    for n in cycles:
        gc.collect()
        tracemalloc.start()
        t0 = time.perf_counter()
        rec = load_recipe(recipe, {"cycles": n}).recipe
        sched = compile_recipe(rec, tool).schedule
        t1 = time.perf_counter()
        p = plan(sched, tool)
        t2 = time.perf_counter()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        t3 = time.perf_counter()
        walked = sum(1 for _ in iter_units(sched.main))
        t4 = time.perf_counter()
        rows.append(
            {
                "cycles": n,
                "compile_ms": (t1 - t0) * 1e3,
                "plan_ms": (t2 - t1) * 1e3,
                "peak_mb": peak / 1e6,
                "iterate_all_units_ms": (t4 - t3) * 1e3,
                "units": walked,
                "duration_h": p.duration_s / 3600,
            }
        )
    return rows


def bench_clock(hops: int) -> list[dict[str, Any]]:
    """Fast-forwarding event loops on the same workload: ``hops`` sleeps of 0.5 s."""
    import asyncio

    from aldctl.engine.clock import VirtualTimeLoop

    async def work() -> float:
        for _ in range(hops):
            await asyncio.sleep(0.5)
        return asyncio.get_running_loop().time()

    rows: list[dict[str, Any]] = []
    factories: list[tuple[str, Any]] = [("aldctl VirtualTimeLoop", VirtualTimeLoop)]
    try:
        import looptime

        factories += [
            (f"looptime noop_cycles={n}", lambda n=n: looptime.new_event_loop(noop_cycles=n))
            for n in (42, 1)
        ]
    except ImportError:  # looptime is optional: only this comparison needs it
        pass
    for name, factory in factories:
        t0 = time.perf_counter()
        with asyncio.Runner(loop_factory=factory) as runner:
            virtual = runner.run(work())
        wall = time.perf_counter() - t0
        rows.append(
            {
                "loop": name,
                "hops": hops,
                "virtual_s": virtual,
                "wall_s": wall,
                "us_per_hop": wall / hops * 1e6,
            }
        )
    return rows
