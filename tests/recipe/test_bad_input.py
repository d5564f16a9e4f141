"""Malformed recipes: each gives a located one-line error and exit status 2, no traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

GOOD_CYCLE = """
cycles:
  A:
    - pulse: {TMA: 15 ms}
    - purge: 5 s
    - pulse: {H2O: 15 ms}
    - purge: 5 s
"""
SETUP = "setup:\n  - set: {substrate: 200 degC, carrier: 20 sccm}\n"
MAIN = "main:\n  - cycle: {name: A, repeat: 10}\n"


def body(cycle: str = GOOD_CYCLE, main: str = MAIN, setup: str = SETUP, extra: str = "") -> str:
    return extra + setup + cycle + main


# (id, file content, expected message fragment, expected line or None)
CASES: list[tuple[str, str | bytes, str, int | None]] = [
    ("yaml-syntax-colon", "name: a: b\n" + body(), "YAML syntax", 1),
    (
        "yaml-unclosed-flow",
        body(cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{TMA: 15 ms")),
        "YAML syntax",
        None,
    ),
    ("yaml-tab-indent", "main:\n\t- wait: 1 s\n", "YAML syntax", 2),
    ("yaml-bad-indent", "main:\n  - wait: 1 s\n - wait: 2 s\n", "YAML syntax", 3),
    ("empty-file", "", "empty recipe", 1),
    ("top-level-list", "- pulse: {TMA: 15 ms}\n", "a recipe is a YAML mapping", 1),
    ("no-main", SETUP + GOOD_CYCLE, "no 'main:'", 1),
    ("unknown-top-key", body(extra="mian: []\n"), "unknown top-level key 'mian'", 1),
    (
        "unknown-step",
        body(
            cycle=GOOD_CYCLE.replace(
                "- purge: 5 s\n    - pulse: {H2O", "- pruge: 5 s\n    - pulse: {H2O"
            )
        ),
        "unknown step 'pruge'",
        7,
    ),
    (
        "two-kinds-one-step",
        body(main="main:\n  - {wait: 1 s, purge: 2 s}\n"),
        "exactly one kind",
        11,
    ),
    (
        "pulse-no-unit",
        body(cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{TMA: 15}")),
        "has no unit",
        6,
    ),
    (
        "pulse-wrong-dimension",
        body(cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{TMA: 15 sccm}")),
        "is not a time",
        6,
    ),
    (
        "pulse-unknown-unit",
        body(cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{TMA: 15 blarg}")),
        "unknown unit",
        6,
    ),
    (
        "negative-purge",
        body(
            cycle=GOOD_CYCLE.replace(
                "- purge: 5 s\n    - pulse: {H2O", "- purge: -5 s\n    - pulse: {H2O"
            )
        ),
        "must be positive",
        7,
    ),
    (
        "zero-pulse",
        body(cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{TMA: 0 ms}")),
        "must be positive",
        6,
    ),
    (
        "temperature-as-flow",
        body(setup="setup:\n  - set: {substrate: 200 sccm}\n"),
        "temperature channel",
        2,
    ),
    ("flow-as-temperature", body(setup="setup:\n  - set: {carrier: 20 degC}\n"), "flow channel", 2),
    ("setpoint-no-unit", body(setup="setup:\n  - set: {substrate: 200}\n"), "has no unit", 2),
    (
        "unknown-channel",
        body(setup="setup:\n  - set: {substrat: 200 degC}\n"),
        "no channel 'substrat'",
        2,
    ),
    (
        "unknown-chemical",
        body(cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{TMAA: 15 ms}")),
        "unknown chemical 'TMAA'",
        6,
    ),
    (
        "wrong-case-chemical",
        body(cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{tma: 15 ms}")),
        "did you mean 'TMA'",
        6,
    ),
    (
        "repeat-not-a-number",
        body(main="main:\n  - cycle: {name: A, repeat: many}\n"),
        "whole number",
        11,
    ),
    ("repeat-float", body(main="main:\n  - cycle: {name: A, repeat: 2.5}\n"), "whole number", 11),
    (
        "repeat-huge",
        body(main="main:\n  - cycle: {name: A, repeat: 1000000000000}\n"),
        "exceeds the limit",
        11,
    ),
    ("repeat-zero", body(main="main:\n  - cycle: {name: A, repeat: 0}\n"), "at least 1", 11),
    (
        "repeat-and-target",
        body(main="main:\n  - cycle: {name: A, repeat: 3, target: 2 nm}\n"),
        "either 'repeat' or 'target'",
        11,
    ),
    (
        "target-wrong-unit",
        body(main="main:\n  - cycle: {name: A, target: 2 s}\n"),
        "is not a thickness",
        11,
    ),
    (
        "unknown-cycle",
        body(main="main:\n  - cycle: {name: B, repeat: 3}\n"),
        "no cycle named 'B'",
        11,
    ),
    (
        "unknown-param",
        body(main="main:\n  - cycle: {name: A, repeat: $n}\n"),
        "unknown parameter $n",
        11,
    ),
    (
        "param-wrong-kind",
        "params: {t: 10}\n" + body(cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{TMA: $t}")),
        "from parameter $t",
        7,
    ),
    (
        "duplicate-key",
        body(setup="setup:\n  - set: {substrate: 200 degC, substrate: 210 degC}\n"),
        "duplicate key 'substrate'",
        2,
    ),
    (
        "every-in-main",
        body(main="main:\n  - every: {n: 2, steps: [{wait: 1 s}]}\n"),
        "'every' is not allowed in main",
        11,
    ),
    (
        "supercycle-one-kind",
        body(main="main:\n  - supercycle: {ratio: {A: 2}, repeat: 3}\n"),
        "at least two subcycles",
        11,
    ),
    (
        "supercycle-bad-order",
        GOOD_CYCLE.replace("cycles:\n", "cycles:\n  B: [{wait: 1 s}]\n")
        + "main:\n  - supercycle: {ratio: {A: 1, B: 1}, order: shuffled, repeat: 3}\n",
        "interleaved or blocked",
        None,
    ),
    (
        "plasma-without-gas",
        body(
            cycle=GOOD_CYCLE.replace("- pulse: {H2O: 15 ms}", "- plasma: {power: 300 W, time: 5 s}")
        ),
        "plasma step has no gas",
        8,
    ),
    (
        "codose-precursor-coreactant",
        body(cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{TMA: 15 ms, H2O: 15 ms}")),
        "dosed at the same time",
        6,
    ),
    (
        "pulse-below-valve-minimum",
        body(cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{TMA: 2 ms}")),
        "shorter than the TMA valve's minimum",
        6,
    ),
    (
        "substrate-above-max",
        "substrate: {material: Li-metal}\n" + body(),
        "Li-metal substrate limit",
        3,
    ),
    (
        "source-not-heated",
        body(cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{LiOtBu: 2 s}")),
        "source is not heated",
        6,
    ),
    (
        "source-too-cold",
        body(
            setup="setup:\n  - set: {substrate: 225 degC, source.LiOtBu: "
            "100 degC, line.LiOtBu: 160 degC}\n",
            cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{LiOtBu: 2 s}"),
        ),
        "colder than the 140 degC it needs",
        6,
    ),
    (
        "line-colder-than-source",
        body(
            setup="setup:\n  - set: {substrate: 225 degC, source.LiOtBu:"
            " 140 degC, line.LiOtBu: 120 degC}\n",
            cycle=GOOD_CYCLE.replace("{TMA: 15 ms}", "{LiOtBu: 2 s}"),
        ),
        "colder than its source",
        6,
    ),
    (
        "wait-until-no-setpoint",
        "setup:\n  - wait_until: {walls: {within: 2 K}}\n" + GOOD_CYCLE + MAIN,
        "has no setpoint yet",
        2,
    ),
    ("binary-file", b"\x00\x01\x02ELF\x00garbage" * 10, "binary file", 1),
    ("not-utf8", b"name: caf\xe9\nmain: []\n", "not valid UTF-8", 1),
]


def write_case(tmp_path: Path, content: str | bytes) -> Path:
    p = tmp_path / "bad.yaml"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


LOCATED = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): error: .+$", re.M)


@pytest.mark.parametrize(
    ("content", "fragment", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_recipe_is_a_located_error(
    tmp_path: Path,
    run_cli: Callable[..., Any],
    content: str | bytes,
    fragment: str,
    line: int | None,
) -> None:
    path = write_case(tmp_path, content)
    res = run_cli("validate", str(path))
    assert res.code == 2, res.err
    assert "Traceback" not in res.err
    assert fragment in res.err, res.err
    located = [m for m in LOCATED.finditer(res.err) if fragment in m.group(0)]
    assert located, f"no located error line for {fragment!r}:\n{res.err}"
    assert located[0]["file"] == str(path)
    if line is not None:
        assert int(located[0]["line"]) == line, res.err
    for out_line in res.err.splitlines():
        assert "\n" not in out_line


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


def test_all_errors_reported_in_one_pass(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    text = """
setup:
  - set: {substrate: 200 degC, carrier: 20 sccm}
cycles:
  A:
    - pulse: {TMA: 15}
    - purge: 5 parsecs
    - pulse: {XYZ: 15 ms}
    - prge: 5 s
main:
  - cycle: {name: A, repeat: lots}
"""
    res = run_cli("validate", str(write_case(tmp_path, text)))
    assert res.code == 2
    lines = [ln for ln in res.err.splitlines() if ": error: " in ln]
    assert {int(LOCATED.match(ln)["line"]) for ln in lines if LOCATED.match(ln)} >= {  # type: ignore[index]
        6,
        7,
        9,
        11,
    }


def test_circular_include(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    (tmp_path / "a.yaml").write_text("main:\n  - include: b.yaml\n")
    (tmp_path / "b.yaml").write_text("main:\n  - include: a.yaml\n")
    res = run_cli("validate", str(tmp_path / "a.yaml"))
    assert res.code == 2
    assert "circular include: a.yaml -> b.yaml -> a.yaml" in res.err
    assert f"{tmp_path / 'b.yaml'}:2:" in res.err


def test_missing_include(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    (tmp_path / "a.yaml").write_text("main:\n  - include: nowhere.yaml\n")
    res = run_cli("validate", str(tmp_path / "a.yaml"))
    assert res.code == 2
    assert f"{tmp_path / 'a.yaml'}:2:14: error: included file not found" in res.err


def test_missing_file(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    res = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert res.code == 2
    assert "no such file" in res.err


def test_bad_set_on_command_line(run_cli: Callable[..., Any]) -> None:
    res = run_cli("plan", "recipes/al2o3_tma_h2o.yaml", "--set", "T=hot")
    assert res.code == 2
    assert "recipes/al2o3_tma_h2o.yaml:" in res.err
    assert "(from parameter $T)" in res.err


def test_no_traceback_from_a_real_process(tmp_path: Path) -> None:
    """The installed entry point, in its own process, on a garbage file."""
    path = write_case(tmp_path, b"\xff\xfe\x00\x00" * 100)
    proc = subprocess.run(
        [sys.executable, "-m", "aldctl", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}:1:1: error: binary file" in proc.stderr
