"""The spec: every problem reported together, each with its YAML line and a hint."""

import pytest

from agent_etl.exceptions import SpecError

GOOD = """\
version: 1
name: good
connections:
  db: {url: "sqlite:///${DB_FILE}"}
extract:
  nums: {tool: numbers, rows: 5}
transform:
  - name: doubled
    input: nums
    tool: double
  - name: again
    input: [doubled]
    tool: double
load:
  out: {input: again, tool: collect, key: k}
"""


def problems(make_pipeline, text, **variables):
    with pytest.raises(SpecError) as e:
        make_pipeline(text, **variables)
    return e.value.problems


def test_good_spec_plans_in_dependency_order(make_pipeline):
    p = make_pipeline(GOOD, DB_FILE="x.db")
    assert [t.name for t in p.tasks] == ["nums", "doubled", "again", "out"]
    assert p.task("again").inputs == ["doubled"]
    assert p.spec.connections["db"].url == "sqlite:///x.db"
    assert p.task("nums").line == 6 and p.task("doubled").line == 8
    assert len(p.branches()) == 1


def test_unset_variable_is_reported_with_its_line(make_pipeline, monkeypatch):
    monkeypatch.delenv("DB_FILE", raising=False)
    (p,) = problems(make_pipeline, GOOD)
    assert "${DB_FILE} is not set" in p.message and p.line == 4 and "--var DB_FILE" in p.hint


def test_variable_default_and_file_reference(make_pipeline, tmp_path, monkeypatch):
    monkeypatch.delenv("DB_FILE", raising=False)
    (tmp_path / "secret.txt").write_text("s3cr3t-value\n")
    p = make_pipeline(GOOD.replace("${DB_FILE}", "${DB_FILE:-d.db}?k=${file:secret.txt}"))
    assert p.spec.connections["db"].url == "sqlite:///d.db?k=s3cr3t-value"
    assert "s3cr3t-value" in p.secrets
    assert "s3cr3t" not in p.fingerprint


def test_environment_is_read_when_the_spec_is_loaded(make_pipeline, monkeypatch):
    monkeypatch.setenv("DB_FILE", "from-env.db")
    assert make_pipeline(GOOD).spec.connections["db"].url == "sqlite:///from-env.db"
    assert make_pipeline(GOOD, DB_FILE="cli.db").spec.connections["db"].url == "sqlite:///cli.db"


def test_all_problems_reported_together(make_pipeline):
    text = """\
version: 1
name: bad
extract:
  nums: {tool: numbers, rowz: 5}
  other: {tool: nosuchtool}
transform:
  - {name: a, input: b, tool: double}
  - {name: b, input: a, tool: double}
  - {name: c, input: ghost, tool: double}
  - {name: nums, input: a, tool: double}
load:
  out: {input: c, tool: colect, key: k}
colour: blue
"""
    ps = problems(make_pipeline, text)
    text_of = "\n".join(str(p) for p in ps)
    by = {p.message.split(" ")[0] + p.message.split(" ")[1]: p for p in ps}
    assert any("unknown key 'rowz'" in p.message and p.line == 4 and "rows" in p.hint for p in ps), text_of
    assert any("unknown extractor 'nosuchtool'" in p.message and p.line == 5 for p in ps), text_of
    assert any(p.message.startswith("cycle: a -> b -> a") or p.message.startswith("cycle: b -> a -> b") for p in ps), text_of
    assert any("'ghost', which is not defined" in p.message and p.line == 9 for p in ps), text_of
    assert any("'nums' is used twice" in p.message and p.line == 10 for p in ps), text_of
    assert any("unknown loader 'colect'" in p.message and "did you mean 'collect'" in p.hint and p.line == 12 for p in ps), text_of
    assert any("unknown key 'colour'" in p.message and p.line == 13 for p in ps), text_of
    assert by  # every problem has a message


def test_malformed_yaml_gives_line(make_pipeline):
    (p,) = problems(make_pipeline, "version: 1\nname: x\nextract:\n  a: {tool: numbers\n  b: 2\n")
    assert p.message.startswith("malformed YAML") and p.line in (4, 5, 6)


def test_duplicate_yaml_keys(make_pipeline):
    (p,) = problems(make_pipeline, "version: 1\nname: x\nextract:\n  a: {tool: numbers}\n  a: {tool: numbers}\n")
    assert "duplicate" in p.message and p.line == 5


def test_missing_required_and_bad_types(make_pipeline):
    ps = problems(make_pipeline, "version: 2\nextract:\n  a: {tool: numbers, rows: many}\n")
    msgs = " | ".join(p.message for p in ps)
    assert "missing required key 'name'" in msgs
    assert any(p.line == 1 and "version" in (p.where or "") for p in ps), msgs
    assert any(p.line == 3 and "rows" in (p.where or "") for p in ps), msgs


def test_load_cannot_be_an_input_and_arity_is_checked(make_pipeline):
    text = """\
version: 1
name: x
extract:
  a: {tool: numbers}
  b: {tool: numbers}
transform:
  - {name: t, input: [a, b], tool: double}
  - {name: u, input: out, tool: double}
load:
  out: {input: t, tool: collect, key: k}
"""
    msgs = [p.message for p in problems(make_pipeline, text)]
    assert any("takes 1 input(s), got 2" in m for m in msgs)
    assert any("'out', which is a load step" in m for m in msgs)


def test_quality_checks_are_validated(make_pipeline, registry):
    from agent_etl.tools.validators.base import Check
    from agent_etl.tools.base import ToolConfig

    class NotNull(Check):
        shorthand = "columns"

        class Config(ToolConfig):
            columns: list[str]

    registry.register("validator", "not_null", NotNull)
    text = """\
version: 1
name: x
extract:
  a: {tool: numbers}
quality:
  - input: a
    checks:
      - not_null: [id]
      - not_nul: [id]
      - not_null: {cols: [id]}
    on_failure: explode
"""
    ps = problems(make_pipeline, text)
    msgs = "\n".join(str(p) for p in ps)
    assert any("unknown quality check 'not_nul'" in p.message and p.line == 9 for p in ps), msgs
    assert any("unknown key 'cols'" in p.message and p.line == 10 for p in ps), msgs
    assert any("on_failure" in (p.where or "") and p.line == 11 for p in ps), msgs


def test_unknown_connection(make_pipeline, registry):
    from agent_etl.tools.base import Extractor, ToolConfig

    class Db(Extractor):
        class Config(ToolConfig):
            connection: str

    registry.register("extractor", "db", Db)
    (p,) = problems(make_pipeline, "version: 1\nname: x\nextract:\n  a: {tool: db, connection: wh}\n")
    assert "connection 'wh', which is not defined" in p.message and p.line == 4
