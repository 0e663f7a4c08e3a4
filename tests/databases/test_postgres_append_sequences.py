"""``mode: append`` and ``mode: merge`` into PostgreSQL and the sequences the table's columns own
(identity, serial): the loaded ids are past the sequence's position, so before each unit's COMMIT
the sequence is moved past them (``databases.postgres.sequences.Followed``), and a plain INSERT
afterwards does not collide. A merge inserts the loaded values of a GENERATED ALWAYS identity
column (OVERRIDING SYSTEM VALUE) and leaves an updated row's as it was."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest

from agent_etl.testing import build, stream, tool_context
from tests.databases.test_postgres_load import execute, query, run_load
from tests.databases.test_postgres_replace_sequences import KINDS, insert, rows_of


async def run_pipeline(pg_target, tmp_path, ids: list[int], mode: str) -> None:
    """Load a Parquet file of ``ids`` into t through a pipeline run (commit units of 300 rows)."""
    key = ", key: [id]" if mode == "merge" else ""
    await run_load(pg_target, tmp_path, rows_of(ids), f"mode: {mode}{key}",
                   defaults="{batch_size: 100, commit_every: {rows: 300}}")


@pytest.mark.parametrize("mode", ["append", "merge"])
@pytest.mark.parametrize("kind", KINDS)
async def test_after_a_load_the_next_generated_id_is_past_the_loaded_ones(pg_target, tmp_path, kind, mode):
    execute(pg_target, f"CREATE TABLE t (id {KINDS[kind]}, v text)",
            "INSERT INTO t (v) SELECT 'old' FROM generate_series(1, 5)")
    ids = list(range(3, 6)) + list(range(100, 1100)) if mode == "merge" else list(range(100, 1100))
    await run_pipeline(pg_target, tmp_path, ids, mode)
    assert insert(pg_target) == 1100 and insert(pg_target) == 1101
    assert query(pg_target, "SELECT count(*), max(id) FROM t")[0] == (1005 + 2, 1101)
    if mode == "merge":  # the rows 3-5 were updated, 1-2 kept
        assert query(pg_target, "SELECT id, v FROM t WHERE id <= 5 ORDER BY id") == [
            (1, "old"), (2, "old"), (3, "new 3"), (4, "new 4"), (5, "new 5")]


async def test_a_sequence_ahead_of_the_loaded_ids_stays_where_it_is(pg_target, tmp_path):
    execute(pg_target, f"CREATE TABLE t (id {KINDS['always']}, v text)", "SELECT setval(pg_get_serial_sequence('t', "
            "'id'), 5000)")
    await run_pipeline(pg_target, tmp_path, list(range(10, 20)), "append")
    assert insert(pg_target) == 5001


async def load(pg_target, tmp_path, data: pa.Table, **options) -> None:
    schema, url = pg_target
    ctx = tool_context(tmp_path, task="load", connections={"pg": {"url": url}})
    loader = build("loader", "postgres", {"connection": "pg", "table": f'"{schema}".t', **options}, ctx)
    try:
        await loader.load(stream(data, 2))
    finally:
        await ctx.resources.aclose()


@pytest.mark.parametrize("unique", [True, False], ids=["upsert", "no unique index"])
async def test_a_merge_keeps_an_updated_rows_always_identity_and_inserts_the_loaded_one(pg_target, tmp_path, unique):
    execute(pg_target, f"CREATE TABLE t (n bigint GENERATED ALWAYS AS IDENTITY, k int{' PRIMARY KEY' if unique else ''},"
                       " v text)", "INSERT INTO t (k, v) VALUES (1, 'a'), (2, 'b')")  # n 1 and 2
    data = pa.table({"n": pa.array([70, 80, 90], pa.int64()), "k": [2, 3, 4], "v": ["B", "c", "d"]})
    await load(pg_target, tmp_path / "m", data, mode="merge", key=["k"])
    assert query(pg_target, "SELECT n, k, v FROM t ORDER BY k") == [(1, 1, "a"), (2, 2, "B"), (80, 3, "c"), (90, 4, "d")]
    assert query(pg_target, "INSERT INTO t (k, v) VALUES (5, 'e') RETURNING n")[0][0] == 91


async def test_two_loads_ending_together_leave_the_sequence_past_both(pg_target, tmp_path):
    execute(pg_target, f"CREATE TABLE t (id {KINDS['by default']}, v text)")
    low = pa.table({"id": pa.array(range(1, 2001), pa.int64()), "v": ["low"] * 2000})
    high = pa.table({"id": pa.array(range(5001, 6001), pa.int64()), "v": ["high"] * 1000})
    await asyncio.gather(load(pg_target, tmp_path / "a", low, mode="append"),
                         load(pg_target, tmp_path / "b", high, mode="append"))
    assert insert(pg_target) == 6001
