"""The fuzzing campaign: hostile recipes and tool configs through the real loader, compiler
and planner, and random bytes from a device's side to every serial driver's frame parser.

Run as a script (the test runs it so, under a memory limit and with a per-input time limit)::

    python tests/reliability/fuzz.py --inputs 3000 --seed 1 [--json]

Each input ends in one of: accepted, a user error (``UserError``, what ``aldctl validate``
prints as ``file:line:col: error: ...``), or, for frames, a ``DeviceError`` (what the engine
handles). Anything else is an internal error; an input that takes more than the time limit
is a hang; a ``MemoryError`` under the address-space limit is unbounded allocation. The
script prints the counts, and the first failing inputs, and exits 1 if there are any.

Inputs are drawn by hypothesis (generation only, so every input counts and none is spent
shrinking) from mutations of the shipped recipes and tool configs: structure-aware ones on
the YAML tree (replace a value by a hostile one, drop, rename, duplicate or nest a key, wrap
a value in a list) and text-level ones (insert, delete, flip characters; splice in YAML
syntax such as anchors, aliases, tags and deep brackets).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SEED_RECIPES = [
    ROOT / "recipes" / "al2o3_tma_h2o.yaml",
    ROOT / "recipes" / "litaox_1_6.yaml",
    ROOT / "tests" / "recipes" / "every_step.yaml",
]
SEED_CONFIGS = [ROOT / "config" / "example-lab.yaml", ROOT / "config" / "hil.yaml"]


def readme_chemistry() -> str:
    """The README's chemistry-file example (section "Your own chemicals and processes"):
    what a lab copies first, so the seed the chemistry mutations start from."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### Your own chemicals and processes")
    block = text.index("```yaml\n", start) + len("```yaml\n")
    return text[block : text.index("```", block)]


SUPERCYCLE_CHEMISTRY = """\
processes:
  LiAlO-lab:
    film: LiAlOx
    kind: supercycle
    subcycles:
      Li2O: {doses: [LiOtBu, H2O], phase: Li2O, gpc: [{T: 225 degC, gpc: 1.1 angstrom}]}
      Al2O3: {doses: [TMA, H2O], phase: Al2O3, gpc: [{T: 225 degC, gpc: 1.0 angstrom}]}
    gpc_vs_ratio: [{ratio: {Li2O: 1, Al2O3: 3}, value: 4.2 angstrom, per: supercycle}]
    T: 225 degC
    interaction: {"Al2O3 after Li2O": 1.5}
    source: "our ellipsometry, 2026-11"
chemicals:
  H2O: {source_T: 20 degC, vapour: {antoine: [8.07131, 1730.63, 233.426]}}
  TMA: {vapour: {cc: [8.224, 2134.83]}, decomposition: {onset: 350 degC, from: assumed}}
"""
"""A supercycle process and overrides of shipped chemicals by curve: the parts of the
chemistry-file grammar the README's example does not use."""

HFO2_RECIPE = """\
name: HfO2 from TEMAHf and H2O
params:
  T: 250 degC
substrate: {material: Si}
setup:
  - set: {carrier: 20 sccm, walls: 150 degC, substrate: $T}
  - set: {source.TEMAHf: 75 degC, line.TEMAHf: 90 degC}
  - wait_until: {substrate: {within: 2 K, for: 30 s}, timeout: 45 min}
cycles:
  HfO2:
    - pulse: {TEMAHf: 400 ms}
    - purge: 5 s
    - pulse: {H2O: 30 ms}
    - purge: 5 s
main:
  - cycle: {name: HfO2, target: 2 nm}
teardown:
  - set: {substrate: off, source.TEMAHf: off, line.TEMAHf: off}
"""
"""A recipe that doses the README example's new chemical and grows to a ``target:`` from
its new process's growth per cycle: a mutated chemistry file reaches the compiler and the
planner through it (and through the shipped Al2O3 recipe, whose process the README
example recalibrates)."""

HOSTILE_SCALARS: list[Any] = [
    "15 'ms",
    "15 ms#",
    "15 (ms",
    "15 ms)",
    "5e-324 s",
    "1e308 s",
    "-5 s",
    "nan s",
    "inf degC",
    "0 s",
    "15 " + "m*" * 400 + "s",
    "15 furlong",
    "250 degC",
    "-300 degC",
    "1e99 sccm",
    "$nope",
    "$T",
    "$",
    "",
    " ",
    "off",
    "on",
    "li-metal",
    "Li metal",
    "LI_METAL",
    "Li-metl",
    "\x1b[2J\x1b[31mred",
    "\u202eevil",
    "x" * 300 + ".yaml",
    "../../../etc/passwd",
    "/etc/shadow",
    "/dev/zero",
    "sub.yaml",
    0,
    -1,
    1,
    10**9,
    10**30,
    2**63,
    1.5,
    -0.0,
    float("inf"),
    True,
    False,
    None,
    [],
    {},
    [1, 2, 3],
    {"a": 1},
    {"TMA": "15 ms"},
    {"time": "5 s"},
    "TMA",
    "tma",
    "TMAX",
    "H2O",
    "valves:99",
    "valves:0",
    "nosuch:1",
    "rf",
]
SYNTAX_SPLICES = [
    "&a ",
    "*a",
    "*nosuch",
    "!!python/object:os.system ",
    "!!binary ",
    "<<: *a\n",
    "[" * 100,
    "{" * 70 + "}" * 70,
    "- " * 80,
    "? ",
    "%YAML 1.1\n---\n",
    "---\n",
    "...\n",
    "\t",
    "'",
    '"',
    '"\\e[2J"',
    "#",
    ": ",
    "\\x00",
    "\ufeff",
    "\U0001f4a9",
]

CHEM_SCALARS: list[Any] = [
    *HOSTILE_SCALARS,
    # the physical edges of a chemistry file: absolute zero, poles, overflowing curves
    "0 K",
    "0.0 K",
    "-273.15 degC",
    "-273.14 degC",
    "1e-9 K",
    "1e12 K",
    "2000 degC",
    "-100 degC",
    "500 degC",
    "0 Torr",
    "1e-300 Torr",
    "1e12 Torr",
    "0 g/mol",
    "1e-12 g/mol",
    "0 g/cm**3",
    "0 angstrom",
    "1e-12 angstrom",
    "1 km",
    "-1 angstrom",
    "1e308",
    -1e308,
    1e-308,
    -273.15,
    233.426,
    -233.426,
    "cc",
    "antoine",
    {"cc": [1000, 2000]},
    {"cc": [8.2, 0]},
    {"antoine": [8.07, 1730.6, -100.0]},
    {"antoine": [1e300, 1e300, 1e300]},
    {"T": "0 K", "p": "0.1 Torr"},
    {"T": "75 degC", "value": "0 angstrom"},
    [{"T": "75 degC", "p": "0.1 Torr"}, {"T": "75.0000001 degC", "p": "0.1 Torr"}],
    {"Li2O": 0, "Al2O3": 3},
    {"nosuch": 1},
    {"Hf": 0},
    "supercycle",
    "TEMAHf",
    "Li2O",
    "HfO2",
    "precursor",
    "plasma",
    "gas",
    "solid",
]


WALL_FACTOR = 10.0


class Hang(Exception):
    pass


_TIMED_OUT = [False]


def _alarm(_signum: int, _frame: Any) -> None:
    # Raised wherever the input is; if that is a place that swallows exceptions (a gc
    # callback), the flag still marks the input as over its time limit.
    _TIMED_OUT[0] = True
    raise Hang


# ---------------------------------------------------------------------- mutations


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def _mutate_tree(tree: Any, data: st.DataObject, n: int, scalars: list[Any] | None = None) -> Any:
    """Apply ``n`` structure-aware mutations to a copy of a YAML tree (``scalars``: the
    hostile values to put in, :data:`HOSTILE_SCALARS` by default)."""
    import copy

    pool = HOSTILE_SCALARS if scalars is None else scalars

    tree = copy.deepcopy(tree)
    for _ in range(n):
        paths = _paths(tree)
        leaves = [p for p in paths if p and isinstance(_get(tree, p), str | int | float)]
        if leaves and data.draw(st.integers(0, 9)) < 6:
            path = data.draw(st.sampled_from(leaves))
            parent = _get(tree, path[:-1])
            value = parent[path[-1]]
            if isinstance(value, str) and _QUANTITY.match(value) and data.draw(st.booleans()):
                parent[path[-1]] = _tweak_quantity(value, data)
            else:
                parent[path[-1]] = copy.deepcopy(data.draw(st.sampled_from(pool)))
            continue
        path = data.draw(st.sampled_from(paths))
        op = data.draw(
            st.sampled_from(["replace", "replace", "replace", "drop", "rename", "wrap", "nest"])
        )
        if not path:
            if op == "wrap":
                tree = [tree]
            continue
        parent = _get(tree, path[:-1])
        key = path[-1]
        if op == "replace":
            parent[key] = copy.deepcopy(
                data.draw(
                    st.one_of(
                        st.sampled_from(pool),
                        st.text(max_size=30),
                        st.integers(),
                        st.floats(),
                    )
                )
            )
        elif op == "drop":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            new = data.draw(
                st.one_of(st.sampled_from([str(x) for x in pool]), st.text(max_size=12))
            )
            parent[new] = parent.pop(key)
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif op == "nest":
            parent[key] = {data.draw(st.sampled_from(["steps", "time", "x", "main"])): parent[key]}
    return tree


_QUANTITY = re.compile(r"^\s*[-+]?\d[\d.eE+-]*\s*\S")


def _tweak_quantity(value: str, data: st.DataObject) -> str:
    """Damage a quantity like ``15 ms`` where a user slips: the unit, the exponent."""
    number, _, unit = value.partition(" ")
    how = data.draw(st.sampled_from(["unit", "unit", "number", "repeat"]))
    if how == "unit":
        pos = data.draw(st.integers(0, len(unit)))
        junk = data.draw(st.sampled_from([*list("()'\"#*/^!?%$&[]{}<>,;:="), "**", " ", "\t"]))
        return f"{number} {unit[:pos]}{junk}{unit[pos:]}"
    if how == "number":
        new = data.draw(
            st.sampled_from(["5e-324", "1e-9", "1e308", "1e400", "-0", ".", "1e", "0x10", "1_000"])
        )
        return f"{new} {unit}"
    return f"{number} " + "*".join([unit] * data.draw(st.integers(2, 3000)))


def _mutate_text(text: str, data: st.DataObject, n: int) -> str:
    for _ in range(n):
        pos = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["insert", "delete", "splice", "dup"]))
        if op == "insert":
            text = text[:pos] + data.draw(st.text(min_size=1, max_size=4)) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + data.draw(st.integers(1, 20)) :]
        elif op == "splice":
            text = text[:pos] + data.draw(st.sampled_from(SYNTAX_SPLICES)) + text[pos:]
        else:
            end = min(len(text), pos + data.draw(st.integers(1, 200)))
            text = text[:end] + text[pos:end] + text[end:]
    return text


def _dump(tree: Any) -> str:
    try:
        return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False, width=1000)
    except (yaml.YAMLError, RecursionError, ValueError):
        return "main: []\n"


# ---------------------------------------------------------------------- targets


class Campaign:
    def __init__(self, workdir: Path, time_limit_s: float) -> None:
        self.workdir = workdir
        self.time_limit_s = time_limit_s
        self.counts: Counter[str] = Counter()
        self.failures: list[dict[str, Any]] = []
        (workdir / "sub.yaml").write_text((ROOT / "tests" / "recipes" / "sub.yaml").read_text())

    def _guard(self, target: str, call: Callable[[], str], sample: str) -> None:
        """Run one input under the time limit and classify its outcome."""
        self.counts[f"{target}:tried"] += 1
        self.counts["tried"] += 1
        _TIMED_OUT[0] = False
        # The limit is on the process's CPU time: on a shared machine an input can wait
        # for a core longer than its limit without hanging. A wall-clock limit ten times
        # longer catches what hangs without computing (a blocking read).
        signal.setitimer(signal.ITIMER_PROF, self.time_limit_s)
        signal.setitimer(signal.ITIMER_REAL, WALL_FACTOR * self.time_limit_s)
        try:
            outcome = call()
            if _TIMED_OUT[0]:
                outcome = "hang"
        except Hang:
            outcome = "hang"
        except MemoryError:
            outcome = "memory"
        except Exception:
            outcome = "internal"
            sample = sample + "\n--- traceback\n" + traceback.format_exc(limit=6)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.setitimer(signal.ITIMER_REAL, 0)
        self.counts[f"{target}:{outcome}"] += 1
        if outcome in ("hang", "memory", "internal"):
            self.counts[outcome] += 1
            if len(self.failures) < 10:
                self.failures.append({"target": target, "outcome": outcome, "input": sample[:4000]})

    def recipe(self, text: str, config_text: str | None = None) -> None:
        from aldctl.diagnostics import UserError
        from aldctl.recipe.plan import plan
        from aldctl.session import prepare

        path = self.workdir / "fuzz.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        cfg_path = None
        if config_text is not None:
            cfg_path = self.workdir / "tool.yaml"
            cfg_path.write_text(config_text, encoding="utf-8", errors="surrogatepass")

        def call() -> str:
            try:
                prepared = prepare(path, cfg_path, ())
            except UserError as exc:
                for d in exc.diagnostics:
                    d.format()
                return "user-error"
            plan(prepared.compiled.schedule, prepared.tool)
            return "accepted"

        self._guard(
            "config" if config_text is not None else "recipe",
            call,
            config_text if config_text is not None else text,
        )

    def chemistry(self, text: str, recipe_text: str) -> None:
        """A chemistry file through the real loader (``$ALDCTL_CHEMISTRY``, as every
        command reads it), what ``aldctl chemicals`` computes from it, then a recipe that
        uses it compiled and planned."""
        from aldctl import chemfile
        from aldctl.diagnostics import UserError
        from aldctl.recipe.plan import plan
        from aldctl.session import prepare
        from sim import chemistry, library

        self._n_chem = getattr(self, "_n_chem", 0) + 1
        # A new name each time: the loader reloads a file only when its path or mtime
        # changes, and two writes can share an mtime.
        path = self.workdir / f"chemistry-{self._n_chem}.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        recipe = self.workdir / "chem-recipe.yaml"
        recipe.write_text(recipe_text, encoding="utf-8")

        def call() -> str:
            os.environ[chemfile.ENV] = str(path)
            try:
                try:
                    chemfile.ensure()
                except UserError as exc:
                    for d in exc.diagnostics:
                        d.format()
                    return "user-error"
                for c in chemistry.catalogue().values():  # `aldctl chemicals`
                    if c.vapour is not None and c.source_t_min is not None:
                        c.vapour_pressure_torr(c.source_t_min)
                for proc in library.processes().values():  # `aldctl processes`
                    for kind in proc.cycles:
                        proc.gpc(proc.nominal_t, kind)
                try:
                    prepared = prepare(recipe, None, ())
                except UserError as exc:
                    for d in exc.diagnostics:
                        d.format()
                    return "recipe-error"
                plan(prepared.compiled.schedule, prepared.tool)
                return "accepted"
            finally:
                os.environ[chemfile.ENV] = ""
                path.unlink(missing_ok=True)

        self._guard("chemistry", call, text)


# ---------------------------------------------------------------------- frames


FRAME_DRIVERS: list[tuple[str, dict[str, Any], str, bytes]] = [
    # driver, options, the call a poll makes, the protocol's frame terminator
    ("pfeiffer", {"address": 1}, "read_pressure", b"\r"),
    ("mks9xx", {"address": 253}, "read_pressure", b";FF"),
    ("alicat", {"unit": "A", "gas": "N2"}, "read_flow", b"\r"),
    ("aebus", {"address": 1}, "read_plasma", b""),
    ("sqm160", {}, "read_thickness", b""),
    ("eurotherm3200", {"address": 1}, "read_temperature", b""),
    ("watlow-pm", {"address": 2}, "read_temperature", b""),
    ("ozone-modbus", {"address": 10}, "read_ozone", b""),
    # Modbus TCP: the WAGO-style valve module, through a proxy in front of its emulator
    # (see _tcp_frame_inputs); its options and calls are there, the terminator unused
    ("modbus-dio", {"watchdog": 60.0, "pulse_outputs": True}, "read_valves", b""),
]

TCP_DRIVERS = ("modbus-dio",)


MODBUS_DRIVERS = ("eurotherm3200", "watlow-pm", "ozone-modbus")


async def _frame_inputs(
    driver: str,
    options: dict[str, Any],
    method: str,
    term: bytes,
    answers: list[bytes],
    campaign: Campaign,
    workdir: Path,
) -> None:
    """One driver on a real pseudo-terminal; the device side answers each request with
    the next hostile answer (random bytes, a mutated echo of the request, a terminator)."""
    from drivers import registry
    from drivers.base import DeviceError, DriverContext
    from sim.devices.pty import PtyPort

    link = workdir / f"pty-{driver}"
    port = PtyPort(link)
    queue = list(answers)

    def on_data(request: bytes) -> None:
        if not queue:
            return
        answer = queue.pop(0)
        if answer.startswith(b"ECHO"):
            answer = bytes(b ^ answer[4] for b in request) if len(answer) > 4 else request
        with contextlib.suppress(OSError):
            os.write(port.master, answer + (term if answer and answer[-1:] != term[-1:] else b""))

    port.start(on_data)
    ctx = DriverContext()
    factory = registry.factory(driver)
    dev = factory(driver, {**options, "port": str(link), "timeout": 0.03, "retries": 0}, ctx)
    connected = False
    if hasattr(dev, "_open_link") and driver not in MODBUS_DRIVERS:
        # Serial devices: attach without the handshake, so every answer meets the parser
        # of the poll itself; Modbus devices go through connect() (a register read).
        await dev._open_link()
        connected = True
    try:
        for answer in answers:
            campaign.counts["tried"] += 1
            campaign.counts[f"frame:{driver}:tried"] += 1
            outcome = "accepted"
            try:
                if connected:
                    await asyncio.wait_for(getattr(dev, method)(), campaign.time_limit_s)
                else:
                    await asyncio.wait_for(dev.connect(), campaign.time_limit_s)
                    connected = True
            except DeviceError:
                outcome = "device-error"
            except TimeoutError:
                outcome = "hang"
            except Exception:
                outcome = "internal"
            campaign.counts[f"frame:{driver}:{outcome}"] += 1
            if outcome in ("hang", "internal"):
                campaign.counts[outcome] += 1
                if len(campaign.failures) < 10:
                    campaign.failures.append(
                        {
                            "target": f"frame:{driver}",
                            "outcome": outcome,
                            "input": repr(answer),
                            "traceback": traceback.format_exc(limit=6),
                        }
                    )
    finally:
        with contextlib.suppress(Exception):
            await dev.close()
        port.close()


async def _tcp_frame_inputs(
    driver: str,
    options: dict[str, Any],
    answers: list[tuple[str, int, bytes]],
    campaign: Campaign,
) -> None:
    """The ``modbus-dio`` driver over real TCP sockets, through pymodbus as in use. A proxy
    sits between the driver and the module's emulator (:mod:`sim.devices.modbus_dio`, the
    WAGO-style datastore and watchdog): every request goes to the module, and for the
    input under test the module's valid reply is replaced by a hostile one (the reply
    mutated: a byte flipped, cut short, lengthened, its MBAP transaction id, protocol id,
    length or unit changed, an exception with any code, a reply twice; or random bytes,
    nothing at all, the connection closed). One input is one driver call (read the
    outputs, set a valve, heartbeat, read the limit switches, pulse, safe state, connect)
    whose first request (every other input: also its retry) meets the hostile reply; the
    rest of that call gets valid ones."""
    from drivers import registry
    from drivers.base import DeviceError, DriverContext
    from sim.devices.modbus_dio import ModbusDioModule
    from sim.reactor import Reactor, ReactorConfig
    from sim.realtime import RealtimePlant

    cfg = ReactorConfig.for_lines(["TMA", "H2O"], substrate_c=200.0, walls_c=150.0)
    plant = RealtimePlant(Reactor(cfg, seed=7))
    module = ModbusDioModule(plant, {0: "TMA", 1: "H2O", 15: "__pump__"}, port=0)
    await module.start()
    pending: list[tuple[str, int, bytes]] = []
    links: set[asyncio.StreamWriter] = set()

    def hostile(reply: bytes, how: tuple[str, int, bytes]) -> bytes | None:
        op, k, junk = how
        if op == "random":
            return junk
        if op == "silent":
            return b""
        if op == "close":
            return None
        b = bytearray(reply)
        if op == "flip":
            b[k % len(b)] ^= junk[0] or 1
        elif op == "cut":
            del b[k % len(b) :]
        elif op == "grow":
            b += junk
        elif op in ("tid", "proto", "length"):
            at = {"tid": 0, "proto": 2, "length": 4}[op]
            b[at : at + 2] = junk[:2].ljust(2, b"\xff")
        elif op == "unit":
            b[6] = junk[0]
        elif op == "exception":
            b[4:6] = (3).to_bytes(2, "big")
            b[7] |= 0x80
            del b[8:]
            b.append(junk[0])
        elif op == "function":
            b[7] = junk[0]
        elif op == "twice":
            b += reply
        return bytes(b)

    async def frame(r: asyncio.StreamReader) -> bytes:
        head = await r.readexactly(6)
        return head + await r.readexactly(int.from_bytes(head[4:6], "big"))

    async def proxy(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        links.add(cw)
        mr, mw = await asyncio.open_connection("127.0.0.1", module.port)
        try:
            while True:
                mw.write(await frame(cr))
                reply = await frame(mr)
                if pending:
                    out = hostile(reply, pending.pop())
                    if out is None:
                        break
                    reply = out
                cw.write(reply)
                await cw.drain()
        except (OSError, asyncio.IncompleteReadError, IndexError):
            pass
        finally:
            for w in (cw, mw):
                w.close()
            links.discard(cw)

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    factory = registry.factory(driver)
    opts = {**options, "host": "127.0.0.1", "port": port, "timeout": 0.05, "retries": 1}
    dev = factory("valves", opts, DriverContext())
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("read_valves", dev.read_valves),
        ("set_valve", lambda: dev.set_valve(0, True)),
        ("set_valve", lambda: dev.set_valve(1, False)),
        ("heartbeat", dev.heartbeat),
        ("pulse", lambda: dev.pulse(1, 0.015)),
        ("safe_state", dev.safe_state),
        ("connect", dev.connect),
    ]
    try:
        await dev.connect()
        for i, answer in enumerate(answers):
            name, call = calls[i % len(calls)]
            # every other input mangles the retry's reply too, so that the hostile reply
            # reaches the caller, not only the driver's retry and reconnect
            pending[:] = [answer] * (1 + i % 2)
            campaign.counts["tried"] += 1
            campaign.counts[f"frame:{driver}:tried"] += 1
            outcome = "accepted"
            try:
                await asyncio.wait_for(call(), campaign.time_limit_s)
            except DeviceError:
                outcome = "device-error"
            except TimeoutError:
                outcome = "hang"
            except Exception:
                outcome = "internal"
            pending.clear()
            campaign.counts[f"frame:{driver}:{outcome}"] += 1
            if outcome in ("hang", "internal"):
                campaign.counts[outcome] += 1
                if len(campaign.failures) < 10:
                    campaign.failures.append(
                        {
                            "target": f"frame:{driver}",
                            "outcome": outcome,
                            "input": f"{name}: {answer!r}",
                            "traceback": traceback.format_exc(limit=6),
                        }
                    )
    finally:
        with contextlib.suppress(Exception):
            await dev.close()
        for w in list(links):
            w.close()
        for _ in range(100):  # the proxies see EOF and end on their own
            if not links:
                break
            await asyncio.sleep(0.01)
        server.close()
        await module.shutdown()


TCP_FRAME_OPS = (
    "random",
    "flip",
    "flip",
    "cut",
    "grow",
    "tid",
    "proto",
    "length",
    "unit",
    "exception",
    "function",
    "twice",
    "silent",
    "close",
)


def tcp_frame_answers(rng: random.Random, n: int) -> list[tuple[str, int, bytes]]:
    """Hostile replies for a Modbus TCP device: (how, a position, junk bytes)."""
    return [
        (
            rng.choice(TCP_FRAME_OPS),
            rng.randrange(64),
            bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))),
        )
        for _ in range(n)
    ]


def frame_answers(rng: random.Random, n: int) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.4:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
        elif kind < 0.6:
            out.append(b"ECHO" + bytes([rng.randrange(1, 256)]))
        elif kind < 0.7:
            out.append(b"ECHO")
        elif kind < 0.85:
            printable = b"0123456789ABCDEF+-.=;>?@ \r\n,"
            out.append(bytes(rng.choice(printable) for _ in range(rng.randrange(1, 60))))
        else:
            out.append(b"")
    return out


# ---------------------------------------------------------------------- main


def run(n_inputs: int, n_frames: int, seed: int, time_limit_s: float) -> dict[str, Any]:
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGPROF, _alarm)
    recipes = [(p, p.read_text()) for p in SEED_RECIPES]
    configs = [(p, p.read_text()) for p in SEED_CONFIGS]
    rtrees = [yaml.safe_load(t) for _, t in recipes]
    ctrees = [yaml.safe_load(t) for _, t in configs]
    chems = [readme_chemistry(), SUPERCYCLE_CHEMISTRY]
    chtrees = [yaml.safe_load(t) for t in chems]
    chem_recipes = [HFO2_RECIPE, recipes[0][1]]
    base_recipe = recipes[0][1]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aldctl-fuzz-") as tmp:
        work = Path(tmp)
        campaign = Campaign(work, time_limit_s)
        n_config = n_inputs // 4
        n_chem = n_inputs // 5
        n_recipe = n_inputs - n_config - n_chem

        @settings(
            max_examples=max(1, n_recipe),
            database=None,
            deadline=None,
            derandomize=False,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def recipe_case(data: st.DataObject) -> None:
            i = data.draw(st.integers(0, len(recipes) - 1))
            if data.draw(st.booleans()):
                text = _dump(_mutate_tree(rtrees[i], data, data.draw(st.integers(1, 4))))
            else:
                text = _mutate_text(recipes[i][1], data, data.draw(st.integers(1, 3)))
            campaign.recipe(text)

        @settings(
            max_examples=max(1, n_config),
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def config_case(data: st.DataObject) -> None:
            i = data.draw(st.integers(0, len(configs) - 1))
            if data.draw(st.booleans()):
                text = _dump(_mutate_tree(ctrees[i], data, data.draw(st.integers(1, 4))))
            else:
                text = _mutate_text(configs[i][1], data, data.draw(st.integers(1, 3)))
            campaign.recipe(base_recipe, text)

        @settings(
            max_examples=max(1, n_chem),
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def chemistry_case(data: st.DataObject) -> None:
            i = data.draw(st.integers(0, len(chems) - 1))
            if data.draw(st.integers(0, 3)) > 0:
                tree = _mutate_tree(chtrees[i], data, data.draw(st.integers(1, 3)), CHEM_SCALARS)
                text = _dump(tree)
            else:
                text = _mutate_text(chems[i], data, data.draw(st.integers(1, 3)))
            campaign.chemistry(text, chem_recipes[data.draw(st.integers(0, 1))])

        from hypothesis import seed as hseed

        if n_recipe > 0:
            hseed(seed)(recipe_case)()
        if n_config > 0:
            hseed(seed + 1)(config_case)()
        if n_chem > 0:
            hseed(seed + 2)(chemistry_case)()

        if n_frames:
            rng = random.Random(seed)
            per = max(1, n_frames // len(FRAME_DRIVERS))

            async def frames() -> None:
                for driver, options, method, term in FRAME_DRIVERS:
                    if driver in TCP_DRIVERS:
                        answers = tcp_frame_answers(rng, per)
                        await _tcp_frame_inputs(driver, options, answers, campaign)
                        continue
                    await _frame_inputs(
                        driver, options, method, term, frame_answers(rng, per), campaign, work
                    )

            asyncio.run(frames())
    counts = dict(sorted(campaign.counts.items()))
    return {
        "inputs": campaign.counts["tried"],
        "internal_errors": campaign.counts["internal"],
        "hangs": campaign.counts["hang"],
        "memory_errors": campaign.counts["memory"],
        "seconds": round(time.perf_counter() - t0, 1),
        "counts": counts,
        "failures": campaign.failures,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=3000, help="recipes and configs")
    ap.add_argument("--frames", type=int, default=400, help="answers to the drivers")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--time-limit", type=float, default=5.0, help="CPU seconds per input (wall: 10x)"
    )
    ap.add_argument("--memory-mb", type=int, default=2048, help="address-space limit")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    # Import the heavy parts first, then cap the address space above what they use:
    # an input that makes aldctl allocate without bound meets MemoryError.
    import aldctl.session  # noqa: F401
    import drivers.registry  # noqa: F401
    import sim.devices.modbus_dio
    import sim.devices.pty  # noqa: F401

    soft = resource.getrlimit(resource.RLIMIT_AS)
    limit = args.memory_mb * 1024 * 1024
    if soft[0] == resource.RLIM_INFINITY or soft[0] > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, soft[1]))
    report = run(args.inputs, args.frames, args.seed, args.time_limit)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"inputs tried: {report['inputs']}, internal errors: {report['internal_errors']}, "
            f"hangs: {report['hangs']}, memory: {report['memory_errors']} "
            f"({report['seconds']} s)"
        )
        for k, v in report["counts"].items():
            print(f"  {k}: {v}")
        for f in report["failures"]:
            print(f"--- {f['target']} {f['outcome']}\n{f['input']}\n{f.get('traceback', '')}")
    bad = report["internal_errors"] + report["hangs"] + report["memory_errors"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
