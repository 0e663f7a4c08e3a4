"""PostgreSQL upsert in stage chunks: a merge into a table with rows (and a unique index on the key)
upserts its stage every STAGE_ROWS rows within the unit's transaction, while the next rows are
encoded (``databases.postgres.merging``, ``_apply_stage``; ``databases.postgres.sender``). The chunks go
in in input order: the last row of a key wins across chunks, new columns reach the table before the
chunk that first has them, and a failure in a late chunk leaves the table as it was.

Where the server allows, each chunk is staged on a second connection into an UNLOGGED table while
the chunk before is upserted (``databases.postgres.stage_ahead``); those tables are gone when the
load has ended, whatever its end, and those of a killed process go with the next merge."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from agent_etl.exceptions import ToolError
from agent_etl.testing import build, tool_context
from agent_etl.tools.databases.postgres import ddl, merging
from tests.databases.test_postgres_load import execute, expected_merge, query
from tests.databases.test_postgres_merge import merge, rows

OLD = pa.table({"id": [2, 9, 40], "v": ["old", "old", "old"]})


def stage_tables(target) -> list[str]:
    """The stage tables of StageAhead left in the test's schema."""
    return [r[0] for r in query(target, "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                        "WHERE n.nspname = current_schema() AND starts_with(relname, '_agent_etl_stage')")]


def _ids(kind: str) -> list[int]:
    rng = random.Random(7)
    return {"increasing": list(range(1, 31)),
            "repeats across chunks": [1, 2, 3, 4, 1, 2, 5, 6, 9, 1, 7, 8],
            "repeats in a chunk": [3, 3, 3, 1, 2, 1, 4, 4, 2, 9],
            "random": [rng.randrange(60) for _ in range(400)]}[kind]


@pytest.mark.parametrize("kind", ["increasing", "repeats across chunks", "repeats in a chunk", "random"])
async def test_the_stage_goes_in_by_chunks_and_the_last_row_of_a_key_wins(pg_target, tmp_path, monkeypatch, kind):
    monkeypatch.setattr(merging, "STAGE_ROWS", 4)
    execute(pg_target, "CREATE TABLE t (id bigint PRIMARY KEY, v text)",
            "INSERT INTO t VALUES (2, 'old'), (9, 'old'), (40, 'old')")
    ids = _ids(kind)
    data = pa.table({"id": ids, "v": [f"v{i}" for i in range(len(ids))]})
    commits: list[int] = []
    ctx_loader: list = []
    details = await merge(data, pg_target, tmp_path, batch_size=3, commits=commits, loader_out=ctx_loader)
    assert details == {"merge": "upsert"}
    assert rows(pg_target) == expected_merge(OLD, data, ["id"])
    assert commits == [len(ids)]  # one unit, one commit
    # at least every 4 rows, or more while the server was busy with a chunk (the parts encoded meanwhile
    # go in together); the last chunk goes in with the unit's end
    assert 1 <= ctx_loader[0].session.applied <= (len(ids) - 1) // 4
    assert ctx_loader[0].session.overlapped and stage_tables(pg_target) == []  # staged ahead, then dropped


async def test_a_column_new_in_a_later_chunk_is_added_before_that_chunk(pg_target, tmp_path, monkeypatch):
    monkeypatch.setattr(merging, "STAGE_ROWS", 2)
    execute(pg_target, "CREATE TABLE t (id bigint PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'old'), (5, 'old')")

    async def batches():
        yield pa.record_batch({"id": [1, 2], "v": ["a", "b"]})
        yield pa.record_batch({"id": [3, 4], "v": ["c", "d"]})
        yield pa.record_batch({"id": [5, 2], "v": ["e", "f"], "w": [50, 20]})
        yield pa.record_batch({"id": [6], "v": ["g"], "w": [60]})

    schema, url = pg_target
    ctx = tool_context(tmp_path, task="load", connections={"pg": {"url": url}})
    loader = build("loader", "postgres", {"connection": "pg", "table": f'"{schema}".t', "mode": "merge",
                                          "key": "id"}, ctx)
    try:
        assert await loader.load(batches()) == 7
    finally:
        await ctx.resources.aclose()
    assert loader.session.applied >= 2
    assert query(pg_target, "SELECT id, v, w FROM t ORDER BY id") == [
        (1, "a", None), (2, "f", 20), (3, "c", None), (4, "d", None), (5, "e", 50), (6, "g", 60)]


async def test_a_bad_row_in_a_late_chunk_leaves_the_table_as_it_was(pg_target, tmp_path, monkeypatch):
    monkeypatch.setattr(merging, "STAGE_ROWS", 2)
    execute(pg_target, "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL)", "INSERT INTO t VALUES (1, 'old')")
    data = pa.table({"id": [1, 2, 3, 4, 5, 6, 7], "v": ["a", "b", "c", "d", "e", None, "g"]})
    with pytest.raises(ToolError, match="not-null constraint"):
        await merge(data, pg_target, tmp_path, batch_size=2)
    assert rows(pg_target) == [(1, "old")]
    assert stage_tables(pg_target) == []


async def test_commit_units_each_upsert_their_own_chunks(pg_target, tmp_path, monkeypatch):
    monkeypatch.setattr(merging, "STAGE_ROWS", 2)
    execute(pg_target, "CREATE TABLE t (id bigint PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'old')")
    data = pa.table({"id": [1, 2, 3, 1, 5, 6, 2, 8, 9], "v": list("abcdefghi")})
    commits: list[int] = []
    await merge(data, pg_target, tmp_path, batch_size=3, units=lambda: True, commits=commits)
    assert commits == [3, 3, 3]
    assert rows(pg_target) == expected_merge(pa.table({"id": [1], "v": ["old"]}), data, ["id"])
    assert stage_tables(pg_target) == []


async def test_a_failure_while_a_chunk_is_being_staged_leaves_no_stage_table(pg_target, tmp_path, monkeypatch):
    """The stream fails after chunks were staged ahead and upserted: the table is as it was, and the
    second connection's tables (committed ones, and the one mid-COPY) are dropped."""
    monkeypatch.setattr(merging, "STAGE_ROWS", 2)
    execute(pg_target, "CREATE TABLE t (id bigint PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'old')")

    async def batches():
        for i in range(5):
            yield pa.record_batch({"id": [2 * i, 2 * i + 1], "v": ["x", "y"]})
        raise RuntimeError("the source broke")

    schema, url = pg_target
    ctx = tool_context(tmp_path, task="load", connections={"pg": {"url": url}})
    loader = build("loader", "postgres", {"connection": "pg", "table": f'"{schema}".t', "mode": "merge",
                                          "key": "id"}, ctx)
    try:
        with pytest.raises(RuntimeError, match="the source broke"):
            await loader.load(batches())
    finally:
        await ctx.resources.aclose()
    assert loader.session.applied >= 1 and loader.session.overlapped
    assert rows(pg_target) == [(1, "old")]
    assert stage_tables(pg_target) == []


async def test_the_stage_tables_of_a_killed_process_go_with_the_next_merge(pg_target, tmp_path, monkeypatch):
    import psycopg

    monkeypatch.setattr(merging, "STAGE_ROWS", 2)
    schema, url = pg_target
    execute(pg_target, "CREATE TABLE t (id bigint PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'old')")
    with psycopg.connect(url, autocommit=True) as other:  # a live session's stage table stays
        live = other.execute("SELECT pg_backend_pid()").fetchone()[0]
        dead = max(r[0] for r in other.execute("SELECT pid FROM pg_stat_activity").fetchall()) + 100_000
        for pid in (live, dead):
            other.execute(f'CREATE UNLOGGED TABLE "{schema}"._agent_etl_stage_{pid}_abcdef_1 (id bigint)')
        data = pa.table({"id": [1, 2, 3, 4, 5], "v": list("abcde")})
        await merge(data, pg_target, tmp_path, batch_size=2)
        assert stage_tables(pg_target) == [f"_agent_etl_stage_{live}_abcdef_1"]
    assert rows(pg_target) == expected_merge(pa.table({"id": [1], "v": ["old"]}), data, ["id"])


@pytest.mark.parametrize("limit", ["no CREATE on the schema", "one connection for the role"])
async def test_where_a_second_stage_is_not_allowed_the_chunks_are_staged_in_the_session(pg_target, tmp_path,
                                                                                          monkeypatch, limit):
    """A role that may write the table but not create tables in its schema, or that may open one
    connection only: the TEMP stage, as before."""
    import uuid

    import psycopg

    monkeypatch.setattr(merging, "STAGE_ROWS", 2)
    schema, url = pg_target
    role = f"merger_{uuid.uuid4().hex[:10]}"
    execute(pg_target, "CREATE TABLE t (id bigint PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'old')")
    with psycopg.connect(url, autocommit=True) as admin:
        ddl.checkpoint(admin.cursor(), schema)  # the loader's checkpoint table, made by whoever may
        admin.execute(f'CREATE ROLE "{role}" LOGIN' + (" CONNECTION LIMIT 1" if limit.startswith("one") else ""))
        try:
            privileges = "USAGE, CREATE" if limit.startswith("one") else "USAGE"
            admin.execute(f'GRANT {privileges} ON SCHEMA "{schema}" TO "{role}"')
            admin.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
            as_role = (schema, url.replace("postgres@", f"{role}@"))
            data = pa.table({"id": [1, 2, 3, 4, 5, 6, 7], "v": list("abcdefg")})
            loaders: list = []
            assert await merge(data, as_role, tmp_path, batch_size=2, loader_out=loaders) == {"merge": "upsert"}
            assert loaders[0].session.applied >= 1 and not loaders[0].session.overlapped
            assert rows(pg_target) == expected_merge(pa.table({"id": [1], "v": ["old"]}), data, ["id"])
            assert stage_tables(pg_target) == []
        finally:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')
