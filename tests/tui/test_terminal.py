"""The console in a real terminal (tmux): keys sent, the screen read back with capture-pane.

Covers what Pilot cannot: a console process killed with SIGKILL while its run goes on, and
a second console attaching from another terminal. `.ci/run` installs tmux when missing.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "al2o3_tma_h2o.yaml"
ALDCTL = [sys.executable, "-m", "aldctl"]

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def run(self, *args: str) -> str:
        res = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=False
        )
        return res.stdout

    def start(self, name: str, command: list[str]) -> None:
        cmd = " ".join(f"'{c}'" for c in command)
        env = f"cd {ROOT} && TERM=xterm-256color exec {cmd}"
        self.run("new-session", "-d", "-s", name, "-x", "80", "-y", "24", env)

    def screen(self, name: str) -> str:
        return self.run("capture-pane", "-p", "-t", name)

    def keys(self, name: str, *keys: str) -> None:
        self.run("send-keys", "-t", name, *keys)

    def pid(self, name: str) -> int:
        return int(self.run("display-message", "-p", "-t", name, "#{pane_pid}").strip())

    def wait_for(
        self, name: str, pred: Callable[[str], bool], what: str, limit_s: float = 60
    ) -> str:
        deadline = time.monotonic() + limit_s
        while True:
            text = self.screen(name)
            if pred(text):
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; screen:\n{text}")
            time.sleep(0.2)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(f"aldctl-test-{os.getpid()}-{tmp_path.name}")
    yield t
    t.run("kill-server")


def journal(data: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(f"file:{data / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_killing_the_console_never_touches_the_run_and_another_attaches(
    tmp_path: Path, tmux: Tmux
) -> None:
    data = tmp_path / "data"
    tui = [
        *ALDCTL,
        "tui",
        str(RECIPE),
        "--set",
        "cycles=6000",
        "--virtual",
        "--data-dir",
        str(data),
    ]
    tmux.start("one", tui)
    tmux.wait_for(
        "one", lambda s: "g Start" in s and "unit 0/6000" in s, "the console with the plan"
    )
    tmux.keys("one", "g")
    screen = tmux.wait_for("one", lambda s: "RUNNING" in s, "the run to start")
    assert "[■]" in screen or "[ ]" in screen  # the synoptic is drawn
    run_id = str(journal(data, "SELECT id FROM runs")[0][0])
    # kill -9 of the console (an SSH session dying takes it the same way)
    os.kill(tmux.pid("one"), 9)
    time.sleep(0.5)
    assert journal(data, "SELECT outcome FROM runs")[0][0] == "running"
    # another terminal attaches mid-run, by a prefix of the id, and sees it live
    tmux.start("two", [*ALDCTL, "tui", "--attach", run_id[:17], "--data-dir", str(data)])
    screen = tmux.wait_for("two", lambda s: "RUNNING" in s, "the second console")
    assert run_id in screen
    units = [int(m) for m in re.findall(r"unit (\d+)/6000", screen)]
    assert units, screen
    assert 0 < units[0] < 6000
    # the run completes on its own, no console needed
    deadline = time.monotonic() + 120
    while journal(data, "SELECT outcome FROM runs")[0][0] == "running":
        assert time.monotonic() < deadline, "the run did not complete"
        time.sleep(0.5)
    assert journal(data, "SELECT outcome, units_total FROM runs")[0] == ("complete", 6000)
    done = journal(data, "SELECT COUNT(*) FROM checkpoints")[0][0]
    assert done == 6000
    tmux.wait_for("two", lambda s: "COMPLETE" in s, "the second console to show the end")


@pytest.mark.slow
def test_key_menu_of_the_headless_runner_is_one_visible_line_and_one_key(
    tmp_path: Path, tmux: Tmux
) -> None:
    data = tmp_path / "data"
    tmux.start(
        "run", [*ALDCTL, "run", str(RECIPE), "--set", "cycles=20000", "--data-dir", str(data)]
    )
    tmux.wait_for("run", lambda s: "unit" in s, "progress")
    tmux.keys("run", "C-c")
    screen = tmux.wait_for("run", lambda s: "one key:" in s, "the menu")
    assert "p pause | r resume | s stop after cycle | a abort | c go on" in screen
    tmux.keys("run", "p")  # one key, no Enter
    tmux.wait_for("run", lambda s: "paused at checkpoint" in s, "the pause")
    tmux.keys("run", "C-c")
    tmux.wait_for("run", lambda s: s.count("one key:") >= 2, "the menu again")
    tmux.keys("run", "a")
    deadline = time.monotonic() + 30  # the process ends (and its pane with it) once aborted
    while journal(data, "SELECT outcome FROM runs")[0][0] != "aborted":
        assert time.monotonic() < deadline, "the run was not aborted"
        time.sleep(0.2)
