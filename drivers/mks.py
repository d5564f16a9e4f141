"""MKS 937B / 946 (and 9xx transducers) over the MKS ASCII ``@...;FF`` protocol.

Frame (protocols.md 3.3; MKS 902B/910 query command lists, 946 manual table 9-15;
PyExpLabSys ``mks_925_pirani.py``)::

    request  @<addr 3 digits><command>?;FF           9600 8N1, address 253 by default
    answer   @<addr>ACK<value>;FF  or  @<addr>NAK<code>;FF

``FF`` is the checksum placeholder every unit accepts; this driver always sends it.

Commands used: ``PR<channel>?`` pressure (``1.23E-03`` in the unit set), ``U?`` the
pressure unit (``TORR``/``MBAR``/``PASCAL``/``MICRON``, read at connect so readings are
converted to Torr). A non-numeric pressure is a gauge status: ``LO<...`` under range,
``ATM``/``HI...`` over range, ``OFF``/``WAIT``/``RP_OFF``/``PROT_OFF`` sensor off,
``MISCONN``/``NOGAUGE`` no sensor; each becomes ``PressureReading(None, status)``.

Checked against the manuals: the frame, the ``;FF`` placeholder and the numeric reply (937B
operation manual, chapter 9.1 "Communication protocols", p. 86: ``@003PR1?;FF`` ->
``@003ACK7.602E+2;FF``, 8N1; 902B/910 operation manuals, "Query Command list", p. 46:
``PR1``..``PR4``, ``U?`` -> ``TORR``). Not verified: the status words above. The 937B
manual's table of what ``PRn`` sends instead of a number (its section 9.2) could not be
reached here; the words come from the PyExpLabSys and pylablib MKS drivers, and one a model
sends that is not in the list is refused as a bad answer, never taken as a pressure.

NAK codes (-> :class:`~drivers.base.DeviceFault` naming the meaning; 946 manual CODE
mode): 150 wrong gauge, 151 no gauge, 158 not an MFC, 159 not a valve, 160 unrecognized
message, 161 set command locked, 163 invalid channel, 169 invalid argument, 172 value out
of range, 175 command/query byte invalid, 199 pressure too high for degas.

Replies are validated (``@`` + the address + ``ACK``/``NAK`` + ``;FF``, ASCII only);
junk before the ``@`` is discarded and counted, anything else is a bad frame (retried).

Options: ``port`` (required), ``address`` (1-255, default 253), ``channel`` (1-6,
default 1), ``baudrate`` (9600), ``parity``/``stopbits``/``bytesize``, ``timeout``
(s, 0.5), ``retries`` (2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from drivers.base import DeviceFault, DriverContext, OptionError, PressureReading
from drivers.link import RetryPolicy
from drivers.serial_link import (
    PORT_OPTIONS,
    FrameError,
    SerialDevice,
    SerialPort,
    check_no_extra,
    shared_port,
)

NAK_CODES = {
    150: "wrong gauge",
    151: "no gauge",
    158: "not an MFC",
    159: "not a valve",
    160: "unrecognized message",
    161: "set command locked",
    163: "invalid channel",
    169: "invalid argument",
    172: "value out of range",
    175: "command/query byte invalid",
    199: "pressure too high for degas",
}
TORR_PER_UNIT = {"TORR": 1.0, "MBAR": 0.750061683, "PASCAL": 0.00750061683, "MICRON": 1e-3}
_REPLY = re.compile(r"@(\d{3})(ACK|NAK)([^;]*);FF")
_OPTIONS = PORT_OPTIONS | {"address", "channel", "timeout", "retries"}
_STATUS = (
    ("LO", "under range"),
    ("ATM", "over range"),
    ("HI", "over range"),
    ("OFF", "sensor off"),
    ("RP_OFF", "sensor off"),
    ("PROT_OFF", "sensor off"),
    ("WAIT", "sensor off"),
    ("MISCONN", "sensor error"),
    ("NOGAUGE", "sensor error"),
    ("NO_GAUGE", "sensor error"),
)


class MksGauge(SerialDevice):
    """An MKS 937B/946 gauge channel (``PressureGauge``) at one address."""

    def __init__(
        self, name: str, port: SerialPort, policy: RetryPolicy, *, address: int, channel: int
    ) -> None:
        super().__init__(name, port, policy)
        self.address = address
        self.channel = channel
        self.unit = "TORR"

    async def _exchange(self, port: SerialPort, command: str) -> str:
        port.write(f"@{self.address:03d}{command};FF".encode("ascii"))
        raw = await port.read_until(b";FF")
        start = raw.rfind(b"@")
        if start < 0:
            port.count_garbage(len(raw))
            msg = f"answer without '@': {raw!r}"
            raise FrameError(self.name, msg)
        port.count_garbage(start)
        frame = raw[start:]
        if any(not 0x20 <= b <= 0x7E for b in frame):
            msg = f"garbled answer {frame!r} (non-ASCII byte)"
            raise FrameError(self.name, msg)
        m = _REPLY.fullmatch(frame.decode("ascii"))
        if m is None:
            msg = f"malformed answer {frame!r}"
            raise FrameError(self.name, msg)
        if int(m.group(1)) != self.address:
            msg = f"answer from address {m.group(1)}, not {self.address:03d}"
            raise FrameError(self.name, msg)
        value = m.group(3)
        if m.group(2) == "NAK":
            code = int(value) if value.isdigit() else None
            meaning = NAK_CODES.get(code, "unknown code") if code is not None else value
            msg = f"{command} refused: NAK {value} ({meaning})"
            raise DeviceFault(self.name, msg)
        return value

    async def query(self, command: str) -> str:
        """Send ``@<addr><command>;FF`` (e.g. ``MD?``); returns the ACK value."""
        return await self._request(lambda port: self._exchange(port, command))

    # ---------------------------------------------------------------- Device
    async def connect(self) -> None:
        """Open the bus and read the unit the controller reports pressures in."""
        await self._open_link()
        unit = (await self.query("U?")).strip().upper()
        if unit not in TORR_PER_UNIT:
            raise DeviceFault(self.name, f"unsupported pressure unit {unit!r}")
        self.unit = unit

    async def safe_state(self) -> None:
        """A gauge has no unsafe state."""

    async def read_pressure(self) -> PressureReading:
        asked: list[float] = []

        async def exchange(port: SerialPort) -> str:
            answer = await self._exchange(port, f"PR{self.channel}?")
            asked.append(port.written_at)  # the try that got the answer (after any retry)
            return answer

        value = (await self._request(exchange)).strip()
        at = asked[-1]
        try:
            number = float(value)
        except ValueError:
            for prefix, status in _STATUS:
                if value.upper().startswith(prefix):
                    return PressureReading(None, status, at)
            raise DeviceFault(self.name, f"pressure answer {value!r} not understood") from None
        if not math.isfinite(number):
            raise DeviceFault(self.name, f"pressure answer {value!r} not understood")
        return PressureReading(number * TORR_PER_UNIT[self.unit], "ok", at)


def create(name: str, options: Mapping[str, Any], ctx: DriverContext) -> MksGauge:
    """Build an MKS gauge from its tool-config options (see the module docstring)."""
    opts = dict(options)
    check_no_extra(opts, set(_OPTIONS), "mks9xx")
    address = opts.pop("address", 253)
    if isinstance(address, bool) or not isinstance(address, int) or not 1 <= address <= 255:
        msg = f"option 'address' must be 1-255 (253 is the factory default), not {address!r}"
        raise OptionError("address", msg)
    channel = opts.pop("channel", 1)
    if isinstance(channel, bool) or not isinstance(channel, int) or not 1 <= channel <= 6:
        msg = f"option 'channel' must be a gauge channel 1-6, not {channel!r}"
        raise OptionError("channel", msg)
    policy = RetryPolicy.from_options(opts)
    port = shared_port(ctx, name, opts, baudrate=9600, address=f"{address:03d} channel {channel}")
    return MksGauge(name, port, policy, address=address, channel=channel)
