"""The quality gate: a `quality:` group from a real pipeline file applied to a stream of batches."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent_etl.quality.gate import QualityGate
from agent_etl.exceptions import QualityGateError, SpecError, ToolError
from agent_etl.spec import Pipeline
from agent_etl.tools.base import Extractor, ToolConfig
from agent_etl.tools.registry import Registry
from agent_etl.tools.validators.base import Check

N = 1500
BATCH = 128


class Rows(Extractor):
    """Stands in for a source in the pipeline files below; the gate is fed batches directly."""

    class Config(ToolConfig):
        pass


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.register("extractor", "rows", Rows)
    return reg


def pipeline_text(checks: str, on_failure: str) -> str:
    return textwrap.dedent("""\
        version: 1
        name: gate_test
        extract:
          orders:
            tool: rows
        quality:
          - input: orders
            on_failure: {on_failure}
            checks:
        {checks}
        """).format(on_failure=on_failure, checks=textwrap.indent(textwrap.dedent(checks).strip("\n"), "      "))


CHECKS = """
    - not_null: [customer]
    - range: {column: amount, min: 0, max: 100}
    - regex: {column: email, pattern: "[a-z0-9]+@example\\\\.com"}
    - accepted_values: {column: status, values: [paid, open]}
    - unique: [id]
"""
LABELS = ["not_null(customer)", "range(amount)", "regex(email)", "accepted_values(status)", "unique(id)"]


def make_gate(tmp_path: Path, registry, checks: str = CHECKS, on_failure: str = "quarantine") -> QualityGate:
    pipeline = Pipeline.from_text(pipeline_text(checks, on_failure), base_dir=tmp_path, registry=registry)
    (group,) = pipeline.spec.quality
    return QualityGate(group, run_id="r1", home=tmp_path / ".agent-etl", registry=registry)


def line_of(checks: str, needle: str, on_failure: str = "quarantine") -> int:
    lines = pipeline_text(checks, on_failure).splitlines()
    return next(i for i, text in enumerate(lines, start=1) if needle in text)


def make_table(seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(N, dtype=np.int64)
    at = rng.choice(np.arange(1, N), 40, replace=False)
    ids[at] = rng.integers(0, N, 40)
    email = np.char.add(np.char.add("u", rng.integers(0, 99, N).astype(str)), "@example.com")
    email = np.where(rng.random(N) < 0.04, "not-an-email", email)
    return pa.table({
        "id": pa.array(ids),
        "customer": pa.array(rng.integers(0, 300, N), mask=rng.random(N) < 0.03),
        "amount": pa.array(np.round(rng.normal(50, 30, N), 2), mask=rng.random(N) < 0.05),
        "email": pa.array(email, mask=rng.random(N) < 0.03),
        "status": pa.array(rng.choice(np.array(["paid", "open", "void"]), N, p=[0.6, 0.35, 0.05]),
                           mask=rng.random(N) < 0.03),
    })


def expected_failures(df: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per check (labels as columns), computed with pandas."""
    return pd.DataFrame({
        LABELS[0]: df["customer"].isna(),
        LABELS[1]: df["amount"].notna() & ((df["amount"] < 0) | (df["amount"] > 100)),
        LABELS[2]: df["email"].notna() & ~df["email"].fillna("").str.fullmatch(r"[a-z0-9]+@example\.com"),
        LABELS[3]: df["status"].notna() & ~df["status"].isin(["paid", "open"]),
        LABELS[4]: df.duplicated(subset=["id"], keep="first"),
    })


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return make_table()


@pytest.fixture(scope="module")
def expected(table) -> pd.DataFrame:
    exp = expected_failures(table.to_pandas())
    for label in LABELS:
        assert exp[label].sum() > 5, f"the data must hold failures for {label}"
    return exp


def test_quarantine_splits_good_and_bad_rows_with_every_reason(tmp_path, registry, table, expected):
    gate = make_gate(tmp_path, registry)
    out = [gate.validate(b) for b in table.to_batches(max_chunksize=BATCH)]
    report = gate.finish()

    bad = expected.any(axis=1).to_numpy()
    good_ids = pa.concat_tables([pa.Table.from_batches([b]) for b in out if b is not None])
    assert good_ids.num_rows == (~bad).sum()
    assert good_ids.schema == table.schema
    np.testing.assert_array_equal(good_ids["id"].to_numpy(), table["id"].to_numpy()[~bad])

    path = tmp_path / ".agent-etl" / "quarantine" / "r1" / "orders.parquet"
    assert report.quarantine_path == str(path)
    quarantined = pq.read_table(path)
    assert quarantined.num_rows == bad.sum() == report.rows_quarantined
    assert quarantined.column_names == table.column_names + ["_quarantine_reason", "_run_id"]
    assert quarantined.drop_columns(["_quarantine_reason", "_run_id"]).equals(table.filter(pa.array(bad)))
    want = expected[bad].apply(lambda row: "; ".join(label for label in LABELS if row[label]), axis=1)
    assert quarantined["_quarantine_reason"].to_pylist() == want.tolist()
    assert any(";" in r for r in want)  # some rows fail several checks
    assert set(quarantined["_run_id"].to_pylist()) == {"r1"}

    assert report.status == "quarantined"
    assert (report.rows_in, report.rows_passed) == (N, (~bad).sum())
    assert [c.label for c in report.checks] == LABELS
    assert [c.failed_rows for c in report.checks] == [int(expected[label].sum()) for label in LABELS]
    assert all(c.message.startswith(f"{c.failed_rows} rows failed, e.g. row ") for c in report.checks)
    json.dumps(report.to_dict())


def test_a_batch_with_only_bad_rows_yields_none(tmp_path, registry):
    gate = make_gate(tmp_path, registry, "- range: {column: x, min: 0}")
    # the first one yields no rows but the columns, so the steps below know them even if no row passes
    first = gate.validate(pa.record_batch({"x": [-1, -2]}))
    assert first.num_rows == 0 and first.schema.names == ["x"]
    assert gate.validate(pa.record_batch({"x": [-3]})) is None
    assert gate.validate(pa.record_batch({"x": [1, -2, None]})).to_pydict() == {"x": [1, None]}
    report = gate.finish()
    assert (report.rows_in, report.rows_passed, report.rows_quarantined) == (6, 2, 4)


def test_warn_passes_every_row_through_and_counts(tmp_path, registry, table, expected):
    gate = make_gate(tmp_path, registry, on_failure="warn")
    batches = table.to_batches(max_chunksize=BATCH)
    for batch in batches:
        assert gate.validate(batch) is batch
    report = gate.finish()
    assert report.status == "warned"
    assert [c.failed_rows for c in report.checks] == [int(expected[label].sum()) for label in LABELS]
    assert (report.rows_in, report.rows_passed) == (N, int((~expected.any(axis=1)).sum()))
    assert report.rows_quarantined == 0 and report.quarantine_path is None
    assert not (tmp_path / ".agent-etl" / "quarantine").exists()


def test_fail_raises_at_the_first_failing_batch_with_the_report(tmp_path, registry):
    gate = make_gate(tmp_path, registry, on_failure="fail")
    ok = pa.record_batch({"id": [1, 2, 3], "customer": [1, 2, 3], "amount": [5.0, None, 7.0],
                          "email": ["a@example.com", None, "b@example.com"], "status": ["paid", "open", None]})
    bad = pa.record_batch({"id": [4, 2, 5], "customer": [None, 1, 2], "amount": [-3.5, 5.0, 250.0],
                           "email": ["a@example.com", "x", "b@example.com"], "status": ["paid", "open", "void"]})
    assert gate.validate(ok) is ok
    with pytest.raises(QualityGateError) as info:
        gate.validate(bad)
    err = info.value
    assert err.exit_code == 3
    text = str(err)
    assert "'orders'" in text
    assert "range(amount): 2 rows failed, e.g. row 3: -3.5; row 5: 250.0" in text
    assert "not_null(customer): 1 row failed, e.g. row 3: None" in text
    assert "regex(email): 1 row failed, e.g. row 4: 'x'" in text
    assert "accepted_values(status): 1 row failed, e.g. row 5: 'void'" in text
    assert "unique(id): 1 row failed, e.g. row 4: 2" in text
    assert err.report.status == "failed" and err.report.rows_in == 6 and err.report.rows_passed == 3
    gate.close()


def test_fail_mode_with_clean_data_passes(tmp_path, registry):
    gate = make_gate(tmp_path, registry, "- not_null: [x]\n- unique: [x]", on_failure="fail")
    for start in range(0, 1000, 100):
        gate.validate(pa.record_batch({"x": pa.array(range(start, start + 100))}))
    report = gate.finish()
    assert report.status == "passed" and report.rows_passed == 1000
    assert [c.failed_rows for c in report.checks] == [0, 0] and all(c.message is None for c in report.checks)


def test_unique_across_batches_through_the_gate_composite(tmp_path, registry):
    gate = make_gate(tmp_path, registry, "- unique: [k, day]")
    b1 = pa.record_batch({"k": ["a", "b", "a", None], "day": pa.array([1, 1, 2, 1], pa.int32())})
    b2 = pa.record_batch({"k": ["a", "b", None, "c"], "day": pa.array([2, 2, 1, 1], pa.int32())})
    b3 = pa.record_batch({"k": ["b", "a", "c"], "day": pa.array([1, 1, 1], pa.int32())})
    kept = [gate.validate(b) for b in (b1, b2, b3)]
    assert kept[0].num_rows == 4
    assert kept[1].to_pydict() == {"k": ["b", None, "c"], "day": [2, 1, 1]}
    assert kept[2] is None
    gate.finish()
    q = pq.read_table(tmp_path / ".agent-etl" / "quarantine" / "r1" / "orders.parquet")
    assert q.select(["k", "day"]).to_pylist() == [{"k": "a", "day": 2}, {"k": "b", "day": 1}, {"k": "a", "day": 1},
                                                   {"k": "c", "day": 1}]


def test_missing_columns_are_one_spec_error_with_each_checks_line(tmp_path, registry):
    checks = """
        - not_null: [customer]
        - range: {column: amout, min: 0}
        - unique: [id, region]
    """
    gate = make_gate(tmp_path, registry, checks)
    batch = pa.record_batch({"id": [1], "customer": [2], "amount": [3.0]})
    with pytest.raises(SpecError) as info:
        gate.validate(batch)
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].line == line_of(checks, "range:")
    assert "range(amout)" in problems[0].message and "'orders'" in problems[0].message
    assert "'amout'" in problems[0].message and "did you mean 'amount'?" in problems[0].hint
    assert "id, customer, amount" in problems[0].hint
    assert problems[1].line == line_of(checks, "unique:") and "'region'" in problems[1].message
    assert info.value.exit_code == 2


def test_bind_reports_wrong_typed_bounds_with_the_line(tmp_path, registry):
    checks = """
        - range: {column: amount, min: "zero"}
        - range: {column: day, max: 20240101}
        - range: {column: day, min: "2024-01-01"}
    """
    gate = make_gate(tmp_path, registry, checks)
    schema = pa.schema([("amount", pa.float64()), ("day", pa.date32())])
    with pytest.raises(SpecError) as info:
        gate.bind(schema)
    lines = pipeline_text(checks, "quarantine").splitlines()
    assert [p.line for p in info.value.problems] == [
        next(i for i, t in enumerate(lines, 1) if "zero" in t), next(i for i, t in enumerate(lines, 1) if "20240101" in t)]
    assert "number" in info.value.problems[0].hint and "ISO date" in info.value.problems[1].hint
    assert not gate.bound


def test_invalid_regex_is_a_spec_error_in_the_pipeline_and_in_the_gate(tmp_path, registry):
    checks = '- regex: {column: email, pattern: "(?<=@)example"}'
    with pytest.raises(SpecError) as info:
        Pipeline.from_text(pipeline_text(checks, "fail"), base_dir=tmp_path, registry=registry)
    assert "RE2" in str(info.value) and info.value.problems[0].line is not None
    from agent_etl.spec import QualityGroup

    group = QualityGroup(input="orders", checks=[{"regex": {"column": "email", "pattern": "[a-"}}])
    group._check_lines = [12]
    with pytest.raises(SpecError) as info:
        QualityGate(group, run_id="r1", home=tmp_path, registry=registry)
    (problem,) = info.value.problems
    assert problem.line == 12 and "invalid regular expression" in problem.message


ROWS = [pa.record_batch({"x": pa.array(range(i, i + 10))}) for i in range(0, 30, 10)]


@pytest.mark.parametrize("mode", ["fail", "warn", "quarantine"])
@pytest.mark.parametrize(("bounds", "verdict"), [("{min: 31}", "30 rows, expected at least 31"),
                                                 ("{max: 29}", "30 rows, expected at most 29"),
                                                 ("{min: 30, max: 30}", None)])
def test_row_count_in_every_mode(tmp_path, registry, mode, bounds, verdict):
    gate = make_gate(tmp_path, registry, f"- row_count: {bounds}", on_failure=mode)
    for batch in ROWS:
        assert gate.validate(batch) is batch  # a count has no rows to hold back
    if verdict is None:
        assert gate.finish().status == "passed"
    elif mode == "warn":
        report = gate.finish()
        assert report.status == "warned" and report.checks[0].message == verdict
    else:
        with pytest.raises(QualityGateError, match=verdict) as info:
            gate.finish()
        assert info.value.report.status == "failed"
        assert info.value.report.checks[0].message == verdict
        assert info.value.report.rows_quarantined == 0


def test_row_count_failure_beats_quarantined_rows(tmp_path, registry):
    gate = make_gate(tmp_path, registry, "- row_count: {min: 100}\n- range: {column: x, max: 5}")
    for batch in ROWS:
        gate.validate(batch)
    with pytest.raises(QualityGateError) as info:
        gate.finish()
    report = info.value.report
    assert report.status == "failed" and report.rows_quarantined == 24
    assert pq.read_table(report.quarantine_path).num_rows == 24  # what was set aside stays readable


def test_close_alone_on_an_aborted_run_keeps_the_file(tmp_path, registry):
    gate = make_gate(tmp_path, registry, "- range: {column: x, max: 5}")
    gate.validate(ROWS[0])
    gate.validate(ROWS[1])
    gate.close()
    gate.close()
    path = tmp_path / ".agent-etl" / "quarantine" / "r1" / "orders.parquet"
    assert pq.read_table(path)["x"].to_pylist() == list(range(6, 20))


def test_quarantined_rows_of_many_batches_make_full_row_groups(tmp_path, registry, monkeypatch):
    from agent_etl.quality.quarantine import ParquetFile

    monkeypatch.setattr(ParquetFile, "GROUP_ROWS", 25)
    gate = make_gate(tmp_path, registry, "- range: {column: x, max: 6}")
    for start in range(0, 100, 10):  # 3 bad rows per batch: 7, 8, 9 of each ten
        gate.validate(pa.record_batch({"x": pa.array([v % 10 for v in range(start, start + 10)])}))
    gate.finish()
    path = tmp_path / ".agent-etl" / "quarantine" / "r1" / "orders.parquet"
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [27, 3]
    assert pq.read_table(path)["x"].to_pylist() == [7, 8, 9] * 10


def test_a_quarantine_file_that_cannot_be_written_fails_the_gate_with_its_path(tmp_path, registry):
    (tmp_path / ".agent-etl").mkdir()
    (tmp_path / ".agent-etl" / "quarantine").write_text("a file where the folder should be")
    gate = make_gate(tmp_path, registry, "- range: {column: x, max: 5}")
    assert gate.validate(ROWS[0])["x"].to_pylist() == list(range(6))
    with pytest.raises(ToolError, match=r"cannot write quarantined rows to .*orders\.parquet"):
        gate.finish()  # the rows wait for a full row group, or for the end of the stream


class Odd(Check):
    """A third-party row check whose mask is a slice of a longer array (its bits start mid-byte)."""

    def failures(self, batch):
        return pa.array([True] * 5 + [v % 2 == 1 for v in batch.column("y").to_pylist()]).slice(5)


def test_reasons_name_every_failed_check_beyond_eight_checks(tmp_path, registry):
    registry.register("validator", "odd", Odd)
    checks = "\n".join([f"- range: {{column: x{i}, max: 0}}" for i in range(10)] + ["- odd: {}"])
    gate = make_gate(tmp_path, registry, checks)
    fails = [[], [0], [10], [3, 8], list(range(11)), [7, 9], [8], [0, 10], [1, 2, 4, 5, 6]]  # per row
    columns = {f"x{i}": pa.array([int(i in f) for f in fails]) for i in range(10)}
    batch = pa.record_batch({**columns, "y": pa.array([int(10 in f) for f in fails])})
    assert gate.validate(batch.slice(1)).num_rows == 0
    gate.finish()
    q = pq.read_table(tmp_path / ".agent-etl" / "quarantine" / "r1" / "orders.parquet")
    labels = [f"range(x{i})" for i in range(10)] + ["odd"]
    assert q["_quarantine_reason"].to_pylist() == ["; ".join(labels[i] for i in f) for f in fails[1:]]


def test_empty_stream_fails_a_minimum_row_count(tmp_path, registry):
    gate = make_gate(tmp_path, registry, "- row_count: {min: 1}\n- not_null: [x]", on_failure="fail")
    with pytest.raises(QualityGateError, match="0 rows, expected at least 1"):
        gate.finish()


class Shaky(Check):
    """A third-party row check whose mask holds nulls ("cannot tell")."""

    def failures(self, batch):
        return pa.array([None, True, False, None][: batch.num_rows], pa.bool_())


def test_a_null_in_a_mask_neither_loses_nor_quarantines_the_row(tmp_path, registry):
    registry.register("validator", "shaky", Shaky)
    gate = make_gate(tmp_path, registry, "- shaky: {}\n- range: {column: x, max: 5}")
    kept = gate.validate(pa.record_batch({"x": [1, 2, 3, 9]}))
    assert kept["x"].to_pylist() == [1, 3]
    gate.finish()
    q = pq.read_table(tmp_path / ".agent-etl" / "quarantine" / "r1" / "orders.parquet")
    assert q["x"].to_pylist() == [2, 9]
    assert q["_quarantine_reason"].to_pylist() == ["shaky", "range(x)"]
