"""The postgres loader against a real PostgreSQL: types, modes, schema policies, bad rows, the CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import math
import re
import uuid
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from agent_etl.exceptions import ToolError
from agent_etl.testing import build, stream, tool_context
from tests.cli.conftest import cli

D = decimal.Decimal
UTC = dt.UTC


async def load(data, target, tmp_path: Path, table: str = "t", *, batch_size: int | None = None,
               commits: list[int] | None = None, **options) -> int:
    """Run the postgres loader on ``data`` (a table, a batch, batches or an async stream) as a pipeline would."""
    schema, url = target
    ctx = tool_context(tmp_path, task="load", connections={"pg": {"url": url}})

    async def hook(rows: int) -> None:
        (commits if commits is not None else []).append(rows)

    ctx.commit_hook = hook
    loader = build("loader", "postgres", {"connection": "pg", "table": f'"{schema}".{table}', **options}, ctx)
    batches = data if hasattr(data, "__aiter__") else stream(data, batch_size)
    try:
        return await loader.load(batches)
    finally:
        await ctx.resources.aclose()


def query(target, text: str, *params):
    schema, url = target
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        return conn.execute(text, params).fetchall()


def execute(target, *statements: str) -> None:
    schema, url = target
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for s in statements:
            conn.execute(s)


async def run_load(target, tmp_path: Path, data: pa.Table, options: str, defaults: str = ""):
    """Load ``data``, written as a Parquet file, into table t through a pipeline run, the load's
    ``options`` given as YAML flow text (``mode: replace``); the run's result, checked ok."""
    from agent_etl import AgentCoordinator

    schema, url = target
    pq.write_table(data, tmp_path / "in.parquet")
    defaults = f"defaults: {defaults}\n" if defaults else ""
    (tmp_path / "p.yaml").write_text(
        f"version: 1\nname: load\n{defaults}"
        f"connections:\n  pg: {{url: '{url}'}}\nextract:\n  src: {{tool: parquet, path: in.parquet}}\n"
        f"load:\n  out: {{input: src, tool: postgres, connection: pg, table: '\"{schema}\".t', {options}}}\n")
    result = await AgentCoordinator(home=tmp_path / ".agent-etl").run(tmp_path / "p.yaml")
    assert result.ok, result
    return result


def column_types(target, table: str = "t") -> dict[str, str]:
    rows = query(target, "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                         "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                 sql.Identifier(target[0], table).as_string(None))
    return dict(rows)


# -- types ---------------------------------------------------------------------------------------

def every_type() -> pa.Table:
    u1, u2 = uuid.uuid4(), uuid.uuid4()
    return pa.table({
        "i1": pa.array([1, None, -128, 127], pa.int8()),
        "i2": pa.array([1, None, -32768, 32767], pa.int16()),
        "i4": pa.array([1, 2, None, -2**31], pa.int32()),
        "i8": pa.array([2**62, None, -5, 2**63 - 1], pa.int64()),
        "u4": pa.array([2**32 - 1, 0, None, 7], pa.uint32()),
        "u8": pa.array([2**64 - 1, 0, None, 1], pa.uint64()),
        "f4": pa.array([1.5, float("nan"), float("inf"), None], pa.float32()),
        "f8": pa.array([float("-inf"), None, 3.25, float("nan")]),
        "b": pa.array([True, False, None, True]),
        "n": pa.array([D("1234567890.12"), D("-0.01"), None, D("0")], pa.decimal128(12, 2)),
        "n38": pa.array([D("12345678901234567890123.123456789012345"), D("-1E-15"), D("0"),
                         D("-99999999999999999999999.999999999999999")], pa.decimal128(38, 15)),
        "n5": pa.array([D("1.5"), D("-3"), D("99999.99999"), None], pa.decimal128(10, 5)),
        "s": pa.array(["héllo wörld ✓ 日本", None, "", "x; drop table t"]),
        "ls": pa.array(["x", "y", None, "z"], pa.large_string()),
        "by": pa.array([b"\x00\x01\xff", None, b"", b"abc"]),
        "d": pa.array([dt.date(2020, 1, 1), dt.date(1969, 12, 31), None, dt.date(1, 1, 1)]),
        "ts": pa.array([dt.datetime(2020, 1, 1, 12, 0, 0, 123456), None, dt.datetime(1900, 1, 1),
                        dt.datetime(2999, 12, 31, 23, 59, 59)], pa.timestamp("us")),
        "ts_ns": pa.array([1_000, None, -1_000_000_000, 1_700_000_000_123_456_000], pa.timestamp("ns")),
        "tz": pa.array([dt.datetime(2020, 6, 1, 12, tzinfo=UTC), None, dt.datetime(2000, 1, 1, tzinfo=UTC),
                        dt.datetime(1999, 12, 31, 23, 30, tzinfo=UTC)], pa.timestamp("ms", "Asia/Kolkata")),
        "tm": pa.array([dt.time(12, 30, 1, 5), None, dt.time(0), dt.time(23, 59, 59, 999999)], pa.time64("us")),
        "u": pa.ExtensionArray.from_storage(pa.uuid(), pa.array([u1.bytes, None, u2.bytes, u1.bytes], pa.binary(16))),
        "st": pa.array([{"a": 1, "b": "x"}, None, {"a": None, "b": "é\"'"}, {"a": 2, "b": ""}]),
        "li": pa.array([[1, None, 3], [], None, [2**40]], pa.list_(pa.int64())),
        "lt": pa.array([["a", None], None, [], ["日本", ""]]),
        "lf": pa.array([[1.5], [float("nan")], [None], []]),
        "dic": pa.array(["a", "b", None, "a"]).dictionary_encode(),
        "nul": pa.array([None, None, None, None]),
    })


async def test_every_mapped_type_round_trips(pg_target, tmp_path):
    table = every_type()
    assert await load(table, pg_target, tmp_path, batch_size=3) == 4  # two batches, two encodings

    assert column_types(pg_target) == {
        "i1": "smallint", "i2": "smallint", "i4": "integer", "i8": "bigint", "u4": "bigint",
        "u8": "numeric(20,0)", "f4": "real", "f8": "double precision", "b": "boolean", "n": "numeric(12,2)",
        "n38": "numeric(38,15)", "n5": "numeric(10,5)", "s": "text", "ls": "text", "by": "bytea", "d": "date",
        "ts": "timestamp without time zone", "ts_ns": "timestamp without time zone",
        "tz": "timestamp with time zone", "tm": "time without time zone", "u": "uuid", "st": "jsonb",
        "li": "bigint[]", "lt": "text[]", "lf": "double precision[]", "dic": "text", "nul": "text"}
    names = table.column_names
    got = query(pg_target, "SELECT " + ", ".join(f'"{n}"' for n in names) + " FROM t ORDER BY i4 NULLS LAST")
    got = [dict(zip(names, r)) for r in got]
    want = table.to_pylist()
    want.sort(key=lambda r: (r["i4"] is None, r["i4"] or 0))
    for g, w in zip(got, want, strict=True):
        for name in names:
            g_v, w_v = g[name], w[name]
            if name == "ts_ns":  # microseconds are PostgreSQL's resolution: nanoseconds are truncated
                w_v = None if w_v is None else pa.scalar(w_v, pa.timestamp("ns")).cast(
                    pa.timestamp("us"), safe=False).as_py()
            if name == "tz" and w_v is not None:
                assert g_v == w_v and g_v.utcoffset() is not None, name
                continue
            if isinstance(w_v, float) and math.isnan(w_v):
                assert isinstance(g_v, float) and math.isnan(g_v), name
                continue
            if name == "lf" and w_v and isinstance(w_v[0], float) and math.isnan(w_v[0]):
                assert math.isnan(g_v[0]), name
                continue
            if name == "f4" and w_v is not None:
                assert g_v == pytest.approx(w_v), name
                continue
            assert g_v == w_v, (name, g_v, w_v)


async def test_zero_rows_create_the_empty_table(pg_target, tmp_path):
    empty = pa.record_batch({"id": pa.array([], pa.int64()), "name": pa.array([], pa.string())})
    commits: list[int] = []
    assert await load([empty], pg_target, tmp_path, commits=commits) == 0
    assert column_types(pg_target) == {"id": "bigint", "name": "text"}
    assert query(pg_target, "SELECT count(*) FROM t") == [(0,)]
    assert commits == [0]


async def test_unmappable_type_names_the_column_and_the_fix(pg_target, tmp_path):
    table = pa.table({"id": [1], "took": pa.array([5], pa.duration("s"))})
    with pytest.raises(ToolError, match=r"column 'took' has Arrow type duration\[s\].*tool: cast"):
        await load(table, pg_target, tmp_path)
    # no table (the checkpoint table is made before the load, in a transaction of its own)
    assert query(pg_target, "SELECT tablename FROM pg_tables WHERE schemaname = %s", pg_target[0]) == [
        ("_agent_etl_checkpoints",)]


# -- append ----------------------------------------------------------------------------------------

async def test_a_checkpoint_table_from_before_positions_gets_the_column(pg_target, tmp_path):
    execute(pg_target, "CREATE TABLE _agent_etl_checkpoints (run_id text NOT NULL, task text NOT NULL, "
                       "table_name text NOT NULL, rows bigint NOT NULL, committed_at timestamptz NOT NULL DEFAULT now())",
            "INSERT INTO _agent_etl_checkpoints VALUES ('old-run', 'load', 't', 5)")
    schema, url = pg_target
    ctx = tool_context(tmp_path, task="load", connections={"pg": {"url": url}},
                       position={"src": {"rows": 3, "cursor": "id", "max": 2}})
    try:
        await build("loader", "postgres", {"connection": "pg", "table": f'"{schema}".t'}, ctx).load(
            stream(pa.table({"id": [0, 1, 2]})))
    finally:
        await ctx.resources.aclose()
    assert query(pg_target, "SELECT run_id, rows, position FROM _agent_etl_checkpoints ORDER BY committed_at") == [
        ("old-run", 5, {}), ("test-run", 3, {"src": {"rows": 3, "cursor": "id", "max": 2}})]


async def test_a_checkpoint_table_made_meanwhile_by_another_load_fails_neither(pg_target, tmp_path):
    """Two loads of a first run may create the checkpoint table at the same moment; the one that
    waits on the other's CREATE must go on, not fail with its rows."""
    schema, url = pg_target
    other = psycopg.connect(url)
    other.execute(sql.SQL("CREATE TABLE {} (run_id text NOT NULL, task text NOT NULL, table_name text NOT NULL, "
                          "rows bigint NOT NULL, position jsonb NOT NULL DEFAULT '{{}}', committed_at timestamptz "
                          "NOT NULL DEFAULT now())").format(sql.Identifier(schema, "_agent_etl_checkpoints")))
    loading = asyncio.create_task(load(pa.table({"id": [1, 2, 3]}), pg_target, tmp_path))
    waiting = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
               "AND query LIKE '%%_agent_etl_checkpoints%%' AND pid <> pg_backend_pid()")
    for _ in range(1500):  # until the loader waits on the uncommitted CREATE (30 s at most, for a loaded machine)
        if query(pg_target, waiting) != [(0,)] or loading.done():
            break
        await asyncio.sleep(0.02)
    assert query(pg_target, waiting) == [(1,)]
    other.commit()
    other.close()
    assert await loading == 3
    assert query(pg_target, "SELECT rows FROM _agent_etl_checkpoints") == [(3,)]


async def test_a_role_that_may_not_create_still_loads_into_existing_tables(pg_target, tmp_path):
    """Once the checkpoint table exists, a load needs no CREATE right in the schema: only to write."""
    schema, url = pg_target
    await load(pa.table({"id": [1]}), pg_target, tmp_path)  # makes t and the checkpoint table
    role = f"writer_{uuid.uuid4().hex[:10]}"
    execute(pg_target, f'CREATE ROLE "{role}" LOGIN', f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
            f'GRANT SELECT, INSERT ON t, _agent_etl_checkpoints TO "{role}"')
    try:
        ctx = tool_context(tmp_path, task="load", connections={"pg": {"url": url.replace("postgres@", f"{role}@")}})
        try:
            await build("loader", "postgres", {"connection": "pg", "table": f'"{schema}".t'}, ctx).load(
                stream(pa.table({"id": [2, 3]})))
        finally:
            await ctx.resources.aclose()
    finally:
        execute(pg_target, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')
    assert query(pg_target, "SELECT id FROM t ORDER BY id") == [(1,), (2,), (3,)]
    assert query(pg_target, "SELECT rows FROM _agent_etl_checkpoints ORDER BY committed_at") == [(1,), (2,)]


async def test_existing_columns_take_compatible_types(pg_target, tmp_path):
    execute(pg_target, "CREATE TABLE t (id bigint, small smallint, price numeric(8,3), label varchar(10), "
                       "doc json, at timestamptz DEFAULT now(), state text)")
    table = pa.table({"id": pa.array([1, 2], pa.int8()), "small": pa.array([5, -5], pa.int64()),
                      "price": pa.array([D("1.5"), D("-2.25")], pa.decimal128(4, 2)),
                      "label": ["a", "bb"], "doc": pa.array([{"k": [1, 2]}, None])})
    await load(table, pg_target, tmp_path)
    rows = query(pg_target, "SELECT id, small, price, label, doc, at IS NOT NULL, state FROM t ORDER BY id")
    assert rows == [(1, 5, D("1.500"), "a", {"k": [1, 2]}, True, None), (2, -5, D("-2.250"), "bb", None, True, None)]


async def test_integer_overflow_into_a_narrower_column_names_the_column(pg_target, tmp_path):
    execute(pg_target, "CREATE TABLE t (id integer)", "INSERT INTO t VALUES (7)")
    with pytest.raises(ToolError, match=r"column 'id'.*nothing was written"):
        await load(pa.table({"id": pa.array([1, 2**40], pa.int64())}), pg_target, tmp_path)
    assert query(pg_target, "SELECT id FROM t") == [(7,)]


async def test_a_type_change_names_the_column_and_both_types(pg_target, tmp_path):
    execute(pg_target, "CREATE TABLE t (id integer, amount numeric(10,2))")
    with pytest.raises(ToolError, match=r"column 'amount' is numeric\(10,2\) in the table but string in the input"):
        await load(pa.table({"id": [1], "amount": ["1.5"]}), pg_target, tmp_path, schema_policy="evolve")


# -- schema policy ---------------------------------------------------------------------------------

async def test_evolve_adds_new_columns_even_mid_stream(pg_target, tmp_path):
    await load(pa.table({"id": [1], "a": ["x"]}), pg_target, tmp_path)
    batches = [pa.record_batch({"id": [2], "a": ["y"]}), pa.record_batch({"b": [2.5], "id": [3]})]
    assert await load(batches, pg_target, tmp_path) == 2
    assert column_types(pg_target) == {"id": "bigint", "a": "text", "b": "double precision"}
    assert query(pg_target, "SELECT * FROM t ORDER BY id") == [(1, "x", None), (2, "y", None), (3, None, 2.5)]


@pytest.mark.parametrize("mode", ["append", "replace", "merge"])
async def test_freeze_lists_the_drift_and_changes_nothing(pg_target, tmp_path, mode):
    await load(pa.table({"id": [1], "a": ["x"]}), pg_target, tmp_path)
    with pytest.raises(ToolError, match=r"schema_policy: freeze.*new column.*'?b'? \(int64\).*nothing was written"):
        await load(pa.table({"id": [2], "a": ["y"], "b": [1]}), pg_target, tmp_path, mode=mode, key="id",
                   schema_policy="freeze")
    assert column_types(pg_target) == {"id": "bigint", "a": "text"}
    assert query(pg_target, "SELECT * FROM t") == [(1, "x")]


async def test_freeze_replace_also_refuses_missing_columns(pg_target, tmp_path):
    await load(pa.table({"id": [1], "a": ["x"]}), pg_target, tmp_path)
    with pytest.raises(ToolError, match=r"missing columns \['a'\]"):
        await load(pa.table({"id": [2]}), pg_target, tmp_path, mode="replace", schema_policy="freeze")
    assert query(pg_target, "SELECT * FROM t") == [(1, "x")]


# -- replace ---------------------------------------------------------------------------------------

async def test_replace_keeps_the_table_and_its_dependents(pg_target, tmp_path):
    execute(pg_target, "CREATE TABLE t (id integer PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'old')",
            "CREATE VIEW t_view AS SELECT id FROM t")
    await load(pa.table({"id": [5, 6]}), pg_target, tmp_path, mode="replace")
    assert query(pg_target, "SELECT * FROM t ORDER BY id") == [(5, None), (6, None)]
    assert query(pg_target, "SELECT count(*) FROM t_view") == [(2,)]
    await load([], pg_target, tmp_path, mode="replace")  # no batch at all: the table is emptied
    assert query(pg_target, "SELECT count(*) FROM t") == [(0,)]


# -- merge -----------------------------------------------------------------------------------------

def expected_merge(old: pa.Table, new: pa.Table, key: list[str]) -> list[tuple]:
    """Old rows, then new rows in order; the last row of each key wins (computed by pandas)."""
    both = pa.concat_tables([old, new], promote_options="default").to_pandas()
    last = both.drop_duplicates(subset=key, keep="last").sort_values(key)
    return [tuple(None if isinstance(v, float) and math.isnan(v) else v for v in r)
            for r in last.itertuples(index=False)]


async def test_merge_into_a_table_without_a_unique_index(pg_target, tmp_path):
    """A table the loader did not create, with no unique index on the key. (A merge into a table it created is
    the contract suite's: tests/contract.)"""
    old = pa.table({"k1": [1, 1, 2, 3], "k2": ["a", "b", "a", "a"], "v": [1.0, 2.0, 3.0, 4.0],
                    "note": ["o1", "o2", "o3", "o4"]})
    execute(pg_target, "CREATE TABLE t (k1 bigint, k2 text, v double precision, note text)")
    await load(old, pg_target, tmp_path)
    # updates, inserts, and keys repeated within the load (across batches): the last one wins
    new = pa.table({"k1": [1, 4, 2, 4, 5, 1], "k2": ["b", "a", "a", "a", "z", "b"],
                    "v": [20.0, 40.0, 30.0, 41.0, None, 21.0], "note": ["n1", "n2", "n3", "n4", "n5", "n6"]})
    commits: list[int] = []
    await load(new, pg_target, tmp_path, mode="merge", key=["k1", "k2"], batch_size=2, commits=commits)
    assert commits == [6]
    got = query(pg_target, "SELECT k1, k2, v, note FROM t ORDER BY k1, k2")
    assert got == expected_merge(old, new, ["k1", "k2"])


async def test_merge_of_new_rows_only_and_all_key_columns(pg_target, tmp_path):
    await load(pa.table({"id": [1, 2]}), pg_target, tmp_path, mode="merge", key="id")
    await load(pa.table({"id": [2, 3, 3]}), pg_target, tmp_path, mode="merge", key="id")  # DO NOTHING path
    assert query(pg_target, "SELECT id FROM t ORDER BY id") == [(1,), (2,), (3,)]
    assert "PRIMARY KEY" in query(pg_target, "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                             "WHERE conrelid = %s::regclass", f'"{pg_target[0]}".t')[0][0]


async def test_merge_evolves_the_target_at_commit(pg_target, tmp_path):
    await load(pa.table({"id": [1, 2], "a": ["x", "y"]}), pg_target, tmp_path, mode="merge", key="id")
    await load(pa.table({"id": [2, 3], "b": [True, False]}), pg_target, tmp_path, mode="merge", key="id")
    assert query(pg_target, "SELECT * FROM t ORDER BY id") == [(1, "x", None), (2, "y", True), (3, None, False)]


async def test_merge_key_must_be_in_the_input(pg_target, tmp_path):
    with pytest.raises(ToolError, match=r"merge key column\(s\) \['nope'\]"):
        await load(pa.table({"id": [1]}), pg_target, tmp_path, mode="merge", key="nope")


# -- names -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("table", ['"x; drop table t"', '"MiXed Case"', '"odd.name"', '"quo""te"'])
async def test_weird_identifiers_are_names(pg_target, tmp_path, table):
    execute(pg_target, "CREATE TABLE t (id int)")  # what an injection would drop
    data = pa.table({"id": [1, 2], 'col"; drop table t; --': ["a", "b"], "MiXed": [1.0, 2.0]})
    for mode in ("append", "merge", "replace"):
        await load(data, pg_target, tmp_path, table=table, mode=mode, key="id")
    name = table[1:-1].replace('""', '"')
    assert query(pg_target, sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(name)).as_string(None)) \
        == [(1, "a", 1.0), (2, "b", 2.0)]
    assert query(pg_target, "SELECT count(*) FROM t") == [(0,)]  # still there


# -- bad rows --------------------------------------------------------------------------------------

BAD = {
    "not null": ("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)", {"id": [2, 3], "v": ["b", None]},
                 r'null value in column "v" of relation "t" violates not-null constraint'),
    "unique": ("CREATE TABLE t (id int PRIMARY KEY, v text)", {"id": [2, 1], "v": ["b", "c"]},
               r'duplicate key value violates unique constraint "t_pkey".*Key \(id\)=\(1\)'),
    "check": ("CREATE TABLE t (id int PRIMARY KEY, v text CHECK (v <> 'bad'))", {"id": [2, 3], "v": ["b", "bad"]},
              r'violates check constraint "t_v_check"'),
    "numeric overflow": ("CREATE TABLE t (id int PRIMARY KEY, v numeric(4,2))",
                         {"id": [2, 3], "v": pa.array([D("1.5"), D("123.45")], pa.decimal128(5, 2))},
                         r"numeric field overflow.*column v"),
    "too long": ("CREATE TABLE t (id int PRIMARY KEY, v varchar(3))", {"id": [2, 3], "v": ["ok", "too long"]},
                 r"value too long for type character varying\(3\).*column v"),
}


@pytest.mark.parametrize("mode", ["append", "merge"])
@pytest.mark.parametrize("case", list(BAD))
async def test_bad_rows_fail_the_load_and_change_nothing(pg_target, tmp_path, case, mode):
    ddl, rows, message = BAD[case]
    execute(pg_target, ddl, "INSERT INTO t (id, v) VALUES (1, '1')")
    if case == "unique" and mode == "merge":
        return  # a merge updates the existing key instead: not a violation
    commits: list[int] = []
    with pytest.raises(ToolError, match=message) as e:
        await load(pa.table(rows), pg_target, tmp_path, mode=mode, key="id", commits=commits)
    assert f"{pg_target[0]}.t" in str(e.value) and "nothing was written" in str(e.value)
    assert commits == []
    assert query(pg_target, "SELECT id, v::numeric FROM t") == [(1, 1)]


async def test_a_view_is_not_a_destination(pg_target, tmp_path):
    execute(pg_target, "CREATE VIEW t AS SELECT 1 AS id")
    with pytest.raises(ToolError, match="it is not a table"):
        await load(pa.table({"id": [1]}), pg_target, tmp_path)


# -- through the CLI -------------------------------------------------------------------------------

def pipeline(tmp_path: Path, target, source: str, **load_options) -> Path:
    opts = "".join(f"\n    {k}: {v}" for k, v in load_options.items())
    spec = (f"version: 1\nname: to_pg\nconnections:\n  pg: {{url: \"{target[1]}\"}}\n"
            f"extract:\n  src: {{tool: {source.split('.')[-1]}, path: {source}}}\n"
            f"load:\n  out:\n    input: src\n    tool: postgres\n    connection: pg\n"
            f"    table: {target[0]}.orders{opts}\n")
    path = tmp_path / "pipeline.yaml"
    path.write_text(spec)
    return path


def test_cli_csv_and_parquet_to_postgres(pg_target, tmp_path):
    (tmp_path / "orders.csv").write_text("id,amount,city\n1,9.5,Köln\n2,3.25,\n3,1,Paris\n")
    pipeline(tmp_path, pg_target, "orders.csv", mode="merge", key="[id]")
    done = cli("run", "pipeline.yaml", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    pq.write_table(pa.table({"id": [3, 4], "amount": [7.0, 8.0], "city": ["Lyon", None]}), tmp_path / "more.parquet")
    pipeline(tmp_path, pg_target, "more.parquet", mode="merge", key="[id]")
    done = cli("run", "pipeline.yaml", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert query(pg_target, "SELECT * FROM orders ORDER BY id") == [
        (1, 9.5, "Köln"), (2, 3.25, None), (3, 7.0, "Lyon"), (4, 8.0, None)]


def test_cli_checkpoints_carry_the_source_position(pg_target, tmp_path):
    """Each run's commit leaves a row in the destination naming the run and where its source stood."""
    (tmp_path / "orders.csv").write_text("id,amount,city\n1,9.5,Köln\n2,3.25,\n3,1,Paris\n")
    pipeline(tmp_path, pg_target, "orders.csv")
    done = cli("run", "pipeline.yaml", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run_id, task, name, rows, position), = query(
        pg_target, "SELECT run_id, task, table_name, rows, position FROM _agent_etl_checkpoints")
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", run_id)
    assert (task, name, rows) == ("out", f"{pg_target[0]}.orders", 3)
    assert set(position) == {"src"} and position["src"]["rows"] == 3


def test_cli_bad_rows_exit_1_without_traceback(pg_target, tmp_path):
    execute(pg_target, "CREATE TABLE orders (id int PRIMARY KEY, city varchar(4) NOT NULL)")
    (tmp_path / "orders.csv").write_text("id,city\n1,Rome\n2,\n")
    pipeline(tmp_path, pg_target, "orders.csv")
    done = cli("run", "pipeline.yaml", "--quiet", cwd=tmp_path)
    assert done.returncode == 1
    assert 'null value in column "city"' in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert query(pg_target, "SELECT count(*) FROM orders") == [(0,)]


def test_cli_merge_without_key_is_a_spec_error(pg_target, tmp_path):
    (tmp_path / "orders.csv").write_text("id\n1\n")
    pipeline(tmp_path, pg_target, "orders.csv", mode="merge")
    done = cli("validate", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "needs `key`" in done.stderr + done.stdout


async def test_concurrent_appends_keep_both(pg_target, tmp_path):
    ids = pa.table({"id": pc.cast(pa.array(range(9000)), pa.int64())})
    await load(ids.slice(0, 1), pg_target, tmp_path)  # the table exists before the two loads race
    await asyncio.gather(load(ids.slice(1, 4999), pg_target, tmp_path, batch_size=700),
                         load(ids.slice(5000), pg_target, tmp_path, batch_size=900))
    assert query(pg_target, "SELECT count(*), count(DISTINCT id) FROM t") == [(9000, 9000)]
