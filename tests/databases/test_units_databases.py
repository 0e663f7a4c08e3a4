"""Commit units of the database loaders, against the real databases.

Every test runs once per destination: the postgres, mysql, sqlite and duckdb loaders, and the sql
loader on SQLite, PostgreSQL and MariaDB, each in a private schema, database or file dropped
afterwards. A unit ends after the batches where ``commit_due`` says so (``tool_context(units=...)``);
the sibling loads are stood for by the ``prepare`` hook. Units that commit where due, and a failure
after a unit, are the contract suite's (tests/contract/test_loaders.py), for every destination that
claims ``commit_units``; these are the cases of sibling loads and of the database loaders' units.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from agent_etl.exceptions import SiblingFailed
from agent_etl.testing import build, tool_context

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIA = "mysql+pymysql://root@127.0.0.1:3306"


@dataclass
class Dest:
    """A destination: the loader's tool and options, and how to look at what landed."""

    tool: str
    url: str  # of the loader's connection
    table: str  # as the loader's `table` option spells it
    read_url: str | None  # SQLAlchemy url to look with (None: DuckDB, through the run's database)
    schema: str | None = None
    ctx: Any = None

    def query(self, text: str) -> list[tuple]:
        if self.read_url is None:
            from agent_etl.tools.databases.duckdb.database import open_database

            cur = open_database(self.ctx, "db", create=True).cursor()
            try:
                return [tuple(r) for r in cur.execute(text).fetchall()]
            finally:
                cur.close()
        eng = sa.create_engine(self.read_url)
        try:
            with eng.connect() as conn:
                return [tuple(r) for r in conn.exec_driver_sql(text)]
        finally:
            eng.dispose()

    def q(self, name: str) -> str:
        mark = "`" if self.read_url and self.read_url.startswith("mysql") else '"'
        quoted = mark + name + mark
        return f'"{self.schema}".{quoted}' if self.schema else quoted

    def rows(self) -> list[tuple]:
        return sorted(self.query(f"SELECT id, v FROM {self.q('t')}"))

    def checkpoints(self) -> list[tuple[str, int, dict]]:
        """(run_id, rows, position) of each checkpoint row, in the order committed."""
        order = "rowid" if self.read_url is None or self.read_url.startswith("sqlite") else "committed_at"
        marks = "`" if self.read_url and self.read_url.startswith("mysql") else '"'
        rows = self.query(f"SELECT run_id, {marks}rows{marks}, {marks}position{marks} FROM "
                          f"{self.q('_agent_etl_checkpoints')} ORDER BY {order}")
        return [(r[0], r[1], json.loads(r[2]) if isinstance(r[2], str) else r[2]) for r in rows]


BACKENDS = ["postgres", "mysql", "sqlite", "duckdb", "sql-sqlite", "sql-postgresql", "sql-mariadb"]


@pytest.fixture(params=BACKENDS)
def dest(request, tmp_path):
    kind, name = request.param, f"u_{uuid.uuid4().hex[:12]}"
    if kind in ("sqlite", "sql-sqlite"):
        db = tmp_path / "dest.db"
        url = "sqlite:///dest.db" if kind == "sqlite" else f"sqlite:///{db}"
        yield Dest(kind.split("-")[0], url, "t", f"sqlite:///{db}")
        return
    if kind == "duckdb":
        yield Dest("duckdb", "duckdb:///dest.duckdb", "t", None)
        return
    pg = kind in ("postgres", "sql-postgresql")
    admin = sa.create_engine(PG if pg else f"{MARIA}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"' if pg else f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        if kind == "postgres":
            yield Dest("postgres", PG.replace("+psycopg", ""), f"{name}.t", PG, schema=name)
        elif kind == "sql-postgresql":
            yield Dest("sql", PG, f"{name}.t", PG, schema=name)
        else:
            url = f"{MARIA}/{name}?charset=utf8mb4"
            yield Dest("mysql" if kind == "mysql" else "sql", url.replace("+pymysql", "") if kind == "mysql" else url,
                       "t", url)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE' if pg
                                 else f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


class Feed:
    """Ten batches of ten rows; ``position()`` is where the source stands after the batches given
    so far, ``due()`` says a unit ends after the batches numbered in ``ends`` (1-based)."""

    def __init__(self, ends: tuple[int, ...] = (3, 7), fail_after: int | None = None, batches: int = 10):
        self.ends, self.fail_after, self.count = ends, fail_after, batches
        self.given = 0
        self.asked = 0

    def batch(self, i: int) -> pa.RecordBatch:
        """Batches 1-8: ids 0..79; batches 9 and 10 give ids 0..19 again, with new values."""
        if i <= 8:
            ids = range((i - 1) * 10, i * 10)
            return pa.record_batch({"id": pa.array(ids, pa.int64()), "v": [f"v{n}" for n in ids]})
        ids = range((i - 9) * 10, (i - 8) * 10)
        return pa.record_batch({"id": pa.array(ids, pa.int64()), "v": [f"late{n}" for n in ids]})

    async def stream(self):
        for i in range(1, self.count + 1):
            if self.fail_after is not None and i > self.fail_after:
                raise RuntimeError("upstream broke")
            self.given = i
            yield self.batch(i)

    def due(self) -> bool:
        self.asked += 1
        return self.given in self.ends

    def position(self) -> dict[str, Any]:
        return {"src": {"rows": self.given * 10}}

    def expected(self, batches: int, mode: str) -> list[tuple]:
        """The table after the first ``batches`` batches landed."""
        rows: list[tuple] = []
        for i in range(1, batches + 1):
            rows += list(zip(self.batch(i).column("id").to_pylist(), self.batch(i).column("v").to_pylist()))
        if mode == "merge":
            rows = list(dict(rows).items())
        return sorted(rows)


class Prepares(list):
    """A prepare hook: records ``final`` of each call; raises ``fail`` at the final one, if given."""

    def __init__(self, fail_final: BaseException | None = None):
        super().__init__()
        self.fail_final = fail_final

    async def __call__(self, final: bool) -> None:
        self.append(final)
        if final and self.fail_final is not None:
            raise self.fail_final


@contextlib.asynccontextmanager
async def loader(dest: Dest, tmp_path: Path, mode: str, feed: Feed | None = None, prepare: Any = None,
                 run_id: str = "run-1"):
    ctx = tool_context(tmp_path, task="load", run_id=run_id, connections={"db": {"url": dest.url}},
                       position=feed.position if feed else None, units=feed.due if feed else None, prepare=prepare)
    dest.ctx = ctx
    options = {"connection": "db", "table": dest.table, "mode": mode}
    if mode == "merge":
        options["key"] = ["id"]
    try:
        yield build("loader", dest.tool, options, ctx)
    finally:
        await ctx.resources.aclose()


@pytest.mark.parametrize("mode", ["append", "merge"])
async def test_a_sibling_failing_at_the_final_unit_rolls_that_unit_back(dest, tmp_path, mode):
    feed, prepares = Feed(), Prepares(fail_final=SiblingFailed("sibling load 'lake' failed"))
    async with loader(dest, tmp_path, mode, feed, prepares) as load:
        with pytest.raises(SiblingFailed):
            await load.load(feed.stream())
        assert load.ctx.commits == [30, 40]
        assert prepares == [False, False, True]
        assert dest.rows() == feed.expected(7, mode)  # the late values of batches 9 and 10 did not land
        assert [c[1] for c in dest.checkpoints()] == [30, 40]
        assert await load.committed() == {"rows": 70, "commits": 2, "position": {"src": {"rows": 70}}}


async def test_an_empty_last_unit_commits_nothing_but_still_prepares(dest, tmp_path):
    feed, prepares = Feed(ends=(5, 10)), Prepares()
    async with loader(dest, tmp_path, "append", feed, prepares) as load:
        assert await load.load(feed.stream()) == 100
        assert load.ctx.commits == [50, 50]
        assert prepares == [False, False, True]
        assert [c[1:] for c in dest.checkpoints()] == [(50, {"src": {"rows": 50}}), (50, {"src": {"rows": 100}})]


async def test_without_units_a_load_is_one_commit_as_before(dest, tmp_path):
    feed = Feed()
    async with loader(dest, tmp_path, "append", prepare=Prepares()) as load:
        assert await load.load(feed.stream()) == 100
        assert load.ctx.commits == [100]
        assert [c[1] for c in dest.checkpoints()] == [100]
        assert await load.committed() == {"rows": 100, "commits": 1, "position": {}}


async def test_replace_is_one_unit_and_a_failing_prepare_keeps_the_old_rows(dest, tmp_path):
    feed = Feed(ends=tuple(range(1, 11)))  # commit_due would say yes every time: replace never asks
    prepares = Prepares()
    async with loader(dest, tmp_path, "replace", feed, prepares) as load:
        assert not load.takes_units()
        assert await load.load(Feed(batches=2).stream()) == 20
        assert prepares == [True] and feed.asked == 0
    refused = Prepares(fail_final=SiblingFailed("sibling load 'lake' failed"))
    async with loader(dest, tmp_path, "replace", feed, refused, run_id="run-2") as load:
        with pytest.raises(SiblingFailed):
            await load.load(feed.stream())
        assert refused == [True] and load.ctx.commits == []
        assert dest.rows() == feed.expected(2, "replace")
        assert [c[:2] for c in dest.checkpoints()] == [("run-1", 20)]
        assert await load.committed() is None


async def test_a_column_that_arrives_in_a_later_unit_joins_the_table(dest, tmp_path):
    feed = Feed(ends=(1,), batches=2)
    late = pa.record_batch({"id": pa.array([1, 50], pa.int64()), "v": ["b", "c"], "w": pa.array([7, 8], pa.int64())})

    async def stream():
        feed.given = 1
        yield pa.record_batch({"id": pa.array([1, 2], pa.int64()), "v": ["a", "a"]})
        feed.given = 2
        yield late

    async with loader(dest, tmp_path, "merge", feed, Prepares()) as load:
        assert await load.load(stream()) == 4
        assert load.ctx.commits == [2, 2]
        assert sorted(dest.query(f"SELECT id, v, w FROM {dest.q('t')}")) == [(1, "b", 7), (2, "a", None), (50, "c", 8)]
        assert await load.committed() == {"rows": 4, "commits": 2, "position": {"src": {"rows": 20}}}


class Siblings:
    """A commit barrier of two loads, as the runtime keeps one (``commit: together``): each waits at
    every ``prepare`` for the other; once one failed, the other's prepare raises SiblingFailed."""

    def __init__(self):
        import asyncio

        self.barrier = asyncio.Barrier(2)

    async def prepare(self, final: bool) -> None:
        import asyncio

        try:
            await asyncio.wait_for(self.barrier.wait(), 20)
        except asyncio.BrokenBarrierError:
            raise SiblingFailed("the sibling load failed") from None

    async def run(self, load, batches):
        try:
            return await load.load(batches)
        except BaseException:
            await self.barrier.abort()
            raise


@pytest.mark.parametrize("tools", [("sqlite", "sqlite"), ("sql", "sql"), ("sqlite", "sql")])
async def test_sibling_loads_into_one_sqlite_file_commit_together(tmp_path, tools):
    """One writer at a time: a load that waited for its sibling while holding the file's write lock
    would never see it arrive. Each unit is spooled, and written once both are ready."""
    import asyncio

    db = tmp_path / "one.db"
    siblings, feeds, loads = Siblings(), [Feed(), Feed()], []
    for i, tool in enumerate(tools):
        url = "sqlite:///one.db?timeout=2" if tool == "sqlite" else f"sqlite:///{db}?timeout=2"
        ctx = tool_context(tmp_path, task=f"load{i}", connections={"db": {"url": url}}, position=feeds[i].position,
                           units=feeds[i].due, prepare=siblings.prepare)
        loads.append(build("loader", tool, {"connection": "db", "table": f"t{i}"}, ctx))
    done = await asyncio.gather(*(siblings.run(load, feed.stream()) for load, feed in zip(loads, feeds)))
    assert done == [100, 100] and [load.ctx.commits for load in loads] == [[30, 40, 30]] * 2
    look = Dest("sqlite", "", "", f"sqlite:///{db}")
    assert [look.query(f"SELECT count(*) FROM t{i}") for i in (0, 1)] == [[(100,)]] * 2
    assert [(await load.committed())["commits"] for load in loads] == [3, 3]

    # now the second one fails in its second unit: the first rolls that unit back too
    siblings, feeds = Siblings(), [Feed(), Feed(fail_after=5)]
    for load, feed in zip(loads, feeds):
        load.ctx.run_id, load.ctx.unit_source, load.ctx.prepare_hook = "run-2", feed.due, siblings.prepare
        load.ctx.commits.clear()
    results = await asyncio.gather(*(siblings.run(load, feed.stream()) for load, feed in zip(loads, feeds)),
                                   return_exceptions=True)
    assert [type(r) for r in results] == [SiblingFailed, RuntimeError]
    assert [load.ctx.commits for load in loads] == [[30], [30]]
    assert [look.query(f"SELECT count(*) FROM t{i}") for i in (0, 1)] == [[(130,)]] * 2
    for load in loads:
        await load.ctx.resources.aclose()
