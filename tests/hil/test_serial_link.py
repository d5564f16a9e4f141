"""The shared serial transport (drivers.serial_link) through a real driver and emulator:
one port per URL and its life cycle, serial device servers (``socket://``), runaway input.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import serial
import serial_asyncio_fast

from drivers import alicat
from drivers.base import CommunicationError, DriverContext
from drivers.serial_link import SerialPort, SerialSettings
from sim.devices.alicat import AlicatBus
from sim.devices.serial_bus import LineNoise
from sim.reactor import Reactor, ReactorConfig
from sim.realtime import RealtimePlant


@pytest.fixture
def plant() -> RealtimePlant:
    return RealtimePlant(Reactor(ReactorConfig.for_lines(["TMA", "O2-plasma"]), seed=2))


@pytest.fixture
async def bus(plant: RealtimePlant, tmp_path: Path) -> AsyncIterator[AlicatBus]:
    emu = AlicatBus(plant, tmp_path / "mfcs", [("A", "carrier"), ("B", "plasma.O2")])
    await emu.start()
    yield emu
    await emu.stop()


class DeviceServer:
    """A serial device server (Moxa NPort style) on loopback: each TCP client is joined
    to the serial port ``path`` for as long as it stays connected."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.server: asyncio.Server | None = None
        self.port = 0
        self._links: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for t in list(self._links):
                t.cancel()
            await asyncio.gather(*self._links, return_exceptions=True)
            await self.server.wait_closed()
            self.server = None

    async def _client(self, tcp_r: asyncio.StreamReader, tcp_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        ser_r, ser_w = await serial_asyncio_fast.open_serial_connection(
            url=self.path, baudrate=19200
        )

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(4096):
                dst.write(data)

        try:
            await asyncio.gather(pump(tcp_r, ser_w), pump(ser_r, tcp_w))
        finally:
            for w in (tcp_w, ser_w):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
            self._links.discard(task)


async def test_a_port_is_opened_once_shared_and_closed_by_its_last_user(
    bus: AlicatBus,
) -> None:
    ctx = DriverContext()
    path = str(bus.path)
    a = alicat.create("mfc_n2", {"port": path, "unit": "A"}, ctx)
    b = alicat.create("mfc_o2", {"port": path, "unit": "B"}, ctx)
    port = ctx.shared[f"serial:{path}"]
    assert isinstance(port, SerialPort)
    assert a.port is b.port is port
    await a.connect()
    await b.connect()
    assert port.generation == 1  # one open for both
    with pytest.raises(serial.SerialException):
        serial.Serial(path, 19200, exclusive=True)
    await a.close()
    assert port.attached == {"mfc_o2"}
    assert port.is_open  # b still uses it
    assert (await b.read_flow()).gas == "O2"
    with pytest.raises(CommunicationError, match=r"^mfc_n2: not connected"):
        await a.read_flow()
    await b.close()
    assert not port.attached
    serial.Serial(path, 19200, exclusive=True).close()  # released to the OS
    await a.connect()  # and opened again on demand
    assert port.generation == 2
    await a.close()


async def test_alicat_through_a_serial_device_server(bus: AlicatBus, plant: RealtimePlant) -> None:
    server = DeviceServer(str(bus.path))
    await server.start()
    mfc = alicat.create(
        "mfc", {"port": f"socket://127.0.0.1:{server.port}", "timeout": 0.3}, DriverContext()
    )
    try:
        await mfc.connect()
        await mfc.set_flow(40.0)
        assert plant.sync().read_mfc("carrier").setpoint_sccm == 40.0
        bus.line_noise = LineNoise(probability=1.0, seed=1)
        assert (await mfc.read_flow()).setpoint_sccm == 40.0
        assert mfc.health().garbage_bytes > 0
        bus.line_noise = None
        port_number = server.port
        await server.stop()  # the device server reboots: the TCP link drops
        with pytest.raises(CommunicationError):
            await mfc.read_flow()
        await server.start(port_number)
        assert (await mfc.read_flow()).setpoint_sccm == 40.0
        assert mfc.health().reconnects >= 1
    finally:
        await mfc.close()
        await server.stop()


async def test_a_runaway_of_junk_without_terminator_is_a_bad_frame(bus: AlicatBus) -> None:
    mfc = alicat.create("mfc", {"port": str(bus.path)}, DriverContext())
    await mfc.connect()
    try:
        read = asyncio.get_running_loop().create_task(mfc.read_flow(), name="read")
        await asyncio.sleep(0.005)  # the request is out; the reply takes ~30 ms
        bus.inject(b"\xff" * 700)  # e.g. a unit at the wrong baud rate spewing
        assert (await read).gas == "N2"
        h = mfc.health()
        assert h.bad_frames == 1  # no CR within 512 bytes: dropped, counted, retried
        assert h.garbage_bytes >= 700
        assert h.retries == 1
    finally:
        await mfc.close()


async def test_connect_to_a_missing_port_fails_bounded_naming_the_device(
    tmp_path: Path,
) -> None:
    mfc = alicat.create(
        "mfc", {"port": str(tmp_path / "nothing"), "timeout": 0.1, "retries": 1}, DriverContext()
    )
    with pytest.raises(CommunicationError, match=r"^mfc: link error: cannot open .*nothing"):
        await mfc.connect()
    assert mfc.health().failures == 2
    await mfc.close()


def test_line_settings_options() -> None:
    opts: dict[str, object] = {"baudrate": 115200, "parity": "e", "stopbits": 2}
    s = SerialSettings.from_options(opts, baudrate=9600)
    assert opts == {}
    assert s.describe() == "115200 8E2"
    assert s.char_time_s() == pytest.approx(12 / 115200)
    with pytest.raises(ValueError, match="option 'bytesize'"):
        SerialSettings.from_options({"bytesize": 9}, baudrate=9600)
    with pytest.raises(ValueError, match="option 'baudrate'"):
        SerialSettings.from_options({"baudrate": True}, baudrate=9600)
