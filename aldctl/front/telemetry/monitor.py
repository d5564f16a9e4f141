"""``aldctl monitor``: every tool on a broker, live, in one table.

The data model (:class:`Fleet`) is fed raw MQTT messages (retained ``online`` and ``state``,
then ``alarm``) and knows nothing of terminals: the Textual table, ``--json`` and the tests
all read it. The detail pane under the table is the operator console's run panel
(:func:`aldctl.front.tui.app.run_panel`), drawn from the selected tool's retained state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aldctl.front.telemetry.broker import DEFAULT_PREFIX, Broker, Messages, split
from aldctl.units import format_duration


@dataclass
class ToolRow:
    tool: str
    online: bool | None = None
    """None until the tool's ``online`` topic is seen."""
    state: dict[str, Any] = field(default_factory=dict)
    last_alarm: dict[str, Any] | None = None
    seen: float = 0.0

    def row(self) -> dict[str, Any]:
        s = self.state
        alarm = self.last_alarm or s.get("last_alarm")
        return {
            "tool": self.tool,
            "online": self.online,
            "run_id": s.get("run_id"),
            "state": s.get("state"),
            "recipe": s.get("recipe"),
            "units_done": s.get("units_done"),
            "units_total": s.get("units_total"),
            "cycle": s.get("cycle") or s.get("label"),
            "eta_s": s.get("eta_process_s"),
            "alarms_active": len(s.get("alarms_active") or []),
            "last_alarm": (
                f"{alarm.get('severity')}: {alarm.get('source')}: {alarm.get('message')}"
                if alarm
                else None
            ),
            "dropped": s.get("dropped"),
            "seen": self.seen,
        }


class Fleet:
    """What the broker says about every tool under ``prefix``."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.tools: dict[str, ToolRow] = {}

    def topics(self) -> list[str]:
        return [f"{self.prefix}/+/{s}" for s in ("online", "state", "alarm")]

    def feed(self, topic_name: str, payload: bytes) -> str | None:
        """Take one message; the tool it changed, or None (not a tool topic, or garbage)."""
        parsed = split(topic_name, self.prefix)
        if parsed is None or len(parsed[1]) != 1:
            return None
        tool, (kind,) = parsed
        if kind == "online":
            text = payload.decode("utf-8", "replace").strip()
            if text not in ("online", "offline"):
                return None
            row = self.tools.setdefault(tool, ToolRow(tool))
            row.online = text == "online"
        elif kind in ("state", "alarm"):
            try:
                obj = json.loads(payload)
            except ValueError:
                return None
            if not isinstance(obj, dict):
                return None
            row = self.tools.setdefault(tool, ToolRow(tool))
            if kind == "state":
                row.state = obj
            else:
                row.last_alarm = obj
        else:
            return None
        row.seen = time.time()
        return tool

    def rows(self) -> list[dict[str, Any]]:
        return [self.tools[k].row() for k in sorted(self.tools)]


async def watch(
    broker: Broker,
    fleet: Fleet,
    on_change: Callable[[str], None],
    *,
    on_link: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Feed ``fleet`` from the broker until ``stop``; reconnect with backoff."""
    import os

    stop = stop or asyncio.Event()
    backoff = 0.2
    while not stop.is_set():
        try:
            async with broker.client(identifier=f"aldctl-monitor-{os.getpid()}") as client:
                backoff = 0.2
                for t in fleet.topics():
                    await client.subscribe(t, qos=1)
                if on_link is not None:
                    on_link(f"connected to {broker.url}")
                messages = Messages(client)
                try:
                    while not stop.is_set():
                        msg = await messages.get(0.5)
                        if msg is None:
                            continue
                        payload = msg.payload if isinstance(msg.payload, bytes) else b""
                        tool = fleet.feed(str(msg.topic), payload)
                        if tool is not None:
                            on_change(tool)
                finally:
                    await messages.close()
        except Exception as exc:  # the broker is away: say so, retry
            if on_link is not None:
                on_link(f"{broker.url}: {type(exc).__name__}: {exc}; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)


def _cell(row: dict[str, Any], key: str) -> str:
    v = row[key]
    if key == "online":
        return {True: "online", False: "OFFLINE", None: "?"}[v]
    if key == "cycle":
        done, total = row["units_done"], row["units_total"]
        n = f"{done}/{total}" if total else ""
        return f"{n} {v or ''}".strip()
    if key == "eta_s":
        return (
            ""
            if v is None or row["state"] in ("complete", "aborted", "stopped")
            else (format_duration(v))
        )
    return "" if v is None else str(v)


COLUMNS = (
    ("tool", "tool"),
    ("online", "link"),
    ("state", "state"),
    ("recipe", "recipe"),
    ("cycle", "cycle"),
    ("eta_s", "ETA"),
    ("last_alarm", "last alarm"),
)


def text_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for _, title in COLUMNS:
        table.add_column(title, overflow="fold")
    for r in rows:
        table.add_row(*(_cell(r, k) for k, _ in COLUMNS))
    return table


def make_app(broker: Broker, prefix: str = DEFAULT_PREFIX) -> Any:
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.widgets import DataTable, Footer, Header, Static

    from aldctl.front.tui.app import run_panel

    class Monitor(App[None]):
        TITLE = "aldctl monitor"
        CSS = "DataTable { height: 1fr; } #detail { height: auto; border-top: solid $accent; }"
        BINDINGS: ClassVar[list[Any]] = [Binding("q", "quit", "quit")]

        def __init__(self) -> None:
            super().__init__()
            self.fleet = Fleet(prefix)
            self.stop = asyncio.Event()

        def compose(self) -> ComposeResult:
            yield Header()
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
            for key, title in COLUMNS:
                table.add_column(title, key=key)
            yield table
            yield Static("", id="detail")
            yield Footer()

        def on_mount(self) -> None:
            self.sub_title = broker.url
            self.run_worker(
                watch(broker, self.fleet, self.changed, on_link=self.link, stop=self.stop),
                exclusive=True,
            )

        def link(self, text: str) -> None:
            self.sub_title = text

        def changed(self, tool: str) -> None:
            table = self.query_one(DataTable)
            row = self.fleet.tools[tool].row()
            cells = [_cell(row, k) for k, _ in COLUMNS]
            if tool in table.rows:
                for (key, _), value in zip(COLUMNS, cells, strict=True):
                    table.update_cell(tool, key, value)
            else:
                table.add_row(*cells, key=tool)
            self.show_detail()

        def show_detail(self) -> None:
            table = self.query_one(DataTable)
            if not table.row_count:
                return
            key = list(table.rows)[min(table.cursor_row, table.row_count - 1)].value
            if key is None or key not in self.fleet.tools:
                return
            state = self.fleet.tools[key].state
            self.query_one("#detail", Static).update(run_panel(state, None) if state else "")

        def on_data_table_row_highlighted(self) -> None:
            self.show_detail()

        async def action_quit(self) -> None:
            self.stop.set()
            self.exit()

    return Monitor()
