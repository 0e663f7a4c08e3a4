import ast
import subprocess
import sys

import pytest

from tests.cli.conftest import AGENT_ETL


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


def test_pyarrow_allocator_takes_no_transparent_huge_pages_unless_the_user_says_so():
    import os

    code = "import agent_etl, pyarrow as pa; pa.array([1]); print(pa.default_memory_pool().backend_name)"
    for preset, want in [(None, "0"), ("1", "1")]:
        env = {k: v for k, v in os.environ.items() if k != "MIMALLOC_ALLOW_THP"}
        env["MIMALLOC_VERBOSE"] = "1"  # mimalloc prints every option it read at start
        if preset is not None:
            env["MIMALLOC_ALLOW_THP"] = preset
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        if r.stdout.strip() != "mimalloc":
            pytest.skip(f"pyarrow allocates with {r.stdout.strip()}, which has no such option")
        assert f"option 'allow_thp': {want}" in r.stderr, r.stderr[-2000:]


def _heavy_imported(args: list[str], cwd, env=None) -> list[str]:
    """The heavy modules an `agent-etl` command's process imported by the time it exits (exit 0 asserted)."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('IMPORTED', sorted(m for m in ('pandas', 'chromadb', 'sqlalchemy', 'ruamel', "
            "'psycopg') if m in sys.modules)))\n"
            f"sys.argv = ['agent-etl', *{args!r}]\n"
            "from agent_etl.cli.app import main\nmain()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return ast.literal_eval(r.stdout.rsplit("IMPORTED", 1)[1])


def test_validate_imports_neither_pandas_nor_chromadb_nor_ruamel(tmp_path):
    from pathlib import Path

    quickstart = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "pipeline.yaml"
    assert _heavy_imported(["validate", str(quickstart)], tmp_path) == []


def test_init_imports_neither_pandas_nor_chromadb_without_a_memory(tmp_path):
    import os
    from pathlib import Path

    orders = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "data" / "orders.csv"
    env = {**os.environ, "AGENT_ETL_HOME": str(tmp_path / "home")}  # a state folder without a memory
    for flags in ([], ["--no-memory"]):
        assert _heavy_imported(["init", str(orders), "--out", "p.yaml", "--force", *flags], tmp_path, env) == []
    assert (tmp_path / "p.yaml").is_file()
