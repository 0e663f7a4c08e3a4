"""The sqlite extractor and loader, against real database files in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import json
import re
import sqlite3
from pathlib import Path

import pyarrow as pa
import pydantic
import pytest

from agent_etl.exceptions import SpecError, ToolError, TransientError
from agent_etl.testing import tool_context
from agent_etl.tools.base import ToolContext
from agent_etl.tools.databases.options import key_index_name
from agent_etl.tools.registry import default_registry
from tests.cli.conftest import cli

URL = "sqlite:///db/test.sqlite"


def make_ctx(base: Path, batch_size: int = 1000, url: str = URL, commits: list[int] | None = None) -> ToolContext:
    async def hook(rows: int) -> None:
        commits.append(rows)

    return ToolContext(run_id="r1", task="t", base_dir=base, home=base / ".agent-etl", batch_size=batch_size,
                       connections={"db": {"url": url}}, commit_hook=hook if commits is not None else None)


async def stream(*batches: pa.RecordBatch):
    for b in batches:
        await asyncio.sleep(0)
        yield b


async def load(ctx: ToolContext, batches, **options) -> int:
    cls = default_registry().get("loader", "sqlite")
    return await cls(cls.Config.model_validate({"connection": "db", **options}), ctx).load(batches)


async def extract(ctx: ToolContext, positions: list | None = None, **options) -> list[pa.RecordBatch]:
    cls = default_registry().get("extractor", "sqlite")
    tool = cls(cls.Config.model_validate({"connection": "db", **options}), ctx)
    out = []
    async for b in tool.batches():
        out.append(b)
        if positions is not None:
            positions.append(tool.position())
    return out


def query(tmp_path: Path, sql: str, *params) -> list[tuple]:
    con = sqlite3.connect(tmp_path / "db" / "test.sqlite")
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def setup_db(tmp_path: Path, script: str, rows: dict[str, list[tuple]] | None = None) -> None:
    (tmp_path / "db").mkdir(exist_ok=True)
    con = sqlite3.connect(tmp_path / "db" / "test.sqlite")
    con.executescript(script)
    for table, values in (rows or {}).items():
        con.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(values[0]))})", values)
    con.commit()
    con.close()


def numbers(start: int, stop: int) -> pa.RecordBatch:
    ids = list(range(start, stop))
    return pa.record_batch({"id": pa.array(ids, pa.int64()), "name": [f"n{i}" for i in ids]})


async def test_round_trip_of_every_mapped_type(tmp_path):
    ctx = make_ctx(tmp_path)
    berlin = dt.timezone(dt.timedelta(hours=2))
    batch = pa.record_batch({
        "i8": pa.array([1, None, -128], pa.int8()),
        "u32": pa.array([4_000_000_000, 0, None], pa.uint32()),
        "i64": pa.array([2**62, None, -1], pa.int64()),
        "f32": pa.array([1.5, None, -0.25], pa.float32()),
        "f64": pa.array([1e300, None, float("nan")]),
        "flag": pa.array([True, False, None]),
        "text": pa.array(["ü ✓ 🙂 日本", None, ""]),
        "big_text": pa.array(["x", "y", None], pa.large_string()),
        "bin": pa.array([b"\x00\xff", None, b""]),
        "day": pa.array([dt.date(2024, 2, 29), None, dt.date(1, 1, 1)]),
        "ts": pa.array([dt.datetime(2024, 1, 5, 10, 0, 0, 123456), None, dt.datetime(9999, 12, 31, 23, 59, 59)]),
        "ts_ns": pa.array([dt.datetime(2024, 1, 5, 10, 0, 0, 123456), None, None], pa.timestamp("ns")),
        "tz": pa.array([dt.datetime(2024, 7, 1, 12, 0, 0, 5, tzinfo=berlin), None, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)],
                       pa.timestamp("us", "Europe/Berlin")),
        "dec": pa.array([decimal.Decimal("12345678901234567890.123456789"), None, decimal.Decimal("-0.5")],
                        pa.decimal128(38, 9)),
        "items": pa.array([[1, 2], None, []]),
        "obj": pa.array([{"a": 1, "b": "ü"}, None, {"a": None, "b": "x"}]),
        "cat": pa.array(["a", None, "a"]).dictionary_encode(),
    })
    assert await load(ctx, stream(batch), table="all types", mode="replace") == 3

    (got,) = await extract(ctx, table="all types")
    expected_types = {
        "i8": pa.int64(), "u32": pa.int64(), "i64": pa.int64(), "f32": pa.float64(), "f64": pa.float64(),
        "flag": pa.bool_(), "text": pa.string(), "big_text": pa.string(), "bin": pa.binary(), "day": pa.date32(),
        "ts": pa.timestamp("us"), "ts_ns": pa.timestamp("us"), "tz": pa.timestamp("us", "UTC"),
        "dec": pa.decimal128(38, 9), "items": pa.string(), "obj": pa.string(), "cat": pa.string(),
    }
    assert dict(zip(got.schema.names, got.schema.types)) == expected_types
    for name in ["i8", "u32", "i64", "f32", "flag", "text", "big_text", "bin", "day", "ts", "ts_ns", "tz", "dec"]:
        assert got.column(name).to_pylist() == batch.column(name).cast(expected_types[name]).to_pylist(), name
    assert got.column("f64").to_pylist() == [1e300, None, None]  # SQLite stores NaN as NULL
    assert got.column("items").to_pylist() == ["[1, 2]", None, "[]"]
    assert got.column("obj").to_pylist() == ['{"a": 1, "b": "ü"}', None, '{"a": null, "b": "x"}']
    assert got.column("cat").to_pylist() == ["a", None, "a"]
    # what other SQLite clients see: ISO text, UTC for tz-aware, exact decimal text, 0/1 booleans
    row = query(tmp_path, 'SELECT day, ts, tz, dec, flag, typeof(dec) FROM "all types" WHERE rowid = 1')[0]
    assert row == ("2024-02-29", "2024-01-05T10:00:00.123456", "2024-07-01T10:00:00.000005+00:00",
                   "12345678901234567890.123456789", 1, "text")


async def test_replace_with_an_empty_batch_creates_an_empty_table(tmp_path):
    ctx = make_ctx(tmp_path)
    empty = pa.record_batch({"id": pa.array([], pa.int64()), "at": pa.array([], pa.timestamp("us"))})
    assert await load(ctx, stream(empty), table="t", mode="replace") == 0
    assert query(tmp_path, "SELECT name, type FROM pragma_table_info('t')") == [("id", "INTEGER"), ("at", "TIMESTAMP")]
    (got,) = await extract(ctx, table="t")
    assert got.num_rows == 0 and got.schema == empty.schema


async def test_replace_with_no_batches_empties_the_table(tmp_path):
    ctx = make_ctx(tmp_path)
    assert await load(ctx, stream(), table="t") == 0
    assert query(tmp_path, "SELECT name FROM sqlite_schema") == []  # no table, no batch: not even a checkpoint
    await load(ctx, stream(numbers(0, 3)), table="t")
    assert await load(ctx, stream(), table="t", mode="replace") == 0
    assert query(tmp_path, "SELECT count(*) FROM t") == [(0,)]
    assert await load(ctx, stream(), table="never", mode="replace") == 0
    assert query(tmp_path, "SELECT count(*) FROM sqlite_schema WHERE name = 'never'") == [(0,)]
    assert query(tmp_path, "SELECT table_name, rows FROM _agent_etl_checkpoints ORDER BY rowid") == [("t", 3), ("t", 0)]


async def test_query_and_table_extraction(tmp_path):
    setup_db(tmp_path, """
        CREATE TABLE orders(id INTEGER, customer INTEGER, amount REAL, day DATE);
        CREATE TABLE customers(id INTEGER, name TEXT);
    """, {"orders": [(1, 10, 5.0, "2024-01-01"), (2, 11, 7.5, "2024-01-02"), (3, 10, 1.25, "2024-01-03")],
          "customers": [(10, "Ada"), (11, "Bob")]})
    ctx = make_ctx(tmp_path)
    (table,) = await extract(ctx, table="orders")
    assert table.schema.types == [pa.int64(), pa.int64(), pa.float64(), pa.date32()]
    assert table.column("day").to_pylist()[0] == dt.date(2024, 1, 1)

    sql = """SELECT c.name, sum(o.amount) AS total, count(*) AS n, max(o.day) AS last, o.day
             FROM orders o JOIN customers c ON c.id = o.customer GROUP BY c.name ORDER BY c.name;"""
    (got,) = await extract(ctx, query=sql)
    # plain columns keep their declared type (o.day: DATE), expressions are inferred
    assert dict(zip(got.schema.names, got.schema.types)) == {
        "name": pa.string(), "total": pa.float64(), "n": pa.int64(), "last": pa.string(), "day": pa.date32()}
    assert got.column("total").to_pylist() == [6.25, 7.5]
    assert got.column("n").to_pylist() == [2, 1]

    (none,) = await extract(ctx, query="SELECT id, day FROM orders WHERE id > 100")
    assert none.num_rows == 0 and none.schema.types == [pa.int64(), pa.date32()]


async def test_batches_are_sliced_and_positions_count_rows(tmp_path):
    ctx = make_ctx(tmp_path, batch_size=3)
    await load(ctx, stream(numbers(0, 10)), table="t")
    positions: list = []
    got = await extract(ctx, positions, table="t")
    assert [b.num_rows for b in got] == [3, 3, 3, 1]
    assert positions == [{"rows": 3}, {"rows": 6}, {"rows": 9}, {"rows": 10}]
    assert pa.Table.from_batches(got).column("id").to_pylist() == list(range(10))
    exact = await extract(make_ctx(tmp_path, batch_size=5), table="t")
    assert [b.num_rows for b in exact] == [5, 5]


async def test_append_twice_commits_once_per_load(tmp_path):
    commits: list[int] = []
    ctx = make_ctx(tmp_path, commits=commits)
    assert await load(ctx, stream(numbers(0, 3), numbers(3, 5)), table="t") == 5
    assert await load(ctx, stream(numbers(5, 8)), table="t", mode="append") == 3
    assert commits == [5, 3]
    assert query(tmp_path, "SELECT id FROM t ORDER BY id") == [(i,) for i in range(8)]


def checkpoints(tmp_path: Path) -> list[tuple]:
    """The checkpoint rows in the order written, position parsed."""
    rows = query(tmp_path, "SELECT run_id, task, table_name, rows, position FROM _agent_etl_checkpoints ORDER BY rowid")
    return [(*r[:4], json.loads(r[4])) for r in rows]


async def test_a_checkpoint_holds_the_table_name_and_the_database_clock_in_utc(tmp_path):
    """(What a checkpoint holds per mode is the contract suite's: tests/contract.)"""
    position = {"src": {"rows": 5}}
    ctx = tool_context(tmp_path, task="load", run_id="run-1", connections={"db": {"url": URL}}, position=position)
    await load(ctx, stream(numbers(0, 3), numbers(3, 5)), table="my table")
    assert checkpoints(tmp_path) == [("run-1", "load", "my table", 5, position)]
    (at,), = query(tmp_path, "SELECT committed_at FROM _agent_etl_checkpoints")
    assert dt.datetime.fromisoformat(at).utcoffset() == dt.timedelta(0)  # the database's clock, in UTC
    assert query(tmp_path, "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name") == [
        ("_agent_etl_checkpoints",), ("my table",)]


async def test_a_checkpoint_table_from_before_positions_gets_the_column(tmp_path):
    setup_db(tmp_path, "CREATE TABLE _agent_etl_checkpoints (run_id TEXT NOT NULL, task TEXT NOT NULL, "
                       "table_name TEXT NOT NULL, rows INTEGER NOT NULL, committed_at TIMESTAMP);",
             {"_agent_etl_checkpoints": [("old-run", "load", "t", 5, "2024-01-01T00:00:00")]})
    ctx = tool_context(tmp_path, connections={"db": {"url": URL}}, position={"src": {"rows": 2}})
    await load(ctx, stream(numbers(0, 2)), table="t")
    assert checkpoints(tmp_path) == [("old-run", "load", "t", 5, {}), ("test-run", "test", "t", 2, {"src": {"rows": 2}})]


@pytest.mark.parametrize("how", ["error", "cancel"])
async def test_failing_stream_leaves_the_old_table_intact(tmp_path, how):
    commits: list[int] = []
    ctx = make_ctx(tmp_path, commits=commits)
    await load(ctx, stream(numbers(0, 3)), table="t")
    commits.clear()
    started = asyncio.Event()

    async def broken():
        yield numbers(100, 200)
        started.set()
        if how == "error":
            raise RuntimeError("upstream broke")
        await asyncio.sleep(3600)
        yield numbers(200, 300)

    for mode in ["replace", "append"]:
        started.clear()
        task = asyncio.create_task(load(ctx, broken(), table="t", mode=mode))
        await started.wait()
        if how == "cancel":
            await asyncio.sleep(0.05)
            task.cancel()
        with pytest.raises(RuntimeError if how == "error" else asyncio.CancelledError):
            await task
        assert query(tmp_path, "SELECT id FROM t ORDER BY id") == [(0,), (1,), (2,)]
        assert query(tmp_path, "SELECT name FROM sqlite_schema ORDER BY name") == [
            ("_agent_etl_checkpoints",), ("t",)]  # no staging table left
        assert query(tmp_path, "SELECT run_id, rows FROM _agent_etl_checkpoints") == [("r1", 3)]  # the first load's
    assert commits == []


async def test_a_reader_during_replace_sees_the_old_table(tmp_path):
    ctx = make_ctx(tmp_path)
    await load(ctx, stream(numbers(0, 3)), table="t")
    halfway, go_on = asyncio.Event(), asyncio.Event()

    async def slow():
        yield numbers(10, 20)
        halfway.set()
        await go_on.wait()
        yield numbers(20, 30)

    task = asyncio.create_task(load(ctx, slow(), table="t", mode="replace"))
    await halfway.wait()
    await asyncio.sleep(0.05)  # let the first batch reach the staging table
    reader = sqlite3.connect(tmp_path / "db" / "test.sqlite", timeout=0.5)
    assert reader.execute("SELECT count(*), max(id) FROM t").fetchone() == (3, 2)
    go_on.set()
    assert await task == 20
    assert reader.execute("SELECT count(*), min(id), max(id) FROM t").fetchone() == (20, 10, 29)
    reader.close()
    assert query(tmp_path, "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.parametrize(("bad", "constraint"), [
    ({"id": [1], "name": ["dup"]}, "UNIQUE constraint failed: t.id"),
    ({"id": [9], "name": [None]}, "NOT NULL constraint failed: t.name"),
])
async def test_constraint_violation_rolls_back_the_whole_load(tmp_path, bad, constraint):
    setup_db(tmp_path, "CREATE TABLE t(id INTEGER UNIQUE, name TEXT NOT NULL);", {"t": [(1, "one")]})
    ctx = make_ctx(tmp_path)
    good = pa.record_batch({"id": [2, 3], "name": ["two", "three"]})
    bad_batch = pa.record_batch({"id": pa.array(bad["id"]), "name": pa.array(bad["name"], pa.string())})
    with pytest.raises(ToolError, match=f"'t'.*{constraint}") as info:
        await load(ctx, stream(good, bad_batch), table="t")
    assert "test.sqlite" in str(info.value)
    assert query(tmp_path, "SELECT id, name FROM t") == [(1, "one")]


async def test_weird_identifiers_are_names(tmp_path):
    setup_db(tmp_path, "CREATE TABLE t(x INTEGER);", {"t": [(1,)]})
    ctx = make_ctx(tmp_path)
    table = 'x"; drop table t; --'
    batch = pa.record_batch({"a b": [1, 2], 'q"uote': ["x", "y"], "semi;colon": [True, False], "it's": [0.5, None]})
    await load(ctx, stream(batch), table=table, mode="replace")
    await load(ctx, stream(batch), table=table)
    await load(ctx, stream(batch), table=table, mode="replace")
    (got,) = await extract(ctx, table=table)
    assert got.to_pydict() == batch.to_pydict()
    quoted = '"' + table.replace('"', '""') + '"'
    (by_query,) = await extract(ctx, query=f'SELECT "q""uote", "a b" FROM {quoted}')
    assert by_query.schema.names == ['q"uote', "a b"]
    assert query(tmp_path, "SELECT x FROM t") == [(1,)]


async def test_schema_evolve_adds_nullable_columns(tmp_path):
    ctx = make_ctx(tmp_path)
    await load(ctx, stream(numbers(0, 2)), table="t")
    wider = numbers(2, 4).append_column("score", pa.array([1.5, 2.5]))
    await load(ctx, stream(wider.select(["score", "id"]), wider), table="t", schema_policy="evolve")
    assert query(tmp_path, "SELECT id, name, score FROM t ORDER BY rowid") == [
        (0, "n0", None), (1, "n1", None), (2, None, 1.5), (3, None, 2.5), (2, "n2", 1.5), (3, "n3", 2.5)]
    assert query(tmp_path, "SELECT type FROM pragma_table_info('t') WHERE name = 'score'") == [("REAL",)]


async def test_schema_freeze_lists_the_drift_and_changes_nothing(tmp_path):
    ctx = make_ctx(tmp_path)
    await load(ctx, stream(numbers(0, 2)), table="t")
    wider = numbers(2, 4).append_column("score", pa.array([1.5, 2.5]))
    with pytest.raises(ToolError, match=r"freeze.*score \(double\)"):
        await load(ctx, stream(numbers(5, 6), wider), table="t", schema_policy="freeze")
    with pytest.raises(ToolError, match=r"freeze.*new \['score'\], missing \['name'\]"):
        await load(ctx, stream(wider.select(["id", "score"])), table="t", mode="replace", schema_policy="freeze")
    assert query(tmp_path, "SELECT name FROM pragma_table_info('t')") == [("id",), ("name",)]
    assert query(tmp_path, "SELECT count(*) FROM t") == [(2,)]
    # same columns (any case, any order) pass
    await load(ctx, stream(numbers(2, 3).rename_columns(["ID", "Name"])), table="t", schema_policy="freeze")
    assert query(tmp_path, "SELECT count(*) FROM t") == [(3,)]


async def test_relative_url_resolves_against_the_pipeline_directory(tmp_path, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ctx = make_ctx(project, url="sqlite:///data/out.db")
    await load(ctx, stream(numbers(0, 2)), table="t")
    assert (project / "data" / "out.db").is_file()
    assert not (elsewhere / "data").exists()
    (got,) = await extract(ctx, table="t")
    assert got.num_rows == 2
    absolute = make_ctx(elsewhere, url=f"sqlite:///{project / 'data' / 'out.db'}")
    assert (await extract(absolute, table="t"))[0].num_rows == 2


async def test_missing_table_database_and_bad_query_errors(tmp_path):
    ctx = make_ctx(tmp_path)
    with pytest.raises(ToolError, match=r"test\.sqlite does not exist"):
        await extract(ctx, table="t")
    assert not (tmp_path / "db" / "test.sqlite").exists()  # reading never creates a database
    await load(ctx, stream(numbers(0, 1)), table="orders")
    with pytest.raises(ToolError, match=r"table 'ordres' not found in .*test\.sqlite \(tables: 'orders'\)"):
        await extract(ctx, table="ordres")
    with pytest.raises(ToolError, match=r"query 'SELECT nope FROM orders' in .*test\.sqlite: no such column: nope"):
        await extract(ctx, query="SELECT nope FROM orders")


def test_config_errors():
    extractor = default_registry().get("extractor", "sqlite")
    loader = default_registry().get("loader", "sqlite")
    for options in [{}, {"table": "t", "query": "select 1"}]:
        with pytest.raises(pydantic.ValidationError, match="exactly one of `query` or `table`"):
            extractor.Config.model_validate({"connection": "db", **options})
    with pytest.raises(pydantic.ValidationError, match="mode"):
        loader.Config.model_validate({"connection": "db", "table": "t", "mode": "merge"})
    with pytest.raises(pydantic.ValidationError, match="schema_policy"):
        loader.Config.model_validate({"connection": "db", "table": "t", "schema_policy": "loose"})
    with pytest.raises(pydantic.ValidationError, match="extra"):
        loader.Config.model_validate({"connection": "db", "table": "t", "path": "x"})


async def test_a_non_sqlite_url_is_a_spec_error(tmp_path):
    for url in ["postgresql://u@localhost/db", "sqlite://", "sqlite:///:memory:"]:
        with pytest.raises(SpecError, match="not a SQLite database file"):
            await load(make_ctx(tmp_path, url=url), stream(numbers(0, 1)), table="t")


async def test_mixed_storage_classes_fall_back_instead_of_crashing(tmp_path):
    setup_db(tmp_path, """CREATE TABLE m(a INTEGER, b, c DATE, d TIMESTAMP, e DECIMAL(10,2), f REAL, g BOOLEAN, h);""",
             {"m": [(1, 1, "2024-01-05", "2024-01-05T10:00:00+02:00", 1.1, 1, 1, None),
                    ("n/a", "x", "05/01/2024", "2024-01-05 11:00:00Z", "2.25", 2.5, 0, None),
                    (None, b"\x01\xff", None, None, None, None, None, None)]})
    (got,) = await extract(make_ctx(tmp_path), table="m")
    assert dict(zip(got.schema.names, got.schema.types)) == {
        "a": pa.string(), "b": pa.string(), "c": pa.string(), "d": pa.timestamp("us", "UTC"),
        "e": pa.decimal128(10, 2), "f": pa.float64(), "g": pa.bool_(), "h": pa.string()}
    assert got.column("a").to_pylist() == ["1", "n/a", None]
    assert got.column("b").to_pylist() == ["1", "x", "01FF"]
    assert got.column("c").to_pylist() == ["2024-01-05", "05/01/2024", None]
    utc = dt.UTC
    assert [v and v.astimezone(utc) for v in got.column("d").to_pylist()] == [
        dt.datetime(2024, 1, 5, 8, tzinfo=utc), dt.datetime(2024, 1, 5, 11, tzinfo=utc), None]
    assert got.column("e").to_pylist() == [decimal.Decimal("1.10"), decimal.Decimal("2.25"), None]
    assert got.column("f").to_pylist() == [1.0, 2.5, None]


async def test_query_types_are_fixed_by_the_first_batch(tmp_path):
    setup_db(tmp_path, "CREATE TABLE m(k INTEGER, v);",
             {"m": [(1, 1), (2, "two"), (3, 3), (4, 4), (5, 5), (6, 6.5)]})
    # mixed inside the first batch: text; later batches are cast to it
    got = await extract(make_ctx(tmp_path, batch_size=2), query="SELECT v FROM m ORDER BY k")
    assert [b.schema.types for b in got] == [[pa.string()]] * 3
    assert pa.Table.from_batches(got).column("v").to_pylist() == ["1", "two", "3", "4", "5", "6.5"]
    # integers first, then a value that is not one: a clear error, not a schema change mid-stream
    with pytest.raises(ToolError, match=r"column 'v'.*CAST"):
        await extract(make_ctx(tmp_path, batch_size=2), query="SELECT v FROM m WHERE k != 2 ORDER BY k")


async def test_a_locked_database_is_a_transient_error(tmp_path):
    ctx = make_ctx(tmp_path, url=URL + "?timeout=0.1")
    await load(ctx, stream(numbers(0, 1)), table="t")
    holder = sqlite3.connect(tmp_path / "db" / "test.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransientError, match="lock"):
            await load(ctx, stream(numbers(1, 2)), table="t")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert query(tmp_path, "SELECT count(*) FROM t") == [(1,)]


async def test_views_on_a_replaced_table_keep_working(tmp_path):
    ctx = make_ctx(tmp_path)
    await load(ctx, stream(numbers(0, 2)), table="t")
    setup_db(tmp_path, "CREATE VIEW v AS SELECT id * 10 AS x FROM t;")
    await load(ctx, stream(numbers(5, 7)), table="t", mode="replace")
    assert query(tmp_path, "SELECT x FROM v ORDER BY x") == [(50,), (60,)]


async def test_cancelling_a_running_write_rolls_it_back(tmp_path):
    ctx = make_ctx(tmp_path)
    await load(ctx, stream(numbers(0, 3)), table="t")
    big = numbers(0, 400_000)
    wrote = asyncio.Event()

    async def one_big_batch():
        wrote.set()
        yield big

    task = asyncio.create_task(load(ctx, one_big_batch(), table="t", mode="replace"))
    await wrote.wait()
    await asyncio.sleep(0.02)  # inside executemany by now, on this machine or any slower one
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert query(tmp_path, "SELECT count(*) FROM t") == [(3,)]
    assert query(tmp_path, "SELECT name FROM sqlite_schema ORDER BY name") == [("_agent_etl_checkpoints",), ("t",)]
    assert query(tmp_path, "SELECT rows FROM _agent_etl_checkpoints") == [(3,)]


async def test_stopping_early_releases_the_database(tmp_path):
    setup_db(tmp_path, "CREATE TABLE t(id INTEGER);", {"t": [(i,) for i in range(10)]})  # rollback journal
    cls = default_registry().get("extractor", "sqlite")
    tool = cls(cls.Config.model_validate({"connection": "db", "table": "t"}), make_ctx(tmp_path, batch_size=2))
    async with contextlib.aclosing(tool.batches()) as batches:
        async for _ in batches:
            break
    assert tool.position() == {"rows": 2}
    # a reader still inside its transaction would hold a SHARED lock and make this fail at once
    writer = sqlite3.connect(tmp_path / "db" / "test.sqlite", timeout=0, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("ROLLBACK")
    writer.close()


async def test_query_of_a_timestamp_column_with_offsets_reads_utc(tmp_path):
    setup_db(tmp_path, "CREATE TABLE e(at TIMESTAMP);", {"e": [("2024-01-05T10:00:00+02:00",), ("2024-01-05T09:30:00Z",)]})
    (got,) = await extract(make_ctx(tmp_path), query="SELECT at FROM e")
    assert got.schema.types == [pa.timestamp("us", "UTC")]
    assert [v.hour * 60 + v.minute for v in got.column("at").to_pylist()] == [8 * 60, 9 * 60 + 30]


# -- merge -------------------------------------------------------------------------------------


async def test_merge_names_its_unique_index_after_the_table_and_key(tmp_path):
    """(The upsert itself, last row of a key wins, is the contract suite's: tests/contract.)"""
    setup_db(tmp_path, 'CREATE TABLE "t_key"(x INTEGER);')  # a name the merge's index must not take
    ctx = make_ctx(tmp_path)
    assert await load(ctx, stream(pa.record_batch({"id": [1, 2], "v": ["a", "b"]})), table="t", mode="merge",
                      key=["id"]) == 2
    assert query(tmp_path, "SELECT name FROM pragma_index_list('t') WHERE \"unique\"") == \
        [(key_index_name("t", ["id"]),)]


async def test_merge_updates_only_the_input_columns_and_inserts_null_keys(tmp_path):
    setup_db(tmp_path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, keep TEXT);", {"t": [(1, "x", "k1"), (2, "y", "k2")]})
    ctx = make_ctx(tmp_path)
    await load(ctx, stream(pa.record_batch({"id": [2, 3], "v": ["Y", "z"]})), table="t", mode="merge", key=["id"])
    assert query(tmp_path, "SELECT id, v, keep FROM t ORDER BY id") == [(1, "x", "k1"), (2, "Y", "k2"), (3, "z", None)]
    assert query(tmp_path, "SELECT name FROM sqlite_schema WHERE type = 'index'") == []  # the rowid key serves
    nulls = pa.record_batch({"k": pa.array([1, None, None, 1]), "v": ["a", "n1", "n2", "b"]})
    await load(ctx, stream(nulls), table="n", mode="merge", key=["k"])
    assert query(tmp_path, "SELECT k, v FROM n ORDER BY v") == [(1, "b"), (None, "n1"), (None, "n2")]


async def test_merge_into_a_table_without_a_unique_index(tmp_path):
    setup_db(tmp_path, "CREATE TABLE t(id INTEGER, v TEXT); CREATE TABLE d(id INTEGER, v TEXT);",
             {"t": [(1, "a")], "d": [(1, "a"), (1, "b")]})
    ctx = make_ctx(tmp_path)
    await load(ctx, stream(pa.record_batch({"id": [1, 2], "v": ["A", "B"]})), table="t", mode="merge", key="id")
    assert query(tmp_path, "SELECT id, v FROM t ORDER BY id") == [(1, "A"), (2, "B")]
    with pytest.raises(ToolError, match=r"'d'.*share a key.*remove the duplicates"):
        await load(ctx, stream(pa.record_batch({"id": [3], "v": ["c"]})), table="d", mode="merge", key="id")
    assert query(tmp_path, "SELECT count(*) FROM d") == [(2,)]
    with pytest.raises(ToolError, match=r"merge key \['nope'\] is not a column"):
        await load(ctx, stream(pa.record_batch({"id": [3], "v": ["c"]})), table="t", mode="merge", key="nope")


async def test_a_failing_merge_changes_nothing(tmp_path):
    ctx = make_ctx(tmp_path)
    await load(ctx, stream(pa.record_batch({"id": [1], "v": ["a"]})), table="t", mode="merge", key="id")

    async def broken():
        yield pa.record_batch({"id": [1, 2], "v": ["X", "Y"]})
        raise RuntimeError("upstream broke")

    with pytest.raises(RuntimeError):
        await load(ctx, broken(), table="t", mode="merge", key="id")
    assert query(tmp_path, "SELECT id, v FROM t") == [(1, "a")]
    assert query(tmp_path, "SELECT rows FROM _agent_etl_checkpoints") == [(1,)]  # the first load's only


# -- incremental and partitions -----------------------------------------------------------------


async def run_incremental(tmp_path: Path, state, **options) -> tuple[pa.Table, object]:
    from agent_etl.testing import build, collect, tool_context

    ctx = tool_context(tmp_path, connections={"db": {"url": URL}}, state=state, batch_size=2)
    got = await collect(build("extractor", "sqlite", {"connection": "db", **options}, ctx).batches())
    return got, getattr(ctx, "saved_state", None)


@pytest.mark.parametrize("source", [{"table": "ev"}, {"query": "SELECT id, at FROM ev"}])
async def test_incremental_reads_rows_after_the_mark(tmp_path, source):
    setup_db(tmp_path, "CREATE TABLE ev(id INTEGER, at TIMESTAMP);",
             {"ev": [(1, "2024-01-01 10:00:00"), (2, "2024-01-01T11:00:00.5"), (3, "2024-01-02T09:00:00"), (4, None)]})
    got, state = await run_incremental(tmp_path, None, incremental={"cursor": "at"}, **source)
    assert sorted(got.column("id").to_pylist()) == [1, 2, 3, 4]
    assert state == {"cursor": "at", "type": "timestamp", "value": "2024-01-02T09:00:00"}
    setup_db(tmp_path, "INSERT INTO ev VALUES (5, '2024-01-02 09:00:00.000001'), (6, '2024-01-02T08:00:00');")
    got, new = await run_incremental(tmp_path, state, incremental={"cursor": "at"}, **source)
    assert got.column("id").to_pylist() == [5]
    got, _ = await run_incremental(tmp_path, state, incremental={"cursor": "at", "lookback": "2 hours"}, **source)
    assert sorted(got.column("id").to_pylist()) == [3, 5, 6]  # 07:00 on: re-reads the mark row too
    got, same = await run_incremental(tmp_path, new, incremental={"cursor": "at"}, **source)
    assert got.num_rows == 0 and same is None  # nothing new: the mark stays where it is
    got, _ = await run_incremental(tmp_path, None, incremental={"cursor": "at", "initial": "2024-01-01T12:00:00"},
                                   **source)
    assert sorted(got.column("id").to_pylist()) == [3, 5, 6]


async def test_incremental_integer_cursor_with_lookback(tmp_path):
    setup_db(tmp_path, "CREATE TABLE ev(id INTEGER, v TEXT);", {"ev": [(i, f"v{i}") for i in range(1, 11)]})
    got, state = await run_incremental(tmp_path, {"cursor": "id", "type": "int", "value": 7}, table="ev",
                                       incremental={"cursor": "id", "lookback": 2})
    assert got.column("id").to_pylist() == [6, 7, 8, 9, 10]
    assert state == {"cursor": "id", "type": "int", "value": 10}
    with pytest.raises(ToolError, match="'nope' is not a column"):
        await run_incremental(tmp_path, None, table="ev", incremental={"cursor": "nope"})


@pytest.mark.parametrize(("column", "n"), [("id", 3), ("id", 64), ("day", 4), ("at", 5)])
async def test_partitions_return_exactly_the_rows_of_a_single_read(tmp_path, column, n):
    rows = [(i if i % 7 else None, f"2024-01-{1 + i % 28:02d}", f"2024-02-01T{i % 24:02d}:{i % 60:02d}:00" if i % 5 else None)
            for i in range(200)]
    setup_db(tmp_path, "CREATE TABLE p(id INTEGER, day DATE, at TIMESTAMP);", {"p": rows})
    single, _ = await run_incremental(tmp_path, None, table="p")
    parted, _ = await run_incremental(tmp_path, None, table="p", partitions=n, partition_on=column)
    def key(r):
        return tuple(str(v) for v in r.values())

    assert sorted(parted.to_pylist(), key=key) == sorted(single.to_pylist(), key=key)
    assert parted.num_rows == 200
    both, _ = await run_incremental(tmp_path, None, query="SELECT * FROM p", partitions=n, partition_on=column,
                                    incremental={"cursor": "id", "initial": 100})
    assert sorted(both.column("id").to_pylist()) == [i for i in range(101, 200) if i % 7]


async def test_partitioning_on_text_is_an_error(tmp_path):
    setup_db(tmp_path, "CREATE TABLE p(name TEXT);", {"p": [("a",), ("b",)]})
    with pytest.raises(ToolError, match="partition on an integer, date or timestamp column"):
        await run_incremental(tmp_path, None, table="p", partitions=2, partition_on="name")


# -- through the CLI -----------------------------------------------------------------------------


def test_cli_checkpoints_carry_the_source_position(tmp_path):
    """Each run's commit leaves a row in the database naming the run and where its source stood."""
    (tmp_path / "orders.csv").write_text("id,amount,city\n1,9.5,Köln\n2,3.25,\n3,1,Paris\n")
    (tmp_path / "pipeline.yaml").write_text(
        "version: 1\nname: to_sqlite\nconnections:\n  db: {url: \"sqlite:///db/test.sqlite\"}\n"
        "extract:\n  src: {tool: csv, path: orders.csv}\n"
        "load:\n  out: {input: src, tool: sqlite, connection: db, table: orders, mode: merge, key: [id]}\n")
    for _ in range(2):
        done = cli("run", "pipeline.yaml", "--quiet", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    first, second = checkpoints(tmp_path)
    for run_id, task, name, rows, position in (first, second):
        assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", run_id)
        assert (task, name, rows) == ("out", "orders", 3)
        assert set(position) == {"src"} and position["src"]["rows"] == 3
    assert first[0] != second[0]
    assert query(tmp_path, "SELECT count(*) FROM orders") == [(3,)]
