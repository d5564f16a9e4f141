"""The operator console driven by Textual's Pilot against real run processes.

Runs are started as detached processes (``aldctl run --detach``) and reached over their
operator API socket, as the console does for a user; the journal is SQLite on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aldctl.engine.opapi import ApiClient, socket_path
from aldctl.front.tui.app import Console

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "al2o3_tma_h2o.yaml"
LONG = ("cycles=20000",)


async def until(pilot: Any, pred: Callable[[], bool], what: str, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > deadline:
            # The console's last notice says why when a command was refused on the way.
            pytest.fail(f"timed out waiting for {what}; notice: {pilot.app.notice!r}")
        await pilot.pause(0.05)


def run_status(run_id: str) -> Any:
    """The status of a run on a tool with TMA and H2O lines, fed events by the test."""
    from aldctl.engine.opapi import RunStatus

    return RunStatus(
        run_id=run_id, recipe="r", tool="t", units_total=10, planned_s=100.0,
        lines={"TMA": "TMA", "H2O": "H2O"},
    )  # fmt: skip


async def serve_status(tmp_path: Path, status: Any) -> tuple[Any, Path]:
    """A real operator-API server on a Unix socket serving ``status``: the order of what
    the console sees is the test's to force (a real run cannot)."""
    from aldctl.engine.control import RunControl
    from aldctl.engine.events import EventBus
    from aldctl.engine.opapi import ApiServer, OperatorApi

    path = tmp_path / "api.sock"
    server = ApiServer(OperatorApi(RunControl(), status), EventBus(), path)
    await server.start()
    return server, path


def outcome(data: Path, run_id: str) -> str:
    con = sqlite3.connect(f"file:{data / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        return str(con.execute("SELECT outcome FROM runs WHERE id=?", (run_id,)).fetchone()[0])
    finally:
        con.close()


def screen_text(app: Console) -> str:
    from textual.widgets import Static

    return "\n".join(str(w.render()) for w in app.query(Static))


async def test_start_pause_resume_abort_from_the_console(tmp_path: Path) -> None:
    app = Console(data_dir=tmp_path, recipe=RECIPE, sets=LONG)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.status.get("units_total") == 20000, "the plan")
        assert "Al2O3 from TMA and H2O" in screen_text(app)
        await pilot.press("g")
        await until(pilot, lambda: app.client is not None, "the started run")
        await until(pilot, lambda: app.status.get("state") == "running", "running")
        run_id = app.run_id
        assert run_id is not None
        await pilot.press("p")
        await until(pilot, lambda: app.status.get("state") == "paused", "paused")
        paused_at = app.status["units_done"]
        await asyncio.sleep(0.5)
        await app.poll_status()
        assert app.status["units_done"] == paused_at  # paused at a checkpoint, standing still
        assert "PAUSED" in screen_text(app)
        await pilot.press("r")
        await until(pilot, lambda: app.status["units_done"] > paused_at, "resumed progress")
        await pilot.press("a")
        await pilot.press("y")  # confirmed
        await until(pilot, lambda: app.status.get("state") == "aborted", "aborted")
        text = screen_text(app)
        assert "ABORTED" in text
        assert "[■]" not in text  # the synoptic: every dose valve closed
        await until(pilot, lambda: app.client is None, "the run process to end")
    assert outcome(tmp_path, run_id) == "aborted"


async def test_abort_asks_first_and_no_means_no(tmp_path: Path) -> None:
    app = Console(data_dir=tmp_path, recipe=RECIPE, sets=LONG)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.status.get("units_total") == 20000, "the plan")
        await pilot.press("g")
        await until(pilot, lambda: app.status.get("state") == "running", "running")
        await pilot.press("a")
        await pilot.press("n")
        await pilot.pause(0.5)
        assert app.status.get("state") == "running"
        assert app.client is not None
        await app.client.call("abort", reason="test over")
        await until(pilot, lambda: app.client is None, "the run process to end")


async def test_manual_valve_toggle_is_refused_by_the_interlock(tmp_path: Path) -> None:
    # A dose valve held open fills the chamber: past 5 Torr the safety monitor aborts the
    # session (as it should), a few seconds after "2" on a loaded machine. The interlock
    # under test is the manifold's, so the chamber limits are raised out of its way.
    import yaml

    from aldctl.config import builtin_text

    doc = yaml.safe_load(builtin_text())
    doc["limits"]["pressure"] = {"max": "50 Torr", "hold_above": "40 Torr", "action": "abort"}
    doc["gauges"]["chamber"]["max"] = "100 Torr"  # a limit above the gauge's range is refused
    config = tmp_path / "roomy.yaml"
    config.write_text(yaml.safe_dump(doc))
    app = Console(data_dir=tmp_path, recipe=RECIPE, config=config)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.status.get("units_total") == 100, "the plan")
        await pilot.press("m")
        await until(pilot, lambda: app.in_manual, "the manual session", limit_s=60)
        await pilot.press("2")  # H2O open
        await until(pilot, lambda: "H2O" in app.manual_open, "H2O open")
        await pilot.press("1")  # TMA too: TMA and H2O must not meet
        await until(pilot, lambda: "refused" in app.notice, "the refusal")
        assert "would meet in the manifold" in app.notice
        assert app.manual_open == {"H2O"}
        assert "refused" in screen_text(app)
        await pilot.press("2")  # H2O closed: now TMA may open
        await pilot.press("1")
        await until(pilot, lambda: app.manual_open == {"TMA"}, "TMA open")
        await pilot.press("s")  # ends the session in the safe state
        await until(pilot, lambda: app.client is None, "the session to end", limit_s=30)
        assert app.status["state"] == "complete"


async def test_a_manual_sessions_outcome_is_recorded_before_its_api_closes(tmp_path: Path) -> None:
    # The console reads the record the moment the run's API closes: a session that closed its
    # API first and wrote its outcome after showed "running" for a session that had ended.
    from aldctl.session import start_detached

    started = await asyncio.to_thread(start_detached, ["manual"], tmp_path)
    client = ApiClient(socket_path(tmp_path, started.run_id))
    await client.connect()
    await client.call("subscribe")
    reply = await client.call("stop")
    assert reply.get("ok"), reply
    await asyncio.wait_for(client.closed.wait(), 30)
    await client.close()
    assert outcome(tmp_path, started.run_id) == "complete"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A data directory other users can reach (a watcher runs as uid 65534)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="aldctl-watch-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_two_consoles_attached_both_see_events_and_a_watcher_may_not_command(
    shared_dir: Path,
) -> None:
    tmp_path = shared_dir
    # The built-in tool, letting anyone on the host watch (operator.watchers: any).
    config = tmp_path / "tool.yaml"
    from aldctl.config import builtin_text

    config.write_text(builtin_text() + "\noperator: {watchers: any}\n")
    started = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "aldctl",
            "run",
            str(RECIPE),
            "--set",
            LONG[0],
            "--detach",
            "--json",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    run_id = json.loads(started.stdout)["run_id"]
    one = Console(data_dir=tmp_path, attach=run_id[:15])  # a unique prefix is enough
    two = Console(data_dir=tmp_path, attach=run_id)
    async with one.run_test(size=(80, 24)) as p1, two.run_test(size=(160, 50)) as p2:
        await until(p1, lambda: one.client is not None, "console one attached")
        await until(p2, lambda: two.client is not None, "console two attached")
        assert one.run_id == two.run_id == run_id
        done1 = one.status.get("units_done", 0)
        await until(p1, lambda: one.status["units_done"] > done1 + 5, "events in console one")
        await until(p2, lambda: two.status["units_done"] > done1 + 5, "events in console two")
        assert one.may_command
        # A watcher who is not the run's owner (uid 65534) may connect but not command. The
        # system's Python, the standard library only: a client written from the API's
        # documentation, as another user would write one.
        watcher = await asyncio.to_thread(
            subprocess.run,
            ["/usr/bin/python3", "-c", WATCHER, str(socket_path(tmp_path, run_id))],
            capture_output=True,
            text=True,
            check=False,
            user=65534,
            group=65534,
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
        )
        assert watcher.returncode == 0, watcher.stderr
        reply = json.loads(watcher.stdout)
        assert reply["hello"]["may_command"] is False
        assert reply["abort"]["ok"] is False
        assert "may watch this run, not command it" in reply["abort"]["error"]
        assert one.status.get("state") == "running"  # the watcher changed nothing
        await one.command("abort", reason="test over")
        await until(p1, lambda: one.client is None, "the run to end")
        await until(p2, lambda: two.client is None, "the run to end in console two")
        assert two.status["state"] == "aborted"


WATCHER = """
import json, socket, sys

s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")

def call(cmd, **args):
    f.write(json.dumps({"v": 1, "id": cmd, "cmd": cmd, **args}) + "\\n")
    f.flush()
    while True:
        reply = json.loads(f.readline())
        if reply.get("id") == cmd:
            return reply

print(json.dumps({"hello": call("hello")["result"], "abort": call("abort", reason="x")}))
"""


@pytest.mark.slow
async def test_an_injected_fault_shows_as_an_alarm_and_the_run_aborts_naming_it(
    tmp_path: Path,
) -> None:
    """Over HIL: `aldctl sim serve --fault comm_timeout:chamber@15` silences the gauge."""
    state = tmp_path / "sim"
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aldctl",
        "sim",
        "serve",
        "--dir",
        str(state),
        "--fault",
        "comm_timeout:chamber@15",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while not (state / "tool.yaml").exists():
            assert time.monotonic() < deadline, "sim serve did not come up"
            assert server.returncode is None
            await asyncio.sleep(0.1)
        app = Console(
            data_dir=tmp_path / "data",
            recipe=RECIPE,
            config=state / "tool.yaml",
            sets=("cycles=50", "purge=2 s", "settle=2 s"),
        )
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.status.get("units_total") == 50, "the plan")
            await pilot.press("g")
            await until(pilot, lambda: app.client is not None, "the started run", limit_s=60)

            def alarms() -> str:
                return "\n".join(line for line in app.log_lines if "warning:" in line)

            await until(pilot, lambda: "gauge" in alarms(), "the gauge's alarm", limit_s=90)
            assert "no valid answer" in alarms()
            await until(pilot, lambda: app.status.get("state") == "aborted", "the abort", 60)
            assert "device 'gauge' stopped answering" in app.status["reason"]
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(server.wait(), 15)
            except TimeoutError:
                server.kill()
                await server.wait()


async def test_the_api_refuses_what_it_cannot_take_and_a_stuck_client_never_stalls_the_run(
    tmp_path: Path,
) -> None:
    started = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "aldctl",
            "run",
            str(RECIPE),
            "--set",
            "cycles=3000",
            "--detach",
            "--json",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    run_id = json.loads(started.stdout)["run_id"]
    path = socket_path(tmp_path, run_id)
    # A stuck client: subscribes, then never reads a byte.
    stuck = socket.socket(socket.AF_UNIX)
    stuck.connect(str(path) if len(str(path)) < 100 else _short(path))
    stuck.sendall(b'{"v": 1, "id": 1, "cmd": "subscribe"}\n')
    client = ApiClient(path)
    await client.connect()
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(str(path) if len(str(path)) < 100 else _short(path))
    f = raw.makefile("rwb")
    try:
        for bad, expect in (
            (b"this is not json\n", "malformed"),
            (b"[1, 2]\n", "malformed"),
            (b'{"v": 2, "id": 5, "cmd": "pause"}\n', "unsupported API version"),
            (b'{"v": 1, "id": 6, "cmd": "explode"}\n', "unknown verb"),
            (b'{"v": 1, "id": 7}\n', "missing 'cmd'"),
        ):
            f.write(bad)
            f.flush()
            reply = json.loads(await asyncio.to_thread(f.readline))
            assert reply["ok"] is False
            assert expect in reply["error"]
        status = await client.call("status")
        assert status["result"]["state"] in ("starting", "running")  # nothing changed
        # the run goes to its end with the stuck client attached
        deadline = time.monotonic() + 120
        while outcome(tmp_path, run_id) == "running":
            assert time.monotonic() < deadline, "the run stalled"
            await asyncio.sleep(0.2)
        assert outcome(tmp_path, run_id) == "complete"
    finally:
        f.close()
        raw.close()
        stuck.close()
        await client.close()


def _short(path: Path) -> str:
    fd = os.open(path.parent, os.O_RDONLY)
    return f"/proc/self/fd/{fd}/{path.name}"


async def test_a_status_poll_after_an_abort_never_shows_a_valve_open(tmp_path: Path) -> None:
    """The race the console lost under load: the abort's StateChanged event arrives after a
    newer status snapshot (so it is skipped as stale), and the poll of that snapshot kept the
    last dose's line lit because 'dosing' was empty: the synoptic showed TMA open on an
    aborted run. A real operator-API server on a Unix socket; the run's events are fed to its
    RunStatus directly (the order is the point, and a real run cannot force it)."""
    from aldctl.engine.events import DoseStarted, Sample, State, StateChanged

    status = run_status("r1")
    server, path = await serve_status(tmp_path, status)
    app = Console(data_dir=tmp_path, recipe=RECIPE)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.status.get("units_total") is not None, "the plan")
            client = ApiClient(path)
            await client.connect()
            app.client = client
            dose = DoseStarted(t=10.0, line="TMA", chemical="TMA", duration_s=0.5)
            status.listener(dose)
            app.on_run_event({"event": {"type": "DoseStarted", "t": 10.0, "line": "TMA"}})
            await app.poll_status()
            assert "[■]" in screen_text(app)  # mid-pulse: lit
            status.listener(StateChanged(t=10.1, state=State.ABORTED, previous=State.RUNNING))
            status.listener(Sample(t=10.2, values={"pressure": 0.5}))
            await app.poll_status()  # the snapshot first, the event (now stale) after it
            app.on_run_event(
                {"event": {"type": "StateChanged", "t": 10.1, "state": "aborted", "reason": ""}}
            )
            await app.poll_status()
            # A dose event queued behind the aborted snapshot lights nothing either.
            app.on_run_event(
                {"event": {"type": "DoseStarted", "t": 10.05, "line": "TMA", "chemical": "TMA"}}
            )
            app.refresh_panels()
            assert app.status["state"] == "aborted"
            assert "[■]" not in screen_text(app)
            app.client = None
            await client.close()
    finally:
        await server.stop()


def test_the_operator_api_never_reports_a_dose_of_a_run_that_has_left_the_dosing_states() -> None:
    """A dose event can trail the abort's state change, and after an abort process time
    stands still (the read-back is not recipe time), so that dose's end never passes: the
    snapshot every console polls showed the TMA valve open on an aborted run. (A CI run of
    `test_start_pause_resume_abort_from_the_console` on main c2e7540 showed TMA open after
    an abort; this order is one way there, and the snapshot now holds the rule whatever the
    order.)"""
    from aldctl.engine.events import DoseStarted, Sample, State, StateChanged
    from aldctl.engine.opapi import RunStatus

    status = RunStatus(
        run_id="r1", recipe="r", tool="t", units_total=10, planned_s=100.0,
        lines={"TMA": "TMA", "H2O": "H2O"},
    )  # fmt: skip
    status.listener(StateChanged(t=10.0, state=State.ABORTING, previous=State.RUNNING))
    status.listener(StateChanged(t=10.0, state=State.ABORTED, previous=State.ABORTING))
    status.listener(DoseStarted(t=10.0, line="TMA", chemical="TMA", duration_s=0.015))
    status.listener(Sample(t=10.0, values={"pressure": 0.5}))
    assert status.snapshot()["dosing"] == []
    # while the run doses, a dose in progress is reported
    live = RunStatus(
        run_id="r2", recipe="r", tool="t", units_total=10, planned_s=100.0,
        lines={"TMA": "TMA"},
    )  # fmt: skip
    live.listener(StateChanged(t=1.0, state=State.RUNNING, previous=State.STARTING))
    live.listener(DoseStarted(t=2.0, line="TMA", chemical="TMA", duration_s=0.5))
    assert live.snapshot()["dosing"] == ["TMA"]


async def test_an_abort_is_drawn_at_once_without_the_valve_the_last_frame_showed_open(
    tmp_path: Path,
) -> None:
    """Events are drawn at most ten times a second; a state change was too, so for up to
    0.1 s after an abort the synoptic still showed the last dose's valve open beside
    ABORTED (what `test_start_pause_resume_abort_from_the_console` caught in CI)."""
    app = Console(data_dir=tmp_path, recipe=RECIPE)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.status.get("units_total") is not None, "the plan")
        app.on_run_event(
            {"event": {"type": "StateChanged", "t": 1.0, "state": "running", "reason": ""}}
        )
        app.on_run_event({"event": {"type": "DoseStarted", "t": 2.0, "line": "TMA"}})
        app.refresh_panels()
        assert "[■]" in screen_text(app)  # mid-pulse: lit
        app.on_run_event(
            {"event": {"type": "StateChanged", "t": 2.005, "state": "aborted", "reason": "x"}}
        )
        text = screen_text(app)  # no tick of the redraw timer in between
        assert "ABORTED" in text
        assert "[■]" not in text


async def test_a_stale_poll_then_the_runs_record_never_shows_a_valve_open(tmp_path: Path) -> None:
    """What `test_start_pause_resume_abort_from_the_console` caught at load 4 on 5513b8a:
    the abort's event cleared the synoptic; a status poll sent before the abort answered
    after it (running, H2O dosing); then the run closed its API and the console took the
    state from the run's record ("aborted"), keeping the poll's H2O lit beside ABORTED.
    A real operator-API server and a real journal record; the order is forced here."""
    from aldctl.engine.events import DoseStarted, State, StateChanged
    from aldctl.engine.journal import Journal, RunMeta

    j = Journal(tmp_path)
    meta = RunMeta(
        recipe_path="/r.yaml", recipe_name="r", recipe_text="main: []\n", includes={},
        overrides={}, params={}, config_path=None, config_text=None, tool="sim",
        clock="virtual", realtime="virtual time", units_total=10,
    )  # fmt: skip
    run_id = j.new_run(meta)
    j.finish("aborted", "operator abort", 10.2, {})
    j.close()
    status = run_status(run_id)
    status.listener(StateChanged(t=1.0, state=State.RUNNING, previous=State.STARTING))
    status.listener(DoseStarted(t=10.0, line="H2O", chemical="H2O", duration_s=0.5))
    server, path = await serve_status(tmp_path, status)
    app = Console(data_dir=tmp_path, recipe=RECIPE)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.status.get("units_total") is not None, "the plan")
            client = ApiClient(path)
            await client.connect()
            app.client = client
            app.run_id = run_id
            app.on_run_event(
                {"event": {"type": "StateChanged", "t": 10.1, "state": "aborted", "reason": ""}}
            )
            await app.poll_status()  # the snapshot of before the abort, answered after it
            app.client = None
            await client.close()
            await app.show_record()  # the run closed its API: its record says how it ended
            text = screen_text(app)
            assert app.status["state"] == "aborted"
            assert "ABORTED" in text
            assert "[■]" not in text
    finally:
        await server.stop()


async def test_a_valve_a_hold_closed_in_manual_mode_is_shown_closed(tmp_path: Path) -> None:
    """The console drew manual-mode valves from its own key presses: once a hold closed the
    TMA valve opened by hand, the synoptic still showed it open. It shows what the session
    reports open. A detached `aldctl manual` on the built-in tool, TMA opened with `1`."""
    app = Console(data_dir=tmp_path, recipe=RECIPE)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.status.get("units_total") is not None, "the plan")
        await pilot.press("m")
        await until(pilot, lambda: app.status.get("state") == "running", "the manual session")
        await until(pilot, lambda: "TMA" in app.status.get("lines", {}), "its lines")
        n = list(app.status["lines"]).index("TMA") + 1
        await pilot.press(str(n))
        assert "[■]" in screen_text(app)  # opened by hand
        # TMA left open fills the chamber: the hold closes it, and the console shows that
        await until(pilot, lambda: "[■]" not in screen_text(app), "TMA shown closed", 30)
        assert app.status.get("state") == "running"  # the session goes on
        assert app.manual_open == set()
        await pilot.press("s")
        await until(pilot, lambda: app.client is None, "the session's end")


def synoptic_text(app: Console) -> str:
    from textual.widgets import Static

    return str(app.query_one("#synoptic", Static).render())


async def test_a_valve_the_safe_state_could_not_close_is_not_drawn_closed(tmp_path: Path) -> None:
    """The run's own alarm says TMA did not close (runner._abort: 'safe state incomplete:
    valve TMA: ...'); the synoptic beside it drew TMA '[ ]', closed: a false 'closed' is
    the drawing an operator acts on (opening the chamber, walking away)."""
    app = Console(data_dir=tmp_path, recipe=RECIPE)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.status.get("units_total") is not None, "the plan")
        events: list[dict[str, Any]] = [
            {"type": "StateChanged", "t": 1.0, "state": "running", "reason": ""},
            {"type": "DoseStarted", "t": 2.0, "line": "TMA"},
            {"type": "StateChanged", "t": 2.1, "state": "aborting", "reason": "operator"},
            {
                "type": "Alarm",
                "t": 7.1,
                "severity": "abort",
                "source": "safe state",
                "message": "safe state incomplete: valve TMA: valves: no answer within 5 s",
                "lines": ["TMA"],  # what the runner's alarm carries (test_after_abort.py)
            },
            {"type": "StateChanged", "t": 7.1, "state": "aborted", "reason": "operator"},
        ]
        for ev in events:
            app.on_run_event({"event": ev})
        app.refresh_panels()
        tma = [ln for ln in synoptic_text(app).splitlines() if "TMA" in ln]
        assert tma, synoptic_text(app)
        assert "[ ]" not in tma[0], tma[0]
        assert "[?]" in tma[0], tma[0]
        h2o = [ln for ln in synoptic_text(app).splitlines() if "H2O" in ln]
        assert "[ ]" in h2o[0]  # the line the alarm did not name is drawn closed
        # the read-back then reads TMA closed: what it found is what is drawn
        app.on_run_event(
            {"event": {"type": "ReadBack", "t": 7.1, "verified": True, "unclosed": []}}
        )
        app.refresh_panels()
        tma = [ln for ln in synoptic_text(app).splitlines() if "TMA" in ln]
        assert "[ ]" in tma[0], tma[0]
