from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
AGENT_ETL = str(Path(sys.executable).parent / "agent-etl")


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "AGENT_ETL_HOME": str(cwd / ".agent-etl"), **(env or {})}
    return subprocess.run([AGENT_ETL, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A private copy of the quickstart example (its data and pipeline)."""
    dest = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, dest, ignore=shutil.ignore_patterns("out", ".agent-etl", "__pycache__"))
    return dest
