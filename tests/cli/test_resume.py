"""Resume after a failure, through the CLI as a user would: a run killed with SIGKILL at random
moments, a failed run, and the refusals (unknown run, changed spec, a second run at once)."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cli.conftest import AGENT_ETL, wait_running

ROWS = 20_000
SPEC = """\
version: 1
name: crash_demo
defaults: {batch_size: 1000}
extract:
  orders: {tool: csv, path: data/orders.csv}
transform:
  - {name: slowed, input: orders, tool: python, function: "slow:slow"}
load:
  lake: {input: slowed, tool: parquet, path: out/orders.parquet}
  copy: {input: slowed, tool: csv, path: out/orders.csv}
"""
SLOW = """\
import os, time

def slow(batch):
    time.sleep(float(os.environ.get("SLOW", "0")))
    while os.environ.get("HOLD") and os.path.exists(os.environ["HOLD"]):  # held until the test lets go
        time.sleep(0.02)
    if os.environ.get("BOOM") and batch.column("id")[0].as_py() >= int(os.environ["BOOM"]):
        raise RuntimeError("boom")
    return batch
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / "orders.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "amount", "note"])
        for i in range(ROWS):
            w.writerow([i, (i * 7) % 101, f"n{i % 13}"])
    (tmp_path / "p.yaml").write_text(SPEC)
    (tmp_path / "slow.py").write_text(SLOW)
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


def env(project: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "AGENT_ETL_HOME"}
    return {**e, "PYTHONPATH": str(project), **extra}


def agent_etl(project: Path, *args: str, cwd: Path | None = None, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([AGENT_ETL, *args], cwd=cwd or project / "elsewhere", env=env(project, **extra),
                          capture_output=True, text=True, timeout=120)


def held(project: Path) -> Path:
    """A file that holds every batch of a run given ``HOLD=<it>`` until it is removed: the run is
    still going whatever the machine's load, however long the other process takes to start."""
    hold = project / "hold"
    hold.touch()
    return hold


def opened(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux: its /proc fd links)."""
    try:
        return any(os.path.realpath(fd) == str(path.resolve()) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # gone, or an fd closed while looked at
        return False


def runs(project: Path) -> list[dict]:
    out = agent_etl(project, "runs", "list", "--json", AGENT_ETL_HOME=str(project / ".agent-etl"))
    return json.loads(out.stdout)


def outputs(project: Path) -> tuple:
    lake = pq.read_table(project / "out" / "orders.parquet").sort_by("id")
    copy = (project / "out" / "orders.csv").read_text().splitlines()
    return lake.num_rows, lake.column("id").to_pylist() == list(range(ROWS)), lake.to_pydict(), sorted(copy)


def test_state_lives_next_to_the_pipeline_file(project):
    first = agent_etl(project, "run", "../p.yaml", cwd=project / "elsewhere")
    second = agent_etl(project, "run", "p.yaml", cwd=project)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert (project / ".agent-etl" / "runs.db").exists()
    assert not (project / "elsewhere" / ".agent-etl").exists()
    assert len(runs(project)) == 2


def test_killed_runs_resume_to_exactly_a_clean_run(project):
    clean = agent_etl(project, "run", "../p.yaml", "-q")
    assert clean.returncode == 0, clean.stderr
    expected = outputs(project)
    rng = random.Random(12)
    for point in range(6):  # kill points: the process dies at a random moment of the run
        proc = subprocess.Popen([AGENT_ETL, "run", "p.yaml", "-q"], cwd=project, env=env(project, SLOW="0.03"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.6, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        latest = runs(project)[0]
        assert latest["status"] in ("crashed", "succeeded"), latest
        resumed = agent_etl(project, "run", "--resume", "../p.yaml")
        if latest["status"] == "succeeded":  # it finished before the kill
            assert resumed.returncode == 2 and "no unfinished run" in resumed.stderr
        else:
            assert resumed.returncode == 0, resumed.stderr
            assert runs(project)[0]["run_id"] == latest["run_id"] and runs(project)[0]["status"] == "succeeded"
        assert outputs(project) == expected, f"kill point {point}"
        assert not [p.name for p in (project / "out").iterdir() if p.name.startswith(".") and "tmp-" in p.name]


def test_a_failed_run_prints_its_resume_command_and_resumes(project):
    failed = agent_etl(project, "run", "../p.yaml", BOOM="12000")
    assert failed.returncode == 1
    assert "resume with: agent-etl resume " in failed.stderr
    assert not (project / "out" / "orders.parquet").exists()  # neither destination committed
    command = failed.stderr.split("resume with: ")[1].split()
    resumed = agent_etl(project, *command[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert pq.read_table(project / "out" / "orders.parquet").num_rows == ROWS
    again = agent_etl(project, *command[1:])
    assert again.returncode == 0 and "already succeeded; nothing to do" in again.stdout


def test_resume_refusals(project):
    missing = agent_etl(project, "resume", "nosuchrun", "--home", str(project / ".agent-etl"))
    assert missing.returncode == 2 and "no run 'nosuchrun'" in missing.stderr
    failed = agent_etl(project, "run", "../p.yaml", BOOM="5000")
    assert failed.returncode == 1
    (project / "p.yaml").write_text(SPEC.replace("batch_size: 1000", "batch_size: 500").replace(
        "out/orders.csv", "out/other.csv"))
    changed = agent_etl(project, "run", "--resume", "../p.yaml")
    assert changed.returncode == 2
    assert "defaults.batch_size changed" in changed.stderr and "load.copy changed" in changed.stderr
    forced = agent_etl(project, "run", "--resume", "--force", "../p.yaml")
    assert forced.returncode == 0, forced.stderr
    assert (project / "out" / "other.csv").exists()


def test_a_second_run_of_the_same_pipeline_is_refused_while_one_runs(project):
    hold = held(project)
    first = subprocess.Popen([AGENT_ETL, "run", "p.yaml", "-q"], cwd=project, env=env(project, HOLD=str(hold)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (project / ".agent-etl" / "locks" / "crash_demo.lock").exists() or not (
                project / ".agent-etl" / "locks" / "crash_demo.lock").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = agent_etl(project, "run", "../p.yaml")
        assert second.returncode == 2 and "already running" in second.stderr
    finally:
        hold.unlink()
        assert first.wait(60) == 0


def test_sigterm_stops_a_run_that_then_resumes(project):
    proc = subprocess.Popen([AGENT_ETL, "run", "p.yaml", "-q"], cwd=project, env=env(project, SLOW="0.1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_running(project / ".agent-etl", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    (row,) = runs(project)
    assert row["status"] == "interrupted"
    assert not (project / "out" / "orders.parquet").exists()
    resumed = agent_etl(project, "resume", row["run_id"][:12], "--home", str(project / ".agent-etl"))
    assert resumed.returncode == 0, resumed.stderr
    assert pq.read_table(project / "out" / "orders.parquet").num_rows == ROWS


def test_two_resumes_of_one_run_at_once(project):
    failed = agent_etl(project, "run", "../p.yaml", BOOM="3000")
    assert failed.returncode == 1
    hold = held(project)
    first = subprocess.Popen([AGENT_ETL, "run", "--resume", "p.yaml", "-q"], cwd=project,
                             env=env(project, HOLD=str(hold)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_running(project / ".agent-etl", first)
        second = agent_etl(project, "run", "--resume", "../p.yaml")
        assert second.returncode == 2
        assert "is running" in second.stderr or "already running" in second.stderr, second.stderr
    finally:
        hold.unlink()
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert runs(project)[0]["status"] == "succeeded"


def test_concurrent_runs_wait_queues_the_second_run(project):
    (project / "p.yaml").write_text(SPEC.replace("defaults: {batch_size: 1000}",
                                                 "defaults: {batch_size: 1000, concurrent_runs: wait}"))
    hold = held(project)
    first = subprocess.Popen([AGENT_ETL, "run", "p.yaml", "-q"], cwd=project, env=env(project, HOLD=str(hold)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_running(project / ".agent-etl", first)
        second = subprocess.Popen([AGENT_ETL, "run", "../p.yaml"], cwd=project / "elsewhere", env=env(project),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lock = project / ".agent-etl" / "locks" / "crash_demo.lock"
        deadline = time.monotonic() + 60
        while not opened(second.pid, lock):  # the second waits on the lock the held first one holds
            assert time.monotonic() < deadline and second.poll() is None, second.communicate()
            time.sleep(0.02)
        hold.unlink()
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
    finally:
        hold.unlink(missing_ok=True)
        assert first.wait(60) == 0
    second_run, first_run = runs(project)  # newest first
    assert first_run["status"] == second_run["status"] == "succeeded"
    assert second_run["started_at"] >= first_run["finished_at"]  # it waited for the lock, then started
