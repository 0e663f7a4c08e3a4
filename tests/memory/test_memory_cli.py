"""``agent-etl memory search | list | forget | reset``, through the command line."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import cli
from tests.memory.conftest import write_pipeline

CHROMA = {"AGENT_ETL_MEMORY": "chroma"}


def _runs(folder: Path, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        r = cli("run", "pipeline.yaml", "--json", cwd=folder, env=CHROMA)
        assert r.returncode == 0, r.stderr
        ids.append(json.loads(r.stdout)["run_id"])
    return ids


def test_list_search_forget_reset(tmp_path: Path):
    folder = tmp_path / "p"
    write_pipeline(folder)
    first, second = _runs(folder, 2)

    r = cli("memory", "list", "--json", cwd=folder, env=CHROMA)
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert len(listed) == 6 and {e["id"] for e in listed} >= {f"{first}/lake", f"{second}/orders"}
    assert listed[0]["created_at"] >= listed[-1]["created_at"]
    assert len(json.loads(cli("memory", "list", "--limit", "2", "--json", cwd=folder, env=CHROMA).stdout)) == 2
    text = cli("memory", "list", cwd=folder, env=CHROMA).stdout
    assert f"{second}/lake" in text and "load parquet: csv -> filter -> parquet" in text
    head, row = text.splitlines()[:2]  # the header names the time column, over its values
    assert head.index("stored") == row.index(dt.datetime.fromtimestamp(listed[0]["created_at"]).strftime("%Y-%m-%d"))
    assert row[head.index("descriptor"):].startswith(("load ", "transform ", "extract "))

    r = cli("memory", "search", "parquet load", "-k", "2", "--json", cwd=folder, env=CHROMA)
    hits = json.loads(r.stdout)
    assert [h["task"] for h in hits] == ["lake", "lake"] and hits[0]["distance"] <= hits[1]["distance"]

    r = cli("memory", "search", "--like", "pipeline.yaml", "-k", "1", "--json", cwd=folder, env=CHROMA)
    like = json.loads(r.stdout)
    assert {task: hits[0]["task"] for task, hits in like.items()} == {"orders": "orders", "paid": "paid",
                                                                        "lake": "lake"}
    assert "paid:" in cli("memory", "search", "--like", "pipeline.yaml", cwd=folder, env=CHROMA).stdout

    r = cli("memory", "forget", f"{first}/lake", cwd=folder, env=CHROMA)
    assert r.returncode == 0 and "forgot 1 experience" in r.stdout
    r = cli("memory", "forget", second, cwd=folder, env=CHROMA)
    assert r.returncode == 0 and "forgot 3 experiences" in r.stdout
    r = cli("memory", "forget", "no-such-run", cwd=folder, env=CHROMA)
    assert r.returncode == 1 and "memory list" in r.stderr and "Traceback" not in r.stderr
    assert {e["id"] for e in json.loads(cli("memory", "list", "--json", cwd=folder, env=CHROMA).stdout)} == {
        f"{first}/orders", f"{first}/paid"}

    r = subprocess.run([*_agent_etl(), "memory", "reset"], input="n\n", capture_output=True, text=True,
                       cwd=folder, env=_env(folder))
    assert r.returncode == 1 and "nothing deleted" in r.stdout
    assert len(json.loads(cli("memory", "list", "--json", cwd=folder, env=CHROMA).stdout)) == 2
    r = cli("memory", "reset", "--yes", cwd=folder, env=CHROMA)
    assert r.returncode == 0 and "memory reset" in r.stdout
    assert "no experiences stored yet" in cli("memory", "list", cwd=folder, env=CHROMA).stdout
    assert (folder / ".agent-etl" / "runs.db").exists()  # the run store stays


def test_usage_and_state_errors_are_one_line(tmp_path: Path):
    folder = tmp_path / "p"
    write_pipeline(folder)
    assert "no experiences stored yet" in cli("memory", "search", "csv", cwd=folder, env=CHROMA).stdout
    r = cli("memory", "search", cwd=folder, env=CHROMA)
    assert r.returncode == 2 and "--like" in r.stderr
    r = cli("memory", "list", cwd=folder, env={"AGENT_ETL_MEMORY": "numpy"})
    assert r.returncode == 1 and "AGENT_ETL_MEMORY is numpy" in r.stderr
    _runs(folder, 1)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from agent_etl.memory import open_memory; m = open_memory('chroma', sys.argv[1]); "
        "print('open', flush=True); sys.stdin.read(); m.close()"), str(folder / ".agent-etl")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        for args in (["list"], ["reset", "--yes"]):
            r = cli("memory", *args, cwd=folder, env=CHROMA)
            assert r.returncode == 1 and "Traceback" not in r.stderr
            assert r.stderr.strip() == (f"error: memory folder {folder / '.agent-etl' / 'memory'} is in use by process "
                                        f"{holder.pid}; one process at a time can open it (wait for it to end, or use "
                                        "another AGENT_ETL_HOME)")
    finally:
        holder.communicate("", timeout=60)


def test_a_corrupt_memory_folder_stops_a_run_and_no_memory_runs_it(tmp_path: Path):
    folder = tmp_path / "p"
    write_pipeline(folder)
    chroma = folder / ".agent-etl" / "memory" / "chroma"
    chroma.mkdir(parents=True)
    (chroma / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    r = cli("run", "pipeline.yaml", cwd=folder, env=CHROMA)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "cannot be opened" in r.stderr and "`agent-etl memory reset` clears it" in r.stderr
    assert "--no-memory" in r.stderr
    assert not (folder / "out" / "paid.parquet").exists()  # stopped before anything ran

    r = cli("run", "pipeline.yaml", "--no-memory", "--json", cwd=folder, env=CHROMA)
    assert r.returncode == 0, r.stderr
    run_id = json.loads(r.stdout)["run_id"]
    assert (folder / "out" / "paid.parquet").exists() and "memory" not in r.stderr.lower()
    assert (chroma / "chroma.sqlite3").read_bytes() == b"this is not a database" * 100  # left as it was
    r = cli("plan", "pipeline.yaml", "--no-memory", cwd=folder, env=CHROMA)
    assert r.returncode == 0 and "memory" not in r.stderr.lower(), r.stderr
    r = cli("resume", run_id, cwd=folder, env=CHROMA)
    assert r.returncode == 1 and "cannot be opened" in r.stderr and "--no-memory" in r.stderr
    r = cli("resume", run_id, "--no-memory", cwd=folder, env=CHROMA)
    assert "cannot be opened" not in r.stderr and "Traceback" not in r.stderr

    r = cli("memory", "reset", "--yes", cwd=folder, env=CHROMA)
    assert r.returncode == 0, r.stderr
    r = cli("run", "pipeline.yaml", cwd=folder, env=CHROMA)
    assert r.returncode == 0, r.stderr


def _agent_etl() -> list[str]:
    from tests.cli.conftest import AGENT_ETL

    return [AGENT_ETL]


def _env(folder: Path) -> dict[str, str]:
    import os

    return {**os.environ, "AGENT_ETL_HOME": str(folder / ".agent-etl"), **CHROMA}
