"""Pfeiffer vacuum gauges over the Pfeiffer Vacuum Protocol (RS-485 ASCII telegrams).

Telegram (protocols.md 3.1; Pfeiffer PPT 100 manual section 6.3; electronsandstuff/
py-pfeiffer-vacuum-protocol ``_send_data_request``/``_read_gauge_response``)::

    aaa  AA  ppp  ll  data...  ccc  CR          9600 8N1, ASCII 32-127 only
    addr act param len         checksum = sum of the ASCII codes before it, mod 256, 3 digits

Query ``AA=00`` with data ``=?``; control and every answer ``AA=10``. Example: the query
``0010074002=?106\\r`` is answered ``0011074006100023025\\r`` (P740 = ``100023``).

==========  ==========================  =====================================================
parameter   meaning                     data type
==========  ==========================  =====================================================
740         pressure, hPa               u_expo_new, ``abcdEF`` = a.bcd x 10^(EF-20)
742         gas correction factor       u_real, ``000100`` = 1.00 (writable)
303         error code                  ``000000`` / ``Err001`` (transmitter) / ``Err002``
                                        (memory)
349         device type                 string, e.g. ``    A3`` = PPT 100
==========  ==========================  =====================================================

Error data (-> :class:`~drivers.base.DeviceFault`): ``NO_DEF`` no such parameter,
``_RANGE`` value out of range, ``_LOGIC`` logic access violation.

Every answer is validated: checksum, address, action, parameter and length; junk bytes
(outside ASCII 32-127, as cheap adapters emit, py-pfeiffer-vacuum-protocol #1) and text
before the expected ``aaa10ppp`` header are discarded and counted; a failing answer is a
bad frame, counted and retried.

Pressure: P740 in hPa, returned in Torr. u_expo_new cannot carry a status, so range is
read from the value: a transmitter at the end of its range saturates there. ``000000``
(zero) is reported as ``PressureReading(None, "under range")``, and when the option
``full_scale_torr`` is given, a value at or above it as ``PressureReading(None, "over
range")`` (the emulated gauge saturates at 1.1 x its 10 Torr full scale).

Options: ``port`` (required), ``address`` (1-255, default 1), ``full_scale_torr``
(optional), ``baudrate`` (9600), ``parity``/``stopbits``/``bytesize``, ``timeout`` (s, 0.5),
``retries`` (2).
"""

from __future__ import annotations

import math
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

TORR_PER_HPA = 0.750061683
ERRORS = {
    "NO_DEF": "no such parameter (NO_DEF)",
    "_RANGE": "value out of range (_RANGE)",
    "_LOGIC": "logic access violation (_LOGIC)",
}
ERROR_CODES = {"Err001": "defective transmitter", "Err002": "defective memory"}
_OPTIONS = PORT_OPTIONS | {"address", "full_scale_torr", "timeout", "retries"}


def checksum(text: str) -> str:
    return f"{sum(text.encode('ascii')) % 256:03d}"


def telegram(address: int, parameter: int, data: str | None = None) -> bytes:
    """A query (``data`` None) or control telegram, CR included."""
    if data is None:
        body = f"{address:03d}00{parameter:03d}02=?"
    else:
        body = f"{address:03d}10{parameter:03d}{len(data):02d}{data}"
    return f"{body}{checksum(body)}\r".encode("ascii")


def decode_expo(data: str) -> float:
    """u_expo_new ``abcdEF`` -> a.bcd x 10^(EF-20) (ValueError if malformed)."""
    if len(data) != 6 or not data.isdigit():
        raise ValueError(data)
    return int(data[:4]) / 1000.0 * 10.0 ** (int(data[4:]) - 20)


class PfeifferGauge(SerialDevice):
    """A Pfeiffer gauge (``PressureGauge``) at one address on a shared RS-485 port."""

    def __init__(
        self,
        name: str,
        port: SerialPort,
        policy: RetryPolicy,
        *,
        address: int,
        full_scale_torr: float | None,
    ) -> None:
        super().__init__(name, port, policy)
        self.address = address
        self.full_scale_torr = full_scale_torr
        self.device_type = ""

    async def _exchange(self, port: SerialPort, parameter: int, data: str | None) -> str:
        port.write(telegram(self.address, parameter, data))
        raw = await port.read_until(b"\r")
        kept = bytes(b for b in raw[:-1] if 32 <= b <= 127)
        port.count_garbage(len(raw) - 1 - len(kept))
        text = kept.decode("ascii")
        header = f"{self.address:03d}10{parameter:03d}"
        start = text.rfind(header)
        if start < 0:
            msg = f"answer {text!r} is not for {header}"
            raise FrameError(self.name, msg)
        port.count_garbage(start)
        text = text[start:]
        if len(text) < 13 or checksum(text[:-3]) != text[-3:]:
            msg = f"checksum mismatch in {text!r}"
            raise FrameError(self.name, msg)
        length = text[8:10]
        answer = text[10:-3]
        if not length.isdigit() or int(length) != len(answer):
            msg = f"length field {length!r} does not match data {answer!r}"
            raise FrameError(self.name, msg)
        if answer in ERRORS:
            what = "write" if data is not None else "read"
            msg = f"{what} of parameter {parameter:03d}: {ERRORS[answer]}"
            raise DeviceFault(self.name, msg)
        return answer

    async def read_parameter(self, parameter: int) -> str:
        """Query one parameter; returns its data field."""
        return await self._request(lambda port: self._exchange(port, parameter, None))

    async def write_parameter(self, parameter: int, data: str) -> str:
        """Send a control telegram; returns the data the gauge echoes."""
        if not data.isascii() or len(data) > 99:
            msg = f"parameter data {data!r} is not up to 99 ASCII characters"
            raise DeviceFault(self.name, msg)
        return await self._request(lambda port: self._exchange(port, parameter, data))

    async def set_gas_correction(self, factor: float) -> None:
        """Gas correction factor (P742, u_real with two decimals)."""
        if not math.isfinite(factor) or factor < 0:
            msg = f"gas correction factor {factor!r} must be a positive number"
            raise DeviceFault(self.name, msg)
        data = f"{round(factor * 100):06d}"
        echoed = await self.write_parameter(742, data)
        if echoed != data:
            msg = f"gas correction {data} answered {echoed!r}"
            raise DeviceFault(self.name, msg)

    # ---------------------------------------------------------------- Device
    async def connect(self) -> None:
        """Open the bus, read the device type and check the gauge reports no error."""
        await self._open_link()
        self.device_type = (await self.read_parameter(349)).strip()
        code = await self.read_parameter(303)
        if code != "000000":
            meaning = ERROR_CODES.get(code, "unknown error")
            raise DeviceFault(self.name, f"gauge reports {code} ({meaning})")

    async def safe_state(self) -> None:
        """A gauge has no unsafe state."""

    async def read_pressure(self) -> PressureReading:
        asked: list[float] = []

        async def exchange(port: SerialPort) -> str:
            answer = await self._exchange(port, 740, None)
            asked.append(port.written_at)  # the try that got the answer (after any retry)
            return answer

        data = await self._request(exchange)
        at = asked[-1]
        try:
            hpa = decode_expo(data)
        except ValueError:
            msg = f"P740 answered {data!r}, not a u_expo_new value"
            raise DeviceFault(self.name, msg) from None
        if hpa <= 0.0:
            return PressureReading(None, "under range", at)
        torr = hpa * TORR_PER_HPA
        # the 4-digit mantissa rounds the saturated value by up to 5e-4 relative
        if self.full_scale_torr is not None and torr >= self.full_scale_torr * (1 - 1e-3):
            return PressureReading(None, "over range", at)
        return PressureReading(torr, "ok", at)


def create(name: str, options: Mapping[str, Any], ctx: DriverContext) -> PfeifferGauge:
    """Build a Pfeiffer gauge from its tool-config options (see the module docstring)."""
    opts = dict(options)
    check_no_extra(opts, set(_OPTIONS), "pfeiffer")
    address = opts.pop("address", 1)
    if isinstance(address, bool) or not isinstance(address, int) or not 1 <= address <= 255:
        msg = f"option 'address' must be a gauge address 1-255, not {address!r}"
        raise OptionError("address", msg)
    fs = opts.pop("full_scale_torr", None)
    if fs is not None and (isinstance(fs, bool) or not isinstance(fs, int | float) or fs <= 0):
        msg = f"option 'full_scale_torr' must be a positive number of Torr, not {fs!r}"
        raise OptionError("full_scale_torr", msg)
    policy = RetryPolicy.from_options(opts)
    port = shared_port(ctx, name, opts, baudrate=9600, address=f"{address:03d}")
    return PfeifferGauge(
        name, port, policy, address=address, full_scale_torr=None if fs is None else float(fs)
    )
