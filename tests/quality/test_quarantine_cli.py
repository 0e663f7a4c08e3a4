"""Quarantine through the real CLI: failing rows go to the quarantine destination (a Parquet file or a
SQLite table) with their reasons, the good rows reach the destination, counts match pandas."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

AGENT_ETL = str(Path(sys.executable).parent / "agent-etl")
N = 3000

CHECKS = """\
      - not_null: [customer_id]
      - range: {column: amount, min: 0}
      - regex: {column: email, pattern: "[a-z0-9]+@example\\\\.com"}
      - referential: {column: customer_id, input: customers, key: id}
      - unique: [order_id, line]
      - accepted_values: {column: status, values: [paid, open], severity: warn}
"""
LABELS = ["not_null(customer_id)", "range(amount)", "regex(email)", "referential(customer_id)",
          "unique(order_id,line)"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENT_ETL_HOME": str(cwd / ".agent-etl")}
    return subprocess.run([AGENT_ETL, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def write_data(folder: Path, seed: int = 21) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    order_id = rng.integers(0, N // 2, N)  # with line, a composite key that repeats across batches
    line = rng.integers(0, 3, N)
    customer = pa.array(rng.integers(0, 110, N), mask=rng.random(N) < 0.02)  # ids 100.. are unknown
    email = np.char.add(np.char.add("u", rng.integers(0, 50, N).astype(str)), "@example.com")
    email = np.where(rng.random(N) < 0.03, "nobody", email)
    orders = pa.table({
        "order_id": order_id, "line": line, "customer_id": customer,
        "amount": pa.array(np.round(rng.normal(60, 40, N), 2), mask=rng.random(N) < 0.03),
        "email": email, "status": rng.choice(["paid", "open", "void"], N, p=[0.6, 0.3, 0.1]),
    })
    pq.write_table(orders, folder / "orders.parquet")
    pq.write_table(pa.table({"id": np.arange(100), "name": [f"c{i}" for i in range(100)]}), folder / "customers.parquet")
    return orders.to_pandas()


def expected_failures(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        LABELS[0]: df["customer_id"].isna(),
        LABELS[1]: df["amount"].notna() & (df["amount"] < 0),
        LABELS[2]: ~df["email"].str.fullmatch(r"[a-z0-9]+@example\.com"),
        LABELS[3]: df["customer_id"].notna() & (df["customer_id"] >= 100),
        LABELS[4]: df.duplicated(subset=["order_id", "line"], keep="first"),
    })


def pipeline(quarantine: str, load: str, on_failure: str = "quarantine", checks: str = CHECKS) -> str:
    return textwrap.dedent("""\
        version: 1
        name: quarantine_cli
        defaults: {{batch_size: 256}}
        connections:
          wh: {{url: "sqlite:///out/wh.db"}}
          rejects: {{url: "sqlite:///out/rejects.db"}}
        extract:
          orders: {{tool: parquet, path: orders.parquet}}
          customers: {{tool: parquet, path: customers.parquet}}
        quality:
          - input: orders
            on_failure: {on_failure}
        {quarantine}
            checks:
        {checks}
        load:
        {load}
        """).format(on_failure=on_failure, quarantine=quarantine, load=load, checks=checks)


def run_id(result: subprocess.CompletedProcess) -> str:
    return re.search(r"run (\S+) (succeeded|failed)", result.stdout + result.stderr).group(1)


@pytest.fixture
def data(tmp_path) -> pd.DataFrame:
    df = write_data(tmp_path)
    exp = expected_failures(df)
    for label in LABELS:
        assert exp[label].sum() > 5, label
    return df


def check_reasons(quarantined: pd.DataFrame, df: pd.DataFrame, bad: np.ndarray) -> None:
    exp = expected_failures(df)[bad]
    want = exp.apply(lambda row: "; ".join(label for label in LABELS if row[label]), axis=1)
    assert quarantined["_quarantine_reason"].tolist() == want.tolist()
    assert any(";" in r for r in want)


def test_quarantine_to_a_parquet_path_and_good_rows_to_the_destination(tmp_path, data):
    (tmp_path / "p.yaml").write_text(pipeline(
        "    quarantine: {tool: parquet, path: rejected/orders.parquet}",
        "  good: {input: orders, tool: parquet, path: out/good.parquet}"))
    result = cli("run", "p.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bad = expected_failures(data).any(axis=1).to_numpy()
    good = pq.read_table(tmp_path / "out" / "good.parquet").to_pandas()
    assert len(good) == (~bad).sum()
    np.testing.assert_array_equal(good["order_id"], data["order_id"][~bad])
    assert (good["status"] == "void").any()  # a warn-severity failure never holds a row back
    q = pq.read_table(tmp_path / "rejected" / "orders.parquet").to_pandas()
    assert len(q) == bad.sum()
    np.testing.assert_array_equal(q["order_id"], data["order_id"][bad])
    check_reasons(q, data, bad)
    assert set(q["_run_id"]) == {run_id(result)}
    assert not (tmp_path / ".agent-etl" / "quarantine").exists()  # not the default file as well


def test_quarantine_to_a_sqlite_table(tmp_path, data):
    (tmp_path / "p.yaml").write_text(pipeline(
        "    quarantine: {tool: sqlite, connection: rejects, table: bad_orders}",
        "  good: {input: orders, tool: sqlite, connection: wh, table: orders}"))
    result = cli("run", "p.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bad = expected_failures(data).any(axis=1).to_numpy()
    with sqlite3.connect(tmp_path / "out" / "wh.db") as con:
        good = pd.read_sql("select order_id from orders", con)
    with sqlite3.connect(tmp_path / "out" / "rejects.db") as con:
        q = pd.read_sql("select * from bad_orders", con)
    np.testing.assert_array_equal(good["order_id"], data["order_id"][~bad])
    assert len(q) == bad.sum()
    np.testing.assert_array_equal(q["order_id"], data["order_id"][bad])
    check_reasons(q, data, bad)
    assert set(q["_run_id"]) == {run_id(result)}


def test_default_quarantine_file_and_the_run_report(tmp_path, data):
    (tmp_path / "p.yaml").write_text(pipeline("", "  good: {input: orders, tool: parquet, path: out/good.parquet}"))
    result = cli("run", "p.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rid = run_id(result)
    q = pq.read_table(tmp_path / ".agent-etl" / "quarantine" / rid / "orders.parquet")
    assert q.num_rows == expected_failures(data).any(axis=1).sum()


def test_fail_mode_stops_before_the_destination_commits(tmp_path, data):
    (tmp_path / "p.yaml").write_text(pipeline("", "  good: {input: orders, tool: parquet, path: out/good.parquet}",
                                              on_failure="fail"))
    result = cli("run", "p.yaml", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "quality gate on 'orders' failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "good.parquet").exists()


def test_a_failing_quarantine_loader_fails_the_run_and_names_it(tmp_path, data):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "rejects.db").mkdir()  # a directory where the database file should be
    (tmp_path / "p.yaml").write_text(pipeline(
        "    quarantine: {tool: sqlite, connection: rejects, table: bad_orders}",
        "  good: {input: orders, tool: parquet, path: out/good.parquet}"))
    result = cli("run", "p.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "quarantine" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "good.parquet").exists()


def test_severity_warn_alone_lets_every_row_through(tmp_path, data):
    checks = "      - range: {column: amount, min: 0, severity: warn}\n"
    (tmp_path / "p.yaml").write_text(pipeline("", "  good: {input: orders, tool: parquet, path: out/good.parquet}",
                                              on_failure="fail", checks=checks))
    result = cli("run", "p.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "out" / "good.parquet").num_rows == N
