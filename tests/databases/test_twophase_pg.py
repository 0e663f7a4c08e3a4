"""Two-phase commit of a PostgreSQL load with sibling loads (``defaults.commit: together``) on a
server with ``max_prepared_transactions > 0``: a private server started for these tests (the
shared one has 0), the barrier's decisions, the rollback of a prepared unit when a sibling fails,
and the settling of a transaction a crash left prepared between PREPARE TRANSACTION and COMMIT
PREPARED. On the shared server a load with siblings keeps plain transactions."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import psycopg
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from agent_etl.agents.coordinator import AgentCoordinator
from agent_etl.store.runs import RunStore
from agent_etl.store.schema import decisions
from agent_etl.testing import build, tool_context
from agent_etl.tools.databases.postgres import twophase
from tests.databases.prepared_crash import die_in_prepare

ROWS = 5000


@pytest.fixture(scope="session")
def pg2pc():
    """A private PostgreSQL server with max_prepared_transactions = 10: its url (database postgres)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins or not all(os.path.exists(os.path.join(bins[-1], b)) for b in ("initdb", "pg_ctl")):
        pytest.skip("initdb and pg_ctl not found under /usr/lib/postgresql/*/bin")
    if shutil.which("runuser") is None:
        pytest.skip("runuser not found (PostgreSQL refuses to run as root)")
    bin_dir = bins[-1]
    base = tempfile.mkdtemp(prefix="pg2pc-")
    shutil.chown(base, "postgres", "postgres")
    data = os.path.join(base, "data")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)

    started = False
    try:
        run(f"{bin_dir}/initdb", "-A", "trust", "-U", "postgres", "-D", data)
        run(f"{bin_dir}/pg_ctl", "-D", data, "-l", os.path.join(base, "log"), "-w", "start", "-o",
            f"-p {port} -c max_prepared_transactions=10 -c listen_addresses=127.0.0.1 -k {base}")
        started = True
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        for _ in range(100):
            try:
                psycopg.connect(url).close()
                break
            except psycopg.OperationalError:
                time.sleep(0.1)
        yield url
    finally:
        if started:
            subprocess.run(["runuser", "-u", "postgres", "--", f"{bin_dir}/pg_ctl", "-D", data, "stop", "-m", "fast"],
                           capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def schema(pg2pc):
    """A fresh schema on the private server, with a source table src of ROWS rows: ``(schema, url)``."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg2pc, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
        conn.execute(f'CREATE TABLE "{name}".src (id bigint PRIMARY KEY, v text)')
        conn.execute(f"INSERT INTO \"{name}\".src SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g")
        try:
            yield name, pg2pc
        finally:
            for g in [g for (g,) in conn.execute("SELECT gid FROM pg_prepared_xacts").fetchall() if name in g]:
                conn.execute(f"ROLLBACK PREPARED '{g}'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def sql(url: str, statement: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def prepared(url: str, task: str) -> list[tuple[str, int, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return twophase.prepared(conn, task)


PIPELINE = """\
version: 1
name: twophase
defaults: {{batch_size: 1000, commit_every: {{rows: 2000}}, commit: together}}
connections:
  pg: {{url: "{url}"}}
extract:
  src: {{tool: postgres, connection: pg, table: {schema}.src}}
load:
  {task}: {{input: src, tool: postgres, connection: pg, table: {schema}.dst}}
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


class Spy:
    """Record the gids the loader prepares."""

    def __init__(self, monkeypatch):
        self.gids: list[str] = []
        real = twophase.TwoPhase.prepare

        def prepare(tp, conn):
            real(tp, conn)
            self.gids.append(tp.gid)

        monkeypatch.setattr(twophase.TwoPhase, "prepare", prepare)


async def test_a_load_with_a_parquet_sibling_commits_its_units_with_prepare_transaction(tmp_path, schema,
                                                                                         monkeypatch):
    name, url = schema
    task = f"copy_{name}"
    spy = Spy(monkeypatch)
    (tmp_path / "p.yaml").write_text(PIPELINE.format(url=url, schema=name, task=task, path="out/src.parquet"))
    home = tmp_path / ".agent-etl"
    result = await AgentCoordinator(home=home).run(tmp_path / "p.yaml")
    assert result.ok, result.error
    assert sql(url, f"SELECT COUNT(*), COUNT(DISTINCT id) FROM {name}.dst") == [(ROWS, ROWS)]
    assert pq.read_table(tmp_path / "out" / "src.parquet").num_rows == ROWS
    assert [r[0] for r in sql(url, f"SELECT rows FROM {name}._agent_etl_checkpoints ORDER BY committed_at")] == \
        [2000, 2000, 1000]
    assert decided(home, result.run_id) == sorted([("lake", 1), (task, 1), (task, 2), (task, 3)])
    assert spy.gids == [f"agent-etl/{result.run_id}/{u}/{task}" for u in (1, 2, 3)]
    assert prepared(url, task) == []


async def test_a_failing_sibling_rolls_the_prepared_unit_back(tmp_path, schema, monkeypatch):
    name, url = schema
    sql(url, f"CREATE TABLE {name}.dst (id bigint, v text)")
    sql(url, f"INSERT INTO {name}.dst VALUES (-1, 'before')")
    task = f"copy_{name}"
    spy = Spy(monkeypatch)
    (tmp_path / "out").write_text("a file, not a folder")  # the parquet load cannot write its file
    spec = PIPELINE.format(url=url, schema=name, task=task, path="out/src.parquet").replace(
        "commit_every: {rows: 2000}, ", "")
    (tmp_path / "p.yaml").write_text(spec)
    home = tmp_path / ".agent-etl"
    result = await AgentCoordinator(home=home).run(tmp_path / "p.yaml")
    assert not result.ok
    assert "rolled back its commit: sibling load 'lake'" in result.tasks[task].error
    assert len(spy.gids) == 1  # it had prepared its unit
    assert sql(url, f"SELECT id, v FROM {name}.dst") == [(-1, "before")]
    assert prepared(url, task) == []
    assert decided(home, result.run_id) == []


@pytest.mark.parametrize("decision", [True, False])
def test_a_crash_between_prepare_and_commit_is_settled_by_the_decision(tmp_path, schema, decision):
    name, url = schema
    task = f"copy_{name}"
    sql(url, f"CREATE TABLE {name}.dst (id bigint, v text)")
    die_in_prepare(tmp_path, "postgres", url, task, f"{name}.dst")
    assert [(run, unit) for run, unit, _ in prepared(url, task)] == [("crash-run", 1)]
    asked = []

    def decided(run_id: str, unit: int) -> bool:
        asked.append((run_id, unit))
        return decision

    ctx = tool_context(tmp_path, task=task, run_id="crash-run", connections={"db": {"url": url}})
    ctx.decided = decided
    load = build("loader", "postgres", {"connection": "db", "table": f"{name}.dst"}, ctx)
    held = asyncio.run(load.committed())
    assert asked == [("crash-run", 1)]
    assert prepared(url, task) == []
    if decision:
        assert held == {"rows": 3, "commits": 1, "position": {"src": {"rows": 3}}}
        assert sorted(sql(url, f"SELECT id, v FROM {name}.dst")) == [(1, "a"), (2, "b"), (3, "c")]
    else:
        assert held is None
        assert sql(url, f"SELECT COUNT(*) FROM {name}.dst") == [(0,)]


async def test_on_a_server_without_prepared_transactions_siblings_commit_plainly(tmp_path, pg_source, monkeypatch):
    """The shared server (max_prepared_transactions = 0): the same pipeline, plain transactions."""
    with psycopg.connect(pg_source.url) as conn:
        if twophase.enabled(conn):
            pytest.skip("the shared server allows prepared transactions")
    pg_source.run("CREATE TABLE src (id bigint PRIMARY KEY, v text)")
    pg_source.run(f"INSERT INTO src SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g")
    spy = Spy(monkeypatch)
    task = f"copy_{pg_source.schema}"
    (tmp_path / "p.yaml").write_text(PIPELINE.format(url=pg_source.url, schema=pg_source.schema, task=task,
                                                     path="out/src.parquet"))
    home = tmp_path / ".agent-etl"
    result = await AgentCoordinator(home=home).run(tmp_path / "p.yaml")
    assert result.ok, result.error
    assert pg_source.run("SELECT COUNT(*) FROM dst") == [(ROWS,)]
    assert [r[0] for r in pg_source.run("SELECT rows FROM _agent_etl_checkpoints ORDER BY committed_at")] == \
        [2000, 2000, 1000]
    assert spy.gids == []


def test_long_names_fit_the_gid():
    g = twophase.gid("r" * 150, "t" * 150, 12)
    assert len(g.encode()) <= 199 and g.startswith("agent-etl/#") and g.endswith("/12/#" + g.rsplit("#", 1)[1])
    assert twophase.gid("run", "task", 3) == "agent-etl/run/3/task"
    g = twophase.gid("run", "t" * 190, 3)
    assert g.startswith("agent-etl/run/3/#") and len(g) <= 199
