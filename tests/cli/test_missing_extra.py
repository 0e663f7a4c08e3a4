"""A new user's install: `pip install -e .` with no extra. Tools whose extra is missing are listed
with the install that adds them, and a pipeline that uses one stops with that one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Path:
    """A virtualenv with the project installed as the README says, without extras."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", str(ROOT)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import psycopg"], capture_output=True)
    assert probe.returncode != 0, "psycopg is importable without the postgres extra"
    return venv / "bin" / "agent-etl"


def test_tools_list_names_the_extra_of_tools_not_installed(bare: Path, tmp_path: Path):
    r = subprocess.run([str(bare), "tools", "list"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith("  ")}
    assert "pip install 'agent-etl[postgres]'" in lines["postgres"]
    assert "pip install 'agent-etl[mysql]'" in lines["mysql"]
    assert "not installed" not in lines["csv"] and "not installed" not in lines["sqlite"]


def test_a_pipeline_using_a_tool_without_its_extra_stops_with_one_line(bare: Path, tmp_path: Path):
    (tmp_path / "p.yaml").write_text("""\
version: 1
name: bare
connections:
  pg: {url: "postgresql://postgres@127.0.0.1:5432/test"}
extract:
  t: {tool: csv, path: a.csv}
load:
  out: {input: t, tool: postgres, connection: pg, table: t}
""")
    (tmp_path / "a.csv").write_text("a\n1\n")
    for command in ("run", "validate"):
        r = subprocess.run([str(bare), command, "p.yaml"], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 2, (command, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines() == [
            "error: p.yaml: line 8: tool 'postgres' needs the postgres extra: pip install 'agent-etl[postgres]'"]


def test_format_polars_without_the_polars_extra_is_one_line(bare: Path, tmp_path: Path):
    probe = subprocess.run([str(bare.parent / "python"), "-c", "import polars"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("polars is installed in the bare environment (a dependency brought it)")
    (tmp_path / "p.yaml").write_text("""\
version: 1
name: bare
extract:
  t: {tool: csv, path: a.csv}
transform:
  - {name: f, input: t, tool: python, function: "udf:f", format: polars}
load:
  out: {input: f, tool: csv, path: out.csv}
""")
    (tmp_path / "a.csv").write_text("a\n1\n")
    (tmp_path / "udf.py").write_text("def f(df):\n    return df\n")
    for command in ("validate", "run"):
        r = subprocess.run([str(bare), command, "p.yaml"], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 2, (command, r.stdout, r.stderr)
        assert r.stderr.strip().splitlines() == [
            "error: p.yaml: line 6: transform.0.format: format: polars needs the polars extra: "
            "pip install 'agent-etl[polars]'"], command
