"""Benchmarks that print figures (``aldctl bench ...``); never timed assertions in tests.

Each function returns a dict of figures so the CLI can print it as a table or JSON.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable
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


REALTIME_RECIPE = """
name: realtime timing benchmark
params: {cycles: 150, pulse: 15 ms, purge: 100 ms}
setup:
  - set: {carrier: 20 sccm, substrate: 150 degC}
cycles:
  A:
    - pulse: {TMA: $pulse}
    - purge: $purge
    - pulse: {H2O: $pulse}
    - purge: $purge
main:
  - cycle: {name: A, repeat: $cycles}
"""


def _run_once(
    recipe_text: str, sets: list[str], *, realtime: bool, journal_dir: Path | None, seed: int = 0
) -> tuple[Any, Any, float]:
    """Run a recipe on the built-in simulated tool; return (result, events, peak MB)."""
    import resource
    import tempfile

    from aldctl.engine.clock import run_real, run_virtual
    from aldctl.engine.events import EventBus
    from aldctl.engine.journal import Journal
    from aldctl.session import RunRequest, execute, new_run, prepare

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "recipe.yaml"
        path.write_text(recipe_text)
        prepared = prepare(path, None, sets)
        req = RunRequest(prepared, realtime=realtime, seed=seed)
        journal = Journal(journal_dir) if journal_dir is not None else None
        if journal is not None:
            new_run(journal, req, "benchmark")
        bus = EventBus()
        events: list[Any] = []
        bus.listen(events.append)
        gc.collect()
        # tracemalloc would slow the run several times over: the peak is the process's
        # maximum resident set, which includes the interpreter and every library.
        runner = run_real if realtime else run_virtual
        result = runner(execute(req, journal, bus=bus))
        if journal is not None:
            journal.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result, events, rss_mb


def bench_engine(cycles: int) -> list[dict[str, Any]]:
    """Virtual time through the whole engine with the journal on: wall time and memory."""
    import tempfile

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "al2o3_tma_h2o.yaml"
    text = recipe.read_text() if recipe.exists() else REALTIME_RECIPE
    # The benchmark cycle of the issue: 15 ms / 5 s / 15 ms / 5 s.
    sets = [f"cycles={cycles}", "tma_pulse=15 ms", "h2o_pulse=15 ms", "purge=5 s"]
    with tempfile.TemporaryDirectory() as d:
        result, _, peak_mb = _run_once(text, sets, realtime=False, journal_dir=Path(d))
        db_mb = (Path(d) / "journal.sqlite").stat().st_size / 1e6
    return [
        {
            "cycles": result.cycles_completed,
            "outcome": result.outcome,
            "process_h": result.process_s / 3600,
            "wall_s": result.wall_s,
            "speedup": result.process_s / result.wall_s if result.wall_s else 0.0,
            "ms_per_cycle": result.wall_s / max(result.cycles_completed, 1) * 1e3,
            "max_rss_mb": peak_mb,
            "journal_mb": db_mb,
            "pulses_journaled": result.pulse_timing["pulses"],
        }
    ]


def bench_report(cycles: int) -> list[dict[str, Any]]:
    """A run of ``cycles`` cycles, then ``aldctl report`` on it in a child process."""
    import resource
    import subprocess
    import sys
    import tempfile
    import time

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "al2o3_tma_h2o.yaml"
    text = recipe.read_text() if recipe.exists() else REALTIME_RECIPE
    sets = [f"cycles={cycles}", "tma_pulse=15 ms", "h2o_pulse=15 ms", "purge=5 s"]
    with tempfile.TemporaryDirectory() as d:
        result, _, _ = _run_once(text, sets, realtime=False, journal_dir=Path(d))
        db_mb = (Path(d) / "journal.sqlite").stat().st_size / 1e6
        from aldctl.engine.journal import Journal

        j = Journal(Path(d), readonly=True)
        run_id = j.runs(1)[0].id
        j.close()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "aldctl", "report", run_id, "--data-dir", d, "--out", d],
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU time beside wall time: on a shared machine the wall time says how busy the
        # other processes were as much as how long the report takes.
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        peak = after.ru_maxrss / 1024
        size = (Path(d) / f"{run_id}.html").stat().st_size / 1e6
    return [
        {
            "cycles": result.cycles_completed,
            "journal_mb": db_mb,
            "report_wall_s": wall,
            "report_cpu_s": cpu,
            "report_peak_rss_mb": peak,
            "report_mb": size,
        }
    ]


def bench_realtime(cycles: int) -> list[dict[str, Any]]:
    """Real time, in-process simulator: pulse-width error and end-of-run drift."""
    from aldctl.engine.clock import release_realtime, request_realtime
    from aldctl.engine.events import State, StateChanged

    status = request_realtime()
    try:
        result, events, _ = _run_once(
            REALTIME_RECIPE, [f"cycles={cycles}"], realtime=True, journal_dir=None
        )
    finally:
        release_realtime()
    t_main = next(e.t for e in events if isinstance(e, StateChanged) and e.state is State.RUNNING)
    t_end = next(e.t for e in events if isinstance(e, StateChanged) and e.state is State.COMPLETE)
    planned = cycles * (0.015 + 0.1 + 0.015 + 0.1)
    pt = result.pulse_timing
    return [
        {
            "pulses": pt["pulses"],
            "width_err_p50_ms": pt["width_error_ms"]["p50"],
            "width_err_p99_ms": pt["width_error_ms"]["p99"],
            "width_err_max_ms": pt["width_error_ms"]["max"],
            "open_err_p99_ms": pt["open_error_ms"]["p99"],
            "drift_ms": (t_end - t_main - planned) * 1e3,
            "scheduler": status.detail,
        }
    ]


def _start_server(config: Path, state_dir: Path, extra: list[str] | None = None) -> Any:
    """`aldctl sim serve` in its own process; returns the Popen once endpoints are up."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aldctl",
            "sim",
            "serve",
            "--config",
            str(config),
            "--dir",
            str(state_dir),
            *(extra or []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (state_dir / "endpoints.json").exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            msg = f"aldctl sim serve exited: {err.strip()}"
            raise RuntimeError(msg)
        if time.monotonic() > deadline:
            proc.kill()
            msg = "aldctl sim serve did not start within 30 s"
            raise RuntimeError(msg)
        time.sleep(0.05)
    return proc


def _edges(state_dir: Path, line: str) -> list[tuple[float, float, str]]:
    """(open time, width s, source) of every pulse of ``line`` the module applied."""
    import csv

    out: list[tuple[float, float, str]] = []
    opened: tuple[float, str] | None = None
    with (state_dir / "edges.csv").open() as f:
        for row in csv.DictReader(f):
            if row["line"] != line:
                continue
            t = float(row["t_s"])
            if row["open"] == "1":
                opened = (t, row["source"])
            elif opened is not None:
                out.append((opened[0], t - opened[0], opened[1]))
                opened = None
    return out


def _stats_ms(xs: list[float]) -> dict[str, float]:
    v = sorted(abs(x) * 1e3 for x in xs)
    if not v:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"p50": v[len(v) // 2], "p99": v[min(len(v) - 1, int(len(v) * 0.99))], "max": v[-1]}


def bench_timing(
    config: Path, pulses: int, width_s: float = 0.015, poll_hz: float = 10.0
) -> list[dict[str, Any]]:
    """15 ms pulses over the real Modbus TCP path while every other device is polled.

    The emulators run in their own process (``aldctl sim serve``); this process runs the
    real drivers. Widths are measured where they matter: at the emulated I/O module, which
    logs when each coil actually changed (``edges.csv``).
    """
    import asyncio
    import tempfile

    from aldctl import config as cfg
    from aldctl.engine.clock import (
        RealClock,
        collect_in_slack,
        release_realtime,
        request_realtime,
        run_real,
    )
    from aldctl.tool import Tool, build

    tool_cfg = cfg.load_tool(config)
    line = next(iter(tool_cfg.lines))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        state = Path(d)
        server = _start_server(config, state)
        tool_cfg = cfg.load_tool(state / "tool.yaml")  # the server's own ports and ptys
        status = request_realtime()
        try:

            async def main() -> dict[str, Any]:
                tool = build(tool_cfg)
                await tool.connect()
                clock = RealClock()
                with collect_in_slack():
                    return await measure(tool, clock)

            async def measure(tool: Tool, clock: RealClock) -> dict[str, Any]:
                bank, ch = tool.valves[line]
                polls = 0

                async def poll() -> None:
                    nonlocal polls
                    period = 1.0 / poll_hz
                    nxt = clock.now()
                    readers: list[Callable[[], Awaitable[object]]] = (
                        [tool.gauge.read_pressure] if tool.gauge else []
                    )
                    readers += [t.read_temperature for t in tool.temperatures.values()]
                    readers += [f.read_flow for f in tool.flows.values()]
                    if tool.plasma is not None:
                        readers.append(tool.plasma.read_plasma)
                    if tool.qcm is not None:
                        readers.append(tool.qcm.read_thickness)
                    if tool.ozone is not None:
                        readers.append(tool.ozone.read_ozone)
                    while True:
                        await asyncio.gather(*(r() for r in readers), return_exceptions=True)
                        polls += 1
                        nxt += period
                        await clock.sleep_until(max(nxt, clock.now()), precise=False)

                async def heartbeat() -> None:
                    # The module's own watchdog drops every valve without this (as it should).
                    while True:
                        await bank.heartbeat()
                        await asyncio.sleep(tool_cfg.safety.heartbeat_interval)

                loop = asyncio.get_running_loop()
                poller = loop.create_task(poll(), name="bench-poll")
                beat = loop.create_task(heartbeat(), name="bench-heartbeat")
                latency: list[float] = []
                late: list[float] = []  # how late this process woke for an edge
                t = clock.now() + 0.5
                for _ in range(pulses):
                    late.append(await clock.sleep_until(t) - t)
                    await bank.set_valve(ch, True)
                    latency.append(clock.now() - t)
                    late.append(await clock.sleep_until(t + width_s) - (t + width_s))
                    await bank.set_valve(ch, False)
                    t += 0.1
                hw = bank.hardware_pulse
                hw_latency: list[float] = []
                hw_late: list[float] = []
                if hw:
                    t = clock.now() + 0.5
                    for _ in range(pulses):
                        hw_late.append(await clock.sleep_until(t) - t)
                        await bank.pulse(ch, width_s)
                        hw_latency.append(clock.now() - t)
                        t += 0.1
                await asyncio.sleep(0.5)
                for task in (poller, beat):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await tool.close()
                return {
                    "latency": latency,
                    "hw_latency": hw_latency,
                    "late": late,
                    "hw_late": hw_late,
                    "polls": polls,
                    "hw": hw,
                    "sleep": clock.lateness.summary_ms(),
                }

            import contextlib

            res = run_real(main())
        finally:
            release_realtime()
            server.send_signal(2)
            server.communicate(timeout=30)
        edges = _edges(state, tool_cfg.lines[line].chemical)
    sw = [w for _, w, src in edges if src == "command"]
    hw = [w for _, w, src in edges if src == "pulse"]
    for label, widths, lat, woke in (
        ("software-timed", sw, res["latency"], res["late"]),
        ("module-timed", hw, res["hw_latency"], res["hw_late"]),
    ):
        if not widths:
            continue
        err = _stats_ms([w - width_s for w in widths])
        rows.append(
            {
                "pulses": label,
                "n": len(widths),
                "width_err_p50_ms": err["p50"],
                "width_err_p99_ms": err["p99"],
                "width_err_max_ms": err["max"],
                "command_latency_p99_ms": _stats_ms(lat)["p99"],
                # the controller's share: how late it woke for the edges (the rest of the
                # width error is the wire and the module)
                "wake_late_p99_ms": _stats_ms(woke)["p99"],
                "wake_late_max_ms": _stats_ms(woke)["max"],
                "polls_at_10hz": res["polls"],
                "scheduler": status.detail,
            }
        )
    return rows
