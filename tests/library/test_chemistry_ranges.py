"""Every physical quantity of a chemistry file is range-checked at its own line.

On 0b233ca a vapour point or a growth point at ``T: 0 K`` was an internal error
(ZeroDivisionError, exit 3) on validate, plan and chemicals, and ``source_T: 0 K`` was
blamed on the built-in tool's ``devices.valves``; the file in the user config directory is
read by every command, so one slip there broke aldctl entirely. Generated here: each
quantity of a new chemical, a new process and a supercycle process, replaced by a value
outside its physical range, must be one ``error:`` at that value's own line and column,
with a hint; nothing else may happen (no internal error, no other entry blamed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aldctl import chemfile, yamlsrc
from aldctl.diagnostics import UserError

# Each @NAME@ marks one quantity; its good value is in GOOD.
TEMPLATE = """\
chemicals:
  TEMAHf:
    role: precursor
    state: liquid
    molar_mass: @MASS@
    element: Hf
    source_T: @SOURCE_T@
    vapour: [{T: @VAP_T@, p: @VAP_P@}, {T: 100 degC, p: 0.45 Torr}]
    decomposition: {onset: @ONSET@, from: literature, note: "Hausmann et al. 2002"}
processes:
  HfO2-TEMAHf-H2O:
    film: HfO2
    half_reactions: [TEMAHf, H2O]
    phase: {formula: HfO2, density: @DENSITY@, molar_mass: @PHASE_MASS@, cations: {Hf: @CATIONS@}}
    window: [@WINDOW_LO@, 300 degC]
    gpc: [{T: @GPC_T@, value: @GPC@}]
    substrate_limit: {Li-metal: @LIMIT@}
    source: "our ellipsometry, 2026-11"
  LiAlO-lab:
    film: LiAlOx
    kind: supercycle
    subcycles:
      Li2O: {doses: [LiOtBu, H2O], phase: Li2O, gpc: [{T: @SUB_T@, gpc: @SUB_GPC@}]}
      Al2O3: {doses: [TMA, H2O], phase: Al2O3, gpc: [{T: 225 degC, gpc: 1.0 angstrom}]}
    gpc_vs_ratio: [{ratio: {Li2O: @RATIO@, Al2O3: 3}, value: @SUPER_GPC@}]
    T: @PROC_T@
    interaction: {"Al2O3 after Li2O": @INTERACTION@}
    source: "our ellipsometry, 2026-11"
"""

GOOD = {
    "MASS": "410.9 g/mol",
    "SOURCE_T": "75 degC",
    "VAP_T": "75 degC",
    "VAP_P": "0.1 Torr",
    "ONSET": "300 degC",
    "DENSITY": "9.7 g/cm**3",
    "PHASE_MASS": "210.5 g/mol",
    "CATIONS": "1",
    "WINDOW_LO": "200 degC",
    "GPC_T": "250 degC",
    "GPC": "1.0 angstrom",
    "LIMIT": "150 degC",
    "SUB_T": "225 degC",
    "SUB_GPC": "1.1 angstrom",
    "RATIO": "1",
    "SUPER_GPC": "4.2 angstrom",
    "PROC_T": "225 degC",
    "INTERACTION": "1.5",
}

ABSOLUTE_T = ["0 K", "0.0 K", "-273.15 degC", "-300 degC", "-460 degF", "2500 degC", "1e6 K"]
BAD = {
    "MASS": ["0 g/mol", "-72 g/mol", "0.5 g/mol", "1e6 g/mol"],
    "SOURCE_T": ["0 K", "-273.15 degC", "-150 degC", "600 degC", "1e4 K"],
    "VAP_T": ABSOLUTE_T,
    "VAP_P": ["0 Torr", "-0.1 Torr", "1e7 Torr", "0 Pa"],
    # 1e-9 K overflowed the model's Arrhenius factor (fuzz seed 800, after the first ranges)
    "ONSET": [*ABSOLUTE_T, "1e-9 K", "-20 degC", "1200 degC"],
    "DENSITY": ["0 g/cm**3", "-9.7 g/cm**3", "100 g/cm**3", "1e6 kg/m**3"],
    "PHASE_MASS": ["0 g/mol", "-210 g/mol", "1e6 g/mol"],
    "CATIONS": ["0", "-1", "1e6"],
    "WINDOW_LO": ABSOLUTE_T[:5],  # above 300 degC "low must be below high" is said instead
    "GPC_T": ABSOLUTE_T,
    "GPC": ["0 angstrom", "-1 angstrom", "1 um", "1e3 nm"],
    "LIMIT": ABSOLUTE_T,
    "SUB_T": ABSOLUTE_T,
    "SUB_GPC": ["0 angstrom", "-1.1 angstrom", "1 um"],
    "RATIO": ["0", "-1", "1e6", "1.5"],
    "SUPER_GPC": ["0 angstrom", "-4.2 angstrom", "1 mm"],
    "PROC_T": ABSOLUTE_T,
    "INTERACTION": ["0", "-1.5", "1e6"],
}
assert set(BAD) == set(GOOD)


def _text(**values: str) -> str:
    text = TEMPLATE
    for key, good in GOOD.items():
        text = text.replace(f"@{key}@", values.get(key, good))
    return text


def _where(text: str, key: str) -> tuple[int, int]:
    """1-based line and column of the marker @KEY@ in TEMPLATE, moved by the values
    substituted before it on the same line."""
    for n, line in enumerate(TEMPLATE.splitlines(), 1):
        if f"@{key}@" in line:
            col = line.index(f"@{key}@")
            head = line[:col]
            for k, good in GOOD.items():
                head = head.replace(f"@{k}@", good)
            return n, len(head) + 1
    raise AssertionError(key)


def test_the_template_with_good_values_is_accepted() -> None:
    """The generated test below only means something if the file is right otherwise."""
    user = chemfile.parse(yamlsrc.parse_text(_text(), "lab.yaml"), "lab.yaml")
    assert "TEMAHf" in user.chemicals
    assert [s["id"] for s, _ in user.processes] == ["HfO2-TEMAHf-H2O", "LiAlO-lab"]


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_quantity_out_of_its_physical_range_is_an_error_at_its_own_line(
    data: st.DataObject,
) -> None:
    key = data.draw(st.sampled_from(sorted(BAD)))
    bad = data.draw(st.sampled_from(BAD[key]))
    text = _text(**{key: bad})
    with pytest.raises(UserError) as info:
        chemfile.parse(yamlsrc.parse_text(text, "lab.yaml"), "lab.yaml")
    diags = info.value.diagnostics
    line, col = _where(text, key)
    shown = [d.format() for d in diags]
    assert len(diags) == 1, shown  # one slip, one error: no cascade onto other entries
    d = diags[0]
    assert (d.location.line, d.location.col) == (line, col), shown
    assert d.hint, shown
    assert bad in d.format() or "whole number" in d.format(), shown


def test_a_curve_that_overflows_or_falls_is_refused_at_the_vapour_line() -> None:
    for curve, words in (
        ("{cc: [1000, 2000]}", "10**"),  # 1e990 Torr: 10.0**x overflows
        ("{cc: [8, -2000]}", "rise with temperature"),
        ("{antoine: [8, 1730, 50]}", "pole"),  # C + T = 0 at -50 degC
        ("{antoine: [1.0e+300, 1.0e+300, 1.0e+300]}", "10**"),
    ):
        text = _text().replace(
            "vapour: [{T: 75 degC, p: 0.1 Torr}, {T: 100 degC, p: 0.45 Torr}]",
            f"vapour: {curve}",
        )
        with pytest.raises(UserError) as info:
            chemfile.parse(yamlsrc.parse_text(text, "lab.yaml"), "lab.yaml")
        (d,) = info.value.diagnostics
        assert d.location.line == 8, d.format()
        assert words in d.format(), d.format()


def test_what_a_chemical_raises_when_built_is_located_at_that_chemical(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loader's last line of defence: anything the simulator's formulas raise for one
    entry (a case the range checks did not foresee) is an error at that entry."""
    from sim import chemistry

    real = chemistry.build

    def build(name: str, spec: Any) -> Any:
        if name == "TEMAHf":
            raise ZeroDivisionError("float division by zero")
        return real(name, spec)

    monkeypatch.setattr(chemistry, "build", build)
    with pytest.raises(UserError) as info:
        chemfile.parse(yamlsrc.parse_text(_text(), "lab.yaml"), "lab.yaml")
    (d,) = info.value.diagnostics
    assert (d.location.line, d.location.col) == (2, 3), d.format()
    assert "chemicals.TEMAHf" in d.format()
    assert "ZeroDivisionError" in d.format()


@pytest.mark.parametrize(
    ("point", "where"),
    [
        ("vapour: [{T: 0 K, p: 0.1 Torr}, {T: 100 degC, p: 0.45 Torr}]", "vapour.T"),
        ("source_T: 0 K", "source_T"),
    ],
)
def test_the_default_chemistry_file_at_zero_kelvin_breaks_no_command(
    run_cli: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
    where: str,
) -> None:
    chem = tmp_path / "chemistry.yaml"
    chem.write_text(
        "chemicals:\n  TEMAHf:\n    role: precursor\n    state: liquid\n"
        f"    molar_mass: 410.9 g/mol\n    element: Hf\n    {point}\n"
    )
    monkeypatch.setenv("ALDCTL_CHEMISTRY", str(chem))
    root = Path(__file__).resolve().parents[2]
    recipe = str(root / "recipes" / "al2o3_tma_h2o.yaml")
    for args in (("validate", recipe), ("plan", recipe), ("chemicals",)):
        res = run_cli(*args)
        assert res.code == 2, (args, res.err)
        assert "internal error" not in res.err
        first = res.err.splitlines()[0]
        assert first.startswith(f"{chem}:7:"), (args, first)
        assert f"chemicals.TEMAHf.{where}" in first, first
        assert "hint:" in first, first
        assert "built-in" not in res.err
