"""``aldctl bench telemetry``: what fleet telemetry costs, measured as ratios in one go.

N simulated tools run the same short real-time recipe at once, twice: without telemetry,
then publishing every stream and their channels every ``interval`` (50 Hz by default) to
one broker, while a subscriber in this process takes everything. Reported: messages per
second delivered, end-to-end latency (the event's wall time to its arrival here) p50/p99,
and the pulse-timing p99 of the runs (their own ``--json`` summaries) with telemetry on
and off, with the ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

RECIPE = """\
name: telemetry bench film
params:
  cycles: 12
setup:
  - set: {carrier: 20 sccm}
cycles:
  A:
    - pulse: {TMA: 15 ms}
    - purge: 0.3 s
    - pulse: {H2O: 30 ms}
    - purge: 0.3 s
main:
  - cycle: {name: A, repeat: $cycles}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _mosquitto(root: Path) -> Any:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        from aldctl.diagnostics import UserError

        raise UserError("no broker: give --broker URL, or install mosquitto")
    port = _free_port()
    # Nagle off toward subscribers: small messages go out at once (default: batched, up
    # to ~40 ms behind a delayed ACK). README, "Fleet telemetry", says the same to labs.
    conf = [f"listener {port} 127.0.0.1", "allow_anonymous true", "set_tcp_nodelay true"]
    if os.getuid() == 0:
        conf.append(f"user {pwd.getpwuid(0).pw_name}")
    (root / "m.conf").write_text("\n".join(conf) + "\n")
    proc = subprocess.Popen(
        [exe, "-c", str(root / "m.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    v = sorted(xs)
    return v[min(len(v) - 1, int(len(v) * q))]


async def _runs(
    root: Path, url: str | None, tools: int, cycles: int, interval_s: float
) -> tuple[list[dict[str, Any]], float]:
    from aldctl.config import builtin_text

    recipe = root / "bench.yaml"
    recipe.write_text(RECIPE)
    procs = []
    t0 = time.monotonic()
    for i in range(tools):
        doc = yaml.safe_load(builtin_text())
        doc["name"] = f"bench-{i}"
        if url is not None:
            doc["telemetry"] = {"broker": url, "sample_interval": f"{interval_s} s"}
        cfg = root / f"tool{i}-{'on' if url else 'off'}.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        args = ["run", str(recipe), "--config", str(cfg), "--realtime", "--json"]
        args += ["--set", f"cycles={cycles}", "--data-dir", str(root / "data")]
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "aldctl",
                *args,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        )
    outs = [json.loads((await p.communicate())[0]) for p in procs]
    return outs, time.monotonic() - t0


def _errors(data: Path, outs: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """(open errors, width errors) in ms of every pulse of these runs, from the journal."""
    from aldctl.engine.journal import Journal

    opens: list[float] = []
    widths: list[float] = []
    j = Journal(data, readonly=True)
    try:
        for o in outs:
            for p in j.pulses(o["run_id"]):
                opens.append(abs(p.achieved_open - p.commanded_open) * 1e3)
                width = (p.achieved_close - p.achieved_open) - (
                    p.commanded_close - p.commanded_open
                )
                widths.append(abs(width) * 1e3)
    finally:
        j.close()
    return opens, widths


async def _measure(
    broker_url: str, root: Path, tools: int, cycles: int, interval_s: float, rounds: int
) -> dict[str, Any]:
    from aldctl.front.telemetry.broker import Messages, connect_info

    latencies: list[float] = []
    count = 0
    stop = asyncio.Event()
    ready = asyncio.Event()

    async def subscribe() -> None:
        nonlocal count
        async with connect_info(broker_url).client(identifier="aldctl-bench") as client:
            for s in ("telemetry", "event", "pulse", "alarm"):
                await client.subscribe(f"ald/+/{s}", qos=1)
            ready.set()
            messages = Messages(client)
            try:
                while not stop.is_set():
                    m = await messages.get(0.2)
                    if m is None:
                        continue
                    now = time.time()
                    payload = m.payload if isinstance(m.payload, bytes) else b""
                    latencies.append((now - json.loads(payload)["wall"]) * 1e3)
                    count += 1
            finally:
                await messages.close()

    sub = asyncio.create_task(subscribe())
    await asyncio.wait_for(ready.wait(), 10)
    # Off and on alternate, so that the machine's other load falls on both alike.
    off: list[dict[str, Any]] = []
    on: list[dict[str, Any]] = []
    span = 0.0
    for _ in range(rounds):
        off += (await _runs(root, None, tools, cycles, interval_s))[0]
        outs, wall = await _runs(root, broker_url, tools, cycles, interval_s)
        on += outs
        span += wall
    await asyncio.sleep(0.5)
    stop.set()
    await sub
    o_off, w_off = _errors(root / "data", off)
    o_on, w_on = _errors(root / "data", on)
    t_off = {"open_p99_ms": _pct(o_off, 0.99), "width_p99_ms": _pct(w_off, 0.99)}
    t_on = {"open_p99_ms": _pct(o_on, 0.99), "width_p99_ms": _pct(w_on, 0.99)}
    return {
        "rounds": rounds,
        "pulses_off": len(w_off),
        "pulses_on": len(w_on),
        "tools": tools,
        "rate_hz": round(1 / interval_s, 1),
        "messages": count,
        "msgs_per_s": round(count / span, 1) if span else 0.0,
        "latency_p50_ms": round(_pct(latencies, 0.5), 2),
        "latency_p99_ms": round(_pct(latencies, 0.99), 2),
        "open_p99_ms_off": round(t_off["open_p99_ms"], 3),
        "open_p99_ms_on": round(t_on["open_p99_ms"], 3),
        "width_p99_ms_off": round(t_off["width_p99_ms"], 3),
        "width_p99_ms_on": round(t_on["width_p99_ms"], 3),
        "width_p99_ratio": round(t_on["width_p99_ms"] / max(t_off["width_p99_ms"], 1e-9), 2),
        "open_p99_ratio": round(t_on["open_p99_ms"] / max(t_off["open_p99_ms"], 1e-9), 2),
    }


def bench_telemetry(
    broker: str | None = None,
    tools: int = 3,
    cycles: int = 30,
    rate_hz: float = 50.0,
    rounds: int = 2,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aldctl-bench-") as tmp:
        root = Path(tmp)
        with contextlib.ExitStack() as stack:
            url = broker or stack.enter_context(_mosquitto(root))
            return asyncio.run(_measure(url, root, tools, cycles, 1.0 / rate_hz, rounds))
