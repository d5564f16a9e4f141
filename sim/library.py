"""Process library: published growth data (processes.yaml) plus the model parameters
(library.yaml) that turn it into saturated growth per cycle as a function of temperature.

Rules for GPC(T), documented once here and used by the planner and the simulator alike:

* Inside the process window (or, when the data state none, inside the published data range
  widened by ``_RANGE_MARGIN_K`` on both sides): interpolation between the published points
  linear in 1/T (:data:`INTERPOLATION`), flat beyond the first and the last point. A
  stated window with one value at each end is therefore a plateau; data that rise, rise.
* Below the window: condensation and incomplete ligand removal add growth, +1 % per kelvin.
* Above the window: dehydroxylation/desorption lower the saturated growth, falling with a
  100 K e-folding; thermal decomposition of the precursor (dose-dependent, not self-limited)
  is the simulator's business and starts at :attr:`Process.decomposition_onset`, the lowest
  onset of the process's precursors (a property of each molecule, with its source, in
  chemicals.yaml; never inferred from the edge of a process's data).

Supercycle processes carry one :class:`CycleKind` per subcycle, with per-subcycle growth
derived from the published supercycle figures (see library.yaml for every fit) and an
optional interaction table: a subcycle that follows a subcycle of another kind grows
``interaction[(kind, previous)]`` times its own rate.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from sim import chemistry

# libyaml's parser: ten times faster than the pure-Python one on the packaged data.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_RANGE_MARGIN_K = 25.0
INTERPOLATION = "inverse_t"
"""How GPC(T) runs between published points: linear in 1/T. Saturated growth is set by
thermally activated surface chemistry (the hydroxyl coverage left by dehydroxylation, the
completeness of ligand exchange), whose natural variable is 1/T; a straight line in 1/T is
the first-order form of any such Arrhenius law across a window, and it is concave in T where
growth rises, as the data of rising processes are. Leave-one-out prefers it to a straight
line in T (median interior error 0.54 % against 0.62 %, :func:`sim.calibration.
compare_interpolations`); the margin is small because the library has few interior points."""
_CONDENSATION_PER_K = 0.01
_DESORPTION_EFOLD_K = 100.0


@dataclass(frozen=True, slots=True)
class Phase:
    """What one cycle kind deposits."""

    name: str
    formula: str
    density: float
    """g/cm3."""
    molar_mass: float
    """g/mol per formula unit."""
    cations: Mapping[str, float]

    def mass_per_area(self, thickness_a: float) -> float:
        """ng/cm2 deposited by ``thickness_a`` Angstrom of this phase."""
        # 1 A = 1e-8 cm; g/cm3 * cm = g/cm2; *1e9 -> ng/cm2
        return thickness_a * 1e-8 * self.density * 1e9

    def cation_moles(self, thickness_a: float) -> dict[str, float]:
        """mol/cm2 of each cation in ``thickness_a`` Angstrom of this phase."""
        formula_units = thickness_a * 1e-8 * self.density / self.molar_mass
        return {el: n * formula_units for el, n in self.cations.items()}


@dataclass(frozen=True, slots=True)
class CycleKind:
    """One repeating unit of a process: a full cycle, or one subcycle of a supercycle."""

    name: str
    chemicals: tuple[str, ...]
    """Dose chemicals in the order the process doses them."""
    phase: Phase
    points: tuple[tuple[float, float], ...]
    """(T degC, saturated growth A per cycle), sorted by T."""
    assumed: bool = False


@dataclass(frozen=True, slots=True)
class Published:
    """One published figure, as a test oracle: simulated growth must reproduce it."""

    t_c: float
    value: float | None
    per: str
    """"cycle" (average per (sub)cycle) or "supercycle"."""
    ratio: Mapping[str, int] | None = None
    value_range: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Process:
    id: str
    film: str
    kind: str
    cycles: Mapping[str, CycleKind]
    window: tuple[float, float] | None
    nominal_t: float
    """The temperature the data were taken at (the middle of the data when several)."""
    published: tuple[Published, ...]
    interaction: Mapping[tuple[str, str], float] = field(default_factory=dict)
    sources: Mapping[str, float] = field(default_factory=dict)
    substrate_limits: Mapping[str, float] = field(default_factory=dict)
    hazards: tuple[str, ...] = ()
    note: str = ""
    origin: str = ""
    """"" for the shipped library (processes.yaml's five reviews), else the user file."""
    source: str = ""
    """Where the growth figures come from (the user file's ``source``)."""

    @property
    def is_supercycle(self) -> bool:
        return len(self.cycles) > 1

    @property
    def chemicals(self) -> frozenset[str]:
        return frozenset(c for k in self.cycles.values() for c in k.chemicals)

    @property
    def valid_range(self) -> tuple[float, float]:
        """The window, or the published data range widened by 25 K each side."""
        if self.window is not None:
            return self.window
        ts = [t for k in self.cycles.values() for t, _ in k.points]
        return (min(ts) - _RANGE_MARGIN_K, max(ts) + _RANGE_MARGIN_K)

    @property
    def decomposition_onset(self) -> float:
        """degC above which a precursor of the process decomposes (CVD-like growth)."""
        return min(
            (o for o in (chemistry.get(c).decomposition_onset_c for c in self.chemicals) if o),
            default=math.inf,
        )

    @property
    def decomposing_precursor(self) -> str | None:
        """The precursor whose onset is :attr:`decomposition_onset` (None: none known)."""
        best: tuple[float, str] | None = None
        for c in sorted(self.chemicals):
            o = chemistry.get(c).decomposition_onset_c
            if o is not None and (best is None or o < best[0]):
                best = (o, c)
        return best[1] if best else None

    def in_window(self, t_c: float) -> bool:
        lo, hi = self.valid_range
        return lo <= t_c <= hi

    def gpc(self, t_c: float, kind: str | None = None) -> float:
        """Saturated growth per cycle (A) of ``kind`` (default: the only kind) at ``t_c``."""
        if kind is None:
            if self.is_supercycle:
                msg = f"{self.id} is a supercycle process: name the subcycle"
                raise ValueError(msg)
            kind = next(iter(self.cycles))
        return _gpc_curve(self.cycles[kind].points, self.valid_range, t_c)

    def sequence_growth(self, sequence: Sequence[str], t_c: float) -> list[float]:
        """Saturated growth (A) of each subcycle of a repeating ``sequence`` of kinds.

        The sequence is taken as periodic: its first subcycle follows its last, as it does
        from the second supercycle on.
        """
        out: list[float] = []
        n = len(sequence)
        for i, kind in enumerate(sequence):
            g = self.gpc(t_c, kind)
            prev = sequence[i - 1] if n > 1 else kind
            if prev != kind:
                g *= self.interaction.get((kind, prev), 1.0)
            out.append(g)
        return out


def interpolate(points: Sequence[tuple[float, float]], t_c: float, scheme: str) -> float:
    """Growth between published points: ``"linear"`` in T or ``"inverse_t"`` (linear in
    1/T); flat beyond the first and the last point."""
    if t_c <= points[0][0]:
        return points[0][1]
    if t_c >= points[-1][0]:
        return points[-1][1]
    for (t0, g0), (t1, g1) in itertools.pairwise(points):
        if t0 <= t_c <= t1:
            if scheme == "inverse_t":
                x0, x1, x = (1.0 / (t + 273.15) for t in (t0, t1, t_c))
            else:
                x0, x1, x = t0, t1, t_c
            return g0 + (g1 - g0) * (x - x0) / (x1 - x0)
    raise AssertionError("unreachable: points are sorted")


def _gpc_curve(
    points: Sequence[tuple[float, float]], valid: tuple[float, float], t_c: float
) -> float:
    lo, hi = valid
    if t_c < lo:
        return interpolate(points, lo, INTERPOLATION) * (1.0 + _CONDENSATION_PER_K * (lo - t_c))
    if t_c > hi:
        return interpolate(points, hi, INTERPOLATION) * math.exp(-(t_c - hi) / _DESORPTION_EFOLD_K)
    return interpolate(points, t_c, INTERPOLATION)


def _read(name: str) -> Any:
    text = resources.files("sim.data").joinpath(name).read_text(encoding="utf-8")
    return yaml.load(text, Loader=_LOADER)


@cache
def phases() -> dict[str, Phase]:
    from sim import userdata

    raw = {**_read("library.yaml")["phases"], **userdata.phases()}
    return {
        name: Phase(
            name=name,
            formula=str(p["formula"]),
            density=float(p["density"]),
            molar_mass=float(p["molar_mass"]),
            cations={k: float(v) for k, v in p["cations"].items()},
        )
        for name, p in raw.items()
    }


def _points(raw: Iterable[Mapping[str, float]], key: str) -> tuple[tuple[float, float], ...]:
    return tuple(sorted((float(p["T"]), float(p[key])) for p in raw))


def _build(spec: Mapping[str, Any], params: Mapping[str, Any]) -> Process:
    ph = phases()
    pid = str(spec["id"])
    published: list[Published] = []
    cycles: dict[str, CycleKind] = {}
    window = tuple(float(x) for x in spec["window"]) if "window" in spec else None
    if "subcycles" in spec:
        for kname, chems in spec["subcycles"].items():
            kp = params["cycles"][kname]
            cycles[kname] = CycleKind(
                name=kname,
                chemicals=tuple(chems),
                phase=ph[kp["phase"]],
                points=_points(kp["gpc"], "gpc"),
            )
        ratio_default = params.get("check_ratio")
        data_ts = [float(p["T"]) for p in spec.get("gpc", ())]
        t_nom = float(spec.get("T", params.get("nominal_T", sum(data_ts) / max(len(data_ts), 1))))
        for p in spec.get("gpc_vs_ratio", ()):
            published.append(
                Published(t_c=t_nom, value=float(p["value"]), per=p["per"], ratio=p["ratio"])
            )
        for p in spec.get("gpc", ()):
            published.append(
                Published(
                    t_c=float(p["T"]), value=float(p["value"]), per="cycle", ratio=ratio_default
                )
            )
        if "gpc_value" in spec:
            published.append(
                Published(
                    t_c=t_nom, value=float(spec["gpc_value"]), per="cycle", ratio=ratio_default
                )
            )
        if "gpc_range" in spec:
            lo, hi = (float(x) for x in spec["gpc_range"])
            for ratio in params["range_ratios"]:
                published.append(
                    Published(t_c=t_nom, value=None, per="cycle", ratio=ratio, value_range=(lo, hi))
                )
    else:
        if "gpc" in spec:
            pts = _points(spec["gpc"], "value")
            assumed = False
        else:
            pts = _points(params["assumed_gpc"], "gpc")
            assumed = True
        cycles[pid] = CycleKind(
            name=pid,
            chemicals=tuple(spec["half_reactions"]),
            phase=ph[params["phase"]],
            points=pts,
            assumed=assumed,
        )
        for t, v in pts if not assumed else ():
            published.append(Published(t_c=t, value=v, per="cycle"))
        t_nom = float(spec.get("T", sum(t for t, _ in pts) / len(pts)))
    interaction: dict[tuple[str, str], float] = {}
    for key, factor in params.get("interaction", {}).items():
        kind, prev = key.split("|")
        interaction[(kind, prev)] = float(factor)
    limits = {k: float(v) for k, v in spec.get("substrate_limit", {}).items()}
    return Process(
        id=pid,
        film=str(spec["film"]),
        kind=str(spec["kind"]),
        cycles=cycles,
        window=(window[0], window[1]) if window else None,
        nominal_t=t_nom,
        published=tuple(published),
        interaction=interaction,
        sources={k: float(v["T"]) for k, v in spec.get("sources", {}).items()},
        substrate_limits=limits,
        hazards=tuple(spec.get("hazards", ())),
        note=str(spec.get("note", "")),
        origin=str(spec.get("origin", "")),
        source=str(spec.get("source", "")),
    )


@cache
def processes() -> dict[str, Process]:
    """Every process in the library, by id."""
    from sim import userdata

    data = _read("processes.yaml")
    params = _read("library.yaml")["processes"]
    out = {str(p["id"]): _build(p, params[p["id"]]) for p in data["processes"]}
    for spec, prm in userdata.processes():  # a lab's own, replacing shipped ones by id
        out[str(spec["id"])] = _build(spec, prm)
    return out


def shipped_spec(pid: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A shipped process's processes.yaml entry and library.yaml parameters (copies)."""
    for p in _read("processes.yaml")["processes"]:
        if p["id"] == pid:
            return dict(p), dict(_read("library.yaml")["processes"][pid])
    return None


@cache
def source_temperatures() -> dict[str, float]:
    """Sublimation/evaporation temperatures the papers use, degC (a lab's own source_T for
    a chemical replaces the papers')."""
    from sim import userdata

    out = {k: float(v) for k, v in _read("processes.yaml")["source_temperatures"].items()}
    for name, spec in userdata.chemicals().items():
        if "source_T" in spec:
            out[name] = float(spec["source_T"])
    return out


@cache
def substrate_limits() -> dict[str, float]:
    """Maximum temperature of each substrate the papers coat, degC (where they give one)."""
    raw = _read("processes.yaml")["substrate_limits"]
    return {k: float(v["max_T"]) for k, v in raw.items() if "max_T" in v}


SUBSTRATE_FORM_WORDS = frozenset(
    {
        "foil",
        "foils",
        "metal",
        "metals",
        "metallic",
        "anode",
        "anodes",
        "electrode",
        "electrodes",
        "sheet",
        "sheets",
        "disc",
        "discs",
        "disk",
        "disks",
        "chip",
        "chips",
        "ribbon",
        "ribbons",
        "strip",
        "strips",
        "film",
        "films",
        "wafer",
        "wafers",
        "substrate",
        "substrates",
        "piece",
        "pieces",
        "plate",
        "plates",
        "coupon",
        "coupons",
    }
)
"""Words that name a form, not a material: ``Li metal anode`` and ``Li foil`` are Li-metal."""


def substrate_words(name: str) -> list[str]:
    """``name``'s words after NFKC (fullwidth ``Ｌｉ`` is ``Li``) and case folding; every run
    of characters other than letters and digits separates words."""
    return re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", name).casefold())


def fold_substrate(name: str) -> str:
    """The spelling-free key of a substrate name: ``li_metal``, ``Li-Metal``, ``LI METAL``
    and ``Li-metal`` all fold to ``limetal``."""
    return "".join(substrate_words(name))


@cache
def substrate_vocabulary() -> dict[str, str]:
    """Folded spelling -> canonical name, for every substrate the library names and every
    alias it gives (``lithium`` -> Li-metal). An alias naming two substrates is a data
    error, raised here rather than matching one of them by accident."""
    raw = _read("processes.yaml")["substrate_limits"]
    out: dict[str, str] = {}
    for canon, spec in raw.items():
        for spelling in (canon, *spec.get("aliases", ())):
            key = fold_substrate(str(spelling))
            if out.get(key, canon) != canon:
                msg = f"substrate spelling {spelling!r} names both {out[key]} and {canon}"
                raise ValueError(msg)
            out[key] = str(canon)
    return out


def match_substrate(name: str) -> str | None:
    """The canonical substrate ``name`` spells, or None when the library does not know it."""
    vocab = substrate_vocabulary()
    words = substrate_words(name)
    material = [w for w in words if w not in SUBSTRATE_FORM_WORDS]
    for spelt in ("".join(words), "".join(material)):
        key = spelt
        # Form words written without a separator ("lithiummetal", "LiFoil") end the key.
        while key and key not in vocab:
            form = next((f for f in SUBSTRATE_FORM_WORDS if key.endswith(f)), None)
            if form is None:
                break
            key = key[: -len(form)]
        if key and key in vocab:
            return vocab[key]
    return None


def substrate_near_misses(name: str, *, limited_only: bool = False) -> list[str]:
    """Canonical substrates ``name`` is probably a misspelling of (closest first), or whose
    name or alias is one of its words (``Li ribbon``: Li-metal). ``limited_only``: only
    those with a temperature limit."""
    vocab = substrate_vocabulary()
    if limited_only:
        limits = substrate_limits()
        vocab = {k: v for k, v in vocab.items() if v in limits}
    words = substrate_words(name)
    out = [vocab[w] for w in words if w in vocab]
    close = difflib.get_close_matches(fold_substrate(name), list(vocab), n=3, cutoff=0.75)
    out += [vocab[k] for k in close]
    return list(dict.fromkeys(out))


def find_cycle(chemicals: Iterable[str]) -> tuple[Process, str] | None:
    """The process and cycle kind whose dose chemicals are exactly ``chemicals``.

    Whole-cycle processes win over subcycles of supercycle processes, so TMA + H2O is
    Al2O3-TMA-H2O, not the Al2O3 subcycle of LiAlOx.
    """
    want = frozenset(chemicals)
    fallback: tuple[Process, str] | None = None
    for proc in processes().values():
        for kind in proc.cycles.values():
            if frozenset(kind.chemicals) == want:
                if not proc.is_supercycle:
                    return proc, kind.name
                if fallback is None:
                    fallback = (proc, kind.name)
    return fallback


def find_supercycle(
    subcycles: Mapping[str, Iterable[str]],
) -> tuple[Process, dict[str, str]] | None:
    """The supercycle process whose subcycles dose exactly these chemical sets.

    Returns the process and a map from the caller's subcycle names to the library's.
    """
    want = {name: frozenset(chems) for name, chems in subcycles.items()}
    for proc in processes().values():
        if not proc.is_supercycle or len(proc.cycles) != len(want):
            continue
        mapping: dict[str, str] = {}
        for name, chems in want.items():
            for kind in proc.cycles.values():
                if frozenset(kind.chemicals) == chems and kind.name not in mapping.values():
                    mapping[name] = kind.name
                    break
        if len(mapping) == len(want):
            return proc, mapping
    return None
