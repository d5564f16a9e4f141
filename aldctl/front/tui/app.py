"""The operator console: a Textual app that watches and commands run processes.

The console never owns a run. It starts runs as detached processes (``aldctl run
--detach``), or attaches to one already running on this host, through the run's operator API
(:mod:`aldctl.engine.opapi`). Closing it, an SSH drop or ``kill -9`` of it never touches the
run; a new console attaches and shows the current state, the recent history (from the
journal) and what is live.

Screen (usable at 80x24): the tool as a gas-flow synoptic, the run panel, live plots
(chamber pressure with the dose peaks, substrate temperature, QCM), alarms and the event
log; key bindings in the footer. Nothing blocks the UI: the socket is read by a worker and
the journal is read once, read-only, on attach.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    DirectoryTree,
    Footer,
    Header,
    Input,
    Label,
    RichLog,
    Sparkline,
    Static,
    TabbedContent,
    TabPane,
)

from aldctl.engine.opapi import ApiClient, socket_path
from aldctl.units import format_duration

HISTORY_EVENTS = 200
"""Events of the run read from the journal on attach."""
PLOT_POINTS = 240


# The states in which the engine may hold a dose valve open.
DOSING_STATES = ("running", "starting", "pausing", "stopping")


@dataclass
class ToolView:
    """What the synoptic draws: the tool as configured (names, lines, heaters, flows)."""

    name: str
    lines: dict[str, str] = field(default_factory=dict)
    """Line -> chemical."""
    heaters: list[str] = field(default_factory=list)
    flows: list[str] = field(default_factory=list)
    plasma: bool = False
    ozone: bool = False
    qcm: bool = False
    pump: bool = True

    @classmethod
    def from_config(cls, tool: Any) -> ToolView:
        return cls(
            name=tool.name,
            lines={n: ln.chemical for n, ln in tool.lines.items()},
            heaters=list(tool.temperature_channels()),
            flows=list(tool.flows),
            plasma=tool.plasma is not None,
            ozone=tool.ozone is not None,
            qcm=tool.qcm is not None,
            pump=tool.pump_isolation is not None,
        )


def synoptic(tool: ToolView | None, status: dict[str, Any]) -> Text:
    """The gas-flow diagram, as text: carrier -> manifold with every line -> chamber -> pump."""
    v: dict[str, Any] = status.get("values", {})
    dosing = set(status.get("dosing", []))
    unclosed = set(status.get("unclosed", []))
    lines = tool.lines if tool is not None else dict(status.get("lines", {}))
    t = Text()

    def num(key: str, fmt: str = "{:.1f}") -> str:
        x = v.get(key)
        return "--" if x is None else fmt.format(x)

    t.append("carrier ", style="bold")
    t.append(f"N2 {num('F.carrier')}/{num('SP.F.carrier')} sccm\n")
    names = list(lines)
    for i, name in enumerate(names):
        chem = lines[name]
        elbow = "└" if i == len(names) - 1 else "├"
        on_ = name in dosing
        t.append(f"  {elbow}─")
        if name in unclosed:
            # not known closed (a close that failed, a read-back that found it open):
            # never drawn closed, whatever the state
            t.append("[?]", style="bold white on red")
            t.append(f" {chem:<8}", style="bold red")
        else:
            t.append("[■]" if on_ else "[ ]", style="bold black on green" if on_ else "dim")
            t.append(f" {chem:<8}", style="bold green" if on_ else "")
        src = v.get(f"T.source.{name}")
        if src is not None:
            t.append(f" src {src:.0f}°C", style="dim")
        line_t = v.get(f"T.line.{name}")
        if line_t is not None:
            t.append(f" line {line_t:.0f}°C", style="dim")
        t.append("\n")
    p = v.get("pressure")
    t.append("  ▼ chamber ", style="bold")
    t.append("-- Torr" if p is None else f"{p:.3g} Torr", style="bold cyan")
    t.append("\n")
    t.append(f"    substrate {num('T.substrate')}°C walls {num('T.walls', '{:.0f}')}°C\n")
    extras = []
    if tool is None or tool.plasma:
        fw = v.get("rf.forward")
        extras.append(f"RF {fw:.0f} W" if fw else "RF off")
    if v.get("qcm") is not None:
        extras.append(f"QCM {v['qcm']:.1f} Å")
    if tool is not None and tool.ozone:
        extras.append("O3 gen")
    if extras:
        t.append("    " + "  ".join(extras) + "\n")
    if tool is None or tool.pump:
        t.append("  ▼ pump\n", style="dim")
    return t


def run_panel(status: dict[str, Any], wall_rate: float | None) -> Text:
    t = Text()
    state = status.get("state", "idle")
    color = {
        "running": "green",
        "complete": "green",
        "paused": "yellow",
        "pausing": "yellow",
        "held": "yellow",
        "stopping": "yellow",
        "aborting": "red",
        "aborted": "red",
        "faulted": "red",
    }.get(state, "white")
    t.append(f"{state.upper()} ", style=f"bold {color}")
    if status.get("reason"):
        t.append(f" {status['reason']}"[:60], style="dim")
    t.append("\n")
    t.append(f"{status.get('recipe', '')}\n", style="bold")
    total = status.get("units_total", 0)
    done = status.get("units_done", 0)
    cyc = status.get("cycle") or status.get("label") or ""
    rep = status.get("rep", 0)
    passes = status.get("passes", 1)
    t.append(f"unit {done}/{total}")
    if cyc:
        t.append(f" · {cyc}")
        if passes > 1:  # the loop's pass: the supercycle position for supercycles
            t.append(f", pass {rep}/{passes}")
    t.append("\n")
    if total:
        width = 24
        fill = round(width * done / total)
        t.append("█" * fill + "░" * (width - fill) + f" {100 * done / total:.0f}%\n")
    step = status.get("step", "")
    if step:
        left = status.get("step_left_s")
        t.append(f"step: {step}" + (f" ({left:.1f} s left)" if left is not None else "") + "\n")
    eta = status.get("eta_process_s")
    if eta is not None and state not in ("complete", "aborted", "stopped", "faulted"):
        line = f"ETA {format_duration(eta)} process"
        if wall_rate is not None:
            line += f", {format_duration(eta * wall_rate)} wall"
        t.append(line + "\n")
    if status.get("expected_nm"):
        qcm = status.get("values", {}).get("qcm")
        now = f"{qcm / 10:.1f} nm (QCM) of " if qcm is not None else ""
        t.append(f"film {now}{status['expected_nm']:.1f} nm expected\n")
    t.rstrip()
    t.append("\n")
    return t


class Confirm(ModalScreen[bool]):
    """Asks before an irreversible command (abort)."""

    BINDINGS: ClassVar = [Binding("y", "yes", "Yes"), Binding("n,escape", "no", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", id="no")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed)
    def _pressed(self, ev: Button.Pressed) -> None:
        self.dismiss(ev.button.id == "yes")


class OpenRecipe(ModalScreen[Path | None]):
    """A file picker for recipes."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Open a recipe (Enter on a .yaml file, Esc to cancel)")
            yield DirectoryTree(str(self.root), id="tree")

    @on(DirectoryTree.FileSelected)
    def _chosen(self, ev: DirectoryTree.FileSelected) -> None:
        if ev.path.suffix in (".yaml", ".yml"):
            self.dismiss(Path(ev.path))

    def action_cancel(self) -> None:
        self.dismiss(None)


class Console(App[None]):
    """``aldctl tui``: start, attach to and command runs."""

    TITLE = "aldctl"
    CSS = """
    Screen { layout: vertical; }
    #top { height: auto; max-height: 12; }
    #synoptic { width: 1fr; border: round $accent; padding: 0 1; height: auto; }
    #run { width: 1fr; border: round $accent; padding: 0 1; height: auto; }
    #plots { height: auto; border: round $accent; padding: 0 1; }
    .plot-label { height: 1; color: $text-muted; }
    Sparkline { height: 1; }
    #bottom { height: 1fr; min-height: 5; }
    #log { height: 1fr; }
    #alarms { height: 1fr; }
    #filter, #setpoint { height: 3; display: none; }
    #filter.shown, #setpoint.shown { display: block; }
    #plan { height: 1fr; }
    #dialog { width: 70; height: auto; max-height: 20; border: thick $accent; padding: 1;
              background: $surface; }
    Confirm, OpenRecipe { align: center middle; }
    DirectoryTree { height: 14; }
    """
    BINDINGS: ClassVar = [
        Binding("o", "open", "Open"),
        Binding("g", "start", "Start"),
        Binding("p", "pause", "Pause"),
        Binding("r", "resume", "Resume"),
        Binding("s", "stop", "Stop"),
        Binding("a", "abort", "Abort"),
        Binding("c", "clear", "Clear"),
        Binding("k", "ack", "Ack"),
        Binding("m", "manual", "Manual"),
        Binding("e", "setpoint", "Set", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("q", "quit", "Quit"),
        *(Binding(str(i), f"valve({i})", f"valve {i}", show=False) for i in range(1, 10)),
    ]

    def __init__(
        self,
        *,
        data_dir: Path,
        recipe: Path | None = None,
        config: Path | None = None,
        sets: tuple[str, ...] = (),
        attach: str | None = None,
        recipes_root: Path | None = None,
        light: bool = False,
        realtime: bool = False,
    ) -> None:
        super().__init__()
        if light:
            self.theme = "textual-light"
        self.data_dir = data_dir
        self.recipe = recipe
        self.config = config
        self.sets = sets
        self.attach_to = attach
        self.realtime = realtime
        """Start runs on the wall clock (a simulated tool otherwise runs in virtual time)."""
        self.recipes_root = recipes_root or Path.cwd()
        self.client: ApiClient | None = None
        self.run_id: str | None = None
        self.status: dict[str, Any] = {"state": "idle"}
        self.tool: ToolView | None = None
        self.may_command = False
        self.pressure: deque[float] = deque(maxlen=PLOT_POINTS)
        self.substrate: deque[float] = deque(maxlen=PLOT_POINTS)
        self.qcm: deque[float] = deque(maxlen=PLOT_POINTS)
        """QCM growth per cycle, Å: the reading's increase from one unit's end to the next."""
        self._qcm_last: float | None = None
        self.log_lines: list[str] = []
        self.log_filter = ""
        self.wall0: tuple[float, float] | None = None
        self.notice = ""
        self.manual_open: set[str] = set()
        self._exiting = False
        self._dirty = False

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="top"):
            yield Static(id="synoptic")
            yield Static(id="run")
        with Vertical(id="plots"):
            yield Label("chamber pressure (Torr), last cycles", classes="plot-label", id="pl")
            yield Sparkline([], id="p-plot")
            yield Label("substrate °C", classes="plot-label", id="tl")
            yield Sparkline([], id="t-plot")
            yield Label("QCM Å per cycle", classes="plot-label", id="ql")
            yield Sparkline([], id="q-plot")
        with TabbedContent(id="bottom"):
            with TabPane("Log", id="tab-log"):
                yield Input(placeholder="filter the log (Enter)", id="filter")
                yield Input(
                    placeholder="manual set, e.g. temperature:substrate 150 degC (Enter)",
                    id="setpoint",
                )
                yield RichLog(id="log", markup=True, wrap=False, max_lines=2000)
            with TabPane("Alarms", id="tab-alarms"):
                yield RichLog(id="alarms", markup=True, wrap=True, max_lines=500)
            with TabPane("Plan", id="tab-plan"), VerticalScroll(id="plan"):
                yield Static(id="plan-text")
        yield Footer()

    async def on_mount(self) -> None:
        self.refresh_panels()
        if self.attach_to is not None:
            await self.attach(self.attach_to)
        elif self.recipe is not None:
            self.load_recipe(self.recipe)
        else:
            from aldctl.engine.opapi import live_runs

            live = live_runs(self.data_dir)
            if live:
                await self.attach(live[-1].stem)
            else:
                self.log_line("no run on this host: o to open a recipe, g to start it")
        self.set_interval(1.0, self.poll_status)
        self.set_interval(0.1, self._redraw_if_dirty)

    # ------------------------------------------------------------------ helpers

    def _w(self, selector: Any, kind: Any = None) -> Any:
        """A widget of the main screen (a dialog may be on top of it)."""
        base = self.screen_stack[0] if self.screen_stack else self.screen
        return base.query_one(selector) if kind is None else base.query_one(selector, kind)

    def stamp(self) -> str:
        """Wall-clock time for the log (tests pin it)."""
        return time.strftime("%H:%M:%S")

    def log_line(self, text: str, style: str = "") -> None:
        if not self.is_running:
            return
        stamp = self.stamp()
        line = f"[dim]{stamp}[/] " + (f"[{style}]{escape(text)}[/]" if style else escape(text))
        self.log_lines.append(line)
        if not self.log_filter or self.log_filter.lower() in text.lower():
            self._w("#log", RichLog).write(line)

    def refresh_panels(self) -> None:
        if not self.is_running or self._exiting:
            return
        rate = None
        if self.wall0 is not None and self.status.get("t", 0) > self.wall0[1]:
            dt_wall = time.monotonic() - self.wall0[0]
            rate = dt_wall / (self.status["t"] - self.wall0[1])
        shown = dict(self.status)
        if self.manual_open:
            shown["dosing"] = sorted(set(shown.get("dosing", [])) | self.manual_open)
        if shown.get("state", "running") not in DOSING_STATES:
            # Whatever order the events, polls and the run's record arrived in: a run that
            # has left the states that dose is never drawn with a dose valve open.
            shown["dosing"] = []
        self._w("#synoptic", Static).update(synoptic(self.tool, shown))
        panel = Text()
        if self.run_id:
            panel.append(f"run {self.run_id}", style="dim")
            if not self.may_command and self.client is not None:
                panel.append(" (read-only)", style="yellow")
            panel.append("\n")
        panel.append_text(run_panel(self.status, rate))
        if self.notice:
            panel.append(self.notice, style="yellow")
        self._w("#run", Static).update(panel)
        if self.pressure:
            self._w("#p-plot", Sparkline).data = list(self.pressure)
            lo, hi = min(self.pressure), max(self.pressure)
            self._w("#pl", Label).update(
                f"chamber pressure {lo:.3g}-{hi:.3g} Torr, last {len(self.pressure)} readings"
            )
        if self.substrate:
            self._w("#t-plot", Sparkline).data = list(self.substrate)
            self._w("#tl", Label).update(f"substrate {self.substrate[-1]:.1f} °C")
        if self.qcm:
            self._w("#q-plot", Sparkline).data = list(self.qcm)
            mean = sum(self.qcm) / len(self.qcm)
            self._w("#ql", Label).update(f"QCM growth per cycle, mean {mean:.2f} Å")
        self.sub_title = f"{self.status.get('recipe', '')} {self.status.get('state', '')}"

    # ------------------------------------------------------------------ recipes

    def load_recipe(self, path: Path) -> None:
        from aldctl.diagnostics import UserError
        from aldctl.session import prepare

        self.recipe = path
        plan = self._w("#plan-text", Static)
        try:
            prepared = prepare(path, self.config, self.sets)
        except UserError as exc:
            text = "\n".join(d.format() for d in exc.diagnostics)
            plan.update(Text(f"{path}: invalid\n{text}", style="red"))
            self.log_line(f"{path}: {len(exc.diagnostics)} problem(s), see Plan", "red")
            self._w(TabbedContent).active = "tab-plan"
            return
        import io

        from rich.console import Console as RichConsole

        from aldctl.front.render import render_plan
        from aldctl.recipe.plan import plan as make_plan

        result = make_plan(prepared.compiled.schedule, prepared.tool)
        con = RichConsole(file=io.StringIO(), width=100, record=True, color_system=None)
        render_plan(result, con)
        body = con.export_text()
        warn = "\n".join(d.format() for d in [*prepared.warnings, *result.warnings])
        plan.update(Text(body + ("\n" + warn if warn else "")))
        self.tool = ToolView.from_config(prepared.tool)
        sched = prepared.compiled.schedule
        self.status = {
            "state": "idle",
            "recipe": sched.recipe,
            "units_total": sched.units,
            "eta_process_s": result.duration_s,
            "step": "",
            "values": {},
        }
        self.log_line(f"loaded {path}: valid, {sched.units} units; g to start it")
        self._w(TabbedContent).active = "tab-plan"
        self.refresh_panels()

    # ------------------------------------------------------------------ attaching

    async def attach(self, run_id: str) -> None:
        from aldctl.engine.journal import Journal, JournalError

        def read() -> tuple[Any, list[Any]]:
            jr = Journal(self.data_dir, readonly=True)
            try:
                rec = jr.get(run_id)
                return rec, list(jr.events(rec.id))[-HISTORY_EVENTS:]
            finally:
                jr.close()

        try:
            # Off the UI thread: a big journal on a slow disk never freezes the screen.
            rec, history = await asyncio.to_thread(read)
        except JournalError as exc:
            self.log_line(str(exc), "red")
            return
        run_id = rec.id
        config_text = rec.config_text
        for t, kind, _state, message in history:
            self.log_line(f"[{format_duration(t)}] {kind}: {message}", "dim")
        if self.client is not None:
            await self.client.close()
            self.client = None
        self.run_id = run_id
        self.pressure.clear()
        self.substrate.clear()
        client = ApiClient(socket_path(self.data_dir, run_id))
        try:
            await client.connect()
            hello = await client.call("hello")
        except (OSError, ConnectionError, TimeoutError):
            self.status = {
                "state": rec.outcome,
                "reason": rec.reason,
                "recipe": rec.recipe_name,
                "units_done": rec.units_done,
                "units_total": rec.units_total,
            }
            self.log_line(f"run {run_id} is not live ({rec.outcome}): showing its record")
            self.refresh_panels()
            return
        self.client = client
        self.may_command = bool(hello["result"]["may_command"])
        self._tool_from(config_text)
        await self.poll_status()
        self.wall0 = (time.monotonic(), float(self.status.get("t", 0.0)))
        await client.call("subscribe")
        self._w(TabbedContent).active = "tab-log"
        mode = "" if self.may_command else " (read-only: you may watch, not command)"
        self.log_line(f"attached to run {run_id}, pid {hello['result']['pid']}{mode}", "cyan")
        self.follow(client)

    def _tool_from(self, config_text: str | None) -> None:
        from aldctl import config as cfg
        from aldctl import yamlsrc
        from aldctl.diagnostics import UserError

        if self.tool is not None:
            return
        with contextlib.suppress(UserError, ValueError):
            if config_text is None:
                return  # the built-in tool: lines come with the status
            tree = yamlsrc.parse_text(config_text, "<run's tool config>")
            self.tool = ToolView.from_config(cfg.parse_tool(tree, "<run's tool config>"))

    @work(exclusive=True, group="follow")
    async def follow(self, client: ApiClient) -> None:
        """Read the run's event stream (a worker: the UI never waits on the socket)."""
        while not client.closed.is_set():
            get = asyncio.ensure_future(client.event())
            closed = asyncio.ensure_future(client.closed.wait())
            done, _ = await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                break
            closed.cancel()
            self.on_run_event(get.result())
        await client.close()
        if self.client is client and not self._exiting:
            self.log_line(f"run {self.run_id}: the run process closed its API", "yellow")
            self.client = None
            await self.show_record()

    async def show_record(self) -> None:
        from aldctl.engine.journal import Journal, JournalError

        if self.run_id is None:
            return
        with contextlib.suppress(JournalError):
            jr = Journal(self.data_dir, readonly=True)
            try:
                rec = jr.get(self.run_id)
            finally:
                jr.close()
            self.status.update(
                state=rec.outcome, reason=rec.reason, units_done=rec.units_done, step="", dosing=[]
            )
            self.manual_open.clear()
            self.log_line(f"run {rec.id} ended: {rec.outcome}: {rec.reason}", "bold")
        self.refresh_panels()

    def on_run_event(self, msg: dict[str, Any]) -> None:
        if "dropped" in msg:
            self.log_line(f"the run dropped {msg['dropped']} events this console was slow for")
            return
        ev = msg["event"]
        kind = ev["type"]
        st = self.status
        # A status snapshot may be newer than events still queued behind it: the state
        # shown never goes back in time.
        stale = float(ev.get("t", 0.0)) < float(st.get("t", 0.0)) - 1e-9
        if stale and kind in ("StateChanged", "UnitStarted", "UnitDone", "StepStarted"):
            if kind == "StateChanged":
                self.log_line(f"state {ev['state']}: {ev['reason']}", "bold")
                if ev["state"] not in DOSING_STATES:
                    st["dosing"] = []  # stale or not, the dose valves are closed
                    self.refresh_panels()
            return
        if kind == "Sample":
            values = ev["values"]
            st.setdefault("values", {}).update(values)
            if values.get("pressure") is not None:
                self.pressure.append(values["pressure"])
            if values.get("T.substrate") is not None:
                self.substrate.append(values["T.substrate"])
        elif kind == "StateChanged":
            st["state"], st["reason"] = ev["state"], ev["reason"]
            if ev["state"] not in DOSING_STATES:
                st["dosing"] = []
            self.log_line(f"state {ev['state']}: {ev['reason']}", "bold")
        elif kind == "ReadBack":
            st["unclosed"] = list(ev["unclosed"])
            st["readbacks"] = st.get("readbacks", 0) + 1
        elif kind == "Alarm":
            if ev.get("lines"):
                st["unclosed"] = sorted(set(st.get("unclosed", [])) | set(ev["lines"]))
            style = "red" if ev["severity"] in ("abort", "alarm") else "yellow"
            text = f"{ev['severity']}: {ev['source']}: {ev['message']}"
            self.log_line(text, style)
            self._w("#alarms", RichLog).write(f"[{style}]{self.stamp()} {escape(text)}[/]")
            self.notice = f"alarm: {ev['source']}: {ev['message']}"[:76] + " (k: ack)"
        elif kind == "UnitStarted":
            st.update(unit=ev["index"], label=ev["label"], cycle=ev["cycle"])
            st.update(rep=ev["rep"], passes=ev["passes"])
        elif kind == "UnitDone":
            st["units_done"] = ev["index"] + 1
            q = st.get("values", {}).get("qcm")
            if q is not None:
                if self._qcm_last is not None and q != self._qcm_last:
                    self.qcm.append(q - self._qcm_last)
                self._qcm_last = q
        elif kind == "StepStarted":
            st["step"] = ev["label"]
            st["step_left_s"] = ev.get("duration_s")
        elif kind == "DoseStarted":
            # A dose queued behind a snapshot of the aborted run is over: never light it.
            if not stale and st.get("state", "running") in DOSING_STATES:
                st["dosing"] = [ev["line"]]
        elif kind == "PulseDone":
            st["dosing"] = []
        elif kind == "Message":
            self.log_line(ev["text"])
        st["t"] = max(float(st.get("t", 0.0)), float(ev.get("t", 0.0)))
        if kind == "StateChanged":
            # Drawn at once, not at the next tenth of a second: an abort or a hold must not
            # be shown beside the dose valve its last frame showed open.
            self.refresh_panels()
        else:
            self._dirty = True

    def _redraw_if_dirty(self) -> None:
        """Redraw at most ten times a second, however fast a virtual-time run sends."""
        if self._dirty:
            self._dirty = False
            self.refresh_panels()

    async def poll_status(self) -> None:
        if self.client is None:
            return
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            reply = await self.client.call("status")
            if reply.get("ok"):
                dosing = self.status.get("dosing")
                before = self.status
                self.status = reply["result"]
                if before.get("run_id") == self.status.get("run_id"):
                    # Alarms add lines, a read-back replaces them: a snapshot sent before an
                    # event that arrived first must not unsay it (after an abort process
                    # time stands still: the read-back count orders them).
                    mine, theirs = before.get("readbacks", 0), self.status.get("readbacks", 0)
                    if theirs < mine:
                        self.status["unclosed"] = before.get("unclosed", [])
                        self.status["readbacks"] = mine
                    elif theirs == mine:
                        unclosed = set(before.get("unclosed", []))
                        theirs_lines = set(self.status.get("unclosed", []))
                        self.status["unclosed"] = sorted(unclosed | theirs_lines)
                # A pulse shorter than the poll may end between two snapshots, so the line the
                # events lit stays lit until its PulseDone; never once the run left the
                # states that dose: an aborted run with a valve shown open is a lie.
                live = self.status.get("state") in DOSING_STATES
                if dosing and live and not self.status.get("dosing"):
                    self.status["dosing"] = dosing
                if not live:
                    self.status["dosing"] = []
                if "manual_open" in self.status:  # the session's word, not our clicks
                    self.manual_open = set(self.status["manual_open"])
                self.refresh_panels()

    # ------------------------------------------------------------------ actions

    async def command(self, verb: str, **args: Any) -> None:
        self.notice = ""
        if self.client is None:
            self.log_line(f"{verb}: no run attached", "yellow")
            return
        try:
            reply = await self.client.call(verb, **args)
        except (OSError, ConnectionError, TimeoutError) as exc:
            self.log_line(f"{verb}: {exc}", "red")
            return
        if reply.get("ok"):
            self.log_line(f"{verb}: {reply['result']}", "cyan")
        else:
            self.log_line(f"{verb} refused: {reply['error']}", "yellow")
            self.notice = f"{verb} refused: {reply['error']}"[:78]
        self.refresh_panels()

    async def action_pause(self) -> None:
        await self.command("pause")

    async def action_resume(self) -> None:
        await self.command("resume")

    async def action_stop(self) -> None:
        await self.command("stop")

    async def action_clear(self) -> None:
        await self.command("clear")

    async def action_ack(self) -> None:
        self.notice = ""
        await self.command("ack", alarm="all")

    def action_abort(self) -> None:
        if self.client is None:
            self.log_line("abort: no run attached", "yellow")
            return

        async def answered(yes: bool | None) -> None:
            if yes:
                await self.command("abort", reason="operator abort (console)")
            else:
                self.log_line("abort cancelled")

        self.push_screen(Confirm("Abort the run now? (safe state: dose valves closed)"), answered)

    def action_open(self) -> None:
        def chosen(path: Path | None) -> None:
            if path is not None:
                self.load_recipe(path)

        self.push_screen(OpenRecipe(self.recipes_root), chosen)

    async def action_start(self) -> None:
        from aldctl.diagnostics import UserError
        from aldctl.session import start_detached

        if self.client is not None and self.status.get("state") not in (
            "complete",
            "aborted",
            "stopped",
            "faulted",
        ):
            self.log_line("a run is attached and live: stop or abort it first", "yellow")
            return
        if self.recipe is None:
            self.log_line("no recipe loaded: o to open one", "yellow")
            return
        args = ["run", str(self.recipe), "--json"]
        args += ["--realtime"] if self.realtime else []
        args += ["--config", str(self.config)] if self.config else []
        args += [a for kv in self.sets for a in ("--set", kv)]
        try:
            started = await asyncio.to_thread(start_detached, args, self.data_dir)
        except UserError as exc:
            self.log_line("could not start: " + "; ".join(d.message for d in exc.diagnostics))
            return
        self.log_line(f"started run {started.run_id} (pid {started.pid}, log {started.log})")
        await self.attach(started.run_id)

    @property
    def in_manual(self) -> bool:
        return self.client is not None and self.status.get("recipe") == "manual session"

    async def action_manual(self) -> None:
        """Start a manual session (the tool held, safety on, no recipe) and attach to it."""
        from aldctl.diagnostics import UserError
        from aldctl.session import start_detached

        if self.in_manual:
            self.log_line("manual: 1-9 toggle line N's valve, e set a setpoint, s ends it")
            return
        if self.client is not None and self.status.get("state") not in (
            "complete",
            "aborted",
            "stopped",
            "faulted",
        ):
            self.log_line("manual mode is for an idle tool: a run is live", "yellow")
            return
        args = ["manual"]
        args += ["--recipe", str(self.recipe)] if self.recipe else []
        args += ["--config", str(self.config)] if self.config else []
        try:
            started = await asyncio.to_thread(start_detached, args, self.data_dir)
        except UserError as exc:
            self.log_line("manual: " + "; ".join(d.message for d in exc.diagnostics), "red")
            return
        self.tool = None
        self.manual_open.clear()
        await self.attach(started.run_id)
        self.log_line("manual mode: 1-9 toggle line N's valve, e set a setpoint, s ends it")

    async def action_valve(self, n: int) -> None:
        if not self.in_manual:
            return
        lines = list(self.status.get("lines", {}))
        if not 1 <= n <= len(lines):
            self.log_line(f"no line {n}: lines are " + ", ".join(lines), "yellow")
            return
        line = lines[n - 1]
        want = "closed" if line in self.manual_open else "open"
        await self.command("set", target=f"valve:{line}", value=want)
        if self.notice.startswith("set refused"):
            return
        (self.manual_open.add if want == "open" else self.manual_open.discard)(line)
        self.refresh_panels()

    def action_setpoint(self) -> None:
        if not self.in_manual:
            self.log_line("setpoints by hand are for manual mode (m)", "yellow")
            return
        box = self._w("#setpoint", Input)
        box.add_class("shown")
        self._w(TabbedContent).active = "tab-log"
        box.focus()

    @on(Input.Submitted, "#setpoint")
    async def _setpoint(self, ev: Input.Submitted) -> None:
        ev.input.remove_class("shown")
        target, _, value = ev.value.strip().partition(" ")
        if target:
            await self.command("set", target=target, value=value.strip())

    def action_filter(self) -> None:
        box = self._w("#filter", Input)
        box.toggle_class("shown")
        self._w(TabbedContent).active = "tab-log"
        if box.has_class("shown"):
            box.focus()

    @on(Input.Submitted, "#filter")
    def _filter(self, ev: Input.Submitted) -> None:
        self.log_filter = ev.value.strip()
        log = self._w("#log", RichLog)
        log.clear()
        for line in self.log_lines:
            if not self.log_filter or self.log_filter.lower() in line.lower():
                log.write(line)

    async def action_quit(self) -> None:
        """Leave the console; the run goes on (attach again with aldctl tui --attach)."""
        self._exiting = True
        client, self.client = self.client, None
        if client is not None:
            await client.close()
        self.exit()

    async def on_unmount(self) -> None:
        self._exiting = True
        client, self.client = self.client, None
        if client is not None:
            await client.close()
