"""Coordinator and workers on one run store in PostgreSQL (AGENT_ETL_STORE), as across machines
(issue 15, docs/distributed.md "The run store"): the run, its tasks and the loads' checkpoints
(written by the workers) land in that database, nothing in a SQLite file, and a worker killed
mid-run has its branch go on after the last commit it stored there."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import pytest
from test_distributed import PG, PIPE, ROWS, SLOW, Cluster, schemas  # noqa: F401  (schemas: a fixture)

pytestmark = [pytest.mark.services("nats", "postgres"), pytest.mark.timeout(600)]


@pytest.fixture
def store_db():
    import psycopg

    name = f"store_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_coordinator_and_workers_share_a_run_store_in_postgresql(tmp_path, schemas, store_db):  # noqa: F811
    import psycopg

    (tmp_path / "slow.py").write_text(SLOW)
    c = Cluster(tmp_path, *schemas)
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{store_db}"
    c.environ["AGENT_ETL_STORE"] = url  # the coordinator's; workers take the one an assignment names
    await c.open()
    try:
        committed = await c.progress("b_table", 2500)
        await c.start_workers(2)
        run = await c.run(PIPE, "--json")
        await asyncio.wait_for(committed.wait(), 120)
        victim = c.taken["b"][0]
        c.workers[victim].send_signal(signal.SIGKILL)
        result = json.loads((await c.finished(run))[0])
        assert result["status"] == "succeeded"
        tasks = {t["name"]: t for t in result["tasks"]}
        assert tasks["b_table"]["attempts"] == 2 and tasks["b_table"]["details"]["resumed_after_rows"] >= 1000
        assert c.rows("b") == (ROWS, ROWS)
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{store_db}") as conn:
            status = conn.execute("SELECT status FROM runs WHERE run_id = %s", (result["run_id"],)).fetchone()
            states = dict(conn.execute("SELECT task, status FROM tasks WHERE run_id = %s", (result["run_id"],)))
            marks = conn.execute("SELECT count(*), sum(rows) FROM checkpoints WHERE run_id = %s AND task = 'b_table'",
                                 (result["run_id"],)).fetchone()
        assert status == ("succeeded",)
        assert set(states.values()) == {"succeeded"} and "b_table" in states
        assert marks == (ROWS // 1000, ROWS)  # the workers' commits of b: a unit of 1000 rows each, none twice
        assert not (tmp_path / "home" / "runs.db").exists()  # nothing went to the local SQLite store
        shown = (await c.finished(await c.cli("runs", "show", result["run_id"])))[0]
        assert "succeeded" in shown and "b_table" in shown
    finally:
        await c.close()
