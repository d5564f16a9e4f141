"""What ``aldctl run``/``resume`` show in a terminal: progress, alarms, Ctrl-C menu, summary.

Ctrl-C does not kill a run. In a terminal it opens a one-line menu while the run goes on:
``p`` pause at the next checkpoint, ``r`` resume, ``s`` stop after this cycle (and run
teardown), ``a`` abort now (safe state), ``c`` carry on. A second Ctrl-C aborts. Without a
terminal (scripts, CI) Ctrl-C aborts at once. SIGTERM, SIGHUP (the SSH session dropped),
SIGQUIT and every other signal whose default would end the process abort the run to the
safe state instead; after SIGHUP the terminal is gone and nothing more is printed to it.
Every path ends in the safe state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import time
import tty
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from aldctl.engine.events import Alarm, Event, StateChanged, StepStarted, UnitDone
from aldctl.engine.opapi import OperatorApi
from aldctl.engine.runner import RunResult, after_words
from aldctl.units import format_duration

ABORT_SIGNALS = tuple(
    getattr(signal, name)
    for name in (
        "SIGTERM",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGXCPU",
        "SIGVTALRM",
        "SIGPROF",
        "SIGPWR",
        "SIGIO",
    )
    if hasattr(signal, name)
)
"""Catchable signals whose default action ends the process: each aborts to the safe state."""

MENU = "Ctrl-C, one key: p pause | r resume | s stop after cycle | a abort | c go on"
MENU_SHORT = "p pause r resume s stop a abort c carry on"


class ProgressView:
    def __init__(
        self, console: Console, total_units: int, planned_s: float, start_unit: int, realtime: bool
    ) -> None:
        self.console = console
        self.total = total_units
        self.planned = planned_s
        self.realtime = realtime
        self.wall0 = time.perf_counter()
        self.progress = Progress(
            TextColumn("[bold]{task.fields[state]:<9}"),
            BarColumn(bar_width=30),
            TextColumn("unit {task.completed}/{task.total}"),
            TextColumn("{task.fields[step]}"),
            TextColumn("[dim]{task.fields[eta]}"),
            TextColumn("[bold reverse]{task.fields[prompt]}"),
            console=console,
            transient=False,
            refresh_per_second=8,
        )
        self.task = self.progress.add_task(
            "run",
            total=total_units,
            completed=start_unit,
            state="starting",
            step="",
            eta="",
            prompt="",
        )
        self.process_t = 0.0

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def prompt(self, text: str) -> None:
        """A line the progress bar keeps showing (the key menu) until it is answered."""
        self.progress.update(self.task, prompt=text)

    def _eta(self, t: float) -> str:
        remaining = max(0.0, self.planned - t)
        wall = time.perf_counter() - self.wall0
        if self.realtime or t <= 0:
            return f"ETA {format_duration(remaining)}"
        rate = wall / t
        return f"ETA {format_duration(remaining)} process, {format_duration(remaining * rate)} wall"

    def listener(self, ev: Event) -> None:
        if isinstance(ev, UnitDone):
            self.process_t = ev.t
            self.progress.update(self.task, completed=ev.index + 1, eta=self._eta(ev.t))
        elif isinstance(ev, StepStarted):
            self.progress.update(self.task, step=ev.label[:40])
        elif isinstance(ev, StateChanged):
            self.progress.update(self.task, state=str(ev.state))
            if ev.reason and ev.state.value in ("held", "paused", "aborting", "stopping"):
                self.progress.console.print(f"[yellow]{ev.state}: {ev.reason}")
        elif isinstance(ev, Alarm):
            color = "red" if ev.severity in ("abort", "alarm") else "yellow"
            self.progress.console.print(f"[{color}]{ev.severity}: {ev.source}: {ev.message}")


class Keys:
    """The key menu and signal handling inside the running loop.

    Ctrl-C opens a one-line menu, printed above the progress bar and kept in its state
    column until answered; one keypress answers it (no Enter: the terminal is in cbreak
    mode while the menu is open). The verbs go through the run's operator API, the same
    one the console and MQTT use.
    """

    def __init__(self, api: OperatorApi | None, console: Console, interactive: bool) -> None:
        self.api = api
        self.console = console
        self.interactive = interactive
        self.menu_open = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.view: ProgressView | None = None
        self._tty: list[Any] | None = None

    def install(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.add_signal_handler(signal.SIGINT, self._sigint)
        for sig in ABORT_SIGNALS:
            self.loop.add_signal_handler(sig, self._abort_signal, sig)
        # A full disk on a file-size limit must fail the write (and abort), not kill us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def remove(self) -> None:
        if self.loop is None:
            return
        self.loop.remove_signal_handler(signal.SIGINT)
        for sig in ABORT_SIGNALS:
            self.loop.remove_signal_handler(sig)
        if self.menu_open:
            self._close_menu()

    def _do(self, verb: str, **args: Any) -> None:
        if self.api is None:
            return
        reply = self.api.handle({"cmd": verb, **args}, may_command=True, who="terminal")
        msg = reply["result"] if reply["ok"] else reply["error"]
        with contextlib.suppress(OSError):  # a terminal that went away
            self.console.print(str(msg), style="cyan" if reply["ok"] else "yellow", markup=False)

    def _abort_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if sig == signal.SIGHUP:
            # The terminal hung up: writing to it would fail (or block); go quiet.
            self.console.quiet = True
            self.interactive = False
            if self.menu_open:
                self._close_menu()
        self._do("abort", reason=f"{name} received")

    def _sigint(self) -> None:
        if not self.interactive or self.menu_open:
            if self.menu_open:
                self._close_menu()
            self._do("abort", reason="Ctrl-C")
            return
        self.menu_open = True
        with contextlib.suppress(OSError):
            self.console.print(MENU, style="bold reverse", markup=False)
        if self.view is not None:
            self.view.prompt(MENU_SHORT)
        assert self.loop is not None
        fd = sys.stdin.fileno()
        with contextlib.suppress(termios.error, OSError):
            self._tty = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        self.loop.add_reader(fd, self._key)

    def _close_menu(self) -> None:
        fd = sys.stdin.fileno()
        assert self.loop is not None
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(fd)
        if self._tty is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(fd, termios.TCSADRAIN, self._tty)
            self._tty = None
        self.menu_open = False
        if self.view is not None:
            self.view.prompt("")

    def _key(self) -> None:
        try:
            key = os.read(sys.stdin.fileno(), 1).decode(errors="replace").lower()
        except OSError:
            key = ""
        self._close_menu()
        verbs = {"p": "pause", "r": "resume", "s": "stop", "a": "abort"}
        if key in verbs:
            if key == "a":
                self._do("abort", reason="operator abort (Ctrl-C menu)")
            else:
                self._do(verbs[key])


def interactive_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def summary_json(run_id: str | None, result: RunResult) -> dict[str, Any]:
    sim = result.simulation or {}
    out: dict[str, Any] = {
        "run_id": run_id,
        "outcome": result.outcome,
        "reason": result.reason,
        "cycles_completed": result.cycles_completed,
        "units_done": result.units_done,
        "units_total": result.units_total,
        "process_time_s": round(result.process_s, 6),
        "wall_time_s": round(result.wall_s, 4),
        "session": {"units": result.session_units, "cycles": result.session_cycles},
        "pulse_timing": result.pulse_timing,
        "warnings": result.warnings,
        "safe_state_errors": result.safe_state_errors,
        "not_verified_safe": result.not_verified_safe,
        "read_back": result.read_back or None,
        "verified_safe": (not result.not_verified_safe) if result.read_back else None,
        "events_dropped": result.events_dropped,
        "paused_s": round(result.paused_s, 3),
        "held_s": round(result.held_s, 3),
        "journal_error": result.journal_error,
    }
    if result.host_stalls is not None:
        out["host_stalls"] = result.host_stalls.summary()
    if result.simulation is not None:
        out["thickness_nm"] = sim.get("thickness_nm")
        out["simulation"] = sim
    return out


def host_stalls_line(d: dict[str, Any]) -> str | None:
    """One line on the machine's stalls at valve edges (a run's ``host_stalls`` summary),
    None when there were none."""
    n, wakes = d.get("stalls", 0), d.get("late_wakes", 0)
    if not n and not wakes:
        return None
    covered = d.get("deadlines_covered", 0)
    inside = (
        "no valve edge fell inside one"
        if not covered
        else f"{covered} valve edge{'s' if covered > 1 else ''} fell inside one, late by "
        "the rest of it"
    )
    text = (
        f"host stalls: {n} times the engine's thread did not run for over "
        f"{d.get('threshold_ms', 0.05):g} ms while it waited for a valve edge (longest "
        f"{d.get('longest_ms', 0.0):.3f} ms; {inside}): the machine's, not the engine's "
        "(docs/benchmarks.md, Host stalls)"
    )
    if wakes:
        idle = d.get("idle_late_wakes", 0)
        text += (
            f"; {wakes} wake-ups after an edge's time (longest "
            f"{d.get('longest_late_wake_ms', 0.0):.3f} ms late; {idle} with the thread off "
            "the CPU: the machine's; the others with the event loop busy)"
        )
    return text


def print_summary(
    console: Console, run_id: str | None, result: RunResult, realtime: bool = True
) -> None:
    color = {"complete": "green", "stopped": "yellow"}.get(result.outcome, "red")
    console.print(f"[bold {color}]{result.outcome}[/]: {result.reason}")
    console.print(
        f"run {run_id}: {result.cycles_completed} cycles ({result.units_done}/"
        f"{result.units_total} units) in {format_duration(result.process_s)} process time, "
        f"{format_duration(result.wall_s)} wall"
    )
    if result.session_units != result.units_done:
        console.print(
            f"  of which this session (a resume): {result.session_cycles} cycles, "
            f"{result.session_units} units"
        )
    pt = result.pulse_timing
    if pt.get("hardware_timed"):
        console.print(
            f"{pt['hardware_timed']} of {pt['pulses']} pulses timed by the valve "
            f"module; command latency p99 {pt['open_error_ms']['p99']:.3f} ms"
        )
    elif pt.get("pulses") and realtime:
        console.print(
            f"pulse width error: p50 {pt['width_error_ms']['p50']:.3f} ms, "
            f"p99 {pt['width_error_ms']['p99']:.3f} ms, "
            f"max {pt['width_error_ms']['max']:.3f} ms over {pt['pulses']} pulses"
        )
    elif pt.get("pulses"):
        console.print(f"{pt['pulses']} pulses, timed exactly (virtual time)")
    if result.host_stalls is not None:
        line = host_stalls_line(result.host_stalls.summary())
        if line:
            console.print(line, style="yellow", markup=False)
    if result.simulation is not None:
        sim = result.simulation
        line = f"simulated thickness {sim.get('thickness_nm', 0.0):.2f} nm"
        if result.cycles_completed:
            gpc = sim.get("thickness_nm", 0.0) * 10 / result.cycles_completed
            line += f", {gpc:.3f} A per cycle"
        comp = sim.get("composition") or {}
        if comp and len(comp) > 1:
            line += " (" + ", ".join(f"{k} {v:.1%}" for k, v in comp.items()) + ")"
        console.print(line)
        ch = sim.get("chamber")
        if ch:
            console.print(
                f"  (the substrate's, at {ch['substrate_at']:g} of the chamber's length; "
                f"{ch['cells']} cells: inlet {ch['thickness_nm'][0]:.2f} nm, outlet "
                f"{ch['thickness_nm'][-1]:.2f} nm)"
            )
    for w in result.warnings:
        console.print(f"[yellow]warning: {w}")
    for dev, err in result.safe_state_errors.items():
        console.print(f"[red]safe state incomplete: {dev}: {err}")
    after = after_words(result.read_back)
    for dev, what in result.not_verified_safe.items():
        console.print(f"not verified safe {after}: {dev}: {what}", style="red", markup=False)
    if result.read_back == "abort" and not result.not_verified_safe:
        console.print("safe state read back after the abort: verified safe", style="green")
    if result.journal_error is not None:
        console.print(f"[red]journal: {result.journal_error}")
