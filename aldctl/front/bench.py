"""Benchmarks that print figures (``aldctl bench ...``); never timed assertions in tests.

Each function returns a dict of figures so the CLI can print it as a table or JSON.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aldctl.engine.clock import Stall


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
    recipe_text: str,
    sets: list[str],
    *,
    realtime: bool,
    journal_dir: Path | None,
    seed: int = 0,
    keep_events: bool = True,
    cpu: list[float] | None = None,
) -> tuple[Any, Any, float]:
    """Run a recipe on the built-in simulated tool; return (result, events, peak MB).

    ``cpu``, when given, receives the process CPU seconds of the run itself."""
    import resource
    import tempfile
    import time

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
        if keep_events:  # 10,000 cycles publish ~10^6 events: the harness's memory, not ours
            bus.listen(events.append)
        gc.collect()
        # tracemalloc would slow the run several times over: the peak is the process's
        # maximum resident set, which includes the interpreter and every library.
        runner = run_real if realtime else run_virtual
        cpu0 = time.process_time()
        result = runner(execute(req, journal, bus=bus))
        if cpu is not None:
            cpu.append(time.process_time() - cpu0)
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
    cpu: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        result, _, peak_mb = _run_once(
            text, sets, realtime=False, journal_dir=Path(d), keep_events=False, cpu=cpu
        )
        db_mb = (Path(d) / "journal.sqlite").stat().st_size / 1e6
    sim = result.simulation or {}
    return [
        {
            "cycles": result.cycles_completed,
            "outcome": result.outcome,
            "process_h": result.process_s / 3600,
            "wall_s": result.wall_s,
            # On a shared machine the wall time says as much about the other processes:
            # the run's own CPU time is the figure to compare between versions.
            "cpu_s": cpu[0],
            "speedup": result.process_s / result.wall_s if result.wall_s else 0.0,
            "ms_per_cycle": result.wall_s / max(result.cycles_completed, 1) * 1e3,
            "max_rss_mb": peak_mb,
            "journal_mb": db_mb,
            "pulses_journaled": result.pulse_timing["pulses"],
            # the simulated film: an optimisation of the engine must not change it
            "thickness_nm": sim.get("thickness_nm"),
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


LATE_S = 0.0001
"""A pulse whose width error is over this is late (the goal's p99 < 0.1 ms)."""
EDGE_MATCH_S = 1e-6
"""A stall record belongs to an edge when their deadlines agree this closely (edges of
a run are milliseconds apart; the two computations of one deadline differ by ~1e-12 s)."""


def pulse_edges(events: list[Any]) -> list[tuple[float, float, float]]:
    """(commanded open, commanded close, width error), seconds on the run's time base,
    of each software-timed pulse of a run's events."""
    from aldctl.engine.events import DoseStarted, PulseDone

    opened: dict[str, DoseStarted] = {}
    out: list[tuple[float, float, float]] = []
    for e in events:
        if isinstance(e, DoseStarted):
            opened[e.line] = e
        elif isinstance(e, PulseDone) and not e.hardware and e.line in opened:
            d = opened.pop(e.line)
            commanded = d.t - e.open_error_s
            out.append((commanded, commanded + d.duration_s, e.width_error_s))
    return out


def _at_edge(deadlines: list[float], records: list[Any], t: float) -> Any | None:
    """The stall record whose deadline is ``t`` (within EDGE_MATCH_S), if any."""
    import bisect

    i = bisect.bisect_left(deadlines, t - EDGE_MATCH_S)
    if i < len(deadlines) and deadlines[i] <= t + EDGE_MATCH_S:
        return records[i]
    return None


def _causes(stalls: Sequence[Stall]) -> Callable[[float, float, float], Stall | None]:
    """(commanded open, commanded close, width error) -> the stall record at the edge that
    made the width wrong: the closing edge when the pulse came out long (the close was the
    later of the two), the opening edge when it came out short; None if there is none."""
    records = sorted(stalls, key=lambda r: r.deadline)
    times = [r.deadline for r in records]

    def cause(t_open: float, t_close: float, width_err: float) -> Stall | None:
        return _at_edge(times, records, t_close if width_err > 0 else t_open)

    return cause


def attribute_stalls(
    pulses: list[tuple[float, float, float]], stalls: Sequence[Stall], late_s: float = LATE_S
) -> dict[str, Any]:
    """Which late pulses were the machine's. ``pulses``: (commanded open, commanded close,
    width error) in seconds, on the stalls' time base.

    A pulse is judged at the edge that made its width wrong (the close of a long pulse, the
    open of a short one): *stalled* when the clock saw the thread not running there
    (:attr:`Stall.machine`: a stall while spinning toward that edge, or a wake-up after
    its time that the thread spent off the CPU); *woken late* when the event loop woke
    that edge's sleep late while the thread was busy (another callback held the loop);
    *called late* when the engine reached that edge's sleep after its time (what ran
    before it was late). The last two are not attributed.

    Returns the late pulses (width error over ``late_s``); how many were stalled (and of
    those, how many had the edge's time inside the stall: late by it directly; the others
    met a stall earlier in the spin and were late after it, the host busy around the
    edge), woken late, called late; and the width error p99 / max of the pulses that are
    not stalled (what is not known to be the machine's counts against the run).
    """
    cause_of = _causes(stalls)
    late = stalled = covered = woke = called = 0
    clean: list[float] = []
    for t_open, t_close, err in pulses:
        cause = cause_of(t_open, t_close, err)
        is_stall = cause is not None and cause.machine
        if not is_stall:
            clean.append(err)
        if abs(err) <= late_s:
            continue
        late += 1
        if cause is None:  # nothing the clock saw: late after its spin returned
            continue
        if cause.machine:
            stalled += 1
            covered += cause.covers_deadline
        elif cause.kind == "wake":
            woke += 1
        else:
            called += 1
    # the percentiles of the engine's pulse_timing (and so of width_err_p99_ms), on the
    # unstalled pulses; None when every pulse met a stall
    unstalled: dict[str, float | None] = {"p99": None, "max": None}
    if clean:
        unstalled = dict(_stats_ms(clean))
    return {
        "late_pulses": late,
        "late_pulses_stalled": stalled,
        "late_pulses_deadline_in_stall": covered,
        "late_pulses_woken_late": woke,
        "late_pulses_called_late": called,
        "unstalled_pulses": len(clean),
        "unstalled_width_err_p99_ms": unstalled["p99"],
        "unstalled_width_err_max_ms": unstalled["max"],
    }


def bench_realtime(cycles: int, trace: Path | None = None) -> list[dict[str, Any]]:
    """Real time, in-process simulator: pulse-width error and end-of-run drift.

    ``trace``: write one CSV row per pulse there (which pulses were late, at which edge)."""
    from aldctl.engine.clock import release_realtime, request_realtime

    status = request_realtime()
    try:
        result, events, _ = _run_once(
            REALTIME_RECIPE, [f"cycles={cycles}"], realtime=True, journal_dir=None
        )
    finally:
        release_realtime()
    return [realtime_figures(result, events, cycles, status.detail, trace)]


def realtime_figures(
    result: Any, events: list[Any], cycles: int, scheduler: str, trace: Path | None = None
) -> dict[str, Any]:
    """The figures of a run of REALTIME_RECIPE (``cycles`` cycles) from its result and
    events. A run that was held says so (``holds``, ``hold_details``, ``pulses_redosed``)
    and its drift is measured from the last resume (``drift_from``); the width and open
    errors are over every pulse the engine closed, the late one that tripped a hold and
    the retried unit's included (a pulse a hold cut short is not among them)."""
    from aldctl.engine.events import DoseStarted, PulseDone, State, StateChanged

    t_main = next(e.t for e in events if isinstance(e, StateChanged) and e.state is State.RUNNING)
    # the end of the recipe (the read-back of the safe state after it is not timed)
    t_end = result.process_s
    planned = cycles * (0.015 + 0.1 + 0.015 + 0.1)
    # Main's anchor is its first pulse's commanded opening (offset 0 of main): the dose
    # was acknowledged at DoseStarted.t, its open error after the command.
    first_ack = next(e.t for e in events if isinstance(e, DoseStarted))
    first_err = next(e.open_error_s for e in events if isinstance(e, PulseDone))
    anchor = first_ack - first_err
    pt = result.pulse_timing
    report = result.host_stalls  # None in virtual time
    records = report.recent if report is not None else ()
    if trace is not None:
        _write_pulse_trace(trace, events, anchor, records)
    held = _holds(events, t_main, cycles)
    if held["holds"]:
        # a hold re-anchors the schedule at its resume and the retried unit re-doses from
        # its start: the drift of the run's time base is measured from the last resume
        t_main, anchor, planned = held.pop("resumed"), held.pop("anchor"), held.pop("planned")
    else:
        for key in ("resumed", "anchor", "planned"):
            held.pop(key)
    return {
        "pulses": pt["pulses"],
        **held,
        "width_err_p50_ms": pt["width_error_ms"]["p50"],
        "width_err_p99_ms": pt["width_error_ms"]["p99"],
        "width_err_max_ms": pt["width_error_ms"]["max"],
        "open_err_p99_ms": pt["open_error_ms"]["p99"],
        # the end of the run against the start of main (the RUNNING state)
        "drift_ms": (t_end - t_main - planned) * 1e3,
        # the same against main's anchor, its first commanded edge
        "drift_from_anchor_ms": (t_end - anchor - planned) * 1e3,
        "scheduler": scheduler,
        # the engine's pulse-width warnings (dose_watch.width_*): a clean run has none
        "width_warnings": sum("delivered pulse width" in w for w in result.warnings),
        # The machine's part (RealClock.stall_report): gaps over 0.05 ms between two
        # clock reads while spinning to a deadline, the thread not running (none in
        # virtual time).
        "stalls": report.stalls if report else 0,
        "stall_longest_ms": round(report.longest_s * 1e3, 4) if report else 0.0,
        "stall_deadlines_covered": report.deadlines_covered if report else 0,
        "late_wakes": report.late_wakes if report else 0,
        "idle_late_wakes": report.idle_late_wakes if report else 0,
        "late_calls": report.late_calls if report else 0,
        **attribute_stalls(pulse_edges(events), records),
        # records older than the clock's history were not matched to pulses
        "stall_records_dropped": report.dropped if report else 0,
    }


PULSE_SLOT_S = 0.015 + 0.1
"""REALTIME_RECIPE's pulses are this far apart (a pulse and its purge)."""


def _holds(events: list[Any], t_main: float, cycles: int) -> dict[str, Any]:
    """What interrupted the timed run: its holds (when, why, how long) and the pulses the
    retried units dosed again. With holds, also where the last stretch of undisturbed
    schedule began (``resumed``: the RUNNING state after the last hold; ``anchor``: the
    first commanded edge after it) and its plan to the end (``planned``), for the drift.

    Without this, a run whose 85 ms overdose tripped the pressure hold printed 301-302
    pulses and a 6 s "drift" as if they were timing figures."""
    from aldctl.engine.events import DoseStarted, PulseDone, State, StateChanged

    holds: list[dict[str, Any]] = []
    resumed = t_main
    for e in events:
        if not isinstance(e, StateChanged) or e.t < t_main:
            continue
        if e.state is State.HELD:
            holds.append({"at_s": round(e.t - t_main, 3), "reason": e.reason, "held_s": None})
        elif e.state is State.RUNNING and holds and holds[-1]["held_s"] is None:
            holds[-1]["held_s"] = round(e.t - t_main - holds[-1]["at_s"], 3)
            resumed = e.t
    after = [e for e in events if isinstance(e, DoseStarted) and e.t >= resumed]
    done = next((e for e in events if isinstance(e, PulseDone) and e.t >= resumed), None)
    anchor = after[0].t - done.open_error_s if after and done is not None else resumed
    planned_pulses = 2 * cycles
    return {
        "pulses_planned": planned_pulses,
        "holds": len(holds),
        "hold_details": holds,
        # doses of a unit a hold cut short are dosed again when it is retried
        "pulses_redosed": sum(isinstance(e, DoseStarted) for e in events if e.t >= t_main)
        - planned_pulses,
        "drift_from": "the last resume after a hold" if holds else "main",
        "resumed": resumed,
        "anchor": anchor,
        "planned": len(after) * PULSE_SLOT_S if holds else 0.0,
    }


def _write_pulse_trace(
    path: Path, events: list[Any], anchor: float, stalls: Sequence[Stall] = ()
) -> None:
    """Per pulse: when it was commanded (from main's first commanded edge), how late the
    engine's timestamps of its opening and closing were, and the width error (their
    difference). A late close with an on-time open is a stall at the close, and so on;
    the longest stall the clock saw while spinning to each edge says whether it was, and
    ``host`` what the clock saw at the edge that made the width wrong (as
    :func:`attribute_stalls`: "stall", "late wake", or nothing)."""
    import csv

    spins = sorted((r for r in stalls if r.kind == "spin"), key=lambda r: r.deadline)
    spin_t = [r.deadline for r in spins]
    cause_of = _causes(stalls)

    def stall_ms(t: float) -> str:
        hit = _at_edge(spin_t, spins, t)
        return f"{hit.length_s * 1e3:.4f}" if hit is not None else ""

    def host(t_open: float, t_close: float, width_err: float) -> str:
        cause = cause_of(t_open, t_close, width_err)
        if cause is None:
            return ""
        if cause.machine:
            return "stall" if cause.kind == "spin" else "idle wake"
        return "late wake" if cause.kind == "wake" else "late call"

    from aldctl.engine.events import DoseStarted, PulseDone

    opened: dict[str, DoseStarted] = {}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "pulse",
                "line",
                "commanded_open_s",
                "duration_ms",
                "open_error_ms",
                "close_error_ms",
                "width_error_ms",
                "open_stall_ms",
                "close_stall_ms",
                "host",
            ]
        )
        n = 0
        for e in events:
            if isinstance(e, DoseStarted):
                opened[e.line] = e
            elif isinstance(e, PulseDone) and not e.hardware and e.line in opened:
                d = opened.pop(e.line)
                n += 1
                commanded = d.t - e.open_error_s
                w.writerow(
                    [
                        n,
                        e.line,
                        f"{commanded - anchor:.6f}",
                        f"{d.duration_s * 1e3:g}",
                        f"{e.open_error_s * 1e3:.4f}",
                        f"{(e.open_error_s + e.width_error_s) * 1e3:.4f}",
                        f"{e.width_error_s * 1e3:.4f}",
                        stall_ms(commanded),
                        stall_ms(commanded + d.duration_s),
                        host(commanded, commanded + d.duration_s, e.width_error_s),
                    ]
                )


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


# ---------------------------------------------------------------------- fault campaign

FAULT_RECIPE = """\
name: fault campaign
description: every phase the campaign injects into, each short (aldctl bench faults)
substrate: {material: Si}
setup:
  - set: {carrier: 20 sccm, substrate: 150 degC}
  - wait_until: {substrate: {within: 2 K, for: 5 s}, timeout: 30 min}
  - purge: 5 s
cycles:
  A:
    - pulse: {TMA: 15 ms}
    - purge: 4 s
    - expose: {dose: {H2O: 20 ms}, hold: 1 s, pump: 4 s}
    - purge: 4 s
    - plasma: {gas: O2, flow: 20 sccm, power: 200 W, time: 3 s, stabilize: 1 s}
    - purge: 4 s
main:
  - cycle: {name: A, repeat: 13}
teardown:
  - purge: 5 s
  - set: {substrate: off, carrier: 10 sccm}
"""

FAULT_TARGETS: dict[str, str | None] = {
    "valve_stuck_closed": "TMA",
    "valve_stuck_open": "TMA",
    "valve_slow": "TMA",
    "mfc_low": "carrier",
    "mfc_stuck": "carrier",
    "heater_runaway": "substrate",
    "thermocouple_break": "substrate",
    "pressure_spike": None,
    "pump_degradation": None,
    "empty_source": "TMA",
    "cold_source": "TMA",
    "gauge_drift": None,
    "qcm_failure": None,
    "plasma_no_ignite": None,
    "plasma_high_reflected": None,
    "comm_timeout": "valves",
    "corrupt_frame": "valves",
    "timing_jitter": "valves",
    "disconnect": "valves",
    "toxic_gas_alarm": None,
    "exhaust_flow_loss": None,
}
"""Each fault kind of sim/faults.py and what it hits in the campaign's recipe (None: the
kind's own default target); tests/reliability/test_faults.py checks none is missing."""

FAULT_VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "pressure_burst": ("pressure_spike", {"torr": 2.0}, {"pressure_interval": 0.1}),
}
"""Campaign rows that are a fault kind with other parameters, on the built-in tool with
other ``safety`` settings: name -> (kind, fault params, safety settings). A 2 Torr burst
peaks ~2.3-2.4 Torr on the gauge, above the 2 Torr hold for ~0.1 s only (0.45 s residence
time): a 1 s poll misses it; the pulse monitor's reads catch it within ~0.7 s of a dose,
and a 0.1 s pressure watch (``safety.pressure_interval``) anywhere."""

FAULT_PHASES = ("setup", "pulse", "purge", "plasma", "exposure", "checkpoint", "teardown")

_DOSE_KINDS = ("valve_stuck_closed", "valve_slow", "empty_source", "cold_source", "gauge_drift")
_BEFORE = (
    "present before the first dose: the per-pulse baselines are learnt from the faulty "
    "doses themselves, so there is no healthy dose to compare with"
)
_AFTER = "no dose after it: the per-pulse diagnostics compare doses, and the doses are over"
NOT_OBSERVABLE: dict[tuple[str, str], str] = {
    **{(k, "setup"): _BEFORE for k in _DOSE_KINDS},
    **{(k, "teardown"): _AFTER for k in _DOSE_KINDS},
    **{
        (
            "pressure_spike",
            p,
        ): "the default 1 Torr burst stays inside every limit (the chamber peaks at ~1.55 "
        "Torr, under the built-in tool's 2 Torr hold) and is pumped away within a few 0.45 s "
        "residence times: nothing the run has to answer, nothing lasting for a later dose "
        "to see"
        # not in an exposure: the chamber is isolated from its pump then, so the burst
        # stays and trips the hold (observable since steps are announced when they begin)
        for p in ("setup", "pulse", "purge", "plasma", "checkpoint", "teardown")
    },
    **{
        (k, "teardown"): "no plasma step after it: the source is never asked to strike again"
        for k in ("plasma_no_ignite", "plasma_high_reflected")
    },
    (
        "timing_jitter",
        "teardown",
    ): "no dose after it: the delivered pulse widths are what shows the valve link's jitter",
}
"""Cells where the fault cannot be seen by anything the engine measures, and why: the table
says so instead of counting them as undetected."""

FAULT_CYCLE = 9
"""The cycle the in-cycle phases are injected into: after the per-pulse diagnostics have
their baselines (``dose_watch``: 2 conditioning + 6 warm-up doses = 8 cycles), with 4
cycles left for a fault to show in the doses after it (2-3 pulses in a row)."""


def _phase_times(events: list[Any]) -> dict[str, float]:
    """When, in process seconds, the campaign's recipe is in each phase (from a clean run):
    a moment inside the step of cycle ``FAULT_CYCLE``, where a fault changes what the step
    does."""
    from aldctl.engine.events import StepStarted, UnitDone

    out: dict[str, float] = {"setup": 60.0}
    cycle = 0
    for e in events:
        if isinstance(e, StepStarted) and e.phase == "main":
            word = e.label.split(" ")[0]
            if word == "pulse":
                cycle += 1
            if cycle != FAULT_CYCLE:
                continue
            if word == "pulse":
                out.setdefault("pulse", e.t + 0.005)
            elif word == "purge" and "pulse" in out:
                out.setdefault("purge", e.t + 1.0)
            elif word == "expose":
                out.setdefault("exposure", e.t + 0.5)
            elif "plasma" in e.label:
                out.setdefault("plasma", e.t + 1.5)
        elif isinstance(e, StepStarted) and e.phase == "teardown":
            out.setdefault("teardown", e.t + 1.0)
        elif isinstance(e, UnitDone) and e.index == FAULT_CYCLE - 1:
            # the commit of that cycle's checkpoint: the unit's last action is done, the
            # journal row is being written
            out.setdefault("checkpoint", e.t)
    return out


def bench_faults(
    kinds: list[str] | None = None,
    phases: list[str] | None = None,
    seed: int = 0,
    cells: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Every fault kind injected at each phase of a run in virtual time, in process,
    through the real engine, journal and simulated drivers: what the run did (detection),
    whether the reactor was safe afterwards, whether the journal has the outcome and reason.
    """
    import dataclasses
    import tempfile

    from aldctl.engine.clock import run_virtual
    from aldctl.engine.events import Alarm, EventBus
    from aldctl.engine.journal import Journal
    from aldctl.session import FaultSpec, RunRequest, execute, new_run, prepare

    kinds = [*FAULT_TARGETS, *FAULT_VARIANTS] if kinds is None else kinds
    phases = list(FAULT_PHASES) if phases is None else phases
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "campaign.yaml"
        path.write_text(FAULT_RECIPE)
        prepared = prepare(path, None, ())
        _, events, _ = _run_once(FAULT_RECIPE, [], realtime=False, journal_dir=None, seed=seed)
        when = _phase_times(events)
        journal = Journal(Path(d) / "journal")
        try:
            if cells is None:
                cells = [(k, p) for k in kinds for p in phases]
            for kind, phase in cells:
                fault, params, safety = FAULT_VARIANTS.get(kind, (kind, {}, {}))
                spec = FaultSpec(fault, FAULT_TARGETS.get(fault), when[phase], params=params)
                prep = prepared
                if safety:
                    tool = prepared.tool.model_copy(
                        update={"safety": prepared.tool.safety.model_copy(update=safety)}
                    )
                    prep = dataclasses.replace(prepared, tool=tool)
                req = RunRequest(prep, realtime=False, seed=seed, faults=(spec,))
                run_id = new_run(journal, req, "fault campaign")
                bus = EventBus()
                alarms: list[str] = []

                def on_event(e: Any, a: list[str] = alarms) -> None:
                    if isinstance(e, Alarm):
                        a.append(e.message)

                bus.listen(on_event)
                reactor: list[Any] = []

                def keep(tool: Any, r: list[Any] = reactor) -> None:
                    r.append(tool.simulation)

                error = ""
                try:
                    result = run_virtual(execute(req, journal, bus=bus, on_tool=keep))
                    outcome, reason = result.outcome, result.reason
                    safe_errors = result.safe_state_errors
                    read_back, not_verified = result.read_back, result.not_verified_safe
                except Exception as exc:  # an internal error is a campaign finding
                    outcome, reason, safe_errors = "internal error", repr(exc), {}
                    read_back, not_verified = "", {}
                    error = repr(exc)
                rec = journal.get(run_id)
                journal_ok = rec.outcome not in ("", "running") and bool(rec.reason)
                check = _reactor_safe(
                    reactor[0] if reactor else None,
                    fault,
                    spec.target,
                    prep.tool,
                    safe_errors,
                    not_verified,
                )
                verdict = _verdict(check, "NOT verified safe" in reason)
                detected = outcome != "complete" or bool(alarms)
                why_not = NOT_OBSERVABLE.get((kind, phase), "")
                rows.append(
                    {
                        "fault": kind,
                        "params": params,
                        "target": spec.target or "",
                        "phase": phase,
                        "at_s": round(spec.at_s, 3),
                        "outcome": outcome,
                        "reason": reason,
                        "alarms": len(alarms),
                        "first_alarm": alarms[0] if alarms else "",
                        "detected": detected,
                        "observable": not why_not,
                        "not_observable_because": why_not,
                        # the engine commanded the safe state and every command of it
                        # took effect (safe_state_errors empty)
                        "engine_safe_state": not check["engine"],
                        "engine_not_safe": check["engine"],
                        # the model, 10 s later: nothing open, lit, on or running away
                        "physically_safe": not check["unsafe"],
                        "unsafe_because": check["unsafe"],
                        "held_by_fault": check["held"],
                        "unsafe_unreported": check["unsaid"],
                        "verdict": verdict,
                        "safe_state_errors": safe_errors,
                        # what the engine read back (after teardown or the abort)
                        "read_back": read_back,
                        "not_verified_safe": not_verified,
                        "journal_complete": journal_ok,
                        "survived": verdict != "UNSAFE" and journal_ok and not error,
                    }
                )
        finally:
            journal.close()
    n_survived = sum(1 for r in rows if r["survived"])
    n_engine = sum(1 for r in rows if r["engine_safe_state"])
    n_physical = sum(1 for r in rows if r["physically_safe"])
    n_held = sum(1 for r in rows if r["verdict"] == "fault-held")
    n_detected = sum(1 for r in rows if r["detected"])
    n_observable = sum(1 for r in rows if r["observable"])
    return {
        "rows": rows,
        "runs": len(rows),
        "survived": n_survived,
        "engine_safe_state": n_engine,
        "physically_safe": n_physical,
        "fault_held_reported": n_held,
        "unsafe": sum(1 for r in rows if not r["survived"]),
        "detected": n_detected,
        "observable": n_observable,
        "detected_of_observable": sum(1 for r in rows if r["detected"] and r["observable"]),
        "internal_errors": sum(r["outcome"] == "internal error" for r in rows),
        "wall_s": time.perf_counter() - t0,
    }


FAULT_HOLDS: dict[str, tuple[str, ...]] = {
    "valve_stuck_open": ("valve", "pressure"),
    "heater_runaway": ("heater",),
    "pressure_spike": ("pressure",),
    "pump_degradation": ("pressure",),
}
"""What each fault kind itself keeps unsafe, whatever the engine commands: a stuck-open
valve (and the chamber pressure its gas holds up), a welded heater output, a leak or a weak
pump holding the pressure up. For the valve and the heater, only the fault's own target."""


def _reactor_safe(
    sim: Any,
    kind: str,
    target: str | None,
    tool: Any,
    safe_state_errors: dict[str, str],
    not_verified: dict[str, str],
) -> dict[str, Any]:
    """What the safe state promises, checked on the model after the run (10 s later, what a
    person would find; heaters again 10 s after that, to see which way they go).

    ``engine``: what the engine commanded that the safe state forbids (a dose valve
    commanded open, RF or ozone on, a heater not at its safe-state setting as configured)
    and the safe-state commands that failed. ``unsafe``: what the reactor physically is
    (a dose valve open, plasma power, the ozone generator on, a heater above its setpoint
    and rising or loop-off and heating, the chamber above its hold limit). ``held``: the
    part of ``unsafe`` the injected fault itself holds (see :data:`FAULT_HOLDS`);
    ``unsaid``: the part of ``unsafe`` the engine's read-back did not name."""
    if sim is None:
        return {"engine": ["no reactor"], "unsafe": ["no reactor"], "held": [], "unsaid": []}
    # through the simulation, so the valve module's watchdog acts at its time on the way
    r = sim.advance_to(sim.reactor.now_ns + 10 * 10**9)
    t10 = r.truth()
    engine: list[str] = [f"{dev}: safe-state command failed" for dev in safe_state_errors]
    engine += [f"valve {ln} commanded open" for ln, c in r.valves_commanded().items() if c]
    unsafe: dict[str, str] = {
        f"valve {ln}": f"valve {ln} open ({pos:.0%})"
        for ln, pos in t10.valve_positions.items()
        if pos > 0.0
    }
    if r.has_plasma:
        rf = r.read_plasma()
        if rf.on:
            engine.append("RF commanded on")
        if rf.forward_w > 0.0:
            unsafe["plasma"] = f"plasma: {rf.forward_w:.0f} W forward"
    if r.has_ozone:
        oz = r.read_ozone()
        if oz.on:
            engine.append("ozone generator commanded on")
            unsafe["ozone"] = "ozone generator on"
    hold = tool.limits.pressure.hold_above or tool.limits.pressure.max
    if t10.pressure_torr > hold:
        unsafe["pressure"] = f"chamber pressure {t10.pressure_torr:.2f} Torr above {hold:g} Torr"
    setpoints = {h: r.read_heater(h).setpoint_c for h in r.heaters}
    t20 = sim.advance_to(r.now_ns + 10 * 10**9).truth()
    off = tool.safety.heaters_on_safe_state == "off"
    over = tool.limits.over_temperature
    for h, sp in setpoints.items():
        if off and sp is not None:
            engine.append(f"heater {h} at {sp:g} degC, not off (heaters_on_safe_state: off)")
        a, b = t10.temperatures_c[h], t20.temperatures_c[h]
        rising = b - a > 0.05
        if (rising and (sp is None or b > sp + 1.0)) or (sp is not None and b > sp + over):
            what = "and rising " if rising else ""
            unsafe[f"heater {h}"] = f"heater {h} {b:.1f} degC {what}with its setpoint " + (
                "off" if sp is None else f"{sp:g} degC"
            )
    holds = FAULT_HOLDS.get(kind, ())
    held = [
        k
        for k in unsafe
        if (k == "pressure" and "pressure" in holds)
        or (k.split(" ")[0] in holds and k.split(" ", 1)[-1] == target)
    ]

    def named(k: str) -> bool:
        if k == "pressure" or k in ("plasma", "ozone"):
            return k in not_verified
        dev = k.split(" ", 1)[1]
        return any(
            k in key or k in why or key == dev or (k.startswith("valve") and key == "valves")
            for key, why in not_verified.items()
        )

    return {
        "engine": engine,
        "unsafe": list(unsafe.values()),
        "held": [unsafe[k] for k in held],
        "unsaid": [unsafe[k] for k in unsafe if not named(k)],
    }


def _verdict(check: dict[str, Any], said_reason: bool) -> str:
    """``safe``: everything the engine commands is safe and the reactor is physically safe
    (a safe-state command that failed on a bad link is allowed when the reactor is safe
    all the same: retried, or closed by the valve module's watchdog; it shows as the
    engine not having reached its safe state); ``fault-held``: unsafe only where the
    injected fault itself holds it (a stuck-open valve, a welded heater output),
    everything the engine commands safe, and the engine said so (not verified safe,
    naming each); ``UNSAFE``: anything else."""
    if any("safe-state command failed" not in e for e in check["engine"]):
        return "UNSAFE"
    if not check["unsafe"]:
        return "safe"
    if len(check["held"]) == len(check["unsafe"]) and not check["unsaid"] and said_reason:
        return "fault-held"
    return "UNSAFE"


def format_fault_table(report: dict[str, Any]) -> str:
    """The campaign as a table: fault x phase -> outcome, and "survived N of M"."""
    rows = report["rows"]
    phases = list(dict.fromkeys(r["phase"] for r in rows))
    kinds = list(dict.fromkeys(r["fault"] for r in rows))
    cell = {(r["fault"], r["phase"]): r for r in rows}

    def mark(r: dict[str, Any]) -> str:
        if r["outcome"] == "internal error":
            return "INTERNAL"
        what = {"aborted": "abort", "failed": "fail", "stopped": "stop"}.get(
            r["outcome"], "ok" if not r["alarms"] else "alarm"
        )
        if r["outcome"] == "complete" and r["alarms"]:
            what = "alarm"
        if r["outcome"] == "complete" and not r["alarms"]:
            what = "-" if r.get("observable", True) else "n/o"
        nv = " NV" if r.get("not_verified_safe") else ""
        if not r["survived"]:
            return what + nv + " UNSAFE"
        return what + nv + (" HELD" if r["verdict"] == "fault-held" else "")

    width = max(len(k) for k in kinds) + 2
    lines = ["fault".ljust(width) + "".join(p[:12].ljust(14) for p in phases)]
    for k in kinds:
        lines.append(
            k.ljust(width)
            + "".join(
                mark(cell[(k, p)]).ljust(14) if (k, p) in cell else "".ljust(14) for p in phases
            )
        )
    lines.append("")
    lines.append(
        "abort/fail: the run ended to the safe state; alarm: the run raised an alarm and went "
        "on; -: not detected (the run completed without an alarm); n/o: not observable in "
        "this phase (reasons below); NV: the engine's read-back of the safe state (after the "
        "abort or teardown) did not verify it safe, and the run's reason says why; HELD: the "
        "reactor is NOT physically safe because the fault itself prevents it (a stuck-open "
        "valve and the pressure its gas holds up, a welded heater output), everything the "
        "engine commands is safe, and the engine said so (NV, naming each); UNSAFE: the engine "
        "left something unsafe commanded (a dose valve open, RF or ozone on, a heater not at "
        "its safe-state setting), or the reactor is unsafe and the engine did not say so, or "
        "the journal lacks the outcome or its reason"
    )
    reasons = dict.fromkeys(
        r["not_observable_because"] for r in rows if r.get("not_observable_because")
    )
    for why in reasons:
        kinds_of = sorted({r["fault"] for r in rows if r.get("not_observable_because") == why})
        lines.append(f"n/o ({', '.join(kinds_of)}): {why}")
    lines.append(
        f"survived {report['survived']} of {report['runs']} (journal complete with its "
        f"reason, and: reactor physically safe, or held unsafe by the fault itself and the "
        f"engine said so); UNSAFE {report['unsafe']}"
    )
    lines.append(
        f"  engine reached its safe state (commanded, every command answered) "
        f"{report['engine_safe_state']} of {report['runs']}; reactor physically safe 10 s "
        f"later (dose valves closed, no plasma, no ozone, no heater running away, pressure "
        f"under the hold limit) {report['physically_safe']} of {report['runs']}; not safe "
        f"because the fault itself prevents it, said by the engine (HELD) "
        f"{report['fault_held_reported']} of {report['runs']}"
    )
    lines.append(
        f"detected {report['detected_of_observable']} of "
        f"{report['observable']} observable ({report['runs'] - report['observable']} not "
        f"observable in their phase); internal "
        f"errors {report['internal_errors']}; {report['wall_s']:.1f} s"
    )
    ended = [r for r in rows if r["outcome"] in ("aborted", "failed")]
    if ended:
        lines.append(
            f"read back after the abort: {sum(1 for r in ended if r.get('read_back') == 'abort')}"
            f" of {len(ended)} aborted runs, verified safe "
            f"{sum(1 for r in ended if r.get('read_back') and not r.get('not_verified_safe'))}"
        )
    return "\n".join(lines)


def bench_startup(repeat: int = 5) -> list[dict[str, Any]]:
    """Wall time of ``aldctl --help`` and ``aldctl --version`` in fresh processes, and of
    importing the heavy parts (what a first `validate` pays)."""
    import statistics
    import subprocess
    import sys

    rows = []
    for label, args in (
        ("aldctl --help", ["-m", "aldctl", "--help"]),
        ("aldctl --version", ["-m", "aldctl", "--version"]),
        ("import aldctl.session", ["-c", "import aldctl.session"]),
        ("python -c pass", ["-c", "pass"]),
    ):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, *args], capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        rows.append(
            {
                "command": label,
                "median_s": statistics.median(times),
                "min_s": min(times),
                "max_s": max(times),
                "runs": repeat,
            }
        )
    return rows
