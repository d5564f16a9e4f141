"""A Modbus TCP module whose TCP stack stops taking connections (its accept queue full, the
kernel dropping each SYN: what a hung module or a half-dead switch looks like) must not hold
the driver longer than its policy promises, ``attempts x (timeout + backoff)``
(drivers/link.py). On 0b233ca the reconnect between two attempts had no time limit but
pymodbus' own 30 s connect timeout: one read of the valve module held the bus lock, and with
it the heartbeat, for 30 s. Real sockets, no emulator: the peer is a listening socket that
takes the first connection and then nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest

from drivers.base import CommunicationError, DeviceTimeout, DriverContext
from drivers.modbus_dio import create
from sim.devices.modbus_dio import ModbusDioModule
from sim.reactor import Reactor, ReactorConfig
from sim.realtime import RealtimePlant

LINES = {0: "TMA", 1: "H2O", 15: "__pump__"}


async def test_a_reconnect_to_a_module_that_takes_no_connection_is_bounded() -> None:
    plant = RealtimePlant(Reactor(ReactorConfig.for_lines(["TMA", "H2O"]), seed=7))
    module = ModbusDioModule(plant, LINES, port=0)
    await module.start()
    loop = asyncio.get_running_loop()
    # The module's address: a listening socket that hands its first connection to the
    # emulated module (so that connect's own exchanges are answered) and then takes no more.
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    held: list[socket.socket] = []
    answering = True

    async def forward() -> None:
        conn, _ = await loop.sock_accept(srv)
        held.append(conn)
        mr, mw = await asyncio.open_connection("127.0.0.1", module.port)
        try:
            while True:
                data = await loop.sock_recv(conn, 4096)
                if not data:
                    return
                if not answering:
                    continue  # the module went silent: requests are swallowed
                mw.write(data)
                await mw.drain()
                await loop.sock_sendall(conn, await mr.read(4096))
        finally:
            mw.close()

    fwd = asyncio.ensure_future(forward())
    opts = {"host": "127.0.0.1", "port": port, "timeout": 0.2, "retries": 2}
    dev = create("valves", opts, DriverContext())
    try:
        await asyncio.wait_for(dev.connect(), 10.0)
        await dev.read_valves()  # the link works
        answering = False
        # Fill the accept queue so that the kernel drops every further SYN: connect() hangs.
        for _ in range(4):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            held.append(s)
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        # the request is not answered: the attempt times out, the retry reconnects, and the
        # reconnect must give up within the policy's time as an attempt does
        with pytest.raises((DeviceTimeout, CommunicationError)) as err:
            await asyncio.wait_for(dev.read_valves(), 25.0)
        took = time.monotonic() - t0
        assert "valves" in str(err.value)
        # policy: 3 attempts x (0.2 s + backoff <= 0.5 s), each reconnect bounded as one
        assert took < 5.0, f"read_valves took {took:.1f} s ({err.value})"
    finally:
        fwd.cancel()
        with contextlib.suppress(Exception):
            await dev.close()
        for s in held:
            s.close()
        srv.close()
        await module.shutdown()
