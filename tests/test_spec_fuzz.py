"""The spec loader, fuzzed: whatever the YAML, loading and validating either succeeds or raises
SpecError with a readable message, never a KeyError, TypeError, RecursionError, a pydantic or a
YAML error leaking (issue 16)."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_etl.exceptions import SpecError
from agent_etl.spec import Pipeline

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = yaml.safe_load((ROOT / "examples/quickstart/pipeline.yaml").read_text())
SMALL = {
    "version": 1, "name": "small",
    "connections": {"db": {"url": "postgresql://u@127.0.0.1:5432/test"}},
    "extract": {"rows": {"tool": "csv", "path": "in.csv"}},
    "transform": [{"name": "kept", "input": "rows", "tool": "filter", "where": "x > 1"}],
    "quality": [{"input": "kept", "checks": [{"not_null": ["x"]}], "on_failure": "fail"}],
    "load": {"out": {"input": "kept", "tool": "postgres", "connection": "db", "table": "t"}},
}
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def load(text: str, base_dir: Path) -> None:
    """The public path `agent-etl validate` takes: parse, interpolate, validate, check graph and tools."""
    try:
        Pipeline.from_text(text, source="fuzz.yaml", base_dir=base_dir, variables={"V": "1"})
    except SpecError as e:
        message = str(e)
        assert isinstance(message, str) and message.strip()
        assert "Traceback" not in message
        assert e.problems and all(isinstance(p.message, str) and p.message for p in e.problems)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.dates(), st.datetimes(),
    st.text(max_size=30), st.text(min_size=2000, max_size=5000, alphabet="xyz\u00e9\u4e2d"),
    st.sampled_from(["", "~", "${V}", "${", "${}", "${file:}", "${UNSET_X}", "${V:-}", "yes", "0x1f", ".nan",
                     "csv", "filter", "sql", "postgres", "rows", "kept", "replace", "quarantine"]),
)
keys = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans(),
                 st.sampled_from(["version", "name", "extract", "transform", "load", "quality", "tool",
                                  "input", "path", "connection", "connections", "defaults", "checks"]))
trees = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=5),
                                                    st.dictionaries(keys, kids, max_size=5)), max_leaves=30)


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text(tmp_path_factory, text):
    load(text, tmp_path_factory.getbasetemp())


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decoded_leniently(tmp_path_factory, raw):
    load(raw.decode("utf-8", errors="replace"), tmp_path_factory.getbasetemp())


@FUZZ
@given(trees)
def test_yaml_built_from_arbitrary_structures(tmp_path_factory, tree):
    load(yaml.safe_dump(tree, allow_unicode=True), tmp_path_factory.getbasetemp())
    load(yaml.safe_dump({"version": 1, "name": "n", "extract": tree}), tmp_path_factory.getbasetemp())


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _parent(doc, path):
    for p in path[:-1]:
        doc = doc[p]
    return doc


odd_refs = st.sampled_from([
    "${}", "${ }", "${:-}", "${file:}", "${file:missing.txt}", "${file:.}", "${file:/}", "${file:/nonexistent/x}",
    "${file:../../../../etc/shadow}", "${file:\x00}", "${V", "${${V}}", "$${V}", "${V:-${V}}", "${file:${V}}",
    "${UNSET_FUZZ_VAR}", "${1abc}", "${a-b}", "${V:-x}${V}", "postgresql://u:pw@h/db", "${\u00e9}", "${V}" * 500,
])
other = st.one_of(scalars, odd_refs, trees)


@st.composite
def mutated(draw):
    doc = copy.deepcopy(draw(st.sampled_from([QUICKSTART, SMALL])))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        action = draw(st.sampled_from(["drop", "replace", "ref", "unknown", "collide", "cycle", "self"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(other)
        elif action == "ref":
            parent[path[-1]] = draw(odd_refs)
        elif action == "unknown" and isinstance(parent, dict):
            parent[draw(keys)] = draw(other)
        elif action in ("collide", "cycle", "self"):
            names = list(doc.get("extract") or {}) if isinstance(doc.get("extract"), dict) else []
            steps = [t for t in doc.get("transform") or [] if isinstance(t, dict)] if isinstance(
                doc.get("transform"), list) else []
            if not names or not steps:
                continue
            step = draw(st.sampled_from(steps))
            if action == "collide":
                step["name"] = draw(st.sampled_from(names + [s.get("name") for s in steps]))
            elif action == "self":
                step["input"] = step.get("name")
            else:
                other_step = draw(st.sampled_from(steps))
                step["input"], other_step["input"] = other_step.get("name"), step.get("name")
    return doc


@settings(FUZZ, max_examples=300)
@given(mutated())
def test_mutations_of_valid_pipelines(tmp_path_factory, doc):
    load(yaml.safe_dump(doc, allow_unicode=True), tmp_path_factory.getbasetemp())


def test_the_seeds_are_valid(tmp_path):
    Pipeline.from_text(yaml.safe_dump(SMALL), base_dir=tmp_path)
    Pipeline.from_text(yaml.safe_dump(QUICKSTART), base_dir=tmp_path, variables={})


# --- regressions found by the fuzzer, as plain tests -------------------------------------------

def _refused(text: str, tmp_path: Path) -> str:
    try:
        Pipeline.from_text(text, base_dir=tmp_path)
    except SpecError as e:
        return str(e)
    raise AssertionError("expected a SpecError")


def test_alias_bomb_is_refused_with_our_error(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    assert "expands to more than" in _refused("\n".join(lines), tmp_path)


def test_deep_nesting_is_refused_with_our_error(tmp_path):
    assert "nested too deeply" in _refused("x: " + "[" * 5000 + "]" * 5000, tmp_path)
    assert "nested too deeply" in _refused("x: " + "{a: " * 3000 + "1" + "}" * 3000, tmp_path)


def test_nan_and_inf_are_plain_values(tmp_path):
    _refused(yaml.safe_dump({"version": float("nan"), "name": float("inf"), "extract": {}}), tmp_path)
    _refused(yaml.safe_dump({"version": 1, "name": dt.date(2020, 1, 1), "extract": {None: 1, 3: []}}), tmp_path)


def test_file_reference_that_cannot_be_a_path_is_our_error(tmp_path):
    (tmp_path / "blob").write_bytes(b"\xff\xfe\x00binary")
    for ref in ("${file:a\x00b}", "${file:~nosuchuser_fuzz/x}", "${file:blob}", "${file:}", "${file:missing}"):
        text = yaml.safe_dump({"version": 1, "name": "n", "connections": {"c": {"url": ref}},
                               "extract": {"r": {"tool": "csv", "path": "x.csv"}}})
        assert "cannot read" in _refused(text, tmp_path)
