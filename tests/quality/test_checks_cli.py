"""Bad checks through the real CLI: each is a spec error (exit 2) naming the check, with its YAML line
and a hint, and no traceback - found by `validate` where the spec alone shows it, by `run` (before
any destination commits) where it takes the data's columns."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

AGENT_ETL = str(Path(sys.executable).parent / "agent-etl")

PIPE = """\
version: 1
name: bad_checks
connections:
  rejects: {{url: "sqlite:///rejects.db"}}
extract:
  orders: {{tool: parquet, path: orders.parquet}}
  customers: {{tool: parquet, path: customers.parquet}}
transform:
  - name: priced
    input: orders
    tool: derive
    columns: {{net: "amount * 0.8"}}
quality:
  - input: {gated}
    on_failure: {mode}
    checks:
      - not_null: [order_id]
      {check}
{extra}load:
  out: {{input: orders, tool: parquet, path: out/orders.parquet}}
"""
CHECK_LINE = 18


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENT_ETL_HOME": str(cwd / ".agent-etl")}
    return subprocess.run([AGENT_ETL, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def write(tmp_path: Path, check: str, *, mode: str = "quarantine", extra: str = "", gated: str = "orders") -> Path:
    rng = np.random.default_rng(2)
    pq.write_table(pa.table({"order_id": np.arange(50), "amount": rng.normal(10, 5, 50),
                             "customer_id": rng.integers(0, 5, 50), "status": ["paid"] * 50}),
                   tmp_path / "orders.parquet")
    pq.write_table(pa.table({"id": np.arange(5)}), tmp_path / "customers.parquet")
    text = PIPE.format(check=check, mode=mode, extra=textwrap.indent(extra, "    ") if extra else "", gated=gated)
    assert text.splitlines()[CHECK_LINE - 1].strip() == check.strip()
    (tmp_path / "p.yaml").write_text(text)
    return tmp_path / "p.yaml"


def assert_spec_error(result: subprocess.CompletedProcess, line: int, *needles: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out
    assert f"line {line}:" in out, out
    for needle in needles:
        assert needle in out, out


@pytest.mark.parametrize(("check", "needles"), [
    ("- not_nul: [order_id]", ["unknown quality check 'not_nul'", "did you mean 'not_null'"]),
    ('- regex: {column: status, pattern: "[a-"}', ["invalid regular expression"]),
    ('- regex: {column: status, pattern: "(?<=x)y"}', ["RE2"]),
    ("- range: {column: amount}", ["range needs min, max or both"]),
    ("- castable: {column: status, type: integr}", ["unknown type 'integr'", "did you mean"]),
    ('- expression: "amount >= and"', ["invalid SQL predicate"]),
    ('- freshness: {column: ts, max_age: "2 hourz"}', ["is not a duration"]),
    ("- schema: {columns: {id: integr}}", ["unknown type 'integr'"]),
    ("- mean: {column: amount, min: 5, max: 1}", ["min (5.0) is greater than max (1.0)"]),
    ("- quantile: {column: amount, q: 1.5, max: 3}", ["q"]),
    ("- completeness: {column: amount, min: 2}", ["less than or equal to 1"]),
    ("- unique: {columns: [order_id], severity: fatal}", ["severity"]),
    ("- referential: {column: customer_id, input: custmers, key: id}", ["'custmers'", "did you mean 'customers'"]),
])
def test_validate_reports_a_bad_check_with_its_line(tmp_path, check, needles):
    write(tmp_path, check)
    assert_spec_error(cli("validate", "p.yaml", cwd=tmp_path), CHECK_LINE, *needles)


def test_a_reference_that_depends_on_the_gated_step_is_a_spec_error(tmp_path):
    write(tmp_path, "- referential: {column: order_id, input: priced, key: order_id}")
    assert_spec_error(cli("validate", "p.yaml", cwd=tmp_path), CHECK_LINE, "depends on 'orders'")


def test_a_reference_sharing_the_gated_steps_input_is_a_spec_error(tmp_path):
    write(tmp_path, "- referential: {column: order_id, input: orders, key: order_id}", gated="priced")
    assert_spec_error(cli("validate", "p.yaml", cwd=tmp_path), CHECK_LINE, "also reads as its input")


@pytest.mark.parametrize(("extra", "mode", "line", "needles"), [
    ("quarantine: {tool: sqlite, connection: rejects, tabel: bad}\n", "quarantine", 19,
     ["unknown key 'tabel'", "did you mean 'table'"]),
    ("quarantine: {tool: sqlit, connection: rejects, table: bad}\n", "quarantine", 19,
     ["unknown loader 'sqlit'", "did you mean 'sqlite'"]),
    ("quarantine: {tool: sqlite, connection: nope, table: bad}\n", "quarantine", 19, ["connection 'nope'"]),
    ("quarantine: {tool: parquet, path: bad.parquet}\n", "fail", 19, ["on_failure is 'fail'"]),
])
def test_a_bad_quarantine_destination_is_a_spec_error(tmp_path, extra, mode, line, needles):
    write(tmp_path, "- range: {column: amount, min: 0}", mode=mode, extra=extra)
    assert_spec_error(cli("validate", "p.yaml", cwd=tmp_path), line, *needles)


@pytest.mark.parametrize(("check", "needles"), [
    ('- range: {column: amount, min: "abc"}', ["min 'abc' cannot be compared", "write the bound as a number"]),
    ("- range: {column: amout, min: 0}", ["column 'amout' is not in 'orders'", "did you mean 'amount'"]),
    ('- expression: "amout > 0"', ["amout", "amount"]),
    ("- mean: {column: status, min: 0}", ["'status' is string, not a number"]),
    ("- referential: {column: customer_id, input: customers, key: cid}", ["key 'cid' is not a column of 'customers'"]),
    ("- referential: {column: status, input: customers, key: id}", ["cannot be compared with key 'id'"]),
])
def test_run_reports_checks_that_do_not_fit_the_data_with_their_line(tmp_path, check, needles):
    write(tmp_path, check)
    result = cli("run", "p.yaml", cwd=tmp_path)
    assert_spec_error(result, CHECK_LINE, *needles)
    assert not (tmp_path / "out" / "orders.parquet").exists()
