"""Invariants under arbitrary operation (simulation.md 6.1): 0 <= coverage <= 1, pressures
>= 0, every species balances (injected = pumped + reacted + lost + in gas), thickness never
decreases; and the model does not depend on how often it is looked at."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sim.config import ChamberConfig
from sim.reactor import Reactor, ReactorConfig, Truth

MS = 1_000_000
S = 1_000_000_000

CFG = ReactorConfig.for_lines(["TMA", "H2O", "O2-plasma"], substrate_c=200.0)
CFG_CELLS = replace(CFG, chamber=ChamberConfig(cells=4))


@dataclass(frozen=True)
class Act:
    kind: str
    arg: str = ""
    value: float = 0.0


actions = st.one_of(
    st.builds(
        Act,
        st.just("pulse"),
        st.sampled_from(["TMA", "H2O"]),
        st.floats(min_value=0.0, max_value=400.0),
    ),
    # Waits of up to 5 s outlast every gas time constant (tau < 1 s); longer ones would add
    # nothing to the invariants but cost: with both valves left open and the pump shut the
    # model resolves continuous CVD at ~0.3/k steps, about half real time.
    st.builds(Act, st.just("wait"), st.just(""), st.floats(min_value=0.0, max_value=5_000.0)),
    st.builds(Act, st.just("pump"), st.sampled_from(["open", "shut"])),
    st.builds(Act, st.just("carrier"), st.just(""), st.floats(min_value=0.0, max_value=250.0)),
    st.builds(Act, st.just("plasma"), st.just(""), st.floats(min_value=0.0, max_value=3000.0)),
    st.builds(Act, st.just("heater"), st.just(""), st.floats(min_value=100.0, max_value=350.0)),
    st.builds(Act, st.just("valve"), st.sampled_from(["TMA", "H2O"]), st.just(1.0)),
)


def apply(r: Reactor, act: Act) -> None:
    if act.kind == "pulse":
        r.set_valve(act.arg, True)
        r.advance_by(round(act.value * MS))
        r.set_valve(act.arg, False)
    elif act.kind == "wait":
        r.advance_by(round(act.value * MS))
    elif act.kind == "pump":
        r.set_pump_isolation(act.arg == "open")
    elif act.kind == "carrier":
        r.set_mfc("carrier", act.value)
    elif act.kind == "plasma":
        r.set_mfc("plasma.O2", 20.0)
        r.advance_by(500 * MS)
        r.set_rf(True, 300.0)
        r.advance_by(round(act.value * MS))
        r.set_rf(False, 0.0)
        r.set_mfc("plasma.O2", 0.0)
    elif act.kind == "heater":
        r.set_heater("substrate", act.value, 60.0)
    elif act.kind == "valve":
        # leave a valve open across later actions (co-dosing, CVD)
        r.set_valve(act.arg, not r.read_valves()[act.arg])


def check(t: Truth, prev: Truth | None) -> None:
    assert all(0.0 <= v <= 1.0 for v in t.coverage.values())
    assert abs(sum(t.coverage.values()) - 1.0) < 1e-9
    assert all(p >= 0.0 for p in t.partial_pressures_torr.values())
    for name, bal in t.mass_balance.items():
        scale = max(bal.injected_mol, bal.pumped_mol, 1e-15)
        assert abs(bal.residual_mol) <= 1e-9 * scale, name
        assert bal.in_gas_mol >= 0.0
        assert bal.reacted_mol >= 0.0
    assert all(0.0 <= x <= 1.0 for x in t.valve_positions.values())
    assert all(m >= 0.0 for m in t.source_mass_g.values())
    if prev is not None:
        assert t.now_ns >= prev.now_ns
        assert t.thickness_a >= prev.thickness_a
        assert t.ald_thickness_a >= prev.ald_thickness_a - 1e-12
        assert t.cvd_thickness_a >= prev.cvd_thickness_a
        for chem, g in t.consumed_g.items():
            assert g >= prev.consumed_g[chem] - 1e-15


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, min_size=1, max_size=25))
def test_invariants_hold_under_any_operation(acts: list[Act]) -> None:
    r = Reactor(CFG)
    prev: Truth | None = None
    for act in acts:
        apply(r, act)
        t = r.truth()
        check(t, prev)
        prev = t


def _looking_property(
    cfg: ReactorConfig, examples: int, max_pulses: int, min_look_ms: int
) -> Callable[[list[tuple[str, int]], int], None]:
    """The property "looking at the model does not change it" for a reactor ``cfg``."""

    @settings(max_examples=examples, deadline=None)
    @given(
        pulses=st.lists(
            st.tuples(st.sampled_from(["TMA", "H2O"]), st.integers(min_value=5, max_value=200)),
            min_size=1,
            max_size=max_pulses,
        ),
        look_every_ms=st.integers(min_value=min_look_ms, max_value=700),
    )
    def prop(pulses: list[tuple[str, int]], look_every_ms: int) -> None:
        """Advancing in one go or in many small hops (as a polling driver does) agrees."""
        quiet = Reactor(cfg)
        busy = Reactor(cfg)
        t = 0
        for line, ms in pulses:
            for r in (quiet, busy):
                r.set_valve(line, True)
            t += ms * MS
            quiet.advance_to(t)
            while busy.now_ns < t:
                busy.advance_to(min(t, busy.now_ns + look_every_ms * MS))
                busy.read_pressure_torr()
            for r in (quiet, busy):
                r.set_valve(line, False)
            t += 2 * S
            quiet.advance_to(t)
            while busy.now_ns < t:
                busy.advance_to(min(t, busy.now_ns + look_every_ms * MS))
        a, b = quiet.truth(), busy.truth()
        # The gas-phase reaction of two species is integrated by splitting, so the step
        # size moves CVD traces by a few 1e-4 A (H2O 8 ms then TMA 6 ms after a 2 s purge:
        # 7.0e-4 vs 8.8e-4 A, the same on bfba29c): far below a monolayer (~1 A), which is
        # what a user sees. Real growth is held to 0.2 %.
        assert abs(a.thickness_a - b.thickness_a) <= 2e-3 * a.thickness_a + 1e-3
        # The surface term is frozen within an integration step; hops split steps, so the
        # two runs differ by the integrator's local error: at most half a percent of the
        # surface (seen: 0.26 % for a 6 ms H2O dose, shorter than the valve's dead time,
        # after TMA).
        for name in a.coverage:
            assert abs(a.coverage[name] - b.coverage[name]) < 5e-3
        for name, bal in a.mass_balance.items():
            other = b.mass_balance[name]
            assert abs(bal.injected_mol - other.injected_mol) <= 1e-4 * max(bal.injected_mol, 1e-12)

    return prop


test_looking_at_the_model_does_not_change_it = _looking_property(CFG, 20, 5, 2)
# The cross-flow chamber: its cells exchange by diffusion whose coefficient goes as 1/p, so
# a purge's falling pressure must not be held at its start (that left 5x less TMA after a
# 2 s purge in one call than in 2 ms hops, and a water dose then met other TMA: coverage
# off by 1e-2). Fewer, shorter cases than the 0-D test: every hop costs four cells.
test_looking_at_a_cell_chamber_does_not_change_it = example(
    pulses=[("TMA", 200), ("H2O", 6)], look_every_ms=100
)(
    example(pulses=[("TMA", 20), ("H2O", 20)], look_every_ms=100)(
        _looking_property(CFG_CELLS, 6, 3, 10)
    )
)


@settings(max_examples=15, deadline=None)
@given(st.lists(actions, min_size=2, max_size=12), st.integers(min_value=0, max_value=11))
def test_restore_replays_bit_identically(acts: list[Act], cut: int) -> None:
    cut = min(cut, len(acts) - 1)
    r = Reactor(CFG, seed=5)
    for act in acts[:cut]:
        apply(r, act)
    snap = r.snapshot()

    def rest() -> tuple[Truth, list[float | None]]:
        readings: list[float | None] = []
        for act in acts[cut:]:
            apply(r, act)
            readings.append(r.read_pressure_torr())
            readings.append(r.read_qcm().frequency_hz)
        return r.truth(), readings

    first = rest()
    r.restore(snap)
    second = rest()
    assert first == second
