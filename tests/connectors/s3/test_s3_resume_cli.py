"""An s3 source resumed through the CLI: a run killed mid-way (SIGKILL) or failed, then resumed,
loads every row of the objects exactly once into a destination that commits in units."""

from __future__ import annotations

import gzip
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.conftest import AGENT_ETL, wait_running

OBJECTS, ROWS = 6, 4000
SPEC = """\
version: 1
name: s3_resume
defaults: {{batch_size: 500, commit_every: {{rows: 1000}}}}
connections:
  wh: {{url: "sqlite:///out/wh.db"}}
extract:
  orders:
    tool: s3
    url: s3://{bucket}/in/*.csv.gz
    endpoint_url: ${{S3_ENDPOINT}}
    block_size: 65536
transform:
  - {{name: slowed, input: orders, tool: python, function: "slow:slow"}}
load:
  wh: {{input: slowed, tool: sqlite, connection: wh, table: orders}}
"""
SLOW = """\
import os, time

def slow(batch):
    time.sleep(float(os.environ.get("SLOW", "0")))
    if os.environ.get("BOOM") and batch.column("id")[0].as_py() >= int(os.environ["BOOM"]):
        raise RuntimeError("boom")
    return batch
"""


@pytest.fixture
def project(tmp_path: Path, put, bucket) -> Path:
    for i in range(OBJECTS):
        lines = ["id,amount,note"] + [f"{n},{n % 101},n{n % 13}" for n in range(i * ROWS, (i + 1) * ROWS)]
        put(f"in/part-{i}.csv.gz", gzip.compress(("\n".join(lines) + "\n").encode()))
    (tmp_path / "out").mkdir()
    (tmp_path / "p.yaml").write_text(SPEC.format(bucket=bucket))
    (tmp_path / "slow.py").write_text(SLOW)
    return tmp_path


def env(project: Path, endpoint: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "AGENT_ETL_HOME": str(project / ".agent-etl"), "PYTHONPATH": str(project),
            "S3_ENDPOINT": endpoint, **extra}


def run(project: Path, endpoint: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([AGENT_ETL, *args], cwd=project, env=env(project, endpoint, **extra), capture_output=True,
                          text=True, timeout=180)


def loaded(project: Path) -> tuple[int, int]:
    with sqlite3.connect(project / "out" / "wh.db") as con:
        return con.execute("select count(*), count(distinct id) from orders").fetchone()


def test_killed_run_resumes_to_every_row_once(project, s3_endpoint):
    rng, resumes = random.Random(3), 0
    for point in range(3):
        (project / "out" / "wh.db").unlink(missing_ok=True)
        proc = subprocess.Popen([AGENT_ETL, "run", "p.yaml", "-q"], cwd=project,
                                env=env(project, s3_endpoint, SLOW="0.05"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_running(project / ".agent-etl", proc)
        time.sleep(rng.uniform(0.3, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        resumed = run(project, s3_endpoint, "run", "--resume", "p.yaml")
        if resumed.returncode == 2 and "no unfinished run" in resumed.stderr:
            pass  # it had finished before the kill
        else:
            assert resumed.returncode == 0, resumed.stderr
            resumes += 1
        assert loaded(project) == (OBJECTS * ROWS, OBJECTS * ROWS), f"kill point {point}"
    assert resumes, "every run ended before its kill: nothing was resumed"


def test_failed_run_resumes_after_its_last_commit(project, s3_endpoint):
    failed = run(project, s3_endpoint, "run", "p.yaml", BOOM=str(3 * ROWS + 1500))  # in the fourth object
    assert failed.returncode == 1 and "resume with: agent-etl resume " in failed.stderr, failed.stderr
    count, _ = loaded(project)
    assert 0 < count <= 3 * ROWS + 1500
    command = failed.stderr.split("resume with: ")[1].split()
    resumed = run(project, s3_endpoint, *command[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert loaded(project) == (OBJECTS * ROWS, OBJECTS * ROWS)
