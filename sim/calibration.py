"""Leave-one-out calibration of the process library: can it predict a point it never saw?

For every whole-cycle process with two or more published GPC points, the library is built
again from processes.yaml without point i (same rules, same model parameters) and asked for
the growth at point i's temperature. A point with published points on both sides is
*interior* (an interpolation, where the library should be good); the others are
extrapolations, reported for honesty. Supercycle processes are left out: their per-subcycle
values are fitted by hand to the published figures (library.yaml), so dropping a figure
leaves the fit under-determined, not a prediction.

``python -m sim.calibration`` prints the table the README shows.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sim import library


@dataclass(frozen=True, slots=True)
class LooRow:
    process: str
    t_c: float
    published: float
    predicted: float
    interior: bool

    @property
    def error(self) -> float:
        """Relative error of the prediction."""
        return (self.predicted - self.published) / self.published


def _specs() -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    data = library._read("processes.yaml")["processes"]
    params = library._read("library.yaml")["processes"]
    return [
        (p, params[p["id"]]) for p in data if "half_reactions" in p and len(p.get("gpc", ())) > 1
    ]


def leave_one_out() -> list[LooRow]:
    """One row per published point of every whole-cycle process with several points."""
    rows: list[LooRow] = []
    for spec, params in _specs():
        points = sorted(spec["gpc"], key=lambda p: float(p["T"]))
        for i, held in enumerate(points):
            rest = [p for j, p in enumerate(points) if j != i]
            proc = library._build({**spec, "gpc": rest}, params)
            t = float(held["T"])
            rows.append(
                LooRow(
                    process=str(spec["id"]),
                    t_c=t,
                    published=float(held["value"]),
                    predicted=proc.gpc(t),
                    interior=0 < i < len(points) - 1,
                )
            )
    return rows


def compare_interpolations() -> dict[str, float]:
    """Median |error| of the interior leave-one-out predictions per interpolation scheme
    (edge points are governed by the extrapolation rules, the same for every scheme)."""
    out: dict[str, float] = {}
    for scheme in ("linear", "inverse_t"):
        errs: list[float] = []
        for spec, _params in _specs():
            pts = sorted((float(p["T"]), float(p["value"])) for p in spec["gpc"])
            for i in range(1, len(pts) - 1):
                rest = pts[:i] + pts[i + 1 :]
                t, g = pts[i]
                errs.append(abs(library.interpolate(rest, t, scheme) - g) / g)
        out[scheme] = statistics.median(errs) if errs else 0.0
    return out


def median_abs_error(rows: list[LooRow]) -> float:
    return statistics.median(abs(r.error) for r in rows) if rows else 0.0


def table(rows: list[LooRow]) -> str:
    """The leave-one-out table as Markdown."""
    lines = [
        "| process | T (degC) | published (A/cycle) | predicted without it | error | point |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        where = "interior" if r.interior else "edge (extrapolation)"
        lines.append(
            f"| {r.process} | {r.t_c:g} | {r.published:.3g} | {r.predicted:.3f} | "
            f"{r.error:+.1%} | {where} |"
        )
    interior = [r for r in rows if r.interior]
    lines.append("")
    lines.append(
        f"Median |error|: {median_abs_error(interior):.1%} over the {len(interior)} interior "
        f"points, {median_abs_error(rows):.1%} over all {len(rows)}."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(leave_one_out()))
    print(compare_interpolations())
