"""Every recipe in recipes/ (sub-folders too) validates, plans, simulates and runs to
completion on the built-in tool: a new recipe is covered by being there. In CI each runs
one cycle (or supercycle); `pytest --campaign` runs them at their own counts' first 5."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# Hidden files are scratch copies (the tune brute force writes beside the recipe), not recipes.
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if not p.name.startswith("."))
COUNTS = ("cycles", "supercycles", "thickness")


def _params(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text(encoding="utf-8")).get("params") or {})


def test_there_is_a_recipe_for_every_library_process() -> None:
    from sim import library

    covered: set[str] = set()
    for path in RECIPES:
        covered |= set(re.findall(r"Growth data: process (\S+) ", path.read_text()))
    missing = set(library.processes()) - covered
    assert not missing, f"no recipe names these library processes in its header: {missing}"


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(ROOT)) for p in RECIPES])
def test_recipe_validates_plans_simulates_and_runs(
    path: Path, run_cli: Callable[..., Any], tmp_path: Path, campaign: bool
) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Film: "), "a recipe opens with its header (film, chemistry...)"
    for word in ("Chemistry:", "Growth data:", "Not given by the literature, chosen here:"):
        assert word in text, f"header without '{word}'"
    params = _params(path)
    assert "T" in params, "every recipe takes the substrate temperature T"
    count = next((c for c in COUNTS if c in params), None)
    assert count is not None, f"every recipe takes one of {COUNTS}"
    sets = [] if count == "thickness" else ["--set", f"{count}={5 if campaign else 1}"]
    rel = str(path.relative_to(ROOT))
    res = run_cli("validate", rel)  # at its own parameters, a shipped recipe earns no warning
    assert res.code == 0, res.err
    assert "warning" not in res.err, res.err
    res = run_cli("plan", rel, *sets, "--json")
    assert res.code == 0, res.err
    plan = json.loads(res.out)
    assert plan["thickness_nm"], "the library knows what each recipe grows"
    assert all(lp["gpc_basis"] for lp in plan["loops"])
    res = run_cli("simulate", rel, *sets, "--json")
    assert res.code == 0, res.err
    sim = json.loads(res.out)
    assert sim["completed"]
    assert sim["thickness_nm"] > 0
    res = run_cli("run", rel, *sets, "--json", "--data-dir", str(tmp_path))
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["outcome"] == "complete", out
    assert out["thickness_nm"] > 0
