"""`agent-etl events RUN_ID [--follow]` reads a run's events from the run store while another process
runs it; `runs list --status` filters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

AGENT_ETL = os.path.join(os.path.dirname(sys.executable), "agent-etl")


def cli(*args, cwd, **kw):
    env = {**os.environ, "AGENT_ETL_HOME": str(cwd / ".agent-etl"), "AGENT_ETL_MEMORY": "off"}
    return subprocess.run([AGENT_ETL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kw)


def popen(*args, cwd):
    env = {**os.environ, "AGENT_ETL_HOME": str(cwd / ".agent-etl"), "AGENT_ETL_MEMORY": "off"}
    return subprocess.Popen([AGENT_ETL, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_follow_a_run_in_another_process(gated):
    run = popen("run", "pipeline.yaml", "-q", cwd=gated)
    follower = None
    try:
        run_id = None
        for _ in range(600):  # until the run is recorded as running
            r = cli("runs", "list", "--status", "running", "--json", cwd=gated)
            rows = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else []
            if rows:
                run_id = rows[0]["run_id"]
                break
            assert run.poll() is None, run.communicate()
            time.sleep(0.1)
        assert run_id is not None
        follower = popen("events", run_id[:17], "--follow", cwd=gated)
        seen = []
        while not any(" task.completed " in line and " nums " in line for line in seen):
            line = follower.stdout.readline()
            assert line, (seen, follower.stderr.read())
            seen.append(line)
        assert run.poll() is None  # still held: what we saw came while it ran
        assert "run.started" in seen[0] and "pipeline gated: 3 tasks" in seen[0]
        (gated / "go").write_text("")
        rest, err = follower.communicate(timeout=120)
        assert follower.returncode == 0, err
        lines = seen + rest.splitlines()
        assert "run.finished" in lines[-1] and "succeeded" in lines[-1]
        assert any(" task.committed " in line and " out " in line for line in lines)
        assert run.wait(timeout=120) == 0
    finally:
        (gated / "go").write_text("")
        for p in (run, follower):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    as_json = cli("events", run_id, "--json", cwd=gated)
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    topics = [e["topic"] for e in events]
    assert topics[0] == "run.started" and topics[-1] == "run.finished"
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert topics.count("task.completed") == 3 and "description" not in events[0]["data"]
    assert "task.started" in topics and "agent.heartbeat" not in topics
    done = cli("runs", "list", "--status", "succeeded", "--json", cwd=gated)
    assert [r["run_id"] for r in json.loads(done.stdout)] == [run_id]
    none = cli("runs", "list", "--status", "failed", cwd=gated)
    assert none.returncode == 0 and none.stdout.strip() == "no runs match"


def test_events_of_an_unknown_run(gated):
    r = cli("events", "nosuchrun", cwd=gated)
    assert r.returncode == 2 and "no run 'nosuchrun'" in r.stderr and "Traceback" not in r.stderr
