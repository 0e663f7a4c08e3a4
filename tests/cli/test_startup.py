import subprocess
import sys

from conftest import AGENT_ETL


def test_help_imports_no_heavy_module():
    code = ("import sys; from typer.testing import CliRunner; from agent_etl.cli.app import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('pandas', 'duckdb', 'sqlalchemy', 'pyarrow', 'chromadb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_and_version(tmp_path):
    r = subprocess.run([AGENT_ETL, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "run" in r.stdout and "validate" in r.stdout and "plan" in r.stdout
    r = subprocess.run([AGENT_ETL, "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("agent-etl ")
    r = subprocess.run([AGENT_ETL, "frobnicate"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
