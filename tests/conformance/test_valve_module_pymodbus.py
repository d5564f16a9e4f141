"""The emulated WAGO 750-352 valve module, driven by plain pymodbus client calls.

Nothing from ``drivers/`` is used: the requests are what an integrator would type after
reading the manuals.

* WAGO 750-352/040-000 (FC ETHERNET G3 XTR) manual, version 1.3.0, section 11.2.5 "Modbus
  Watchdog", tables 112-124, pp. 173-176 (the 750-352 coupler's register set; the same
  wording is in the 750-882 manual 1.5.0, tables 132-135, p. 250).
* Modbus Application Protocol Specification v1.1b3, section 7 "MODBUS Exception
  Responses" (function code + 0x80; code 01 illegal function, 03 illegal data value) and
  the state diagrams of section 6.1 (Read Coils: 1 <= quantity <= 0x07D0, else 03).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ExceptionResponse

from sim.devices.modbus_dio import ModbusDioModule
from sim.reactor import Reactor, ReactorConfig
from sim.realtime import RealtimePlant

LINES = {0: "TMA", 1: "H2O", 15: "__pump__"}


@pytest.fixture
def plant() -> RealtimePlant:
    cfg = ReactorConfig.for_lines(["TMA", "H2O"], substrate_c=200.0, walls_c=150.0)
    return RealtimePlant(Reactor(cfg, seed=1))


@pytest.fixture
async def module(plant: RealtimePlant) -> AsyncIterator[ModbusDioModule]:
    mod = ModbusDioModule(plant, LINES, port=0)
    await mod.start()
    yield mod
    await mod.shutdown()


@pytest.fixture
async def client(module: ModbusDioModule) -> AsyncIterator[AsyncModbusTcpClient]:
    c = AsyncModbusTcpClient("127.0.0.1", port=module.port, timeout=1, retries=0)
    assert await c.connect()
    yield c
    c.close()


async def read(c: AsyncModbusTcpClient, address: int, count: int = 1) -> list[int]:
    rr = await c.read_holding_registers(address, count=count)
    assert not rr.isError(), rr
    return list(rr.registers)


async def write(c: AsyncModbusTcpClient, address: int, value: int) -> None:
    rr = await c.write_register(address, value)
    assert not rr.isError(), rr


async def exception_code(c: AsyncModbusTcpClient, address: int, value: int) -> int:
    rr = await c.write_register(address, value)
    assert isinstance(rr, ExceptionResponse), rr
    return int(rr.exception_code)


async def test_factory_registers_after_power_on(client: AsyncModbusTcpClient) -> None:
    # table 112: 0x1000 default 0x0064; table 113/114: masks 0xFFFF; 0x1003 starts at 0;
    # table 116: 0x1004 default 0xFFFF; table 118: status 0 (not active)
    wd_time, mask_lo, mask_hi, trigger, least = await read(client, 0x1000, 5)
    assert (wd_time, mask_lo, mask_hi, trigger, least) == (0x0064, 0xFFFF, 0xFFFF, 0, 0xFFFF)
    assert await read(client, 0x1006) == [0]


async def test_any_request_retriggers_with_the_factory_mask(
    client: AsyncModbusTcpClient, module: ModbusDioModule
) -> None:
    """Mask 0xFFFF (table 113: bit n-1 = function code n): reading coils (FC01) every
    0.2 s keeps a 0.5 s watchdog alive, with no write to 0x1003 after the start."""
    await write(client, 0x1000, 5)
    await write(client, 0x1003, 1)  # "writing a value not equal to zero starts the watchdog"
    assert await read(client, 0x1006) == [1]
    rr = await client.write_coil(1, True)
    assert not rr.isError()
    for _ in range(8):  # 1.6 s, three times the watchdog time
        await asyncio.sleep(0.2)
        rr = await client.read_coils(0x200, count=2)
        assert not rr.isError(), rr
    assert await read(client, 0x1006) == [1]
    assert module.outputs[1] is True


async def test_expiry_then_a_new_trigger_value_resets_the_fault(
    client: AsyncModbusTcpClient, plant: RealtimePlant
) -> None:
    """Table 115: "For a restart the written value must necessarily be unequal the before
    written value! A watchdog fault is reset and writing process data is possible again."
    Section 11.2.5.1: reading 0x1004 "reveals whether a watchdog fault occurred. If this
    time value is 0, a fieldbus failure is assumed"."""
    await write(client, 0x1001, 0)  # only 0x1003 retriggers (allowed while stopped)
    await write(client, 0x1000, 3)  # 0.3 s
    await write(client, 0x1003, 7)
    assert not (await client.write_coil(1, True)).isError()
    await asyncio.sleep(0.6)
    assert await read(client, 0x1006) == [2]  # "Watchdog exhausted"
    assert await read(client, 0x1004) == [0]
    refused = await client.write_coil(1, True)
    assert isinstance(refused, ExceptionResponse)
    assert refused.exception_code == 4  # process data refused: slave device failure
    await write(client, 0x1003, 8)  # a different value: the fault is reset
    assert await read(client, 0x1006) == [1]
    assert await read(client, 0x1004) == [0]  # the record of the fault stays
    rr = await client.read_coils(0x200, count=2)
    assert not rr.isError()
    assert rr.bits[:2] == [False, False]  # the outputs the expiry dropped stay off
    assert not (await client.write_coil(1, True)).isError()  # process data accepted again
    await write(client, 0x1004, 0xFFFF)  # clearing the record by writing it (table 116)
    assert 0 < (await read(client, 0x1004))[0] <= 3


async def test_0x1000_and_masks_cannot_change_while_running(client: AsyncModbusTcpClient) -> None:
    """Table 112: "It is not possible to modify this value while the watchdog is running"
    (the same for 0x1001/0x1002). The stop and a write of the new time then succeed."""
    await write(client, 0x1000, 50)
    await write(client, 0x1003, 1)
    code = await exception_code(client, 0x1000, 20)
    assert code != 4  # not the expiry's slave device failure
    assert await exception_code(client, 0x1001, 0) == code
    await write(client, 0x1008, 0xAA55)  # table 120: simple stop
    assert await read(client, 0x1006) == [0]
    await write(client, 0x1000, 20)
    assert await read(client, 0x1000) == [20]
    await write(client, 0x1005, 0xAAAA)  # table 117: 0xAAAA then 0x5555 also stops
    await write(client, 0x1005, 0x5555)
    assert await read(client, 0x1006) == [0]


async def test_0x1004_is_the_minimum_remaining_time_not_the_current_one(
    client: AsyncModbusTcpClient,
) -> None:
    """Table 116: "If the watchdog is triggered, the saved value is compared with the
    current value. If the current value is smaller than the saved value, this is replaced
    by the current value. The unit is 100 ms/digit." After a trigger that came late
    (0.5 s into a 10 s watchdog) and a prompt one, the register keeps the low point."""
    await write(client, 0x1001, 0)
    await write(client, 0x1000, 100)
    await write(client, 0x1003, 1)
    await asyncio.sleep(0.5)
    await write(client, 0x1003, 2)  # remaining was at most 9.5 s: saved value <= 95
    await write(client, 0x1003, 3)  # remaining is back at 10 s, the saved value is not
    least = (await read(client, 0x1004))[0]
    assert 0 < least <= 95
    await write(client, 0x1008, 0x55AA)


async def test_writing_zero_to_0x1004_is_refused(client: AsyncModbusTcpClient) -> None:
    # table 116: "0x0000 is not permissible"
    assert await exception_code(client, 0x1004, 0) == 3


async def raw(module: ModbusDioModule, pdu: bytes) -> bytes:
    """One Modbus TCP request built by hand (MBAP: transaction, protocol 0, length, unit)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    try:
        writer.write(struct.pack(">HHHB", 0x1234, 0, len(pdu) + 1, 1) + pdu)
        await writer.drain()
        header = await asyncio.wait_for(reader.readexactly(7), 2)
        tid, proto, length, _ = struct.unpack(">HHHB", header)
        assert (tid, proto) == (0x1234, 0)
        return await asyncio.wait_for(reader.readexactly(length - 1), 2)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("pdu", "reply"),
    [
        (bytes([0x41, 0, 0]), bytes([0xC1, 0x01])),  # unknown function: fc + 0x80, 01
        (bytes([0x01, 0, 0, 0, 0]), bytes([0x81, 0x03])),  # FC01 quantity 0: 03
        (bytes([0x01, 0, 0, 0x07, 0xD1]), bytes([0x81, 0x03])),  # FC01 quantity 2001
        (bytes([0x03, 0x10, 0, 0, 0x7E]), bytes([0x83, 0x03])),  # FC03 quantity 126
        (bytes([0x05, 0, 0, 0x12, 0x34]), bytes([0x85, 0x03])),  # FC05 not 0000/FF00
        (bytes([0x10, 0x10, 0, 0, 1, 4, 0, 1, 0, 2]), bytes([0x90, 0x03])),  # count != 2N
        (bytes([0x01, 0x00, 0x40, 0, 1]), bytes([0x81, 0x02])),  # no such coil: 02
    ],
)
async def test_exception_replies_follow_the_modbus_specification(
    module: ModbusDioModule, pdu: bytes, reply: bytes
) -> None:
    assert await raw(module, pdu) == reply


async def test_two_requests_in_one_segment_are_both_answered(module: ModbusDioModule) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    try:
        one = struct.pack(">HHHB", 1, 0, 6, 1) + bytes([0x03, 0x10, 0x06, 0, 1])
        two = struct.pack(">HHHB", 2, 0, 6, 1) + bytes([0x03, 0x10, 0x00, 0, 1])
        writer.write(one + two)
        await writer.drain()
        replies = [await asyncio.wait_for(reader.readexactly(11), 2) for _ in range(2)]
    finally:
        writer.close()
        await writer.wait_closed()
    assert [struct.unpack(">H", r[:2])[0] for r in replies] == [1, 2]
    assert replies[1][-2:] == bytes([0, 0x64])  # 0x1000: the factory 10 s


async def test_a_valve_stuck_open_reads_off_on_its_output_and_open_on_its_limit_switch(
    client: AsyncModbusTcpClient, plant: RealtimePlant
) -> None:
    # What position_inputs relies on, seen by a client nobody here wrote: FC01 at 0x200 is
    # the output image (WAGO manual "MODBUS registers": 0x200.. reads back the outputs),
    # FC02 from 0 the input image, where each valve's "open" limit switch is wired.
    rr = await client.write_coil(0, True)
    assert not rr.isError(), rr
    await asyncio.sleep(0.1)  # a valve stroke
    plant.sync().faults.inject("valve_stuck_open", "TMA")
    rr = await client.write_coil(0, False)
    assert not rr.isError(), rr
    await asyncio.sleep(0.1)
    outputs = await client.read_coils(0x200, count=2)
    switches = await client.read_discrete_inputs(0, count=2)
    assert not outputs.isError(), outputs
    assert not switches.isError(), switches
    assert outputs.bits[:2] == [False, False]  # commanded closed: the output is off
    assert switches.bits[:2] == [True, False]  # TMA's stem is still open, H2O's closed
