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


def _mutate_tree(tree: Any, data: st.DataObject, n: int) -> Any:
    """Apply ``n`` structure-aware mutations to a copy of a YAML tree."""
    import copy

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
                parent[path[-1]] = copy.deepcopy(data.draw(st.sampled_from(HOSTILE_SCALARS)))
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
                        st.sampled_from(HOSTILE_SCALARS),
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
                st.one_of(st.sampled_from([str(x) for x in HOSTILE_SCALARS]), st.text(max_size=12))
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
]


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
    base_recipe = recipes[0][1]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aldctl-fuzz-") as tmp:
        work = Path(tmp)
        campaign = Campaign(work, time_limit_s)
        n_config = n_inputs // 4
        n_recipe = n_inputs - n_config

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

        from hypothesis import seed as hseed

        if n_recipe > 0:
            hseed(seed)(recipe_case)()
        if n_config > 0:
            hseed(seed + 1)(config_case)()

        if n_frames:
            rng = random.Random(seed)
            per = max(1, n_frames // len(FRAME_DRIVERS))

            async def frames() -> None:
                for driver, options, method, term in FRAME_DRIVERS:
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
