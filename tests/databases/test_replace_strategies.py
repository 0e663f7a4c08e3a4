"""replace_strategy of the sqlite, duckdb and mysql loaders (``databases.replace``): which path a
replace takes, what it keeps, and what makes auto fall back to DELETE + INSERT (the run's details
say which path and why). What every database loader must keep is the contract suite's
(tests/contract/test_loaders.py); these are the database-specific objects."""

from __future__ import annotations

import sqlite3

import pyarrow as pa
import pytest

from agent_etl.exceptions import ToolError
from agent_etl.testing import build, tool_context


async def _stream(*batches):
    for b in batches:
        yield b


def _batch(ids, version):
    return pa.record_batch({"id": pa.array(ids, pa.int64()), "version": pa.array([version] * len(ids), pa.int64())})


async def replace(tmp_path, tool, url, strategy="auto", batch=None):
    ctx = tool_context(tmp_path, connections={"db": {"url": url}})
    options = {"connection": "db", "table": "t", "mode": "replace"}
    if strategy != "auto":
        options["replace_strategy"] = strategy
    loader = build("loader", tool, options, ctx)
    try:
        await loader.load(_stream(batch if batch is not None else _batch([7, 8], 2)))
        return loader.details()["replace"]
    finally:
        await ctx.resources.aclose()


async def test_sqlite_swap_keeps_constraints_indexes_triggers_and_views(tmp_path):
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as c:
        c.executescript("""
            CREATE TABLE t (id INTEGER PRIMARY KEY, version INTEGER NOT NULL CHECK (version > 0),
                            note TEXT DEFAULT 'n');
            CREATE INDEX t_version ON t (version);
            CREATE TABLE log (id INTEGER);
            CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.id); END;
            CREATE VIEW v AS SELECT id FROM t;
            INSERT INTO t (id, version) VALUES (1, 1);""")
    assert await replace(tmp_path, "sqlite", f"sqlite:///{path}", "swap") == "swap (replace_strategy: swap)"
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT id, version, note FROM t ORDER BY id").fetchall() == [(7, 2, "n"), (8, 2, "n")]
        assert c.execute("SELECT id FROM v ORDER BY id").fetchall() == [(7,), (8,)]
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE tbl_name = 't'")}
        assert {"t", "t_version", "t_log"} <= names
        c.execute("INSERT INTO t (id, version) VALUES (9, 1)")  # the trigger is back on the new table
        assert c.execute("SELECT id FROM log").fetchall() == [(1,), (9,)]
        with pytest.raises(sqlite3.IntegrityError):
            c.execute("INSERT INTO t (id, version) VALUES (10, 0)")  # and the CHECK constraint
    # a bad row fails the swap on the carried constraint, and the table stays
    with pytest.raises(ToolError, match="CHECK"):
        await replace(tmp_path, "sqlite", f"sqlite:///{path}", "swap", batch=_batch([20], 0))
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == (3,)


async def test_sqlite_auto_inserts_and_a_foreign_key_to_the_table_makes_swap_fail(tmp_path):
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as c:
        c.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, version INTEGER);"
                        "CREATE TABLE child (t_id INTEGER REFERENCES t (id)); INSERT INTO t VALUES (1, 1);")
    with pytest.raises(ToolError, match="replace_strategy: swap, but .* foreign key of table child"):
        await replace(tmp_path, "sqlite", f"sqlite:///{path}", "swap")
    # auto inserts on SQLite, where a swap measured no faster
    assert (await replace(tmp_path, "sqlite", f"sqlite:///{path}")).startswith("insert (SQLite: a swap is no faster")
    assert await replace(tmp_path, "sqlite", f"sqlite:///{path}", "insert") == "insert (replace_strategy: insert)"
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT id, version FROM t ORDER BY id").fetchall() == [(7, 2), (8, 2)]


async def test_duckdb_swap_keeps_constraints_and_indexes_and_a_foreign_key_makes_auto_insert(tmp_path):
    import duckdb

    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as c:
        c.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, version BIGINT NOT NULL, note VARCHAR DEFAULT 'n')")
        c.execute("CREATE INDEX t_version ON t (version)")
        c.execute("INSERT INTO t (id, version) VALUES (1, 1)")
    assert await replace(tmp_path, "duckdb", f"duckdb:///{path}") == "swap"
    with duckdb.connect(str(path)) as c:
        assert c.execute("SELECT id, version, note FROM t ORDER BY id").fetchall() == [(7, 2, "n"), (8, 2, "n")]
        assert c.execute("SELECT index_name FROM duckdb_indexes() WHERE table_name = 't'").fetchall() == \
            [("t_version",)]
        with pytest.raises(duckdb.ConstraintException):
            c.execute("INSERT INTO t (id, version) VALUES (7, 3)")  # the primary key came along
        c.execute("CREATE TABLE child (t_id BIGINT REFERENCES t (id))")
    with pytest.raises(ToolError, match="foreign key of table main.child"):
        await replace(tmp_path, "duckdb", f"duckdb:///{path}", "swap")
    assert await replace(tmp_path, "duckdb", f"duckdb:///{path}", batch=_batch([7, 9], 3)) == \
        "insert (a foreign key of table main.child points at the table)"


async def test_mysql_swap_is_create_like_and_a_trigger_makes_auto_insert(tmp_path, mysql_db):
    import pymysql

    name, url = mysql_db
    conn = pymysql.connect(host="127.0.0.1", user="root", database=name, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, version BIGINT NOT NULL, note VARCHAR(9) "
                        "DEFAULT 'n', INDEX t_version (version)) COMMENT 'kept'")
            cur.execute("INSERT INTO t (id, version) VALUES (1, 1)")
        assert await replace(tmp_path, "mysql", url) == "swap"
        with conn.cursor() as cur:
            cur.execute("SELECT id, version, note FROM t ORDER BY id")
            assert cur.fetchall() == ((7, 2, "n"), (8, 2, "n"))
            cur.execute(f"SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = '{name}' "
                        "AND TABLE_NAME = 't' ORDER BY INDEX_NAME")
            assert cur.fetchall() == (("PRIMARY",), ("t_version",))
            cur.execute(f"SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{name}' "
                        "AND TABLE_NAME = 't'")
            assert cur.fetchall() == (("kept",),)
            cur.execute("CREATE TABLE log (id BIGINT)")
            cur.execute("CREATE TRIGGER t_log AFTER INSERT ON t FOR EACH ROW INSERT INTO log VALUES (NEW.id)")
        with pytest.raises(ToolError, match="trigger t_log on the table"):
            await replace(tmp_path, "mysql", url, "swap")
        assert await replace(tmp_path, "mysql", url, batch=_batch([5], 3)) == "insert (trigger t_log on the table)"
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM log")
            assert cur.fetchall() == ((5,),)  # the trigger stayed on the table and fired
    finally:
        conn.close()


async def test_mysql_swap_keeps_the_auto_increment_counter(tmp_path, mysql_db):
    """CREATE TABLE ... LIKE starts the counter at 1: a row added after the replace would take an id the
    old table had already given (and that other systems may still hold). The swap carries it over."""
    import pymysql

    name, url = mysql_db
    conn = pymysql.connect(host="127.0.0.1", user="root", database=name, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id BIGINT AUTO_INCREMENT PRIMARY KEY, version BIGINT NOT NULL)")
            cur.execute("INSERT INTO t (version) VALUES " + ", ".join(["(1)"] * 20))
            cur.execute("DELETE FROM t WHERE id > 2")  # the counter stays at 21
        assert await replace(tmp_path, "mysql", url) == "swap"
        with conn.cursor() as cur:
            cur.execute("INSERT INTO t (version) VALUES (3)")
            cur.execute("SELECT id, version FROM t ORDER BY id")
            assert cur.fetchall() == ((7, 2), (8, 2), (21, 3))
    finally:
        conn.close()
