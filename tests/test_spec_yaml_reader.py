"""The libyaml reader of pipeline files (agent_etl.spec.yamlfast) gives what ruamel gives, or steps aside.

For every text, `yamlfast.read` either returns None (the caller reads it with ruamel) or the same
data, with the same Python types, and the same line of every key and item as ruamel's round-trip
parse; it never accepts a text ruamel refuses.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agent_etl.spec import Pipeline, yamlfast
from agent_etl.spec.yamlsource import load_yaml

ROOT = Path(__file__).resolve().parents[1]
CORPUS = sorted([*ROOT.glob("examples/**/*.yaml"), *ROOT.glob("tests/bad_inputs/cases/*.yaml")])

SCALARS = [
    "0", "-0", "+0", "00", "007", "1", "-1", "+1", "1_000", "0x1F", "0o17", "0b101", "1e3", "1.5e3", "1.", ".5", "-.5",
    ".inf", "-.inf", ".nan", "1.5", "-1.5", "1.50", "0.0", "12:30", "2026-12-06", "2026-12-06 10:00:00",
    "2026-12-06T10:00:00Z", "true", "True", "TRUE", "tRue", "yes", "no", "on", "off", "y", "null", "Null", "~", "", "<<",
    "=", "a b", "-a", "../x", ".x", "~x", "=x", "<x", "1a", "1.2.3", "'it''s'", '"\\u00e9\\t\\/"', "!!str 1", "! 1",
    "!custom x", "&a 1", "*a", "|\n  lit\n  two\n", ">\n  fold\n  two\n\n  p\n", "|-\n  x\n", "|#c\n  x\n", "[1, 2, a]",
    "{a: 1, b: [x]}", "[]", "{}", "a #c", "a#b", '["x":1]', "[a:b]", "{a:b}", "\t1", "x\u2028y", "https://h/p?a=1&b=2",
    "[a, b", "\"unterminated", "99999999999999999999999",
]
KEYS = ["a", "b", "on", "yes", "1", "true", "null", "'q'", '"d"', "x y", "<<", "~", "[k]", "a"]


def same_or_none(text: str) -> str:
    """'fast' (libyaml's reading equals ruamel's), 'ruamel' (fell back) or 'refused' (both refuse it)."""
    try:
        ref = load_yaml(text, "<t>", fast=False)
    except Exception:  # noqa: BLE001 - a SpecError, or the reference's own failure: either way a refusal
        ref = None
    got = yamlfast.read(text)
    if got is None:
        return "ruamel"
    if ref is None:
        assert not isinstance(got[0], dict), f"libyaml took a text ruamel refuses: {text!r}"
        return "refused"
    data, lines = got
    assert data == ref.data and _types(data) == _types(ref.data), text
    assert lines == ref.lines, text
    return "fast"


def _types(value) -> list[str]:
    if isinstance(value, dict):
        return ["dict", *(t for k, v in value.items() for t in (type(k).__name__, *_types(v)))]
    if isinstance(value, list):
        return ["list", *(t for v in value for t in _types(v))]
    return [type(value).__name__]


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_and_bad_input_reads_as_ruamel_reads_it(path: Path):
    same_or_none(path.read_text())


def test_the_examples_are_read_by_libyaml():
    assert [same_or_none(p.read_text()) for p in ROOT.glob("examples/*/pipeline.yaml")].count("fast") >= 5


@pytest.mark.parametrize("value", SCALARS)
@pytest.mark.parametrize("where", ["value", "item", "key"])
def test_a_tricky_scalar_reads_as_ruamel_reads_it_or_falls_back(value: str, where: str):
    block = "\n  ".join(value.splitlines())
    text = {"value": f"version: 1\nx: {block}\n", "item": f"x:\n- {block}\n- z\n",
            "key": f"x:\n  {block}: 1\n  k: 2\n"}[where]
    same_or_none(text)


def test_zero_reads_as_ruamel_gives_it_to_the_spec():
    # ruamel's own type for 0 (a leading zero) becomes 0.0 in yamlsource; libyaml's reading says the same
    assert yamlfast.read("a: 0\nb: 5\n")[0] == {"a": 0.0, "b": 5}
    assert type(yamlfast.read("a: 0\n")[0]["a"]) is float


def test_mutated_files_and_generated_documents_read_as_ruamel_reads_them():
    rng = random.Random(20261206)
    corpus = [p.read_text() for p in CORPUS]
    seen = {"fast": 0, "ruamel": 0, "refused": 0}
    for i in range(600):
        if i % 2:
            text = "".join(f"{rng.choice(KEYS)}: {(rng.choice(SCALARS).splitlines() or [''])[0]}\n"
                           for _ in range(rng.randint(1, 5)))
        else:
            text = rng.choice(corpus)
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(text) + 1)
                text = text[:at] + rng.choice([" ", "\n", ":", "-", "[", "]", "{", "}", ",", "#", "&", "*", "!", "|", ">",
                                               "'", '"', "%", "?", "0", ".", "\t", "\\", rng.choice(SCALARS)]) + text[at + 1:]
        seen[same_or_none(text)] += 1
    assert seen["fast"] > 100 and seen["ruamel"] > 100  # both paths are exercised


def test_a_pipeline_read_by_libyaml_keeps_the_lines_of_its_problems(tmp_path: Path):
    text = "version: 1\nname: p\nextract:\n  a:\n    tool: csv\n    path: a.csv\n    nosuch: 1\n"
    assert yamlfast.read(text) is not None
    with pytest.raises(Exception) as e:
        Pipeline.from_text(text, base_dir=tmp_path)
    assert "line 7" in str(e.value)
