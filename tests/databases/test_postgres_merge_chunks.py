"""PostgreSQL upsert in stage chunks: a merge into a table with rows (and a unique index on the key)
upserts its stage every STAGE_ROWS rows within the unit's transaction, while the next rows are
encoded (``databases.postgres.merging``, ``_apply_stage``; ``databases.postgres.sender``). The chunks go
in in input order: the last row of a key wins across chunks, new columns reach the table before the
chunk that first has them, and a failure in a late chunk leaves the table as it was."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from agent_etl.exceptions import ToolError
from agent_etl.testing import build, tool_context
from agent_etl.tools.databases.postgres import merging
from tests.databases.test_postgres_load import execute, expected_merge, query
from tests.databases.test_postgres_merge import merge, rows

OLD = pa.table({"id": [2, 9, 40], "v": ["old", "old", "old"]})


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


async def test_commit_units_each_upsert_their_own_chunks(pg_target, tmp_path, monkeypatch):
    monkeypatch.setattr(merging, "STAGE_ROWS", 2)
    execute(pg_target, "CREATE TABLE t (id bigint PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'old')")
    data = pa.table({"id": [1, 2, 3, 1, 5, 6, 2, 8, 9], "v": list("abcdefghi")})
    commits: list[int] = []
    await merge(data, pg_target, tmp_path, batch_size=3, units=lambda: True, commits=commits)
    assert commits == [3, 3, 3]
    assert rows(pg_target) == expected_merge(pa.table({"id": [1], "v": ["old"]}), data, ["id"])
