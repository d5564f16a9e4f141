"""Silent acceptance, class by class, with generated cases: a unit is whole tokens with no
pure-number factor, a substrate is a word of a closed vocabulary (whatever its spelling),
and a closed word of the tool config is one of its words. Each case is either read to the
same value as its plain form or refused with a located error and a hint."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aldctl import units
from aldctl.diagnostics import UserError
from aldctl.units import Kind, UnitError
from sim import library

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "al2o3_tma_h2o.yaml"
EVERY_STEP = ROOT / "tests" / "recipes" / "every_step.yaml"
LAB = ROOT / "config" / "example-lab.yaml"
GEN = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

# Every kind the recipe and config languages read, in several spellings, with its value in
# the kind's canonical unit worked out by hand (not by pint), so "the plain form still
# parses to the same value" is checked against something pint did not compute.
PLAIN: list[tuple[str, Kind, float]] = [
    ("15 ms", Kind.TIME, 0.015),
    ("5 s", Kind.TIME, 5.0),
    ("2 min", Kind.TIME, 120.0),
    ("150 degC", Kind.TEMPERATURE, 150.0),
    ("423.15 K", Kind.TEMPERATURE, 150.0),
    ("2 K", Kind.TEMPERATURE_DELTA, 2.0),
    ("2 degC", Kind.TEMPERATURE_DELTA, 2.0),
    ("5 K/min", Kind.TEMPERATURE_RATE, 5.0),
    ("5 degC/min", Kind.TEMPERATURE_RATE, 5.0),
    ("20 sccm", Kind.FLOW, 20.0),
    ("0.02 L/min", Kind.FLOW, 20.0),
    ("0.5 Torr", Kind.PRESSURE, 0.5),
    ("500 mTorr", Kind.PRESSURE, 0.5),
    ("300 W", Kind.POWER, 300.0),
    ("10 nm", Kind.THICKNESS, 10.0),
    ("0.3 L", Kind.VOLUME, 0.3),
    ("0.8 L/s", Kind.PUMPING_SPEED, 0.8),
    ("25 g", Kind.MASS, 25.0),
    ("0.05 m**2", Kind.AREA, 0.05),
    ("72.09 g/mol", Kind.MOLAR_MASS, 72.09),
    ("3.0 g/cm**3", Kind.DENSITY, 3.0),
    ("1.0 angstrom", Kind.GROWTH, 1.0),
    ("10 %", Kind.FRACTION, 10.0),
    ("10 percent", Kind.FRACTION, 10.0),
    ("500 ppm", Kind.FRACTION, 0.05),
]
# Units pint reads as pure numbers: a percentage, parts per, angles, a constant, a count.
DIMENSIONLESS = ["%", "percent", "ppm", "deg", "degree", "rad", "radian", "turn"]
DIMENSIONLESS += ["cycle", "revolution", "pi", "count", "arcmin", "arcsecond", "permille"]
# Ways to put a factor into an expression: juxtaposed, multiplied, divided, first.
PLACES = ["{u}{d}", "{u} {d}", "{u}*{d}", "{u} * {d}", "{u}/{d}", "{u}/{d}**2", "{d} {u}"]
PLACES += ["{d}*{u}", "({u})*{d}", "{u}*({d})"]


def test_every_junk_word_is_a_pure_number_to_pint() -> None:
    """The premise of the cases below: without the check each of them would have scaled
    the value silently (pint reads each word as a number)."""
    ureg = units.registry()
    for word in DIMENSIONLESS:
        assert not ureg.parse_units(word).dimensionality, word
    # 5 s% was 0.05 s on 0b233ca; 5 s*turn was 31 s.
    assert ureg.Quantity(5, ureg.parse_units("s*turn")).to("s").magnitude > 31


@pytest.mark.parametrize(("text", "kind", "value"), PLAIN)
def test_plain_forms_read_to_their_value(text: str, kind: Kind, value: float) -> None:
    assert units.parse(text, kind) == pytest.approx(value, rel=1e-9)


@GEN
@given(st.sampled_from(PLAIN), st.sampled_from(DIMENSIONLESS), st.sampled_from(PLACES))
def test_a_pure_number_factor_in_any_quantity_is_an_error(
    plain: tuple[str, Kind, float], junk: str, place: str
) -> None:
    text, kind, _ = plain
    number, unit = text.split(" ", 1)
    bad = f"{number} {place.format(u=unit, d=junk)}"
    with pytest.raises(UnitError) as exc:
        units.parse(bad, kind)
    assert exc.value.hint, bad
    # The error names the factor when it is a word of its own ('5 sppm' is one unknown word).
    if kind is not Kind.FRACTION and (place != "{u}{d}" or junk == "%"):
        assert f"'{junk}' is not a unit of {kind.label}" in exc.value.message, bad


@GEN
@given(st.sampled_from(DIMENSIONLESS[3:]), st.sampled_from(["10", "0.5", "100"]))
def test_an_angle_or_a_constant_is_not_a_fraction(junk: str, number: str) -> None:
    with pytest.raises(UnitError, match="is not a fraction"):
        units.parse(f"{number} {junk}", Kind.FRACTION)


_QUANTITY = re.compile(
    r"(?<![\w.$-])(\d+(?:\.\d+)?) (ms|s|min|degC|K|K/min|sccm|Torr|W|g|L|nm|%)(?=\s*(?:[,}\]]|$))"
)


def _quantities(text: str) -> list[tuple[int, re.Match[str]]]:
    """(line number, match) of every quantity written as a value in ``text`` (not in a
    comment, nor in running text such as a description)."""
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        out += [(no, m) for m in _QUANTITY.finditer(code)]
    return out


def _insert(text: str, no: int, m: re.Match[str], junk: str, place: str) -> str:
    lines = text.splitlines(keepends=True)
    line = lines[no - 1]
    bad = f'"{m[1]} {place.format(u=m[2], d=junk)}"'
    lines[no - 1] = line[: m.start()] + bad + line[m.end() :]
    return "".join(lines)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([RECIPE, EVERY_STEP]), st.data())
def test_a_junk_factor_anywhere_in_a_recipe_is_a_located_error(
    tmp_path_factory: pytest.TempPathFactory, source: Path, data: st.DataObject
) -> None:
    from aldctl.recipe.load import load_recipe

    text = source.read_text()
    no, m = data.draw(st.sampled_from(_quantities(text)))
    junk = data.draw(st.sampled_from(DIMENSIONLESS))
    place = data.draw(st.sampled_from(["{u}{d}", "{u} {d}", "{u}/{d}", "{d} {u}"]))
    d = tmp_path_factory.mktemp("r")
    if source == EVERY_STEP:
        (d / "sub.yaml").write_text((source.parent / "sub.yaml").read_text())
    r = d / source.name
    r.write_text(_insert(text, no, m, junk, place))
    with pytest.raises(UserError) as exc:
        load_recipe(r)
    msgs = [x.format() for x in exc.value.diagnostics]
    assert any(x.startswith(f"{r}:") and "(hint: " in x for x in msgs), msgs
    assert not any("internal" in x for x in msgs), msgs


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_a_junk_factor_anywhere_in_a_tool_config_is_an_error_at_its_line(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    from aldctl import config

    text = LAB.read_text()
    no, m = data.draw(st.sampled_from(_quantities(text)))
    junk = data.draw(st.sampled_from(DIMENSIONLESS))
    c = tmp_path_factory.mktemp("c") / "tool.yaml"
    c.write_text(_insert(text, no, m, junk, "{u} {d}"))
    with pytest.raises(UserError) as exc:
        config.load_tool(c)
    msgs = [x.format() for x in exc.value.diagnostics]
    assert any(x.startswith(f"{c}:{no}:") for x in msgs), (no, msgs)


@pytest.mark.parametrize(
    ("value", "junk"),
    [("5 s%", "%"), ("5 s ppm", "ppm"), ("5 s deg", "deg"), ("5 s/%", "%"), ("5 s*turn", "turn")],
)
def test_the_reviews_purges_are_refused(run_cli: Callable[..., Any], value: str, junk: str) -> None:
    """On 0b233ca each was rc 0 and ran 50 ms, 5 us, 87 ms, 500 s and 31 s purges."""
    res = run_cli("validate", str(RECIPE), "--set", f"purge={value}")
    assert res.code == 2, res.err
    assert re.search(
        rf"al2o3_tma_h2o\.yaml:\d+:\d+: error: .*'{re.escape(junk)}' is not a unit of time", res.err
    )
    assert "hint:" in res.err


def test_a_setpoint_with_a_junk_factor_names_it(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    text = EVERY_STEP.read_text()
    (tmp_path / "sub.yaml").write_text((EVERY_STEP.parent / "sub.yaml").read_text())
    for old, new, said in [
        ("walls: 150 degC", 'walls: "150 degC%"', "'%' is not a unit of temperature"),
        ("carrier: 20 sccm", "carrier: 20 sccm ppm", "'ppm' is not a unit of gas flow"),
        ("ozone: 10 %", "ozone: 10 % deg", "is not a fraction"),
    ]:
        r = tmp_path / "r.yaml"
        r.write_text(text.replace(old, new, 1))
        res = run_cli("validate", str(r))
        assert res.code == 2
        assert f"{r}:" in res.err
        assert said in res.err, res.err


# ---------------------------------------------------------------------- substrates

SUBSTRATES = sorted(set(library.substrate_vocabulary().values()))
SPELLINGS = [
    (canon, spelling)
    for canon, spec in library._read("processes.yaml")["substrate_limits"].items()
    for spelling in (canon, *spec.get("aliases", ()))
]
LI_REVIEW = ["lithium metal", "Lithium", "Li", "Li foil", "Li metal anode", "li_metal_anode"]
LI_REVIEW += ["Li-metal (foil)", "Ｌｉ-metal", "li-metal", "Li-Metal", "Li metal", "LI_METAL"]


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@st.composite
def _respelt(draw: st.DrawFn, spelling: str) -> str:
    """``spelling`` as a user may type it: any case, any separators between its words, in
    fullwidth or not, padded, with words naming its form."""
    words = re.findall(r"[^\W_]+", spelling)
    seps = st.sampled_from(["-", " ", "_", "", "  ", " - ", "/", "."])
    out = words[0]
    for w in words[1:]:
        out += draw(seps) + w
    out = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in out)
    if draw(st.booleans()):
        form = draw(st.sampled_from(["foil", "wafer", "(foil)", "anode", "Chips", "substrate"]))
        out = f"{out}{draw(seps) or ' '}{form}"
    if draw(st.booleans()):
        out = _fullwidth(out)
    return draw(st.sampled_from(["", " "])) + out + draw(st.sampled_from(["", " "]))


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(SPELLINGS).flatmap(lambda cs: st.tuples(st.just(cs[0]), _respelt(cs[1]))))
def test_every_spelling_of_every_known_substrate_is_that_substrate(case: tuple[str, str]) -> None:
    canon, spelt = case
    assert library.match_substrate(spelt) == canon, spelt


def _recipe(tmp: Path, material: str, t: str = "250 degC") -> Path:
    r = tmp / "r.yaml"
    text = RECIPE.read_text().replace("T: 150 degC", f"T: {t}")
    r.write_text(text.replace("{material: Si}", f"{{material: {material}}}"))
    return r


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([s for c, s in SPELLINGS if c == "Li-metal"] + LI_REVIEW).flatmap(_respelt))
def test_the_li_metal_limit_holds_for_every_accepted_spelling(
    tmp_path_factory: pytest.TempPathFactory, spelt: str
) -> None:
    from aldctl.session import prepare

    r = _recipe(tmp_path_factory.mktemp("li"), f"'{spelt}'")
    with pytest.raises(UserError) as exc:
        prepare(r, None)
    msgs = [d.format() for d in exc.value.diagnostics]
    assert any("above the Li-metal substrate limit" in m and "150 degC" in m for m in msgs), msgs


@pytest.mark.parametrize("name", LI_REVIEW)
def test_the_reviews_li_spellings_are_refused_at_250_degc(
    tmp_path: Path, run_cli: Callable[..., Any], name: str
) -> None:
    """On 0b233ca the first eight were rc 0 at 250 degC (lithium melts at 180.5 degC)."""
    res = run_cli("validate", str(_recipe(tmp_path, f"'{name}'")))
    assert res.code == 2
    assert "Li-metal substrate limit from the process library, 150 degC" in res.err, res.err


def test_a_declared_max_temperature_lowers_the_library_limit_but_never_raises_it(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    raised = _recipe(tmp_path, "Li-metal, max_temperature: 250 degC")
    res = run_cli("validate", str(raised))
    assert res.code == 2
    assert "Li-metal substrate limit" in res.err, res.err
    lowered = _recipe(tmp_path, "lithium, max_temperature: 100 degC", t="120 degC")
    res = run_cli("validate", str(lowered))
    assert res.code == 2
    assert "max_temperature (Li-metal), 100 degC" in res.err, res.err


@st.composite
def _near_miss(draw: st.DrawFn) -> tuple[str, str]:
    """A one-letter typo of a substrate name long enough for a typo to be recognisable."""
    canon = draw(st.sampled_from([c for c in SUBSTRATES if len(library.fold_substrate(c)) >= 5]))
    i = draw(st.integers(0, len(canon) - 1))
    op = draw(st.sampled_from(["drop", "swap", "insert"]))
    ch = draw(st.sampled_from("aeiouxqz"))
    typo = {
        "drop": canon[:i] + canon[i + 1 :],
        "swap": canon[:i] + ch + canon[i + 1 :],
        "insert": canon[:i] + ch + canon[i:],
    }[op]
    return canon, typo


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(_near_miss())
def test_a_near_miss_is_an_error_with_did_you_mean(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, str]
) -> None:
    from aldctl.recipe.load import load_recipe

    _, typo = case
    if library.match_substrate(typo) is not None:  # the typo spelt another name or an alias
        return
    r = _recipe(tmp_path_factory.mktemp("nm"), f"'{typo}'", t="100 degC")
    with pytest.raises(UserError) as exc:
        load_recipe(r)
    msgs = [d.format() for d in exc.value.diagnostics]
    assert any(
        m.startswith(f"{r}:") and "unknown substrate material" in m and "did you mean '" in m
        for m in msgs
    ), msgs


def test_an_unknown_material_must_be_declared_with_its_limit(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    res = run_cli("validate", str(_recipe(tmp_path, "glass", t="100 degC")))
    assert res.code == 2
    assert "unknown substrate material 'glass'" in res.err
    assert "max_temperature" in res.err
    declared = _recipe(tmp_path, "glass, max_temperature: 300 degC", t="250 degC")
    assert run_cli("validate", str(declared)).code == 0
    over = _recipe(tmp_path, "glass, max_temperature: 200 degC", t="250 degC")
    res = run_cli("validate", str(over))
    assert res.code == 2
    assert "max_temperature (glass), 200 degC" in res.err, res.err
    # A declaration does not turn lithium into another material.
    res = run_cli("validate", str(_recipe(tmp_path, "Li ribbon2, max_temperature: 300 degC")))
    assert res.code == 2
    assert "Li-metal" in res.err, res.err


def test_the_simulators_substrates_are_in_the_vocabulary() -> None:
    from sim import kinetics

    for name in kinetics.substrates():
        assert library.match_substrate(name) == name
    assert unicodedata.normalize("NFKC", "Ｌｉ") == "Li"


# ---------------------------------------------------------------------- tool-config words

YAML_BOOLEANS = ["no", "NO", "false", "yes", "on", "n"]


@st.composite
def _any_case(draw: st.DrawFn, word: str) -> str:
    out = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in word)
    return _fullwidth(out) if draw(st.booleans()) else out


def _load_lab(tmp: Path, old: str, new: str) -> Any:
    from aldctl import config

    c = tmp / "tool.yaml"
    text = LAB.read_text()
    assert old in text
    c.write_text(text.replace(old, new, 1))
    return config.load_tool(c)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["hold", "off"]).flatmap(lambda w: st.tuples(st.just(w), _any_case(w))))
def test_heaters_on_safe_state_in_any_case(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, str]
) -> None:
    """``off`` unquoted as the README writes it, ``Hold`` as well as ``Off``."""
    word, spelt = case
    tool = _load_lab(
        tmp_path_factory.mktemp("c"),
        "heaters_on_safe_state: hold",
        f"heaters_on_safe_state: {spelt}",
    )
    assert tool.safety.heaters_on_safe_state == word


@pytest.mark.parametrize("quote", ["", "'"])
@pytest.mark.parametrize("word", YAML_BOOLEANS)
def test_a_yaml_boolean_is_not_a_safe_state(tmp_path: Path, word: str, quote: str) -> None:
    """On 0b233ca ``no`` and ``false`` silently meant off."""
    with pytest.raises(UserError) as exc:
        _load_lab(
            tmp_path, "heaters_on_safe_state: hold", f"heaters_on_safe_state: {quote}{word}{quote}"
        )
    (d,) = exc.value.diagnostics
    assert str(d.location).startswith(f"{tmp_path / 'tool.yaml'}:109:"), d.format()
    assert d.hint == "write hold or off", d.format()


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(
        [
            ("heaters_on_safe_state: hold", "heaters_on_safe_state: {}", "hold", "off"),
            ("fails: open}", "fails: {}}}", "open", "closed"),
        ]
    ),
    st.data(),
)
def test_a_near_miss_of_a_closed_word_says_did_you_mean(
    tmp_path_factory: pytest.TempPathFactory, field: tuple[str, str, str, str], data: st.DataObject
) -> None:
    old, new, word, other = field
    i = data.draw(st.integers(0, len(word) - 1))
    typo = data.draw(
        st.sampled_from(
            [
                word[:i] + word[i + 1 :],
                word[:i] + "x" + word[i:],
                word[:i] + word[i] * 2 + word[i + 1 :],
            ]
        )
    )
    typo = data.draw(_any_case(typo))
    with pytest.raises(UserError) as exc:
        _load_lab(tmp_path_factory.mktemp("c"), old, new.format(typo))
    (d,) = exc.value.diagnostics
    assert d.hint in (f"did you mean '{word}'?", f"did you mean '{other}'?"), d.format()


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["open", "closed"]).flatmap(lambda w: st.tuples(st.just(w), _any_case(w))))
def test_a_valves_fail_position_in_any_case(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, str]
) -> None:
    from aldctl import config

    word, spelt = case
    if word == "closed":
        # A pump isolation valve that fails closed needs a carrier shut-off; the model
        # alone is what reads the word.
        spec = config.ValveChannel.model_validate({"valve": "valves:15", "fails": spelt})
        assert spec.fails == word
        return
    tool = _load_lab(tmp_path_factory.mktemp("c"), "fails: open}", f"fails: {spelt}}}")
    assert tool.pump_isolation is not None
    assert tool.pump_isolation.fails == word


@pytest.mark.parametrize(
    ("model", "field", "words"),
    [
        ("OperatorSpec", "watchers", ("owner", "group", "any")),
        ("LimitSpec", "action", ("hold", "abort", "warn")),
    ],
)
def test_the_other_closed_words_of_the_config_read_alike(
    model: str, field: str, words: tuple[str, ...]
) -> None:
    from pydantic import ValidationError

    from aldctl import config

    cls = getattr(config, model)
    for word in words:
        assert str(cls.model_validate({field: word.upper()}).model_dump()[field]) == word
        with pytest.raises(ValidationError) as exc:
            cls.model_validate({field: word[:-1] + "x" + word[-1]})
        assert _word_error(exc.value).hint == f"did you mean '{word}'?"
    with pytest.raises(ValidationError) as exc:
        cls.model_validate({field: False})
    assert "YAML boolean" in _word_error(exc.value).message


def _word_error(exc: Any) -> Any:
    from aldctl.config import WordError

    cause = exc.errors()[0]["ctx"]["error"]
    assert isinstance(cause, WordError)
    return cause
