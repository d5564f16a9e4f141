"""Every fault of the catalogue (simulation.md 6.2) produces its physical consequence, and
clearing it restores normal behaviour. Triggers: time, actuation count, predicate."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sim import library
from sim import sequence as seq
from sim.faults import Fault, FaultKind, FaultState
from sim.reactor import Reactor, ReactorConfig, UnknownComponentError

MS = 1_000_000
S = 1_000_000_000
GPC = library.processes()["Al2O3-TMA-H2O"].gpc(200.0)


def cycle(r: Reactor, purge_s: float = 5.0) -> float:
    """One 15 ms / purge / 15 ms / purge TMA/H2O cycle; returns its growth."""
    h0 = r.truth().thickness_a
    seq.run_cycle(r, ["TMA", "H2O"], 15 * MS, round(purge_s * S))
    return r.truth().thickness_a - h0


def peak_reading(r: Reactor, line: str, pulse_ns: int = 15 * MS) -> float:
    """Highest gauge reading (1 ms polling) during a pulse of ``line`` and 0.3 s after."""
    r.set_valve(line, True)
    peak = 0.0
    end = r.now_ns + pulse_ns + 300 * MS
    closed = False
    start = r.now_ns
    while r.now_ns < end:
        r.advance_by(MS)
        if not closed and r.now_ns - start >= pulse_ns:
            r.set_valve(line, False)
            closed = True
        p = r.read_pressure_torr()
        assert p is not None
        peak = max(peak, p)
    r.advance_by(5 * S)
    return peak


# --------------------------------------------------------------------------- valves


def test_valve_stuck_closed_no_spike_no_growth_then_recovers(al2o3: Reactor) -> None:
    r = al2o3
    cycle(r)
    base = r.truth().pressure_torr
    normal_peak = peak_reading(r, "H2O")
    assert normal_peak > base + 0.1
    f = r.faults.inject(FaultKind.VALVE_STUCK_CLOSED, "H2O")
    assert peak_reading(r, "H2O") < base + 0.002  # no pressure spike
    h0 = r.truth().thickness_a
    seq.run_cycle(r, ["TMA", "H2O"], 15 * MS, 5 * S)
    assert r.truth().thickness_a - h0 < 1e-3  # the H2O half-cycle is missing: no growth
    assert r.read_valves()["H2O"] is False
    assert r.truth().saturation["H2O"].min_fraction < 0.01  # doses that did nothing
    r.faults.clear(f)
    assert f.state is FaultState.CLEARED
    cycle(r)
    assert cycle(r) == pytest.approx(GPC, rel=0.01)


def test_valve_stuck_closed_after_n_actuations(al2o3: Reactor) -> None:
    r = al2o3
    r.faults.inject(FaultKind.VALVE_STUCK_CLOSED, "TMA", after_actuations=3)
    growth = [cycle(r) for _ in range(5)]
    assert growth[0] == pytest.approx(GPC, rel=0.01)
    assert growth[2] == pytest.approx(GPC, rel=0.01)  # the 3rd pulse still went through
    assert growth[3] < 0.01
    assert growth[4] < 0.01
    assert r.truth().valve_actuations["TMA"] == 5  # the commands were still counted


def test_valve_leaking_seat_raises_baseline_depletes_source_and_grows_cvd(
    al2o3: Reactor,
) -> None:
    r = al2o3
    cycle(r)
    base = r.truth().pressure_torr
    mass0 = r.truth().source_mass_g["TMA"]
    f = r.faults.inject(FaultKind.VALVE_STUCK_OPEN, "TMA", leak_fraction=0.01)
    r.advance_by(10 * S)
    assert r.truth().partial_pressures_torr["TMA"] > 1e-3
    assert r.truth().pressure_torr > base + 1e-3  # baseline drift the gauge can see
    g = [cycle(r) for _ in range(3)]
    assert min(g) > 1.2 * GPC  # continuous precursor: CVD
    assert r.truth().cvd_thickness_a > 0.3
    used = mass0 - r.truth().source_mass_g["TMA"]
    r.faults.clear(f)
    r.advance_by(20 * S)
    assert r.truth().partial_pressures_torr["TMA"] < 1e-9
    mass1 = r.truth().source_mass_g["TMA"]
    cycle(r)
    assert mass1 - r.truth().source_mass_g["TMA"] < 0.05 * used  # normal use again
    assert cycle(r) == pytest.approx(GPC, rel=0.01)


def test_wide_open_valve_reads_open(al2o3: Reactor) -> None:
    al2o3.faults.inject(FaultKind.VALVE_STUCK_OPEN, "TMA")
    al2o3.advance_by(MS)
    assert al2o3.read_valves()["TMA"] is True


def test_slow_valve_short_pulses_deliver_much_less(al2o3: Reactor) -> None:
    r = al2o3
    r.set_valve("TMA", True)
    r.advance_by(15 * MS)
    r.set_valve("TMA", False)
    r.advance_by(5 * S)
    normal = r.truth().mass_balance["TMA"].injected_mol
    seq.run_cycle(r, ["H2O"], 15 * MS, 5 * S)
    # x2.5: the stem starts moving only 15 ms after the command and reaches 1/6 of its stroke
    f = r.faults.inject(FaultKind.VALVE_SLOW, "TMA", factor=2.5)
    inj0 = r.truth().mass_balance["TMA"].injected_mol
    h0 = r.truth().thickness_a
    seq.run_cycle(r, ["TMA", "H2O"], 15 * MS, 5 * S)
    slow = r.truth().mass_balance["TMA"].injected_mol - inj0
    assert slow < 0.5 * normal
    assert r.truth().thickness_a - h0 < 0.95 * GPC  # sub-saturated
    # a long pulse still gets through: the valve is slow, not shut
    inj1 = r.truth().mass_balance["TMA"].injected_mol
    seq.dose(r, "TMA", 100 * MS)
    r.advance_by(5 * S)
    assert r.truth().mass_balance["TMA"].injected_mol - inj1 > normal
    r.faults.clear(f)
    inj2 = r.truth().mass_balance["TMA"].injected_mol
    seq.dose(r, "TMA", 15 * MS)
    r.advance_by(5 * S)
    assert r.truth().mass_balance["TMA"].injected_mol - inj2 == pytest.approx(normal, rel=0.02)


# --------------------------------------------------------------------------- MFCs


def test_mfc_low_caps_flow_and_base_pressure(al2o3: Reactor) -> None:
    r = al2o3
    p0 = r.truth().pressure_torr
    f = r.faults.inject(FaultKind.MFC_LOW, "carrier", max_sccm=10.0)
    r.advance_by(10 * S)
    reading = r.read_mfc("carrier")
    assert reading.setpoint_sccm == 20.0
    assert reading.flow_sccm == pytest.approx(10.0, abs=0.2)  # the alarm condition
    assert r.truth().pressure_torr == pytest.approx(p0 / 2, rel=0.01)
    r.faults.clear(f)
    r.advance_by(10 * S)
    assert r.read_mfc("carrier").flow_sccm == pytest.approx(20.0, abs=0.2)
    assert r.truth().pressure_torr == pytest.approx(p0, rel=1e-3)


def test_mfc_stuck_ignores_setpoint_changes(al2o3: Reactor) -> None:
    r = al2o3
    p0 = r.truth().pressure_torr
    f = r.faults.inject(FaultKind.MFC_STUCK, "carrier")
    r.set_mfc("carrier", 60.0)
    r.advance_by(10 * S)
    assert r.read_mfc("carrier").flow_sccm == pytest.approx(20.0, abs=0.2)
    assert r.truth().pressure_torr == pytest.approx(p0, rel=1e-3)
    r.faults.clear(f)
    r.advance_by(10 * S)
    assert r.read_mfc("carrier").flow_sccm == pytest.approx(60.0, abs=0.3)
    assert r.truth().pressure_torr == pytest.approx(3 * p0, rel=1e-3)


def test_mfc_zero_drift_wrong_pressure_reading_looks_fine(al2o3: Reactor) -> None:
    r = al2o3
    p0 = r.truth().pressure_torr
    r.faults.inject(FaultKind.MFC_STUCK, "carrier", frozen=0.0, offset_sccm=5.0)
    r.advance_by(10 * S)
    assert r.read_mfc("carrier").flow_sccm == pytest.approx(20.0, abs=0.2)
    assert r.truth().pressure_torr == pytest.approx(p0 * 25.0 / 20.0, rel=1e-3)


# --------------------------------------------------------------------------- heaters


def test_heater_runaway_overshoots_and_recovers(al2o3: Reactor) -> None:
    r = al2o3
    f = r.faults.inject(FaultKind.HEATER_RUNAWAY, "substrate")
    r.advance_by(600 * S)
    hot = r.read_heater("substrate")
    assert hot.pv_c is not None
    assert hot.pv_c > 260.0  # far past the 200 C setpoint
    assert r.truth().temperatures_c["substrate"] > 260.0
    assert hot.output_pct == 0.0  # the controller asks for nothing; the SSR is welded
    r.faults.clear(f)
    r.advance_by(4 * 3600 * S)
    assert r.truth().temperatures_c["substrate"] == pytest.approx(200.0, abs=0.1)


def test_runaway_above_the_window_decomposes(make_reactor: Callable[..., Reactor]) -> None:
    r = make_reactor(["TMA", "H2O"], substrate_c=250.0)
    r.faults.inject(FaultKind.HEATER_RUNAWAY, "substrate")
    r.advance_by(900 * S)
    assert r.truth().temperatures_c["substrate"] > 300.0
    g = cycle(r)
    assert r.truth().decomposition_thickness_a > 0.0
    assert g > library.processes()["Al2O3-TMA-H2O"].gpc(r.truth().temperatures_c["substrate"])


def test_thermocouple_break_pv_lost_output_to_break_value(al2o3: Reactor) -> None:
    r = al2o3
    f = r.faults.inject(FaultKind.THERMOCOUPLE_BREAK, "substrate")
    r.advance_by(S)
    st = r.read_heater("substrate")
    assert st.sensor_break is True
    assert st.pv_c is None
    assert st.output_pct == 0.0
    r.advance_by(1800 * S)
    assert r.truth().temperatures_c["substrate"] < 150.0  # no power: it cools
    r.faults.clear(f)
    st = r.read_heater("substrate")
    assert st.sensor_break is False
    assert st.pv_c is not None
    r.advance_by(4 * 3600 * S)
    assert r.truth().temperatures_c["substrate"] == pytest.approx(200.0, abs=0.1)


# --------------------------------------------------------------------------- chamber


def test_pressure_spike_reads_high_then_decays(al2o3: Reactor) -> None:
    r = al2o3
    p0 = r.read_pressure_torr()
    assert p0 is not None
    r.faults.inject(FaultKind.PRESSURE_SPIKE, torr=2.0, duration_ns=S)
    r.advance_by(100 * MS)
    p = r.read_pressure_torr()
    assert p is not None
    assert p > p0 + 1.5
    r.advance_by(10 * S)
    p = r.read_pressure_torr()
    assert p == pytest.approx(p0, abs=2e-3)
    # an over-range burst: the gauge reports nothing
    r.faults.inject(FaultKind.PRESSURE_SPIKE, torr=50.0, duration_ns=S)
    r.advance_by(100 * MS)
    assert r.read_pressure_torr() is None
    assert cycle(r, purge_s=10.0) == pytest.approx(GPC, rel=0.01)  # growth unaffected


def test_continuous_leak_while_active(al2o3: Reactor) -> None:
    r = al2o3
    p0 = r.truth().pressure_torr
    f = r.faults.inject(FaultKind.PRESSURE_SPIKE, torr=0.0, leak_sccm=20.0)
    r.advance_by(10 * S)
    assert r.truth().pressure_torr == pytest.approx(2 * p0, rel=1e-3)
    r.faults.clear(f)
    r.advance_by(10 * S)
    assert r.truth().pressure_torr == pytest.approx(p0, rel=1e-3)


def test_pump_degradation_slower_purge_and_cvd(al2o3: Reactor) -> None:
    r = al2o3
    tau0 = r.residence_time_s()
    p0 = r.truth().pressure_torr
    assert cycle(r) == pytest.approx(GPC, rel=0.01)
    f = r.faults.inject(FaultKind.PUMP_DEGRADATION, factor=0.25)
    assert r.residence_time_s() == pytest.approx(4 * tau0, rel=1e-9)
    r.advance_by(30 * S)
    assert r.truth().pressure_torr == pytest.approx(4 * p0, rel=1e-3)
    g = [cycle(r) for _ in range(3)]
    assert g[-1] > 1.3 * GPC  # 5 s purges are now ~3 tau: CVD
    r.faults.clear(f)
    r.advance_by(30 * S)
    cycle(r)
    assert cycle(r) == pytest.approx(GPC, rel=0.01)


def test_gauge_drift_only_the_reading(al2o3: Reactor) -> None:
    r = al2o3
    true0 = r.truth().pressure_torr
    f = r.faults.inject(FaultKind.GAUGE_DRIFT, offset_torr=0.05, rate_torr_per_s=0.001)
    r.advance_by(100 * S)
    p = r.read_pressure_torr()
    assert p == pytest.approx(true0 + 0.05 + 0.1, abs=1e-3)
    assert r.truth().pressure_torr == pytest.approx(true0, rel=1e-9)
    r.faults.clear(f)
    assert r.read_pressure_torr() == pytest.approx(true0, abs=1e-3)


# --------------------------------------------------------------------------- sources


def test_empty_source_sub_saturates_then_nothing(make_reactor: Callable[..., Reactor]) -> None:
    # a TMA cylinder with 1.5 mg left: the last pulses weaken, then nothing comes
    cfg = ReactorConfig.for_lines(["TMA", "H2O"], substrate_c=200.0).with_line(
        "TMA", mass_g=0.0015, reserve_g=0.0005
    )
    r = Reactor(cfg)
    growth = [cycle(r) for _ in range(40)]
    assert growth[0] == pytest.approx(GPC, rel=0.01)
    assert any(0.05 < g < 0.95 * GPC for g in growth)  # sub-saturated on the way down
    assert growth[-1] < 0.05 * GPC
    assert r.truth().source_mass_g["TMA"] < 1e-4
    assert r.truth().source_empty == {"TMA": False, "H2O": False}  # nearly, not quite
    assert r.truth().saturation["TMA"].min_fraction < 0.5


def test_empty_source_fault_and_clear(al2o3: Reactor) -> None:
    r = al2o3
    f = r.faults.inject(FaultKind.EMPTY_SOURCE, "TMA")
    assert r.truth().source_empty["TMA"] is True
    assert cycle(r) < 0.01
    assert peak_reading(r, "TMA") < r.truth().pressure_torr + 0.002  # missing spike
    r.faults.clear(f)
    assert cycle(r) == pytest.approx(GPC, rel=0.01)


def test_cold_unheated_source_delivers_less(al2o3: Reactor) -> None:
    r = al2o3
    inj0 = r.truth().mass_balance["TMA"].injected_mol
    seq.dose(r, "TMA", 15 * MS)
    r.advance_by(5 * S)
    normal = r.truth().mass_balance["TMA"].injected_mol - inj0
    r.faults.inject(FaultKind.COLD_SOURCE, "TMA", drop_k=30.0)
    inj1 = r.truth().mass_balance["TMA"].injected_mol
    seq.dose(r, "TMA", 15 * MS)
    r.advance_by(5 * S)
    cold = r.truth().mass_balance["TMA"].injected_mol - inj1
    # TMA vapour pressure at -5 C vs 25 C (A 8.224, B 2134.83); the molar flow through the
    # valve goes as p_src / T_src
    ratio = 10 ** (-2134.83 / 268.15) / 10 ** (-2134.83 / 298.15) * 298.15 / 268.15
    assert cold / normal == pytest.approx(ratio, rel=0.01)


def test_cold_heated_source_cools_and_sub_saturates() -> None:
    proc = library.processes()["LiTaOx-LiOtBu-TaOEt5"]
    cfg = ReactorConfig.for_lines(["LiOtBu", "H2O", "TaOEt5"], substrate_c=225.0)
    r = Reactor(cfg)
    li2o = proc.cycles["Li2O"].chemicals
    seq.run_cycle(r, li2o, 2 * S, 10 * S)
    g0 = r.truth().growth_by_kind_a["Li2O"]
    seq.run_cycle(r, li2o, 2 * S, 10 * S)
    normal = r.truth().growth_by_kind_a["Li2O"] - g0
    f = r.faults.inject(FaultKind.COLD_SOURCE, "LiOtBu")
    r.advance_by(1800 * S)
    st = r.read_heater("source.LiOtBu")
    assert st.pv_c is not None
    assert st.pv_c < 80.0  # element open: the jacket cools, the controller sees it
    assert st.output_pct == 100.0
    g1 = r.truth().growth_by_kind_a["Li2O"]
    seq.run_cycle(r, li2o, 2 * S, 10 * S)
    assert r.truth().growth_by_kind_a["Li2O"] - g1 < 0.1 * normal
    r.faults.clear(f)
    r.advance_by(3600 * S)
    g2 = r.truth().growth_by_kind_a["Li2O"]
    seq.run_cycle(r, li2o, 2 * S, 10 * S)
    assert r.truth().growth_by_kind_a["Li2O"] - g2 == pytest.approx(normal, rel=0.02)


# --------------------------------------------------------------------------- QCM, plasma


def test_qcm_failure_flags_and_garbles_only_the_monitor(al2o3: Reactor) -> None:
    r = al2o3
    cycle(r)
    good = r.read_qcm()
    f = r.faults.inject(FaultKind.QCM_FAILURE)
    bad = [r.read_qcm() for _ in range(20)]
    assert all(q.failed and q.crystal_life_pct == 0.0 for q in bad)
    spread = max(q.frequency_hz for q in bad) - min(q.frequency_hz for q in bad)
    assert spread > 100.0  # frequency jumps
    assert cycle(r) == pytest.approx(GPC, rel=0.01)  # the film does not care
    r.faults.clear(f)
    ok = r.read_qcm()
    assert not ok.failed
    assert ok.thickness_a == pytest.approx(good.thickness_a + GPC, abs=0.05)


def _peald(plasma_ns: int = 3 * S) -> Reactor:
    cfg = ReactorConfig.for_lines(["TMA", "O2-plasma"], substrate_c=150.0)
    return Reactor(cfg)


def test_plasma_no_ignite_no_growth_in_plasma_step() -> None:
    r = _peald()
    seq.run_cycle(r, ["TMA", "O2-plasma"], 3 * S, 5 * S)
    g_ok = r.truth().thickness_a
    assert g_ok == pytest.approx(1.2, rel=0.01)
    f = r.faults.inject(FaultKind.PLASMA_NO_IGNITE)
    seq.dose(r, "TMA", 15 * MS)
    r.advance_by(5 * S)
    r.set_mfc("plasma.O2", 20.0)
    r.advance_by(2 * S)
    r.set_rf(True, 300.0)
    r.advance_by(2 * S)
    st = r.read_plasma()
    assert st.on
    assert not st.ignited
    assert st.reflected_w > 0.8 * st.forward_w
    r.set_rf(False, 0.0)
    r.set_mfc("plasma.O2", 0.0)
    r.advance_by(5 * S)
    assert r.truth().thickness_a == pytest.approx(g_ok, abs=1e-6)
    r.faults.clear(f)
    seq.dose(r, "O2-plasma", 3 * S)
    r.advance_by(5 * S)
    assert r.truth().thickness_a == pytest.approx(2 * g_ok, rel=0.01)


def test_plasma_high_reflected_power_fewer_radicals() -> None:
    normal = _peald()
    bad = _peald()
    bad.faults.inject(FaultKind.PLASMA_HIGH_REFLECTED, fraction=0.7)
    for r in (normal, bad):
        r.set_mfc("plasma.O2", 20.0)
        r.advance_by(2 * S)
        r.set_rf(True, 300.0)
        r.advance_by(2 * S)
    st = bad.read_plasma()
    assert st.ignited
    assert st.reflected_w == pytest.approx(0.7 * 300.0, abs=5.0)
    assert normal.read_plasma().reflected_w < 15.0
    p_bad = bad.truth().partial_pressures_torr["O2-plasma"]
    p_ok = normal.truth().partial_pressures_torr["O2-plasma"]
    assert p_bad == pytest.approx(p_ok * 0.3 / 0.98, rel=0.02)


# --------------------------------------------------------------------------- comm faults


@pytest.mark.parametrize(
    ("kind", "params", "field", "value"),
    [
        (FaultKind.COMM_TIMEOUT, {}, "silent", True),
        (FaultKind.DISCONNECT, {}, "disconnected", True),
        (FaultKind.CORRUPT_FRAME, {"probability": 0.3}, "corrupt_probability", 0.3),
        (FaultKind.TIMING_JITTER, {"jitter_ms": 4.0}, "jitter_ns", 4 * MS),
    ],
)
def test_comm_faults_are_reported_per_device(
    al2o3: Reactor, kind: FaultKind, params: dict[str, float | None], field: str, value: object
) -> None:
    r = al2o3
    assert r.faults.comm("chamber") is None
    f = r.faults.inject(kind, "chamber", **params)  # type: ignore[arg-type]
    cf = r.faults.comm("chamber")
    assert cf is not None
    assert getattr(cf, field) == value
    assert r.faults.comm("substrate") is None  # other devices are fine
    before = r.truth()
    r.advance_by(S)
    assert r.truth().thickness_a == before.thickness_a  # no physics
    r.faults.clear(f)
    assert r.faults.comm("chamber") is None


def test_comm_fault_decisions_are_seeded_and_snapshotted(
    make_reactor: Callable[..., Reactor],
) -> None:
    def decisions(seed: int) -> list[object]:
        r = make_reactor(["TMA", "H2O"], seed=seed)
        r.faults.inject(FaultKind.CORRUPT_FRAME, "valves", probability=0.5)
        r.faults.inject(FaultKind.TIMING_JITTER, "valves", jitter_ms=5.0)
        cf = r.faults.comm("valves")
        assert cf is not None
        out: list[object] = [cf.corrupt() for _ in range(50)]
        out += [cf.draw_jitter_ns() for _ in range(50)]
        return out

    a, b, c = decisions(1), decisions(1), decisions(2)
    assert a == b
    assert a != c
    corrupt = [x for x in a[:50] if x]
    assert 10 < len(corrupt) < 40
    assert all(0 <= int(j) <= 5 * MS for j in a[50:])  # type: ignore[call-overload]


def test_jitter_applied_by_a_binding_varies_the_dose(al2o3: Reactor) -> None:
    # what the in-process binding does with a jitter fault: delay the close command
    r = al2o3
    r.faults.inject(FaultKind.TIMING_JITTER, "valves", jitter_ms=10.0)
    doses = []
    for _ in range(6):
        cf = r.faults.comm("valves")
        assert cf is not None
        inj0 = r.truth().mass_balance["TMA"].injected_mol
        r.set_valve("TMA", True)
        r.advance_by(15 * MS + cf.draw_jitter_ns())
        r.set_valve("TMA", False)
        r.advance_by(5 * S)
        doses.append(r.truth().mass_balance["TMA"].injected_mol - inj0)
    assert max(doses) > 1.2 * min(doses)


# --------------------------------------------------------------------------- triggers


def state(f: Fault) -> FaultState:
    """The fault's state now (a call, so type checkers do not pin it between asserts)."""
    return f.state


def test_time_trigger_and_automatic_clearing(al2o3: Reactor) -> None:
    r = al2o3
    f = r.faults.inject(FaultKind.PUMP_DEGRADATION, factor=0.5, at_ns=10 * S, duration_ns=5 * S)
    tau0 = r.residence_time_s()
    r.advance_to(9 * S)
    assert state(f) is FaultState.PENDING
    assert r.residence_time_s() == tau0
    r.advance_to(10 * S)
    assert state(f) is FaultState.ACTIVE
    assert f.activated_ns == 10 * S
    assert r.residence_time_s() == pytest.approx(2 * tau0)
    r.advance_to(20 * S)
    assert state(f) is FaultState.CLEARED
    assert f.cleared_ns == 15 * S
    assert r.residence_time_s() == pytest.approx(tau0)


def test_predicate_trigger_fires_at_the_first_interaction_it_holds(al2o3: Reactor) -> None:
    r = al2o3
    f = r.faults.inject(
        FaultKind.VALVE_STUCK_CLOSED, "TMA", when=lambda rr: rr.truth().thickness_a >= 2.5
    )
    growth = [cycle(r) for _ in range(6)]
    assert f.state is FaultState.ACTIVE
    assert growth[:3] == pytest.approx([GPC] * 3, rel=0.01)
    assert max(growth[3:]) < 0.01


def test_bad_fault_requests_are_rejected(al2o3: Reactor) -> None:
    with pytest.raises(UnknownComponentError, match="no line 'TiCl4'"):
        al2o3.faults.inject(FaultKind.VALVE_STUCK_CLOSED, "TiCl4")
    with pytest.raises(ValueError, match="unknown parameter"):
        al2o3.faults.inject(FaultKind.VALVE_SLOW, "TMA", speed=2.0)
    with pytest.raises(ValueError, match="name its target"):
        al2o3.faults.inject(FaultKind.HEATER_RUNAWAY)
    with pytest.raises(UnknownComponentError, match="no plasma"):
        al2o3.faults.inject(FaultKind.PLASMA_NO_IGNITE)
    with pytest.raises(KeyError):
        al2o3.faults.clear(999)


def test_faults_survive_snapshot_and_restore(al2o3: Reactor) -> None:
    r = al2o3
    f = r.faults.inject(FaultKind.VALVE_STUCK_CLOSED, "H2O", at_ns=20 * S)
    snap = r.snapshot()
    r.advance_to(30 * S)
    assert r.faults.active()
    r.restore(snap)
    assert not r.faults.active()
    assert [p.id for p in r.faults.pending()] == [f.id]
    r.advance_to(30 * S)
    assert [a.kind for a in r.faults.active()] == [FaultKind.VALVE_STUCK_CLOSED]
    assert r.faults.describe()[0]["state"] == "active"
