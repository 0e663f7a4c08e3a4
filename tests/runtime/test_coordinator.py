import asyncio

import pyarrow as pa

from agent_etl import AgentCoordinator
from agent_etl.exceptions import ToolError
from agent_etl.store.runs import RunStore
from agent_etl.tools.base import Extractor, ToolConfig

BASIC = """
version: 1
name: basic
defaults: {batch_size: 4, retries: {max_attempts: 3, initial_delay: 0}}
extract:
  nums: {tool: numbers, rows: 10, batch: 3}
transform:
  - {name: doubled, input: nums, tool: double}
load:
  a: {input: doubled, tool: collect, key: a}
  b: {input: nums, tool: collect, key: b}
"""


async def test_run_streams_through_the_dag_and_records_it(make_pipeline, registry, sinks, tmp_path):
    async with AgentCoordinator(registry=registry, home=tmp_path / ".agent-etl") as c:
        result = await c.run(make_pipeline(BASIC))
    assert result.ok, result
    assert result.status == "succeeded"
    a = pa.Table.from_batches(sinks["a"]).column("id").to_pylist()
    b = pa.Table.from_batches(sinks["b"]).column("id").to_pylist()
    assert a == [2 * i for i in range(10)] and b == list(range(10))
    assert result.tasks["nums"].rows == 10 and result.tasks["nums"].batches == 4
    assert result.rows_loaded == 20
    store = RunStore.at(tmp_path / ".agent-etl")
    rec = store.get_run(result.run_id)
    assert rec.run["status"] == "succeeded" and rec.run["rows_loaded"] == 20
    assert {t["task"]: t["status"] for t in rec.tasks} == {"nums": "succeeded", "doubled": "succeeded",
                                                          "a": "succeeded", "b": "succeeded"}
    assert all(t["agent"] and t["reason"] for t in rec.tasks)
    cps = store.checkpoints("basic")
    assert {c["task"] for c in cps} == {"a", "b"}
    assert all(c["position"] == {"nums": {"batches": 4, "end": True}} for c in cps)  # read to its end


async def test_failure_stops_dependants_but_not_siblings(make_pipeline, registry, sinks, tmp_path):
    text = BASIC.replace("a: {input: doubled, tool: collect, key: a}", "a: {input: doubled, tool: collect, key: a, fail: true}")
    result = await AgentCoordinator(registry=registry, home=tmp_path).run(make_pipeline(text))
    assert result.exit_code == 1 and result.status == "failed"
    assert result.tasks["a"].status == "failed" and "destination refused" in result.error
    assert result.tasks["b"].status == "succeeded" and "a" not in sinks and len(sinks["b"]) == 4


async def test_extract_failure_stops_everything_downstream(make_pipeline, registry, sinks, tmp_path):
    text = BASIC.replace("rows: 10, batch: 3}", "rows: 10, batch: 3, fail_after: 2}")
    result = await AgentCoordinator(registry=registry, home=tmp_path).run(make_pipeline(text))
    assert result.exit_code == 1
    assert result.tasks["nums"].status == "failed"
    assert {result.tasks[n].status for n in ("doubled", "a", "b")} == {"upstream_failed"}
    assert sinks == {}


async def test_transient_failure_is_retried(make_pipeline, registry, sinks, tmp_path):
    text = BASIC.replace("rows: 10, batch: 3}", "rows: 10, batch: 3, transient_failures: 2}")
    result = await AgentCoordinator(registry=registry, home=tmp_path).run(make_pipeline(text))
    assert result.ok, result
    assert result.tasks["nums"].attempts == 3
    assert len(sinks["a"]) == 4


async def test_transient_failure_gives_up_after_max_attempts(make_pipeline, registry, sinks, tmp_path):
    text = BASIC.replace("rows: 10, batch: 3}", "rows: 10, batch: 3, transient_failures: 5}")
    result = await AgentCoordinator(registry=registry, home=tmp_path).run(make_pipeline(text))
    assert result.exit_code == 1 and result.tasks["nums"].attempts == 3


class Rendezvous(Extractor):
    """Yields one batch only once every extract named in ``others`` has started: two of them in
    independent branches finish only if the branches run at the same time. Waiting is bounded: run
    one after the other, the first fails (a ToolError) instead of hanging."""

    class Config(ToolConfig):
        others: list[str]
        wait: float = 30.0

    started: dict[str, asyncio.Event] = {}

    def _event(self, name: str) -> asyncio.Event:
        return self.started.setdefault(f"{self.ctx.run_id}/{name}", asyncio.Event())

    async def batches(self):
        self._event(self.ctx.task).set()
        try:
            async with asyncio.timeout(self.config.wait):
                for other in self.config.others:
                    await self._event(other).wait()
        except TimeoutError:
            raise ToolError(f"{self.ctx.task}: {', '.join(self.config.others)} did not start while it ran") from None
        yield pa.record_batch({"id": pa.array([1], pa.int64())})


async def test_independent_branches_run_concurrently(make_pipeline, registry, sinks, tmp_path):
    registry.register("extractor", "rendezvous", Rendezvous)
    text = """
version: 1
name: two
defaults: {concurrency: 2}
extract:
  x: {tool: rendezvous, others: [y], wait: 10}
  y: {tool: rendezvous, others: [x], wait: 10}
load:
  lx: {input: x, tool: collect, key: x}
  ly: {input: y, tool: collect, key: y}
"""
    p = make_pipeline(text)
    assert len(p.branches()) == 2
    result = await AgentCoordinator(registry=registry, home=tmp_path).run(p)
    assert result.ok, result.error  # each extract saw the other start: the branches overlapped
    assert result.rows_loaded == 2


async def test_concurrency_1_runs_branches_one_at_a_time(make_pipeline, registry, sinks, tmp_path):
    registry.register("extractor", "rendezvous", Rendezvous)
    text = """
version: 1
name: one_at_a_time
defaults: {concurrency: 1}
extract:
  x: {tool: rendezvous, others: [y], wait: 0.5}
  y: {tool: rendezvous, others: [x], wait: 0.5}
load:
  lx: {input: x, tool: collect, key: x}
  ly: {input: y, tool: collect, key: y}
"""
    result = await AgentCoordinator(registry=registry, home=tmp_path).run(make_pipeline(text))
    # the first branch waits for the second, which cannot start before it ends: it times out
    assert result.exit_code == 1 and "did not start while it ran" in result.error


async def test_cancel_marks_run_interrupted(make_pipeline, registry, tmp_path):
    text = BASIC.replace("rows: 10, batch: 3}", "rows: 100000000, batch: 3}")
    c = AgentCoordinator(registry=registry, home=tmp_path)
    async with c:
        task = asyncio.create_task(c.run(make_pipeline(text)))
        await asyncio.sleep(0.2)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    runs = RunStore.at(tmp_path).list_runs()
    assert runs[0]["status"] == "interrupted" and runs[0]["exit_code"] == 130
