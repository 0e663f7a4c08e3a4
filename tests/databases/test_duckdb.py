"""The duckdb extractor and loader, against real DuckDB files in tmp_path."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json

import pyarrow as pa
import pytest

from agent_etl.exceptions import SpecError, ToolError
from agent_etl.testing import build, collect, tool_context
from agent_etl.tools.databases.duckdb.database import open_database, qualified

URL = "duckdb:///data/test.duckdb"


@pytest.fixture
async def ctx(tmp_path):
    """A tool context on data/test.duckdb whose run resources (the open database) close after the test."""
    c = tool_context(tmp_path, connections={"db": {"url": URL}}, batch_size=1000)
    commits: list[int] = []

    async def hook(rows: int) -> None:
        commits.append(rows)

    c.commit_hook, c.commits = hook, commits
    yield c
    await c.resources.aclose()


async def stream(*batches):
    for b in batches:
        await asyncio.sleep(0)
        yield b


async def load(ctx, batches, **options) -> int:
    return await build("loader", "duckdb", {"connection": "db", **options}, ctx).load(batches)


async def extract(ctx, **options) -> pa.Table:
    return await collect(build("extractor", "duckdb", {"connection": "db", **options}, ctx).batches())


def sql(ctx, text: str, params=None) -> list[tuple]:
    cur = open_database(ctx, "db", create=True).cursor()
    try:
        return cur.execute(text, params or []).fetchall()
    finally:
        cur.close()


async def test_round_trip_of_types_nulls_unicode_nan_and_time_zones(ctx):
    berlin = dt.timezone(dt.timedelta(hours=2))
    batch = pa.record_batch({
        "i8": pa.array([1, None, -128], pa.int8()),
        "u64": pa.array([2**64 - 1, 0, None], pa.uint64()),
        "i64": pa.array([2**62, None, -1]),
        "f32": pa.array([1.5, None, float("-inf")], pa.float32()),
        "f64": pa.array([float("nan"), None, float("inf")]),
        "flag": pa.array([True, False, None]),
        "text": pa.array(["ü ✓ 🙂 日本", None, ""]),
        "bin": pa.array([b"\x00\xff", None, b""]),
        "day": pa.array([dt.date(2024, 2, 29), None, dt.date(1, 1, 1)]),
        "ts": pa.array([dt.datetime(2024, 1, 5, 10, 0, 0, 123456), None, dt.datetime(9999, 12, 31, 23, 59, 59)]),
        "tz": pa.array([dt.datetime(2024, 7, 1, 12, 0, 0, 5, tzinfo=berlin), None, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)],
                       pa.timestamp("us", "Europe/Berlin")),
        "dec": pa.array([decimal.Decimal("12345678901234567890.123456789"), None, decimal.Decimal("-0.5")],
                        pa.decimal128(38, 9)),
        "t": pa.array([dt.time(12, 30, 0, 5), None, dt.time(0)]),
        "items": pa.array([[1, 2], None, []]),
        "obj": pa.array([{"a": 1, "b": "ü"}, None, {"a": None, "b": "x"}]),
        "cat": pa.array(["a", None, "a"]).dictionary_encode(),
    })
    assert await load(ctx, stream(batch), table="all types", mode="replace") == 3
    got = await extract(ctx, table="all types")
    assert got.schema.field("tz").type == pa.timestamp("us", "UTC")
    assert got.schema.field("dec").type == pa.decimal128(38, 9)
    for name in batch.schema.names:
        want = batch.column(name)
        if name == "cat":
            want = want.dictionary_decode()
        if name == "tz":
            want = want.cast(pa.timestamp("us", "UTC"))
        have = got.column(name).to_pylist()
        if name == "f64":
            assert have[0] != have[0] and have[1:] == [None, float("inf")]  # NaN stays NaN
            continue
        assert have == want.to_pylist(), name
    # a 0-row batch creates a 0-row table with the schema, and reads back as one 0-row batch
    empty = pa.record_batch({"id": pa.array([], pa.int32()), "at": pa.array([], pa.timestamp("us", "UTC"))})
    assert await load(ctx, stream(empty), table="empty", mode="replace") == 0
    got = await extract(ctx, table="empty")
    assert got.num_rows == 0 and got.schema == empty.schema


async def test_append_creates_then_adds_and_commits_once_per_load(ctx):
    assert await load(ctx, stream(), table="t") == 0
    assert sql(ctx, "SELECT table_name FROM information_schema.tables") == []  # not even a checkpoint
    one = pa.record_batch({"id": [1, 2], "v": ["a", "b"]})
    assert await load(ctx, stream(one, one), table="t") == 4
    assert await load(ctx, stream(one), table="t") == 2
    assert ctx.commits == [0, 4, 2]
    assert sql(ctx, "SELECT count(*) FROM t") == [(6,)]
    assert await load(ctx, stream(), table="t") == 0
    assert await load(ctx, stream(), table="t", mode="replace") == 0  # no batch at all: empties it
    assert sql(ctx, "SELECT count(*) FROM t") == [(0,)]
    assert sql(ctx, "SELECT rows FROM _agent_etl_checkpoints ORDER BY rowid") == [(4,), (2,), (0,), (0,)]


def checkpoints(ctx, schema: str = "main") -> list[tuple]:
    """The checkpoint rows of a schema in the order written, position parsed."""
    rows = sql(ctx, "SELECT run_id, task, table_name, rows, position FROM "
                    f"{qualified(schema, '_agent_etl_checkpoints')} ORDER BY rowid")
    return [(*r[:4], json.loads(r[4])) for r in rows]


async def test_the_checkpoint_table_is_next_to_the_loaded_table(ctx, tmp_path):
    """(What a checkpoint holds per mode is the contract suite's: tests/contract.)"""
    position = {"src": {"rows": 4}}
    c = tool_context(tmp_path, task="load", run_id="run-1", connections=ctx.connections, position=position)
    c.resources = ctx.resources  # the run's open database
    await load(c, stream(pa.record_batch({"id": [1, 2, 3, 4]})), table='"new schema".t')
    assert checkpoints(ctx, "new schema") == [("run-1", "load", '"new schema".t', 4, position)]
    assert sql(ctx, "SELECT typeof(committed_at) FROM \"new schema\"._agent_etl_checkpoints") == [
        ("TIMESTAMP WITH TIME ZONE",)]


async def test_a_checkpoint_table_from_before_positions_gets_the_column(ctx, tmp_path):
    sql(ctx, "CREATE TABLE _agent_etl_checkpoints (run_id VARCHAR NOT NULL, task VARCHAR NOT NULL, "
             "table_name VARCHAR NOT NULL, rows BIGINT NOT NULL, committed_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    sql(ctx, "INSERT INTO _agent_etl_checkpoints VALUES ('old-run', 'load', 't', 5, '2024-01-01')")
    c = tool_context(tmp_path, connections=ctx.connections, position={"src": {"rows": 2}})
    c.resources = ctx.resources
    await load(c, stream(pa.record_batch({"id": [1, 2]})), table="t")
    assert checkpoints(ctx) == [("old-run", "load", "t", 5, {}), ("test-run", "test", "t", 2, {"src": {"rows": 2}})]


@pytest.mark.parametrize("schema", ["", "fresh."], ids=["tables", "new-schema"])
async def test_two_loads_of_a_first_run_both_commit_their_checkpoints(ctx, schema):
    """A DuckDB transaction may not create a table that another one created after it began; and each
    load creates its schema in a transaction of its own before its load's, so two loads of a run into
    a schema that is not there yet do not fail one another on ``CREATE SCHEMA``."""
    halfway, go_on = asyncio.Event(), asyncio.Event()

    async def slow():
        yield pa.record_batch({"id": [1, 2]})
        halfway.set()  # the first batch is in: this load's transaction is open
        await go_on.wait()

    first = asyncio.create_task(load(ctx, slow(), table=f"{schema}a"))
    await halfway.wait()
    assert await load(ctx, stream(pa.record_batch({"id": [3]})), table=f"{schema}b") == 1
    go_on.set()
    assert await first == 2
    assert sql(ctx, f"SELECT table_name, rows FROM {schema}_agent_etl_checkpoints ORDER BY table_name") == [
        (f"{schema}a", 2), (f"{schema}b", 1)]


async def test_merge_inserts_rows_with_null_keys_and_leaves_no_stage(ctx):
    """(The upsert itself, last row of a key wins, is the contract suite's: tests/contract.)"""
    await load(ctx, stream(pa.record_batch({"id": [1, 2], "v": ["a", "b"]})), table="m", mode="merge", key="id")
    again = pa.record_batch({"id": pa.array([2, None, None], pa.int64()), "v": ["B", "n1", "n2"]})
    assert await load(ctx, stream(again), table="m", mode="merge", key=["id"]) == 3
    assert sql(ctx, "SELECT id, v FROM m ORDER BY id NULLS LAST, v") == [(1, "a"), (2, "B"), (None, "n1"),
                                                                       (None, "n2")]
    assert [r[0] for r in sql(ctx, "SELECT table_name FROM information_schema.tables ORDER BY table_name")] == [
        "_agent_etl_checkpoints", "m"]


@pytest.mark.parametrize("mode", ["append", "replace", "merge"])
async def test_a_failing_stream_commits_nothing(ctx, mode):
    await load(ctx, stream(pa.record_batch({"id": [1, 2], "v": ["a", "b"]})), table="t")

    async def broken():
        yield pa.record_batch({"id": [2, 3], "v": ["X", "Y"]})
        raise RuntimeError("upstream broke")

    with pytest.raises(RuntimeError):
        await load(ctx, broken(), table="t", mode=mode, key="id" if mode == "merge" else None)
    assert sql(ctx, "SELECT id, v FROM t ORDER BY id") == [(1, "a"), (2, "b")]
    assert [r[0] for r in sql(ctx, "SELECT table_name FROM information_schema.tables ORDER BY table_name")] == [
        "_agent_etl_checkpoints", "t"]
    assert sql(ctx, "SELECT rows FROM _agent_etl_checkpoints") == [(2,)]  # the first load's only
    assert ctx.commits == [2]


async def test_constraint_violation_rolls_back_the_load(ctx):
    sql(ctx, "CREATE TABLE k(id INTEGER PRIMARY KEY, v VARCHAR NOT NULL)")
    sql(ctx, "INSERT INTO k VALUES (1, 'one')")
    good = pa.record_batch({"id": [2, 3], "v": ["two", "three"]})
    for bad, what in [({"id": [1], "v": ["dup"]}, "constraint"), ({"id": [9], "v": pa.array([None], pa.string())},
                                                                   "constraint")]:
        with pytest.raises(ToolError, match=f"'k'.*{what}.*rolled back"):
            await load(ctx, stream(good, pa.record_batch(bad)), table="k")
    assert sql(ctx, "SELECT * FROM k") == [(1, "one")]


async def test_partitions_return_exactly_the_rows_of_a_single_read(ctx):
    n = 997
    batch = pa.record_batch({
        "n": pa.array(range(n)),
        "id": pa.array([i if i % 13 else None for i in range(n)], pa.int64()),
        "day": pa.array([dt.date(2024, 1, 1) + dt.timedelta(days=i % 40) for i in range(n)]),
        "at": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=7 * i) if i % 3 else None
                        for i in range(n)], pa.timestamp("us", "UTC")),
    })
    await load(ctx, stream(batch), table="p")
    single = await extract(ctx, table="p")
    for column, parts in [("id", 4), ("day", 7), ("at", 16), ("id", 64)]:
        parted = await extract(ctx, table="p", partitions=parts, partition_on=column)
        assert parted.num_rows == n
        assert parted.sort_by("n").equals(single.sort_by("n")), (column, parts)


async def test_incremental_bound_and_mark(ctx, tmp_path):
    await load(ctx, stream(pa.record_batch({"id": list(range(1, 11)), "v": [f"v{i}" for i in range(1, 11)]})), table="e")
    state = {"cursor": "id", "type": "int", "value": 7}
    c = tool_context(tmp_path, connections={"db": {"url": URL}}, state=state)
    c.resources = ctx.resources  # the run's open database
    got = await collect(build("extractor", "duckdb", {"connection": "db", "query": "SELECT * FROM e",
                                                      "incremental": {"cursor": "id", "lookback": 1}}, c).batches())
    assert got.column("id").to_pylist() == [7, 8, 9, 10]
    assert c.saved_state == {"cursor": "id", "type": "int", "value": 10}


async def test_weird_identifiers_are_names(ctx):
    batch = pa.record_batch({"a b": [1, 2], 'q"uote': ["x", "y"], "semi;colon": [True, False]})
    for table in ['"x""; drop table t; --"', '"sch.ema"."ta.ble"', "x; drop table t"]:
        await load(ctx, stream(batch), table=table, mode="replace")
        await load(ctx, stream(batch), table=table, mode="merge", key="a b")
        got = await extract(ctx, table=table)
        assert got.to_pydict() == batch.to_pydict()
    assert sql(ctx, "SELECT count(*) FROM \"sch.ema\".\"ta.ble\"") == [(2,)]


async def test_schema_policies(ctx):
    await load(ctx, stream(pa.record_batch({"id": [1]})), table="s")
    await load(ctx, stream(pa.record_batch({"id": [2], "extra": ["x"]})), table="s")
    assert sql(ctx, "SELECT * FROM s ORDER BY id") == [(1, None), (2, "x")]
    with pytest.raises(ToolError, match=r"freeze.*more \(int64\)"):
        await load(ctx, stream(pa.record_batch({"id": [3], "more": [1]})), table="s", schema_policy="freeze")
    with pytest.raises(ToolError, match=r"freeze.*missing \['extra'\]"):
        await load(ctx, stream(pa.record_batch({"id": [3]})), table="s", mode="replace", schema_policy="freeze")
    assert sql(ctx, "SELECT count(*) FROM s") == [(2,)]


async def test_bad_input_errors(ctx, tmp_path):
    with pytest.raises(ToolError, match=r"data/test.duckdb does not exist"):
        await extract(ctx, table="t")
    await load(ctx, stream(pa.record_batch({"id": [1]})), table="orders")
    with pytest.raises(ToolError, match=r"table 'ordres'.*test\.duckdb.*ordres does not exist.*check the table"):
        await extract(ctx, table="ordres")
    with pytest.raises(ToolError, match=r"column 'half' has type halffloat.*cast it upstream"):
        await load(ctx, stream(pa.record_batch({"half": pa.array([1.0], pa.float32()).cast(pa.float16())})), table="h")
    with pytest.raises(ToolError, match="partition on an integer, date or timestamp"):
        await load(ctx, stream(pa.record_batch({"name": ["a", "b"]})), table="n")
        await extract(ctx, table="n", partitions=2, partition_on="name")
    for url in ["postgresql://u@h/db", "duckdb:///:memory:", "duckdb://"]:
        bad = tool_context(tmp_path, connections={"db": {"url": url}})
        with pytest.raises(SpecError, match="not a DuckDB database file"):
            await collect(build("extractor", "duckdb", {"connection": "db", "table": "t"}, bad).batches())
