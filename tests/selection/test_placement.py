"""Limits and tags in selection: a branch goes only to agents with every tag its steps ask for (none
has them: an error at plan time naming the tags and the agents), and not to an agent whose
memory_mb is below what the branch's data takes in memory (the memory rule); the reasons say whom
they left out, in `plan` and `runs show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_etl.agents.memory_selector import MemorySelector
from agent_etl.agents.selector import OVERHEAD_MB, ROW_BYTES, AgentInfo, CapabilitySelector, memory_need, row_bytes
from agent_etl.exceptions import SpecError
from agent_etl.memory.descriptor import TaskDescriptor
from agent_etl.spec import Task
from tests.cli.conftest import cli
from tests.memory.conftest import write_pipeline

ALL = frozenset({"extract", "transform", "load"})


def test_the_memory_rule():
    assert row_bytes((("id", "int64"), ("amount", "double"), ("ok", "bool"), ("name", "string"),
                      ("at", "timestamp[us, tz=UTC]"), ("price", "decimal128(10, 2)"))) == 8 + 8 + 1 + 32 + 8 + 16
    assert row_bytes(()) == ROW_BYTES
    extract, load = Task("src", "extract", "csv", [], {}), Task("out", "load", "parquet", ["src"], {})
    mb = 1 << 20
    csv = TaskDescriptor("extract", "csv", ("csv",), ("parquet",), bytes=100 * mb)
    parquet = TaskDescriptor("extract", "parquet", ("parquet",), ("parquet",), bytes=100 * mb)
    counted = TaskDescriptor("extract", "postgres", ("postgres",), ("parquet",), rows=1_000_000,
                             schema=(("id", "int64"), ("name", "string")))
    assert memory_need([extract, load], {"src": csv}) == OVERHEAD_MB + 100  # a text file: its size
    assert memory_need([extract, load], {"src": parquet}) == OVERHEAD_MB + 400  # compressed columns: 4x
    assert memory_need([extract, load], {"src": counted}) == OVERHEAD_MB + round(40_000_000 / mb)  # rows x width
    assert memory_need([extract, load], {"src": TaskDescriptor("extract", "postgres")}) is None  # size unknown
    assert memory_need([load], {"out": csv}) is None  # a load's own descriptor is not a source
    two = Task("more", "extract", "csv", [], {})
    assert memory_need([extract, two, load], {"src": csv, "more": csv}) == OVERHEAD_MB + 200  # every source


def branch(tags: list[str] | None = None) -> tuple[list[Task], dict[str, TaskDescriptor]]:
    tasks = [Task("src", "extract", "csv", [], {}, tags=tags or []),
             Task("out", "load", "parquet", ["src"], {}, tags=[])]
    d = TaskDescriptor("extract", "csv", ("csv",), ("parquet",), bytes=2000 << 20)  # ~2 GB of CSV
    return tasks, {"src": d, "out": TaskDescriptor("load", "parquet", ("csv",), ("parquet",))}


@pytest.mark.parametrize("selector", [MemorySelector(seed=1), CapabilitySelector()], ids=["memory", "capabilities"])
async def test_tags_and_memory_narrow_the_candidates(selector):
    fleet = [AgentInfo("small", capabilities=ALL, limits={"memory_mb": 1024}, tags=frozenset({"eu-west"})),
             AgentInfo("big", capabilities=ALL, limits={"memory_mb": 65536}, tags=frozenset({"eu-west", "gpu"})),
             AgentInfo("us", capabilities=ALL, tags=frozenset({"us-east"}), load=0)]
    tasks, descriptors = branch(["eu-west"])
    for _ in range(5):
        chosen = await selector.select(tasks, fleet, descriptors)
        assert {c.agent for c in chosen.values()} == {"big"}
        reason = chosen["src"].reason
        assert "us not tagged eu-west" in reason and "small (memory_mb 1,024) short of the ~2,064 MB" in reason, reason
    tasks, descriptors = branch([])
    chosen = await selector.select(tasks, fleet, descriptors)
    assert {c.agent for c in chosen.values()} <= {"big", "us"}  # untagged: any agent with the memory
    assert "not tagged" not in chosen["src"].reason and "small (memory_mb" in chosen["src"].reason

    tasks, descriptors = branch(["gpu", "eu-central"])
    with pytest.raises(SpecError) as e:
        await selector.select(tasks, fleet, descriptors)
    message = str(e.value)
    assert "extract 'src' asks for an agent tagged eu-central, gpu" in message
    assert "small (eu-west), big (eu-west, gpu), us (us-east)" in message


async def test_with_no_agent_big_enough_the_biggest_runs_it():
    fleet = [AgentInfo("a", capabilities=ALL, limits={"memory_mb": 512}),
             AgentInfo("b", capabilities=ALL, limits={"memory_mb": 1024})]
    tasks, descriptors = branch()
    chosen = await MemorySelector(seed=1).select(tasks, fleet, descriptors)
    assert {c.agent for c in chosen.values()} == {"b"}
    assert "the branch needs ~2,064 MB, more than any agent's memory_mb: b has the most (1,024 MB)" in chosen["src"].reason


FLEET = """\
agents:
  - name: small
    capabilities: [extract, transform, load]
    limits: {memory_mb: 16}
    tags: [eu-west]
  - name: big
    capabilities: [extract, transform, load]
    limits: {memory_mb: 8192}
    tags: [eu-west]
"""

PIPELINE = """\
version: 1
name: {name}
extract:
  orders: {{tool: csv, path: orders.csv, tags: [eu-west]}}
transform:
  - {{name: paid, input: orders, tool: filter, where: "status = 'paid'"}}
load:
  lake: {{input: paid, tool: parquet, path: out/paid.parquet}}
"""
ENV = {"AGENT_ETL_MEMORY": "numpy"}


def test_plan_and_a_run_with_a_fleet_file_place_by_tags_and_memory(tmp_path: Path):
    folder = tmp_path / "p"
    write_pipeline(folder, text=PIPELINE)
    (folder / "configs").mkdir()
    (folder / "configs" / "agents.yaml").write_text(FLEET)

    r = cli("plan", "pipeline.yaml", cwd=folder, env=ENV)
    assert r.returncode == 0, r.stderr
    # the built-in agent has no tags, small has too little memory for the branch (64 MB and more)
    assert "agent big: only agent able to run the whole branch; left out: default not tagged eu-west; " \
           "small (memory_mb 16) short of the ~64 MB the branch needs" in r.stdout, r.stdout

    r = cli("run", "pipeline.yaml", "--json", cwd=folder, env=ENV)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert {t["agent"] for t in result["tasks"]} == {"big"}
    shown = json.loads(cli("runs", "show", result["run_id"], "--json", cwd=folder, env=ENV).stdout)
    assert all("left out: default not tagged eu-west" in t["reason"] for t in shown["tasks"]), shown["tasks"]
    text = cli("runs", "show", result["run_id"], cwd=folder, env=ENV).stdout
    assert "small (memory_mb 16) short of" in text, text

    (folder / "pipeline.yaml").write_text(PIPELINE.replace("tags: [eu-west]", "tags: [eu-west, gpu]")
                                          .format(name="orders_to_lake"))
    for command in ("plan", "run"):
        r = cli(command, "pipeline.yaml", cwd=folder, env=ENV)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "extract 'orders' asks for an agent tagged eu-west, gpu" in r.stderr, r.stderr
        assert "(agents: small (eu-west), big (eu-west), default (no tags))" in r.stderr, r.stderr


async def test_tags_then_memory_with_no_tagged_agent_big_enough():
    fleet = [AgentInfo("eu-small", capabilities=ALL, limits={"memory_mb": 512}, tags=frozenset({"eu-west"})),
             AgentInfo("eu-less", capabilities=ALL, limits={"memory_mb": 256}, tags=frozenset({"eu-west"})),
             AgentInfo("us-big", capabilities=ALL, tags=frozenset({"us-east"}))]  # no limit, but not tagged
    tasks, descriptors = branch(["eu-west"])
    chosen = await CapabilitySelector().select(tasks, fleet, descriptors)
    assert {c.agent for c in chosen.values()} == {"eu-small"}
    assert chosen["src"].reason.endswith("left out: us-big not tagged eu-west; the branch needs ~2,064 MB, more than "
                                         "any agent's memory_mb: eu-small has the most (512 MB)"), chosen["src"].reason


@pytest.mark.services("nats")
def test_tags_no_agent_here_has_fail_in_process_and_go_to_the_workers_over_a_broker(tmp_path: Path):
    import asyncio
    import uuid

    from agent_etl.bus import open_bus

    folder = tmp_path / "p"
    write_pipeline(folder, text=PIPELINE)  # orders asks for eu-west; no fleet file: the built-in agent only
    for command in ("plan", "run"):
        r = cli(command, "pipeline.yaml", cwd=folder, env=ENV)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "extract 'orders' asks for an agent tagged eu-west; no agent here has tags" in r.stderr, r.stderr
        assert "agent-etl worker --tags eu-west" in r.stderr, r.stderr
    assert not (folder / "out").exists()
    url = f"nats://127.0.0.1:4222?namespace=test-{uuid.uuid4().hex[:10]}"
    try:
        r = cli("plan", "pipeline.yaml", "--bus", url, cwd=folder, env=ENV)
        assert r.returncode == 0, r.stderr
        assert "placement: the first worker with room takes its branch, on a worker tagged eu-west" in r.stdout
    finally:
        asyncio.run(open_bus(url).destroy())
