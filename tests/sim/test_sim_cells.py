"""The chamber as N cells along the flow (``chamber: cells: N``): the 0-D model is its
N = 1 case, the profile agrees with the independent cross-flow model (:mod:`sim.crossflow`,
itself held against the Thomas closed form), mass balances, a sub-saturating dose leaves a
profile falling from inlet to outlet, and the gauge and QCM read their own cells."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aldctl.front import simulate as simmod
from aldctl.session import prepare
from sim import chemistry, crossflow, delivery
from sim.config import ChamberConfig, ReactorConfig
from sim.reactor import Reactor, Snapshot
from sim.units import N_A

MS = 1_000_000
S = 1_000_000_000
ROOT = Path(__file__).resolve().parents[2]


def _reactor(cells: int | None, **changes: Any) -> Reactor:
    ch = changes.pop("chamber", None)
    if ch is None and cells is not None:
        ch = ChamberConfig(cells=cells)
    cfg = ReactorConfig.for_lines(
        changes.pop("chemicals", ["TMA", "H2O"]),
        substrate_c=changes.pop("substrate_c", 200.0),
        walls_c=changes.pop("walls_c", 200.0),
        chamber=ch,
        **changes,
    )
    return Reactor(cfg)


def _pulse(r: Reactor, line: str, ms: float) -> None:
    r.set_valve(line, True)
    r.advance_by(round(ms * MS))
    r.set_valve(line, False)


def _cycles(r: Reactor, n: int, tma_ms: float = 15.0, purge_ms: float = 5000.0) -> None:
    for _ in range(n):
        _pulse(r, "TMA", tma_ms)
        r.advance_by(round(purge_ms * MS))
        _pulse(r, "H2O", 30.0)
        r.advance_by(round(purge_ms * MS))


# ---------------------------------------------------------------- N = 1 is the 0-D model


@pytest.mark.parametrize(
    ("recipe", "sets"),
    [
        ("recipes/al2o3_tma_h2o.yaml", ("cycles=15",)),
        ("recipes/litaox_1_6.yaml", ("supercycles=3",)),  # a supercycle, heated sources
        ("recipes/oxides/zro2_peald.yaml", ("cycles=8",)),  # plasma: decaying radical inflow
    ],
)
def test_one_cell_through_the_general_path_is_the_0d_model(
    recipe: str, sets: tuple[str, ...]
) -> None:
    prepared = prepare(ROOT / recipe, None, sets)
    zero_d = simmod.simulate(prepared)
    one = simmod.simulate(simmod.with_cells(prepared, 1))
    assert one["chamber"]["cells"] == 1
    assert zero_d["thickness_nm"] > 0.1
    for key in ("thickness_nm", "cvd_thickness_nm", "process_time_s"):
        assert one[key] == pytest.approx(zero_d[key], rel=1e-9, abs=1e-12), key
    for chem, g in zero_d["precursor_g"].items():
        assert one["precursor_g"][chem] == pytest.approx(g, rel=1e-9)
    for name, k in zero_d["subcycles"].items():
        assert one["subcycles"][name]["growth_nm"] == pytest.approx(k["growth_nm"], rel=1e-9)
    for chem, sat in zero_d["saturation"].items():
        assert one["saturation"][chem]["min"] == pytest.approx(sat["min"], rel=1e-9)
    assert one["composition"] == pytest.approx(zero_d["composition"], rel=1e-9)


def test_one_cell_reads_like_the_0d_model_through_the_devices() -> None:
    """The gauge's lag and the QCM through the same noise streams, step by step."""
    a = _reactor(None)
    b = _reactor(1)
    for r in (a, b):
        r.advance_by(2 * S)
    for k in range(3):
        for r in (a, b):
            _pulse(r, "TMA", 15.0)
            r.advance_by(40 * MS)
        ga, gb = a.read_pressure_torr("chamber"), b.read_pressure_torr("chamber")
        assert gb == pytest.approx(ga, rel=1e-9), k
        for r in (a, b):
            r.advance_by(3 * S)
            _pulse(r, "H2O", 30.0)
            r.advance_by(3 * S)
        qa, qb = a.read_qcm(), b.read_qcm()
        assert qb.thickness_a == pytest.approx(qa.thickness_a, abs=2e-3)
    assert b.truth().thickness_a == pytest.approx(a.truth().thickness_a, rel=1e-9)


# ---------------------------------------------------------------- N > 1, independent checks


def _crossflow_coverage(r: Reactor, injected_mol: float, pulse_s: float) -> list[float]:
    """The same chamber and kinetics on :mod:`sim.crossflow` (its own integrator)."""
    cfg = r.config
    ch = cfg.chamber
    assert ch is not None
    length = ch.length_cm / 100.0
    width = cfg.reactive_area_m2 / (2.0 * length)  # two reactive plates
    gap = cfg.volume_l * 1e-3 / (length * width)
    t_c = 200.0
    # the carrier's volumetric flow at the chamber's conditions: the reactor's pump
    q = cfg.pump_speed_l_s * 1e-3 * (t_c + 273.15) / (cfg.pump_t_c + 273.15)
    p = cfg.carrier_sccm * 1e-6 / 60.0 * ((t_c + 273.15) / 273.15) * 760.0 / q
    cf = crossflow.Chamber(
        length_m=length,
        width_m=width,
        gap_m=gap,
        temperature_c=t_c,
        pressure_torr=p,
        carrier_sccm=cfg.carrier_sccm,
        cells=ch.cells,
        axial_diffusion=ch.axial_diffusion,
    )
    assert cf.residence_time_s == pytest.approx(r.residence_time_s(), rel=1e-3)
    rates = r.chemistry.rates(t_c)
    (t,) = [tr for tr in r.chemistry.transitions if tr.chemical == "TMA"]
    tma = crossflow.Reactant(
        name="TMA",
        molar_mass=chemistry.get("TMA").molar_mass,
        beta=rates.beta[t.index],
        sites_per_m2=rates.sites_mol_m2[t.index] * N_A,
        feed_mol_s=injected_mol / pulse_s,
    )
    # its own backward-Euler integrator, in steps fine enough to be converged (its purge's
    # geometric steps are tuned for speed, not for a 1 % comparison)
    batch = crossflow.Batch.build([cf], [[tma]])
    batch.run(np.array([pulse_s]), 500, [np.ones(1)])
    tau = cf.residence_time_s
    batch.run(np.array([25.0 * tau]), 5000, [np.zeros(1)])
    return [float(v) for v in batch.theta[0]]


@pytest.mark.parametrize("diffusion", [False, True])
def test_sub_saturating_profile_agrees_with_the_crossflow_model(diffusion: bool) -> None:
    # A weak TMA line (a tenth of the conductance) under-doses the chamber.
    ch = ChamberConfig(cells=10, axial_diffusion=diffusion)
    cfg = ReactorConfig.for_lines(
        ["TMA", "H2O"], substrate_c=200.0, walls_c=200.0, chamber=ch, nucleation_factor=1.0
    )
    cfg = cfg.with_line("TMA", conductance_l_s=delivery.DEFAULT_CONDUCTANCE_L_S / 10.0)
    r = Reactor(cfg)
    r.advance_by(S)
    _pulse(r, "TMA", 12.0)
    r.advance_by(10 * S)
    truth = r.truth()
    injected = truth.mass_balance["TMA"].injected_mol
    ours = [c["TMA"] for c in r.cell_profile().coverage]
    # falls from inlet to outlet, well short of saturation at the outlet
    assert all(b < a for a, b in itertools.pairwise(ours))
    assert ours[0] > 0.6
    assert ours[-1] < 0.6 * ours[0]
    # pulse shape does not matter for the converted profile (the Thomas invariant), so a
    # square feed of the same total is the same trial for the cross-flow model
    theirs = _crossflow_coverage(r, injected, 0.010)
    for a, b in zip(ours, theirs, strict=True):
        assert a == pytest.approx(b, abs=0.005)
    # the substrate (mid-chamber) is what the run reports
    assert truth.coverage["TMA"] == pytest.approx(ours[5], abs=1e-12)


def test_mass_balances_over_the_whole_chamber() -> None:
    r = _reactor(8)
    r.advance_by(S)
    _cycles(r, 2, purge_ms=2000.0)
    for name, b in r.truth().mass_balance.items():
        assert b.injected_mol > 0.0
        assert abs(b.residual_mol) <= 1e-9 * b.injected_mol, name


def test_saturating_doses_grow_a_flat_film_and_short_ones_a_falling_one() -> None:
    flat = _reactor(10)
    flat.advance_by(S)
    _cycles(flat, 4, tma_ms=40.0)
    prof = flat.cell_profile().thickness_a
    assert max(prof) - min(prof) < 0.005 * max(prof)
    weak = _reactor(
        None,
        chamber=ChamberConfig(cells=10),
    )
    weak_cfg = weak.config.with_line("TMA", conductance_l_s=delivery.DEFAULT_CONDUCTANCE_L_S / 4)
    short = Reactor(weak_cfg)
    short.advance_by(S)
    _cycles(short, 4, tma_ms=12.0)
    p = short.cell_profile()
    th = p.thickness_a
    assert all(b < a for a, b in itertools.pairwise(th))
    assert th[-1] < 0.95 * th[0]
    # the run reports the substrate's cell; the map interpolates between cell centres
    assert short.truth().thickness_a == th[p.substrate_cell]
    assert p.thickness_at([0.0, 1.0]) == [th[0], th[-1]]
    assert p.thickness_at([0.1])[0] == pytest.approx(0.5 * (th[0] + th[1]))


def test_gauge_and_qcm_read_their_own_cells() -> None:
    def reactor(qcm_at: float, gauge_at: float) -> Reactor:
        cfg = ReactorConfig.for_lines(
            ["TMA", "H2O"],
            substrate_c=200.0,
            walls_c=200.0,
            chamber=ChamberConfig(cells=8, qcm_at=qcm_at, gauge_at=gauge_at),
        )
        cfg = cfg.with_line("TMA", conductance_l_s=delivery.DEFAULT_CONDUCTANCE_L_S / 4)
        r = Reactor(cfg)
        r.advance_by(S)
        return r

    def rise(gauge_at: float) -> list[float]:
        cfg = ReactorConfig.for_lines(
            ["TMA", "H2O"],
            substrate_c=200.0,
            walls_c=200.0,
            chamber=ChamberConfig(cells=8, gauge_at=gauge_at),
        )
        r = Reactor(cfg)
        r.advance_by(S)
        base = r.read_pressure_torr("chamber")
        assert base is not None
        _pulse(r, "TMA", 15.0)
        out = []
        for _ in range(6):
            r.advance_by(20 * MS)
            p = r.read_pressure_torr("chamber")
            assert p is not None
            out.append(p - base)
        return out

    # the pulse enters at the inlet and reaches the outlet's gauge port later
    at_inlet, at_outlet = rise(0.0), rise(1.0)
    assert at_inlet[0] > 0.3
    assert at_outlet[0] < 0.01
    assert at_outlet[-1] > 5 * at_outlet[0]
    assert at_inlet[-1] < 0.5 * at_inlet[0]

    inlet, outlet = reactor(0.0, 0.0), reactor(1.0, 1.0)
    for r in (inlet, outlet):
        _pulse(r, "TMA", 12.0)
        r.advance_by(5 * S)
        _pulse(r, "H2O", 30.0)
        r.advance_by(5 * S)
    prof = inlet.cell_profile()
    q_in, q_out = inlet.read_qcm().thickness_a, outlet.read_qcm().thickness_a
    assert q_in > q_out
    # a QCM reports a density-converted thickness: compare the ratio with the truth's
    assert q_in / q_out == pytest.approx(prof.thickness_a[0] / prof.thickness_a[-1], rel=0.01)


def test_a_snapshot_of_a_cell_chamber_continues_identically() -> None:
    r = _reactor(6)
    r.advance_by(S)
    _cycles(r, 1, tma_ms=12.0, purge_ms=1000.0)
    snap = Snapshot.from_bytes(r.snapshot_bytes())
    _cycles(r, 1, tma_ms=12.0, purge_ms=1000.0)
    a = r.cell_profile()
    r.restore(snap)
    _cycles(r, 1, tma_ms=12.0, purge_ms=1000.0)
    assert r.cell_profile() == a


def test_well_stirred_reactor_has_no_profile_and_rejects_bad_chambers() -> None:
    r = _reactor(None)
    with pytest.raises(ValueError, match="well-stirred"):
        r.cell_profile()
    for bad, match in (
        ({"cells": 0}, "cells"),
        ({"cells": 2, "qcm_at": 1.5}, "qcm_at"),
        ({"cells": 2, "length_cm": 0.0}, "length_cm"),
    ):
        with pytest.raises(ValueError, match=match):
            ReactorConfig.from_mapping({"chemicals": ["TMA"], "chamber": bad})
    cfg = ReactorConfig.from_mapping(
        {"chemicals": ["TMA"], "chamber": {"cells": 5, "substrate_at": 0.0}}
    )
    assert cfg.chamber == ChamberConfig(cells=5, substrate_at=0.0)
    assert dataclasses.replace(cfg, chamber=None).chamber is None
    assert math.isclose(cfg.chamber.length_cm, 20.0)


def test_a_run_through_the_engine_reports_the_film_per_position(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    """`aldctl run` on a tool whose simulator has `chamber: cells:` (the engine, drivers and
    journal as for any run): the summary gives every cell's film."""
    tool = (ROOT / "aldctl/data/sim-tool.yaml").read_text(encoding="utf-8")
    assert "\n  preset: savannah_like\n" in tool
    tool = tool.replace(
        "\n  preset: savannah_like\n",
        "\n  preset: savannah_like\n  chamber: {cells: 6, substrate_at: 0.0}\n",
    )
    cfg = tmp_path / "tool.yaml"
    cfg.write_text(tool, encoding="utf-8")
    res = run_cli(
        "run",
        str(ROOT / "recipes/al2o3_tma_h2o.yaml"),
        "--config",
        str(cfg),
        "--set",
        "cycles=2",
        "--set",
        "tma_pulse=10 ms",
        "--json",
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert res.code == 0, res.err
    out = json.loads(res.out)
    ch = out["simulation"]["chamber"]
    assert ch["cells"] == 6
    assert len(ch["thickness_nm"]) == 6
    # the run's thickness is the substrate's cell's: here the inlet's, the thickest
    assert out["thickness_nm"] == pytest.approx(ch["thickness_nm"][0], rel=1e-12)
    assert ch["thickness_nm"][0] > ch["thickness_nm"][-1] > 0.1


def test_a_snapshot_from_before_the_cells_loads_and_continues() -> None:
    """A journal's snapshot written by 0461154 (before `chamber` existed: its configuration
    pickles one field fewer) restores, and continues as that version did (its figures)."""
    blob = (Path(__file__).parent / "data" / "snapshot_0461154.bin").read_bytes()
    snap = Snapshot.from_bytes(blob)
    assert snap.config.chamber is None
    assert snap.config.process is None
    r = Reactor(snap.config)
    r.restore(snap)
    _pulse(r, "H2O", 30.0)
    r.advance_by(3 * S)
    # what 0461154 itself gave from the same snapshot
    assert r.truth().thickness_a == 1.5789137655171464
    assert r.read_pressure_torr("chamber") == 0.5536
