"""XA two-phase commit of a MariaDB load with sibling loads (``defaults.commit: together``): the
commit barrier's decisions in the run store, the rollback of a prepared unit when a sibling fails,
and the settling of a transaction a crash left prepared between XA PREPARE and XA COMMIT."""

from __future__ import annotations

import asyncio
import textwrap

import pyarrow.parquet as pq
import pymysql
import pytest
from sqlalchemy import select

from agent_etl.agents.coordinator import AgentCoordinator
from agent_etl.store.runs import RunStore
from agent_etl.store.schema import decisions
from agent_etl.testing import build, tool_context
from agent_etl.tools.databases.mysql import xa
from tests.databases.prepared_crash import die_in_prepare

ROWS = 5000


def sql(db: str, statement: str, params=None, *, fetch: bool = True):
    conn = pymysql.connect(host="127.0.0.1", user="root", database=db, charset="utf8mb4", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if fetch else None
    finally:
        conn.close()


def prepared(task: str) -> list[tuple[str, int, str]]:
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        return xa.prepared(conn, task)
    finally:
        conn.close()


def roll_back_left(task: str) -> None:
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        for _, _, x in xa.prepared(conn, task):
            with conn.cursor() as cur:
                cur.execute(f"XA ROLLBACK {x}")
    finally:
        conn.close()


def seed(db: str) -> None:
    sql(db, "CREATE TABLE src (id BIGINT PRIMARY KEY, v VARCHAR(20))", fetch=False)
    sql(db, "INSERT INTO src SELECT seq, CONCAT('row ', seq) FROM seq_1_to_%s" % ROWS, fetch=False)


PIPELINE = """\
version: 1
name: twophase
defaults: {{batch_size: 1000, commit_every: {{rows: 2000}}, commit: together}}
connections:
  maria: {{url: "{url}"}}
extract:
  src: {{tool: mysql, connection: maria, table: src}}
load:
  {task}: {{input: src, tool: mysql, connection: maria, table: dst}}
  lake: {{input: src, tool: parquet, path: {path}}}
"""


def decided(home, run_id: str) -> list[tuple[str, int]]:
    store = RunStore.at(home)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(select(decisions.c.task, decisions.c.unit).where(decisions.c.run_id == run_id))
            return sorted((r.task, r.unit) for r in rows)
    finally:
        store.close()


async def test_a_load_with_a_parquet_sibling_commits_its_units_with_xa(tmp_path, mysql_db):
    db, url = mysql_db
    seed(db)
    task = f"copy_{db}"
    (tmp_path / "p.yaml").write_text(PIPELINE.format(url=url, task=task, path="out/src.parquet"))
    home = tmp_path / ".agent-etl"
    try:
        result = await AgentCoordinator(home=home).run(tmp_path / "p.yaml")
        assert result.ok, result.error
        assert sql(db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM dst") == ((ROWS, ROWS),)
        assert pq.read_table(tmp_path / "out" / "src.parquet").num_rows == ROWS
        # units of 2000 rows: 2000, 2000, then the final round (1000 rows) with the parquet load
        assert [r[0] for r in sql(db, "SELECT `rows` FROM _agent_etl_checkpoints ORDER BY committed_at")] == \
            [2000, 2000, 1000]
        assert decided(home, result.run_id) == sorted([("lake", 1), (task, 1), (task, 2), (task, 3)])
        assert prepared(task) == []
    finally:
        roll_back_left(task)


async def test_a_failing_sibling_rolls_the_prepared_unit_back(tmp_path, mysql_db):
    db, url = mysql_db
    seed(db)
    sql(db, "CREATE TABLE dst (id BIGINT, v VARCHAR(20))", fetch=False)
    sql(db, "INSERT INTO dst VALUES (-1, 'before')", fetch=False)
    task = f"copy_{db}"
    (tmp_path / "out").write_text("a file, not a folder")  # the parquet load cannot write its file
    spec = PIPELINE.format(url=url, task=task, path="out/src.parquet").replace(
        "commit_every: {rows: 2000}, ", "")
    (tmp_path / "p.yaml").write_text(spec)
    home = tmp_path / ".agent-etl"
    try:
        result = await AgentCoordinator(home=home).run(tmp_path / "p.yaml")
        assert not result.ok
        # the load prepared its XA transaction, then the barrier told it the sibling had failed
        assert "rolled back its commit: sibling load 'lake'" in result.tasks[task].error
        assert sql(db, "SELECT id, v FROM dst") == ((-1, "before"),)
        assert prepared(task) == []
        assert decided(home, result.run_id) == []
    finally:
        roll_back_left(task)


@pytest.mark.parametrize("decision", [True, False])
def test_a_crash_between_prepare_and_commit_is_settled_by_the_decision(tmp_path, mysql_db, decision):
    db, url = mysql_db
    task = f"copy_{db}"
    sql(db, "CREATE TABLE dst (id BIGINT, v VARCHAR(20))", fetch=False)
    try:
        die_in_prepare(tmp_path, "mysql", url, task, "dst")
        left = prepared(task)
        assert [(run, unit) for run, unit, _ in left] == [("crash-run", 1)]
        asked = []

        def decided(run_id: str, unit: int) -> bool:
            asked.append((run_id, unit))
            return decision

        ctx = tool_context(tmp_path, task=task, run_id="crash-run", connections={"db": {"url": url}})
        ctx.decided = decided
        load = build("loader", "mysql", {"connection": "db", "table": "dst"}, ctx)
        held = asyncio.run(load.committed())
        assert asked == [("crash-run", 1)]
        assert prepared(task) == []
        if decision:
            assert held == {"rows": 3, "commits": 1, "position": {"src": {"rows": 3}}}
            assert sorted(sql(db, "SELECT id, v FROM dst")) == [(1, "a"), (2, "b"), (3, "c")]
        else:
            assert held is None
            assert sql(db, "SELECT COUNT(*) FROM dst") == ((0,),)
    finally:
        roll_back_left(task)


def test_without_a_run_store_a_prepared_transaction_is_left_with_a_warning(tmp_path, mysql_db, caplog):
    db, url = mysql_db
    task = f"copy_{db}"
    sql(db, "CREATE TABLE dst (id BIGINT, v VARCHAR(20))", fetch=False)
    try:
        die_in_prepare(tmp_path, "mysql", url, task, "dst")
        ctx = tool_context(tmp_path, task=task, run_id="crash-run", connections={"db": {"url": url}})
        load = build("loader", "mysql", {"connection": "db", "table": "dst"}, ctx)
        asyncio.run(load.committed())
        assert len(prepared(task)) == 1
        assert "prepared XA transaction" in caplog.text
    finally:
        roll_back_left(task)


def test_long_names_fit_the_xid():
    x = xa.xid("r" * 80, "t" * 80, 12)
    g, b = (bytes.fromhex(p[2:-1]) for p in x.split(","))
    assert len(g) <= 64 and len(b) <= 64 and g.startswith(b"agent-etl/#") and g.endswith(b"/12")
    assert textwrap.dedent(x) == x


async def test_the_barrier_records_each_complete_round_before_releasing():
    from agent_etl.agents.commits import CommitBarrier

    rounds = []
    barrier = CommitBarrier(["db", "lake"], ["db"], rounds.append)
    await barrier.prepare("db", False)
    await barrier.prepare("db", False)
    assert rounds == [[("db", 1)], [("db", 2)]]
    await asyncio.gather(barrier.prepare("db", True), barrier.prepare("lake", True))
    assert rounds[2] == [("db", 3), ("lake", 1)]


async def test_a_decision_that_cannot_be_recorded_releases_nobody_to_commit():
    from agent_etl.agents.commits import CommitBarrier
    from agent_etl.exceptions import SiblingFailed

    def refuse(members):
        raise OSError("disk full")

    barrier = CommitBarrier(["db", "lake"], [], refuse)
    got = await asyncio.gather(barrier.prepare("db", True), barrier.prepare("lake", True), return_exceptions=True)
    assert isinstance(got[0], SiblingFailed) and isinstance(got[1], OSError)


def test_a_run_the_store_does_not_know_is_not_ours_to_settle(tmp_path):
    from agent_etl.store.runs import RunStore

    store = RunStore.at(tmp_path)
    try:
        store.start_run("r1", "p", "f", None, [])
        store.decide("r1", [("load", 1)])
        assert store.decided("r1", "load", 1) is True and store.decided("r1", "load", 2) is False
        assert store.decided("another-pipelines-run", "load", 1) is None
    finally:
        store.close()
