"""The generic sql extractor and loader against SQLite files, PostgreSQL and MariaDB on 127.0.0.1.

Every test runs once per backend, in a private schema (PostgreSQL), database (MariaDB) or file
(SQLite) that is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import json
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pytest
import sqlalchemy as sa

from agent_etl.exceptions import ToolError
from agent_etl.testing import build, collect, tool_context


@dataclass
class Target:
    kind: str
    url: str
    schema: str | None  # prefix of table names

    def table(self, name: str) -> str:
        quoted = '"' + name.replace('"', '""') + '"'
        return f"{self.schema}.{quoted}" if self.schema else quoted

    def rows(self, sql: str) -> list[tuple]:
        eng = sa.create_engine(self.url)
        try:
            with eng.connect() as conn:
                return [tuple(r) for r in conn.exec_driver_sql(sql)]
        finally:
            eng.dispose()

    def ident(self, name: str) -> str:
        """A name quoted for raw SQL in this database."""
        eng = sa.create_engine(self.url)
        prep = eng.dialect.identifier_preparer
        eng.dispose()
        return prep.quote_identifier(name)

    def q(self, name: str) -> str:
        """A table name quoted for raw SQL in this database."""
        return (self.ident(self.schema) + "." if self.schema else "") + self.ident(name)

    def checkpoints(self) -> list[tuple]:
        """The rows of the checkpoint table next to the tables, by run id, position parsed."""
        names = ", ".join(self.ident(n) for n in ("run_id", "task", "table_name", "rows", "position"))
        rows = self.rows(f"SELECT {names} FROM {self.q('_agent_etl_checkpoints')} ORDER BY run_id")
        return [(*r[:4], json.loads(r[4]) if isinstance(r[4], str) else r[4]) for r in rows]

    def tables(self) -> list[str]:
        eng = sa.create_engine(self.url)
        try:
            return sorted(sa.inspect(eng).get_table_names(schema=self.schema))
        finally:
            eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def target(request, tmp_path):
    kind, name = request.param, f"t_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        yield Target(kind, f"sqlite:///{tmp_path / 'test.db'}", None)
        return
    admin_url = {"postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
                 "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test"}[kind]
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    create, drop = {"postgresql": (f'CREATE SCHEMA "{name}"', f'DROP SCHEMA IF EXISTS "{name}" CASCADE'),
                    "mariadb": (f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4",
                                f"DROP DATABASE IF EXISTS `{name}`")}[kind]
    with admin.connect() as conn:
        conn.exec_driver_sql(create)
    try:
        if kind == "postgresql":
            yield Target(kind, admin_url, name)
        else:
            yield Target(kind, f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4", None)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(drop)
        admin.dispose()


@pytest.fixture
async def ctx(tmp_path, target):
    c = tool_context(tmp_path, connections={"db": {"url": target.url}}, batch_size=1000)
    yield c
    await c.resources.aclose()


async def stream(*batches):
    for b in batches:
        await asyncio.sleep(0)
        yield b


async def load(ctx, batches, **options) -> int:
    return await build("loader", "sql", {"connection": "db", **options}, ctx).load(batches)


async def extract(ctx, **options) -> pa.Table:
    return await collect(build("extractor", "sql", {"connection": "db", **options}, ctx).batches())


async def test_round_trip_of_mapped_types(ctx, target):
    utc = dt.UTC
    batch = pa.record_batch({
        "i16": pa.array([1, None, -300], pa.int16()),
        "i64": pa.array([2**62, None, -1]),
        "f64": pa.array([1e300, None, -0.25]),
        "flag": pa.array([True, False, None]),
        "text": pa.array(["ü ✓ 🙂 日本", None, ""]),
        "bin": pa.array([b"\x00\xff", None, b""]),
        "day": pa.array([dt.date(2024, 2, 29), None, dt.date(1970, 1, 1)]),
        "ts": pa.array([dt.datetime(2024, 1, 5, 10, 0, 0, 123456), None, dt.datetime(2038, 12, 31, 23, 59, 59)]),
        "tz": pa.array([dt.datetime(2024, 7, 1, 10, 0, 0, 5, tzinfo=utc), None, dt.datetime(2000, 1, 1, tzinfo=utc)],
                       pa.timestamp("us", "Europe/Berlin")),
        "dec": pa.array([decimal.Decimal("1234567890123.123456789"), None, decimal.Decimal("-0.5")],
                        pa.decimal128(30, 9)),
    })
    name = target.table("all types")
    assert await load(ctx, stream(batch), table=name, mode="replace") == 3
    got = await extract(ctx, table=name)
    assert got.num_rows == 3
    for col in ["i16", "i64", "f64", "flag", "text", "bin", "day", "ts"]:
        have = got.column(col).to_pylist()
        if col == "flag" and target.kind == "mariadb":
            have = [None if v is None else bool(v) for v in have]  # BOOL is TINYINT(1) there
        assert have == batch.column(col).to_pylist(), col
    want_tz = batch.column("tz").cast(pa.timestamp("us", "UTC")).to_pylist()
    have_tz = [v if v is None or v.tzinfo else v.replace(tzinfo=utc) for v in got.column("tz").to_pylist()]
    assert have_tz == want_tz  # PostgreSQL keeps the zone; the others hold the UTC wall clock
    if target.kind != "sqlite":  # SQLite's NUMERIC keeps 15 digits: use the sqlite tool for exact decimals
        assert got.column("dec").to_pylist() == batch.column("dec").to_pylist()
    empty = pa.record_batch({"id": pa.array([], pa.int64()), "s": pa.array([], pa.string())})
    assert await load(ctx, stream(empty), table=target.table("empty"), mode="replace") == 0
    got = await extract(ctx, table=target.table("empty"))
    assert got.num_rows == 0 and got.schema.names == ["id", "s"]


async def test_nan_and_infinity(ctx, target):
    batch = pa.record_batch({"x": [float("nan"), float("inf"), float("-inf"), 1.0]})
    if target.kind == "mariadb":
        with pytest.raises(ToolError, match=r"column 'x' holds 3 NaN or infinite.*replace them upstream"):
            await load(ctx, stream(batch), table=target.table("f"))
        return
    await load(ctx, stream(batch), table=target.table("f"))
    got = (await extract(ctx, table=target.table("f"))).column("x").to_pylist()
    if target.kind == "sqlite":
        assert got[1:] == [float("inf"), float("-inf"), 1.0]  # SQLite stores NaN as NULL
    else:
        assert got[0] != got[0] and got[1:] == [float("inf"), float("-inf"), 1.0]


async def test_merge_into_a_table_without_a_unique_index(ctx, target):
    """An existing table without a unique index gets one; only the input's columns change. (The upsert
    itself, last row of a key wins, is the contract suite's: tests/contract.)"""
    with sa.create_engine(target.url).begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {target.q('plain')} (id INTEGER, v VARCHAR(20), keep VARCHAR(20))")
        conn.exec_driver_sql(f"INSERT INTO {target.q('plain')} VALUES (1, 'a', 'k')")
    await load(ctx, stream(pa.record_batch({"id": [1, 2], "v": ["A", "B"]})), table=target.table("plain"),
               mode="merge", key="id")
    assert target.rows(f"SELECT id, v, keep FROM {target.q('plain')} ORDER BY id") == [(1, "A", "k"), (2, "B", None)]
    assert target.tables() == ["_agent_etl_checkpoints", "plain"]  # no staging table left


async def test_merge_into_a_table_with_duplicate_keys_fails_unchanged(ctx, target):
    with sa.create_engine(target.url).begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {target.q('d')} (id INTEGER, v VARCHAR(20))")
        conn.exec_driver_sql(f"INSERT INTO {target.q('d')} VALUES (1, 'a'), (1, 'b')")
    with pytest.raises(ToolError, match=r"share a key.*remove the duplicates"):
        await load(ctx, stream(pa.record_batch({"id": [3], "v": ["c"]})), table=target.table("d"), mode="merge", key="id")
    assert target.rows(f"SELECT count(*) FROM {target.q('d')}") == [(2,)]


@pytest.mark.parametrize("mode", ["append", "replace", "merge"])
async def test_a_failing_stream_or_constraint_leaves_the_table_unchanged(ctx, target, mode):
    name = target.table("t")
    await load(ctx, stream(pa.record_batch({"id": [1, 2], "v": ["a", "b"]})), table=name, mode="merge", key="id")

    async def broken():
        yield pa.record_batch({"id": [3, 4], "v": ["X", "Y"]})
        raise RuntimeError("upstream broke")

    with pytest.raises(RuntimeError):
        await load(ctx, broken(), table=name, mode=mode, key="id" if mode == "merge" else None)
    assert target.rows(f"SELECT id, v FROM {target.q('t')} ORDER BY id") == [(1, "a"), (2, "b")]
    if mode == "append":  # a duplicate key against the unique index
        with pytest.raises(ToolError, match=r"violates a constraint.*rolled back"):
            await load(ctx, stream(pa.record_batch({"id": [5, 1], "v": ["e", "dup"]})), table=name)
        assert target.rows(f"SELECT id, v FROM {target.q('t')} ORDER BY id") == [(1, "a"), (2, "b")]
    assert target.tables() == ["_agent_etl_checkpoints", "t"]
    assert [r[3] for r in target.checkpoints()] == [2]  # the first load's only


@pytest.mark.parametrize("mode", ["append", "merge"])
async def test_a_column_that_arrives_mid_stream_leaves_no_trace_when_the_load_fails(ctx, target, mode):
    name, key = target.table("e"), "id" if mode == "merge" else None
    await load(ctx, stream(pa.record_batch({"id": [1, 2], "v": ["a", "b"]})), table=name, mode="merge", key="id")

    async def broken():
        yield pa.record_batch({"id": [3], "v": ["c"]})
        yield pa.record_batch({"id": [4], "v": ["d"], "extra": [7]})
        raise RuntimeError("upstream broke")

    if target.kind == "mariadb" and mode == "append":  # its ALTER TABLE would commit the rows before it
        with pytest.raises(ToolError, match=r"new columns after rows were loaded: extra \(int64\).*mode: replace"):
            await load(ctx, broken(), table=name, mode=mode)
    else:
        with pytest.raises(RuntimeError, match="upstream broke"):
            await load(ctx, broken(), table=name, mode=mode, key=key)
    assert target.rows(f"SELECT * FROM {target.q('e')} ORDER BY id") == [(1, "a"), (2, "b")]
    assert target.tables() == ["_agent_etl_checkpoints", "e"]
    if mode == "merge":  # the same stream, ending cleanly, brings the column
        batches = [pa.record_batch({"id": [3], "v": ["c"]}), pa.record_batch({"id": [2], "v": ["B"], "extra": [7]})]
        assert await load(ctx, stream(*batches), table=name, mode=mode, key=key) == 2
        assert target.rows(f"SELECT id, v, extra FROM {target.q('e')} ORDER BY id") == [
            (1, "a", None), (2, "B", 7), (3, "c", None)]


async def test_a_failed_load_takes_back_the_columns_it_added(ctx, target):
    name = target.table("g")
    with sa.create_engine(target.url).begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {target.q('g')} (id INTEGER PRIMARY KEY, v VARCHAR(20) NOT NULL)")
        conn.exec_driver_sql(f"INSERT INTO {target.q('g')} VALUES (1, 'a')")

    async def broken(batch):
        yield batch
        raise RuntimeError("upstream broke")

    with pytest.raises(RuntimeError, match="upstream broke"):  # the first batch's new column, then a failure
        await load(ctx, broken(pa.record_batch({"id": [2], "v": ["b"], "extra": [1]})), table=name)
    with pytest.raises(ToolError, match=r"violates a constraint.*rolled back"):  # the upsert fails after the ALTER
        await load(ctx, stream(pa.record_batch({"id": [3], "v": pa.array([None], pa.string()), "more": [1]})),
                   table=name, mode="merge", key="id")
    assert target.rows(f"SELECT * FROM {target.q('g')}") == [(1, "a")]  # no column more than before
    with sa.create_engine(target.url).begin() as conn:  # a merge makes the unique index its upsert needs
        conn.exec_driver_sql(f"CREATE TABLE {target.q('h')} (id INTEGER, v VARCHAR(20))")
    with pytest.raises(RuntimeError, match="upstream broke"):
        await load(ctx, broken(pa.record_batch({"id": [2], "v": ["b"]})), table=target.table("h"), mode="merge", key="id")
    eng = sa.create_engine(target.url)
    assert sa.inspect(eng).get_indexes("h", schema=target.schema) == []
    eng.dispose()


async def test_column_names_match_as_the_database_compares_them(ctx, target):
    # MariaDB and SQLite compare column names ignoring case; PostgreSQL's quoted names keep it
    with sa.create_engine(target.url).begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {target.q('m')} ({target.ident('ID')} INTEGER PRIMARY KEY, "
                             f"{target.ident('Name')} VARCHAR(20))")
    name = target.table("m")
    first = pa.record_batch({"id": [1, 2], "name": ["a", "b"]})
    if target.kind == "postgresql":  # there "id" is another column than "ID"
        with pytest.raises(ToolError, match=r"merge key \['id'\] is not a column of the table"):
            await load(ctx, stream(first), table=name, mode="merge", key="id")
        return
    assert await load(ctx, stream(first), table=name) == 2
    assert await load(ctx, stream(pa.record_batch({"Id": [2, 3], "NAME": ["B", "c"], "Extra": [1, 2]})), table=name,
                      mode="merge", key="iD") == 2
    assert target.rows(f"SELECT * FROM {target.q('m')} ORDER BY 1") == [(1, "a", None), (2, "B", 1), (3, "c", 2)]
    assert [c["name"] for c in sa.inspect(sa.create_engine(target.url)).get_columns("m")] == ["ID", "Name", "Extra"]


async def test_replace_swaps_in_the_new_rows(ctx, target):
    name = target.table("r")
    await load(ctx, stream(pa.record_batch({"id": [1, 2, 3]})), table=name)
    assert await load(ctx, stream(pa.record_batch({"id": [10]}), pa.record_batch({"id": [11], "x": ["new"]})),
                      table=name, mode="replace") == 2
    assert target.rows(f"SELECT id, x FROM {target.q('r')} ORDER BY id") == [(10, None), (11, "new")]
    assert await load(ctx, stream(), table=name, mode="replace") == 0
    assert target.rows(f"SELECT count(*) FROM {target.q('r')}") == [(0,)]


async def test_no_batch_creates_nothing_and_a_checkpoint_sits_next_to_the_table(ctx, target, tmp_path):
    """(What a checkpoint holds per mode is the contract suite's: tests/contract.)"""
    assert await load(ctx, stream(), table=target.table("c")) == 0
    assert target.tables() == []  # no table, no batch: not even a checkpoint
    position = {"src": {"rows": 4}}
    c = tool_context(tmp_path, task="load", run_id="run-1", connections=ctx.connections, position=position)
    c.resources = ctx.resources
    await load(c, stream(pa.record_batch({"id": [1, 2, 3, 4]})), table=target.table("c"))
    assert target.checkpoints() == [("run-1", "load", target.table("c"), 4, position)]
    assert None not in [r[0] for r in target.rows(f"SELECT committed_at FROM {target.q('_agent_etl_checkpoints')}")]
    assert target.tables() == ["_agent_etl_checkpoints", "c"]


async def test_a_checkpoint_table_from_before_positions_gets_the_column(ctx, target):
    rows = target.ident("rows")
    with sa.create_engine(target.url).begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {target.q('_agent_etl_checkpoints')} (run_id TEXT NOT NULL, "
                             f"task TEXT NOT NULL, table_name TEXT NOT NULL, {rows} BIGINT NOT NULL)")
        conn.exec_driver_sql(f"INSERT INTO {target.q('_agent_etl_checkpoints')} VALUES ('old-run', 'load', 't', 5)")
    c = tool_context(ctx.base_dir, connections=ctx.connections, position={"src": {"rows": 2}})
    c.resources = ctx.resources
    await load(c, stream(pa.record_batch({"id": [1, 2]})), table=target.table("t"))
    assert target.checkpoints() == [("old-run", "load", "t", 5, None),  # no position was recorded then
                                    ("test-run", "test", target.table("t"), 2, {"src": {"rows": 2}})]


async def test_partitions_and_incremental(ctx, target):
    n = 500
    batch = pa.record_batch({"id": pa.array([i if i % 11 else None for i in range(n)], pa.int64()),
                             "day": [dt.date(2024, 1, 1) + dt.timedelta(days=i % 30) for i in range(n)],
                             "n": list(range(n))})
    name = target.table("p")
    await load(ctx, stream(batch), table=name)
    single = (await extract(ctx, table=name)).sort_by("n")
    for column, parts in [("id", 5), ("day", 4), ("id", 64)]:
        parted = await extract(ctx, table=name, partitions=parts, partition_on=column)
        assert parted.sort_by("n").equals(single), (column, parts)
    ctx2 = tool_context(ctx.base_dir, connections=ctx.connections, state={"cursor": "id", "type": "int", "value": 480})
    ctx2.resources = ctx.resources
    got = await collect(build("extractor", "sql", {"connection": "db", "query": f"SELECT id, n FROM {target.q('p')} "
                                                   "WHERE n >= 0", "incremental": {"cursor": "id", "lookback": 5},
                                                   "partitions": 3, "partition_on": "n"}, ctx2).batches())
    assert sorted(got.column("id").to_pylist()) == [i for i in range(476, n) if i % 11]
    assert ctx2.saved_state == {"cursor": "id", "type": "int", "value": 499}


async def test_weird_identifiers_are_names(ctx, target):
    batch = pa.record_batch({"a b": [1, 2], 'q"uote': ["x", "y"], "semi;colon": [True, False]})
    name = target.table("x; drop table t")
    await load(ctx, stream(batch), table=name, mode="replace")
    await load(ctx, stream(batch), table=name, mode="merge", key="a b")
    got = await extract(ctx, table=name)
    assert got.column("a b").to_pylist() == [1, 2] and got.column('q"uote').to_pylist() == ["x", "y"]
    assert target.rows(f"SELECT count(*) FROM {target.q('x; drop table t')}") == [(2,)]


async def test_bad_input_errors(ctx, target):
    await load(ctx, stream(pa.record_batch({"id": [1]})), table=target.table("orders"))
    with pytest.raises(ToolError, match=r"table .*ordres.* not found at .*\(tables: 'orders'\); "
                                        "check the table"):
        await extract(ctx, table=target.table("ordres"))
    with pytest.raises(ToolError, match=r"column 'u' has Arrow type dense_union.*cast it upstream"):
        u = pa.UnionArray.from_dense(pa.array([0], pa.int8()), pa.array([0], pa.int32()), [pa.array([1])])
        await load(ctx, stream(pa.record_batch({"u": u})), table=target.table("bad"))
    with pytest.raises(ToolError, match=r"freeze.*extra"):
        await load(ctx, stream(pa.record_batch({"id": [2], "extra": [1]})), table=target.table("orders"),
                   schema_policy="freeze")
    with pytest.raises(ToolError, match=r"query .*nope"):
        await extract(ctx, query="SELECT nope FROM nowhere_at_all")
    assert "password" not in str(ctx.connections)


async def test_wrong_password_and_unreachable_host_name_the_server(tmp_path):
    from agent_etl.exceptions import TransientError

    for url, error, text in [("mysql+pymysql://root:s3cret@127.0.0.1:3306/nope_db", ToolError, "root@127.0.0.1:3306"),
                             ("postgresql+psycopg://postgres@127.0.0.1:1/test", TransientError, "unreachable")]:
        c = tool_context(tmp_path, connections={"db": {"url": url}})
        with pytest.raises(error, match=text) as info:
            await collect(build("extractor", "sql", {"connection": "db", "table": "t"}, c).batches())
        assert "s3cret" not in str(info.value)
        await c.resources.aclose()


async def test_loads_into_one_sqlite_file_at_once_both_land(tmp_path):
    # SQLite has one writer at a time: the second load waits for the first instead of failing
    url = f"sqlite:///{tmp_path / 'one.db'}"
    ctx = tool_context(tmp_path, connections={"db": {"url": url}})
    batches = [pa.record_batch({"id": list(range(i * 5000, (i + 1) * 5000)), "v": ["x" * 20] * 5000}) for i in range(4)]
    try:
        assert await asyncio.gather(load(ctx, stream(*batches), table="b", mode="replace"),
                                    load(ctx, stream(*batches), table="c"),
                                    load(ctx, stream(*batches), table="d", mode="merge", key="id")) == [20_000] * 3
    finally:
        await ctx.resources.aclose()
    assert [Target("sqlite", url, None).rows(f"SELECT count(*) FROM {t}") for t in "bcd"] == [[(20_000,)]] * 3


async def test_sqlite_partitions_are_one_snapshot_while_another_connection_writes(tmp_path):
    import sqlite3

    path = tmp_path / "snap.db"
    with contextlib.closing(sqlite3.connect(path)) as setup:
        setup.execute("PRAGMA journal_mode=WAL")  # a writer may commit while the read is open
        setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        setup.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 301)])
        setup.commit()
    ctx = tool_context(tmp_path, connections={"db": {"url": f"sqlite:///{path}"}}, batch_size=50)
    reader = build("extractor", "sql", {"connection": "db", "table": "t", "partitions": 3, "partition_on": "id"}, ctx)
    ids = []
    try:
        async with contextlib.aclosing(reader.batches()) as batches:
            async for batch in batches:
                if not ids:  # the first partition is under way: move rows between the other two, and drop one
                    with contextlib.closing(sqlite3.connect(path)) as writer:
                        writer.execute("UPDATE t SET id = id + 1000 WHERE id BETWEEN 150 AND 160")
                        writer.execute("DELETE FROM t WHERE id = 290")
                        writer.commit()
                ids += batch.column("id").to_pylist()
    finally:
        await ctx.resources.aclose()
    assert sorted(ids) == list(range(1, 301))  # the table as the read began


async def test_a_pipeline_reads_and_writes_one_sqlite_file_at_once(tmp_path):
    import sqlite3

    from agent_etl import AgentCoordinator

    with contextlib.closing(sqlite3.connect(tmp_path / "same.db")) as setup:
        setup.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)")
        setup.executemany("INSERT INTO a VALUES (?, ?)", [(i, "x" * 20) for i in range(30_000)])
        setup.commit()
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: same_file\nconnections:\n  db: {url: 'sqlite:///same.db'}\n"
        "extract:\n  src: {tool: sql, connection: db, table: a, partitions: 3, partition_on: id}\n"
        "load:\n  b: {input: src, tool: sql, connection: db, table: b, mode: replace}\n"
        "  c: {input: src, tool: sql, connection: db, table: c}\n")
    result = await AgentCoordinator(home=tmp_path / ".agent-etl").run(tmp_path / "p.yaml")
    assert result.ok, result
    target = Target("sqlite", f"sqlite:///{tmp_path / 'same.db'}", None)
    assert [target.rows(f"SELECT count(*) FROM {t}") for t in "bc"] == [[(30_000,)]] * 2
