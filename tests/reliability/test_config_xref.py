"""Tool-config cross-references, generated from the configs we ship: every place a config
names a device (``device:``, a line's heaters, ``auto_lines.valves``) or a device's channel
(``valves:3``, ``interlocks:0``) is found by walking the YAML, and each is pointed at a
channel the device does not have and at a device of the wrong kind; every pair of values
that must agree is made to contradict. Each must be refused when the config loads, at the
reference's own line and column. On 0b233ca all of these loaded: a channel past the module's
end failed at the first pulse, after the run record was made ("no channel 99"); a heater on a
gauge or a flow on a temperature controller failed at build time as one line with no
location; the contradictions were accepted."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aldctl import config as cfg
from aldctl import yamlsrc
from aldctl.diagnostics import Diagnostic, UserError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {
    "lab": (ROOT / "config" / "example-lab.yaml").read_text(),
    "hil": (ROOT / "config" / "hil.yaml").read_text(),
    "builtin": cfg.builtin_text(),
}
RECIPE = ROOT / "recipes" / "al2o3_tma_h2o.yaml"

# What each driver is, as the README's driver table says (written here, not asked of the
# code under test), and what each role needs, with the words a user reads.
KIND = {
    "modbus-dio": "valves",
    "simulated-valves": "valves",
    "eurotherm3200": "temperature",
    "watlow-pm": "temperature",
    "simulated-heater": "temperature",
    "alicat": "flow",
    "simulated-mfc": "flow",
    "pfeiffer": "pressure",
    "simulated-gauge": "pressure",
    "aebus": "plasma",
    "simulated-rf": "plasma",
    "ozone-modbus": "ozone",
    "simulated-ozone": "ozone",
    "sqm160": "thickness",
    "simulated-qcm": "thickness",
    "simulated-inputs": "inputs",
}
NOUN = {
    "valves": "a valve module",
    "flow": "a mass-flow controller",
    "temperature": "a temperature controller",
    "pressure": "a pressure gauge",
    "plasma": "a plasma source",
    "ozone": "an ozone generator",
    "thickness": "a thickness monitor (QCM)",
    "inputs": "a digital-input module",
}
INPUT_CHANNELS = {"simulated-inputs": 2}  # the simulated tool's two interlock contacts


def _role(path: tuple[str, ...]) -> str:
    """The role a reference at ``path`` gives its device (README, tool config reference)."""
    top, last = path[0], path[-1]
    if top == "lines":
        return "valves" if last == "valve" else "temperature"
    fixed = {
        "pump_isolation": "valves",
        "carrier_shutoff": "valves",
        "auto_lines": "valves",
        "heaters": "temperature",
        "flows": "flow",
        "gauges": "pressure",
        "plasma": "plasma",
        "ozone": "ozone",
        "qcm": "thickness",
        "interlocks": "inputs",
    }
    if top not in fixed:
        raise AssertionError(f"a reference kind this test does not know: {'.'.join(path)}")
    return fixed[top]


def _walk(node: yamlsrc.Node, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, yamlsrc.Map):
        for k, v in node.entries:
            yield from _walk(v, (*path, str(k.value)))
    elif isinstance(node, yamlsrc.Seq):
        for i, v in enumerate(node.items):
            yield from _walk(v, (*path, str(i)))
    else:
        yield path, node


def _references(text: str) -> list[tuple[tuple[str, ...], yamlsrc.Scalar, str, int | None]]:
    """(path, scalar, device, channel or None) of every device reference in ``text``."""
    tree = yamlsrc.parse_text(text, "tool.yaml")
    assert isinstance(tree, yamlsrc.Map)
    devices = tree.get("devices")
    assert isinstance(devices, yamlsrc.Map)
    names = set(devices.keys())
    out = []
    for path, scalar in _walk(tree, ()):
        if path[0] in ("devices", "simulator") or not isinstance(scalar.value, str):
            continue
        m = re.fullmatch(r"\s*([^:\s]+):(\d+)\s*", scalar.value)
        if m and m.group(1) in names:
            out.append((path, scalar, m.group(1), int(m.group(2))))
        elif path[-1] in ("device", "source_heater", "line_heater") or path == (
            "auto_lines",
            "valves",
        ):
            assert scalar.value in names, path
            out.append((path, scalar, scalar.value, None))
    return out


def _drivers(text: str) -> dict[str, tuple[str, dict[str, Any]]]:
    tool = cfg.parse_tool(yamlsrc.parse_text(text, "tool.yaml"), "tool.yaml")
    return {n: (d.driver, d.options) for n, d in tool.devices.items()}


def _replace_at(text: str, scalar: yamlsrc.Scalar, new: str) -> str:
    lines = text.split("\n")
    i = scalar.loc.line - 1
    j = lines[i].index(scalar.text, scalar.loc.col - 1)
    lines[i] = lines[i][:j] + new + lines[i][j + len(scalar.text) :]
    return "\n".join(lines)


def _errors(text: str) -> list[Diagnostic]:
    with pytest.raises(UserError) as err:
        cfg.parse_tool(yamlsrc.parse_text(text, "tool.yaml"), "tool.yaml")
    return [d for d in err.value.diagnostics if d.severity.name == "ERROR"]


def _the_error(text: str, start: str) -> Diagnostic:
    errors = _errors(text)
    found = [d for d in errors if d.message.startswith(start)]
    assert found, [d.format() for d in errors]
    assert all(d.location is not None and d.location.line > 1 for d in errors), [
        d.format() for d in errors
    ]
    return found[0]


def _channel_cases() -> list[Any]:
    cases = []
    for cname, text in SHIPPED.items():
        drivers = _drivers(text)
        for path, scalar, device, channel in _references(text):
            if channel is None:
                continue
            driver, options = drivers[device]
            count = options.get("channels", INPUT_CHANNELS.get(driver, 16))
            for bad in (count, count + 1000):  # the first past the end, and far past it
                ident = f"{cname}-{'.'.join(path)}-{bad}"
                cases.append(pytest.param(cname, path, scalar, device, count, bad, id=ident))
    return cases


def _kind_cases() -> list[Any]:
    cases = []
    for cname, text in SHIPPED.items():
        drivers = _drivers(text)
        for n, (path, scalar, device, channel) in enumerate(_references(text)):
            role = _role(path)
            assert KIND[drivers[device][0]] == role, (cname, path)  # the shipped one is right
            wrong = sorted(d for d, (drv, _) in drivers.items() if KIND[drv] != role)
            other = wrong[n % len(wrong)]  # a different wrong kind for each reference
            new = other if channel is None else f"{other}:{channel}"
            ident = f"{cname}-{'.'.join(path)}-on-{other}"
            cases.append(pytest.param(cname, path, scalar, new, other, id=ident))
    return cases


@pytest.mark.parametrize(("cname", "path", "scalar", "device", "count", "bad"), _channel_cases())
def test_a_channel_the_device_does_not_have_is_refused_at_the_reference(
    cname: str, path: tuple[str, ...], scalar: yamlsrc.Scalar, device: str, count: int, bad: int
) -> None:
    # count: the first channel past the end, the off-by-one of a user counting from 1
    text = _replace_at(SHIPPED[cname], scalar, f"{device}:{bad}")
    where = ".".join(path)
    d = _the_error(text, f"{where}: '{device}' has no channel {bad}")
    assert d.location is not None
    assert (d.location.line, d.location.col) == (scalar.loc.line, scalar.loc.col), d.format()
    assert f"0..{count - 1}" in d.hint, d.format()


@pytest.mark.parametrize(("cname", "path", "scalar", "new", "other"), _kind_cases())
def test_a_device_of_the_wrong_kind_is_refused_at_the_reference(
    cname: str, path: tuple[str, ...], scalar: yamlsrc.Scalar, new: str, other: str
) -> None:
    text = _replace_at(SHIPPED[cname], scalar, new)
    driver = _drivers(SHIPPED[cname])[other][0]
    role = _role(path)
    where = ".".join(path)
    d = _the_error(text, f"{where}: '{other}' is {NOUN[KIND[driver]]} ({driver}), not {NOUN[role]}")
    assert d.location is not None
    assert (d.location.line, d.location.col) == (scalar.loc.line, scalar.loc.col), d.format()


# ---------------------------------------------------------------------- contradictions


def _set(text: str, path: tuple[str, ...], key: str, value: str) -> str:
    """``text`` with ``path.key`` set to ``value`` (the key added where it is missing)."""
    tree = yamlsrc.parse_text(text, "tool.yaml")
    node: yamlsrc.Node | None = tree
    for part in path:
        assert isinstance(node, yamlsrc.Map)
        node = node.get(part)
    if node is None:
        return text.rstrip("\n") + f"\n{path[0]}: {{{key}: {value}}}\n"
    assert isinstance(node, yamlsrc.Map)
    old = node.get(key)
    if isinstance(old, yamlsrc.Scalar):
        return _replace_at(text, old, value)
    lines = text.split("\n")
    i, c = node.loc.line - 1, node.loc.col - 1
    if lines[i][c] == "{":
        lines[i] = lines[i][: c + 1] + f"{key}: {value}, " + lines[i][c + 1 :]
    else:
        first = node.entries[0][0].loc
        lines.insert(first.line - 1, " " * (first.col - 1) + f"{key}: {value}")
    return "\n".join(lines)


def _value_loc(text: str, path: tuple[str, ...]) -> tuple[int, int]:
    node: yamlsrc.Node | None = yamlsrc.parse_text(text, "tool.yaml")
    for part in path:
        assert isinstance(node, yamlsrc.Map)
        node = node.get(part)
    assert isinstance(node, yamlsrc.Scalar)
    return node.loc.line, node.loc.col


def _contradiction_cases() -> list[Any]:
    cases = []
    for cname, text in SHIPPED.items():
        tool = cfg.parse_tool(yamlsrc.parse_text(text, "tool.yaml"), "tool.yaml")
        edits: list[tuple[tuple[str, ...], list[tuple[str, str]]]] = []
        for n, f in tool.flows.items():
            edits.append((("flows", n, "default"), [("default", f"{f.max + 1:g} sccm")]))
        for n, h in tool.heaters.items():
            edits.append((("heaters", n, "min"), [("min", f"{h.max + 1:g} degC")]))
        p = tool.limits.pressure
        edits.append(
            (("limits", "pressure", "hold_above"), [("hold_above", f"{p.max + 1:g} Torr")])
        )
        gauge = next(iter(tool.gauges.values()))
        edits.append((("limits", "pressure", "max"), [("max", f"{gauge.max * 2:g} Torr")]))
        if tool.plasma is not None:
            pl = tool.plasma
            edits += [
                (("plasma", "pressure_min"), [("pressure_min", f"{pl.pressure_max * 2:g} Torr")]),
                (
                    ("plasma", "pressure_max"),
                    [("pressure_max", f"{(p.hold_above or p.max) + 0.5:g} Torr")],
                ),
                (("plasma", "max_reflected"), [("max_reflected", f"{pl.max_power + 1:g} W")]),
            ]
        carrier = tool.flows["carrier"]
        edits.append(
            (
                ("chamber", "expose_carrier_flow"),
                [
                    ("expose_carrier", "reduce"),
                    ("expose_carrier_flow", f"{carrier.max * 2:g} sccm"),
                ],
            )
        )
        edits.append((("dose_watch", "width_persist"), [("width_persist", "6")]))
        for where, changes in edits:
            ident = f"{cname}-{'.'.join(where)}"
            cases.append(pytest.param(cname, where, changes, id=ident))
    return cases


@pytest.mark.parametrize(("cname", "where", "changes"), _contradiction_cases())
def test_values_that_contradict_each_other_are_refused_at_the_value(
    cname: str, where: tuple[str, ...], changes: list[tuple[str, str]]
) -> None:
    text = SHIPPED[cname]
    for key, value in changes:
        text = _set(text, where[:-1], key, value)
    d = _the_error(text, f"{'.'.join(where)}: ")
    assert d.location is not None
    assert (d.location.line, d.location.col) == _value_loc(text, where), d.format()
    assert d.hint, d.format()


# ---------------------------------------------------------------------- the CLI


LAB = SHIPPED["lab"]


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("valve: valves:0,", "valve: valves:99,", "lines.TMA.valve: 'valves' has no channel 99"),
        ("walls:     {device: tc_walls", "walls:     {device: gauge", "not a temperature"),
        ("plasma.O2: {device: mfc_o2", "plasma.O2: {device: tc_sub", "not a mass-flow"),
        ("default: 20 sccm", "default: 300 sccm", "flows.carrier.default: 300 sccm is above"),
        ("hold_above: 2 Torr", "hold_above: 20 Torr", "limits.pressure.hold_above: 20 Torr"),
    ],
    ids=["channel-99", "heater-on-gauge", "flow-on-tc", "default-over-max", "hold-over-max"],
)
def test_validate_and_run_refuse_before_a_run_record_is_made(
    tmp_path: Path, run_cli: Callable[..., Any], old: str, new: str, says: str
) -> None:
    """The review's reproductions (review7 defect 11): on 0b233ca `validate` said ok; a
    channel past the end failed at the first pulse, after the run record was made."""
    c = tmp_path / "tool.yaml"
    assert old in LAB
    c.write_text(LAB.replace(old, new, 1))
    line = next(n for n, ln in enumerate(c.read_text().splitlines(), 1) if new in ln)
    res = run_cli("validate", str(RECIPE), "--config", str(c))
    assert res.code == 2, res.out + res.err
    assert f"{c}:{line}:" in res.err, res.err
    assert says in res.err, res.err
    data = tmp_path / "data"
    res = run_cli("run", str(RECIPE), "--config", str(c), "--data-dir", str(data))
    assert res.code == 2, res.err
    assert f"{c}:{line}:" in res.err, res.err
    assert says in res.err, res.err
    assert "Traceback" not in res.err
    from aldctl.engine.journal import Journal

    if (data / "journal.sqlite").exists():
        j = Journal(data, readonly=True)
        try:
            assert j.runs(10) == []
        finally:
            j.close()


def test_a_tool_without_a_chamber_gauge_is_warned_of_what_goes_unchecked(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """A valve test stand has no chamber to read, and the engine runs without a gauge; but
    then no pressure limit is checked and a dose valve stuck open raises no hold. On 0b233ca
    such a tool validated with no word of it."""
    c = tmp_path / "tool.yaml"
    text = LAB.replace("gauges:\n  chamber:   {device: gauge, max: 10 Torr}\n", "")
    assert "gauges:" not in text
    c.write_text(text)
    res = run_cli("validate", str(RECIPE), "--config", str(c))
    assert res.code == 0, res.err
    warned = [ln for ln in res.err.splitlines() if "no chamber gauge" in ln]
    assert len(warned) == 1, res.err
    assert "warning:" in warned[0]
    assert "hold above 2 Torr, abort above 5 Torr) are not checked" in warned[0]
    assert "gauges: {chamber:" in warned[0]


def test_a_provisioned_line_past_the_modules_end_is_refused_at_auto_lines(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """A tool that provisions lines (``auto_lines``) on a 2-channel module, with the pump
    valve on channel 1: the recipe's second chemical gets channel 2. On 0b233ca this
    validated; the error now names the provisioned line at the ``auto_lines`` line."""
    text = SHIPPED["builtin"]
    for old, new in (
        ("component: valves, channels: 16", "component: valves, channels: 2"),
        ("valves:15, fails: open", "valves:1, fails: open"),
    ):
        assert old in text
        text = text.replace(old, new)
    c = tmp_path / "tool.yaml"
    c.write_text(text)
    line = next(n for n, ln in enumerate(text.splitlines(), 1) if ln == "  valves: valves")
    res = run_cli("validate", str(RECIPE), "--config", str(c))
    assert res.code == 2, res.out + res.err
    assert f"{c}:{line}:11: error: auto_lines (line H2O, provisioned for the recipe): " in res.err
    assert "'valves' has no channel 2" in res.err, res.err
