"""``aldctl sim serve``: the simulated reactor on the wall clock, behind real wire protocols.

Reads a tool configuration that uses real drivers (``config/hil.yaml``) and, for every
device in it, starts the matching emulator at the address the configuration gives: Modbus
TCP servers on their ports, pseudo-terminals linked at the serial ports' paths (one per
RS-485 bus, carrying every unit the configuration puts on it). All emulators share one
reactor model advanced on the monotonic clock (:class:`sim.realtime.RealtimePlant`), so
``aldctl run --config config/hil.yaml --realtime`` drives the real drivers against physics.

With ``--dir D`` (``SimServer(..., relocate=True)``) the server owns ``D`` and nothing
else: its serial ports become pseudo-terminals under ``D/tty/``, its Modbus TCP servers take
free ports on 127.0.0.1, and ``D/tool.yaml`` is the configuration it was given with those
endpoints substituted, ready for ``aldctl run RECIPE --config D/tool.yaml``. Two servers
with two directories run side by side. Without ``--dir`` the endpoints are the
configuration's own (``config/hil.yaml``: port 15502, ``/tmp/aldctl-sim/``); a port that is
taken is a one-line error.

Next to the endpoints it keeps these files in its state directory (default: the directory
of the first serial port, else ``/tmp/aldctl-sim``):

* ``tool.yaml``: with ``--dir``, the tool configuration for its endpoints;
* ``endpoints.json``: what is served where (for tools and tests);
* ``status.json``: the reactor's ground truth, rewritten five times a second and at exit
  (thickness, composition, pressure, valve positions, temperatures);
* ``edges.csv``: every valve edge as the emulated I/O module applied it (plant time,
  line, open/closed, what moved it), which is how pulse timing over the wire is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aldctl.config import ToolConfig
from aldctl.diagnostics import UserError
from aldctl.session import FaultSpec
from aldctl.tool import simulated_reactor

if TYPE_CHECKING:
    from sim.realtime import ValveEdge

DEFAULT_DIR = Path("/tmp/aldctl-sim")
STATUS_INTERVAL_S = 0.2


class Emulator(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Served:
    kind: str
    where: str
    devices: list[str]
    emulator: Emulator


@dataclass
class SimServer:
    tool: ToolConfig
    seed: int = 0
    state_dir: Path | None = None
    faults: list[FaultSpec] = field(default_factory=list)
    served: list[Served] = field(default_factory=list)
    relocate: bool = False
    """Serve every endpoint inside ``state_dir`` and on free ports (``--dir``)."""
    source: Path | None = None
    """The configuration file the tool came from (``tool.yaml`` is written from it)."""

    def __post_init__(self) -> None:
        from sim.realtime import RealtimePlant

        self.sim = simulated_reactor(self.tool, self.seed)
        self.plant = RealtimePlant(self.sim.reactor)
        if self.state_dir is None:
            ports = [
                str(d.options.get("port"))
                for d in self.tool.devices.values()
                if isinstance(d.options.get("port"), str)
            ]
            self.state_dir = Path(ports[0]).parent if ports else DEFAULT_DIR
        self._status_task: asyncio.Task[None] | None = None
        self.collect_overdue: Callable[[], object] | None = None
        self._serial_paths: dict[str, str] = {}
        """Configured serial port -> where it is served (the same unless relocated)."""
        self._tcp: dict[str, Any] = {}
        """Device name -> its TCP emulator (ports are known once started)."""

    def _serial_path(self, configured: str) -> str:
        if not self.relocate:
            return configured
        if configured not in self._serial_paths:
            assert self.state_dir is not None
            taken = set(self._serial_paths.values())
            base = Path(configured).name or "port"
            path, n = self.state_dir / "tty" / base, 1
            while str(path) in taken:
                n += 1
                path = self.state_dir / "tty" / f"{base}-{n}"
            self._serial_paths[configured] = str(path)
        return self._serial_paths[configured]

    # ------------------------------------------------------------------ roles

    def _roles(self) -> dict[str, list[str]]:
        """Device name -> the reactor components it stands for."""
        roles: dict[str, list[str]] = {}
        t = self.tool
        for name, h in t.heaters.items():
            roles.setdefault(h.device, []).append(name)
        for ln in t.lines.values():
            if ln.source_heater:
                roles.setdefault(ln.source_heater, []).append(f"source.{ln.chemical}")
            if ln.line_heater:
                roles.setdefault(ln.line_heater, []).append(f"line.{ln.chemical}")
        for name, f in t.flows.items():
            roles.setdefault(f.device, []).append(name)
        for g in t.gauges.values():
            roles.setdefault(g.device, []).append("chamber")
        if t.plasma is not None:
            roles.setdefault(t.plasma.device, []).append("rf")
        if t.ozone is not None:
            roles.setdefault(t.ozone.device, []).append("ozone")
        if t.qcm is not None:
            roles.setdefault(t.qcm.device, []).append("qcm")
        return roles

    def _component(self, roles: dict[str, list[str]], device: str) -> str:
        comps = roles.get(device, [])
        if len(comps) != 1:
            what = "no role" if not comps else f"several roles ({', '.join(comps)})"
            msg = f"device '{device}' has {what} in the tool config: cannot emulate it"
            raise UserError(msg)
        return comps[0]

    def build(self) -> None:
        from sim.devices import aebus, alicat, mks, modbus_dio, modbus_rtu, pfeiffer, sqm160

        roles = self._roles()
        plant = self.plant
        serial: dict[str, list[tuple[str, Any]]] = {}
        for name, spec in self.tool.devices.items():
            opts = spec.options
            if spec.driver == "modbus-dio":
                lines: dict[int, str] = {}
                for ln in self.tool.lines.values():
                    if ln.valve.device == name:
                        lines[ln.valve.channel] = ln.chemical
                normally_open: list[int] = []
                for label, ref in (
                    ("__pump__", self.tool.pump_isolation),
                    ("__carrier__", self.tool.carrier_shutoff),
                ):
                    if ref is not None and ref.device == name:
                        lines[ref.channel] = label
                        if ref.fails == "open":
                            normally_open.append(ref.channel)
                host = "127.0.0.1" if self.relocate else str(opts.get("host", "127.0.0.1"))
                port = 0 if self.relocate else int(opts.get("port", 502))
                emu: Emulator = modbus_dio.ModbusDioModule(
                    plant,
                    lines,
                    host=host,
                    port=port,
                    channels=int(opts.get("channels", 16)),
                    component="valves",
                    pulse_outputs=bool(opts.get("pulse_outputs", True)),
                    normally_open=normally_open,
                    # its own thread and loop: the physics and the other emulators never
                    # delay its answers (its arrival stamps come from the kernel anyway)
                    own_thread=True,
                )
                self._tcp[name] = emu
                self.served.append(Served("Modbus TCP valve I/O", f"{host}:{port}", [name], emu))
            elif spec.driver in modbus_rtu.UNIT_TYPES or spec.driver in (
                "alicat",
                "pfeiffer",
                "mks9xx",
                "aebus",
                "sqm160",
            ):
                port_path = opts.get("port")
                if not isinstance(port_path, str) or "://" in port_path:
                    msg = (
                        f"device '{name}': `aldctl sim serve` emulates serial devices on "
                        f"pseudo-terminals and needs a path as their port, not {port_path!r}"
                    )
                    raise UserError(msg)
                serial.setdefault(self._serial_path(port_path), []).append((name, spec))
            elif spec.driver.startswith("simulated-"):
                msg = (
                    f"device '{name}' uses the in-process driver {spec.driver}: serve a "
                    "configuration with real drivers (config/hil.yaml)"
                )
                raise UserError(msg)
            else:
                msg = f"device '{name}': no emulator for driver '{spec.driver}'"
                raise UserError(msg)
        for path, devs in serial.items():
            drivers = {spec.driver for _, spec in devs}
            names = [n for n, _ in devs]
            if drivers <= set(modbus_rtu.UNIT_TYPES):
                units: list[Any] = []
                for name, spec in devs:
                    comp = self._component(roles, name)
                    o = spec.options
                    address = int(o["address"])
                    if spec.driver == "eurotherm3200":
                        units.append(
                            modbus_rtu.Eurotherm3200(
                                plant, address, comp, decimals=int(o.get("decimals", 1))
                            )
                        )
                    elif spec.driver == "watlow-pm":
                        # the driver's defaults are the factory's: low word first, degF
                        order: Literal["big", "little"] = (
                            "big" if o.get("word_order") == "big" else "little"
                        )
                        unit_t: Literal["C", "F"] = "C" if o.get("units") == "C" else "F"
                        units.append(
                            modbus_rtu.WatlowPM(
                                plant, address, comp, word_order=order, units=unit_t
                            )
                        )
                    else:
                        units.append(modbus_rtu.OzoneGenerator(plant, address))
                baud = int(devs[0][1].options.get("baudrate", 19200))
                self.served.append(
                    Served(
                        "Modbus RTU bus",
                        path,
                        names,
                        modbus_rtu.ModbusRtuBus(path, units, baudrate=baud),
                    )
                )
                continue
            if len(drivers) != 1:
                msg = f"serial port {path} mixes protocols ({', '.join(sorted(drivers))})"
                raise UserError(msg)
            driver = drivers.pop()
            if driver == "alicat":
                au = [(str(s.options["unit"]), self._component(roles, n)) for n, s in devs]
                self.served.append(
                    Served("Alicat MFC bus", path, names, alicat.AlicatBus(plant, path, au))
                )
                continue
            iu = [(int(s.options.get("address", 1)), self._component(roles, n)) for n, s in devs]
            factory: dict[str, tuple[str, Callable[..., Emulator]]] = {
                "pfeiffer": ("Pfeiffer gauge", pfeiffer.PfeifferBus),
                "mks9xx": ("MKS gauge", mks.MksBus),
                "aebus": ("AE Bus RF generator", aebus.AeBus),
                "sqm160": ("SQM-160 QCM", sqm160.Sqm160),
            }
            label, make = factory[driver]
            if driver == "sqm160":
                iu = [(1, c) for _, c in iu]
            self.served.append(Served(label, path, names, make(plant, path, iu)))

    # ------------------------------------------------------------------ running

    async def start(self) -> None:
        assert self.state_dir is not None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        started: list[Served] = []
        try:
            for s in self.served:
                try:
                    await s.emulator.start()
                except OSError as exc:
                    raise _CannotServe(s, exc) from None
                started.append(s)
        except _CannotServe as failed:
            for s in reversed(started):
                await s.emulator.stop()
            raise UserError(failed.message()) from None
        for s in self.served:
            emu: Any = s.emulator
            if s.devices[0] in self._tcp:
                s.where = f"{emu.host}:{emu.port}"
        r = self.plant.sync()
        for f in self.faults:
            try:
                r.faults.inject(
                    f.kind,
                    f.target,
                    at_ns=r.now_ns + round(f.at_s * 1e9) if f.at_s else None,
                    duration_ns=round(f.duration_s * 1e9) if f.duration_s else None,
                    **f.params,
                )
            except (ValueError, KeyError) as exc:
                await self.stop()
                msg = f"--fault {f.kind}: {exc}"
                raise UserError(msg) from None
        if self.relocate:
            self._write_tool_yaml()
        (self.state_dir / "endpoints.json").write_text(json.dumps(self.endpoints(), indent=2))
        (self.state_dir / "edges.csv").write_text("t_s,line,open,source\n")
        self._write_status()
        self._status_task = asyncio.get_running_loop().create_task(
            self._status_loop(), name="sim-status"
        )

    def _write_tool_yaml(self) -> None:
        """The configuration this server was given, with its endpoints substituted."""
        import yaml

        assert self.state_dir is not None
        raw: dict[str, Any] = (
            yaml.safe_load(self.source.read_text(encoding="utf-8")) if self.source else {}
        )
        if not isinstance(raw, dict) or not isinstance(raw.get("devices"), dict):
            raw = self.tool.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        for name, dev in raw["devices"].items():
            if name in self._tcp:
                dev["host"] = self._tcp[name].host
                dev["port"] = self._tcp[name].port
            elif isinstance(dev.get("port"), str) and dev["port"] in self._serial_paths:
                dev["port"] = self._serial_paths[dev["port"]]
        header = (
            f"# Written by `aldctl sim serve --dir {self.state_dir}` from "
            f"{self.source or 'its tool configuration'}, with the endpoints it serves.\n"
            f"# aldctl run RECIPE --config {self.state_dir / 'tool.yaml'} --realtime\n"
        )
        text = header + yaml.safe_dump(raw, sort_keys=False)
        tmp = self.state_dir / "tool.yaml.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.state_dir / "tool.yaml")

    def endpoints(self) -> dict[str, Any]:
        return {
            "tool": self.tool.name,
            "config": str(self.state_dir / "tool.yaml")
            if self.relocate and self.state_dir
            else None,
            "served": [{"kind": s.kind, "at": s.where, "devices": s.devices} for s in self.served],
            "status": str(self.state_dir / "status.json") if self.state_dir else None,
            "edges": str(self.state_dir / "edges.csv") if self.state_dir else None,
        }

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            # the model is read here; the files are written by a thread, off the loop that
            # stamps valve commands as they arrive (a write took 0.3 ms, 1 ms at worst)
            writing = asyncio.ensure_future(asyncio.to_thread(self._write_files, self._status()))
            try:
                await asyncio.shield(writing)
            except asyncio.CancelledError:
                await writing  # stop() writes last: these edges must land before its own
                raise
            if self.collect_overdue is not None:
                self.collect_overdue()

    def _write_status(self) -> None:
        self._write_files(self._status())

    def _status(self) -> tuple[dict[str, Any], list[ValveEdge]]:
        r = self.plant.sync()
        t = r.truth()
        status = {
            "t_s": self.plant.now(),
            "thickness_nm": t.thickness_a / 10.0,
            "cvd_thickness_nm": t.cvd_thickness_a / 10.0,
            "composition": t.composition,
            "pressure_torr": t.pressure_torr,
            "valves": r.read_valves(),
            "temperatures_c": t.temperatures_c,
            "valve_actuations": t.valve_actuations,
            "consumed_g": t.consumed_g,
        }
        edges = self.plant.edges
        taken = [edges.popleft() for _ in range(len(edges))]
        return status, taken

    def _write_files(self, status_edges: tuple[dict[str, Any], list[ValveEdge]]) -> None:
        assert self.state_dir is not None
        status, edges = status_edges
        tmp = self.state_dir / "status.json.tmp"
        tmp.write_text(json.dumps(status, indent=1))
        tmp.replace(self.state_dir / "status.json")  # atomic: readers never see half a file
        if edges:
            with (self.state_dir / "edges.csv").open("a", newline="") as f:
                w = csv.writer(f)
                for e in edges:
                    w.writerow([f"{e.t:.6f}", e.line, int(e.is_open), e.source])

    async def stop(self) -> None:
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        with contextlib.suppress(OSError):
            self._write_status()
        for s in reversed(self.served):
            with contextlib.suppress(Exception):
                await s.emulator.stop()


class _CannotServe(Exception):
    def __init__(self, served: Served, exc: OSError) -> None:
        super().__init__(str(exc))
        self.served = served
        self.exc = exc

    def message(self) -> str:
        import errno

        where = self.served.where
        if self.exc.errno == errno.EADDRINUSE:
            return (
                f"{self.served.kind} at {where} is busy (another `aldctl sim serve`?): "
                "stop it, or give each server its own --dir (free ports, its own files)"
            )
        return f"cannot serve {self.served.kind} at {where}: {self.exc.strerror or self.exc}"


async def serve_forever(server: SimServer, on_ready: Callable[[SimServer], None]) -> None:
    """Start, report, and run until SIGINT/SIGTERM; always stop cleanly."""
    from aldctl.engine.clock import (
        GC_OVERDUE,
        collect_if_due,
        freeze_heap,
        release_realtime,
        request_realtime,
    )

    # The emulators stand in for hardware with its own timing: schedule them like the
    # controller, where Linux allows, so their edges are not late for want of a CPU.
    request_realtime(priority=5)
    # The valve module answers from its own thread; with the default 5 ms switch interval
    # it could wait that long for the interpreter while the physics computes.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await server.start()
        # Like the hardware it stands in for, the server should not pause at random: its
        # garbage is collected just after a valve edge (the next one is at least a pulse
        # away), or by the status writer once it piles up with no edges.
        freeze_heap()
        gc.disable()
        server.plant.on_edge = collect_if_due
        server.collect_overdue = lambda: collect_if_due(GC_OVERDUE // 10)
        on_ready(server)
        await done.wait()
    finally:
        gc.enable()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()
        sys.setswitchinterval(switch)
        release_realtime()
