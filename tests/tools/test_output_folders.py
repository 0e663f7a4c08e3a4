"""Every loader that writes a local file makes the folder it goes into, the same way: the file
loaders, the SQLite and DuckDB loaders, and ``tool: sql`` on a ``sqlite:///`` url. Through the CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.cli.conftest import cli

LOADS = {  # load name -> (its options, the file it makes)
    "to_csv": ("{tool: csv, path: new/csv/out.csv}", "new/csv/out.csv"),
    "to_parquet": ("{tool: parquet, path: new/parquet/out.parquet}", "new/parquet/out.parquet"),
    "to_sqlite": ("{tool: sqlite, connection: lite, table: t}", "new/sqlite/db.sqlite"),
    "to_sql": ("{tool: sql, connection: generic, table: t}", "new/sql/db.sqlite"),
    "to_duckdb": ("{tool: duckdb, connection: duck, table: t}", "new/duckdb/db.duckdb"),
}


def _project(tmp_path: Path, loads: dict[str, tuple[str, str]]) -> Path:
    pq.write_table(pa.table({"id": list(range(50)), "v": [f"v{i}" for i in range(50)]}), tmp_path / "in.parquet")
    lines = ["version: 1", "name: folders", "connections:",
             "  lite: {url: 'sqlite:///new/sqlite/db.sqlite'}",
             "  generic: {url: 'sqlite:///new/sql/db.sqlite'}",
             "  duck: {url: 'duckdb:///new/duckdb/db.duckdb'}",
             "extract:", "  src: {tool: parquet, path: in.parquet}", "load:"]
    lines += [f"  {name}: {{input: src, {options[1:]}" for name, (options, _) in loads.items()]
    (tmp_path / "p.yaml").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_every_local_loader_makes_its_folder(tmp_path: Path):
    project = _project(tmp_path, LOADS)
    out = cli("run", "p.yaml", "--json", cwd=project)
    assert out.returncode == 0, out.stderr + out.stdout
    loaded = {t["name"]: t["rows"] for t in json.loads(out.stdout)["tasks"] if t["kind"] == "load"}
    assert loaded == dict.fromkeys(LOADS, 50)
    for _, made in LOADS.values():
        assert (project / made).is_file(), made
    with sqlite3.connect(project / "new" / "sql" / "db.sqlite") as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (50,)


def test_the_sql_extractor_does_not_make_a_missing_sqlite_file(tmp_path: Path):
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: missing\nconnections:\n  db: {url: 'sqlite:///gone/db.sqlite'}\n"
        "extract:\n  src: {tool: sql, connection: db, table: t}\n"
        "load:\n  out: {input: src, tool: csv, path: out.csv}\n")
    out = cli("run", "p.yaml", cwd=tmp_path)
    assert out.returncode == 1
    assert f"SQLite database {tmp_path / 'gone' / 'db.sqlite'} does not exist" in out.stderr, out.stderr
    assert not (tmp_path / "gone").exists()


@pytest.mark.parametrize("name", list(LOADS))
def test_a_file_where_the_folder_should_be_is_named(tmp_path: Path, name: str):
    project = _project(tmp_path, {name: LOADS[name]})
    (project / "new").write_text("a file, not a folder")
    out = cli("run", "p.yaml", cwd=project)
    assert out.returncode == 1
    made = project / LOADS[name][1]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: task {name!r}: cannot make the folder {made.parent} for {made}: {project / 'new'} "
                      "is a file, not a folder; move that file or change the path"], out.stderr
