"""rest pipelines through the CLI, as a user runs them: rest -> parquet with a token from the
environment, a secret written inline (refused), and a run killed mid-read that resumes after the
last committed page."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq

from tests.cli.conftest import AGENT_ETL, cli
from tests.connectors.api.server import TOKEN

TO_PARQUET = """\
version: 1
name: api_demo
extract:
  users:
    tool: rest
    url: {url}/auth/bearer
    auth: {{type: bearer, token: "{token}"}}
    records: data
    pagination: {{type: next_url, path: next}}
load:
  lake: {{input: users, tool: parquet, path: out/users.parquet}}
"""


def test_rest_to_parquet_through_the_cli(api, tmp_path):
    (tmp_path / "p.yaml").write_text(TO_PARQUET.format(url=api.url, token="${API_TOKEN}"))
    run = cli("run", "p.yaml", cwd=tmp_path, env={"API_TOKEN": TOKEN})
    assert run.returncode == 0, run.stderr
    table = pq.read_table(tmp_path / "out" / "users.parquet")
    assert table.column("id").to_pylist() == list(range(30))
    assert table.schema.field("address").type.num_fields == 2
    store = (tmp_path / ".agent-etl" / "runs.db").read_bytes()
    assert TOKEN.encode() not in store and TOKEN not in run.stdout + run.stderr
    run_id = json.loads(cli("runs", "list", "--json", cwd=tmp_path).stdout)[0]["run_id"]
    shown = cli("runs", "show", run_id, "--json", cwd=tmp_path)
    assert shown.returncode == 0 and TOKEN not in shown.stdout + shown.stderr


def test_a_token_written_inline_is_refused(api, tmp_path):
    (tmp_path / "p.yaml").write_text(TO_PARQUET.format(url=api.url, token=TOKEN))
    run = cli("run", "p.yaml", cwd=tmp_path)
    assert run.returncode == 1
    assert "auth.token is written in the pipeline file; give it as ${ENV_VAR} or ${file:path}" in run.stderr
    assert TOKEN not in run.stderr + run.stdout and "Traceback" not in run.stderr
    wrong = cli("run", "p.yaml", cwd=tmp_path, env={"API_TOKEN": "not-the-token"})
    assert wrong.returncode == 1


TO_SQLITE = """\
version: 1
name: api_crash
defaults: {{batch_size: 50, commit_every: {{rows: 100}}}}
connections:
  api: {{url: "{url}"}}
  lite: {{url: "sqlite:///dst.db"}}
extract:
  items:
    tool: rest
    connection: api
    url: /items
    records: data
    infer_pages: 1
    pagination: {{type: page, page_size: 50, prefetch: 1}}
load:
  dst: {{input: items, tool: sqlite, connection: lite, table: items}}
"""


def units(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM _agent_etl_checkpoints").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_killed_rest_read_resumes_after_the_last_committed_page(api, tmp_path):
    api.api.rows = 2000
    api.api.slow_page, api.api.slow = 4, 0.25  # pages from the 4th on are slow: the kill lands mid-read
    (tmp_path / "p.yaml").write_text(TO_SQLITE.format(url=api.url))
    env = {"AGENT_ETL_HOME": str(tmp_path / ".agent-etl")}
    proc = subprocess.Popen([AGENT_ETL, "run", "p.yaml", "-q"], cwd=tmp_path, env={**__import__("os").environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while units(tmp_path / "dst.db") < 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = units(tmp_path / "dst.db")
    api.api.pages_seen.clear()
    api.api.slow_page = None
    resumed = cli("run", "--resume", "p.yaml", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    with sqlite3.connect(tmp_path / "dst.db") as conn:
        got = conn.execute("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM items").fetchone()
    assert got == (2000, 2000, 0, 1999)
    # the resumed read asked only for pages after the last commit (2 pages of 50 per unit)
    assert min(api.api.pages_seen) == before * 2 + 1, (before, api.api.pages_seen[:5])
    assert json.loads(resumed.stdout)["status"] == "succeeded"


INCREMENTAL = """\
version: 1
name: api_incremental
extract:
  items:
    tool: rest
    url: {url}/since
    records: data
    pagination: {{type: page}}
    incremental: {{cursor: updated_at, param: updated_since}}
load:
  lake: {{input: items, tool: parquet, path: out/items.parquet}}
"""


def test_incremental_mark_lands_in_the_destination_and_feeds_the_next_run(api, tmp_path):
    (tmp_path / "p.yaml").write_text(INCREMENTAL.format(url=api.url))
    first = cli("run", "p.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert pq.read_table(tmp_path / "out" / "items.parquet").num_rows == 95 and api.api.since_seen[0] is None
    manifest = json.loads((tmp_path / "out" / ".items.parquet.checkpoint.json").read_text())
    assert '"mark": {"cursor": "updated_at", "type": "string", "value": "2024-01-01T00:59:00Z"}' in json.dumps(manifest)
    api.api.since_seen.clear()
    second = cli("run", "p.yaml", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert set(api.api.since_seen) == {"2024-01-01T00:59:00Z"}
