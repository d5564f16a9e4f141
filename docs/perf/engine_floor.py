"""How low can `aldctl bench engine` go? The floor under the safety work's design rates.

    python docs/perf/engine_floor.py [--rounds 3] [--cycles 1000]

Runs the benchmark of `aldctl bench engine` (1,000 TMA/H2O cycles of 15 ms / 5 s / 15 ms /
5 s, virtual time, journal on) in three configurations, each in a fresh process,
interleaved round by round, and prints each run's process CPU time and simulated film:

``full``
    the shipped engine, as `aldctl bench engine` runs it.
``free-safety``
    the same run with every piece of safety work made free except its wake-ups: a safety
    poll (every ``safety.poll_interval``, 1 s) only brings the reactor model up to its
    instant, as any read must, and evaluates no limit; a heartbeat (every
    ``safety.heartbeat_interval``, 0.25 s) wakes and writes nothing; a pulse monitor read
    only brings the model up to its instant. No driver code, no limit checks, no samples.
    This is the least any implementation of the same design can cost in this Python.
``no-safety``
    no polls, no heartbeats, no pulse monitor sampling at all: the executor, the model
    through the doses and the per-cycle journal commits.

Measurement only: it monkeypatches the engine and is not part of aldctl. The figures are in
docs/benchmarks.md ("The floor under the safety rates").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from typing import Any

CONFIGS = ("full", "free-safety", "no-safety")


def _patch(config: str) -> None:
    from aldctl.engine import dosewatch, safety

    if config == "full":
        return
    sims: dict[int, Any] = {}

    def sim_of(tool: Any) -> Any:
        sim = sims.get(id(tool))
        if sim is None:
            sim = next(d.sim for d in tool.devices.values() if hasattr(d, "sim"))
            sims[id(tool)] = sim
        return sim

    async def heartbeat(self: Any) -> None:
        # one real beat arms the simulated module; then its watchdog is set out of reach
        for bank in self.tool.banks:
            if bank.watchdog:
                await bank.heartbeat()
                bank._watchdog_ns = 10**18
                await bank.heartbeat()
        if config == "no-safety":
            await asyncio.sleep(1e12)
        interval = self.cfg.safety.heartbeat_interval
        next_t = self.clock.now()
        while True:
            next_t += interval
            await self.clock.sleep_until(next_t, precise=False)

    safety.Safety.heartbeat = heartbeat  # type: ignore[method-assign]

    if config == "free-safety":

        async def poll(self: Any) -> Any:
            self.polls += 1
            sim_of(self.tool).sync()
            return self.readings

        async def read(self: Any) -> float | None:
            sim_of(self.r.tool).sync()
            return 0.01

        safety.Safety._poll = poll  # type: ignore[method-assign]
        safety.Safety.evaluate = lambda self: None  # type: ignore[method-assign]
        dosewatch.PulseMonitor._read = read  # type: ignore[method-assign]
    else:

        async def monitor(self: Any) -> None:
            await self.poll_once()  # the run's first readings, then nothing
            self.evaluate()
            await asyncio.sleep(1e12)

        async def area(self: Any, rec: Any, t_open: float) -> tuple[None, None]:
            return None, None

        safety.Safety.monitor = monitor  # type: ignore[method-assign]
        dosewatch.PulseMonitor._area = area  # type: ignore[method-assign]


def _one(config: str, cycles: int) -> None:
    import time

    from drivers.simulated import SimulatedReactor

    _patch(config)
    # the reactor model's share: every catch-up of the model goes through advance_to
    in_model = [0.0]
    advance_to = SimulatedReactor.advance_to

    def timed(self: SimulatedReactor, t_ns: int) -> Any:
        c0 = time.process_time()
        try:
            return advance_to(self, t_ns)
        finally:
            in_model[0] += time.process_time() - c0

    SimulatedReactor.advance_to = timed  # type: ignore[method-assign]
    from aldctl.front.bench import bench_engine

    r = bench_engine(cycles)[0]
    r["model_s"] = in_model[0]
    keys = ("outcome", "cpu_s", "wall_s", "model_s", "thickness_nm")
    print(json.dumps({k: r[k] for k in keys}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        _one(args.one, args.cycles)
        return
    cpu: dict[str, list[float]] = {c: [] for c in CONFIGS}
    model: dict[str, list[float]] = {c: [] for c in CONFIGS}
    for k in range(args.rounds):
        for config in CONFIGS if k % 2 == 0 else reversed(CONFIGS):
            out = subprocess.run(
                [sys.executable, __file__, "--one", config, "--cycles", str(args.cycles)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            r = json.loads(out.splitlines()[-1])
            cpu[config].append(r["cpu_s"])
            model[config].append(r["model_s"])
            print(
                f"round {k + 1} {config:12} cpu {r['cpu_s']:.3f} s (model {r['model_s']:.3f} s)  "
                f"wall {r['wall_s']:.3f} s  "
                f"{r['outcome']}  film {r['thickness_nm']!r} nm",
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.2f}; CPU medians over {args.rounds} rounds:")
    for config in CONFIGS:
        print(
            f"  {config:12} {statistics.median(cpu[config]):.3f} s"
            f" (of which the reactor model {statistics.median(model[config]):.3f} s)"
        )


if __name__ == "__main__":
    main()
