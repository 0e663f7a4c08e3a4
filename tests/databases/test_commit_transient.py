"""Which failures of a load are transient (retried, then resumed after the last committed unit):
real lock waits that time out, on every database loader, and the driver errors behind them."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from urllib.parse import quote

import pyarrow as pa
import pytest

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.testing import build, tool_context
from agent_etl.tools.databases.transient import transient

PG = "postgresql://postgres@127.0.0.1:5432/test"


def batch(ids: list[int]) -> pa.RecordBatch:
    return pa.record_batch({"id": pa.array(ids, pa.int64()), "v": [f"v{i}" for i in ids]})


async def stream(*batches):
    for b in batches:
        yield b


async def load(tmp_path, tool: str, url: str, table: str, mode: str = "append"):
    ctx = tool_context(tmp_path, task="load", connections={"db": {"url": url}})
    options = {"connection": "db", "table": table, "mode": mode, **({"key": ["id"]} if mode == "merge" else {})}
    try:
        return await build("loader", tool, options, ctx).load(stream(batch([1, 2, 3])))
    finally:
        await ctx.resources.aclose()


@pytest.fixture
def pg_schema():
    import psycopg

    name = f"tr_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
        conn.execute(f'CREATE TABLE "{name}".t (id bigint PRIMARY KEY, v text)')
        try:
            yield name
        finally:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.mark.parametrize("tool", ["postgres", "sql"])
async def test_a_postgres_lock_timeout_is_transient(tmp_path, pg_schema, tool):
    import psycopg

    url = PG + "?options=" + quote("-c lock_timeout=200")
    if tool == "sql":
        url = url.replace("postgresql://", "postgresql+psycopg://")
    with psycopg.connect(PG) as holder:  # holds the table until the load gave up
        holder.execute(f'LOCK TABLE "{pg_schema}".t IN ACCESS EXCLUSIVE MODE')
        with pytest.raises(TransientError, match="lock timeout"):
            await load(tmp_path, tool, url, f"{pg_schema}.t")
        holder.rollback()
    assert await load(tmp_path, tool, url, f"{pg_schema}.t") == 3  # the same load, tried again


@pytest.fixture
def maria_db():
    import pymysql

    name = f"tr_{uuid.uuid4().hex[:12]}"
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            cur.execute(f"CREATE TABLE `{name}`.t (id BIGINT PRIMARY KEY, v VARCHAR(20))")
            cur.execute(f"INSERT INTO `{name}`.t VALUES (1, 'old')")
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.mark.parametrize("tool", ["mysql", "sql"])
async def test_a_mariadb_lock_wait_timeout_is_transient(tmp_path, maria_db, tool):
    import pymysql

    from agent_etl.tools.databases.mysql import connections

    url = f"mysql://root@127.0.0.1:3306/{maria_db}"
    ctx = tool_context(tmp_path, task="load", connections={"db": {"url": url}})
    if tool == "sql":
        ctx.connections["db"]["url"] = (f"mysql+pymysql://root@127.0.0.1:3306/{maria_db}?charset=utf8mb4&init_command="
                                        + quote("SET innodb_lock_wait_timeout = 1"))
    else:  # the run's pool lends this connection to the load: it waits 1s for a row lock, not 50
        pool = connections.pool(ctx, "db")
        conn = pool.acquire()
        with conn.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
        pool.release(conn)
    holder = pymysql.connect(host="127.0.0.1", user="root", database=maria_db)
    try:
        with holder.cursor() as cur:
            cur.execute("UPDATE t SET v = 'held' WHERE id = 1")  # a row lock, until rollback
        loader = build("loader", tool, {"connection": "db", "table": "t", "mode": "merge", "key": ["id"]}, ctx)
        with pytest.raises(TransientError, match="Lock wait timeout"):
            await loader.load(stream(batch([1, 2, 3])))
        holder.rollback()
        loader = build("loader", tool, {"connection": "db", "table": "t", "mode": "merge", "key": ["id"]}, ctx)
        assert await loader.load(stream(batch([1, 2, 3]))) == 3
    finally:
        holder.close()
        await ctx.resources.aclose()


@pytest.mark.parametrize("tool", ["sqlite", "sql"])
async def test_a_sqlite_file_locked_by_another_writer_is_transient(tmp_path, tool):
    db = tmp_path / "d.db"
    url = "sqlite:///d.db?timeout=0.1" if tool == "sqlite" else f"sqlite:///{db}?timeout=0.1"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as holder:
        holder.execute("CREATE TABLE t (id INTEGER, v TEXT)")
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(TransientError, match="database is locked"):
            await load(tmp_path, tool, url, "t")
        holder.execute("ROLLBACK")
    assert await load(tmp_path, tool, url, "t") == 3


def test_driver_errors_of_real_servers_are_classified(pg_schema):
    """A serialization failure and a deadlock are transient; a duplicate key and bad SQL are not."""
    import psycopg

    t = f'"{pg_schema}".t'
    with psycopg.connect(PG, autocommit=True) as a, psycopg.connect(PG, autocommit=True) as b:
        a.execute(f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b')")
        with pytest.raises(psycopg.Error) as dup:
            a.execute(f"INSERT INTO {t} VALUES (1, 'again')")
        with pytest.raises(psycopg.Error) as bad:
            a.execute("SELEC 1")
        with pytest.raises(psycopg.Error) as serial, a.transaction():
            a.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            a.execute(f"SELECT * FROM {t}").fetchall()
            b.execute(f"UPDATE {t} SET v = 'b wins' WHERE id = 1")
            a.execute(f"UPDATE {t} SET v = 'a loses' WHERE id = 1")
        # a deadlock: each holds one row and waits for the other's
        errors: list[BaseException] = []

        def second() -> None:
            try:
                with b.transaction():
                    b.execute(f"UPDATE {t} SET v = 'b' WHERE id = 2")
                    started.set()
                    go.wait(5)
                    b.execute(f"UPDATE {t} SET v = 'b' WHERE id = 1")
            except psycopg.Error as e:
                errors.append(e)

        started, go = threading.Event(), threading.Event()
        worker = threading.Thread(target=second)
        worker.start()
        try:
            with a.transaction():
                started.wait(5)
                a.execute(f"UPDATE {t} SET v = 'a' WHERE id = 1")
                go.set()
                a.execute("SET LOCAL deadlock_timeout = '100ms'")
                a.execute(f"UPDATE {t} SET v = 'a' WHERE id = 2")
        except psycopg.Error as e:
            errors.append(e)
        worker.join()
    assert type(serial.value).__name__ == "SerializationFailure" and transient(serial.value)
    assert [type(e).__name__ for e in errors] == ["DeadlockDetected"] and transient(errors[0])
    assert not transient(dup.value) and not transient(bad.value)


def test_mariadb_deadlock_is_transient_and_a_duplicate_key_is_not(maria_db):
    import pymysql

    a = pymysql.connect(host="127.0.0.1", user="root", database=maria_db)
    b = pymysql.connect(host="127.0.0.1", user="root", database=maria_db)
    try:
        with a.cursor() as ca, b.cursor() as cb:
            ca.execute("INSERT INTO t VALUES (2, 'b')")
            a.commit()
            ca.execute("UPDATE t SET v = 'a' WHERE id = 1")
            cb.execute("UPDATE t SET v = 'b' WHERE id = 2")
            errors: list[BaseException] = []

            def blocked() -> None:
                try:
                    ca.execute("UPDATE t SET v = 'a' WHERE id = 2")  # waits for b
                except pymysql.Error as e:
                    errors.append(e)

            waiting = threading.Thread(target=blocked)
            waiting.start()
            threading.Event().wait(0.3)
            try:
                cb.execute("UPDATE t SET v = 'b' WHERE id = 1")  # closes the cycle: one of them is chosen
            except pymysql.Error as e:
                errors.append(e)
            waiting.join(10)
            a.rollback()
            b.rollback()
            with pytest.raises(pymysql.Error) as dup:
                ca.execute("INSERT INTO t VALUES (1, 'again')")
    finally:
        a.close()
        b.close()
    assert [e.args[0] for e in errors] == [1213] and transient(errors[0])
    assert not transient(dup.value)


async def test_a_constraint_violation_stays_a_tool_error(tmp_path, pg_schema):
    with pytest.raises(ToolError) as e:
        await load(tmp_path, "postgres", PG, f"{pg_schema}.t", mode="append")
        await load(tmp_path, "postgres", PG, f"{pg_schema}.t", mode="append")  # the same keys again
    assert not isinstance(e.value, TransientError) and "violates a constraint" in str(e.value)


async def test_a_duckdb_write_write_conflict_is_transient(tmp_path):
    """Two loads of a first run into one new table both create it: the one that loses is retried.
    (Into two new tables of one new schema both commit: the schema is made before the load's transaction.)"""
    import asyncio

    from agent_etl.exceptions import SiblingFailed

    barrier = asyncio.Barrier(2)

    async def prepare(final: bool) -> None:  # the two wait for each other with their transactions open
        try:
            await asyncio.wait_for(barrier.wait(), 20)
        except asyncio.BrokenBarrierError:
            raise SiblingFailed("the sibling load failed") from None

    async def run(i: int):
        ctx = tool_context(tmp_path, task=f"load{i}", connections={"db": {"url": "duckdb:///one.duckdb"}},
                           prepare=prepare)
        try:
            return await build("loader", "duckdb", {"connection": "db", "table": "s.t"}, ctx).load(
                stream(batch([1, 2, 3])))
        except BaseException:
            await barrier.abort()
            raise
        finally:
            await ctx.resources.aclose()

    results = await asyncio.gather(run(0), run(1), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["SiblingFailed", "TransientError"], results
    assert "write-write conflict" in str(next(r for r in results if isinstance(r, TransientError)))
