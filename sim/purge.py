"""The purge rule that recipe validation and the simulator share.

After a dose the chamber's gas leaves with the residence time ``tau = V/S``: a purge of
``n`` residence times leaves ``exp(-n)`` of the dose in the gas when the next reactant
arrives, and what that residue grows is not self-limited (CVD). The share of the film it
grows is ``cvd = X exp(-n)``, with ``X`` the dose excess: the gas a saturating dose leaves
beyond what the surface takes, relative to one cycle's uptake.

``X`` was measured on the reactor model of the built-in tool (the ``savannah_like`` chamber)
with the shipped saturating recipe (recipes/al2o3_tma_h2o.yaml, 15 ms TMA / 30 ms H2O at
150 degC): 3.15 % CVD at 5.5 tau and 1.07 % at 6.6 tau give X = 7.7 and 7.9. The default
purge factor is the ``n`` that keeps the CVD share under :data:`CVD_LIMIT`, rounded up to
half a residence time; the simulator's CVD warning fires above the same limit, so a purge
validation accepts is one the simulation does not flag, and the other way round.
"""

from __future__ import annotations

import math

CVD_LIMIT = 0.01
"""Largest share of a film grown with both reactants in the gas that a recipe may have."""
DOSE_EXCESS = 7.8
"""Dose excess of a saturating recipe on the built-in chamber (see the module docstring)."""


def purge_factor(cvd_limit: float = CVD_LIMIT, excess: float = DOSE_EXCESS) -> float:
    """Residence times of purge that keep the CVD share of the film under ``cvd_limit``."""
    return math.log(excess / cvd_limit)


def residual_cvd(n_tau: float, excess: float = DOSE_EXCESS) -> float:
    """Expected CVD share of the film after purges of ``n_tau`` residence times."""
    return min(1.0, excess * math.exp(-n_tau))


DEFAULT_PURGE_FACTOR = math.ceil(2.0 * purge_factor()) / 2.0
"""7.0: what tool configs get unless they state their own (measured) factor."""
