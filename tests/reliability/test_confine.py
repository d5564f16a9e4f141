"""Confinement, class by class, with generated cases: a file that is not an aldctl document is
never echoed, whichever loader reads it; includes are bounded in number and in values; every
user path is read bounded; text that reaches a terminal has its escape sequences shown, not
executed."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aldctl import yamlsrc
from aldctl.diagnostics import UserError
from aldctl.recipe import load as recipe_load

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "al2o3_tma_h2o.yaml"
SUB = ROOT / "tests" / "recipes" / "sub.yaml"
BUILTIN = ROOT / "aldctl" / "data" / "sim-tool.yaml"
GEN = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))

# ---------------------------------------------------------------------- secrets never echoed

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_CRYPT = _B64 + "./"


@st.composite
def _secret_line(draw: st.DrawFn) -> tuple[str, str]:
    """(a line, its distinctive part): what a password file, a token file or a .env holds."""
    kind = draw(st.sampled_from(["shadow", "env", "yaml", "token", "alias", "quoted"]))
    user = draw(st.from_regex(r"[a-z][a-z0-9_]{1,10}", fullmatch=True))
    if kind == "shadow":
        salt = draw(st.text(_CRYPT, min_size=8, max_size=16))
        digest = draw(st.text(_CRYPT, min_size=22, max_size=86))
        algo = draw(st.sampled_from(["1", "5", "6", "y$j9T"]))
        return f"{user}:${algo}${salt}${digest}:19000:0:99999:7:::", digest
    blob = base64.b64encode(draw(st.binary(min_size=24, max_size=60))).decode()
    if kind == "env":
        return f"{user.upper()}_TOKEN={blob}", blob
    if kind == "yaml":
        return f"{user}_password: {blob}", blob
    token = draw(st.text(_B64, min_size=33, max_size=64))
    if kind == "token":
        return token, token
    if kind == "alias":  # PyYAML quotes an undefined alias's name in its error
        return f"*{token}", token
    return f'"{blob}": x', blob


@st.composite
def _secret_file(draw: st.DrawFn) -> tuple[str, list[str]]:
    lines = draw(st.lists(_secret_line(), min_size=1, max_size=6))
    text = [ln for ln, _ in lines]
    if draw(st.booleans()):  # a repeated line: YAML's duplicate-key error quotes the key
        text.append(text[0])
    return "\n".join(text) + "\n", [s for _, s in lines]


ENTRY_POINTS: list[Callable[[str], list[str]]] = [
    lambda f: ["validate", str(RECIPE), "--config", f],
    lambda f: ["plan", str(RECIPE), "--config", f],
    lambda f: ["--chemistry", f, "validate", str(RECIPE)],
    lambda f: ["tool", "show", "--config", f],
    lambda f: ["sim", "serve", "--config", f],
    lambda f: ["tune", "dose", "--profile", f, "--trial-dose", "1s"],
]
# The same lines inside an otherwise valid document: only unknown keys that are plain words
# may be named.
WRAPPERS: list[Callable[[str], str]] = [
    lambda secret: secret,
    lambda secret: BUILTIN.read_text(encoding="utf-8") + secret,
    lambda secret: "chemicals: {}\n" + secret,
]


@GEN
@given(_secret_file(), st.sampled_from(range(len(ENTRY_POINTS))), st.sampled_from(WRAPPERS))
def test_no_loader_echoes_a_file_that_is_not_its_document(
    run_cli: Callable[..., Any],
    secret: tuple[str, list[str]],
    entry: int,
    wrap: Callable[[str], str],
) -> None:
    text, distinctive = secret
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "creds"
        path.write_text(wrap(text), encoding="utf-8")
        saved = os.environ.get("ALDCTL_CHEMISTRY")
        try:
            res = run_cli(*ENTRY_POINTS[entry](str(path)))
        finally:  # --chemistry sets it for the process; the next example must not see it
            os.environ.pop("ALDCTL_CHEMISTRY", None)
            if saved is not None:
                os.environ["ALDCTL_CHEMISTRY"] = saved
    assert res.code == 2, (res.code, res.err)
    assert re.search(r"creds:\d+:\d+: error: ", res.err), res.err
    for s in distinctive:
        for part in (s[:12], s[-12:]):
            assert part not in res.out + res.err, (part, res.err)


def test_a_plain_unknown_key_is_still_named(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    cfg = tmp_path / "tool.yaml"
    cfg.write_text(BUILTIN.read_text(encoding="utf-8") + "lmits: {}\n", encoding="utf-8")
    res = run_cli("validate", str(RECIPE), "--config", str(cfg))
    assert res.code == 2
    assert "unknown key 'lmits'" in res.err


# ---------------------------------------------------------------------- include expansion


def _include_tree(tmp: Path, fan: int, depth: int) -> Path:
    (tmp / "l0.yaml").write_text(SUB.read_text(encoding="utf-8"), encoding="utf-8")
    for i in range(1, depth + 1):
        body = "".join(f"  - include: l{i - 1}.yaml\n" for _ in range(fan))
        (tmp / f"l{i}.yaml").write_text(f"main:\n{body}", encoding="utf-8")
    return tmp / f"l{depth}.yaml"


def _documents(fan: int, depth: int) -> int:
    return sum(fan**k for k in range(1, depth + 1))


_SHAPES = [(f, d) for f in range(1, 7) for d in range(1, 12) if _documents(f, d) <= 3000]


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([s for s in _SHAPES if _documents(*s) > recipe_load.MAX_INCLUDES]))
def test_include_fan_out_past_the_bound_is_a_located_error(shape: tuple[int, int]) -> None:
    fan, depth = shape
    with tempfile.TemporaryDirectory() as tmp:
        top = _include_tree(Path(tmp), fan, depth)
        with pytest.raises(UserError) as exc:
            recipe_load.load_recipe(top)
    lines = [d.format() for d in exc.value.diagnostics]
    first = lines[0]
    assert re.match(r".*/l\d+\.yaml:\d+:14: error: more than \d+ included recipes in all", first)
    assert "hint: " in first
    assert len(lines) <= depth + 1  # said once, then one line per including file


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([s for s in _SHAPES if _documents(*s) <= 120]))
def test_small_include_trees_still_load(shape: tuple[int, int]) -> None:
    fan, depth = shape
    with tempfile.TemporaryDirectory() as tmp:
        top = _include_tree(Path(tmp), fan, depth)
        loaded = recipe_load.load_recipe(top)
    assert len(loaded.recipe.includes) == _documents(fan, depth)


def test_included_values_are_bounded_like_aliases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Few includes of big files: the values bound, not the count, refuses them."""
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 150)
    top = _include_tree(tmp_path, 8, 1)  # 8 x sub.yaml (~25 values each)
    with pytest.raises(UserError) as exc:
        recipe_load.load_recipe(top)
    assert "the included recipes expand to more than 150 values" in str(exc.value.diagnostics[0])


# ---------------------------------------------------------------------- bounded reads

_READERS = {
    "tune --profile": "from aldctl.tune.dose import read_profile as r",
    "mqtt credentials": "from aldctl.front.telemetry.broker import read_credentials as r",
    "tune recipe": "from aldctl.front.tunerun import all_cycle_doses as r",
}


def test_every_user_path_reader_refuses_special_files(tmp_path: Path) -> None:
    """/dev/zero never ends and a FIFO with no writer blocks for ever: each reader refuses
    both before reading (one child process for all, so a hang is a timeout, not a stuck run)."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    script = "\n".join(
        [
            "import resource, sys",
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))",
            *(
                f"{imp}\n"
                f"for f in ('/dev/zero', {str(fifo)!r}):\n"
                "    try:\n"
                "        r(__import__('pathlib').Path(f))\n"
                f"        print({name!r}, f, 'read')\n"
                "    except Exception as e:\n"
                f"        print({name!r}, f, type(e).__name__, str(e)[:200])\n"
                for name, imp in _READERS.items()
            ),
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 2 * len(_READERS), out.stdout + out.stderr
    for line in lines:
        assert re.search(r"(a device|a FIFO \(named pipe\)), not a regular file", line), line


# ---------------------------------------------------------------------- escapes at output

NOTED = RECIPE.read_text(encoding="utf-8").replace("params:\n", "params:\n  note: none\n", 1)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_HOSTILE = st.sampled_from(
    ["\x1b]0;PWNED\x07", "\x1b[2J", "\x1b[31m", "\x9b31m", "\x07", "\u202e", "\u2066", "\x7f"]
)


@st.composite
def _hostile_text(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.one_of(_HOSTILE, st.text("abcXYZ09 -_", max_size=4)), max_size=6))
    return "x" + "".join(parts) + draw(_HOSTILE)


@GEN
@given(_hostile_text())
def test_set_values_never_reach_the_terminal_raw(run_cli: Callable[..., Any], value: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "noted.yaml"
        recipe.write_text(NOTED, encoding="utf-8")
        res = run_cli("plan", str(recipe), "--set", f"note={value}")
    assert res.code == 0, res.err
    assert "note=" in res.out
    assert not _CONTROL.search(res.out + res.err), repr(res.out)


@GEN
@given(_hostile_text(), st.booleans())
def test_file_names_never_reach_the_terminal_raw(
    run_cli: Callable[..., Any], name: str, broken: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        text = RECIPE.read_text(encoding="utf-8") + ("bogus: 1\n" if broken else "")
        path.write_text(text, encoding="utf-8")
        res = run_cli("validate", str(path))
    assert res.code == (2 if broken else 0), res.err
    assert ".yaml" in res.out + res.err
    assert not _CONTROL.search(res.out + res.err), repr(res.out + res.err)


def test_runs_show_replays_a_set_value_neutralised(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    d = str(tmp_path)
    recipe = tmp_path / "noted.yaml"
    recipe.write_text(NOTED, encoding="utf-8")
    res = run_cli(
        "run", str(recipe), "--data-dir", d, "--set", "cycles=1", "--set", "note=\x1b]0;PWNED\x07x"
    )
    assert res.code == 0, res.err
    shown = run_cli("runs", "show", "2", "--data-dir", d)  # a prefix of the only id
    assert "note=\\x1b]0;PWNED\\x07x" in shown.out, shown.out
    assert not _CONTROL.search(shown.out + shown.err)


# ---------------------------------------------------------------------- no existence oracle


@pytest.mark.parametrize("exists", [True, False])
@pytest.mark.parametrize("spelling", ["../outside/{n}", "{abs}"])
def test_an_include_outside_the_roots_is_outside_whether_or_not_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exists: bool, spelling: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outside").mkdir()
    (tmp_path / "in").mkdir()
    target = tmp_path / "outside" / "x.yaml"
    if exists:
        target.write_text(SUB.read_text(encoding="utf-8"), encoding="utf-8")
    fname = spelling.format(n="x.yaml", abs=target)
    top = tmp_path / "in" / "top.yaml"
    top.write_text(f"main:\n  - include: {fname}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "in")
    with pytest.raises(UserError) as exc:
        recipe_load.load_recipe(top)
    text = "\n".join(d.format() for d in exc.value.diagnostics)
    assert "is outside the recipe's directory" in text
    assert "not found" not in text
