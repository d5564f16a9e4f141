"""Driver options checked when the tool config loads (``parse_tool``, what ``aldctl
validate`` and ``aldctl run`` load a tool with), beyond one option at a time
(tests/reliability/test_hostile_input.py has those): options of the wrong kind, options
that two devices make wrong (one bus), a simulated device's component, and a factory that
raises something else. Each is a tool config a user can write; each failed on d1d9156 (the
review of 09ebc83): an internal error, or a config that loaded and failed at connect."""

from __future__ import annotations

from pathlib import Path

import pytest

from aldctl import yamlsrc
from aldctl.config import parse_tool
from aldctl.diagnostics import UserError

ROOT = Path(__file__).resolve().parents[2]
HIL = (ROOT / "config" / "hil.yaml").read_text()
LAB = (ROOT / "config" / "example-lab.yaml").read_text()
SIM = (ROOT / "aldctl" / "data" / "sim-tool.yaml").read_text()


def _variant(base: str, old: str, new: str) -> str:
    assert old in base
    return base.replace(old, new, 1)


def _errors(text: str) -> list[str]:
    with pytest.raises(UserError) as err:
        parse_tool(yamlsrc.parse_text(text, "tool.yaml"), "tool.yaml")
    return [d.format() for d in err.value.diagnostics]


GAUGE = "gauge:    {driver: pfeiffer, port: /tmp/aldctl-sim/gauge, address: 1"
CARRIER = "carrier:   {driver: simulated-mfc, component: carrier}"
RF = "rf:        {driver: simulated-rf, component: rf}"


@pytest.mark.parametrize(
    ("base", "old", "new", "where"),
    [
        (HIL, GAUGE, GAUGE.replace("address: 1", "stopbits: {a: 1}, address: 1"), "stopbits"),
        (HIL, GAUGE, GAUGE.replace("address: 1", "stopbits: [1], address: 1"), "stopbits"),
        (SIM, CARRIER, CARRIER[:-1] + ", full_scale_sccm: [1]}", "full_scale_sccm"),
        # these two are errors, but at the device's line and without the option's name
        # ("devices.carrier (simulated-mfc): could not convert string to float: 'fast'")
        (SIM, CARRIER, CARRIER[:-1] + ", full_scale_sccm: fast}", "full_scale_sccm"),
        (SIM, RF, RF[:-1] + ", max_power_w: lots}", "max_power_w"),
    ],
    ids=[
        "pfeiffer-stopbits-map",
        "pfeiffer-stopbits-list",
        "simulated-mfc-full-scale-list",
        "simulated-mfc-full-scale-text",
        "simulated-rf-max-power-text",
    ],
)
def test_a_wrong_kind_option_is_a_located_error_not_an_internal_error(
    base: str, old: str, new: str, where: str
) -> None:
    # d1d9156: the first three are a TypeError out of parse_tool (`aldctl validate` says
    # "internal error", exit 3)
    errors = _errors(_variant(base, old, new))
    assert any(f".{where}:" in e for e in errors), errors


def test_a_simulated_device_on_a_component_the_simulator_has_not_is_refused() -> None:
    # d1d9156: validate passes; `aldctl run` makes the run record, then "device 'substrate'
    # failed to connect: the simulated reactor has no component 'substrat'"
    text = _variant(
        SIM,
        "substrate: {driver: simulated-heater, component: substrate}",
        "substrate: {driver: simulated-heater, component: substrat}",
    )
    errors = _errors(text)
    assert any("substrat" in e for e in errors), errors


def test_two_modbus_devices_at_one_address_on_one_bus_are_refused() -> None:
    # The serial drivers refuse a second device at a taken address (SerialPort.claim); the
    # Modbus ones do not: two controllers answering unit 1 garble each other's replies.
    text = _variant(
        LAB,
        "tc_walls:  {driver: eurotherm3200, port: /dev/ttyHEATERS, address: 2",
        "tc_walls:  {driver: eurotherm3200, port: /dev/ttyHEATERS, address: 1",
    )
    errors = _errors(text)
    assert any("devices.tc_walls.address" in e for e in errors), errors


def test_an_ascii_driver_on_a_modbus_bus_port_is_refused() -> None:
    # ModbusLink.shared refuses a port "already used by a non-Modbus driver", but the
    # serial drivers key their port "serial:<url>" and Modbus "<url>": it never fires.
    text = _variant(
        HIL,
        "mfc_o2:   {driver: alicat, port: /tmp/aldctl-sim/rs485-mfcs",
        "mfc_o2:   {driver: alicat, port: /tmp/aldctl-sim/rs485-heaters",
    )
    errors = _errors(text)
    assert any("rs485-heaters" in e for e in errors), errors
    # at the device that does not belong there, naming the ones that do
    assert any("devices.mfc_o2.port" in e and "tc_sub" in e for e in errors), errors


def test_a_driver_factory_that_raises_something_else_is_a_located_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A third-party factory that opens its instrument at build, or has a bug, raises
    OSError/KeyError/TypeError: d1d9156 let it out of parse_tool, and every command that
    loads the config (validate too, on a machine without the instrument) said "internal
    error: ... please report it" about aldctl. (Fake: the registry's factory is replaced;
    installing a package with an entry point is what a lab does, not what a test can.)"""
    from typing import Any

    from drivers import registry

    real = registry.factory

    def factory(name: str) -> Any:
        if name != "simulated-heater":
            return real(name)

        def make(device: str, options: Any, ctx: Any) -> Any:
            msg = "[Errno 2] No such file or directory: '/dev/ttyHEATER'"
            raise FileNotFoundError(msg)

        return make

    monkeypatch.setattr(registry, "factory", factory)
    errors = _errors(SIM)
    assert any("devices.substrate" in e and "FileNotFoundError" in e for e in errors), errors
