"""Shared fixtures: the CLI run in-process through its real entry point, and paths."""

from __future__ import annotations

import sys
from collections.abc import Callable
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
    from aldctl.cli import main

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
