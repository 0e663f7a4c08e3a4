"""A declared fleet through the command line: its agents run the tasks, every choice and its
reasons show in `plan` and `runs show`, and a bad fleet file is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import cli
from tests.memory.conftest import write_pipeline

FLEET = """\
default_agent: false
agents:
  - name: near-files
    capabilities: [extract:csv, transform, destination:parquet]
    limits: {concurrency: 2}
    tags: [local]
  - name: big
    capabilities: [extract, transform, load]
    limits: {concurrency: 8, memory_mb: 16384}
"""
ENV = {"AGENT_ETL_MEMORY": "chroma"}


def test_fleet_decisions_in_plan_and_runs_show(tmp_path: Path):
    folder = tmp_path / "p"
    write_pipeline(folder)
    (folder / "configs").mkdir()
    (folder / "configs" / "agents.yaml").write_text(FLEET)  # found in the working directory

    r = cli("plan", "pipeline.yaml", "--json", cwd=folder, env=ENV)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)["tasks"]
    assert "no experience of csv -> filter -> parquet" in first[0]["reason"]
    assert len({t["agent"] for t in first}) == 1  # the branch stays on one agent

    used = []
    for _ in range(6):  # each of the two agents runs the kind 3 times before the estimates decide
        r = cli("run", "pipeline.yaml", "--json", cwd=folder, env=ENV)
        assert r.returncode == 0, r.stderr
        result = json.loads(r.stdout)
        used.append(next(t["agent"] for t in result["tasks"] if t["name"] == "lake"))
    assert set(used) == {"near-files", "big"}  # every capable agent was tried, and the built-in one is gone

    r = cli("plan", "pipeline.yaml", "--json", cwd=folder, env=ENV)
    reason = json.loads(r.stdout)["tasks"][2]["reason"]
    assert "experience of csv -> filter -> parquet" in reason and "est. success" in reason, reason

    text = cli("plan", "pipeline.yaml", cwd=folder, env=ENV).stdout
    assert "agent " in text and "est. success" in text, text
    r = cli("run", "pipeline.yaml", "--json", cwd=folder, env=ENV)  # chosen from the estimates
    result = json.loads(r.stdout)
    agent = result["tasks"][0]["agent"]
    r = cli("runs", "show", result["run_id"], cwd=folder, env=ENV)
    assert r.returncode == 0, r.stderr
    assert f"agent {agent} (" in r.stdout and "experience of csv -> filter -> parquet" in r.stdout, r.stdout
    shown = json.loads(cli("runs", "show", result["run_id"], "--json", cwd=folder, env=ENV).stdout)
    assert all("experience of csv -> filter -> parquet" in t["reason"] and "est. success" in t["reason"]
               for t in shown["tasks"])


def test_a_fleet_file_with_an_unknown_capability_is_exit_2(tmp_path: Path):
    folder = tmp_path / "p"
    write_pipeline(folder)
    fleet = tmp_path / "agents.yaml"
    fleet.write_text("agents:\n  - name: x\n    capabilities: [extract, teleport]\n"
                     "  - name: y\n    capabilities: [load:nosuchtool]\n")
    r = cli("plan", "pipeline.yaml", cwd=folder, env={"AGENT_ETL_FLEET": str(fleet)})
    assert r.returncode == 2
    assert "line 3" in r.stderr and "unknown capability 'teleport'" in r.stderr
    assert "no loader named 'nosuchtool'" in r.stderr and "Traceback" not in r.stderr


def test_plan_without_memory_puts_a_branch_on_the_agent_a_run_does(tmp_path: Path):
    """With memory off the least busy capable agent is chosen per task; a run keeps a branch on its
    first task's agent, and plan said other agents for the transform and the load."""
    folder = tmp_path / "p"
    write_pipeline(folder)
    (folder / "configs").mkdir()
    (folder / "configs" / "agents.yaml").write_text(FLEET)
    planned = json.loads(cli("plan", "pipeline.yaml", "--json", "--no-memory", cwd=folder, env=ENV).stdout)["tasks"]
    ran = json.loads(cli("run", "pipeline.yaml", "--json", "--no-memory", cwd=folder, env=ENV).stdout)["tasks"]
    assert {t["task"]: t["agent"] for t in planned} == {t["name"]: t["agent"] for t in ran}
    assert len({t["agent"] for t in planned}) == 1
    # each task's reason is its own: a transform or load is not said to be there as "able to extract"
    for t in planned[1:]:
        assert "extract" not in t["reason"], planned
        assert t["reason"].startswith((f"least busy of 2 agents able to {t['kind']}",
                                       f"with its branch on the agent chosen for {planned[0]['task']}")), t
