"""A task that makes no progress for defaults.stall_timeout raises TaskStalled; the coordinator
stops that attempt and the retry finishes the run; the stall is in the run's events and alerts."""

from __future__ import annotations

import asyncio

import pyarrow as pa

from agent_etl import AgentCoordinator
from agent_etl.events import TaskStalled
from agent_etl.tools.base import Extractor, ToolConfig


class Sticky(Extractor):
    """Sends one batch, then on its first attempt waits for ever (a read that hangs)."""

    class Config(ToolConfig):
        rows: int = 6

    attempts: dict[str, int] = {}

    async def batches(self):
        key = f"{self.ctx.run_id}/{self.ctx.task}"
        seen = Sticky.attempts[key] = Sticky.attempts.get(key, 0) + 1
        yield pa.record_batch({"id": pa.array(range(3), pa.int64())})
        if seen == 1:
            await asyncio.Event().wait()
        yield pa.record_batch({"id": pa.array(range(3, self.config.rows), pa.int64())})


SPEC = """
version: 1
name: sticky
defaults:
  stall_timeout: 0.3
  retries: {max_attempts: 2, initial_delay: 0}
extract:
  slow: {tool: sticky}
load:
  out: {input: slow, tool: collect, key: sticky}
"""


async def test_a_stalled_task_is_stopped_and_retried(make_pipeline, registry, tmp_path, sinks):
    registry.register("extractor", "sticky", Sticky)
    stalls = []
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        await c.bus.listen(TaskStalled, stalls.append)
        result = await c.run(make_pipeline(SPEC))
        events = c.store.events.read(result.run_id)
    assert result.ok, result.error
    assert Sticky.attempts[f"{result.run_id}/slow"] == 2
    assert sum(b.num_rows for b in sinks["sticky"]) == 6
    assert [(s.task, s.attempt) for s in stalls] == [("slow", 1)]  # the load waiting on it is not stalled
    topics = [(e["topic"], e["task"]) for e in events]
    assert ("task.stalled", "slow") in topics
    failed = [e["data"] for e in events if e["topic"] == "task.failed"]
    assert {(f["task"], f["error_type"], f["transient"]) for f in failed} == {("slow", "Stalled", True),
                                                                             ("out", "Stalled", True)}
    assert result.tasks["slow"].attempts == 2


async def test_no_stall_timeout_no_stall(make_pipeline, registry, tmp_path):
    registry.register("extractor", "sticky", Sticky)
    text = SPEC.replace("  stall_timeout: 0.3\n", "")
    stalls = []
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        await c.bus.listen(TaskStalled, stalls.append)
        run = asyncio.ensure_future(c.run(make_pipeline(text)))
        for _ in range(100):
            await asyncio.sleep(0.01)
        assert not run.done() and stalls == []
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


HANG = '''
import asyncio

calls = 0


async def hold(table):
    global calls
    calls += 1
    if calls == 1:  # the first attempt hangs for ever; its retry goes through
        await asyncio.Event().wait()
    return table
'''


def test_cli_says_a_task_stalled_and_the_retry_finishes(gated):
    import json
    import os
    import subprocess
    import sys

    (gated / "gate.py").write_text(HANG)
    (gated / "pipeline.yaml").write_text((gated / "pipeline.yaml").read_text().replace(
        "defaults: {batch_size: 50}",
        "defaults: {batch_size: 50, stall_timeout: 0.5, retries: {max_attempts: 2, initial_delay: 0}}"))
    agent_etl = os.path.join(os.path.dirname(sys.executable), "agent-etl")
    env = {**os.environ, "AGENT_ETL_HOME": str(gated / ".agent-etl"), "AGENT_ETL_MEMORY": "off"}
    r = subprocess.run([agent_etl, "run", "pipeline.yaml"], cwd=gated, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stalled   held: no progress for" in r.stdout
    # the run succeeds, so the end says nothing of the first attempt's error: its line does
    assert "failed    held: task 'held' made no progress" in r.stdout and "(transient)" in r.stdout
    assert "started   held (etl" in r.stdout and ", attempt 2)" in r.stdout
    runs = json.loads(subprocess.run([agent_etl, "runs", "list", "--json"], cwd=gated, env=env, capture_output=True,
                                     text=True, timeout=60).stdout)
    events = subprocess.run([agent_etl, "events", runs[0]["run_id"]], cwd=gated, env=env, capture_output=True,
                            text=True, timeout=60).stdout
    assert "task.stalled     held" in events and "failed (transient): task 'held' made no progress" in events
