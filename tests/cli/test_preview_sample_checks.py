"""run --limit N on a pipeline with checks a sample cannot judge (referential, row_count, statistics):
the preview leaves them out and says so once; row checks still run; a full run still enforces them."""

from __future__ import annotations

import json
import uuid

import pyarrow.parquet as pq
import pytest
import yaml
from tests.cli.conftest import cli

PG = "postgresql://postgres@127.0.0.1:5432/test"
NOTE = "preview: not applied to a sample of"


def notes(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(NOTE)]


@pytest.mark.services("postgres")
def test_preview_of_what_init_writes_for_postgres_foreign_keys(tmp_path):
    """init makes a referential check of each foreign key; the first 5 orders name customers past the
    first 5 read, so a preview judging it failed every row."""
    import psycopg

    schema = f"preview_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"""
            create schema {schema};
            create table {schema}.customers(id int primary key, name text not null);
            create table {schema}.orders(id int primary key, customer_id int not null references {schema}.customers(id),
                                         amount numeric(10,2) check (amount >= 0));
            insert into {schema}.customers select g, 'c' || g from generate_series(1, 20) g;
            insert into {schema}.orders select g, 21 - g, g from generate_series(1, 20) g;
        """)
    try:
        r = cli("init", PG, "--schema", schema, "--no-memory", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        spec = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
        orders = f"{schema}_orders"
        checks = [c for g in spec["quality"] if g["input"] == orders for c in g["checks"]]
        assert {"referential": {"column": "customer_id", "input": f"{schema}_customers", "key": "id"}} in checks

        r = cli("run", "pipeline.yaml", "--limit", "5", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert notes(r.stdout) == [f"{NOTE} 5 rows per source, as they judge the whole data: "
                                   f"referential(customer_id) on {orders}"]
        assert "range(amount)" in r.stdout  # the row checks ran
        preview = tmp_path / ".agent-etl" / "preview" / "test"
        assert pq.read_table(preview / f"{orders}.parquet").column("customer_id").to_pylist() == [20, 19, 18, 17, 16]
        assert not (tmp_path / "out").exists()

        r = cli("run", "pipeline.yaml", cwd=tmp_path)  # the whole data: the check runs, and passes
        assert r.returncode == 0, r.stdout + r.stderr
        assert "referential(customer_id)" in r.stdout and NOTE not in r.stdout
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"drop schema {schema} cascade")


def files_pipeline(tmp_path, row_count_min: int) -> None:
    (tmp_path / "c.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(1, 100)))
    (tmp_path / "o.csv").write_text("id,cid,amount\n" + "".join(f"{i},{100 - i},{i}\n" for i in range(1, 100)))
    (tmp_path / "p.yaml").write_text(f"""
version: 1
name: sample
extract:
  c: {{tool: csv, path: c.csv}}
  o: {{tool: csv, path: o.csv}}
quality:
  - input: o
    checks:
      - not_null: [id, cid]
      - referential: {{column: cid, input: c, key: id}}
      - row_count: {{min: {row_count_min}}}
      - mean: {{column: amount, min: 45, max: 55}}
    on_failure: fail
  - input: c
    checks:
      - row_count: {{min: 50}}
load:
  o_out: {{input: o, tool: parquet, path: out/o/}}
""")


def test_preview_leaves_out_counts_and_statistics_and_says_which(tmp_path):
    files_pipeline(tmp_path, row_count_min=50)
    r = cli("run", "p.yaml", "--limit", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert notes(r.stdout) == [f"{NOTE} 3 rows per source, as they judge the whole data: referential(cid) on o; "
                               "row_count on o; mean(amount) on o; row_count on c"]
    assert "not_null(id,cid)" in r.stdout
    assert pq.read_table(tmp_path / ".agent-etl" / "preview" / "sample" / "o.parquet").num_rows == 3

    # --json: stdout is the run's JSON alone, the note goes to stderr
    r = cli("run", "p.yaml", "--limit", "3", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    json.loads(r.stdout)
    assert len(notes(r.stderr)) == 1

    assert cli("run", "p.yaml", "-q", cwd=tmp_path).returncode == 0  # the whole data passes them all


def test_a_full_run_still_enforces_what_a_preview_leaves_out(tmp_path):
    files_pipeline(tmp_path, row_count_min=1000)
    assert cli("run", "p.yaml", "--limit", "3", cwd=tmp_path).returncode == 0
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 3 and "row_count" in r.stderr, r.stdout + r.stderr


def test_a_row_check_failing_on_the_sample_still_fails_the_preview(tmp_path):
    files_pipeline(tmp_path, row_count_min=50)
    (tmp_path / "o.csv").write_text("id,cid,amount\n1,,1\n2,2,2\n")
    r = cli("run", "p.yaml", "--limit", "3", cwd=tmp_path)
    assert r.returncode == 3 and "not_null" in r.stderr, r.stdout + r.stderr
