"""The result cache through the CLI: a second run hits it (the run's details and `runs show` say
so), a changed file or SQLite database misses it, an entry expires after its ttl, `cache clear`
empties it, secrets never reach the disk, and what cannot be cached is a spec error."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from tests.cli.conftest import cli

PIPE = """\
version: 1
name: cached
extract:
  src:
    tool: csv
    path: data.csv
    cache: {{ttl: {ttl}}}
load:
  out:
    input: src
    tool: parquet
    path: out/x.parquet
"""


def run(tmp_path, *args, env=None):
    r = cli("run", "--json", *args, "p.yaml", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    (src,) = [t for t in result["tasks"] if t["name"] == "src"]
    return result, src["details"].get("cache", {})


def write(tmp_path, rows, ttl="10m"):
    pacsv.write_csv(pa.table({"id": list(range(rows)), "v": [i * 0.5 for i in range(rows)]}), tmp_path / "data.csv")
    (tmp_path / "p.yaml").write_text(PIPE.format(ttl=ttl))


def test_second_run_hits_and_runs_show_says_so(tmp_path):
    write(tmp_path, 1000)
    result, cache = run(tmp_path)
    assert cache["status"] == "stored"
    result, cache = run(tmp_path)
    assert cache["status"] == "hit" and cache["rows"] == 1000 and cache["tier"] == "disk"
    assert pq.read_table(tmp_path / "out" / "x.parquet").num_rows == 1000
    shown = cli("runs", "show", result["run_id"], cwd=tmp_path)
    assert "cache: hit (disk, 1,000 rows" in shown.stdout
    listed = cli("cache", "list", "--json", cwd=tmp_path)
    (entry,) = json.loads(listed.stdout)
    assert entry["pipeline"] == "cached" and entry["task"] == "src" and entry["rows"] == 1000


def test_file_change_misses(tmp_path):
    write(tmp_path, 1000)
    run(tmp_path)
    write(tmp_path, 10)  # other contents: another size and time
    _, cache = run(tmp_path)
    assert cache["status"] == "stored"
    assert pq.read_table(tmp_path / "out" / "x.parquet").num_rows == 10


def test_ttl_expires(tmp_path):
    write(tmp_path, 100, ttl="300ms")
    run(tmp_path)
    time.sleep(0.4)
    _, cache = run(tmp_path)
    assert cache["status"] == "stored"


def test_clear(tmp_path):
    write(tmp_path, 100)
    run(tmp_path)
    r = cli("cache", "clear", cwd=tmp_path)
    assert r.returncode == 0 and "cleared 1 cached result" in r.stdout
    assert cli("cache", "list", cwd=tmp_path).stdout.strip() == "no cached results"
    _, cache = run(tmp_path)
    assert cache["status"] == "stored"


@pytest.mark.parametrize("tool", ["sqlite", "sql"])
def test_sqlite_write_misses(tmp_path, tool):
    db = tmp_path / "src.db"
    c = sqlite3.connect(db)
    c.execute("create table t(id integer primary key, v text)")
    c.executemany("insert into t values (?, ?)", [(i, str(i)) for i in range(50)])
    c.commit()
    (tmp_path / "p.yaml").write_text("""\
version: 1
name: cached_db
connections:
  db: {url: "sqlite:///src.db"}
extract:
  src: {tool: TOOL, connection: db, table: t, cache: {ttl: 1h}}
load:
  out: {input: src, tool: parquet, path: out/t.parquet}
""".replace("TOOL", tool))
    run(tmp_path)
    assert run(tmp_path)[1]["status"] == "hit"
    c.execute("insert into t values (1000, 'new')")
    c.commit()
    c.close()
    assert run(tmp_path)[1]["status"] == "stored"
    assert pq.read_table(tmp_path / "out" / "t.parquet").num_rows == 51


@pytest.mark.services("postgres")
def test_secrets_never_on_disk(tmp_path):
    import psycopg

    table = f"cache_{uuid.uuid4().hex[:8]}"
    secret = f"pw-{uuid.uuid4().hex}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        conn.execute(f"create table {table} as select g as id from generate_series(1, 100) g")
    try:
        (tmp_path / "p.yaml").write_text(f"""\
version: 1
name: cached_pg
connections:
  pg: {{url: "postgresql://postgres:${{PGPASS}}@127.0.0.1:5432/test"}}
extract:
  src: {{tool: postgres, connection: pg, query: "select * from {table} where id > 0", cache: {{ttl: 1h}}}}
load:
  out: {{input: src, tool: parquet, path: out/t.parquet}}
""")
        env = {"PGPASS": secret}  # trusted login: any password works; what matters is where it goes
        assert run(tmp_path, env=env)[1]["status"] == "stored"
        assert run(tmp_path, env=env)[1]["status"] == "hit"
        for f in (tmp_path / ".agent-etl" / "cache").iterdir():
            data = f.read_bytes()
            assert secret.encode() not in data and table.encode() not in data, f
        # another password is another connection identity: not the same entry
        assert run(tmp_path, env={"PGPASS": "other"})[1]["status"] == "stored"
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f"drop table {table}")


def test_what_cannot_be_cached_is_a_spec_error(tmp_path):
    (tmp_path / "p.yaml").write_text("""\
version: 1
name: not_cached
connections:
  db: {url: "sqlite:///src.db"}
  nats: {url: "nats://127.0.0.1:4222"}
extract:
  inc: {tool: sqlite, connection: db, table: t, incremental: {cursor: id}, cache: {ttl: 1h}}
  msgs: {tool: nats, url: "nats://127.0.0.1:4222", stream: s, subject: s.x, durable: d, cache: true}
load:
  a: {input: inc, tool: parquet, path: out/a.parquet}
  b: {input: msgs, tool: parquet, path: out/b.parquet}
""")
    r = cli("validate", "p.yaml", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "extract 'inc' is incremental and cannot be cached" in r.stderr
    assert "extract 'msgs' reads a stream (nats), which is not cached" in r.stderr
    assert "Traceback" not in r.stderr


def test_hit_has_no_position_so_loads_commit_once(tmp_path):
    """A load below a cache hit cannot resume after a unit (the hit has no source position): it
    commits once at the end, where the read from the file commits in units."""
    pacsv.write_csv(pa.table({"id": list(range(1000))}), tmp_path / "data.csv")
    (tmp_path / "p.yaml").write_text("""\
version: 1
name: cached_units
defaults: {batch_size: 100}
connections:
  wh: {url: "sqlite:///wh.db"}
extract:
  src: {tool: csv, path: data.csv, cache: true}
load:
  out: {input: src, tool: sqlite, connection: wh, table: t, mode: append, commit_every: {rows: 200}}
""")

    def units(result):
        (load,) = [t for t in result["tasks"] if t["name"] == "out"]
        return load["details"].get("commit_units"), load["rows"]

    first, cache = run(tmp_path)
    assert cache["status"] == "stored"
    assert units(first) == (5, 1000)
    second, cache = run(tmp_path)
    assert cache["status"] == "hit"
    assert units(second) == (1, 1000)  # one commit, at the end
    assert sqlite3.connect(tmp_path / "wh.db").execute("select count(*) from t").fetchone() == (2000,)


def test_s3_object_change_misses(tmp_path, s3_endpoint, s3, bucket):
    def put(rows):
        buf = pa.BufferOutputStream()
        pq.write_table(pa.table({"id": list(range(rows))}), buf)
        s3.put_object(Bucket=bucket, Key="data/part-0.parquet", Body=buf.getvalue().to_pybytes())

    put(100)
    (tmp_path / "p.yaml").write_text(f"""\
version: 1
name: cached_s3
extract:
  src: {{tool: s3, url: "s3://{bucket}/data/*.parquet", endpoint_url: "{s3_endpoint}", cache: {{ttl: 1h}}}}
load:
  out: {{input: src, tool: parquet, path: out/t.parquet}}
""")
    assert run(tmp_path)[1]["status"] == "stored"
    assert run(tmp_path)[1]["status"] == "hit"
    put(7)  # another ETag
    assert run(tmp_path)[1]["status"] == "stored"
    assert pq.read_table(tmp_path / "out" / "t.parquet").num_rows == 7
