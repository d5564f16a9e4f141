"""What a library growth figure rests on: published data, a range, one point or an assumption.

The planner, ``aldctl simulate`` and ``aldctl library check`` print growth per cycle with
this next to it, so that a number derived from one published point, a published range or an
engineering assumption is never presented as if it were measured at that temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim import library

_SPLITS = {
    # How each supercycle process's per-subcycle growth was obtained (library.yaml comments).
    "LiSiOx-LiOtBu-TEOS": "fit to 2 published per-cycle figures with an assumed interaction",
    "LiTaOx-LiOtBu-TaOEt5": "solved exactly from 2 published supercycle figures",
    "LiNbOx-LiOtBu-NbOEt5": "chosen inside a published range whose ratios the papers disagree on",
    "LiAlOx-TMA-LiOtBu": "split of 1 published figure, Al2O3 subcycle assumed at 1.0 A",
    "LBCO-LiOtBu-TIB-O3": "assumed split of 1 published supercycle figure",
    "LiFePO4-supercycle": "assumed split of 1 published supercycle figure",
    "LixAlyS-H2S": "assumed split of 1 published per-cycle figure",
}


@dataclass(frozen=True, slots=True)
class Basis:
    label: str
    """"published", "interpolated", "single point", "range", "extrapolated", "assumed",
    "derived" (supercycle subcycles)."""
    detail: str
    uncertainty: float | None = None
    """Relative half-width where the data give one (a published range), else None."""

    def text(self) -> str:
        u = f", +-{self.uncertainty:.0%}" if self.uncertainty is not None else ""
        return f"{self.label}{u}: {self.detail}"


def basis(proc: library.Process, t_c: float, kind: str | None = None) -> Basis:
    """What the library's growth of ``proc`` (``kind`` for a supercycle) at ``t_c`` rests on."""
    src = f" ({proc.source})" if proc.source else ""
    if proc.is_supercycle:
        ranged = [p for p in proc.published if p.value_range is not None]
        if ranged and ranged[0].value_range is not None:
            lo, hi = ranged[0].value_range
            return Basis(
                "range",
                f"published {lo:g}-{hi:g} A/cycle at {ranged[0].t_c:g} degC; per-subcycle "
                f"values {_SPLITS.get(proc.id, 'derived from it')}{src}",
                (hi - lo) / (hi + lo),
            )
        how = _SPLITS.get(proc.id, "derived from the published supercycle figures")
        ts = sorted({p.t_c for p in proc.published})
        where = _where(t_c, ts)
        label = "assumed" if "assumed split" in how or "assumed at" in how else "derived"
        return Basis(label, f"per-subcycle growth {how}{where}{src}")
    ck = next(iter(proc.cycles.values())) if kind is None else proc.cycles[kind]
    if ck.assumed:
        return Basis("assumed", f"no published growth figure for {proc.id}{src}")
    ts = [t for t, _ in ck.points]
    lo, hi = proc.valid_range
    if any(abs(t - t_c) < 0.5 for t in ts):
        label, detail = "published", f"published at {t_c:g} degC"
    elif len(ts) == 1:
        label = "single point"
        detail = (
            f"one published point at {ts[0]:g} degC; the change with temperature is the "
            "library's rule, not data"
        )
    elif ts[0] < t_c < ts[-1]:
        label, detail = "interpolated", f"between published points at {ts[0]:g}-{ts[-1]:g} degC"
    else:
        label, detail = "extrapolated", f"outside the published points ({ts[0]:g}-{ts[-1]:g} degC)"
    if not lo <= t_c <= hi:
        label = "extrapolated"
        detail += f"; {t_c:g} degC is outside the process's range {lo:g}-{hi:g} degC"
    return Basis(label, detail + src)


def _where(t_c: float, ts: list[float]) -> str:
    if not ts or any(abs(t - t_c) < 0.5 for t in ts):
        return ""
    return f"; published at {', '.join(f'{t:g}' for t in ts)} degC, not {t_c:g}"


def summary(proc: library.Process) -> Basis:
    """What the process's growth data are, over its whole range (for listings)."""
    if proc.is_supercycle:
        return basis(proc, proc.nominal_t)
    ck = next(iter(proc.cycles.values()))
    src = f" ({proc.source})" if proc.source else ""
    if ck.assumed:
        return Basis("assumed", f"no published growth figure{src}")
    if len(ck.points) == 1:
        t = ck.points[0][0]
        return Basis("single point", f"one published point at {t:g} degC{src}")
    ts = [t for t, _ in ck.points]
    return Basis("published", f"{len(ts)} published points at {ts[0]:g}-{ts[-1]:g} degC{src}")
