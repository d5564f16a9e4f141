"""Calibration of the simulator against the published growth data.

Two kinds of test, and only the second can fail for bad data:

* plumbing: at every published point a saturated simulated run (long doses and purges)
  reproduces the library's value within 5 %. The library is built from those very points,
  so this checks that the reactor delivers what the library says (saturation, attribution,
  supercycle bookkeeping), not that the library is right;
* leave-one-out (:mod:`sim.calibration`): the library built without a point predicts it.
  ``tests/test_sim_fidelity.py`` runs the same prediction through ``aldctl simulate`` on the
  built-in tool.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim import calibration, library
from sim import sequence as seq
from sim.reactor import Reactor, ReactorConfig

S = 1_000_000_000
PULSE_NS = 3 * S
PURGE_NS = 40 * S


def _points() -> list[tuple[str, int]]:
    return [(pid, i) for pid, p in library.processes().items() for i in range(len(p.published))]


def simulate_published(proc: library.Process, pub: library.Published) -> tuple[float, Reactor]:
    """Simulated growth in the published figure's units (per cycle or per supercycle)."""
    cfg = ReactorConfig.for_lines(
        sorted(proc.chemicals),
        process=proc.id,
        substrate_c=pub.t_c,
        walls_c=min(pub.t_c, 200.0),
    )
    r = Reactor(cfg)
    seq.prepare(r)
    if proc.is_supercycle:
        assert pub.ratio is not None
        subs = {k.name: k.chemicals for k in proc.cycles.values()}
        seq.run_supercycle(r, subs, pub.ratio, PULSE_NS, PURGE_NS)
        h0 = r.truth().thickness_a
        seq.run_supercycle(r, subs, pub.ratio, PULSE_NS, PURGE_NS)
        growth = r.truth().thickness_a - h0
        if pub.per == "cycle":
            growth /= sum(pub.ratio.values())
        return growth, r
    chems = next(iter(proc.cycles.values())).chemicals
    for _ in range(2):
        seq.run_cycle(r, chems, PULSE_NS, PURGE_NS)
    h0 = r.truth().thickness_a
    seq.run_cycle(r, chems, PULSE_NS, PURGE_NS)
    return r.truth().thickness_a - h0, r


@pytest.mark.parametrize(("pid", "index"), _points())
def test_published_growth_is_reproduced(pid: str, index: int) -> None:
    proc = library.processes()[pid]
    pub = proc.published[index]
    growth, r = simulate_published(proc, pub)
    truth = r.truth()
    # the run really was saturated (otherwise agreement would be luck)
    assert min(s.min_fraction for s in truth.saturation.values()) > 0.99
    assert truth.processes[0] == pid
    if pub.value is not None:
        assert growth == pytest.approx(pub.value, rel=0.05)
    else:
        assert pub.value_range is not None
        lo, hi = pub.value_range
        assert lo <= growth <= hi


def test_every_process_with_data_is_covered() -> None:
    covered = {pid for pid, _ in _points()}
    with_data = {pid for pid, p in library.processes().items() if p.published}
    assert covered == with_data
    assert len(covered) >= 20


def test_leave_one_out_predicts_every_interior_point_within_10_percent() -> None:
    rows = calibration.leave_one_out()
    interior = [r for r in rows if r.interior]
    assert interior  # Al2O3-TMA-H2O has four points
    for r in interior:
        assert abs(r.error) < 0.10, r


def test_the_library_interpolates_as_leave_one_out_prefers() -> None:
    medians = calibration.compare_interpolations()
    assert min(medians, key=lambda k: medians[k]) == library.INTERPOLATION


def test_the_readme_shows_the_leave_one_out_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert calibration.table(calibration.leave_one_out()) in readme
