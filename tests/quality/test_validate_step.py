"""The `validate` transform: the quality gate inline as a pipeline step, run by the real coordinator."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent_etl import AgentCoordinator
from agent_etl.exceptions import QualityGateError, SpecError
from agent_etl.spec import Pipeline
from agent_etl.testing import run_transform

N = 2000


def write_inputs(folder) -> pd.DataFrame:
    rng = np.random.default_rng(8)
    orders = pa.table({"order_id": np.arange(N), "customer_id": rng.integers(0, 60, N),
                       "amount": pa.array(np.round(rng.normal(40, 30, N), 2), mask=rng.random(N) < 0.02)})
    pq.write_table(orders, folder / "orders.parquet")
    pq.write_table(pa.table({"id": np.arange(50)}), folder / "customers.parquet")
    return orders.to_pandas()


def spec(tmp_path, step: str) -> str:
    text = textwrap.dedent("""\
        version: 1
        name: validate_step
        defaults: {{batch_size: 300}}
        extract:
          orders: {{tool: parquet, path: orders.parquet}}
          customers: {{tool: parquet, path: customers.parquet}}
        transform:
        {step}
        load:
          out: {{input: checked, tool: parquet, path: out/checked.parquet}}
        """).format(step=textwrap.indent(textwrap.dedent(step), "  "))
    (tmp_path / "p.yaml").write_text(text)
    return text


STEP = """\
- name: checked
  input: [orders, customers]
  tool: validate
  checks:
    - range: {column: amount, min: 0}
    - referential: {column: customer_id, input: customers, key: id}
    - not_null: {columns: [amount], severity: warn}
  on_failure: MODE
  quarantine: {tool: parquet, path: rejected.parquet}
"""


async def run(tmp_path):
    return await AgentCoordinator(home=tmp_path / ".agent-etl").run(tmp_path / "p.yaml")


async def test_validate_step_quarantines_and_passes_the_good_rows_on(tmp_path):
    df = write_inputs(tmp_path)
    spec(tmp_path, STEP.replace("MODE", "quarantine"))
    result = await run(tmp_path)
    assert result.exit_code == 0, result.error
    bad_range = df["amount"].notna() & (df["amount"] < 0)
    bad_ref = df["customer_id"] >= 50
    bad = (bad_range | bad_ref).to_numpy()
    good = pq.read_table(tmp_path / "out" / "checked.parquet").to_pandas()
    np.testing.assert_array_equal(good["order_id"], df["order_id"][~bad])
    q = pq.read_table(tmp_path / "rejected.parquet").to_pandas()
    np.testing.assert_array_equal(q["order_id"], df["order_id"][bad])
    assert set(q["_run_id"]) == {result.run_id}

    (report,) = result.tasks["checked"].details["quality"]
    json.dumps(report)
    assert report["status"] == "quarantined" and report["rows_quarantined"] == bad.sum()
    by_label = {c["label"]: c for c in report["checks"]}
    assert by_label["range(amount)"]["failed_rows"] == bad_range.sum()
    assert by_label["referential(customer_id)"] | {"examples": None} == {
        "label": "referential(customer_id)", "failed_rows": int(bad_ref.sum()), "kind": "dataset",
        "severity": "error", "status": "failed", "examples": None, "action": "quarantine",
        "message": by_label["referential(customer_id)"]["message"]}
    first = np.flatnonzero(bad_ref.to_numpy())[:5]
    assert by_label["referential(customer_id)"]["examples"] == [
        {"_row": int(i), "customer_id": int(df["customer_id"][i])} for i in first]
    warn = by_label["not_null(amount)"]
    assert (warn["status"], warn["severity"], warn["failed_rows"]) == ("warned", "warn", df["amount"].isna().sum())


async def test_validate_step_fail_mode_stops_the_load(tmp_path):
    write_inputs(tmp_path)
    spec(tmp_path, STEP.replace("MODE", "fail").replace("  quarantine: {tool: parquet, path: rejected.parquet}\n", ""))
    result = await run(tmp_path)
    assert result.exit_code == 3
    assert "quality gate on 'checked' failed" in result.error
    assert result.tasks["checked"].details["quality"][0]["status"] == "failed"
    assert not (tmp_path / "out" / "checked.parquet").exists()


def test_validate_step_spec_errors_have_lines(tmp_path):
    step = """\
    - name: checked
      input: orders
      tool: validate
      checks:
        - regex: {column: x, pattern: "[a-"}
        - referential: {column: customer_id, input: customers, key: id}
      on_failure: warn
      quarantine: {tool: parquet, path: q.parquet}
    """
    text = spec(tmp_path, step)
    with pytest.raises(SpecError) as info:
        Pipeline.from_yaml(tmp_path / "p.yaml")
    lines = text.splitlines()
    by_message = {p.message: p.line for p in info.value.problems}
    line_of = {needle: next(i for i, t in enumerate(lines, 1) if needle in t) for needle in
               ("regex:", "input: orders", "quarantine:")}
    assert any("invalid regular expression" in m and ln == line_of["regex:"] for m, ln in by_message.items())
    assert any("reads 'customers', which is not one of its inputs" in m and ln == line_of["input: orders"]
               for m, ln in by_message.items())
    assert any("on_failure is 'warn'" in m and ln == line_of["quarantine:"] for m, ln in by_message.items())


async def test_validate_step_missing_column_names_the_check_line_at_run_time(tmp_path):
    write_inputs(tmp_path)
    text = spec(tmp_path, """\
    - name: checked
      input: orders
      tool: validate
      checks:
        - range: {column: amout, min: 0}
    """)
    result = await run(tmp_path)
    assert result.exit_code == 2
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "amout" in t)
    assert f"line {line}:" in result.error and "did you mean 'amount'" in result.error


async def test_validate_step_with_the_testing_helper(tmp_path):
    table = pa.table({"x": [1, -2, 3, None, -5]})
    out = await run_transform("validate", {"checks": [{"range": {"column": "x", "min": 0}}], "on_failure": "warn"},
                              {"t": table}, base_dir=tmp_path)
    assert out.equals(table)
    with pytest.raises(QualityGateError, match=r"range\(x\): 2 rows failed"):
        await run_transform("validate", {"checks": [{"range": {"column": "x", "min": 0}}]}, {"t": table},
                            base_dir=tmp_path)
