"""The model's shortcuts change nothing: the quiet-step fast path, the cached inflows, rates
and site scales give bit-identical physics and readings to the general path; a snapshot is
small, complete, and a restored reactor continues bit-identically; the device noise streams
are seeded, independent and normal."""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from typing import Any

import pytest

from sim import sequence as seq
from sim import state as state_mod
from sim.components import NoiseRng
from sim.config import OzoneConfig, PlasmaConfig
from sim.faults import FaultKind
from sim.reactor import Reactor, ReactorConfig, Snapshot, Truth

MS = 1_000_000
S = 1_000_000_000


def tool_config(chemicals: list[str], **changes: Any) -> ReactorConfig:
    """What the built-in simulated tool runs: plasma feeds O2/N2/H2/Ar and an ozone
    generator besides the recipe's lines (as ``drivers.simulated`` builds it)."""
    cfg = ReactorConfig.from_mapping({"chemicals": chemicals, "preset": "savannah_like", **changes})
    base = cfg.plasma if cfg.plasma is not None else PlasmaConfig()
    plasma = dataclasses.replace(base, feed_gases=("O2", "N2", "H2", "Ar"))
    return dataclasses.replace(cfg, plasma=plasma, ozone=cfg.ozone or OzoneConfig())


class GeneralPathReactor(Reactor):
    """The same model with every shortcut of the step off: no quiet fast path, the MFC
    inflows summed every step, the substrate-side rates recomputed as soon as the
    temperature moves, no site-scale or vapour-pressure memo."""

    def _classify(self) -> None:
        super()._classify()
        self._quiet_a = None
        self._fix_a = None
        self._fix_known = False

    def _step(self, stop: int) -> None:
        self._nmk = None
        self._src_p.clear()
        super()._step(stop)

    def _check_rates(self, force: bool = False) -> None:
        super()._check_rates(force)
        if self._rt.stale:
            self._sub_rates()


def reads(r: Reactor) -> tuple[object, ...]:
    return (
        r.now_ns,
        r.read_pressure_torr(),
        r.read_mfc("carrier"),
        r.read_heater("substrate"),
        r.read_heater("walls"),
        r.read_valves(),
        r.read_qcm() if r.has_qcm else None,
        r.read_plasma() if r.has_plasma else None,
        r.read_ozone() if r.has_ozone else None,
    )


def hops(r: Reactor, out: list[object], duration_ns: int, every_ns: int) -> None:
    """Advance polling like the engine's monitors do (a read at every hop)."""
    end = r.now_ns + duration_ns
    while r.now_ns < end:
        r.advance_to(min(end, r.now_ns + every_ns))
        out.append(reads(r))


def scenario(r: Reactor) -> list[object]:
    """Purges, pulses, co-dosing, plasma, ozone, MFC steps, heater ramps, stop-flow and
    faults, read at odd times; returns every reading and the truth after every action."""
    out: list[object] = []

    def mark() -> None:
        out.append(r.truth())

    r.set_heater("walls", 140.0)  # walls and the gas cool while cycles run
    r.set_heater("substrate", 180.0, 30.0)
    hops(r, out, 20 * S, 1 * S)
    mark()
    for _ in range(3):
        for line in ("TMA", "H2O"):
            r.set_valve(line, True)
            hops(r, out, 15 * MS, 4 * MS)
            r.set_valve(line, False)
            hops(r, out, 5 * S, 370 * MS)
            mark()
    r.set_mfc("plasma.O2", 30.0)
    hops(r, out, 600 * MS, 90 * MS)
    r.set_rf(True, 300.0)
    hops(r, out, 2 * S, 130 * MS)
    r.set_rf(False, 0.0)
    r.set_mfc("plasma.O2", 0.0)
    hops(r, out, 3 * S, 1 * S)
    mark()
    r.set_ozone(True, 10.0)
    r.set_valve("O3", True)
    hops(r, out, 1 * S, 100 * MS)
    r.set_valve("O3", False)
    r.set_ozone(False, 0.0)
    hops(r, out, 4 * S, 450 * MS)
    mark()
    r.set_valve("TMA", True)
    r.set_valve("H2O", True)  # co-dosing: CVD
    hops(r, out, 40 * MS, 5 * MS)
    r.set_valve("TMA", False)
    r.set_valve("H2O", False)
    hops(r, out, 5 * S, 1 * S)
    mark()
    r.set_pump_isolation(False)  # stop-flow exposure
    r.set_valve("H2O", True)
    r.advance_by(30 * MS)
    r.set_valve("H2O", False)
    hops(r, out, 3 * S, 500 * MS)
    r.set_pump_isolation(True)
    hops(r, out, 5 * S, 1 * S)
    mark()
    r.faults.inject(FaultKind.PRESSURE_SPIKE, torr=0.5, leak_sccm=2.0, duration_ns=3 * S)
    r.faults.inject(FaultKind.VALVE_SLOW, "TMA", factor=4.0, duration_ns=20 * S)
    r.faults.inject(FaultKind.PUMP_DEGRADATION, at_ns=r.now_ns + 2 * S, duration_ns=10 * S)
    r.faults.inject(
        FaultKind.MFC_LOW, "carrier", max_sccm=10.0, at_ns=r.now_ns + S, duration_ns=5 * S
    )
    r.faults.inject(FaultKind.VALVE_STUCK_OPEN, "H2O", leak_fraction=0.01, duration_ns=4 * S)
    r.faults.inject(FaultKind.HEATER_RUNAWAY, "walls", at_ns=r.now_ns + S, duration_ns=30 * S)
    for _ in range(2):
        seq.dose(r, "TMA", 30 * MS)
        hops(r, out, 5 * S, 1 * S)
        seq.dose(r, "H2O", 15 * MS)
        hops(r, out, 5 * S, 700 * MS)
        mark()
    r.set_mfc("carrier", 50.0)
    hops(r, out, 2 * S, 100 * MS)
    r.set_heater("walls", None)
    hops(r, out, 60 * S, 5 * S)
    mark()
    return out


def test_fast_paths_give_the_general_paths_answer_bit_for_bit() -> None:
    cfg = tool_config(["TMA", "H2O", "O3", "O2-plasma"], substrate_c=150.0)
    fast = scenario(Reactor(cfg, seed=3))
    general = scenario(GeneralPathReactor(cfg, seed=3))
    assert len(fast) == len(general) > 250
    assert fast == general  # every truth (physics) and every reading: tolerance zero


def test_fast_paths_with_heated_sources_and_a_supercycle() -> None:
    # sources and lines on their own heaters (vapour pressure memo), ramping while dosing
    cfg = tool_config(["LiOtBu", "H2O", "TaOEt5"], substrate_c=225.0)

    def run(r: Reactor) -> list[object]:
        out: list[object] = []
        r.set_heater("source.LiOtBu", 150.0, 20.0)
        for line in ("LiOtBu", "H2O", "TaOEt5", "H2O") * 2:
            r.set_valve(line, True)
            hops(r, out, 500 * MS if line != "H2O" else 50 * MS, 60 * MS)
            r.set_valve(line, False)
            hops(r, out, 8 * S, 1 * S)
            out.append(r.truth())
        return out

    assert run(Reactor(cfg, seed=1)) == run(GeneralPathReactor(cfg, seed=1))


def test_quiet_steps_are_most_of_an_engine_like_run() -> None:
    """The fast path is the one taken in purges under polling (else it would not pay)."""
    cfg = tool_config(["TMA", "H2O"], substrate_c=200.0)
    r = Reactor(cfg)
    calls = {"steps": 0, "general": 0}
    step, general = r._step, r._general_step

    def st(stop: int) -> None:
        calls["steps"] += 1
        step(stop)

    def g(stop: int) -> None:
        calls["general"] += 1
        general(stop)

    r._step = st  # type: ignore[method-assign]
    r._general_step = g  # type: ignore[method-assign]
    out: list[object] = []
    for _ in range(3):
        for line in ("TMA", "H2O"):
            r.set_valve(line, True)
            r.advance_by(15 * MS)
            r.set_valve(line, False)
            hops(r, out, 5 * S, 1 * S)
    quiet = calls["steps"] - calls["general"]
    # every purge read (30 of them) ends at least one quiet step
    assert quiet >= 30
    assert quiet > calls["general"] > 0


# --------------------------------------------------------------------------- snapshots


def busy_reactor(seed: int = 11, comm_fault: bool = True) -> Reactor:
    """A reactor caught mid-everything: a valve stroking, an MFC settling, the RF tuning,
    the ozone generator ramping, a heater ramping, faults pending, every stream used."""
    r = Reactor(tool_config(["TMA", "H2O", "O3", "O2-plasma"], substrate_c=180.0), seed=seed)
    seq.run_cycle(r, ["TMA", "H2O"], 15 * MS, 2 * S)
    r.set_mfc("plasma.O2", 30.0)
    r.advance_by(700 * MS)
    r.set_rf(True, 300.0)
    r.advance_by(250 * MS)
    r.set_ozone(True, 8.0)
    r.set_heater("substrate", 220.0, 20.0)
    r.set_mfc("carrier", 35.0)
    r.faults.inject(FaultKind.GAUGE_DRIFT, rate_torr_per_s=0.001, duration_ns=30 * S)
    r.faults.inject(FaultKind.QCM_FAILURE, at_ns=r.now_ns + 3 * S)
    if comm_fault:
        r.faults.inject(FaultKind.CORRUPT_FRAME, "chamber", probability=0.3)
    r.set_valve("TMA", True)
    r.advance_by(9 * MS)  # mid-stroke
    reads(r)
    if comm_fault:
        cf = r.faults.comm("chamber")
        assert cf is not None
        cf.corrupt()
    return r


def continuation(r: Reactor) -> tuple[list[object], Truth]:
    out: list[object] = []
    r.advance_by(6 * MS)
    r.set_valve("TMA", False)
    hops(r, out, 3 * S, 170 * MS)
    r.set_rf(False, 0.0)
    seq.run_cycle(r, ["TMA", "H2O"], 15 * MS, 2 * S)
    hops(r, out, 2 * S, 300 * MS)
    cf = r.faults.comm("chamber")
    assert cf is not None
    out.append([cf.corrupt() for _ in range(20)])
    return out, r.truth()


def slots_of(obj: object) -> object:
    """Every member of a state object, recursively, for a structural comparison."""
    if isinstance(obj, (int, float, str, bool, type(None), bytes)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [slots_of(v) for v in obj]
    if isinstance(obj, dict):
        return {k: slots_of(v) for k, v in obj.items()}
    if isinstance(obj, NoiseRng):
        return ("rng", obj.getstate())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if type(obj).__module__ == "sim.config":
            return obj  # configuration: compared by value
        return {f.name: slots_of(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    names = list(getattr(obj, "__slots__", ())) + list(getattr(obj, "__dict__", {}))
    if not names:
        return obj  # a catalogue object (chemistry): compared by value
    return (type(obj).__name__, {n: slots_of(getattr(obj, n)) for n in names})


def test_snapshot_bytes_hold_the_whole_state() -> None:
    r = busy_reactor()
    back = Snapshot.from_bytes(r.snapshot_bytes())
    assert back.now_ns == r.now_ns
    assert back.config == r.config
    assert slots_of(back.state) == slots_of(r._s)
    # and the packer knows every member of the state (a new one must be added there)
    members = set(vars(state_mod._State()))
    assert members == set(state_mod._STATE_FIELDS) | set(state_mod._STATE_COMPONENTS)


def test_restored_reactor_continues_bit_identically() -> None:
    original = busy_reactor()
    data = original.snapshot_bytes()
    twin = Reactor(original.config, seed=original.seed)
    twin.restore(Snapshot.from_bytes(data))
    assert continuation(twin) == continuation(original)
    # and restoring the same bytes again replays it once more
    again = Reactor(original.config, seed=original.seed)
    again.restore(Snapshot.from_bytes(data))
    first = continuation(again)
    again.restore(Snapshot.from_bytes(data))
    assert continuation(again) == first


def test_snapshot_is_small_and_fast() -> None:
    # (a comm fault adds its decision stream, a random.Random the emulators draw from)
    r = busy_reactor(comm_fault=False)
    data = r.snapshot_bytes()
    assert len(data) < 4_000  # (it was ~40 kB with nine Mersenne Twister states)
    assert r.snapshot().to_bytes() == data  # the deep-copied snapshot pickles the same


# --------------------------------------------------------------------------- noise


def test_noise_streams_are_seeded_and_independent() -> None:
    a, b, c = NoiseRng("7:chamber"), NoiseRng("7:chamber"), NoiseRng("7:carrier")
    xs = [a.gauss() for _ in range(100)]
    assert xs == [b.gauss() for _ in range(100)]
    assert xs != [c.gauss() for _ in range(100)]
    # state round trip mid-pair (a cached deviate pending)
    a.gauss()
    saved = a.getstate()
    ahead = [a.gauss(), a.random(), a.choice((-1.0, 1.0))]
    a.setstate(saved)
    assert [a.gauss(), a.random(), a.choice((-1.0, 1.0))] == ahead
    assert NoiseRng.from_state(saved).gauss() == ahead[0]


def test_noise_streams_are_uniform_and_normal() -> None:
    rng = NoiseRng("0:statistics")
    u = [rng.random() for _ in range(40_000)]
    assert all(0.0 <= v < 1.0 for v in u)
    assert statistics.fmean(u) == pytest.approx(0.5, abs=0.01)
    assert statistics.pvariance(u) == pytest.approx(1.0 / 12.0, rel=0.03)
    lag = statistics.fmean((p - 0.5) * (q - 0.5) for p, q in itertools.pairwise(u))
    assert abs(lag) < 0.003  # no serial correlation (sd ~0.0004)
    g = [rng.gauss(1.0, 2.0) for _ in range(40_000)]
    assert statistics.fmean(g) == pytest.approx(1.0, abs=0.05)
    assert statistics.pstdev(g) == pytest.approx(2.0, rel=0.02)
    beyond = sum(abs(v - 1.0) > 2.0 * 1.96 for v in g) / len(g)
    assert beyond == pytest.approx(0.05, abs=0.006)
    assert not any(math.isnan(v) or math.isinf(v) for v in g)


def test_reactor_noise_depends_on_seed_and_device_only() -> None:
    cfg = tool_config(["TMA", "H2O"])
    r1, r2, r3 = Reactor(cfg, seed=4), Reactor(cfg, seed=4), Reactor(cfg, seed=5)
    for r in (r1, r2, r3):
        r.advance_by(S)
    a = [r1.read_heater("walls").pv_c for _ in range(50)]
    # reading other devices in between does not shift this device's stream
    b = []
    for _ in range(50):
        r2.read_pressure_torr()
        b.append(r2.read_heater("walls").pv_c)
    assert a == b
    assert a != [r3.read_heater("walls").pv_c for _ in range(50)]


def test_an_emptied_site_class_does_not_set_the_step() -> None:
    """Water at Torr over a surface whose TMA sites are all but gone, pump shut: the decay of
    the last 1e-300 of a monolayer must not be resolved (it cost ~850,000 steps per virtual
    second and hung a property test), and the answer stays exact in the balance."""
    cfg = ReactorConfig.for_lines(["TMA", "H2O"], substrate_c=200.0)
    r = Reactor(cfg)
    r.set_valve("TMA", True)
    r.advance_by(200 * MS)
    r.set_valve("TMA", False)
    r.advance_by(5 * S)
    r.set_pump_isolation(False)
    r.set_valve("H2O", True)
    r.advance_by(300 * MS)
    r.set_valve("H2O", False)
    r.advance_by(2 * S)  # the TMA sites are consumed down to denormals
    before = r.truth()
    assert before.coverage.get("TMA", 0.0) < 1e-3
    assert before.partial_pressures_torr["H2O"] > 0.1
    steps = r.integration_steps
    r.advance_by(10 * S)
    assert r.integration_steps - steps < 1_000
    after = r.truth()
    for name, bal in after.mass_balance.items():
        assert abs(bal.residual_mol) <= 1e-9 * max(bal.injected_mol, 1e-15), name
    assert after.thickness_a >= before.thickness_a
