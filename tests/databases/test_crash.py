"""Crash tests: `agent-etl run` killed with SIGKILL at random moments (after a number of commit
units, or after a random time), then `agent-etl run --resume`; the destination must then equal a
clean run's exactly: row count, distinct keys and a checksum of every column. Nothing lost,
nothing duplicated. Real PostgreSQL, SQLite and Parquet files, through the CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cli.conftest import AGENT_ETL
from tests.databases.conftest import PG_URL

pytestmark = pytest.mark.services("postgres")

ROWS = 36_000
SLOW = """\
import os, time

def slow(batch):
    time.sleep(float(os.environ.get("SLOW", "0")))
    return batch
"""


@pytest.fixture
def pg():
    import psycopg

    name = f"crash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
        try:
            yield conn, name
        finally:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def seed_source(conn, schema: str) -> None:
    conn.execute(f"""CREATE TABLE "{schema}".src (id bigint PRIMARY KEY, v integer, s text, amount numeric(12,2),
                     ts timestamptz)""")
    conn.execute(f"""INSERT INTO "{schema}".src SELECT g, g % 97, 'row ' || g, (g % 1000) / 7.0,
                     timestamptz '2026-01-01' + g * interval '1 minute' FROM generate_series(1, {ROWS}) g""")


def fingerprint(conn, table: str) -> tuple:
    """Rows, distinct keys and an md5 of every column of every row, in key order."""
    return conn.execute(f"""SELECT count(*), count(DISTINCT id), md5(string_agg(t::text, '|' ORDER BY id))
                            FROM {table} t""").fetchone()


def project(tmp_path: Path, spec: str) -> Path:
    (tmp_path / "p.yaml").write_text(spec)
    (tmp_path / "slow.py").write_text(SLOW)
    return tmp_path


def env(path: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "AGENT_ETL_HOME"}
    return {**e, "PYTHONPATH": str(path), **extra}


def cli(path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([AGENT_ETL, *args], cwd=path, env=env(path, **extra), capture_output=True, text=True,
                          timeout=300)


def units(conn, schema: str, task: str) -> int:
    try:
        return conn.execute(f'SELECT count(*) FROM "{schema}"._agent_etl_checkpoints WHERE task = %s',
                            (task,)).fetchone()[0]
    except Exception:  # noqa: BLE001 - the table does not exist yet
        return 0


def kill_and_resume(path: Path, kill: tuple[str, float], conn=None, schema: str | None = None,
                    task: str = "dst") -> str:
    """Start a run, SIGKILL it (``("units", k)``: once k commit units of this run landed; ``("time", s)``:
    after s seconds), resume it; return what the kill met ("crashed", "finished" or "not started")."""
    before = {r["run_id"] for r in runs(path)}
    landed = units(conn, schema, task) if kill[0] == "units" else 0  # an earlier run's units do not count
    proc = subprocess.Popen([AGENT_ETL, "run", "p.yaml", "-q"], cwd=path, env=env(path, SLOW="0.04"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    how, at = kill
    deadline = time.monotonic() + 60
    if how == "units":
        while units(conn, schema, task) - landed < at and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    else:
        time.sleep(at)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    new = [r for r in runs(path) if r["run_id"] not in before]
    if not new:  # killed while it started, before the run was recorded: nothing ran, run it again
        again = cli(path, "run", "p.yaml", "-q")
        assert again.returncode == 0, again.stdout + again.stderr
        return "not started"
    if new[0]["status"] == "succeeded":  # it had finished (perhaps killed while it shut down)
        return "finished"
    assert new[0]["status"] == "crashed", new[0]
    resumed = cli(path, "run", "--resume", "p.yaml", "-q")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    return "crashed"


def runs(path: Path) -> list[dict]:
    return json.loads(cli(path, "runs", "list", "--pipeline", "p.yaml", "--json").stdout)


def kill_points(seed: int, n: int, max_units: int) -> list[tuple[str, float]]:
    rng = random.Random(seed)
    return [("units", rng.randint(1, max_units)) if i % 2 == 0 else ("time", rng.uniform(1.2, 2.4)) for i in range(n)]


PG_TO_PG = """\
version: 1
name: {name}
defaults: {{batch_size: 2000, commit_every: {{rows: 4000}}}}
connections: {{pg: {{url: "{url}"}}}}
extract:
  src: {{tool: postgres, connection: pg, table: {schema}.src}}
transform:
  - {{name: slowed, input: src, tool: python, function: "slow:slow"}}
load:
  dst: {{input: slowed, tool: postgres, connection: pg, table: {schema}.dst, mode: {mode}{key}}}
"""


def test_pg_to_pg_append_in_commit_units(pg, tmp_path):
    conn, schema = pg
    seed_source(conn, schema)
    path = project(tmp_path, PG_TO_PG.format(name=schema, url=PG_URL, schema=schema, mode="append", key=""))
    clean = cli(path, "run", "p.yaml", "-q")
    assert clean.returncode == 0, clean.stderr
    expected = fingerprint(conn, f'"{schema}".dst')
    assert expected[0] == ROWS and units(conn, schema, "dst") == ROWS // 4000
    met = []
    for kill in kill_points(1, 6, ROWS // 4000 - 1):
        conn.execute(f'DROP TABLE "{schema}".dst; DELETE FROM "{schema}"._agent_etl_checkpoints')
        met.append(kill_and_resume(path, kill, conn, schema))
        assert fingerprint(conn, f'"{schema}".dst') == expected, kill
    assert met.count("crashed") >= 3, met  # the kills by unit count at least


def test_pg_to_pg_merge_in_commit_units(pg, tmp_path):
    conn, schema = pg
    seed_source(conn, schema)
    # the target holds every third key with other values, and keys the source does not have
    conn.execute(f"""CREATE TABLE "{schema}".seed AS SELECT id, -v AS v, 'old' AS s, amount, ts FROM "{schema}".src
                     WHERE id % 3 = 0 UNION ALL SELECT g, 0, 'extra', 0, NULL FROM generate_series({ROWS + 1},
                     {ROWS + 500}) g""")

    def fresh_target() -> None:
        conn.execute(f'DROP TABLE IF EXISTS "{schema}".dst')
        conn.execute(f"""CREATE TABLE "{schema}".dst (id bigint PRIMARY KEY, v integer, s text, amount numeric(12,2),
                         ts timestamptz)""")
        conn.execute(f'INSERT INTO "{schema}".dst SELECT * FROM "{schema}".seed')
        conn.execute(f'DELETE FROM "{schema}"._agent_etl_checkpoints') if units(conn, schema, "dst") else None

    fresh_target()
    path = project(tmp_path, PG_TO_PG.format(name=schema, url=PG_URL, schema=schema, mode="merge", key=", key: [id]"))
    clean = cli(path, "run", "p.yaml", "-q")
    assert clean.returncode == 0, clean.stderr
    expected = fingerprint(conn, f'"{schema}".dst')
    assert expected[0] == ROWS + 500
    met = []
    for kill in kill_points(2, 5, ROWS // 4000 - 1):
        fresh_target()
        met.append(kill_and_resume(path, kill, conn, schema))
        assert fingerprint(conn, f'"{schema}".dst') == expected, kill
    assert met.count("crashed") >= 3, met  # the kills by unit count at least


SQLITE_TO_PG = """\
version: 1
name: {name}
defaults: {{batch_size: 500, commit_every: {{rows: 2500}}}}
connections:
  lite: {{url: "sqlite:///source.db"}}
  pg: {{url: "{url}"}}
extract:
  src: {{tool: sqlite, connection: lite, table: events, incremental: {{cursor: updated}}}}
transform:
  - {{name: slowed, input: src, tool: python, function: "slow:slow"}}
load:
  dst: {{input: slowed, tool: postgres, connection: pg, table: {schema}.dst}}
"""


def test_sqlite_to_pg_incremental(pg, tmp_path):
    conn, schema = pg
    path = project(tmp_path, SQLITE_TO_PG.format(name=schema, url=PG_URL, schema=schema))
    met = []
    for point, kill in enumerate(kill_points(3, 4, 6)):
        lite = path / "source.db"
        lite.unlink(missing_ok=True)
        conn.execute(f'DROP TABLE IF EXISTS "{schema}".dst')
        if units(conn, schema, "dst"):
            conn.execute(f'DELETE FROM "{schema}"._agent_etl_checkpoints')
        for state in path.glob(".agent-etl/runs.db*"):
            state.unlink()
        db = sqlite3.connect(lite)
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, updated INTEGER NOT NULL, v TEXT)")
        db.executemany("INSERT INTO events VALUES (?, ?, ?)", [(i, i // 3, f"v{i}") for i in range(9_000)])
        db.commit()
        first = cli(path, "run", "p.yaml", "-q")
        assert first.returncode == 0, first.stderr
        # new rows arrive past the mark, three to a cursor value: a unit may end inside a tie
        db.executemany("INSERT INTO events VALUES (?, ?, ?)", [(i, i // 3, f"v{i}") for i in range(9_000, 27_000)])
        db.commit()
        db.close()
        met.append(kill_and_resume(path, kill, conn, schema))
        got = conn.execute(f'SELECT count(*), count(DISTINCT id), min(id), max(id) FROM "{schema}".dst').fetchone()
        assert got == (27_000, 27_000, 0, 26_999), (point, kill, got)
        again = cli(path, "run", "p.yaml", "--json")
        assert again.returncode == 0 and '"rows_loaded": 0' in again.stdout, again.stdout[-400:]
    assert met.count("crashed") >= 2, met  # the kills by unit count at least


TWO_DESTINATIONS = """\
version: 1
name: {name}
defaults: {{batch_size: 2000, commit_every: {{rows: 4000}}, commit: together}}
connections: {{pg: {{url: "{url}"}}}}
extract:
  src: {{tool: postgres, connection: pg, table: {schema}.src}}
transform:
  - {{name: slowed, input: src, tool: python, function: "slow:slow"}}
load:
  dst: {{input: slowed, tool: postgres, connection: pg, table: {schema}.dst}}
  lake: {{input: slowed, tool: parquet, path: out/src.parquet}}
"""


def test_two_destinations_commit_together(pg, tmp_path):
    conn, schema = pg
    seed_source(conn, schema)
    path = project(tmp_path, TWO_DESTINATIONS.format(name=schema, url=PG_URL, schema=schema))
    clean = cli(path, "run", "p.yaml", "-q")
    assert clean.returncode == 0, clean.stderr
    expected = fingerprint(conn, f'"{schema}".dst')
    lake = pq.read_table(path / "out" / "src.parquet").sort_by("id")
    assert lake.num_rows == ROWS
    met = []
    for kill in kill_points(4, 5, ROWS // 4000 - 1):
        conn.execute(f'DROP TABLE "{schema}".dst; DELETE FROM "{schema}"._agent_etl_checkpoints')
        (path / "out" / "src.parquet").unlink()
        met.append(kill_and_resume(path, kill, conn, schema))
        assert fingerprint(conn, f'"{schema}".dst') == expected, kill
        assert pq.read_table(path / "out" / "src.parquet").sort_by("id").equals(lake), kill
    assert met.count("crashed") >= 3, met  # the kills by unit count at least


def test_a_table_dropped_between_the_crash_and_the_resume_is_not_rewritten_in_part(pg, tmp_path):
    conn, schema = pg
    seed_source(conn, schema)
    path = project(tmp_path, PG_TO_PG.format(name=schema, url=PG_URL, schema=schema, mode="append", key=""))
    proc = subprocess.Popen([AGENT_ETL, "run", "p.yaml", "-q"], cwd=path, env=env(path, SLOW="0.04"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while units(conn, schema, "dst") < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    conn.execute(f'DROP TABLE "{schema}".dst')
    resumed = cli(path, "run", "--resume", "p.yaml")
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    assert "load 'dst'" in resumed.stderr and "no longer holds them" in resumed.stderr
    assert "Traceback" not in resumed.stderr
    gone = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".dst',)).fetchone()[0]
    assert gone is None  # nothing was written again
