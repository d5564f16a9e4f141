"""Alicat mass-flow controllers on one RS-485 bus, speaking Alicat serial ASCII.

Wire format (protocols.md section 1; alicatlib fixtures, alexrudd2/alicat ``driver.py``):
every command is ``<unit ID A-Z><command>\\r``; a unit answers only its own ID, with one
CR-terminated line. "Serial commands are not case-sensitive" (Alicat Standard Devices User
Manual, January 2023 Rev. 0, "Quick Command Reference", p. 32; MC-series manual "Quick
Serial Command Guide", p. 43, whose examples are all lower case: ``a`` polls), so unit IDs
and command letters are matched in either case. Commands this emulated firmware knows:

=================  =====================================================================
``A``              poll: data frame
``AS<value>``      setpoint (legacy form, every firmware): post-operation data frame
``AGS <n>``        gas select (firmware 10v05 and later): ``A <n> <short> <long name>``;
                   ``AGS`` alone reports the gas the same way
``AG <n>``         gas select, legacy form: data frame
``A$$W46=<n>``     gas select through register 46 (low 9 bits): ``A   046 = <n>``;
                   ``A$$R46`` reads it back the same way
``AVE``            firmware version line
``ALS``            setpoint query (firmware 9v00+): ``A <current> <requested> 12 SCCM``
                   (alicatlib's capture ``setpoint_query_mc.txt``, 10v20); ``ALS <v>``
                   sets it and answers the same way
``ALV``            loop control variable: ``A 37`` (mass flow; alicatlib
                   ``loop_control_variable_mc.txt``); ``ALV <n>`` accepts 37 only
``AR122``          legacy register 122, the loop control variable: ``A   122 = 37``
                   (the form numat's ``FlowController`` reads at start); ``AW122=37``
                   writes it the same way (other control points: ``?``, not modelled)
``AHP``/``AHC``    hold the valve at its position / closed: data frame with ``HLD``
``AC``             cancel a hold: data frame
anything else      ``?``
=================  =====================================================================

Data frame of a mass-flow controller (alicatlib ``poll_mc.txt``)::

    A +014.70 +025.00 +020.01 +020.00 +020.00     N2 [status...]

unit ID, absolute pressure (PSIA), flow temperature (degC), volumetric flow, mass flow,
setpoint (in the device's engineering units, SCCM here), gas; status tokens follow when
active: ``HLD`` (valve hold) and ``MOV`` (mass flow over range) from this emulator.

Values come from the reactor: mass flow and setpoint from ``read_mfc(component)``, the
setpoint goes to ``set_mfc``. Inlet pressure and gas temperature are not modelled; they
are reported as the fixed ``inlet_psia`` and the reactor's ambient temperature, and the
volumetric flow is the mass flow referred to them (Alicat's standard conditions are 25 degC
and 14.696 PSIA).

The emulated firmware (10v20) has ``ALS``; the driver still uses ``AS``, which works on
every firmware. ``ALSS`` (setpoint source) is not emulated.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sim.devices.serial_bus import LineNoise, SerialBusEmulator
from sim.realtime import RealtimePlant

GASES: tuple[tuple[str, str], ...] = (
    ("Air", "Air"),
    ("Ar", "Argon"),
    ("CH4", "Methane"),
    ("CO", "Carbon Monoxide"),
    ("CO2", "Carbon Dioxide"),
    ("C2H6", "Ethane"),
    ("H2", "Hydrogen"),
    ("He", "Helium"),
    ("N2", "Nitrogen"),
    ("N2O", "Nitrous Oxide"),
    ("Ne", "Neon"),
    ("O2", "Oxygen"),
    ("C3H8", "Propane"),
    ("n-C4H10", "normal-Butane"),
    ("C2H2", "Acetylene"),
    ("C2H4", "Ethylene"),
    ("i-C4H10", "iso-Butane"),
    ("Kr", "Krypton"),
    ("Xe", "Xenon"),
    ("SF6", "Sulfur Hexafluoride"),
)
"""The instrument's gas table, index = gas number (Alicat standard list, as in
numat/alicat ``GASES``; ``AGS 8`` -> ``A 8 N2 Nitrogen`` in alicatlib's fixtures)."""

_MASS_FLOW_SETPOINT = 37
"""Statistic code of the mass-flow setpoint: the loop variable of a mass-flow controller."""
_STD_C = 25.0
_STD_PSIA = 14.696
_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*$")


@dataclass(slots=True)
class _Unit:
    component: str
    full_scale: float
    gas: int
    hold: bool = False


class AlicatBus(SerialBusEmulator[str, str]):
    """Alicat MFCs sharing one pty, each unit an MFC of the reactor.

    :param plant: the real-time reactor.
    :param path: the pty link (e.g. ``/tmp/aldctl-sim/rs485-mfcs``).
    :param units: ``(unit ID, MFC name)`` pairs, e.g. ``[("A", "carrier"),
        ("B", "plasma.O2")]``; each unit's full scale and initial gas are the MFC's.
    :param latency_s: processing time before a reply (alicatlib measured p50 about 4 ms).
    :param baudrate: 19200 (factory default) for the wire time of each exchange.
    :param firmware: version string reported by ``AVE``; firmware before 10v05 answers
        ``?`` to ``AGS`` as real units do, so drivers must fall back to the legacy form.
    :param inlet_psia: reported absolute pressure (not modelled).
    :param line_noise: junk before replies (None: clean line).
    """

    def __init__(
        self,
        plant: RealtimePlant,
        path: str | Path,
        units: Sequence[tuple[str, str]],
        *,
        latency_s: float = 0.004,
        baudrate: int = 19200,
        firmware: str = "10v20.0-R24",
        inlet_psia: float = 14.70,
        line_noise: LineNoise | None = None,
    ) -> None:
        for unit_id, _ in units:
            if len(unit_id) != 1 or not "A" <= unit_id <= "Z":
                msg = f"Alicat unit IDs are single letters A-Z, not {unit_id!r}"
                raise ValueError(msg)
        super().__init__(
            plant, path, units, latency_s=latency_s, baudrate=baudrate, line_noise=line_noise
        )
        mfcs = {m.name: m for m in plant.reactor.config.mfc_configs()}
        names = [short for short, _ in GASES]
        self._units: dict[str, _Unit] = {}
        for unit_id, comp in units:
            if comp not in mfcs:
                msg = f"unit {unit_id}: {comp!r} is not an MFC of the reactor ({sorted(mfcs)})"
                raise ValueError(msg)
            cfg = mfcs[comp]
            if cfg.gas not in names:
                msg = f"unit {unit_id}: {comp} flows {cfg.gas}, not in the Alicat gas table"
                raise ValueError(msg)
            self._units[unit_id] = _Unit(comp, cfg.full_scale_sccm, names.index(cfg.gas))
        self.firmware = firmware
        self.inlet_psia = inlet_psia
        major, _, minor = firmware.partition("v")
        try:
            self._modern_gas = (int(major), int(minor[:2])) >= (10, 5)
        except ValueError:
            msg = f"firmware {firmware!r} is not of the form 10v20..."
            raise ValueError(msg) from None

    def _reset(self) -> None:
        # a power cycle releases a valve hold; the gas choice is kept (it is in EEPROM)
        for unit in self._units.values():
            unit.hold = False

    def unit_gas(self, unit_id: str) -> str:
        """The gas a unit is set to (short name)."""
        return GASES[self._units[unit_id].gas][0]

    # ---------------------------------------------------------------- protocol
    def _extract(self, buffer: bytearray) -> list[str]:
        out: list[str] = []
        while (i := buffer.find(b"\r")) >= 0:
            raw = bytes(buffer[:i])
            del buffer[: i + 1]
            try:
                line = raw.decode("ascii").strip()
            except UnicodeDecodeError:
                continue  # a garbled command: no unit recognises its ID
            if line:
                out.append(line)
        return out

    def _address(self, request: str) -> str | None:
        return request[0].upper()

    def _request_chars(self, request: str) -> int:
        return len(request) + 1

    def _answer(self, address: str, component: str, request: str) -> bytes | None:
        unit = self._units[address]
        cmd = request[1:].upper()  # numbers are unaffected; gas names are not parsed
        reply = self._command(address, unit, cmd)
        return (reply + "\r").encode("ascii")

    def _command(self, uid: str, unit: _Unit, cmd: str) -> str:
        r = self.plant.sync()
        if cmd == "":
            return self._frame(uid, unit)
        if cmd.startswith("S") and not cmd.startswith("SR"):
            m = _NUMBER.match(cmd[1:])
            if m is None:
                return "?"
            value = float(m.group(1))
            if not 0.0 <= value <= unit.full_scale:
                return "?"
            r.set_mfc(unit.component, value)
            return self._frame(uid, unit)
        if cmd == "GS" or cmd.startswith("GS "):
            if not self._modern_gas:
                return "?"
            arg = cmd[2:].strip()
            if arg:
                if not arg.isdigit() or int(arg) >= len(GASES):
                    return "?"
                unit.gas = int(arg)
            short, long = GASES[unit.gas]
            return f"{uid} {unit.gas} {short} {long}"
        if cmd.startswith("G ") or (cmd.startswith("G") and cmd[1:].isdigit()):
            arg = cmd[1:].strip()
            if not arg.isdigit() or int(arg) >= len(GASES):
                return "?"
            unit.gas = int(arg)
            return self._frame(uid, unit)
        if cmd.startswith("$$W46="):
            arg = cmd[6:].strip()
            if not arg.isdigit() or (int(arg) & 0x1FF) >= len(GASES):
                return "?"
            unit.gas = int(arg) & 0x1FF
            return f"{uid}   046 = {int(arg)}"
        if cmd == "$$R46":
            return f"{uid}   046 = {unit.gas}"
        if cmd == "LS" or cmd.startswith("LS "):
            arg = cmd[2:].strip()
            if arg:
                m = _NUMBER.match(arg)
                if m is None or not 0.0 <= float(m.group(1)) <= unit.full_scale:
                    return "?"
                r.set_mfc(unit.component, float(m.group(1)))
            sp = r.read_mfc(unit.component).setpoint_sccm
            return f"{uid} {sp:+07.2f} {sp:+07.2f} 12 SCCM"
        if cmd == "LV" or cmd.startswith("LV "):
            arg = cmd[2:].strip()
            if arg and arg != str(_MASS_FLOW_SETPOINT):
                return "?"
            return f"{uid} {_MASS_FLOW_SETPOINT}"
        if cmd == "R122" or cmd.startswith("W122="):
            if cmd.startswith("W") and cmd[5:].strip() != str(_MASS_FLOW_SETPOINT):
                return "?"
            return f"{uid}   122 = {_MASS_FLOW_SETPOINT}"
        if cmd == "VE":
            return f"{uid}   {self.firmware} Jan  9 2025,15:04:07"
        if cmd in ("HP", "HC"):
            if cmd == "HC":
                r.set_mfc(unit.component, 0.0)
            unit.hold = True
            return self._frame(uid, unit)
        if cmd == "C":
            unit.hold = False
            return self._frame(uid, unit)
        return "?"

    def _frame(self, uid: str, unit: _Unit) -> str:
        r = self.plant.sync()
        st = r.read_mfc(unit.component)
        temp_c = r.config.ambient_c
        vol = st.flow_sccm * (temp_c + 273.15) / (_STD_C + 273.15) * _STD_PSIA / self.inlet_psia
        fields = [self.inlet_psia, temp_c, vol, st.flow_sccm, st.setpoint_sccm]
        text = " ".join(f"{v:+07.2f}" for v in fields)
        status = []
        if unit.hold:
            status.append("HLD")
        if st.flow_sccm > unit.full_scale:
            status.append("MOV")
        gas = GASES[unit.gas][0]
        return " ".join([f"{uid} {text} {gas:>6}", *status])

    def _garble(self, reply: bytes, rng: random.Random) -> bytes:
        # no checksum in this protocol: what a driver can catch is a byte that is not
        # ASCII any more (a framing error sets the high bit), so garble that way
        out = bytearray(reply)
        i = rng.randrange(0, max(1, len(out) - 1))
        out[i] |= 0x80
        return bytes(out)
