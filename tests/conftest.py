"""Shared fixtures: the CLI run in-process through its real entry point, and paths."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
FIXTURES = ROOT / "tests" / "recipes"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """Run ``aldctl ARGS`` through its real ``main()`` and capture exit code and output."""
    from aldctl.front.cli import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["aldctl", *args])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--campaign",
        action="store_true",
        default=False,
        help="Run the reliability campaigns in full (200 kills, 200 parallel resumes) "
        "instead of the bounded CI size.",
    )


@pytest.fixture
def campaign(request: pytest.FixtureRequest) -> bool:
    """True under ``pytest --campaign``: campaigns run at full size."""
    return bool(request.config.getoption("--campaign"))


CAMPAIGN_TIMEOUT_S = 8 * 3600
"""Per-test time limit of a campaign test under ``--campaign``. The suite's 300 s (pyproject)
is for the CI sizes: 200 kills or 100,000 fuzzed inputs take 10-60 min, and a limit that
stops them with a stack dump makes the one flag useless. A hang still ends, later."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--campaign"):
        return
    for item in items:
        if "campaign" in getattr(item, "fixturenames", ()):
            # first, so that it is the closest timeout mark (a test's own is for CI sizes)
            item.add_marker(pytest.mark.timeout(CAMPAIGN_TIMEOUT_S), append=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs), to fill up: a full disk, not a simulated one.

    Needs root (CI runs as root); elsewhere the test is skipped, saying why.
    """
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def fill_disk() -> Callable[[Path], Path]:
    """``fill_disk(dir)`` writes a file there until its filesystem is full, and returns it
    (delete it to free the space)."""
    return _fill_disk


def _fill_disk(where: Path) -> Path:
    filler = where / "filler"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


@pytest.fixture(autouse=True)
def no_user_chemistry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without a user chemistry file (a developer's own
    ~/.config/aldctl/chemistry.yaml must not change what tests see), and whatever a test
    installed into the simulator's catalogue is removed after it."""
    monkeypatch.setenv("ALDCTL_CHEMISTRY", "")
    yield
    from aldctl import chemfile

    if chemfile._state.active is not None:
        from sim import userdata

        userdata.install()
        chemfile._state.active = None
