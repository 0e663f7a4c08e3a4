"""Database extractors resumed from a position: a table read in key order (or by (cursor, key)
when incremental) goes on after the last row yielded, exactly; partitions resume each on its own;
free queries and tables without a key are not resumable."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import sqlite3
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from agent_etl.exceptions import ToolError
from agent_etl.testing import build, read_positions, tool_context

N = 1500
ENGINES = ["sqlite", "duckdb", "sql_sqlite", "sql_pg", "postgres", "mysql"]


class Engine:
    """One database of the test: ``run`` executes SQL; ``tool``, ``url`` and ``table(name)`` read it."""

    ts = "TIMESTAMP"

    def __init__(self, kind: str, tmp_path: Path, request):
        self.kind, self.tmp_path = kind, tmp_path
        if kind in ("sqlite", "sql_sqlite"):
            self.tool = "sqlite" if kind == "sqlite" else "sql"
            self.url = "sqlite:///src.db"
            self.con = sqlite3.connect(tmp_path / "src.db", isolation_level=None)
            self.run = lambda q: self.con.execute(q)
        elif kind == "duckdb":
            import duckdb

            self.tool, self.url = "duckdb", "duckdb:///src.duckdb"
            self._path = tmp_path / "src.duckdb"
            self.run = self._duckdb
            duckdb.connect(str(self._path)).close()
        elif kind in ("postgres", "sql_pg"):
            src = request.getfixturevalue("pg_source")
            self.tool = "postgres" if kind == "postgres" else "sql"
            self.url = src.url if kind == "postgres" else src.url.replace("postgresql://", "postgresql+psycopg://")
            self.run = src.run
        else:
            import pymysql

            db, self.url = request.getfixturevalue("mysql_db")
            self.tool, self.ts = "mysql", "DATETIME(6)"
            self.con = pymysql.connect(host="127.0.0.1", user="root", database=db, autocommit=True)
            self.run = lambda q: self.con.cursor().execute(q)

    def _duckdb(self, q: str) -> None:
        import duckdb

        with duckdb.connect(str(self._path)) as con:
            con.execute(q)

    def insert(self, table: str, rows: list[tuple]) -> None:
        def lit(v):
            if v is None:
                return "NULL"
            if isinstance(v, (dt.date, str)):
                return f"'{v}'"
            return str(v)

        for i in range(0, len(rows), 500):
            self.run(f"INSERT INTO {table} VALUES " + ", ".join(
                "(" + ", ".join(lit(v) for v in r) + ")" for r in rows[i:i + 500]))

    async def read(self, options: dict, batch_size: int = 97, position: dict | None = None, state=None):
        """Every batch, the positions after each, the tool and its context."""
        ctx = tool_context(self.tmp_path, batch_size=batch_size, connections={"db": {"url": self.url}}, state=state)
        tool = build("extractor", self.tool, {"connection": "db", **options}, ctx)
        if position is not None:
            assert tool.resumable()
            tool.resume_from(json.loads(json.dumps(position)))  # as a checkpoint stores it
        batches, positions = await read_positions(tool)
        return pa.Table.from_batches(batches), positions, tool, ctx


@pytest.fixture(params=ENGINES)
def engine(request, tmp_path):
    e = Engine(request.param, tmp_path, request)
    yield e
    if hasattr(e, "con"):
        e.con.close()


def rows(n: int = N, seed: int = 7) -> list[tuple]:
    """(region, day, amount, id, v, ts) in shuffled order: stored order is not key order."""
    out = []
    for i in range(n):
        out.append((f"r{i % 7}-{'ä' if i % 3 else 'b'}", dt.date(2024, 1, 1) + dt.timedelta(days=i % 41),
                    decimal.Decimal(i) / 4, i, i * 0.5,
                    None if i % 10 == 0 else dt.datetime(2024, 3, 1) + dt.timedelta(minutes=(i * 37) % 900)))
    random.Random(seed).shuffle(out)
    return out


def create(e: Engine, name: str, key: str | None, data: list[tuple]) -> None:
    e.run(f"CREATE TABLE {name} (region VARCHAR(20) NOT NULL, day DATE NOT NULL, amount DECIMAL(12, 2) NOT NULL, "
          f"id INTEGER NOT NULL, v DOUBLE PRECISION, ts {e.ts} NULL{', ' + key if key else ''})")
    e.insert(name, [(r, d, a, i, v, str(t) if t else None) for r, d, a, i, v, t in data])


async def check_resumes(e: Engine, options: dict, cuts_of=None, ordered: bool = True, **read):
    full, positions, tool, ctx = await e.read(options, **read)
    assert full.num_rows and len(positions) > 4 and tool.resumable()
    counts = [p["rows"] for p in positions]
    assert counts == sorted(counts) and counts[-1] == full.num_rows
    cuts = sorted({0, 1, len(positions) // 3, len(positions) // 2, len(positions) - 2, len(positions) - 1})
    done_rows = {}
    for k in cuts:
        at = positions[k]
        rest, after, _, rctx = await e.read(options, position=at, **read)
        assert rest.schema == full.schema
        if ordered:
            assert rest.equals(full.slice(at["rows"])), (e.kind, k)
        else:  # partitions read at once interleave: the rows are the same, not their order
            seen = pa.Table.from_batches([b for b in full.to_batches()]).slice(0, 0)
            before = full.slice(0, at["rows"])
            both = pa.concat_tables([before, rest]).sort_by("id")
            assert both.equals(full.sort_by("id")), (e.kind, k)
            del seen
        if after:
            assert after[-1]["rows"] == full.num_rows
        done_rows[k] = (rest, after, rctx)
    return full, positions, ctx, done_rows


async def test_a_composite_key_of_text_date_and_decimal(engine):
    data = rows()
    create(engine, "c", "PRIMARY KEY (region, day, amount)", data)
    full, positions, _, _ = await check_resumes(engine, {"table": "c"})
    assert positions[0]["order"] == ["region", "day", "amount"]
    assert sorted(full.column("id").to_pylist()) == list(range(N))


async def test_a_unique_not_null_key_serves_when_there_is_no_primary_key(engine):
    create(engine, "u", "UNIQUE (id)", rows())
    full, positions, _, _ = await check_resumes(engine, {"table": "u"})
    assert positions[0]["order"] == ["id"]


async def test_no_key_and_free_queries_are_not_resumable(engine):
    create(engine, "nokey", None, rows(50))
    create(engine, "nullkey", "UNIQUE (ts)" if engine.kind != "mysql" else "UNIQUE KEY (ts)", rows(50)[:1])
    for options in ({"table": "nokey"}, {"table": "nullkey"}, {"query": "SELECT * FROM nokey"}):
        full, positions, tool, _ = await engine.read(options)
        assert not tool.resumable(), options
        assert set(positions[-1]) <= {"rows", "cursor", "after", "max"}


async def test_incremental_resumes_after_cursor_and_key_and_keeps_the_mark(engine):
    create(engine, "inc", "PRIMARY KEY (id)", rows())
    opts = {"table": "inc", "incremental": {"cursor": "ts"}}
    # no mark yet: every row, NULL cursors (read last) too
    full, positions, ctx, resumed = await check_resumes(engine, opts)
    assert full.num_rows == N and positions[0]["order"] == ["ts", "id"]
    want = ctx.saved_state
    assert want == {"cursor": "ts", "type": "timestamp", "value": "2024-03-01T14:59:00"}
    for k, (rest, after, rctx) in resumed.items():
        assert rctx.saved_state == want, k  # the largest cursor over every row, before the resume too
    # with a mark: the bound of the run that took the position holds, whatever the state says now
    state = {"cursor": "ts", "type": "timestamp", "value": "2024-03-01T10:00:00"}
    part, positions, _, _ = await engine.read(opts, state=state, batch_size=20)
    assert part.num_rows == sum(1 for r in rows() if r[5] and r[5] > dt.datetime(2024, 3, 1, 10))
    at = positions[2]
    later = {"cursor": "ts", "type": "timestamp", "value": "2024-03-01T12:00:00"}
    rest, _, _, rctx = await engine.read(opts, state=later, position=at, batch_size=20)
    assert rest.equals(part.slice(at["rows"]))
    assert rctx.saved_state == {"cursor": "ts", "type": "timestamp", "value": "2024-03-01T14:59:00"}


async def test_a_resume_of_the_last_position_reads_nothing_more(engine):
    create(engine, "t", "PRIMARY KEY (id)", rows(300))
    full, positions, _, _ = await engine.read({"table": "t"})
    rest, after, _, _ = await engine.read({"table": "t"}, position=positions[-1])
    assert rest.num_rows == 0 and rest.schema == full.schema
    assert after[-1]["rows"] == 300


async def test_rows_added_after_the_position_are_read_by_the_resume(engine):
    create(engine, "t", "PRIMARY KEY (id)", rows(300))
    full, positions, _, _ = await engine.read({"table": "t"})
    at = positions[1]
    engine.run("DELETE FROM t WHERE id < 50")  # before the position: not read again either way
    engine.insert("t", [("x", dt.date(2024, 1, 1), 1, 1000, 1.0, None)])
    rest, _, _, _ = await engine.read({"table": "t"}, position=at)
    assert rest.column("id").to_pylist() == list(range(at["rows"], 300)) + [1000]


async def test_partitions_resume_each_after_its_own_last_row(engine):
    create(engine, "p", "PRIMARY KEY (region, id)", rows())
    opts = {"table": "p", "partitions": 3, "partition_on": "day"}
    ordered = engine.kind not in ("postgres", "mysql")  # those read the partitions at once
    full, positions, _, _ = await check_resumes(engine, opts, ordered=ordered)
    assert len(positions[-1]["parts"]) == 3
    assert sorted(full.column("id").to_pylist()) == list(range(N))


async def test_a_position_of_another_order_is_refused(engine):
    create(engine, "t", "PRIMARY KEY (id)", rows(300))
    _, positions, _, _ = await engine.read({"table": "t"})
    other = dict(positions[1], order=["region"])
    with pytest.raises(ToolError, match="cannot resume"):
        await engine.read({"table": "t"}, position=other)
    ctx = tool_context(engine.tmp_path, connections={"db": {"url": engine.url}})
    tool = build("extractor", engine.tool, {"connection": "db", "table": "t"}, ctx)
    with pytest.raises(ToolError, match="not the position of a keyed table read"):
        tool.resume_from({"rows": 3})
    await ctx.resources.aclose()


async def test_uuid_and_timestamptz_keys_on_postgres(pg_source, tmp_path):
    e = Engine.__new__(Engine)
    e.kind, e.tmp_path, e.tool, e.url, e.run = "postgres", tmp_path, "postgres", pg_source.url, pg_source.run
    pg_source.run("CREATE TABLE k (u uuid, at timestamptz, n numeric, v int, PRIMARY KEY (u, at, n))")
    pg_source.run("INSERT INTO k SELECT md5((g % 40)::text)::uuid, timestamptz '2024-01-01 00:00+02' + g * "
                  "interval '1 second', g / 3.0, g FROM generate_series(1, 1000) g")
    full, positions, _, _ = await check_resumes(e, {"table": "k"})
    assert full.num_rows == 1000
    uuids = full.column("u").to_pylist()
    assert uuids == sorted(uuids, key=uuid.UUID)


async def test_a_run_that_cannot_resume_reads_in_no_order(engine):
    """A read the runtime says no crash could resume (``ctx.may_resume`` False: no load below commits
    in units) skips its ORDER BY, and says that its positions are not resumable; a tool run alone
    (``may_resume`` None) reads in order."""
    create(engine, "t", "PRIMARY KEY (id)", rows(300))
    for flag, ordered in ((False, False), (True, True), (None, True)):
        ctx = tool_context(engine.tmp_path, batch_size=50, connections={"db": {"url": engine.url}})
        ctx.may_resume = flag
        tool = build("extractor", engine.tool, {"connection": "db", "table": "t"}, ctx)
        assert tool.resumable()  # before the read: resume_from could start it
        got = [(b, tool.position()) async for b in tool.batches()]
        await ctx.resources.aclose()
        assert tool.resumable() is ordered and ("order" in got[-1][1]) is ordered
        assert sorted(pa.Table.from_batches([b for b, _ in got]).column("id").to_pylist()) == list(range(300))
        if not ordered:  # such a position cannot be resumed from
            with pytest.raises(ToolError, match="not the position of a keyed table read"):
                await engine.read({"table": "t"}, position=got[1][1])
