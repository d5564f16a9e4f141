"""Hostile input, class by class, with generated cases: every one ends in a located user
error (or a canonical reading), never an internal error, a hang or unbounded work."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aldctl import units, yamlsrc
from aldctl.diagnostics import UserError
from aldctl.units import Kind, UnitError

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "al2o3_tma_h2o.yaml"
LAB = ROOT / "config" / "example-lab.yaml"
HIL = ROOT / "config" / "hil.yaml"
FAST = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))

VALID = [
    ("15 ms", Kind.TIME),
    ("5 s", Kind.TIME),
    ("150 degC", Kind.TEMPERATURE),
    ("2 K", Kind.TEMPERATURE_DELTA),
    ("5 K/min", Kind.TEMPERATURE_RATE),
    ("20 sccm", Kind.FLOW),
    ("0.5 Torr", Kind.PRESSURE),
    ("300 W", Kind.POWER),
    ("10 nm", Kind.THICKNESS),
]
JUNK = "'\"#!&|;`$<>[]{}?,@=~\\"


def _error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


# ---------------------------------------------------------------------- units


@FAST
@given(st.sampled_from(VALID), st.sampled_from(JUNK), st.data())
def test_a_unit_with_junk_anywhere_is_an_error(
    valid: tuple[str, Kind], junk: str, data: st.DataObject
) -> None:
    text, kind = valid
    number, unit = text.split(" ", 1)
    pos = data.draw(st.integers(0, len(unit)))
    with pytest.raises(UnitError):
        units.parse(f"{number} {unit[:pos]}{junk}{unit[pos:]}", kind)


@FAST
@given(st.sampled_from(VALID), st.integers(1, 5), st.booleans())
def test_unbalanced_parentheses_are_unit_errors(
    valid: tuple[str, Kind], n: int, opening: bool
) -> None:
    text, kind = valid
    number, unit = text.split(" ", 1)
    bad = f"{number} {'(' * n}{unit}" if opening else f"{number} {unit}{')' * n}"
    with pytest.raises(UnitError, match="unbalanced"):
        units.parse(bad, kind)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200), st.sampled_from([k for _, k in VALID]))
def test_any_text_is_a_number_or_a_unit_error(text: str, kind: Kind) -> None:
    try:
        value = units.parse(text, kind)
    except UnitError:
        return
    assert math.isfinite(value)


@settings(max_examples=20, deadline=None)
@given(st.integers(100, 50_000), st.sampled_from(["m*", "(ms)*", "s/", "ms**2*"]))
def test_long_unit_strings_are_refused_before_pint(n: int, piece: str) -> None:
    # 50 kB took pint ~18 s: the shape check answers in microseconds (the test's deadline
    # is hypothesis's default only in spirit; a regression shows as a slow test run)
    with pytest.raises(UnitError, match="too long"):
        units.parse("15 " + piece * (n // len(piece)), Kind.TIME)


@FAST
@given(st.floats(min_value=5e-324, max_value=9.9e-7, allow_subnormal=True))
def test_durations_below_a_microsecond_are_errors(seconds: float) -> None:
    with pytest.raises(UnitError, match="shorter than a microsecond"):
        units.parse(f"{seconds!r} s", Kind.TIME)


@FAST
@given(st.floats(min_value=1e13, max_value=1e300), st.sampled_from(VALID[2:]))
def test_astronomical_magnitudes_are_errors(value: float, valid: tuple[str, Kind]) -> None:
    _, kind = valid
    unit = valid[0].split(" ", 1)[1]
    with pytest.raises(UnitError):
        units.parse(f"{value!r} {unit}", kind)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("150 de1/0gC", Kind.TEMPERATURE),  # found by the 100,000-input campaign
        ("15 m/0s", Kind.TIME),
        ("15 ms/0", Kind.TIME),
        ("15 ms**0", Kind.TIME),
        ("15 s**-0", Kind.TIME),
    ],
)
def test_well_shaped_but_meaningless_units_are_unit_errors(text: str, kind: Kind) -> None:
    with pytest.raises(UnitError):
        units.parse(text, kind)


def test_whole_unit_tokens_in_a_recipe(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    for bad in ("15 'ms", "15 ms#", "15 (ms", "5e-324 s"):
        r = tmp_path / "r.yaml"
        r.write_text(RECIPE.read_text().replace("tma_pulse: 15 ms", f'tma_pulse: "{bad}"'))
        res = run_cli("validate", str(r))
        assert res.code == 2, (bad, res.err)
        assert f"{r}:" in res.err
        assert "error:" in res.err
        assert "internal" not in res.err


# ---------------------------------------------------------------------- closed vocabularies


def _li_spellings() -> st.SearchStrategy[str]:
    sep = st.sampled_from(["-", " ", "_", "", "  ", "- "])
    return st.builds(
        lambda li, s, metal: f"{li}{s}{metal}",
        st.sampled_from(["li", "Li", "LI", "lI"]),
        sep,
        st.sampled_from(["metal", "Metal", "METAL", "mEtal"]),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(_li_spellings())
def test_every_spelling_of_li_metal_keeps_its_150_degc_limit(tmp_path: Path, name: str) -> None:
    from aldctl.session import prepare

    r = tmp_path / "li.yaml"
    text = RECIPE.read_text().replace("T: 150 degC", "T: 250 degC")
    r.write_text(text.replace("{material: Si}", f"{{material: '{name}'}}"))
    with pytest.raises(UserError) as exc:
        prepare(r, None)
    msgs = [d.format() for d in exc.value.diagnostics]
    assert any("Li-metal substrate limit" in m and "150 degC" in m for m in msgs), msgs


@pytest.mark.parametrize("name", ["Li-metl", "Li-metall", "Na-metl"])
def test_a_near_miss_of_a_library_substrate_is_an_error(
    tmp_path: Path, run_cli: Callable[..., Any], name: str
) -> None:
    r = tmp_path / "r.yaml"
    r.write_text(RECIPE.read_text().replace("{material: Si}", f"{{material: {name}}}"))
    res = run_cli("validate", str(r))
    assert res.code == 2
    assert "did you mean" in res.err
    assert "unknown substrate material" in res.err


@pytest.mark.parametrize("word", ["off", "Off", "OFF", "hold"])
def test_heaters_on_safe_state_as_the_readme_writes_it(
    tmp_path: Path, run_cli: Callable[..., Any], word: str
) -> None:
    from aldctl import config

    c = tmp_path / "tool.yaml"
    key = "heaters_on_safe_state"
    c.write_text(LAB.read_text().replace(f"{key}: hold", f"{key}: {word}"))
    tool = config.load_tool(c)
    assert tool.safety.heaters_on_safe_state == word.lower()


# ---------------------------------------------------------------------- YAML bounds


@settings(max_examples=12, deadline=None)
@given(st.integers(65, 1000), st.sampled_from(["[", "{a: "]))
def test_deep_nesting_is_a_located_error(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = "main: " + opener * depth + closer * depth + "\n"
    with pytest.raises(UserError) as exc:
        yamlsrc.parse_text(text, "deep.yaml")
    (d,) = exc.value.diagnostics
    assert d.location is not None
    assert d.location.file == "deep.yaml"
    # ours ("nested more than 64 levels") or, past libyaml's own limit of 1,000, its
    # "exceeded maximum nesting depth": both located user errors
    assert "nest" in d.message


@settings(max_examples=5, deadline=None)
@given(st.integers(4, 12), st.integers(5, 12))
def test_alias_expansion_is_bounded(levels: int, fan: int) -> None:
    lines = ["l0: &l0 [" + ", ".join(["x"] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]")
    text = "\n".join(lines) + f"\nmain: *l{levels - 1}\n"
    # values the located tree would hold: every alias written out
    sizes = [1 + fan]
    for _ in range(1, levels):
        sizes.append(1 + fan * sizes[-1])
    total = 1 + sum(1 + n for n in sizes) + 1 + sizes[-1]
    if total <= yamlsrc.MAX_NODES:
        yamlsrc.parse_text(text, "ok.yaml")  # small expansions stay legal
        return
    with pytest.raises(UserError, match="expands to more than"):
        yamlsrc.parse_text(text, "laughs.yaml")


@pytest.mark.parametrize(
    "text",
    ["a: &a [*a]\nmain: []\n", "a: &a {b: *a}\nmain: []\n", "a: &a [1, [2, *a]]\nmain: []\n"],
)
def test_recursive_aliases_are_located_errors(text: str) -> None:
    with pytest.raises(UserError, match="recursive alias"):
        yamlsrc.parse_text(text, "rec.yaml")


def test_special_files_are_refused_without_reading(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # nobody writes: a blocking open or read would hang here
    for args in (
        ("validate", str(fifo)),
        ("validate", "/dev/zero"),
        ("validate", str(RECIPE), "--config", "/dev/zero"),
        ("validate", str(RECIPE), "--config", str(fifo)),
    ):
        res = run_cli(*args)
        assert res.code == 2, (args, res.err)
        assert "not a regular file" in res.err


def test_an_oversized_file_is_refused_reading_no_more_than_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * yamlsrc.MAX_FILE_BYTES)
    with pytest.raises(UserError, match="larger than"):
        yamlsrc.read_source(big)


# ---------------------------------------------------------------------- includes


def _including(tmp_path: Path, target: str) -> Path:
    r = tmp_path / "r.yaml"
    r.write_text(f"main:\n  - include: {target!r}\n")
    return r


@pytest.mark.parametrize(
    "target",
    [
        "/etc/passwd",
        "/etc/shadow",
        "../../../../etc/passwd",
        "x" * 300 + ".yaml",
        "a/" + "y" * 256 + ".yaml",
        "loop.yaml",
        "/dev/zero",
        "../outside.yaml",
    ],
)
def test_includes_are_confined_and_located(
    tmp_path: Path, run_cli: Callable[..., Any], target: str
) -> None:
    inner = tmp_path / "in"
    inner.mkdir()
    (tmp_path / "outside.yaml").write_text("secret_key: hunter2\nmain: []\n")
    (inner / "loop.yaml").symlink_to(inner / "loop2.yaml")
    (inner / "loop2.yaml").symlink_to(inner / "loop.yaml")
    r = _including(inner, target)
    res = run_cli("validate", str(r))
    assert res.code == 2, res.err
    assert f"{r}:2:" in res.err, res.err
    assert "internal" not in res.err
    for secret in ("root:", "hunter2", "secret_key", "daemon"):
        assert secret not in res.err


def test_an_include_under_a_configured_root_works(
    tmp_path: Path, run_cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "film.yaml").write_text((ROOT / "tests" / "recipes" / "sub.yaml").read_text())
    mine = tmp_path / "mine"
    mine.mkdir()
    r = _including(mine, str(shared / "film.yaml"))
    assert run_cli("validate", str(r)).code == 2
    monkeypatch.setenv("ALDCTL_RECIPE_PATH", str(shared))
    res = run_cli("validate", str(r))
    assert res.code == 0, res.err


def test_a_file_that_is_no_recipe_is_not_echoed(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    f = tmp_path / "creds.yaml"
    f.write_text("user: admin\npassword_hash: $6$abcdefgh$SECRETSECRET\n")
    res = run_cli("validate", str(f))
    assert res.code == 2
    assert "not a recipe" in res.err
    assert "SECRET" not in res.err
    assert "password" not in res.err


# ---------------------------------------------------------------------- terminals


@FAST
@given(st.sampled_from(["\\e[2J", "\\x1b]0;pwned\\x07", "\\x9b31m", "\\u202e", "\\x00", "\\r"]))
def test_escape_sequences_in_recipe_text_are_neutralised(esc: str) -> None:
    text = f'name: "evil{esc}name"\nmain:\n  - wait: "5 s{esc}"\n'
    from tempfile import TemporaryDirectory

    from aldctl.recipe.load import load_recipe

    with TemporaryDirectory() as d:
        p = Path(d) / "e.yaml"
        p.write_text(text)
        with pytest.raises(UserError) as exc:
            load_recipe(p)
    out = "\n".join(d.format() for d in exc.value.diagnostics)
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", out), repr(out)
    tree = yamlsrc.parse_text(text, "e.yaml")
    assert isinstance(tree, yamlsrc.Map)
    name = tree.get("name")
    assert isinstance(name, yamlsrc.Scalar)
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", name.value)
    assert "\\" in name.value  # shown as an escape, not dropped


# ---------------------------------------------------------------------- tool configs


def test_an_unknown_chemical_in_a_line_is_located_with_a_hint(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    c = tmp_path / "tool.yaml"
    c.write_text(LAB.read_text().replace("chemical: TMA,", "chemical: TMAX,"))
    res = run_cli("validate", str(RECIPE), "--config", str(c))
    assert res.code == 2
    line = next(i for i, ln in enumerate(c.read_text().splitlines(), 1) if "TMAX" in ln)
    assert f"{c}:{line}:" in res.err
    assert "unknown chemical 'TMAX'" in res.err
    assert "did you mean 'TMA'" in res.err


def test_cross_reference_errors_point_at_their_line(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    text = LAB.read_text()
    text = re.sub(r"(\n  chamber:\s+\{device: )\w+", r"\1nosuchgauge", text, count=1)
    c = tmp_path / "tool.yaml"
    c.write_text(text)
    res = run_cli("validate", str(RECIPE), "--config", str(c))
    assert res.code == 2
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "nosuchgauge" in ln)
    assert f"{c}:{line}:" in res.err, res.err
    assert ":1:1:" not in res.err


@pytest.mark.parametrize(
    "line",
    ["substrate_c: 1000000000", "substrate_c: -300", "walls_c: 9223372036854775808"],
)
def test_an_impossible_simulator_temperature_is_a_located_error(
    tmp_path: Path, run_cli: Callable[..., Any], line: str
) -> None:
    """Found by the 100,000-input fuzz run: a simulated reactor at 1e9 degC divided by zero
    in the gas model while validation predicted the dose peaks (internal error, exit 3)."""
    c = tmp_path / "tool.yaml"
    key = line.split(":", maxsplit=1)[0]
    text = (ROOT / "config" / "hil.yaml").read_text()
    old = next(ln for ln in text.splitlines() if ln.startswith(f"  {key}:"))
    c.write_text(text.replace(old, f"  {line}"))
    # validate predicts dose peaks on the simulator when it can; it must not crash
    res = run_cli("validate", str(RECIPE), "--config", str(c))
    assert res.code in (0, 2), res.err
    assert "internal" not in res.err
    # the simulator that the section configures refuses it, naming the key
    res = run_cli("simulate", str(RECIPE), "--config", str(c))
    assert res.code == 2, res.err
    assert "internal" not in res.err
    assert f"{key} = " in res.err
    assert "degC is outside" in res.err
    assert "simulator:" in res.err


# ---------------------------------------------------------------------- driver options


def _device_options(path: Path) -> list[tuple[str, str, object]]:
    """(device, option, value) for every driver option a shipped tool config writes."""
    tree = yamlsrc.load_file(path)
    assert isinstance(tree, yamlsrc.Map)
    devices = tree.get("devices")
    assert isinstance(devices, yamlsrc.Map)
    out = []
    from aldctl.config import to_plain

    for name, spec in to_plain(devices).items():
        for option, value in spec.items():
            if option not in ("driver", "connect_timeout"):
                out.append((name, option, value))
    return out


SHIPPED_OPTIONS = [(cfg, *o) for cfg in (LAB, HIL) for o in _device_options(cfg)]


def _wrong(value: object) -> object:
    """A value of the wrong kind for an option that has ``value``."""
    if isinstance(value, bool):
        return "maybe"
    if isinstance(value, int | float):
        return "fast"
    return 12345


def _with_option(path: Path, device: str, option: str, key: str, value: object) -> str:
    """``path``'s text with ``device``'s ``option: ...`` written as ``key: value``."""
    lines = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"\s+{device}:\s", ln))
    for i in range(start, len(lines)):
        new, n = re.subn(
            rf"([{{,\s]){option}:\s*[^,}}]+", rf"\g<1>{key}: {value}", lines[i], count=1
        )
        if n:
            lines[i] = new
            return "\n".join(lines) + "\n"
    raise AssertionError(f"{device}.{option} not found in {path}")


@FAST
@given(st.sampled_from(SHIPPED_OPTIONS), st.booleans(), st.data())
def test_a_bad_driver_option_is_an_error_at_its_line_before_anything_connects(
    case: tuple[Path, str, str, object], misspell: bool, data: st.DataObject
) -> None:
    """Every option of every device of the shipped configs, misspelt or given a value of
    the wrong kind: ``parse_tool`` (what ``aldctl validate`` and ``aldctl run`` load a tool
    with) refuses it at the option's line, naming the device and the option, with a
    suggestion for a misspelling. On 5513b8a both passed validation and failed at connect,
    after the run record was made, with no location."""
    from aldctl.config import parse_tool

    path, device, option, value = case
    if misspell:
        i = data.draw(st.integers(0, len(option) - 1))
        key = option[:i] + option[i + 1 :]  # one letter dropped: the commonest typo
        assume_distinct = {o for _, d, o, _ in SHIPPED_OPTIONS if d == device}
        if key in assume_distinct or not key:
            return
        text = _with_option(path, device, option, key, value)
        shown = key
    else:
        text = _with_option(path, device, option, option, _wrong(value))
        shown = option
    line = next(
        n
        for n, ln in enumerate(text.splitlines(), 1)
        if re.search(rf"[{{,\s]{shown}:", ln) and n > _line_of_device(text, device) - 1
    )
    with pytest.raises(UserError) as err:
        parse_tool(yamlsrc.parse_text(text, "tool.yaml"), "tool.yaml")
    found = [d for d in err.value.diagnostics if f"devices.{device}.{shown}" in d.message]
    assert found, [d.format() for d in err.value.diagnostics]
    d = found[0]
    assert d.location is not None, d.format()
    assert d.location.line == line, d.format()
    if misspell and len(option) > 3:
        assert f"'{option}'" in d.hint, d.format()


def _line_of_device(text: str, device: str) -> int:
    return next(n for n, ln in enumerate(text.splitlines(), 1) if re.match(rf"\s+{device}:\s", ln))


def test_a_bad_driver_option_stops_a_run_before_its_record_is_made(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    c = tmp_path / "tool.yaml"
    c.write_text(_with_option(LAB, "valves", "watchdog", "watchdog", "fast"))
    line = _line_of_device(c.read_text(), "valves") + 1
    res = run_cli("validate", str(RECIPE), "--config", str(c))
    assert res.code == 2
    assert f"{c}:{line}:" in res.err, res.err
    assert "option 'watchdog' must be a number" in res.err
    data = tmp_path / "data"
    res = run_cli("run", str(RECIPE), "--config", str(c), "--data-dir", str(data))
    assert res.code == 2, res.err
    assert f"{c}:{line}:" in res.err, res.err
    assert "Traceback" not in res.err
    from aldctl.engine.journal import Journal

    if (data / "journal.sqlite").exists():
        j = Journal(data, readonly=True)
        try:
            assert j.runs(10) == []
        finally:
            j.close()
