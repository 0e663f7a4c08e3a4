"""Incremental loads across runs of the real CLI: rows added between runs are read once, a failed
run does not advance the cursor, ``initial`` and ``lookback`` bound the reads; bad input exits
with the right code and a message."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import duckdb
import pytest

_spec = importlib.util.spec_from_file_location("cli_conftest", Path(__file__).parents[1] / "cli" / "conftest.py")
_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cli)
cli = _cli.cli

SQLITE_PIPE = """\
version: 1
name: inc_sqlite
connections:
  src: {url: "sqlite:///data/src.db"}
  dst: {url: "sqlite:///data/dst.db"}
extract:
  events:
    tool: sqlite
    connection: src
    table: events
    incremental: {cursor: id, initial: 2}
load:
  copy:
    input: events
    tool: sqlite
    connection: dst
    table: copy
"""

DUCKDB_PIPE = """\
version: 1
name: inc_duckdb
connections:
  db: {url: "duckdb:///data/wh.duckdb"}
extract:
  events:
    tool: duckdb
    connection: db
    query: "select id, v, ts from events"
    incremental: {cursor: ts, lookback: 1 hour}
load:
  copy:
    input: events
    tool: duckdb
    connection: db
    table: copy
    mode: merge
    key: id
"""


def run(tmp_path: Path) -> None:
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def sqlite_rows(path: Path, sql: str, *params) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        out = con.execute(sql, params).fetchall()
        con.commit()
        return out
    finally:
        con.close()


def test_sqlite_incremental_across_runs(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "p.yaml").write_text(SQLITE_PIPE)
    src, dst = tmp_path / "data" / "src.db", tmp_path / "data" / "dst.db"
    sqlite_rows(src, "CREATE TABLE events(id INTEGER, v TEXT)")
    sqlite_rows(src, "INSERT INTO events VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')")
    run(tmp_path)  # run 1: initial 2 -> 3, 4
    assert sqlite_rows(dst, "SELECT id FROM copy ORDER BY id") == [(3,), (4,)]

    sqlite_rows(src, "INSERT INTO events VALUES (5, 'e'), (6, 'f')")
    run(tmp_path)  # run 2: only the new rows
    assert sqlite_rows(dst, "SELECT id FROM copy ORDER BY id") == [(3,), (4,), (5,), (6,)]

    # run 3 fails in the load (a unique index rejects row 7): the cursor stays at 6
    sqlite_rows(dst, "CREATE UNIQUE INDEX copy_v ON copy(v)")
    sqlite_rows(src, "INSERT INTO events VALUES (7, 'c'), (8, 'h')")
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert "constraint" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
    assert sqlite_rows(dst, "SELECT count(*) FROM copy") == [(4,)]

    sqlite_rows(src, "UPDATE events SET v = 'g' WHERE id = 7")
    run(tmp_path)  # run 4: rows 7 and 8 again, as the failed run never moved the mark
    assert sqlite_rows(dst, "SELECT id, v FROM copy WHERE id > 6 ORDER BY id") == [(7, "g"), (8, "h")]
    run(tmp_path)  # run 5: nothing new
    assert sqlite_rows(dst, "SELECT count(*) FROM copy") == [(6,)]


def test_the_destination_says_where_an_incremental_source_stands(tmp_path):
    """Two state folders (a run from elsewhere, a wiped .agent-etl) cannot disagree: the mark is read
    from the destination's checkpoints, not the run store."""
    (tmp_path / "data").mkdir()
    (tmp_path / "p.yaml").write_text(SQLITE_PIPE)
    src, dst = tmp_path / "data" / "src.db", tmp_path / "data" / "dst.db"
    sqlite_rows(src, "CREATE TABLE events(id INTEGER, v TEXT)")
    sqlite_rows(src, "INSERT INTO events VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')")
    first = cli("run", "p.yaml", cwd=tmp_path, env={"AGENT_ETL_HOME": str(tmp_path / "one")})
    assert first.returncode == 0, first.stderr
    sqlite_rows(src, "INSERT INTO events VALUES (5, 'e')")
    second = cli("run", "p.yaml", "--json", cwd=tmp_path, env={"AGENT_ETL_HOME": str(tmp_path / "two")})
    assert second.returncode == 0, second.stderr
    assert sqlite_rows(dst, "SELECT id FROM copy ORDER BY id") == [(3,), (4,), (5,)]  # 3 and 4 once


def test_duckdb_incremental_with_lookback_and_a_failed_merge(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "p.yaml").write_text(DUCKDB_PIPE)
    db = tmp_path / "data" / "wh.duckdb"

    def sql(text: str) -> list[tuple]:
        con = duckdb.connect(str(db))
        try:
            return con.execute(text).fetchall()
        finally:
            con.close()

    sql("CREATE TABLE events(id INTEGER, v VARCHAR, ts TIMESTAMP)")
    sql("CREATE TABLE copy(id INTEGER, v VARCHAR NOT NULL, ts TIMESTAMP)")
    sql("INSERT INTO events VALUES (1, 'a', '2024-01-01 10:00'), (2, 'b', '2024-01-01 11:00')")
    run(tmp_path)
    assert sql("SELECT id, v FROM copy ORDER BY id") == [(1, "a"), (2, "b")]

    # a late row (within the lookback) and a new one; the re-read row 2 merges, it does not repeat
    sql("INSERT INTO events VALUES (3, 'c', '2024-01-01 10:30'), (4, 'd', '2024-01-01 12:00')")
    sql("UPDATE events SET v = 'B' WHERE id = 2")
    run(tmp_path)
    assert sql("SELECT id, v FROM copy ORDER BY id") == [(1, "a"), (2, "B"), (3, "c"), (4, "d")]

    # run 3: a NULL breaks the NOT NULL column, the merge rolls back, the mark stays at 12:00
    sql("INSERT INTO events VALUES (5, NULL, '2024-01-02 09:00')")
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    assert "'copy'" in r.stdout + r.stderr
    assert sql("SELECT count(*) FROM copy") == [(4,)]

    sql("UPDATE events SET v = 'e' WHERE id = 5")
    run(tmp_path)
    assert sql("SELECT id, v FROM copy ORDER BY id") == [(1, "a"), (2, "B"), (3, "c"), (4, "d"), (5, "e")]


@pytest.mark.parametrize(("yaml", "code", "text"), [
    (DUCKDB_PIPE.replace("select id, v, ts from events", "select * from nope"), 1, "nope"),
    (DUCKDB_PIPE.replace("duckdb:///data/wh.duckdb", "duckdb:///data/missing.duckdb"), 1, "does not exist"),
    (DUCKDB_PIPE.replace("duckdb:///data/wh.duckdb", "postgresql://u@h/db"), 2, "not a DuckDB database file"),
    (DUCKDB_PIPE.replace("mode: merge\n    key: id\n", "mode: merge\n"), 2, "key"),
    (SQLITE_PIPE.replace("table: events", "table: events\n    partitions: 4"), 2, "partition_on"),
])
def test_bad_input_exit_codes(tmp_path, yaml, code, text):
    (tmp_path / "data").mkdir()
    duckdb.connect(str(tmp_path / "data" / "wh.duckdb")).close()
    (tmp_path / "p.yaml").write_text(yaml)
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == code, r.stdout + r.stderr
    assert text in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
