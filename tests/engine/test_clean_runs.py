"""Zero false alarms: every recipe in recipes/ runs clean, sensor noise on, and neither the
per-pulse diagnostics nor anything else raises a warning.

CI runs each recipe for CI_UNITS units of main (stopped there by the operator API, as a
person would); ``pytest --campaign`` runs 1,000 cycles of each (the recipe's cycle count
parameter scaled up where it plans fewer). New recipes are covered as they are added.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from aldctl.engine.events import Alarm, UnitDone
from aldctl.engine.runner import RunResult
from aldctl.session import prepare
from tests.conftest import RECIPES
from tests.engine.conftest import Harness

Run = Callable[..., tuple[RunResult, Harness]]
CI_UNITS = 30
CAMPAIGN_CYCLES = 1000


def _recipes() -> list[Path]:
    # Hidden files are scratch copies (the tune brute force writes its trials beside the
    # recipe, for its includes), not the library.
    return sorted(p for p in RECIPES.rglob("*.yaml") if not p.name.startswith("."))


def _scale(path: Path, cycles: int) -> tuple[str, ...]:
    """``--set`` overrides that make the recipe run at least ``cycles`` units of main:
    every integer parameter whose name says it counts cycles, scaled alike."""
    p = prepare(path, None)
    units = p.compiled.schedule.units
    if units >= cycles:
        return ()
    factor = math.ceil(cycles / max(1, units))
    sets = []
    for name, raw in p.loaded.recipe.params.items():
        value = raw.raw if hasattr(raw, "raw") else raw
        if isinstance(value, int) and "cycle" in name.lower():
            sets.append(f"{name}={value * factor}")
    return tuple(sets)


@pytest.mark.parametrize("recipe", _recipes(), ids=lambda p: p.stem)
def test_a_clean_run_raises_no_alarm(sim_run: Run, campaign: bool, recipe: Path) -> None:
    sets = _scale(recipe, CAMPAIGN_CYCLES) if campaign else ()

    async def stop_early(h: Harness) -> None:
        await h.until(lambda e: isinstance(e, UnitDone) and e.index == CI_UNITS - 1)
        h.control.stop()

    seed = sum(recipe.stem.encode()) % 1000
    result, h = sim_run(recipe, sets=sets, seed=seed, script=None if campaign else stop_early)
    alarms = [f"{e.severity}: {e.source}: {e.message}" for e in h.events if isinstance(e, Alarm)]
    assert result.outcome in ("complete", "stopped"), result.reason
    assert alarms == []
    assert result.warnings == []
    if campaign:
        assert result.units_done >= CAMPAIGN_CYCLES
        print(f"{recipe.stem}: {result.units_done} units, {result.cycles_completed} cycles clean")
