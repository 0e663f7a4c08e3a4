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
