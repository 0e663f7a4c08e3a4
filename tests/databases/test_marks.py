"""``Loader.mark(source)``: the incremental mark of a source that a destination holds, read back from
its checkpoints; and ``committed()`` once the loaded table (file) is gone.

Every test runs once per destination: the postgres, mysql, sqlite and duckdb loaders, the sql loader
on SQLite, PostgreSQL and MariaDB (each in a private schema, database or file dropped afterwards),
and the parquet (a file, a partitioned directory) and csv loaders. Checkpoints are written by real
loads whose source position (``tool_context(position=...)``) carries a mark or not. A database keeps
every checkpoint; a file keeps the manifest of its last load only (a file load is a replace).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from agent_etl.testing import build, tool_context

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIA = "mysql+pymysql://root@127.0.0.1:3306"

DATABASES = ["postgres", "mysql", "sqlite", "duckdb", "sql-sqlite", "sql-postgresql", "sql-mariadb"]
FILES = {
    "parquet": ("parquet", {"path": "out/t.parquet"}),
    "parquet-dir": ("parquet", {"path": "out/lake", "partition_by": ["region"]}),
    "csv": ("csv", {"path": "out/t.csv"}),
}


@dataclass
class Dest:
    """A destination: the loader's tool and options, and how to look at it and drop the loaded table."""

    tool: str
    options: dict[str, Any]
    base: Path
    url: str = ""  # of the loader's connection (databases)
    read_url: str | None = None  # SQLAlchemy url to look with (None: DuckDB, or a file)
    schema: str | None = None
    # options (and url) of a table whose schema, database or file is not there
    missing: dict[str, Any] = field(default_factory=dict)
    missing_url: str | None = None

    @property
    def history(self) -> bool:
        """Whether every checkpoint stays (a database), or only the last load's (a file's manifest)."""
        return self.tool not in ("parquet", "csv")

    def execute(self, text: str) -> list[tuple]:
        """Run ``text`` (no loader of the destination may be open: DuckDB has one writer per file)."""
        if self.tool == "duckdb":
            import duckdb

            con = duckdb.connect(str(self.base / "dest.duckdb"))
            try:
                return [tuple(r) for r in con.execute(text).fetchall()]
            finally:
                con.close()
        eng = sa.create_engine(self.read_url)
        try:
            with eng.begin() as conn:
                result = conn.exec_driver_sql(text)
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            eng.dispose()

    def q(self, name: str) -> str:
        mark = "`" if self.read_url and self.read_url.startswith("mysql") else '"'
        return (f'"{self.schema}".' if self.schema else "") + mark + name + mark

    def drop(self) -> None:
        """Drop the loaded table (delete the output), as a user would between a crash and a resume."""
        if self.history:
            self.execute(f"DROP TABLE {self.q('t')}")
            return
        out = self.base / self.options["path"]
        shutil.rmtree(out) if out.is_dir() else out.unlink()

    def checkpoints(self) -> int:
        """Checkpoint rows (manifests) left."""
        if self.history:
            return self.execute(f"SELECT count(*) FROM {self.q('_agent_etl_checkpoints')}")[0][0]
        out = self.base / self.options["path"]
        return int(out.with_name(f".{out.name}.checkpoint.json").is_file())


@pytest.fixture(params=DATABASES + list(FILES))
def dest(request, tmp_path):
    kind, name = request.param, f"m_{uuid.uuid4().hex[:12]}"
    if kind in FILES:
        tool, options = FILES[kind]
        yield Dest(tool, options, tmp_path, missing={**options, "path": "nowhere/" + options["path"]})
        return
    table = {"table": "t", "mode": "append"}
    if kind in ("sqlite", "sql-sqlite"):
        db = tmp_path / "dest.db"
        url = "sqlite:///dest.db" if kind == "sqlite" else f"sqlite:///{db}"
        yield Dest(kind.split("-")[0], table, tmp_path, url, f"sqlite:///{db}", missing=table,
                   missing_url=url.replace("dest.db", "absent.db"))
        return
    if kind == "duckdb":
        yield Dest("duckdb", table, tmp_path, "duckdb:///dest.duckdb", missing=table,
                   missing_url="duckdb:///absent.duckdb")
        return
    pg = kind in ("postgres", "sql-postgresql")
    admin = sa.create_engine(PG if pg else f"{MARIA}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"' if pg else f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    absent = {**table, "table": f"absent_{uuid.uuid4().hex[:8]}.t"}  # a schema (database) that does not exist
    try:
        if pg:
            yield Dest(kind.split("-")[0], {**table, "table": f"{name}.t"}, tmp_path,
                       PG.replace("+psycopg", "") if kind == "postgres" else PG, PG, schema=name, missing=absent)
        else:
            url = f"{MARIA}/{name}?charset=utf8mb4"
            yield Dest(kind.split("-")[0], table, tmp_path, url.replace("+pymysql", "") if kind == "mysql" else url,
                       url, missing=absent)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE' if pg
                                 else f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


@contextlib.asynccontextmanager
async def loader(dest: Dest, tmp_path: Path, task: str = "load", run_id: str = "run-1",
                 position: dict[str, Any] | None = None, missing: bool = False):
    url = (dest.missing_url or dest.url) if missing else dest.url
    ctx = tool_context(tmp_path, task=task, run_id=run_id, connections={"db": {"url": url}}, position=position)
    options = dict(dest.missing if missing else dest.options)
    if dest.history:
        options["connection"] = "db"
    try:
        yield build("loader", dest.tool, options, ctx)
    finally:
        await ctx.resources.aclose()


async def stream(rows: int):
    yield pa.record_batch({"id": pa.array(range(rows), pa.int64()), "region": ["eu", "us"] * (rows // 2)})


async def commit(dest: Dest, tmp_path: Path, position: dict[str, Any], task: str = "load", run_id: str = "run-1",
                 rows: int = 2) -> None:
    """One load (one commit) whose checkpoint holds ``position``."""
    async with loader(dest, tmp_path, task, run_id, position) as load:
        assert await load.load(stream(rows)) == rows


async def mark_of(dest: Dest, tmp_path: Path, source: str, task: str = "load") -> dict[str, Any] | None:
    async with loader(dest, tmp_path, task, run_id="a-later-run") as load:
        return await load.mark(source)


def mark(value: int) -> dict[str, Any]:
    return {"cursor": "updated_at", "type": "int", "value": json.dumps(value)}


async def test_mark_is_the_newest_one_the_task_holds(dest, tmp_path):
    assert await mark_of(dest, tmp_path, "src") is None  # nothing there: no table, no checkpoint
    await commit(dest, tmp_path, {"src": {"rows": 2}})  # a unit before the end of the read: no mark
    assert await mark_of(dest, tmp_path, "src") is None
    await commit(dest, tmp_path, {"src": {"rows": 4, "end": True, "mark": mark(10)}})
    assert await mark_of(dest, tmp_path, "src") == mark(10)

    await commit(dest, tmp_path, {"src": {"rows": 2, "end": True, "mark": mark(20)}, "other": {"rows": 9}},
                 run_id="run-2")
    assert await mark_of(dest, tmp_path, "src") == mark(20)
    assert await mark_of(dest, tmp_path, "other") is None  # read with it, no mark of its own
    assert await mark_of(dest, tmp_path, "sr") is None

    # newer checkpoints that hold no mark of src: a unit of a run that failed before the end of its read,
    # with marks of other sources (one whose name LIKE's "_" would match too)
    await commit(dest, tmp_path, {"src": {"rows": 2}, "src_1": {"end": True, "mark": mark(99)}}, run_id="run-3")
    await commit(dest, tmp_path, {"srcX1": {"end": True, "mark": mark(98)}, "src_1": {"rows": 1}}, run_id="run-4")
    if dest.history:
        assert await mark_of(dest, tmp_path, "src") == mark(20)
        assert await mark_of(dest, tmp_path, "src_1") == mark(99)
    else:  # the manifest is the last load's: that load read src (and src_1) without reaching their end
        assert await mark_of(dest, tmp_path, "src") is None
        assert await mark_of(dest, tmp_path, "src_1") is None
    assert await mark_of(dest, tmp_path, "srcX1") == mark(98)

    # another task loading the same table has marks of its own, and they are not this task's
    await commit(dest, tmp_path, {"src": {"rows": 2, "end": True, "mark": mark(30)}}, task="other", run_id="run-5")
    assert await mark_of(dest, tmp_path, "src", task="other") == mark(30)
    assert await mark_of(dest, tmp_path, "src") == (mark(20) if dest.history else None)


async def test_without_its_schema_database_or_file_there_is_no_mark(dest, tmp_path):
    async with loader(dest, tmp_path, missing=True) as load:
        assert await load.mark("src") is None
        assert await load.committed() is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # asking created nothing


async def test_committed_is_none_once_the_table_is_dropped(dest, tmp_path):
    await commit(dest, tmp_path, {"src": {"rows": 2, "end": True, "mark": mark(5)}})
    async with loader(dest, tmp_path) as load:
        held = {"rows": 2, "commits": 1, "position": {"src": {"rows": 2, "end": True, "mark": mark(5)}}}
        assert await load.committed() == held
    dest.drop()
    assert dest.checkpoints() == 1  # the checkpoint is still there, the rows it counts are not
    async with loader(dest, tmp_path) as load:
        assert await load.committed() is None  # so a resume refuses rather than load part of the data
