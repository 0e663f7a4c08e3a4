"""Temporary folders and files of agent-etl in the temp directory (TMPDIR): a process killed while it
held one leaves it behind, and the next one of that kind removes it once it is a minute old; a
live process's, one of another pid namespace, and one changed within the minute are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tests.cli.conftest import AGENT_ETL, cli

from agent_etl.tempfiles import prefix, sweep

OLD = 120  # seconds: past the minute an entry of a dead process must have been left unchanged


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def namespace() -> str:
    return prefix("x").split("-")[4]  # agent-etl-x-<pid>-<host, boot and pid namespace>-


def entry(tmpdir: Path, kind: str, pid: int, *, ns: str | None = None, suffix: str = "", age: float = OLD,
          folder: bool = True) -> Path:
    p = tmpdir / f"agent-etl-{kind}-{pid}-{ns or namespace()}-{uuid.uuid4().hex[:8]}{suffix}"
    if folder:
        p.mkdir()
        (p / "0.arrow").write_bytes(b"x")
    else:
        p.write_bytes(b"x")
    os.utime(p, (time.time() - age, time.time() - age))
    return p


def spool_pipeline(tmp_path: Path, name: str, transform: str = "") -> None:
    (tmp_path / "rows.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(1, 50)))
    # two loads of one input commit together: the SQLite loads spool their rows until both are ready
    (tmp_path / f"{name}.yaml").write_text(f"""
version: 1
name: {name}
connections:
  a: {{url: "sqlite:///a.db"}}
  b: {{url: "sqlite:///b.db"}}
extract:
  rows: {{tool: csv, path: rows.csv}}
{transform}
load:
  to_a: {{input: {'slow' if transform else 'rows'}, tool: sqlite, connection: a, table: t}}
  to_b: {{input: {'slow' if transform else 'rows'}, tool: sqlite, connection: b, table: t}}
""")


def spools(tmpdir: Path) -> list[Path]:
    return sorted(tmpdir.glob("agent-etl-spool-*"))


def test_a_killed_runs_spool_is_removed_by_the_next_spool(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    (tmp_path / "stall.py").write_text("import time\n\ndef stall(t):\n    time.sleep(3600)\n    return t\n")
    spool_pipeline(tmp_path, "stalled", "transform:\n  - {name: slow, input: rows, tool: python, "
                                        "function: 'stall:stall'}")
    spool_pipeline(tmp_path, "quick")

    run = subprocess.Popen([AGENT_ETL, "run", "stalled.yaml"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**os.environ, "AGENT_ETL_HOME": str(tmp_path / ".agent-etl"),
                                                           **env})
    try:
        deadline = time.monotonic() + 120
        while len(spools(tmpdir)) < 2:  # each load's spool, made as it starts
            assert run.poll() is None and time.monotonic() < deadline, "the loads never spooled"
            time.sleep(0.02)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    left = spools(tmpdir)
    assert len(left) == 2 and all(p.name.startswith(f"agent-etl-spool-{run.pid}-{namespace()}-") for p in left)
    for p in left:
        os.utime(p, (time.time() - OLD, time.time() - OLD))
    recent = entry(tmpdir, "spool", run.pid, age=0)  # dead too, but changed within the minute
    live = entry(tmpdir, "spool", os.getpid())  # this test's process: alive
    elsewhere = entry(tmpdir, "spool", dead_pid(), ns="1")  # another pid namespace's (a container's)
    old_style = tmpdir / "agent-etl-spool-abcd1234"  # no pid in the name: whose it is is unknown
    old_style.mkdir()

    r = cli("run", "-q", "quick.yaml", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not any(p.exists() for p in left)
    assert spools(tmpdir) == sorted([recent, live, elsewhere, old_style])  # and the quick run's own went
    assert (live / "0.arrow").exists()


def test_sweep_leaves_what_is_not_a_dead_processes(tmp_path):
    dead = dead_pid()
    gone = [entry(tmp_path, "spool", dead), entry(tmp_path, "mysql", dead, suffix=".csv", folder=False)]
    kept = [entry(tmp_path, "spool", os.getpid()), entry(tmp_path, "spool", dead, age=0),
            entry(tmp_path, "spool", dead, ns="1"), entry(tmp_path, "other", dead)]
    link = tmp_path / f"agent-etl-spool-{dead}-{namespace()}-link0001"
    link.symlink_to(kept[0])
    os.utime(link, (time.time() - OLD, time.time() - OLD), follow_symlinks=False)
    assert sorted(sweep("spool", folder=str(tmp_path)) + sweep("mysql", folder=str(tmp_path))) == sorted(
        str(p) for p in gone)
    assert not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept) and link.is_symlink()
    assert (kept[0] / "0.arrow").exists()


def test_validate_connect_removes_a_killed_probes_folder(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    stale, live = entry(tmpdir, "connect", dead_pid()), entry(tmpdir, "connect", os.getpid())
    (tmp_path / "rows.csv").write_text("id\n1\n")
    (tmp_path / "p.yaml").write_text("version: 1\nname: p\nextract:\n  rows: {tool: csv, path: rows.csv}\n"
                                     "load:\n  out: {input: rows, tool: parquet, path: out/}\n")
    r = cli("validate", "p.yaml", "--connect", cwd=tmp_path, env={"TMPDIR": str(tmpdir)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert not stale.exists() and live.exists()
    assert sorted(tmpdir.iterdir()) == [live]  # the probe's own folder went with it


@pytest.mark.services("mariadb")
def test_a_mariadb_load_removes_a_killed_loads_batch_files(tmp_path):
    import pymysql

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    stale = entry(tmpdir, "mysql", dead_pid(), suffix=".csv", folder=False)
    live = entry(tmpdir, "mysql", os.getpid(), suffix=".csv", folder=False)
    db = f"tmpsweep_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"create database {db}")
        (tmp_path / "rows.csv").write_text("id\n1\n2\n")
        (tmp_path / "p.yaml").write_text(
            f"version: 1\nname: p\nconnections:\n  m: {{url: \"mysql://root@127.0.0.1:3306/{db}\"}}\n"
            "extract:\n  rows: {tool: csv, path: rows.csv}\n"
            "load:\n  out: {input: rows, tool: mysql, connection: m, table: t}\n")
        r = cli("run", "-q", "p.yaml", cwd=tmp_path, env={"TMPDIR": str(tmpdir)})
        assert r.returncode == 0, r.stdout + r.stderr
        with conn.cursor() as cur:
            cur.execute(f"select count(*) from {db}.t")
            assert cur.fetchone() == (2,)
        assert not stale.exists() and live.exists()
        assert sorted(tmpdir.iterdir()) == [live]  # the load's own batch files went as they were loaded
    finally:
        with conn.cursor() as cur:
            cur.execute(f"drop database if exists {db}")
        conn.close()


def test_a_sql_transform_removes_a_killed_ones_folder_in_the_state_folder(tmp_path):
    """The sql transform's spooled inputs and DuckDB's spills go to the state folder's tmp/."""
    state_tmp = tmp_path / ".agent-etl" / "tmp"
    state_tmp.mkdir(parents=True)
    stale, live = entry(state_tmp, "duckdb", dead_pid()), entry(state_tmp, "duckdb", os.getpid())
    (tmp_path / "a.csv").write_text("id\n1\n2\n")
    (tmp_path / "b.csv").write_text("id\n2\n3\n")
    (tmp_path / "p.yaml").write_text("""
version: 1
name: p
extract:
  a: {tool: csv, path: a.csv}
  b: {tool: csv, path: b.csv}
transform:
  - {name: both, input: [a, b], tool: sql, query: "select a.id from a join b using (id)"}
load:
  out: {input: both, tool: parquet, path: out/}
""")
    r = cli("run", "-q", "p.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not stale.exists() and live.exists()
    assert sorted(state_tmp.iterdir()) == [live]  # the run's own went with it
