"""Speed and memory of the reactor model: TMA/H2O cycles (15 ms / 5 s / 15 ms / 5 s) driven
straight on :class:`~sim.reactor.Reactor` with full physics (savannah_like, 200 degC).

``python -m sim.bench`` prints the figures for 1,000 and 10,000 cycles. Wall and process
time come from a plain run; peak memory from a second run under ``tracemalloc`` (which
slows Python down, so its time is not reported). Memory must not grow with the number of
cycles: the model aggregates and never logs per dose.
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc

from sim.config import ChamberConfig
from sim.reactor import Reactor, ReactorConfig
from sim.units import NS_PER_MS, NS_PER_S

PULSE_NS = 15 * NS_PER_MS
PURGE_NS = 5 * NS_PER_S


def _run(cycles: int, cells: int | None = None) -> Reactor:
    chamber = ChamberConfig(cells=cells) if cells is not None else None
    cfg = ReactorConfig.for_lines(["TMA", "H2O"], substrate_c=200.0, chamber=chamber)
    r = Reactor(cfg, seed=1)
    t = 0
    for _ in range(cycles):
        for line in ("TMA", "H2O"):
            r.set_valve(line, True)
            t += PULSE_NS
            r.advance_to(t)
            r.set_valve(line, False)
            t += PURGE_NS
            r.advance_to(t)
        # what a control loop does every cycle: read the sensors
        r.read_pressure_torr()
        r.read_qcm()
    return r


def run_benchmark(cycles: int, cells: int | None = None) -> dict[str, float]:
    """Run ``cycles`` TMA/H2O cycles; return timing, memory and growth figures.

    ``cells``: the chamber as that many cells along the flow (None: the 0-D chamber).

    Keys: ``cycles``, ``setup_s`` (first reactor: loading the library data), ``wall_s`` and
    ``process_s`` (plain run), ``virtual_s`` (simulated time), ``speedup`` (virtual / wall),
    ``us_per_cycle``, ``peak_mem_kib`` (tracemalloc run), ``thickness_a`` and ``gpc_a``.
    """
    s0 = time.perf_counter()
    _run(1, cells)  # loads the chemical catalogue and process library once (cached afterwards)
    setup = time.perf_counter() - s0
    gc.collect()
    w0 = time.perf_counter()
    p0 = time.process_time()
    r = _run(cycles, cells)
    wall = time.perf_counter() - w0
    proc = time.process_time() - p0
    truth = r.truth()
    gc.collect()
    tracemalloc.start()
    try:
        _run(cycles, cells)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    virtual = r.now_ns / NS_PER_S
    return {
        "cycles": float(cycles),
        "cells": float(cells or 0),
        "setup_s": setup,
        "wall_s": wall,
        "process_s": proc,
        "virtual_s": virtual,
        "speedup": virtual / wall if wall > 0 else float("inf"),
        "us_per_cycle": wall / cycles * 1e6,
        "peak_mem_kib": peak / 1024.0,
        "thickness_a": truth.thickness_a,
        "gpc_a": truth.thickness_a / cycles,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    counts = [int(a) for a in args] or [1000, 10000]
    print(
        f"{'cycles':>8} {'wall s':>8} {'cpu s':>8} {'us/cycle':>9} {'speed-up':>10} "
        f"{'peak KiB':>9} {'GPC A':>7}"
    )
    for n in counts:
        res = run_benchmark(n)
        print(
            f"{n:>8d} {res['wall_s']:>8.3f} {res['process_s']:>8.3f} {res['us_per_cycle']:>9.0f} "
            f"{res['speedup']:>10.0f} {res['peak_mem_kib']:>9.1f} {res['gpc_a']:>7.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
