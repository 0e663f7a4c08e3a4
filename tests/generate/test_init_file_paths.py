"""``agent-etl init`` on files: an empty or unreadable file among others is said once in a comment
(its path as the pipeline names it, and why), the paths in the pipeline are relative to the pipeline
file (also when the pipeline is written elsewhere, or the source given by an absolute path), and the
pipeline validates and runs."""

from __future__ import annotations

import sqlite3

import pyarrow.parquet as pq
import yaml
from tests.cli.conftest import cli


def ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    return r


def not_read(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("# Not read")]


def folder_with_an_empty_csv(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "people.csv").write_text("id,name\n1,ann\n2,bob\n")
    (data / "empty.csv").write_text("")
    return data


def test_an_empty_csv_is_said_once_with_its_relative_path(tmp_path):
    folder_with_an_empty_csv(tmp_path)
    ok(cli("init", "data", "--no-memory", cwd=tmp_path))
    text = (tmp_path / "pipeline.yaml").read_text()
    assert not_read(text) == ["# Not read: data/empty.csv: an empty file (no header, no rows)"]
    assert str(tmp_path) not in text and "/tmp" not in text
    spec = yaml.safe_load(text)
    assert spec["extract"] == {"people": {"tool": "csv", "path": "data/people.csv"}}
    ok(cli("validate", "pipeline.yaml", cwd=tmp_path))
    ok(cli("run", "-q", "pipeline.yaml", cwd=tmp_path))
    assert pq.read_table(tmp_path / "out" / "people").num_rows == 2


def test_pipeline_written_elsewhere_and_source_given_absolute(tmp_path):
    data = folder_with_an_empty_csv(tmp_path)
    # the source by its absolute path, the pipeline in a sub-folder: paths lead from the pipeline's folder
    ok(cli("init", str(data), "--out", "pipelines/files.yaml", "--no-memory", cwd=tmp_path))
    text = (tmp_path / "pipelines" / "files.yaml").read_text()
    assert str(tmp_path) not in text, text
    assert not_read(text) == ["# Not read: ../data/empty.csv: an empty file (no header, no rows)"]
    assert yaml.safe_load(text)["extract"]["people"]["path"] == "../data/people.csv"
    ok(cli("validate", "pipelines/files.yaml", cwd=tmp_path))
    ok(cli("run", "-q", "pipelines/files.yaml", cwd=tmp_path))
    assert pq.read_table(tmp_path / "pipelines" / "out" / "people").num_rows == 2


def test_unreadable_files_among_others_are_said_once_each(tmp_path):
    data = folder_with_an_empty_csv(tmp_path)
    (data / "blank.jsonl").write_text("\n\n")
    (data / "ragged.csv").write_text("a,b\n1,2,3\n")
    (data / "broken.xlsx").write_text("not a workbook")
    (data / "none.json").write_text("[]")
    ok(cli("init", "data", "--no-memory", cwd=tmp_path))
    text = (tmp_path / "pipeline.yaml").read_text()
    lines = not_read(text)
    assert str(tmp_path) not in text and "task 'init'" not in text
    assert [line.split(": ")[1] for line in lines] == [f"data/{name}" for name in (
        "blank.jsonl", "broken.xlsx", "empty.csv", "none.json", "ragged.csv")]
    assert "# Not read: data/blank.jsonl: an empty file (no rows)" in lines
    assert all(line.count("data/") == 1 for line in lines), lines  # each file named once
    ok(cli("run", "-q", "pipeline.yaml", cwd=tmp_path))


def test_a_lone_empty_file_is_one_line_naming_it(tmp_path):
    folder_with_an_empty_csv(tmp_path)
    r = cli("init", "data/empty.csv", "--no-memory", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: data/empty.csv: an empty file (no header, no rows): nothing to generate from"
    assert not (tmp_path / "pipeline.yaml").exists()


def test_database_file_and_lake_relative_to_a_pipeline_elsewhere(tmp_path):
    db = sqlite3.connect(tmp_path / "shop.db")
    db.executescript("create table items(id integer primary key, name text); insert into items values (1, 'a');")
    db.close()
    ok(cli("init", str(tmp_path / "shop.db"), "--dest", str(tmp_path / "lake"), "--out", "p/shop.yaml",
           "--no-memory", cwd=tmp_path))
    text = (tmp_path / "p" / "shop.yaml").read_text()
    assert str(tmp_path) not in text, text
    spec = yaml.safe_load(text)
    assert spec["connections"]["source"]["url"] == "sqlite:///../shop.db"
    assert spec["load"]["items_out"]["path"] == "../lake/items/"
    ok(cli("run", "-q", "p/shop.yaml", cwd=tmp_path))
    assert pq.read_table(tmp_path / "lake" / "items").num_rows == 1
