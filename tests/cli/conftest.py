from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
AGENT_ETL = str(Path(sys.executable).parent / "agent-etl")


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "AGENT_ETL_HOME": str(cwd / ".agent-etl"), **(env or {})}
    return subprocess.run([AGENT_ETL, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def wait_running(home: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the run store under ``home`` says a run is running, read straight from its SQLite file:
    a `runs list` process per look, or a kill timed from process start, takes seconds on a loaded
    machine, long enough for a short run to have ended, or not yet begun."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, "the run never showed as running"
        try:
            with sqlite3.connect(f"file:{home / 'runs.db'}?mode=ro", uri=True) as con:
                if con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]:
                    return
        except sqlite3.Error:
            pass  # not made yet
        time.sleep(0.01)


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A private copy of the quickstart example (its data and pipeline)."""
    dest = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, dest, ignore=shutil.ignore_patterns("out", ".agent-etl", "__pycache__"))
    return dest
