"""Surface chemistry of a simulated reactor: which cycle kinds can grow, through which
surface states, at what rate and with what mass and precursor cost.

A cycle kind doses chemicals c_0 .. c_{n-1} in order (TMA, H2O; or LiOtBu, H2O, TMP, H2O).
The surface is a vector of fractions over states: ``ready`` (the hydroxylated surface every
kind starts from) and, per kind, the intermediate states after each prefix of its sequence
("TMA", "LiOtBu>H2O", ...). Kinds that share a prefix share its state (a trie), so TMA
followed by either H2O or O2 plasma is one "TMA" state. Half-reaction t converts its
``from`` state into its ``to`` state (the last one back to ``ready``, closing one cycle of its
kind) at the per-site rate of simulation.md 3.3, generalised to n steps:

    dx_from/dt = -k_t x_from,   k_t = beta_t(T) (v/4) p_c / (kB T) / n_t

with ``n_t`` the molecules the half-reaction consumes per m2 per cycle (1/n_t is the
"site area"). For two steps this is exactly ``dtheta/dt = k_A (1 - theta) - k_B theta``.
A closing half-reaction grows ``GPC_sat(T)`` (:meth:`library.Process.gpc`) per unit of
converted fraction; every half-reaction adds its share of the cycle's areal mass (QCM).

Parameters come from ``data/kinetics.yaml`` (every value marked sourced/derived/assumed
there) and from the process library; nothing here duplicates the library's GPC(T) rules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from sim import chemistry, library
from sim.units import R_J, kelvin

# libyaml's parser where available: much faster than the pure-Python one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class ChemicalKinetics:
    """Kinetic parameters of one chemical (see kinetics.yaml for the meaning of each)."""

    name: str
    role: chemistry.Role
    molar_mass: float
    """g/mol."""
    beta: float
    t_ref_c: float
    ea_kj_mol: float
    ligand_mass: float | None
    """g/mol of the by-product of one ligand exchange (None: unknown)."""
    ligands: float
    released: float
    """Ligands released in the precursor's own dose."""
    per_metal: float
    recombination: float
    status: str

    def beta_at(self, t_c: float) -> float:
        """Sticking probability at ``t_c`` (Arrhenius around ``t_ref_c``)."""
        if self.ea_kj_mol == 0.0:
            return self.beta
        inv = 1.0 / kelvin(t_c) - 1.0 / kelvin(self.t_ref_c)
        return self.beta * math.exp(-self.ea_kj_mol * 1000.0 / R_J * inv)


@dataclass(frozen=True, slots=True)
class Decomposition:
    """Thermal decomposition law shared by all precursors (kinetics.yaml ``decomposition``)."""

    beta_scale: float
    ea_kj_mol: float

    def beta_at(self, t_c: float, onset_c: float) -> float:
        """Decomposition probability per wall collision at ``t_c``; zero up to the onset."""
        if t_c <= onset_c:
            return 0.0
        x = self.ea_kj_mol * 1000.0 / R_J * (1.0 / kelvin(onset_c) - 1.0 / kelvin(t_c))
        return self.beta_scale * math.expm1(x)


@dataclass(frozen=True, slots=True)
class Nucleation:
    """Growth scale of the first cycles on a substrate: ``1 + (factor-1) exp(-n/cycles)``."""

    factor: float
    cycles: float

    def scale(self, n_cycles: float) -> float:
        if self.factor == 1.0:
            return 1.0
        return 1.0 + (self.factor - 1.0) * math.exp(-n_cycles / self.cycles)


def _read() -> Any:
    text = resources.files("sim.data").joinpath("kinetics.yaml").read_text(encoding="utf-8")
    return yaml.load(text, Loader=_LOADER)


@cache
def kinetics() -> dict[str, ChemicalKinetics]:
    """Kinetic parameters of every catalogue chemical that can react (defaults filled in)."""
    raw = _read()
    defaults = raw["defaults"]
    out: dict[str, ChemicalKinetics] = {}
    for name, chem in chemistry.catalogue().items():
        if chem.role is chemistry.Role.GAS:
            continue
        base = dict(defaults[chem.role.value])
        spec = dict(raw["chemicals"].get(name, {}))
        merged = {**base, **spec}
        ligand = merged.get("ligand")
        ligand_mass = float(ligand[1]) if ligand else None
        ligands = float(ligand[2]) if ligand else 0.0
        released = float(merged.get("released", ligands * merged.get("released_fraction", 0.5)))
        out[name] = ChemicalKinetics(
            name=name,
            role=chem.role,
            molar_mass=chem.molar_mass,
            beta=float(merged["beta"]),
            t_ref_c=float(merged.get("t_ref_c", 200.0)),
            ea_kj_mol=float(merged.get("ea_kj_mol", 0.0)),
            ligand_mass=ligand_mass,
            ligands=ligands,
            released=released,
            per_metal=float(merged.get("per_metal", 1.0)),
            recombination=float(merged.get("recombination", 0.0)),
            status=str(merged.get("status", "assumed")),
        )
    return out


@cache
def decomposition() -> Decomposition:
    d = _read()["defaults"]["decomposition"]
    return Decomposition(beta_scale=float(d["beta_scale"]), ea_kj_mol=float(d["ea_kj_mol"]))


@cache
def substrates() -> dict[str, Nucleation]:
    """Nucleation behaviour per substrate name."""
    raw = _read()["substrates"]
    return {
        k: Nucleation(factor=float(v["factor"]), cycles=float(v["cycles"])) for k, v in raw.items()
    }


@cache
def _process_overrides() -> dict[str, dict[str, Any]]:
    return {str(k): dict(v) for k, v in _read()["processes"].items()}


@cache
def _qcm_mass_data() -> dict[str, tuple[float, float]]:
    text = resources.files("sim.data").joinpath("processes.yaml").read_text(encoding="utf-8")
    out: dict[str, tuple[float, float]] = {}
    for p in yaml.load(text, Loader=_LOADER)["processes"]:
        if "qcm_mass_per_cycle_ng_cm2" in p:
            lo, hi = p["qcm_mass_per_cycle_ng_cm2"]
            out[str(p["id"])] = (float(lo), float(hi))
    return out


# --------------------------------------------------------------------------- chemistry


@dataclass(frozen=True, slots=True)
class Kind:
    """One cycle kind the reactor can grow."""

    index: int
    label: str
    """Name used in :class:`Truth` (the library kind name; ``process:kind`` when ambiguous)."""
    process: library.Process
    cycle: library.CycleKind
    first_state: int
    """State reached by the kind's first half-reaction."""
    areal_density: float
    """g/cm3 used for the areal mass per cycle (QCM); the phase density unless data say."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One half-reaction: ``chemical`` turns state ``src`` into state ``dst``."""

    index: int
    chemical: str
    src: int
    dst: int
    kind: int
    """Owning kind (the first kind that put this step in the trie)."""
    step: int
    """Position in the owning kind's sequence."""
    closes: int
    """Index of the kind this step completes, or -1."""
    opens: bool
    """True for a kind's first step (from ``ready``, or from a state that is as good as
    ready: where a shorter kind whose sequence prefixes a longer one has just closed)."""
    reclaims: int = -1
    """For the closing step of a kind whose dose sequence starts with a whole shorter kind's
    (Li3PO4's LiOtBu, H2O, TMP, H2O after Li2O's LiOtBu, H2O): that shorter kind, whose
    growth on the way is taken over by this kind's (so each film is counted once)."""


@dataclass(frozen=True, slots=True)
class Rates:
    """Temperature-dependent per-cycle numbers of a chemistry at one substrate temperature."""

    t_c: float
    gpc_a: tuple[float, ...]
    """Saturated growth per kind, A per cycle."""
    sites_mol_m2: tuple[float, ...]
    """Per transition: molecules consumed per m2 per cycle, in mol."""
    mass_ng_cm2: tuple[float, ...]
    """Per transition: areal mass added per cycle (may be negative for ligand loss)."""
    beta: tuple[float, ...]
    """Per transition: sticking probability."""
    decomposition_beta: Mapping[str, float]
    """Per precursor: decomposition probability per collision (0 below the onset)."""


class Chemistry:
    """The surface chemistry of one reactor: its kinds, states and half-reactions.

    Build it with :func:`select` from the chemicals the reactor can dose.
    """

    def __init__(self, kinds: list[tuple[library.Process, library.CycleKind]]) -> None:
        labels: dict[str, int] = {}
        for _, ck in kinds:
            labels[ck.name] = labels.get(ck.name, 0) + 1
        self.states: list[str] = ["ready"]
        state_of: dict[tuple[str, ...], int] = {(): 0}
        self.transitions: list[Transition] = []
        self.kinds: list[Kind] = []
        self._paths: list[tuple[int, ...]] = []
        """Per kind: the transitions its dose sequence takes (shared steps included)."""
        self.skipped: list[str] = []
        self.ready_like: dict[int, int] = {}
        """States as good as ``ready`` (every kind opens there too), each reached by the
        closing step of a kind whose sequence prefixes a longer kind's: state -> that kind."""
        closing: dict[tuple[str, ...], int] = {}
        order = _prefixes_first(kinds)
        for proc, ck in order:
            seq = ck.chemicals
            # An equal sequence would be ambiguous; so would a shorter one added after a
            # longer one it prefixes (_prefixes_first puts every prefix first).
            if any(other[: len(seq)] == seq for other in closing):
                self.skipped.append(f"{proc.id}:{ck.name}")
                continue
            k_index = len(self.kinds)
            label = ck.name if labels[ck.name] == 1 else f"{proc.id}:{ck.name}"
            first_state = -1
            path: list[int] = []
            reclaims = -1
            for j, chem in enumerate(seq):
                prefix = seq[:j]
                nxt = seq[: j + 1]
                src = state_of[prefix]
                last = j == len(seq) - 1
                existing = [t for t in self.transitions if t.src == src and t.chemical == chem]
                if existing and not last:
                    t0 = existing[0]
                    if t0.closes >= 0 and t0.dst == 0:
                        # A shorter kind closes here (Li2O inside Li3PO4): it still closes,
                        # into a state as good as ready, from which this kind continues.
                        ready_like = len(self.states)
                        self.states.append(">".join(nxt))
                        state_of[nxt] = ready_like
                        self.ready_like[ready_like] = t0.closes
                        t0 = dataclasses.replace(t0, dst=ready_like)
                        self.transitions[t0.index] = t0
                    if t0.closes >= 0:
                        reclaims = t0.closes
                    if j == 0:
                        first_state = t0.dst
                    path.append(t0.index)
                    continue  # shared prefix step, owned by the earlier kind
                if last:
                    dst = 0
                elif nxt in state_of:
                    dst = state_of[nxt]
                else:
                    dst = len(self.states)
                    state_of[nxt] = dst
                    self.states.append(">".join(nxt))
                if j == 0:
                    first_state = dst
                path.append(len(self.transitions))
                self.transitions.append(
                    Transition(
                        index=len(self.transitions),
                        chemical=chem,
                        src=src,
                        dst=dst,
                        kind=k_index,
                        step=j,
                        closes=k_index if last else -1,
                        opens=j == 0,
                        reclaims=reclaims if last else -1,
                    )
                )
            closing[seq] = k_index
            self._paths.append(tuple(path))
            density = ck.phase.density
            qcm = _qcm_mass_data().get(proc.id)
            if qcm is not None and _process_overrides().get(proc.id, {}).get("qcm_mass_from_data"):
                mid = 0.5 * (qcm[0] + qcm[1])
                density = mid / ck.phase.mass_per_area(proc.gpc(proc.nominal_t, ck.name)) * density
            self.kinds.append(
                Kind(
                    index=k_index,
                    label=label,
                    process=proc,
                    cycle=ck,
                    first_state=first_state,
                    areal_density=density,
                )
            )
        # Every kind opens from a ready-like state as it does from ready (what follows a
        # closed Li2O subcycle may be TaOEt5 as well as Li3PO4's TMP): copies of the opening
        # steps, with the same rates (:meth:`rates`).
        self.copy_of: dict[int, int] = {}
        for state in self.ready_like:
            taken = {t.chemical for t in self.transitions if t.src == state}
            for t in list(self.transitions):
                if t.src == 0 and t.chemical not in taken:
                    taken.add(t.chemical)
                    index = len(self.transitions)
                    self.copy_of[index] = t.index
                    self.transitions.append(dataclasses.replace(t, index=index, src=state))
        self.chemicals: frozenset[str] = frozenset(t.chemical for t in self.transitions)
        self.reclaimed: dict[int, int] = {
            t.closes: t.reclaims for t in self.transitions if t.closes >= 0 and t.reclaims >= 0
        }
        """Longer kind -> the shorter kind whose whole dose sequence starts it (Li3PO4 ->
        Li2O): the shorter kind's cycles on the way are the longer kind's first steps."""
        by_cycle = {(k.process.id, k.cycle.name): k.index for k in self.kinds}
        self.priority: list[int] = [
            by_cycle[(p.id, c.name)] for p, c in kinds if (p.id, c.name) in by_cycle
        ]
        """Kind indices in the caller's priority order (the trie is built prefixes first)."""
        self._kin = kinetics()
        # Decomposition: every precursor that can enter the chamber decomposes above its own
        # onset (a property of the molecule, chemicals.yaml), whichever kinds it belongs to;
        # the deposit counts as the film of the first kind the precursor opens.
        self.decomposition_onset_c: dict[str, float] = {}
        self.decomposition_kind: dict[str, int] = {}
        for k in self.kinds:
            for chem in k.cycle.chemicals:
                onset = chemistry.get(chem).decomposition_onset_c
                if self._kin[chem].role is not chemistry.Role.PRECURSOR or onset is None:
                    continue
                self.decomposition_onset_c[chem] = onset
                first = self.decomposition_kind.get(chem)
                if first is None or (
                    self.kinds[first].cycle.chemicals[0] != chem and k.cycle.chemicals[0] == chem
                ):
                    self.decomposition_kind[chem] = k.index
        self._context: dict[tuple[int, int], tuple[library.Process, str, str] | None] = {}
        self._rates_cache: dict[float, Rates] = {}

    @property
    def processes(self) -> list[library.Process]:
        """The library processes the chosen kinds come from, in priority order."""
        out: list[library.Process] = []
        for k in (self.kinds[i] for i in self.priority):
            if k.process not in out:
                out.append(k.process)
        return out

    def kind_by_label(self, label: str) -> Kind:
        for k in self.kinds:
            if k.label == label:
                return k
        msg = f"no cycle kind {label!r}; have {[k.label for k in self.kinds]}"
        raise KeyError(msg)

    def interaction(self, kind: int, previous: int) -> float:
        """Growth factor of ``kind`` right after a cycle of ``previous`` (at the process's
        nominal temperature; see :meth:`multiplier`)."""
        return self.multiplier(kind, previous, previous, self.kinds[kind].process.nominal_t)

    def _supercycle_of(self, kind: int, other: int) -> tuple[library.Process, str, str] | None:
        """The supercycle process whose subcycles are these two kinds' dose sequences."""
        key = (kind, other)
        if key in self._context:
            return self._context[key]
        a, b = self.kinds[kind].cycle.chemicals, self.kinds[other].cycle.chemicals
        found: tuple[library.Process, str, str] | None = None
        if a != b:
            for proc in library.processes().values():
                if not proc.is_supercycle:
                    continue
                ka = next((c.name for c in proc.cycles.values() if c.chemicals == a), None)
                kb = next((c.name for c in proc.cycles.values() if c.chemicals == b), None)
                if ka is not None and kb is not None:
                    found = (proc, ka, kb)
                    break
        self._context[key] = found
        return found

    def multiplier(self, kind: int, context: int, previous: int, t_c: float) -> float:
        """Growth (and site) factor of a cycle of ``kind`` opened at ``t_c``.

        What grows is decided by what has met in the chamber, not by which lines the tool
        has: ``context`` is the last completed cycle of another kind (-1: none), ``previous``
        the last completed cycle. When the two kinds are the subcycles of a supercycle
        process, that process speaks for this cycle: a kind that has no whole-cycle process
        of its own (the Li2O subcycle: 1.0 to 2.6 A/cycle depending on its partner) grows
        that supercycle's subcycle GPC, and right after a switch the supercycle's interaction
        term applies. A kind with a whole-cycle process (TMA/H2O) keeps that process's GPC
        whatever else the recipe or the tool holds. A kind whose whole sequence starts the
        ``context`` kind's (Li2O after Li3PO4) takes up what its first dose takes up on that
        surface: :meth:`prefix_factor`.
        """
        if context < 0 or context == kind:
            return 1.0
        if self.reclaimed.get(context) == kind:
            return self.prefix_factor(kind, context, t_c)
        hit = self._supercycle_of(kind, context)
        if hit is None:
            return 1.0
        proc, ka, kb = hit
        k = self.kinds[kind]
        factor = 1.0
        if k.process.is_supercycle and k.process is not proc:
            base = k.process.gpc(t_c, k.cycle.name)
            if base > 0.0:
                factor = proc.gpc(t_c, ka) / base
        if previous == context:
            factor *= proc.interaction.get((ka, kb), 1.0)
        return factor

    def waits_for_partner(self, kind: int, context: int) -> bool:
        """A cycle of ``kind`` opened after ``context`` grows at its own process's subcycle
        GPC for want of a partner (the first Li2O cycle of a stack, before any TaOEt5 has
        met it): :meth:`partner_factor` corrects it once a partner closes after it."""
        k = self.kinds[kind]
        if not k.process.is_supercycle:
            return False
        if context >= 0 and self.reclaimed.get(context) == kind:
            return False  # the surface it opened on is the longer kind's: prefix_factor
        return context < 0 or context == kind or self._supercycle_of(kind, context) is None

    def prefix_factor(self, kind: int, longer: int, t_c: float) -> float:
        """Growth (and site) factor of a cycle of ``kind`` opened on the surface a cycle of
        ``longer`` left, where ``longer``'s dose sequence starts with ``kind``'s whole one
        (Li2O's LiOtBu, H2O inside Li3PO4's LiOtBu, H2O, TMP, H2O).

        The shared first dose meets the longer kind's surface, so it takes up what it takes
        up in a cycle of that kind: the longer film's metal per cycle (Li3PO4 at 300 degC,
        4.2e-10 mol Li/cm2), not the shorter kind's own (the Li2O subcycle's 1.6 A, 2.1e-9:
        a LiOH-terminated Li2O film's uptake). Both the cycles that go on to the longer kind
        (whose metal is then conserved: the precursor consumed is the metal in the film)
        and a patch that stops as the shorter kind (the water missed TMP) hold that uptake.
        """
        if self.reclaimed.get(longer) != kind:
            return 1.0
        element = chemistry.get(self.kinds[kind].cycle.chemicals[0]).element
        own = self._metal_per_cycle(kind, t_c, element)
        theirs = self._metal_per_cycle(longer, t_c, element)
        if own <= 0.0 or theirs <= 0.0:
            return 1.0
        return theirs / own

    def _metal_per_cycle(self, kind: int, t_c: float, element: str | None) -> float:
        """mol/cm2 of ``element`` one saturated cycle of ``kind`` lays down at ``t_c``
        (0 when its film holds none), as :meth:`rates` counts a precursor's sites."""
        k = self.kinds[kind]
        phase = k.cycle.phase
        if element is None or element not in phase.cations:
            return 0.0
        m_loop = k.process.gpc(t_c, k.cycle.name) * 1e-8 * k.areal_density  # g/cm2
        return m_loop / phase.molar_mass * phase.cations[element]

    def partner_factor(self, kind: int, partner: int, t_c: float) -> float:
        """Growth factor of ``kind``'s cycles that grew with no partner, now that a cycle
        of ``partner`` has followed them: the supercycle they form decides what they were
        (1.0 when the two form none, or when ``kind`` already belongs to that supercycle)."""
        if partner < 0 or partner == kind:
            return 1.0
        hit = self._supercycle_of(kind, partner)
        if hit is None:
            return 1.0
        proc, ka, _kb = hit
        k = self.kinds[kind]
        if not k.process.is_supercycle or k.process is proc:
            return 1.0
        base = k.process.gpc(t_c, k.cycle.name)
        return proc.gpc(t_c, ka) / base if base > 0.0 else 1.0

    def metal_thickness_a(self, kind: int) -> tuple[float, float]:
        """(A of film, ng/cm2 of film) per mol/cm2 of the kind's first precursor's metal."""
        k = self.kinds[kind]
        phase = k.cycle.phase
        nu = self._nu(phase, k.cycle.chemicals[0])
        volume_cm3 = phase.molar_mass / nu / phase.density
        return volume_cm3 * 1e8, phase.molar_mass / nu * 1e9 * k.areal_density / phase.density

    @staticmethod
    def _nu(phase: library.Phase, chem: str) -> float:
        element = chemistry.get(chem).element
        if element is None:
            return 1.0
        return phase.cations.get(element, 1.0)

    def rates(self, t_c: float) -> Rates:
        """Per-cycle numbers at substrate temperature ``t_c`` (cached to 0.01 K)."""
        key = round(t_c, 2)
        hit = self._rates_cache.get(key)
        if hit is not None:
            return hit
        if len(self._rates_cache) > 256:
            self._rates_cache.clear()
        gpc = tuple(k.process.gpc(key, k.cycle.name) for k in self.kinds)
        n_t: list[float] = [0.0] * len(self.transitions)
        m_t: list[float] = [0.0] * len(self.transitions)
        beta: list[float] = [0.0] * len(self.transitions)
        owed = [0.0] * len(self.kinds)
        for k in self.kinds:
            phase = k.cycle.phase
            m_loop = gpc[k.index] * 1e-8 * k.areal_density * 1e9  # ng/cm2 per cycle
            fu_mol_cm2 = m_loop * 1e-9 / phase.molar_mass
            own = [t for t in self.transitions if t.kind == k.index and t.index not in self.copy_of]
            # steps of this kind in sequence order (shared first steps belong to the owner)
            seq = k.cycle.chemicals
            metal_mol_cm2 = 0.0
            precursor_mass = 0.0
            coreactant: list[tuple[Transition, float]] = []
            for j, chem in enumerate(seq):
                kin = self._kin[chem]
                trans = next((t for t in own if t.step == j), None)
                is_precursor = kin.role is chemistry.Role.PRECURSOR
                if is_precursor:
                    nu = self._nu(phase, chem)
                    metal_mol_cm2 = fu_mol_cm2 * nu
                    if kin.ligand_mass is not None:
                        dm = metal_mol_cm2 * (kin.molar_mass - kin.released * kin.ligand_mass)
                    else:
                        dm = metal_mol_cm2 * phase.molar_mass / nu
                    dm_ng = dm * 1e9
                    precursor_mass += dm_ng
                    if trans is not None:
                        n_t[trans.index] = metal_mol_cm2 * 1e4
                        m_t[trans.index] = dm_ng
                        beta[trans.index] = kin.beta_at(key)
                else:
                    per = _process_overrides().get(k.process.id, {}).get("per_metal", {})
                    per_metal = float(per.get(chem, kin.per_metal))
                    n = max(metal_mol_cm2, fu_mol_cm2) * per_metal
                    if trans is not None:
                        n_t[trans.index] = n * 1e4
                        beta[trans.index] = kin.beta_at(key)
                        coreactant.append((trans, n))
            rest = m_loop - precursor_mass
            total_n = sum(n for _, n in coreactant)
            for trans, n in coreactant:
                m_t[trans.index] = rest * n / total_n if total_n > 0 else 0.0
            owed[k.index] = (
                precursor_mass
                - sum(m_t[t] for t in self._paths[k.index] if self.transitions[t].kind == k.index)
                + rest
            )
        # A step shared with another kind adds that kind's mass (the first kind in the trie
        # owns it); the closing step squares the account, so every kind's cycle adds its own
        # areal mass (the QCM reads each film's mass per cycle, not its neighbour's). The
        # steps of a shorter kind closed on the way (Li2O inside Li3PO4) are not squared
        # here: their cycle's mass goes back with its growth when the longer kind takes it
        # over (SurfaceChemistry._reclaim), whatever uptake the surface gave it.
        for k in self.kinds:
            path = self._paths[k.index]
            prefix = self.reclaimed.get(k.index, -1)
            on_the_way = set(self._paths[prefix]) if prefix >= 0 else set()
            shared = [t for t in path if self.transitions[t].kind != k.index]
            if shared:
                m_t[path[-1]] += owed[k.index] - sum(m_t[t] for t in shared if t not in on_the_way)
        for copy, orig in self.copy_of.items():
            n_t[copy], m_t[copy], beta[copy] = n_t[orig], m_t[orig], beta[orig]
        dec = decomposition()
        dec_beta = {
            chem: dec.beta_at(key, onset) for chem, onset in self.decomposition_onset_c.items()
        }
        out = Rates(
            t_c=key,
            gpc_a=gpc,
            sites_mol_m2=tuple(n_t),
            mass_ng_cm2=tuple(m_t),
            beta=tuple(beta),
            decomposition_beta=dec_beta,
        )
        self._rates_cache[key] = out
        return out


def _prefixes_first(
    kinds: list[tuple[library.Process, library.CycleKind]],
) -> list[tuple[library.Process, library.CycleKind]]:
    """``kinds`` in their order, except that a kind whose dose sequence is a proper prefix
    of another's comes right before the first such (Li2O's LiOtBu, H2O before Li3PO4's
    LiOtBu, H2O, TMP, H2O), so the trie can close the shorter one on the way."""
    out: list[tuple[library.Process, library.CycleKind]] = []
    for entry in kinds:
        seq = entry[1].chemicals
        prefixes = [
            e
            for e in kinds
            if len(e[1].chemicals) < len(seq) and seq[: len(e[1].chemicals)] == e[1].chemicals
        ]
        for e in sorted(prefixes, key=lambda e: len(e[1].chemicals)):
            if e not in out:
                out.append(e)
        if entry not in out:
            out.append(entry)
    return out


def select(
    available: Iterable[str], process: str | None = None, processes: Iterable[str] = ()
) -> Chemistry:
    """Choose the cycle kinds a reactor dosing ``available`` chemicals can grow.

    Priority: the ``process`` override (and then ``processes``) in full; then every
    whole-cycle library process whose chemicals are all available, fewest chemicals first,
    then the supercycle processes; then single subcycles of supercycle processes whose
    chemicals are available, in library order (as :func:`library.find_cycle`). A kind whose
    dose sequence equals one already chosen is skipped (``Chemistry.skipped``); one that
    prefixes another closes on the way (:attr:`Chemistry.ready_like`).
    """
    avail = frozenset(available)
    lib = library.processes()
    chosen: list[tuple[library.Process, library.CycleKind]] = []
    seen: set[tuple[str, ...]] = set()

    def add(proc: library.Process, ck: library.CycleKind) -> None:
        if ck.chemicals in seen:
            return
        seen.add(ck.chemicals)
        chosen.append((proc, ck))

    forced = ([process] if process else []) + [p for p in processes if p != process]
    for pid in forced:
        if pid not in lib:
            msg = f"unknown process {pid!r}; the library has {sorted(lib)}"
            raise ValueError(msg)
        for ck in lib[pid].cycles.values():
            add(lib[pid], ck)
    order = {pid: i for i, pid in enumerate(lib)}
    full = [p for p in lib.values() if p.chemicals <= avail]
    # Whole-cycle processes before supercycles: TMA then H2O is Al2O3-TMA-H2O whether or not
    # the tool also has LiOtBu (a supercycle's partner decides its subcycles' growth when
    # they meet: Chemistry.multiplier). Fewest chemicals first: a process that needs one
    # more line (LiPON's N2 plasma after Li3PO4's TMP) does not own the shared first steps.
    full.sort(key=lambda p: (p.is_supercycle, len(p.chemicals), order[p.id]))
    for proc in full:
        for ck in proc.cycles.values():
            add(proc, ck)
    for proc in lib.values():
        if not proc.is_supercycle:
            continue
        for ck in proc.cycles.values():
            if frozenset(ck.chemicals) <= avail:
                add(proc, ck)
    return Chemistry(chosen)
