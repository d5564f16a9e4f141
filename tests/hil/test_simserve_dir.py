"""``aldctl sim serve --dir``: servers that share a machine without colliding.

Two servers from the same ``config/hil.yaml`` run in one event loop here (the same code the
CLI runs, without the subprocess), each with its own directory: their ports and
pseudo-terminals differ, each writes a ``tool.yaml`` for its own endpoints, and the real
drivers built from that file reach that server's reactor. A taken port is a one-line
user error, as the CLI prints it.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import yaml

from aldctl import config as cfg
from aldctl.diagnostics import UserError
from aldctl.front.simserve import SimServer
from aldctl.tool import build

ROOT = Path(__file__).resolve().parents[2]
HIL = ROOT / "config" / "hil.yaml"


async def test_two_servers_side_by_side_each_with_a_ready_tool_config(tmp_path: Path) -> None:
    servers = [
        SimServer(
            cfg.load_tool(HIL), seed=i, state_dir=tmp_path / f"s{i}", relocate=True, source=HIL
        )
        for i in (1, 2)
    ]
    for srv in servers:
        srv.build()
        await srv.start()
    try:
        written = [yaml.safe_load((srv.state_dir / "tool.yaml").read_text()) for srv in servers]  # type: ignore[operator]
        ports = [w["devices"]["valves"]["port"] for w in written]
        assert ports[0] != ports[1]
        assert 15502 not in ports
        for srv, w in zip(servers, written, strict=True):
            assert srv.state_dir is not None
            for name, dev in w["devices"].items():
                if name != "valves":
                    assert Path(dev["port"]).parent == srv.state_dir / "tty", name
            # everything else is the configuration it was given
            original = yaml.safe_load(HIL.read_text())
            assert w["lines"] == original["lines"]
            assert w["safety"] == original["safety"]
        # the real drivers, built from the written file, reach their own server
        tool = build(cfg.load_tool(servers[1].state_dir / "tool.yaml"))  # type: ignore[operator]
        await tool.connect()
        try:
            bank, ch = tool.valves["H2O"]
            await bank.set_valve(ch, True)
            await asyncio.sleep(0.05)  # the valve's stroke
            assert servers[1].plant.sync().read_valves()["H2O"] is True
            assert servers[0].plant.sync().read_valves()["H2O"] is False
            assert tool.gauge is not None
            assert (await tool.gauge.read_pressure()).status == "ok"
        finally:
            await tool.close()
    finally:
        for srv in servers:
            await srv.stop()


async def test_a_taken_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        raw = yaml.safe_load(HIL.read_text())
        for dev in raw["devices"].values():
            if isinstance(dev.get("port"), str):
                dev["port"] = str(tmp_path / "tty" / Path(dev["port"]).name)
        raw["devices"]["valves"]["port"] = taken
        path = tmp_path / "busy.yaml"
        path.write_text(yaml.safe_dump(raw))
        srv = SimServer(cfg.load_tool(path), state_dir=tmp_path / "state")
        srv.build()
        with pytest.raises(UserError) as err:
            await srv.start()
    text = str(err.value)
    assert f"127.0.0.1:{taken} is busy" in text
    assert "--dir" in text
    assert "\n" not in text.strip()
