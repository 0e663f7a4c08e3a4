"""PostgreSQL merge into an empty table: the rows are COPYed straight into it, a savepoint per chunk
of batches; a key repeated in the stream rolls that chunk back and sends it and the rest through the
stage and INSERT ... ON CONFLICT (``loaders.postgres``, ``_Session._merge_into``). The general merge cases
(updates, no unique index, evolution) are in test_postgres_load.py and the contract suite."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from agent_etl.exceptions import ToolError
from agent_etl.tools.databases.postgres import merging
from agent_etl.testing import build, stream, tool_context
from tests.databases.test_postgres_load import execute, expected_merge, query


async def merge(data: pa.Table, target, tmp_path: Path, *, batch_size: int, units=None,
                commits: list[int] | None = None, loader_out: list | None = None) -> dict:
    """Merge ``data`` on ``id`` into table t; the loader's run details (the loader into ``loader_out``)."""
    schema, url = target
    ctx = tool_context(tmp_path, task="load", connections={"pg": {"url": url}}, units=units)

    async def hook(rows: int) -> None:
        (commits if commits is not None else []).append(rows)

    ctx.commit_hook = hook
    loader = build("loader", "postgres", {"connection": "pg", "table": f'"{schema}".t', "mode": "merge",
                                          "key": "id"}, ctx)
    if loader_out is not None:
        loader_out.append(loader)
    try:
        await loader.load(stream(data, batch_size))
    finally:
        await ctx.resources.aclose()
    return loader.details()


def rows(target) -> list[tuple]:
    return query(target, "SELECT id, v FROM t ORDER BY id")


@pytest.mark.parametrize("exists", [False, True], ids=["new table", "empty table"])
async def test_unique_keys_go_straight_into_the_empty_table(pg_target, tmp_path, exists):
    if exists:
        execute(pg_target, "CREATE TABLE t (id bigint PRIMARY KEY, v text)")
    data = pa.table({"id": [3, 1, 2, 5, 4], "v": list("abcde")})
    assert await merge(data, pg_target, tmp_path, batch_size=2) == {"merge": "copy (the table was empty)"}
    assert rows(pg_target) == sorted(zip(data["id"].to_pylist(), data["v"].to_pylist(), strict=True))


@pytest.mark.parametrize(("ids", "chunk", "first_repeat"), [
    ([1, 2, 3, 1, 4, 3], 2, 3),  # the repeat is in the second chunk: chunk 1 stays, chunk 2 on is upserted
    ([7, 7, 8, 9, 9, 7], 2, 1),  # in the first chunk
    ([1, 2, 3, 1, 4, 3], None, 1),  # the stream is one chunk: all of it is upserted
])
async def test_a_key_repeated_in_the_stream_switches_to_upsert_and_the_last_row_wins(pg_target, tmp_path, monkeypatch,
                                                                                      ids, chunk, first_repeat):
    if chunk:
        monkeypatch.setattr(merging, "DIRECT_ROWS", chunk)
    data = pa.table({"id": ids, "v": [f"v{i}" for i in range(len(ids))]})
    commits: list[int] = []
    details = await merge(data, pg_target, tmp_path, batch_size=2, commits=commits)
    assert details == {"merge": f"copy (the table was empty), then upsert from input row {first_repeat} "
                                "(a key repeated)"}
    assert rows(pg_target) == expected_merge(data.slice(0, 0), data, ["id"])
    assert commits == [len(ids)]


async def test_a_table_with_rows_is_upserted(pg_target, tmp_path):
    execute(pg_target, "CREATE TABLE t (id bigint PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'old')")
    data = pa.table({"id": [1, 2], "v": ["new", "b"]})
    assert await merge(data, pg_target, tmp_path, batch_size=1) == {"merge": "upsert"}
    assert rows(pg_target) == [(1, "new"), (2, "b")]


@pytest.mark.parametrize("unique", [True, False], ids=["primary key", "no unique index"])
@pytest.mark.parametrize("ids", [
    [1, 2, 3, 4, 5, 6],  # strictly increasing: staged without the load-order column (key_order)
    [1, 2, 2, 3, 4, 5],  # a repeat across two batches: the column from the second batch on
    [1, 2, 3, 3, 4, 2],  # a repeat in a batch, and a key of the rows staged without the column
    [4, 2, 3, 1, 2, 4],  # out of order in the first batch: the column from the first row
])
async def test_staged_keys_in_order_or_not_the_last_row_of_a_key_wins(pg_target, tmp_path, unique, ids):
    execute(pg_target, f"CREATE TABLE t (id bigint{' PRIMARY KEY' if unique else ''}, v text)",
            "INSERT INTO t VALUES (2, 'old'), (9, 'old')")
    data = pa.table({"id": ids, "v": [f"v{i}" for i in range(len(ids))]})
    await merge(data, pg_target, tmp_path, batch_size=2)
    assert rows(pg_target) == expected_merge(pa.table({"id": [2, 9], "v": ["old", "old"]}), data, ["id"])


async def test_a_chunk_full_by_bytes_ends_too(pg_target, tmp_path, monkeypatch):
    monkeypatch.setattr(merging, "DIRECT_BYTES", 1)  # every batch is a chunk
    data = pa.table({"id": [1, 2, 3, 1], "v": list("abcd")})
    details = await merge(data, pg_target, tmp_path, batch_size=1)
    assert details == {"merge": "copy (the table was empty), then upsert from input row 4 (a key repeated)"}
    assert rows(pg_target) == [(1, "d"), (2, "b"), (3, "c")]


async def test_commit_units_after_the_first_upsert_what_the_first_put_in(pg_target, tmp_path):
    """A unit of a direct merge commits like any other; the next one finds the table no longer empty."""
    data = pa.table({"id": [1, 2, 3, 1, 2, 6], "v": list("abcdef")})
    commits: list[int] = []
    await merge(data, pg_target, tmp_path, batch_size=3, units=lambda: True, commits=commits)
    assert commits == [3, 3]
    assert rows(pg_target) == [(1, "d"), (2, "e"), (3, "c"), (6, "f")]


async def test_a_bad_row_names_its_row_in_the_whole_input_and_nothing_stays(pg_target, tmp_path, monkeypatch):
    monkeypatch.setattr(merging, "DIRECT_ROWS", 2)  # the bad row is line 2 of the second chunk's COPY
    execute(pg_target, "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL)")
    data = pa.table({"id": [1, 2, 3, 4, 5], "v": ["a", "b", "c", None, "e"]})
    with pytest.raises(ToolError, match=r"not-null constraint.*at input row 4\b.*nothing was written"):
        await merge(data, pg_target, tmp_path, batch_size=2)
    assert rows(pg_target) == []


async def test_a_key_written_meanwhile_by_another_session_is_updated(pg_target, tmp_path, monkeypatch):
    """The table was empty when the load looked; a row with one of its keys arrives before its COPY: the
    COPY's unique violation sends the chunk to the upsert."""
    monkeypatch.setattr(merging, "DIRECT_ROWS", 2)
    execute(pg_target, "CREATE TABLE t (id bigint PRIMARY KEY, v text)")

    async def batches():
        yield pa.record_batch({"id": [1, 2], "v": ["a", "b"]})
        execute(pg_target, "INSERT INTO t VALUES (3, 'other')")
        yield pa.record_batch({"id": [3, 4], "v": ["c", "d"]})

    schema, url = pg_target
    ctx = tool_context(tmp_path, task="load", connections={"pg": {"url": url}})
    loader = build("loader", "postgres", {"connection": "pg", "table": f'"{schema}".t', "mode": "merge",
                                          "key": "id"}, ctx)
    try:
        await loader.load(batches())
    finally:
        await ctx.resources.aclose()
    assert rows(pg_target) == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
    assert loader.details()["merge"].endswith("then upsert from input row 3 (a key repeated)")
