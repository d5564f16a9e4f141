"""The simulator's public API as the rest of aldctl uses it: configuration, component names,
time, snapshots, traces, memory, benchmark."""

from __future__ import annotations

import csv
import tracemalloc
from pathlib import Path

import pytest

from sim import bench, library
from sim import sequence as seq
from sim.faults import FaultKind
from sim.reactor import Reactor, ReactorConfig, Snapshot, UnknownComponentError
from sim.trace import TraceRecorder

MS = 1_000_000
S = 1_000_000_000


# --------------------------------------------------------------------------- configuration


def test_presets_give_the_documented_chamber() -> None:
    sav = ReactorConfig.preset("savannah_like")
    assert sav.volume_l == 0.3
    assert sav.carrier_sccm == 20.0
    assert 0.3 <= sav.base_pressure_torr() <= 1.0
    assert 0.35 <= sav.residence_time_s() <= 1.0
    assert 0.5 <= sav.residence_time_s(t_gas_c=25.0) <= 1.0
    slow = ReactorConfig.preset("large_slow_chamber")
    assert slow.base_pressure_torr() == pytest.approx(1.0, rel=0.05)
    assert slow.residence_time_s() > 5.0
    with pytest.raises(ValueError, match="unknown reactor preset 'fast'"):
        ReactorConfig.preset("fast")


def test_reactor_starts_at_base_pressure_with_the_configured_residence_time() -> None:
    cfg = ReactorConfig.for_lines(["TMA", "H2O"])
    r = Reactor(cfg)
    assert r.truth().pressure_torr == pytest.approx(cfg.base_pressure_torr(), rel=1e-9)
    assert r.residence_time_s() == pytest.approx(cfg.residence_time_s(), rel=1e-6)
    r.advance_by(60 * S)
    assert r.truth().pressure_torr == pytest.approx(cfg.base_pressure_torr(), rel=1e-9)


def test_from_mapping_builds_with_unit_suffixed_keys() -> None:
    cfg = ReactorConfig.from_mapping(
        {
            "preset": "savannah_like",
            "chemicals": ["TMA", "H2O"],
            "volume_l": 0.5,
            "carrier_sccm": 40,
            "reactive_area_m2": 0.03,
            "substrate_c": 180,
            "gauge": {"full_scale_torr": 1.0},
            "ozone": None,
        }
    )
    assert cfg.volume_l == 0.5
    assert cfg.carrier_sccm == 40.0
    assert cfg.substrate_c == 180.0
    assert [ln.name for ln in cfg.lines] == ["TMA", "H2O"]
    assert cfg.gauge.full_scale_torr == 1.0
    explicit = ReactorConfig.from_mapping(
        {"lines": [{"name": "A", "chemical": "TMA", "mass_g": 12.5, "valve_stroke_ms": 8}]}
    )
    assert explicit.lines[0].mass_g == 12.5
    assert explicit.lines[0].valve_stroke_ms == 8.0
    by_name = ReactorConfig.from_mapping({"lines": {"W": {"chemical": "H2O"}}})
    assert by_name.lines[0].name == "W"


def test_from_mapping_names_every_bad_key_and_value() -> None:
    with pytest.raises(ValueError, match="unknown key") as exc:
        ReactorConfig.from_mapping({"volume": 0.3, "carrier_slm": 1, "volume_l": 0.3})
    assert "volume" in str(exc.value)
    assert "carrier_slm" in str(exc.value)
    with pytest.raises(ValueError, match=r"lines\[0\]\.conductance") as exc2:
        ReactorConfig.from_mapping({"lines": [{"name": "A", "chemical": "TMA", "conductance": 1}]})
    assert "conductance" in str(exc2.value)
    with pytest.raises(ValueError, match="volume_l has the wrong type"):
        ReactorConfig.from_mapping({"volume_l": "0.3 L"})
    with pytest.raises(ValueError, match="volume_l"):
        ReactorConfig.from_mapping({"volume_l": -1.0})
    with pytest.raises(ValueError, match="unknown chemical 'TMAA'"):
        ReactorConfig.from_mapping({"lines": [{"name": "A", "chemical": "TMAA"}]})
    with pytest.raises(ValueError, match="mapping"):
        ReactorConfig.from_mapping([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown gas\(es\) \['Xe'\]"):
        ReactorConfig.from_mapping({"carrier_gas": "Xe"})


def test_for_lines_provisions_heaters_plasma_and_ozone() -> None:
    cfg = ReactorConfig.for_lines(["LiOtBu", "TMA", "H2O", "O2-plasma", "O3", "TIB"])
    names = {ln.name: ln for ln in cfg.lines}
    assert set(names) == {"LiOtBu", "TMA", "H2O", "O3", "TIB"}
    assert names["LiOtBu"].source_t_c == 140.0  # heated solid, the papers' temperature
    assert names["LiOtBu"].line_t_c == 155.0
    assert names["TMA"].source_t_c is None  # room-temperature vapour draw
    assert names["O3"].line_t_c is None
    r = Reactor(cfg)
    assert r.heaters == [
        "substrate",
        "walls",
        "source.LiOtBu",
        "line.LiOtBu",
        "line.TMA",
        "line.H2O",
        "line.TIB",
    ]
    assert r.mfcs == ["carrier", "plasma.O2"]
    assert r.has_plasma
    assert r.has_ozone
    assert r.has_qcm
    assert set(r.device_names()) >= {"valves", "chamber", "rf", "ozone", "qcm", "pump"}
    with pytest.raises(ValueError, match="did you mean 'TMA'"):
        ReactorConfig.for_lines(["tma"])
    with pytest.raises(ValueError, match="not a dose chemical"):
        ReactorConfig.for_lines(["N2"])


def test_plasma_feeds_of_the_built_in_tool() -> None:
    # aldctl's built-in simulated tool offers O2, N2, H2 and Ar feeds
    from sim.config import PlasmaConfig

    cfg = ReactorConfig.for_lines(["TMA", "H2O"], plasma=PlasmaConfig(("O2", "N2", "H2", "Ar")))
    r = Reactor(cfg)
    assert r.mfcs == ["carrier", "plasma.O2", "plasma.N2", "plasma.H2", "plasma.Ar"]
    r.set_mfc("plasma.Ar", 20.0)
    r.advance_by(2 * S)
    r.set_rf(True, 200.0)
    r.advance_by(S)
    assert r.read_plasma().ignited  # an argon plasma lights, but makes no radicals
    assert "Ar" in r.truth().partial_pressures_torr


# --------------------------------------------------------------------------- chemistry choice


@pytest.mark.parametrize(
    ("chemicals", "first", "kinds"),
    [
        (["TMA", "H2O"], "Al2O3-TMA-H2O", ["Al2O3-TMA-H2O"]),
        (["LiOtBu", "H2O", "TaOEt5"], "LiTaOx-LiOtBu-TaOEt5", ["Li2O", "Ta2O5"]),
        # TMA then H2O is Al2O3-TMA-H2O whatever else the tool holds: LiAlOx's subcycle
        # growth and interaction apply when the two kinds meet (Chemistry.multiplier)
        (["TMA", "H2O", "LiOtBu"], "Al2O3-TMA-H2O", ["Al2O3-TMA-H2O", "Li2O"]),
        (["LiOtBu", "H2O"], "LiSiOx-LiOtBu-TEOS", ["Li2O"]),
        (
            ["TMA", "H2O", "O2-plasma"],
            "Al2O3-TMA-H2O",
            ["Al2O3-TMA-H2O", "Al2O3-TMA-O2plasma"],
        ),
    ],
)
def test_process_is_chosen_from_the_chemicals(
    chemicals: list[str], first: str, kinds: list[str]
) -> None:
    r = Reactor(ReactorConfig.for_lines(chemicals))
    assert r.truth().processes[0] == first
    assert list(r.truth().growth_by_kind_a) == kinds


def test_li2o_grows_at_the_litaox_rate_next_to_taoet5() -> None:
    r = Reactor(ReactorConfig.for_lines(["LiOtBu", "H2O", "TaOEt5"], substrate_c=225.0))
    seq.run_cycle(r, ["LiOtBu", "H2O"], 2 * S, 20 * S)
    g_li = library.processes()["LiTaOx-LiOtBu-TaOEt5"].gpc(225.0, "Li2O")
    assert r.truth().growth_by_kind_a["Li2O"] == pytest.approx(g_li, rel=0.01)
    assert r.truth().composition == {"Li": 1.0}


def test_process_override() -> None:
    cfg = ReactorConfig.for_lines(["LiOtBu", "H2O"], process="LiTaOx-LiOtBu-TaOEt5")
    assert Reactor(cfg).truth().processes[0] == "LiTaOx-LiOtBu-TaOEt5"
    with pytest.raises(ValueError, match="unknown process"):
        ReactorConfig.for_lines(["TMA", "H2O"], process="Al2O3")


def test_thermal_and_plasma_kinds_share_the_precursor_state() -> None:
    r = Reactor(ReactorConfig.for_lines(["TMA", "H2O", "O2-plasma"], substrate_c=150.0))
    seq.run_cycle(r, ["TMA", "H2O"], {"TMA": 15 * MS, "H2O": 200 * MS}, 5 * S)
    seq.run_cycle(r, ["TMA", "O2-plasma"], {"TMA": 15 * MS, "O2-plasma": 3 * S}, 5 * S)
    g = r.truth().growth_by_kind_a
    thermal = library.processes()["Al2O3-TMA-H2O"].gpc(150.0)
    assert g["Al2O3-TMA-H2O"] == pytest.approx(thermal, rel=0.01)
    assert g["Al2O3-TMA-O2plasma"] == pytest.approx(1.2, rel=0.01)
    assert set(r.truth().coverage) == {"ready", "TMA"}


# --------------------------------------------------------------------------- names, time


def test_unknown_components_are_named_in_the_error(al2o3: Reactor) -> None:
    with pytest.raises(UnknownComponentError, match=r"no line 'DEZ'; have \['TMA', 'H2O'\]"):
        al2o3.set_valve("DEZ", True)
    with pytest.raises(UnknownComponentError, match=r"no heater 'source\.TMA'"):
        al2o3.read_heater("source.TMA")
    with pytest.raises(UnknownComponentError, match=r"no MFC 'plasma\.O2'"):
        al2o3.set_mfc("plasma.O2", 10.0)
    with pytest.raises(UnknownComponentError, match="no plasma source"):
        al2o3.set_rf(True, 100.0)
    with pytest.raises(UnknownComponentError, match="no ozone"):
        al2o3.read_ozone()
    with pytest.raises(UnknownComponentError, match="no gauge 'foreline'"):
        al2o3.read_pressure_torr("foreline")
    assert isinstance(UnknownComponentError("x"), KeyError)


def test_time_is_monotonic_and_now_is_a_no_op(al2o3: Reactor) -> None:
    r = al2o3
    r.advance_to(5 * S)
    before = r.truth()
    r.advance_to(5 * S)
    assert r.truth() == before
    with pytest.raises(ValueError, match="forward only"):
        r.advance_to(4 * S)
    assert r.now_ns == 5 * S


def test_commands_act_at_now(al2o3: Reactor) -> None:
    r = al2o3
    r.advance_to(1234567)
    r.set_valve("TMA", True)
    r.advance_to(1234567 + 6 * MS)  # exactly the dead time: not moved yet
    assert r.truth().valve_positions["TMA"] == 0.0
    r.advance_to(1234567 + 9 * MS)
    assert r.truth().valve_positions["TMA"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- snapshots


def test_snapshot_bytes_round_trip_in_a_new_reactor(al2o3: Reactor) -> None:
    r = al2o3
    seq.run_cycle(r, ["TMA", "H2O"], 15 * MS, 5 * S)
    r.faults.inject(FaultKind.CORRUPT_FRAME, "chamber", probability=0.5)
    data = r.snapshot().to_bytes()
    assert isinstance(data, bytes)
    twin = Reactor(r.config)
    twin.restore(Snapshot.from_bytes(data))
    for reactor in (r, twin):
        seq.run_cycle(reactor, ["TMA", "H2O"], 15 * MS, 5 * S)
    assert twin.truth() == r.truth()
    assert twin.read_pressure_torr() == r.read_pressure_torr()
    cf_a, cf_b = r.faults.comm("chamber"), twin.faults.comm("chamber")
    assert cf_a is not None
    assert cf_b is not None
    assert [cf_a.corrupt() for _ in range(20)] == [cf_b.corrupt() for _ in range(20)]


def test_snapshot_refuses_other_configs_and_predicates(al2o3: Reactor) -> None:
    snap = al2o3.snapshot()
    other = Reactor(ReactorConfig.for_lines(["DEZ", "H2O"]))
    with pytest.raises(ValueError, match="different configuration"):
        other.restore(snap)
    al2o3.faults.inject(FaultKind.QCM_FAILURE, when=lambda r: r.now_ns > 10 * S)
    with pytest.raises(ValueError, match="predicate"):
        al2o3.snapshot().to_bytes()
    with pytest.raises(ValueError, match="not a reactor snapshot"):
        Snapshot.from_bytes(__import__("pickle").dumps([1]))


# --------------------------------------------------------------------------- traces, memory


def test_trace_streams_rows_to_csv(tmp_path: Path, al2o3: Reactor) -> None:
    out = tmp_path / "trace.csv"
    channels = ["t_s", "pressure_torr", "m:pressure_torr", "p:TMA", "coverage:TMA", "valve:TMA"]
    with TraceRecorder(al2o3, 10 * MS, channels, csv_path=out) as tr:
        seq.run_cycle(al2o3, ["TMA", "H2O"], 15 * MS, 2 * S)
    with out.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == channels
    assert len(rows) - 1 == tr.rows == 404  # 0 .. 4.03 s every 10 ms
    times = [float(r[0]) for r in rows[1:]]
    assert times[:3] == [0.0, 0.01, 0.02]
    assert max(float(r[3]) for r in rows[1:]) > 0.05  # the TMA pulse is in it
    al2o3.advance_by(S)  # closed: no more rows
    assert tr.rows == 404
    with pytest.raises(ValueError, match="unknown trace channel"):
        TraceRecorder(al2o3, MS, ["p:XYZ", "T:nowhere"], sink=lambda row: None)


def test_memory_does_not_grow_with_cycles(al2o3: Reactor) -> None:
    r = al2o3
    for _ in range(20):
        seq.run_cycle(r, ["TMA", "H2O"], 15 * MS, 5 * S)
    tracemalloc.start()
    try:
        for _ in range(30):
            seq.run_cycle(r, ["TMA", "H2O"], 15 * MS, 5 * S)
        early, _ = tracemalloc.get_traced_memory()
        for _ in range(200):
            seq.run_cycle(r, ["TMA", "H2O"], 15 * MS, 5 * S)
            r.read_qcm()
        late, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 200 more cycles (400 doses): nothing is kept per dose
    assert late - early < 8 * 1024
    assert r.truth().saturation["TMA"].doses == 250


def test_benchmark_reports_its_figures() -> None:
    res = bench.run_benchmark(5)
    for key in ("wall_s", "process_s", "virtual_s", "speedup", "peak_mem_kib", "gpc_a"):
        assert key in res
    assert res["virtual_s"] == pytest.approx(5 * 10.03, rel=1e-6)
    assert res["gpc_a"] == pytest.approx(1.0, rel=0.01)
