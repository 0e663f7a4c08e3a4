"""The quickstart, end to end through the CLI and the Python API, checked against pandas."""

import json
import os
import shutil
import sqlite3
import subprocess

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from tests.cli.conftest import AGENT_ETL, cli

from agent_etl import AgentCoordinator, Pipeline


def expected(qs):
    """The enriched rows, and which fail a row check (duplicates are counted separately: which copy
    of a duplicated order comes first depends on the join's output order)."""
    orders = pd.read_csv(qs / "data" / "orders.csv")
    customers = pd.read_csv(qs / "data" / "customers.csv")
    products = pd.read_json(qs / "data" / "products.jsonl", lines=True)
    paid = orders[orders.status == "paid"]
    e = paid.merge(customers, on="customer_id", how="left").merge(products, on="product_id", how="left")
    bad = e.customer_id.isna() | e.name.isna() | (e.amount < 0) | ~e.category.isin(
        ["books", "garden", "kitchen", "toys", "outdoor", "office"])
    return e, bad


def test_quickstart_through_the_cli(quickstart):
    r = cli("run", "pipeline.yaml", "--json", cwd=quickstart)
    assert r.returncode == 0, r.stderr + r.stdout
    summary = json.loads(r.stdout)
    assert summary["status"] == "succeeded"
    enriched, bad = expected(quickstart)
    clean = enriched[~bad]
    good_n = clean.order_id.nunique()  # every good order once
    assert bad.sum() > 50 and len(clean) > good_n  # the data set really is dirty, duplicates included

    lake = ds.dataset(quickstart / "out" / "orders_lake", format="parquet", partitioning="hive").to_table()
    assert lake.num_rows == good_n
    assert sorted(lake.column("order_id").to_pylist()) == sorted(clean.order_id.unique().tolist())
    assert min(lake.column("amount").to_pylist()) >= 0
    with sqlite3.connect(quickstart / "out" / "warehouse.db") as db:
        assert db.execute("select count(*) from orders").fetchone()[0] == good_n
        assert db.execute("select count(*) from orders where customer is null").fetchone()[0] == 0
        rev = dict(db.execute("select country, revenue from revenue_by_country").fetchall())
    want = lake.to_pandas().groupby("country").amount.sum().round(2).to_dict()
    assert rev.keys() == want.keys() and all(abs(rev[k] - want[k]) < 0.05 for k in want)

    q = pq.read_table(next((quickstart / ".agent-etl" / "quarantine").rglob("enriched.parquet")))
    assert q.num_rows == len(enriched) - good_n
    assert "_quarantine_reason" in q.column_names
    reasons = " ".join(q.column("_quarantine_reason").to_pylist())
    for check in ("unique(order_id)", "range(amount)", "not_null"):
        assert check in reasons

    runs = cli("runs", "list", "--json", cwd=quickstart)
    assert json.loads(runs.stdout)[0]["run_id"] == summary["run_id"]
    show = cli("runs", "show", summary["run_id"][:17], cwd=quickstart)
    assert show.returncode == 0 and "warehouse" in show.stdout and "agent" in show.stdout


def test_plain_progress_and_plan(quickstart):
    r = cli("run", "pipeline.yaml", cwd=quickstart)
    assert r.returncode == 0, r.stderr
    assert "done      warehouse" in r.stdout and "rows/s" in r.stdout
    assert "quality enriched: quarantined" in r.stdout
    p = cli("plan", "pipeline.yaml", cwd=quickstart)
    assert p.returncode == 0
    assert "transform sql <- paid, customers, products" in p.stdout
    assert "quality: 4 checks (not_null, unique, range, accepted_values), on failure quarantine" in p.stdout
    assert "-> table orders on warehouse (replace)" in p.stdout
    assert "agent etl-" not in p.stdout and "branch" not in p.stdout  # one agent for everything is no news
    v = cli("validate", "pipeline.yaml", cwd=quickstart)
    assert v.returncode == 0 and "ok" in v.stdout


async def test_quickstart_through_the_python_api(quickstart, monkeypatch):
    monkeypatch.chdir(quickstart)
    async with AgentCoordinator(home=quickstart / ".agent-etl") as c:
        result = await c.run(Pipeline.from_yaml(quickstart / "pipeline.yaml", {"WAREHOUSE": "out/api.db"}))
    assert result.ok, result
    assert result.tasks["warehouse"].rows == result.tasks["lake"].rows > 0
    (gate,) = result.quality
    assert gate["status"] == "quarantined" and gate["rows_quarantined"] > 0
    assert "<table>" in result._repr_html_()
    assert (quickstart / "out" / "api.db").exists()


def test_tools_list(quickstart):
    r = cli("tools", "list", cwd=quickstart)
    assert r.returncode == 0
    for name in ("csv", "jsonl", "parquet", "excel", "sqlite", "filter", "derive", "sql", "dedupe", "python",
                 "not_null", "unique", "range", "regex", "accepted_values", "row_count"):
        assert f"  {name} " in r.stdout, name


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux `script` gives the CLI a terminal")
def test_live_table_on_a_terminal(quickstart):
    r = subprocess.run(["script", "-q", "-e", "-c", f"{AGENT_ETL} run pipeline.yaml", "/dev/null"], cwd=quickstart,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "AGENT_ETL_HOME": str(quickstart / ".agent-etl"), "COLUMNS": "120"})
    assert r.returncode == 0, r.stdout
    assert "┏" in r.stdout and "rows/s" in r.stdout and "succeeded" in r.stdout
