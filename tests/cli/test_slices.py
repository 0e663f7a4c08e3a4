"""run --only, run --limit and validate --connect, through the CLI on the quickstart's real files."""

from __future__ import annotations

import json
import sqlite3

import pyarrow.dataset as ds
import pytest
from tests.cli.conftest import cli

ORDER = ["orders", "customers", "products", "paid", "enriched", "revenue_by_country", "lake", "warehouse", "revenue"]


def _count(db, table):
    with sqlite3.connect(db) as c:
        return c.execute(f"select count(*) from {table}").fetchone()[0]


def test_only_every_step_in_plan_order_gives_what_one_run_gives(quickstart):
    full = cli("run", "pipeline.yaml", "--json", "--var", "WAREHOUSE=out/full.db", cwd=quickstart)
    assert full.returncode == 0, full.stderr
    want = {d["load"]: d["rows"] for d in json.loads(full.stdout)["destinations"]}
    lake_rows = ds.dataset(quickstart / "out" / "orders_lake", partitioning="hive").count_rows()
    for task in ORDER:
        r = cli("run", "pipeline.yaml", "--only", task, "--json", cwd=quickstart)
        assert r.returncode == 0, (task, r.stderr)
        result = json.loads(r.stdout)
        assert result["pipeline"] == f"quickstart_orders.{task}"
        assert set(t["name"] for t in result["tasks"]) >= {task}
        if task in want:
            assert result["destinations"] == [{**result["destinations"][0], "load": task, "rows": want[task]}]
        else:
            assert (quickstart / ".agent-etl" / "stage" / "quickstart_orders" / f"{task}.parquet").is_file()
    # staged inputs are read, not run again: the load ran alone
    assert [t["name"] for t in result["tasks"]] == ["revenue_by_country", "revenue"]
    assert _count(quickstart / "out" / "warehouse.db", "orders") == want["warehouse"]
    assert ds.dataset(quickstart / "out" / "orders_lake", partitioning="hive").count_rows() == lake_rows


def test_only_without_staged_inputs_runs_the_upstream(quickstart):
    r = cli("run", "pipeline.yaml", "--only", "revenue", "--json", cwd=quickstart)
    assert r.returncode == 0, r.stderr
    names = [t["name"] for t in json.loads(r.stdout)["tasks"]]
    assert set(names) == {"orders", "customers", "products", "paid", "enriched", "revenue_by_country", "revenue"}
    assert not (quickstart / "out" / "orders_lake").exists()  # the other loads did not run
    assert _count(quickstart / "out" / "warehouse.db", "revenue_by_country") > 0
    bad = cli("run", "pipeline.yaml", "--only", "nosuch", cwd=quickstart)
    assert bad.returncode == 2 and "no such step" in bad.stderr and "Traceback" not in bad.stderr


def test_limit_previews_and_writes_nowhere(quickstart):
    r = cli("run", "pipeline.yaml", "--limit", "300", cwd=quickstart)
    assert r.returncode == 0, r.stderr
    assert not (quickstart / "out").exists()  # no destination written
    preview = quickstart / ".agent-etl" / "preview" / "quickstart_orders"
    enriched = ds.dataset(preview / "enriched.parquet").to_table()
    assert 0 < enriched.num_rows <= 300
    assert "customer" in enriched.column_names
    assert "enriched: " in r.stdout and "order_id" in r.stdout and "revenue_by_country: " in r.stdout
    # all rows quarantined: the steps below still get the columns and the run succeeds
    tiny = cli("run", "pipeline.yaml", "--limit", "3", "--json", cwd=quickstart)
    assert tiny.returncode == 0, tiny.stderr
    rows = {t["name"]: t["rows"] for t in json.loads(tiny.stdout)["tasks"]}
    assert rows["orders"] == rows["customers"] == rows["products"] == 3  # each source stopped after 3 rows


def test_validate_connect_finds_what_a_run_would_meet(quickstart):
    text = (quickstart / "pipeline.yaml").read_text()
    assert cli("validate", "pipeline.yaml", "--connect", cwd=quickstart).returncode == 0
    state = quickstart / ".agent-etl"
    assert not (state / "quarantine").exists() and not (state / "preview").exists()  # the probe's rows went
    broken = (text.replace("path: data/customers.csv", "path: data/nowhere.csv")
              .replace("accepted_values: {column: category", "accepted_values: {column: categry")
              .replace('url: "sqlite:///${WAREHOUSE:-out/warehouse.db}"',
                       'url: "postgresql://postgres@127.0.0.1:1/test"')
              .replace("tool: sqlite", "tool: postgres"))
    (quickstart / "broken.yaml").write_text(broken)
    fast = cli("validate", "broken.yaml", cwd=quickstart)
    assert fast.returncode == 0  # plain validate stays offline
    r = cli("validate", "broken.yaml", "--connect", cwd=quickstart)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines), lines
    assert any("customers" in line and "nowhere.csv" in line for line in lines)
    assert not any("task '" in line for line in lines), lines  # 'extract customers: task 'customers': ...'
    assert any("warehouse" in line and "unreachable" in line for line in lines)
    assert any("revenue" in line and "unreachable" in line for line in lines)
    # the check's column: with customers missing, the join never runs; with them back it does
    (quickstart / "broken.yaml").write_text(text.replace("accepted_values: {column: category",
                                                         "accepted_values: {column: categry"))
    r = cli("validate", "broken.yaml", "--connect", cwd=quickstart)
    assert r.returncode == 2 and "'categry' is not in" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (quickstart / "out").exists()


def test_a_failed_preview_is_not_resumed(tmp_path):
    """A preview whose gate fails on its few rows (a row check) offers no resume, and a resume of it is refused:
    rebuilt without the limit it read every source whole into the preview files."""
    (tmp_path / "c.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(1, 100)))
    (tmp_path / "o.csv").write_text("id,cid\n" + "".join(f"{i},{1 + i % 90}\n" for i in range(1, 1000)))
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: ref\nextract:\n  c: {tool: csv, path: c.csv}\n  o: {tool: csv, path: o.csv}\n"
        "quality:\n  - input: o\n    checks:\n      - range: {column: cid, min: 1000}\n"
        "    on_failure: fail\nload:\n  o_out: {input: o, tool: parquet, path: out/o/}\n")
    r = cli("run", "p.yaml", "--limit", "1", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert "resume with" not in r.stderr + r.stdout
    run_id = json.loads(cli("runs", "list", "--json", cwd=tmp_path).stdout)[0]["run_id"]
    again = cli("resume", run_id, cwd=tmp_path)
    assert again.returncode != 0 and "was a preview" in again.stderr and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    preview = tmp_path / ".agent-etl" / "preview" / "ref"
    assert not (preview / "o.parquet").exists() or ds.dataset(preview / "o.parquet").to_table().num_rows <= 1
    assert not (tmp_path / "out").exists()


@pytest.mark.services("postgres")
def test_a_preview_whose_gate_fails_on_a_postgres_read_prints_no_traceback(tmp_path):
    """validate --connect on what init writes for a PostgreSQL schema (referential checks, 1 row per
    source) printed 'an error occurred during closing of asynchronous generator' and a traceback:
    the failed gate left the read open for the garbage collector, whose finalizers raced."""
    import uuid

    import psycopg

    pg, schema = "postgresql://postgres@127.0.0.1:5432/test", f"slices_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".c AS SELECT i AS id FROM generate_series(1, 100) i')
        conn.execute(f'CREATE TABLE "{schema}".o AS SELECT i AS id, 1 + i % 90 AS cid FROM generate_series(1, 5000) i')
    try:
        (tmp_path / "p.yaml").write_text(
            f"version: 1\nname: pgref\nconnections:\n  src: {{url: \"{pg}\"}}\nextract:\n"
            f"  c: {{tool: postgres, connection: src, table: {schema}.c}}\n"
            f"  o: {{tool: postgres, connection: src, table: {schema}.o}}\n"
            # a preview leaves referential checks out (a sample cannot judge them): a row check fails
            "quality:\n  - input: o\n    checks:\n      - range: {column: cid, min: 1000}\n"
            "    on_failure: fail\nload:\n  o_out: {input: o, tool: parquet, path: out/o/}\n")
        for _ in range(2):
            r = cli("run", "p.yaml", "--limit", "1", cwd=tmp_path)
            assert r.returncode == 3, r.stderr
            assert "Traceback" not in r.stderr and "asynchronous generator" not in r.stderr, r.stderr
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
