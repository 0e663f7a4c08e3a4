"""The mysql extractor and loader against the real MariaDB on 127.0.0.1 (a fresh database per test)."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import importlib.util
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pymysql
import pytest

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.testing import tool_context
from agent_etl.tools.registry import default_registry


def _cli_module():
    # tests/cli/conftest.py holds cli(); it is not importable by name next to this folder's conftest
    path = Path(__file__).resolve().parents[1] / "cli" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_cli_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli = _cli_module().cli

UTC = dt.UTC


def sql(db: str, statement: str, params=None, *, fetch: bool = True):
    conn = pymysql.connect(host="127.0.0.1", user="root", database=db, charset="utf8mb4", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if fetch else None
    finally:
        conn.close()


def context(tmp_path, url, batch_size=1000, state=None, commits=None, position=None):
    ctx = tool_context(tmp_path, batch_size=batch_size, connections={"db": {"url": url}}, state=state,
                       position=position)
    if commits is not None:
        async def hook(rows):
            commits.append(rows)
        ctx.commit_hook = hook
    return ctx


async def extract(ctx, **options) -> pa.Table:
    cls = default_registry().get("extractor", "mysql")
    tool = cls(cls.Config.model_validate({"connection": "db", **options}), ctx)
    batches = [b async for b in tool.batches()]
    return pa.Table.from_batches(batches)


async def batches_of(data, size=None, fail_after=None):
    items = data.to_batches(max_chunksize=size) if isinstance(data, pa.Table) else data
    for i, b in enumerate(items):
        if fail_after is not None and i >= fail_after:
            raise RuntimeError("upstream broke")
        await asyncio.sleep(0)
        yield b


async def load(ctx, data, size=None, fail_after=None, **options) -> int:
    cls = default_registry().get("loader", "mysql")
    tool = cls(cls.Config.model_validate({"connection": "db", **options}), ctx)
    return await tool.load(batches_of(data, size, fail_after))


def tables(db: str) -> list[str]:
    """The database's tables but the checkpoint table: created before a load's transaction (DDL commits),
    it stays when that load fails; its rows are what tells."""
    return sorted(r[0] for r in sql(db, "SHOW TABLES") if r[0] != "_agent_etl_checkpoints")


def marks(db: str) -> list[tuple]:
    """The checkpoint rows, oldest first, with their position parsed."""
    rows = sql(db, "SELECT run_id, task, table_name, `rows`, position FROM _agent_etl_checkpoints ORDER BY committed_at")
    return [(*r[:4], json.loads(r[4])) for r in rows]


# -- reading MariaDB's own types

async def test_native_types_read_as_documented(tmp_path, mysql_db):
    db, url = mysql_db
    sql(db, """CREATE TABLE ty (b1 BOOLEAN, ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT UNSIGNED,
        i INT, bu BIGINT UNSIGNED, d1 DECIMAL(12,2), d2 DECIMAL(65,30), du DECIMAL(5,0) UNSIGNED, f FLOAT, db DOUBLE,
        c CHAR(5), vc VARCHAR(20), tx TEXT, bl BLOB, bn BINARY(3), dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL,
        tm TIME(6), js JSON, en ENUM('a','b'), st SET('x','y'), bt BIT(1), b9 BIT(9), yr YEAR)""", fetch=False)
    sql(db, """INSERT INTO ty VALUES (1, -128, 255, -300, 16000000, -2000000000, 18446744073709551615, 1234567890.12,
        12345678901234567890123456789012345.123456789012345678901234567890, 99999, 1.5, 2.25, 'ab', 'héllo 😀',
        'a\tb', x'00ff00', x'010203', '2024-02-29', '2024-02-29 12:34:56.123456', '2024-02-29 12:34:56.654321',
        '23:59:59.5', '{"a": [1, 2]}', 'b', 'x,y', b'1', b'100000001', 2024)""", fetch=False)
    sql(db, "INSERT INTO ty () VALUES ()", fetch=False)
    got = await extract(context(tmp_path, url), table="ty")
    expected = {"b1": pa.bool_(), "ti": pa.int8(), "tu": pa.uint8(), "si": pa.int16(), "mi": pa.uint32(),
                "i": pa.int32(), "bu": pa.uint64(), "d1": pa.decimal128(12, 2), "d2": pa.decimal256(65, 30),
                "du": pa.decimal128(5, 0), "f": pa.float32(), "db": pa.float64(), "c": pa.string(),
                "vc": pa.string(), "tx": pa.string(), "bl": pa.binary(), "bn": pa.binary(), "dt": pa.date32(),
                "dtm": pa.timestamp("us"), "ts": pa.timestamp("us", "UTC"), "tm": pa.time64("us"), "js": pa.string(),
                "en": pa.string(), "st": pa.string(), "bt": pa.bool_(), "b9": pa.uint64(), "yr": pa.int16()}
    assert dict(zip(got.schema.names, got.schema.types)) == expected
    row, empty = got.to_pylist()
    assert row == {
        "b1": True, "ti": -128, "tu": 255, "si": -300, "mi": 16000000, "i": -2000000000, "bu": 18446744073709551615,
        "d1": decimal.Decimal("1234567890.12"),
        "d2": decimal.Decimal("12345678901234567890123456789012345.123456789012345678901234567890"),
        "du": decimal.Decimal(99999), "f": 1.5, "db": 2.25, "c": "ab", "vc": "héllo 😀", "tx": "a\tb",
        "bl": b"\x00\xff\x00", "bn": b"\x01\x02\x03", "dt": dt.date(2024, 2, 29),
        "dtm": dt.datetime(2024, 2, 29, 12, 34, 56, 123456),
        "ts": dt.datetime(2024, 2, 29, 12, 34, 56, 654321, tzinfo=UTC), "tm": dt.time(23, 59, 59, 500000),
        "js": '{"a": [1, 2]}', "en": "b", "st": "x,y", "bt": True, "b9": 257, "yr": 2024}
    assert set(empty.values()) == {None}


async def test_timestamp_columns_are_read_in_utc_whatever_the_writer_zone(tmp_path, mysql_db):
    db, url = mysql_db
    sql(db, "CREATE TABLE z (ts TIMESTAMP NULL, local DATETIME)", fetch=False)
    conn = pymysql.connect(host="127.0.0.1", user="root", database=db, autocommit=True, init_command="SET time_zone='+05:00'")
    with conn.cursor() as cur:
        cur.execute("INSERT INTO z VALUES ('2024-06-01 12:00:00', '2024-06-01 12:00:00')")
    conn.close()
    got = (await extract(context(tmp_path, url), table="z")).to_pylist()
    assert got == [{"ts": dt.datetime(2024, 6, 1, 7, 0, tzinfo=UTC), "local": dt.datetime(2024, 6, 1, 12, 0)}]


async def test_query_and_empty_results_carry_the_schema(tmp_path, mysql_db):
    db, url = mysql_db
    sql(db, "CREATE TABLE e (id INT, amount DECIMAL(8,3), name VARCHAR(5))", fetch=False)
    got = await extract(context(tmp_path, url), table="e")
    assert got.num_rows == 0
    assert got.schema == pa.schema({"id": pa.int32(), "amount": pa.decimal128(8, 3), "name": pa.string()})
    sql(db, "INSERT INTO e VALUES (1, 2.5, 'a'), (2, 3.25, 'b'), (3, NULL, NULL)", fetch=False)
    got = await extract(context(tmp_path, url), query="SELECT id * 2 AS twice, SUM(amount) AS s FROM e GROUP BY id "
                                                       "HAVING twice > 2 ORDER BY id;")
    assert got.to_pylist() == [{"twice": 4, "s": decimal.Decimal("3.250")}, {"twice": 6, "s": None}]


async def test_a_value_beyond_its_arrow_type_fails_with_the_fix(tmp_path, mysql_db):
    db, url = mysql_db
    sql(db, "CREATE TABLE long_time (t TIME)", fetch=False)
    sql(db, "INSERT INTO long_time VALUES ('30:00:00')", fetch=False)
    with pytest.raises(ToolError, match=r"table 'long_time'.*TIME beyond 24 hours.*CASTs the column AS CHAR"):
        await extract(context(tmp_path, url), table="long_time")
    got = await extract(context(tmp_path, url), query="SELECT CAST(t AS CHAR) AS t FROM long_time")
    assert got.to_pylist() == [{"t": "30:00:00"}]


async def test_batches_hold_batch_size_rows(tmp_path, mysql_db):
    db, url = mysql_db
    sql(db, "CREATE TABLE n (id INT PRIMARY KEY) SELECT seq AS id FROM seq_1_to_2500", fetch=False)
    cls = default_registry().get("extractor", "mysql")
    tool = cls(cls.Config.model_validate({"connection": "db", "table": "n"}), context(tmp_path, url, batch_size=1000))
    sizes = [b.num_rows async for b in tool.batches()]
    assert sum(sizes) == 2500 and max(sizes) <= 1000
    assert tool.position()["rows"] == 2500  # and, the table having a key, where a resume goes on


# -- round trips through the loader

def every_type() -> pa.Table:
    berlin = dt.timezone(dt.timedelta(hours=2))
    return pa.table({
        "i8": pa.array([1, None, -128], pa.int8()), "i64": pa.array([2**62, None, -(2**63)], pa.int64()),
        "u64": pa.array([2**64 - 1, None, 0], pa.uint64()), "u16": pa.array([65535, None, 0], pa.uint16()),
        "f32": pa.array([1.5, None, -0.25], pa.float32()), "f64": pa.array([0.1, None, float("nan")], pa.float64()),
        "flag": pa.array([True, None, False]),
        "dec": pa.array([decimal.Decimal("123456789012.345678"), None, decimal.Decimal("-0.000001")],
                        pa.decimal128(18, 6)),
        "s": pa.array(['a"b,c\nd\\e\\N', None, ""]),
        "s2": pa.array(["NULL", "\\N", "é 漢字 😀\t\r\n"]),
        "big": pa.array(["x" * 70000, "y", None], pa.large_string()),
        "bin": pa.array([b"\x00\x01\xff\"", None, b""], pa.binary()),
        "d": pa.array([dt.date(1000, 1, 1), None, dt.date(9999, 12, 31)]),
        "ts": pa.array([dt.datetime(2024, 2, 29, 23, 59, 59, 999999), None, dt.datetime(1900, 1, 1)],
                       pa.timestamp("us")),
        "tz": pa.array([dt.datetime(2024, 6, 1, 12, 0, tzinfo=berlin), None, dt.datetime(1969, 1, 1, tzinfo=UTC)],
                       pa.timestamp("us", "Europe/Berlin")),
        "ms": pa.array([dt.datetime(2024, 1, 1, 0, 0, 0, 123000), None, dt.datetime(2024, 1, 1)], pa.timestamp("ms")),
        "t": pa.array([dt.time(0, 0, 0, 1), None, dt.time(23, 59, 59)], pa.time64("us")),
        "cat": pa.array(["a", "b", None]).dictionary_encode(),
        "nothing": pa.nulls(3),
    })


async def test_every_arrow_type_round_trips(tmp_path, mysql_db):
    db, url = mysql_db
    data = every_type()
    commits: list[int] = []
    assert await load(context(tmp_path, url, commits=commits), data, size=2, table="everything") == 3
    assert commits == [3]
    declared = dict(sql(db, "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s",
                        (db,)))
    assert declared["u64"] == "bigint(20) unsigned" and declared["dec"] == "decimal(18,6)"
    assert declared["ts"] == "datetime(6)" and declared["ms"] == "datetime(3)" and declared["flag"] == "tinyint(1)"
    got = await extract(context(tmp_path, url), query="SELECT * FROM everything ORDER BY d")
    expect = {
        "i8": [1, None, -128], "i64": [2**62, None, -(2**63)], "u64": [2**64 - 1, None, 0], "u16": [65535, None, 0],
        "f32": [1.5, None, -0.25], "f64": [0.1, None, None],  # NaN has no MariaDB value: stored as NULL
        "flag": [True, None, False], "dec": data["dec"].to_pylist(), "s": data["s"].to_pylist(),
        "s2": data["s2"].to_pylist(), "big": data["big"].to_pylist(), "bin": data["bin"].to_pylist(),
        "d": data["d"].to_pylist(), "ts": data["ts"].to_pylist(),
        # tz-aware values are stored as their UTC wall time
        "tz": [dt.datetime(2024, 6, 1, 10, 0), None, dt.datetime(1969, 1, 1)],
        "ms": data["ms"].to_pylist(), "t": data["t"].to_pylist(), "cat": ["a", "b", None], "nothing": [None] * 3,
    }
    rows = got.to_pydict()
    # NULL sorts first in ORDER BY d: the input's row 2 comes first
    assert {k: [v[1], v[0], v[2]] for k, v in rows.items()} == expect


async def test_zero_row_input_creates_the_table(tmp_path, mysql_db):
    db, url = mysql_db
    empty = pa.record_batch({"id": pa.array([], pa.int64()), "name": pa.array([], pa.string())})
    assert await load(context(tmp_path, url), [empty], table="empty") == 0
    assert sql(db, "SELECT COUNT(*) FROM empty") == ((0,),)
    assert (await extract(context(tmp_path, url), table="empty")).schema == empty.schema


async def test_infinity_and_unmappable_types_fail_naming_the_column(tmp_path, mysql_db):
    db, url = mysql_db
    with pytest.raises(ToolError, match=r"column 'x' holds an infinite value.*replace it upstream"):
        await load(context(tmp_path, url), pa.table({"x": [1.0, float("inf")]}), table="inf")
    with pytest.raises(ToolError, match=r"column 'tags' has Arrow type list<item: int64>.*to_json"):
        await load(context(tmp_path, url), pa.table({"id": [1], "tags": [[1, 2]]}), table="lists")
    with pytest.raises(ToolError, match=r"column 'big' is decimal256\(70, 2\).*cast"):
        await load(context(tmp_path, url), pa.table({"big": pa.array([1], pa.decimal256(70, 2))}), table="dec")
    assert tables(db) == []


# -- modes

def people(ids, version) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "name": [f"p{i}v{version}" for i in ids],
                     "version": pa.array([version] * len(ids), pa.int32())})


async def test_append_adds_rows_and_evolves_or_freezes_the_schema(tmp_path, mysql_db):
    db, url = mysql_db
    await load(context(tmp_path, url), people([1, 2], 1), table="p")
    await load(context(tmp_path, url), people([3], 2).append_column("extra", pa.array([True])), table="p")
    assert sql(db, "SELECT id, version, extra FROM p ORDER BY id") == ((1, 1, None), (2, 1, None), (3, 2, 1))
    with pytest.raises(ToolError, match=r"schema_policy: freeze.*new\b.*'other'.*nothing was written"):
        await load(context(tmp_path, url), people([4], 3).append_column("other", pa.array([1])), table="p",
                   schema_policy="freeze")
    assert sql(db, "SELECT COUNT(*) FROM p") == ((3,),)


async def test_append_keeps_nothing_when_the_stream_fails(tmp_path, mysql_db):
    db, url = mysql_db
    await load(context(tmp_path, url), people([1, 2], 1), table="p")
    with pytest.raises(RuntimeError, match="upstream broke"):
        await load(context(tmp_path, url), people(list(range(10, 20)), 2), size=3, fail_after=2, table="p")
    assert sql(db, "SELECT id FROM p ORDER BY id") == ((1,), (2,))
    with pytest.raises(RuntimeError, match="upstream broke"):
        await load(context(tmp_path, url), people([5, 6, 7], 1), size=1, fail_after=2, table="fresh")
    assert tables(db) == ["p"]  # the table this load created is gone again


async def test_a_failed_load_takes_back_the_columns_it_added(tmp_path, mysql_db):
    # ALTER TABLE commits at once on MariaDB: a load that fails must drop the columns it added again
    db, url = mysql_db
    sql(db, "CREATE TABLE p2 (id INT PRIMARY KEY, name VARCHAR(3) NOT NULL)", fetch=False)
    sql(db, "INSERT INTO p2 VALUES (1, 'one')", fetch=False)
    before = sql(db, "SHOW COLUMNS FROM p2")
    ctx = context(tmp_path, url)
    with pytest.raises(RuntimeError, match="upstream broke"):
        await load(ctx, pa.table({"id": [2, 3], "name": ["a", "b"], "extra": [1, 2]}), size=1, fail_after=1, table="p2")
    with pytest.raises(ToolError, match=r"Duplicate entry '1'"):
        await load(ctx, pa.table({"id": [1], "name": ["x"], "extra": [1]}), table="p2")
    with pytest.raises(ToolError, match=r"too long for column 'name'"):  # in the upsert, after the ALTER
        await load(ctx, pa.table({"id": [1], "name": ["toolong"], "more": [1]}), table="p2", mode="merge", key="id")
    assert sql(db, "SHOW COLUMNS FROM p2") == before
    assert sql(db, "SELECT * FROM p2") == ((1, "one"),)
    assert await load(ctx, pa.table({"id": [2], "name": ["two"], "extra": [5]}), table="p2") == 1  # and it can still evolve
    assert sql(db, "SELECT id, name, extra FROM p2 ORDER BY id") == ((1, "one", None), (2, "two", 5))


async def test_constraint_and_type_violations_roll_back(tmp_path, mysql_db):
    db, url = mysql_db
    sql(db, "CREATE TABLE strict_t (id INT PRIMARY KEY, name VARCHAR(3) NOT NULL, n TINYINT)", fetch=False)
    sql(db, "INSERT INTO strict_t VALUES (1, 'one', 1)", fetch=False)
    ctx = context(tmp_path, url)
    cases = [
        (pa.table({"id": [2, 1], "name": ["two", "dup"], "n": [2, 3]}), r"Duplicate entry '1' for key 'PRIMARY'"),
        (pa.table({"id": [2, 3], "name": ["two", "three"], "n": [2, 3]}), r"Data truncated for column 'name' at input row 2"),
        (pa.table({"id": [2, 3], "name": ["a", "b"], "n": [2, 300]}), r"Out of range.*'n'.*input row 2"),
        (pa.table({"id": [2, 3], "name": ["a", None], "n": [2, 3]}), r"cannot be null|NULL.*'name'"),
        (pa.table({"id": [2, 3], "name": ["a", "b"], "n": ["2", "many"]}), r"Incorrect integer value: 'many'"),
    ]
    for data, message in cases:
        with pytest.raises(ToolError, match=message):
            await load(ctx, data, size=1, table="strict_t")
    assert sql(db, "SELECT * FROM strict_t") == ((1, "one", 1),)


async def test_each_mode_writes_a_checkpoint_with_the_source_position(tmp_path, mysql_db):
    db, url = mysql_db
    at = [{"src": {"rows": n, "cursor": "id", "max": n}} for n in (2, 5, 7)]
    await load(context(tmp_path, url, position=at[0]), people([1, 2], 1), size=1, table="p", mode="merge", key="id")
    await load(context(tmp_path, url, position=at[1]), people([3, 4, 5], 2), table=f"{db}.p")
    await load(context(tmp_path, url, position=at[2]), people([5, 6], 3), table="p", mode="replace")
    await load(context(tmp_path, url), people([], 1).to_batches(), table="none", mode="replace")  # nothing happened
    # the table as database.name, whether the spec wrote the database or not
    assert marks(db) == [("test-run", "test", f"{db}.p", 2, at[0]), ("test-run", "test", f"{db}.p", 3, at[1]),
                         ("test-run", "test", f"{db}.p", 2, at[2])]
    declared = sql(db, "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
                       "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = '_agent_etl_checkpoints' ORDER BY ORDINAL_POSITION",
                   (db,))
    assert [(n, t.split("(")[0], null) for n, t, null in declared] == [
        ("run_id", "varchar", "NO"), ("task", "varchar", "NO"), ("table_name", "varchar", "NO"),
        ("rows", "bigint", "NO"), ("position", "longtext", "NO"), ("committed_at", "timestamp", "NO")]
    assert tables(db) == ["p"]


# a checkpoint table whose run_id column cannot hold the run id "test-run": its INSERT fails
NARROW_CHECKPOINTS = ("CREATE TABLE _agent_etl_checkpoints (run_id VARCHAR(1) NOT NULL, task VARCHAR(255) NOT NULL, "
                      "table_name VARCHAR(255) NOT NULL, `rows` BIGINT NOT NULL, position LONGTEXT NOT NULL, "
                      "committed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))")


@pytest.mark.parametrize("mode", ["append", "merge"])
async def test_a_checkpoint_that_cannot_be_written_rolls_the_load_back(tmp_path, mysql_db, mode):
    db, url = mysql_db
    sql(db, "CREATE TABLE p (id BIGINT PRIMARY KEY, name TEXT, version INT)", fetch=False)
    sql(db, "INSERT INTO p VALUES (1, 'a', 1), (2, 'b', 1)", fetch=False)
    sql(db, NARROW_CHECKPOINTS, fetch=False)
    commits: list[int] = []
    new = people([3, 4] if mode == "append" else [2, 3], 2)  # merge: an update and an insert
    with pytest.raises(ToolError, match=r"Data too long for column 'run_id'.*rolled back"):
        await load(context(tmp_path, url, commits=commits), new, table="p", mode=mode, key="id")
    assert sql(db, "SELECT id, version FROM p ORDER BY id") == ((1, 1), (2, 1))  # the same transaction
    assert commits == [] and marks(db) == []


async def test_replace_writes_its_checkpoint_after_the_swap(tmp_path, mysql_db):
    db, url = mysql_db
    sql(db, NARROW_CHECKPOINTS, fetch=False)
    commits: list[int] = []
    with pytest.raises(ToolError, match=r"Data too long.*the table was replaced, but its checkpoint row could not"):
        await load(context(tmp_path, url, commits=commits), people([1, 2], 1), table="p", mode="replace")
    assert sql(db, "SELECT id FROM p ORDER BY id") == ((1,), (2,)) and commits == [2]  # RENAME TABLE commits alone
    assert tables(db) == ["p"]


async def test_a_checkpoint_table_from_before_positions_gets_the_column(tmp_path, mysql_db):
    db, url = mysql_db
    sql(db, "CREATE TABLE _agent_etl_checkpoints (run_id VARCHAR(255) NOT NULL, task VARCHAR(255) NOT NULL, "
            "table_name VARCHAR(255) NOT NULL, `rows` BIGINT NOT NULL, "
            "committed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))", fetch=False)
    sql(db, "INSERT INTO _agent_etl_checkpoints (run_id, task, table_name, `rows`) VALUES ('old-run', 'load', 'p', 5)",
        fetch=False)
    position = {"src": {"rows": 3, "cursor": "id", "max": 2}}
    await load(context(tmp_path, url, position=position), people([0, 1, 2], 1), table="p")
    assert marks(db) == [("old-run", "load", "p", 5, {}), ("test-run", "test", f"{db}.p", 3, position)]


async def test_replace_swaps_in_the_new_rows(tmp_path, mysql_db):
    db, url = mysql_db
    await load(context(tmp_path, url), people([1, 2, 3], 1), table="p")
    await load(context(tmp_path, url), people([7, 8], 2), table="p", mode="replace")
    assert sql(db, "SELECT id, version FROM p ORDER BY id") == ((7, 2), (8, 2))
    with pytest.raises(RuntimeError):
        await load(context(tmp_path, url), people([9], 3), fail_after=0, table="p", mode="replace")
    with pytest.raises(ToolError, match=r"freeze.*missing \['version'\]"):
        await load(context(tmp_path, url), people([9], 3).drop_columns(["version"]), table="p", mode="replace",
                   schema_policy="freeze")
    assert sql(db, "SELECT id FROM p ORDER BY id") == ((7,), (8,))
    assert tables(db) == ["p"]  # no staging or old table left behind
    empty = people([], 4).to_batches()  # a stream with no batch at all empties the table
    assert await load(context(tmp_path, url), empty, table="p", mode="replace") == 0
    assert sql(db, "SELECT COUNT(*) FROM p") == ((0,),) and tables(db) == ["p"]


async def test_merge_declares_its_unique_key_and_leaves_no_stage(tmp_path, mysql_db):
    """(The upsert itself, last row of a key wins, is the contract suite's: tests/contract.)"""
    db, url = mysql_db
    await load(context(tmp_path, url), people(list(range(10)), 1), table="p", mode="merge", key="id")
    declared = sql(db, "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
                       "AND NON_UNIQUE = 0", (db,))
    assert declared == (("_agent_etl_key", "id"),)
    commits: list[int] = []
    n = await load(context(tmp_path, url, commits=commits), people(list(range(5, 15)), 2).to_batches(3),
                   table="p", mode="merge", key=["id"])
    assert n == 10 and commits == [10]
    assert sql(db, "SELECT COUNT(*), MAX(version) FROM p") == ((15, 2),)
    assert tables(db) == ["p"]


async def test_merge_into_a_table_without_that_unique_key_fails_unchanged(tmp_path, mysql_db):
    db, url = mysql_db
    sql(db, "CREATE TABLE m (id BIGINT, name TEXT)", fetch=False)
    sql(db, "INSERT INTO m VALUES (1, 'a')", fetch=False)
    with pytest.raises(ToolError, match=r"needs a unique key on \['id'\].*ALTER TABLE `.*`.`m` ADD UNIQUE \(`id`\)"):
        await load(context(tmp_path, url), pa.table({"id": [1], "name": ["b"]}), table="m", mode="merge", key="id")
    assert sql(db, "SELECT * FROM m") == ((1, "a"),)
    assert tables(db) == ["m"]


# -- identifiers, partitions, incremental

async def test_weird_identifiers_are_names_not_sql(tmp_path, mysql_db):
    db, url = mysql_db
    data = pa.table({"a`b": [1, 2], "x; drop table t": ["v", "w😀"], "é ü": [True, False]})
    name = '"x; drop table t`"'
    await load(context(tmp_path, url), data, table=name, mode="merge", key=["a`b"])
    await load(context(tmp_path, url), data.slice(1), table=name, mode="merge", key=["a`b"])
    await load(context(tmp_path, url), data, table=name, mode="replace")
    assert tables(db) == ["x; drop table t`"]
    with pytest.raises(ToolError, match=r"names cannot hold characters beyond U\+FFFF"):
        await load(context(tmp_path, url), pa.table({"😀": [1]}), table="emoji")
    got = await extract(context(tmp_path, url), table=name, partitions=2, partition_on="a`b",
                        incremental={"cursor": "a`b", "initial": 0})
    assert sorted(got.to_pylist(), key=lambda r: r["a`b"]) == data.to_pylist()
    got = await extract(context(tmp_path, url), table=f'"{db}".{name}')
    assert got.num_rows == 2


async def test_partitions_return_exactly_the_rows_of_a_single_read(tmp_path, mysql_db):
    db, url = mysql_db
    sql(db, "CREATE TABLE r (id INT, d DATE, v VARCHAR(10)) SELECT IF(seq % 7 = 0, NULL, seq) AS id, "
            "IF(seq % 11 = 0, NULL, DATE '2024-01-01' + INTERVAL seq % 40 DAY) AS d, CONCAT('v', seq) AS v "
            "FROM seq_1_to_3000", fetch=False)
    single = await extract(context(tmp_path, url), table="r")
    for key, n in (("id", 4), ("d", 3), ("id", 64)):
        split = await extract(context(tmp_path, url, batch_size=500), table="r", partitions=n, partition_on=key)
        assert split.num_rows == 3000
        assert sorted(split.column("v").to_pylist()) == sorted(single.column("v").to_pylist())


async def test_incremental_reads_only_new_rows_and_keeps_the_mark(tmp_path, mysql_db):
    db, url = mysql_db
    sql(db, "CREATE TABLE ev (id INT, at DATETIME(6))", fetch=False)
    sql(db, "INSERT INTO ev VALUES (1, '2024-01-01 10:00:00'), (2, '2024-01-01 11:00:00.5')", fetch=False)
    ctx = context(tmp_path, url)
    got = await extract(ctx, table="ev", incremental={"cursor": "at"})
    assert got.column("id").to_pylist() == [1, 2]
    state = ctx.saved_state
    assert state == {"cursor": "at", "type": "timestamp", "value": "2024-01-01T11:00:00.500000"}
    sql(db, "INSERT INTO ev VALUES (3, '2024-01-01 11:00:00.6'), (4, NULL)", fetch=False)
    ctx = context(tmp_path, url, state=state)
    assert (await extract(ctx, table="ev", incremental={"cursor": "at"})).column("id").to_pylist() == [3]
    ctx = context(tmp_path, url, state=state)
    got = await extract(ctx, table="ev", incremental={"cursor": "at", "lookback": "1 hour"})
    assert sorted(got.column("id").to_pylist()) == [2, 3]


PIPELINE = """\
version: 1
name: mysql_incremental
connections:
  maria: {{url: "{url}"}}
extract:
  events:
    tool: mysql
    connection: maria
    table: events
    incremental: {{cursor: id}}
load:
  copy:
    input: events
    tool: mysql
    connection: maria
    table: events_copy
  lake:
    input: events
    tool: parquet
    path: out/events_{{run}}.parquet
"""


def test_incremental_across_three_cli_runs(tmp_path, mysql_db):
    db, url = mysql_db
    sql(db, "CREATE TABLE events (id BIGINT PRIMARY KEY, name VARCHAR(20))", fetch=False)
    sql(db, "INSERT INTO events VALUES (1, 'a'), (2, 'b'), (3, 'c')", fetch=False)
    for run, new_rows, expect in ((1, None, 3), (2, "(4, 'd'), (5, 'e')", 5), (3, None, 5)):
        if new_rows:
            sql(db, f"INSERT INTO events VALUES {new_rows}", fetch=False)
        (tmp_path / "p.yaml").write_text(PIPELINE.format(url=url).replace("{run}", str(run)))
        r = cli("run", "p.yaml", "--quiet", cwd=tmp_path)
        assert r.returncode == 0, r.stderr + r.stdout
        assert sql(db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM events_copy") == ((expect, expect),)
    read = [pq.read_table(tmp_path / "out" / f"events_{i}.parquet").num_rows for i in (1, 2, 3)]
    assert read == [3, 2, 0]
    # each run's commit left a row naming the run and where the extract stood: read to its end, and
    # the new high-water mark of the runs that read rows (the next run reads after it)
    runs = marks(db)
    mark = lambda v: {"mark": {"cursor": "id", "type": "int", "value": v}}  # noqa: E731
    assert [m[1:] for m in runs] == [("copy", f"{db}.events_copy", n, {"events": {"rows": n, "end": True, **extra}})
                                     for n, extra in ((3, mark(3)), (2, mark(5)), (0, {}))]
    assert len({m[0] for m in runs}) == 3 and all(re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", m[0]) for m in runs)


# -- bad input

BAD = """\
version: 1
name: mysql_bad
defaults:
  retries: {{max_attempts: 2, initial_delay: 0.1}}
connections:
  maria: {{url: "{url}"}}
extract:
  src:
    tool: mysql
    connection: maria
    table: {table}
load:
  out:
    input: src
    tool: parquet
    path: out/x.parquet
"""


@pytest.mark.parametrize("case", ["password", "unreachable", "missing_table", "missing_database"])
def test_bad_input_through_the_cli(tmp_path, mysql_db, case):
    db, url = mysql_db
    sql(db, "CREATE TABLE t (id INT)", fetch=False)
    url, table, message = {
        "password": ("mysql://root:${DB_PW}@127.0.0.1:3306/" + db, "t",
                     r"MariaDB/MySQL at root@127\.0\.0\.1:3306/\S+ refused the login"),
        "unreachable": (f"mysql://root@127.0.0.1:1/{db}", "t", r"127\.0\.0\.1:1.* is unreachable"),
        "missing_table": (url, "nope", r"table 'nope'.*doesn't exist.*check the table name"),
        "missing_database": ("mysql://root@127.0.0.1:3306/no_such_db_h3", "t", r"Unknown database.*create"),
    }[case]
    (tmp_path / "p.yaml").write_text(BAD.format(url=url, table=table))
    r = cli("run", "p.yaml", cwd=tmp_path, env={"DB_PW": "s3cr3t-pw"})
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out and "s3cr3t-pw" not in out
    assert re.search(message, " ".join(out.split()), re.DOTALL), out
    assert not (tmp_path / "out" / "x.parquet").exists()


async def test_unreachable_server_is_transient_and_tasks_share_a_pool(tmp_path, mysql_db):
    _, url = mysql_db
    with pytest.raises(TransientError, match="unreachable"):
        await extract(context(tmp_path, "mysql://root@127.0.0.1:1/x"), table="t")
    from agent_etl.tools.databases.mysql import connections

    ctx = context(tmp_path, url)
    assert connections.pool(ctx, "db") is connections.pool(ctx, "db")
    with connections.pool(ctx, "db").connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@time_zone, @@sql_mode LIKE '%STRICT_ALL_TABLES%', @@character_set_connection")
        assert cur.fetchone() == ("+00:00", 1, "utf8mb4")
    await ctx.resources.aclose()
