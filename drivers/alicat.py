"""Alicat mass-flow controllers over Alicat serial ASCII (RS-232/RS-485, several per bus).

Frame format (protocols.md section 1; alicatlib ``protocol/framing.py``, alexrudd2/alicat
``util.py``): ASCII, CR-terminated both ways, 19200 8N1 by default. Every command starts
with the unit ID (``A``-``Z``); a unit answers only its own ID, so a wrong ID is silence
(-> :class:`~drivers.base.DeviceTimeout` after the retries).

Commands used (unit A shown):

===================  ==========================================  ============================
purpose              request                                     reply
===================  ==========================================  ============================
poll                 ``A``                                       data frame
setpoint             ``AS<value>`` (legacy form, all firmware)   post-operation data frame
gas select           ``AGS <n>`` (firmware 10v05+)               ``A <n> <short> <long>``
gas select, legacy   ``A$$W46=<n>`` (if ``AGS`` gets ``?``)      ``A   046 = <n>``
===================  ==========================================  ============================

The setpoint uses ``AS`` rather than the modern ``ALS``: ``AS`` works on every firmware,
while on V1-V7 firmware ``AL<x>`` locks the front panel instead (alicatlib
``docs/safety.md``). (``ALS``'s reply layout, once listed as unverified, is known from
alicatlib's capture of a 10v20 unit, ``setpoint_query_mc.txt``: ``A +078.94 +078.94 12
SCCM``, current and requested setpoint, unit code and label; the emulator answers it so.)
Commands are not case-sensitive (Alicat Standard Devices User Manual, January 2023, "Quick
Command Reference", p. 32); the driver sends upper case. The
reply's setpoint column is checked against the request, which catches a unit whose
setpoint source is not serial (it silently ignores ``AS``).

Data frame of a controller (alicatlib ``tests/fixtures/responses/poll_mc.txt``)::

    A +014.62 +021.89 +000.00 +000.00 +078.95     N2 [HLD] [MOV] ...

Parsed by its fields, not by column positions: the unit ID, then the numeric fields
(absolute pressure, temperature, volumetric flow, mass flow, setpoint; a totalizer column
may follow; ``---`` marks an absent statistic), then the gas, then the status tokens
(``ADC EXH HLD LCK MOV OPL OVR POV TMF TOV VOV``, alicatlib ``StatusCode``) which go to
:attr:`~drivers.base.FlowReading.status`. A frame that does not parse, names another
unit or carries an unknown token is a garbled frame (counted, retried): the protocol has
no checksum, so the format is the only check. Junk before a frame (adapter noise) is
discarded and counted; a non-ASCII byte inside one is a garbled frame.

``?`` (an unknown command or a value the unit refuses) -> :class:`~drivers.base.DeviceFault`.

Options: ``port`` (path or ``socket://host:port``, required), ``unit`` (``A``-``Z``,
default ``A``), ``gas`` (Alicat gas name such as ``N2`` or gas number; selected at connect;
default: leave the unit's gas), ``full_scale`` (sccm, default 200), ``baudrate`` (19200),
``parity``/``stopbits``/``bytesize`` (N/1/8), ``timeout`` (s per attempt, 0.5),
``retries`` (2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drivers.base import DeviceFault, DriverContext, FlowReading, OptionError
from drivers.link import RetryPolicy
from drivers.serial_link import (
    PORT_OPTIONS,
    FrameError,
    SerialDevice,
    SerialPort,
    check_no_extra,
    shared_port,
)

GASES: tuple[str, ...] = (
    "Air", "Ar", "CH4", "CO", "CO2", "C2H6", "H2", "He", "N2", "N2O",
    "Ne", "O2", "C3H8", "n-C4H10", "C2H2", "C2H4", "i-C4H10", "Kr", "Xe", "SF6",
    "C-25", "C-10", "C-8", "C-2", "C-75", "A-75", "A-25", "A1025", "Star29", "P-5",
)  # fmt: skip
"""Alicat gas numbers (index) of the standard gas table (numat/alicat ``GASES``)."""

STATUS_TOKENS = frozenset(
    {"ADC", "EXH", "HLD", "LCK", "MOV", "OPL", "OVR", "POV", "TMF", "TOV", "VOV"}
)
"""Status codes a data frame may end with (alicatlib ``devices/models.py`` StatusCode)."""

_OPTIONS = PORT_OPTIONS | {"unit", "gas", "full_scale", "timeout", "retries"}


@dataclass(frozen=True, slots=True)
class DataFrame:
    """One parsed controller data frame."""

    unit: str
    pressure_psia: float | None
    temperature_c: float | None
    volumetric_flow: float | None
    mass_flow: float | None
    setpoint: float | None
    gas: str
    status: tuple[str, ...]


def _number(token: str) -> float | None:
    """A numeric field; None for an absent statistic (a run of dashes); ValueError else."""
    if token and set(token) == {"-"}:
        return None
    if token[:1] not in "+-0123456789.":
        raise ValueError(token)
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(token)
    return value


def parse_data_frame(unit: str, text: str) -> DataFrame:
    """Parse a controller data frame (FrameError if it is not one, or not ``unit``'s)."""
    tokens = text.split()
    if not tokens or tokens[0] != unit:
        msg = f"reply {text!r} is not from unit {unit}"
        raise FrameError("", msg)
    numbers: list[float | None] = []
    i = 1
    while i < len(tokens):
        try:
            numbers.append(_number(tokens[i]))
        except ValueError:
            break
        i += 1
    if len(numbers) < 5 or i >= len(tokens):
        msg = f"not a flow-controller data frame: {text!r}"
        raise FrameError("", msg)
    gas = tokens[i]
    status = tuple(tokens[i + 1 :])
    unknown = [s for s in status if s not in STATUS_TOKENS]
    if unknown:
        msg = f"unknown status token(s) {unknown} in {text!r}"
        raise FrameError("", msg)
    p, t, vol, mass, sp = numbers[:5]
    return DataFrame(unit, p, t, vol, mass, sp, gas, status)


def _format_value(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


class AlicatFlowController(SerialDevice):
    """An Alicat MFC (``FlowController``) at one unit ID on a shared serial port."""

    def __init__(
        self,
        name: str,
        port: SerialPort,
        policy: RetryPolicy,
        *,
        unit: str,
        gas: int | None,
        full_scale_sccm: float,
    ) -> None:
        super().__init__(name, port, policy)
        self.unit = unit
        self.gas = gas
        self.full_scale_sccm = full_scale_sccm
        self.last_frame: DataFrame | None = None

    # ---------------------------------------------------------------- wire
    async def _line(self, port: SerialPort, command: str, *, may_reject: bool = False) -> str:
        """Send ``<unit><command>`` and return the reply line (without junk and CR).

        ``?`` raises DeviceFault, or is returned when ``may_reject`` (a probe whose refusal
        is an answer, not a failure).
        """
        port.write(f"{self.unit}{command}\r".encode("ascii"))
        raw = await port.read_until(b"\r")
        body = raw[:-1]
        start = 0
        while start < len(body) and not 0x21 <= body[start] <= 0x7E:
            start += 1
        port.count_garbage(start)
        body = body[start:]
        if any(not 0x20 <= b <= 0x7E for b in body):
            msg = f"garbled reply {body!r} (non-ASCII byte)"
            raise FrameError(self.name, msg)
        text = body.decode("ascii").strip()
        if text == "?" and not may_reject:
            msg = f"unit {self.unit} rejected {self.unit}{command!s} ('?')"
            raise DeviceFault(self.name, msg)
        if not text:
            msg = "empty reply"
            raise FrameError(self.name, msg)
        return text

    async def _poll(self, port: SerialPort, command: str = "") -> DataFrame:
        text = await self._line(port, command)
        try:
            frame = parse_data_frame(self.unit, text)
        except FrameError as exc:
            raise FrameError(self.name, exc.detail) from None
        self.last_frame = frame
        return frame

    # ---------------------------------------------------------------- Device
    async def connect(self) -> None:
        """Open the bus, select the configured gas and check the unit answers a poll."""
        await self._open_link()
        if self.gas is not None:
            await self.set_gas(self.gas)
        frame = await self._request(self._poll)
        if frame.setpoint is None:
            msg = "unit reports no setpoint: a flow meter, not a controller"
            raise DeviceFault(self.name, msg)

    async def safe_state(self) -> None:
        """Nothing to do: the tool decides which flows keep running (carrier purges on)."""

    # ---------------------------------------------------------------- FlowController
    async def set_flow(self, sccm: float) -> None:
        if not math.isfinite(sccm) or not 0.0 <= sccm <= self.full_scale_sccm:
            msg = f"setpoint {sccm:g} sccm outside 0..{self.full_scale_sccm:g} sccm"
            raise DeviceFault(self.name, msg)
        value = _format_value(sccm)

        async def exchange(port: SerialPort) -> DataFrame:
            return await self._poll(port, f"S{value}")

        frame = await self._request(exchange)
        tolerance = max(0.01, 1e-3 * self.full_scale_sccm)
        if frame.setpoint is None or abs(frame.setpoint - float(value)) > tolerance:
            msg = (
                f"setpoint not taken: asked {value} sccm, unit reports {frame.setpoint}"
                " (is its setpoint source serial?)"
            )
            raise DeviceFault(self.name, msg)

    async def read_flow(self) -> FlowReading:
        frame = await self._request(self._poll)
        if frame.mass_flow is None or frame.setpoint is None:
            msg = f"data frame lacks mass flow or setpoint: {frame}"
            raise DeviceFault(self.name, msg)
        return FlowReading(frame.mass_flow, frame.setpoint, frame.gas, frame.status)

    # ---------------------------------------------------------------- extras
    async def set_gas(self, gas: int) -> str:
        """Select gas number ``gas``; returns the gas's short name as the unit reports it.

        ``AGS <n>`` first; firmware before 10v05 answers ``?``, then the register form
        ``$$W46=<n>`` is used and read back.
        """
        async with self._bus():
            text = await self._transact(lambda port: self._line(port, f"GS {gas}", may_reject=True))
            if text != "?":
                fields = text.split()
                if len(fields) < 3 or fields[0] != self.unit or fields[1] != str(gas):
                    msg = f"gas select answered {text!r}"
                    raise DeviceFault(self.name, msg)
                self.gas = gas
                return fields[2]
            text = await self._transact(lambda port: self._line(port, f"$$W46={gas}"))
            fields = text.replace("=", " ").split()
            if len(fields) != 3 or fields[1] != "046" or (int(fields[2]) & 0x1FF) != gas:
                msg = f"gas register write answered {text!r}"
                raise DeviceFault(self.name, msg)
            self.gas = gas
            return GASES[gas] if gas < len(GASES) else str(gas)


def _gas_number(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        if not 0 <= value <= 255:
            raise ValueError
        return value
    if isinstance(value, str):
        by_name = {g.lower(): i for i, g in enumerate(GASES)}
        key = value.strip().lower()
        if key in by_name:
            return by_name[key]
        if key.isdigit():
            return _gas_number(int(key))
    raise ValueError


def create(name: str, options: Mapping[str, Any], ctx: DriverContext) -> AlicatFlowController:
    """Build an Alicat MFC from its tool-config options (see the module docstring)."""
    opts = dict(options)
    check_no_extra(opts, set(_OPTIONS), "alicat")
    unit = opts.pop("unit", "A")
    if not isinstance(unit, str) or len(unit) != 1 or not "A" <= unit <= "Z":
        msg = f"option 'unit' must be one letter A-Z (the Alicat unit ID), not {unit!r}"
        raise OptionError("unit", msg)
    gas_opt = opts.pop("gas", None)
    gas: int | None = None
    if gas_opt is not None:
        try:
            gas = _gas_number(gas_opt)
        except ValueError:
            msg = f"option 'gas' must be an Alicat gas name ({', '.join(GASES)}) or number 0-255"
            raise OptionError("gas", f"{msg}, not {gas_opt!r}") from None
    fs = opts.pop("full_scale", 200.0)
    if isinstance(fs, bool) or not isinstance(fs, int | float) or not fs > 0:
        msg = f"option 'full_scale' must be a positive number of sccm, not {fs!r}"
        raise OptionError("full_scale", msg)
    policy = RetryPolicy.from_options(opts)
    port = shared_port(ctx, name, opts, baudrate=19200, address=unit, address_option="unit")
    return AlicatFlowController(name, port, policy, unit=unit, gas=gas, full_scale_sccm=float(fs))
