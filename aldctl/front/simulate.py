"""``aldctl simulate``: a compiled schedule straight on the reactor model, no engine.

The fastest way to ask "what film does this recipe grow": the schedule's actions are applied
to :mod:`sim.reactor` at their offsets in virtual time, conditions (``wait_until``) are
checked on the model every second, and the result is the simulated film: thickness, growth
per cycle kind, composition, precursor drawn, and warnings when doses do not saturate or
purges are too short (CVD). ``aldctl run`` does the same through the real engine (drivers,
safety, journal); this command is the physics alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aldctl.recipe import schedule as s
from aldctl.recipe.schedule import NS, ActionKind
from aldctl.session import Prepared
from aldctl.tool import simulated_reactor
from sim.purge import CVD_LIMIT

SATURATION_WARN = 0.9
CVD_WARN_FRACTION = CVD_LIMIT
"""The same limit validation's purge rule keeps a recipe under (:mod:`sim.purge`)."""
NONUNIFORM_WARN = 0.02
"""Spread of an N-cell chamber's film (max - min over max) worth a warning."""
NO_GROWTH_A = 1e-3
"""A cycle that grows less than this (A per cycle) grew nothing."""


@dataclass
class _Kind:
    count: int = 0
    growth_a: float = 0.0


@dataclass(frozen=True)
class MapSpec:
    """A thickness map to measure after the run: ellipsometer spots at ``positions``
    (fractions of the chamber length from the inlet) with Gaussian noise, ``noise_rel`` of
    the local thickness or ``noise_a`` angstrom."""

    positions: tuple[float, ...]
    noise_rel: float = 0.0
    noise_a: float = 0.0


def parse_positions(text: str) -> tuple[float, ...]:
    """``0,0.5,1`` -> positions (ValueError with a hint)."""
    out: list[float] = []
    for raw in text.split(","):
        part = raw.strip()
        try:
            v = float(part)
        except ValueError:
            msg = f"--map: {part!r} is not a number (hint: fractions of the length, e.g. 0,0.5,1)"
            raise ValueError(msg) from None
        if not 0.0 <= v <= 1.0:
            msg = f"--map: {part} lies outside the chamber (hint: 0 = inlet .. 1 = outlet)"
            raise ValueError(msg)
        out.append(v)
    return tuple(out)


def map_points(n: int) -> tuple[float, ...]:
    """``n`` spots at k/n of the length, k = 1..n: the last at the outlet (the layout
    ``aldctl tune dose --profile`` reads)."""
    return tuple(k / n for k in range(1, n + 1))


def parse_noise(text: str) -> tuple[float, float]:
    """``0.5%`` (of the local thickness), ``0.2A`` or ``0.05nm`` -> (relative, angstrom)."""
    t = text.strip().replace(" ", "")
    scale = {"%": ("rel", 0.01), "nm": ("abs", 10.0), "a": ("abs", 1.0), "å": ("abs", 1.0)}
    for suffix, (kind, factor) in scale.items():
        if t.lower().endswith(suffix):
            try:
                v = float(t[: -len(suffix)]) * factor
            except ValueError:
                break
            if not (v >= 0.0 and math.isfinite(v)):
                break
            return (v, 0.0) if kind == "rel" else (0.0, v)
    msg = (
        f"--map-noise: {text!r} (hint: a share of the thickness like 0.5% or a length like "
        "0.2A, 0.05nm)"
    )
    raise ValueError(msg)


def with_cells(prepared: Prepared, cells: int) -> Prepared:
    """``prepared`` on the same tool with its simulated chamber cut into ``cells`` cells."""
    tool = prepared.tool
    sim_opts = dict(tool.simulator)
    chamber = dict(sim_opts.get("chamber") or {})
    chamber["cells"] = cells
    sim_opts["chamber"] = chamber
    return dataclasses.replace(prepared, tool=tool.model_copy(update={"simulator": sim_opts}))


def simulate(
    prepared: Prepared,
    *,
    seed: int = 0,
    trace: Path | None = None,
    trace_interval_s: float = 0.05,
    thickness_map: MapSpec | None = None,
) -> dict[str, Any]:
    sched = prepared.compiled.schedule
    tool = prepared.tool
    sim = simulated_reactor(tool, seed)
    r = sim.reactor
    recorder = None
    if trace is not None:
        from sim.trace import TraceRecorder

        t0 = r.truth()
        channels = [
            "t_s",
            "pressure_torr",
            "m:pressure_torr",
            *(f"p:{sp}" for sp in t0.partial_pressures_torr),
            *(f"coverage:{st}" for st in t0.coverage),
            *(f"valve:{ln}" for ln in r.lines),
            *(f"T:{h}" for h in ("substrate", "walls") if h in r.heaters),
            "thickness_a",
            "ald_thickness_a",
            "cvd_thickness_a",
            "mass_ng_cm2",
        ]
        if r.has_qcm:
            channels.append("m:qcm:thickness_a")
        recorder = TraceRecorder(r, round(trace_interval_s * NS), channels, csv_path=trace)
    warnings: list[str] = []
    kinds: dict[str, _Kind] = {}
    loops: dict[int, tuple[s.Loop, float, int]] = {}

    def line_chem(line: str) -> str:
        spec = tool.lines.get(line)
        return spec.chemical if spec is not None else line

    def apply(a: s.Action) -> None:
        k = a.kind
        if k is ActionKind.SET_TEMPERATURE:
            r.set_heater(a.target, a.value, a.rate)
        elif k is ActionKind.SET_FLOW:
            r.set_mfc(a.target, a.value or 0.0)
        elif k is ActionKind.PUMP_ISOLATION:
            r.set_pump_isolation(bool(a.value))
        elif k is ActionKind.SET_OZONE:
            r.set_ozone(a.value is not None, a.value or 0.0)
        elif k is ActionKind.RF_ON:
            r.set_rf(True, a.value or 0.0)
        elif k is ActionKind.RF_OFF:
            r.set_rf(False, 0.0)
        elif k is ActionKind.CHECK_PLASMA:
            st = r.read_plasma()
            if not st.ignited:
                warnings.append(
                    f"plasma did not ignite at {r.now_ns / NS:.1f} s "
                    f"(forward {st.forward_w:.0f} W, reflected {st.reflected_w:.0f} W)"
                )

    def run_body(body: s.Body) -> bool:
        """Apply one body; False when a wait_until with on_timeout: abort timed out."""
        for phase in body.phases:
            if isinstance(phase, s.Await):
                if not wait(phase):
                    return False
                continue
            t0 = r.now_ns
            events: list[tuple[int, int, s.Action, bool]] = []
            for a in phase.actions:
                if a.kind is ActionKind.PULSE:
                    events.append((a.offset_ns, 1, a, True))
                    events.append((a.offset_ns + a.duration_ns, 0, a, False))
                else:
                    events.append((a.offset_ns, 2, a, True))
            events.sort(key=lambda e: (e[0], e[1]))
            for offset, _, a, opening in events:
                r.advance_to(t0 + offset)
                if a.kind is ActionKind.PULSE:
                    r.set_valve(line_chem(a.target), opening)
                else:
                    apply(a)
            r.advance_to(t0 + phase.duration_ns)
        return True

    def value(channel: str) -> float | None:
        if channel == "pressure":
            return r.read_pressure_torr()
        if channel in tool.flows:
            return r.read_mfc(channel).flow_sccm
        return r.read_heater(channel).pv_c

    def wait(phase: s.Await) -> bool:
        start = r.now_ns
        since: dict[int, int | None] = dict.fromkeys(range(len(phase.conditions)))
        while True:
            ok = True
            for i, c in enumerate(phase.conditions):
                v = value(c.channel)
                met = v is not None and (
                    (
                        c.relation == "within"
                        and c.setpoint is not None
                        and abs(v - c.setpoint) <= c.value
                    )
                    or (c.relation == "below" and v < c.value)
                    or (c.relation == "above" and v > c.value)
                )
                if not met:
                    since[i] = None
                    ok = False
                    continue
                first = since[i]
                if first is None:
                    first = since[i] = r.now_ns
                if r.now_ns - first < c.hold_ns:
                    ok = False
            if ok:
                return True
            if r.now_ns - start >= phase.timeout_ns:
                warnings.append(
                    f"{phase.label}: not met within {phase.timeout_ns / NS:g} s"
                    + ("" if phase.on_timeout == "continue" else "; stopped here")
                )
                return phase.on_timeout == "continue"
            r.advance_by(NS)

    completed = run_body(sched.setup)
    t_sub_max = -273.15
    cycles = 0
    # Cycles that grew before a supercycle partner met them are corrected when it does
    # (Truth.partner_growth_a): the correction belongs to the recipe cycle that grew them.
    grew_last: dict[str, tuple[str, int]] = {}
    """Model kind -> (recipe cycle, its loop's id) that grew it last."""
    if completed:
        for unit in s.iter_units(sched.main):
            t_before = r.truth()
            if not run_body(unit.body):
                completed = False
                break
            after = r.truth()
            moved = {
                kind: v - t_before.partner_growth_a.get(kind, 0.0)
                for kind, v in after.partner_growth_a.items()
                if v != t_before.partner_growth_a.get(kind, 0.0)
            }
            grown = after.thickness_a - t_before.thickness_a - sum(moved.values())
            t_sub_max = max(t_sub_max, after.temperatures_c.get("substrate", t_sub_max))
            for kind, dg in moved.items():
                owner = grew_last.get(kind)
                if owner is not None:
                    kinds[owner[0]].growth_a += dg
                    lo, lg, ln = loops[owner[1]]
                    loops[owner[1]] = (lo, lg + dg, ln)
                else:
                    grown += dg
            if unit.cycle is not None and unit.loop is not None:
                k = kinds.setdefault(unit.cycle, _Kind())
                k.count += 1
                k.growth_a += grown
                lp = loops.get(id(unit.loop))
                passes = (lp[2] if lp else 0) + (1 if unit.last_in_pass else 0)
                loops[id(unit.loop)] = (unit.loop, (lp[1] if lp else 0.0) + grown, passes)
                if unit.last_in_pass:
                    cycles += 1
                for kind, v in after.growth_by_kind_a.items():
                    if v - moved.get(kind, 0.0) > t_before.growth_by_kind_a.get(kind, 0.0):
                        grew_last[kind] = (unit.cycle, id(unit.loop))
        if completed:
            run_body(sched.teardown)
    if recorder is not None:
        recorder.close()

    t = r.truth()
    for chem, sat in t.saturation.items():
        if sat.doses and sat.min_fraction < SATURATION_WARN:
            warnings.append(
                f"sub-saturation: {chem} doses reached {sat.min_fraction:.0%} of "
                f"saturation at worst ({sat.mean_fraction:.0%} on average): "
                "lengthen the pulse or warm the source"
            )
    # shares of a film that is not there are noise: no CVD alarm on 0 nm
    film = t.thickness_a >= NO_GROWTH_A * max(cycles, 1)
    dec = t.decomposition_thickness_a
    overlap = t.cvd_thickness_a - dec
    if film and overlap > CVD_WARN_FRACTION * t.thickness_a:
        warnings.append(
            f"CVD overlap: {overlap / t.thickness_a:.1%} of the film grew with both "
            f"reactants in the gas (residence time {t.residence_time_s:.2f} s): lengthen the "
            "purges"
        )
    if film and dec > CVD_WARN_FRACTION * t.thickness_a:
        hot = sorted(c for c, o in r.chemistry.decomposition_onset_c.items() if t_sub_max > o)
        names = ", ".join(f"{c} (onset {r.chemistry.decomposition_onset_c[c]:g} degC)" for c in hot)
        warnings.append(
            f"thermal decomposition: {dec / t.thickness_a:.1%} of the film grew from "
            f"{names or 'a precursor'} decomposing on the {t_sub_max:.0f} degC substrate: "
            "not self-limited, longer purges do not help; lower the substrate temperature"
        )
    for line, left in t.source_mass_g.items():
        spec = tool.lines.get(line)
        reserve = r.line_config(line).reserve_g
        if spec is None or left >= reserve or not t.consumed_g.get(line):
            continue
        warnings.append(
            f"source {line}: {left * 1e3:.1f} mg left after drawing "
            f"{t.consumed_g[line] * 1e3:.1f} mg (the tool says it holds "
            f"{spec.source_mass * 1e3:.3g} mg): below its last {reserve * 1e3:.2g} mg the "
            "doses fall short; refill it or shorten the recipe"
        )
    for name, k in kinds.items():
        if k.count and k.growth_a < NO_GROWTH_A * k.count:
            chems = " + ".join(sorted(_cycle_chemicals(sched, name)))
            warnings.append(
                f"no growth: {k.count} '{name}' cycles grew {k.growth_a / 10:.3f} nm: "
                f"{chems or 'its doses'} meet no surface reaction of the process library "
                "(a missing co-reactant, or a chemistry the library does not have)"
            )
    extra: dict[str, Any] = {}
    ch = r.config.chamber
    if ch is not None:
        prof = r.cell_profile()
        extra["chamber"] = {
            "cells": ch.cells,
            "length_cm": ch.length_cm,
            "substrate_at": ch.substrate_at,
            "qcm_at": ch.qcm_at,
            "gauge_at": ch.gauge_at,
            "positions": list(prof.positions),
            "thickness_nm": [v / 10.0 for v in prof.thickness_a],
        }
        top = max(prof.thickness_a)
        if film and top > 0.0 and (top - min(prof.thickness_a)) > NONUNIFORM_WARN * top:
            inlet, outlet = prof.thickness_a[0], prof.thickness_a[-1]
            warnings.append(
                f"non-uniform film: {inlet / 10:.2f} nm at the inlet, {outlet / 10:.2f} nm at "
                f"the outlet ({(top - min(prof.thickness_a)) / top:.1%} spread over "
                f"{ch.cells} cells): a dose that does not saturate the whole chamber "
                "(lengthen the pulse) or growth from overlapping reactants (lengthen the purges)"
            )
    if thickness_map is not None:
        pos = thickness_map.positions
        if ch is not None:
            true_a = r.cell_profile().thickness_at(pos)
        else:
            true_a = [t.thickness_a] * len(pos)  # the well-stirred chamber grows one film
        rng = np.random.default_rng(seed)
        sigma = [thickness_map.noise_rel * v + thickness_map.noise_a for v in true_a]
        measured = [
            max(0.0, v + float(rng.normal(0.0, sd))) if sd > 0.0 else v
            for v, sd in zip(true_a, sigma, strict=True)
        ]
        extra["thickness_map"] = {
            "positions": list(pos),
            "thickness_nm": [v / 10.0 for v in measured],
            "truth_nm": [v / 10.0 for v in true_a],
            "noise_rel": thickness_map.noise_rel,
            "noise_nm": thickness_map.noise_a / 10.0,
            "well_stirred": ch is None,
        }
    main_growth = sum(g for _, g, _ in loops.values())
    main_passes = sum(p for _, _, p in loops.values())
    return {
        "recipe": sched.recipe,
        "completed": completed,
        "thickness_nm": t.thickness_a / 10.0,
        "cycles": cycles,
        "gpc_A": main_growth / main_passes if main_passes else None,
        "subcycles": {
            name: {
                "count": k.count,
                "growth_nm": k.growth_a / 10.0,
                "gpc_A": k.growth_a / k.count if k.count else None,
            }
            for name, k in kinds.items()
        },
        "composition": dict(t.composition),
        "precursor_g": dict(t.consumed_g),
        "process_time_s": t.now_ns / NS,
        "ald_thickness_nm": t.ald_thickness_a / 10.0,
        "cvd_thickness_nm": t.cvd_thickness_a / 10.0,
        "saturation": {
            c: {"doses": v.doses, "min": v.min_fraction, "mean": v.mean_fraction}
            for c, v in t.saturation.items()
        },
        "residence_time_s": t.residence_time_s,
        "growth_basis": _growth_basis(sched),
        "warnings": warnings,
        **extra,
    }


def _growth_basis(sched: s.Schedule) -> list[dict[str, Any]]:
    """What the library growth the model saturates to rests on, per loop (the model is
    calibrated to the library: a single point or an assumption stays one in simulation)."""
    from sim import growthbasis, library

    out: list[dict[str, Any]] = []
    for loop, _ in s.walk_loops(sched.main):
        if loop.process is None or loop.substrate_c is None:
            continue
        proc = library.processes().get(loop.process)
        if proc is None:
            continue
        b = growthbasis.basis(proc, loop.substrate_c)
        out.append(
            {
                "loop": loop.label,
                "process": proc.id,
                "substrate_c": loop.substrate_c,
                "basis": b.label,
                "detail": b.detail,
                "uncertainty": b.uncertainty,
            }
        )
    return out


def _cycle_chemicals(sched: s.Schedule, name: str) -> set[str]:
    """The chemicals the cycle called ``name`` doses (pulses and plasma gases)."""
    out: set[str] = set()
    for loop, _ in s.walk_loops(sched.main):
        cdef = loop.cycles.get(name)
        if cdef is not None:
            out |= set(cdef.chemicals)
    return out
