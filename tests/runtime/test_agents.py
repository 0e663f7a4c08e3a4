import asyncio

import agent_etl
from agent_etl import AgentCoordinator
from agent_etl.agents.etl import ETLAgent
from agent_etl.agents.monitor import MonitorAgent
from agent_etl.agents.quality import QualityAgent
from agent_etl.bus.memory import MemoryBus
from agent_etl.events import AgentStalled, Heartbeat

SPEC = """
version: 1
name: agents
extract:
  nums: {tool: numbers, rows: 10, batch: 4}
load:
  out: {input: nums, tool: collect, key: out}
"""


async def test_monitor_counts_rows_batches_and_durations(make_pipeline, registry, tmp_path):
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        result = await c.run(make_pipeline(SPEC))
        await c.bus.drain()
        stats = {s.task: s for s in c.monitor.stats(result.run_id)}
        assert stats["nums"].rows == 10 and stats["nums"].batches == 3 and stats["nums"].status == "succeeded"
        assert stats["out"].rows == 10 and stats["out"].duration > 0
        text = c.monitor.metrics_text()
        assert 'agent_etl_rows_total{pipeline="agents",stage="extract",task="nums"} 10.0' in text
        assert c.monitor.agents  # heartbeats were seen


async def test_monitor_reports_a_silent_busy_agent():
    bus = MemoryBus()
    monitor = MonitorAgent(bus, stall_timeout=0.1, heartbeat_interval=60)
    stalled = []

    async def on_stalled(ev):
        stalled.append(ev)

    await bus.subscribe(AgentStalled, on_stalled)
    async with monitor:
        await bus.publish(Heartbeat(agent="etl-x", kind="etl", running=["run/t"]))
        await asyncio.sleep(0.4)
    await bus.drain()
    assert [s.agent for s in stalled] == ["etl-x"] and stalled[0].running == ["run/t"]
    await bus.close()


async def test_several_etl_agents_share_the_work(make_pipeline, registry, tmp_path):
    text = """
version: 1
name: spread
extract:
  a: {tool: numbers, rows: 5}
  b: {tool: numbers, rows: 5}
load:
  la: {input: a, tool: collect, key: a}
  lb: {input: b, tool: collect, key: b}
"""
    bus = MemoryBus()
    agents = [ETLAgent(bus, agent_id="etl-1"), ETLAgent(bus, agent_id="etl-2"), QualityAgent(bus)]
    async with AgentCoordinator(bus=bus, agents=agents, registry=registry, home=tmp_path) as c:
        plan = await c.plan(make_pipeline(text))
        assert {p.agent for p in plan} == {"etl-1", "etl-2"}
        assert all("least busy of 2" in p.reason for p in plan)
        result = await c.run(make_pipeline(text))
    assert result.ok and {t.agent for t in result.tasks.values()} == {"etl-1", "etl-2"}


async def test_run_without_context_manager_and_reuse(make_pipeline, registry, tmp_path):
    c = AgentCoordinator(registry=registry, home=tmp_path)
    first = await c.run(make_pipeline(SPEC))
    second = await c.run(make_pipeline(SPEC))
    assert first.ok and second.ok and first.run_id != second.run_id


def test_sync_entry_point(make_pipeline, registry, tmp_path):
    result = agent_etl.run(make_pipeline(SPEC), registry=registry, home=tmp_path)
    assert result.ok and result.rows_loaded == 10
    assert result.raise_for_status() is result


async def test_sync_entry_point_inside_a_running_loop(make_pipeline, registry, tmp_path):
    # as in a notebook cell that calls the sync API: runs on a private loop in a thread
    result = agent_etl.run(make_pipeline(SPEC), registry=registry, home=tmp_path)
    assert result.ok


async def test_monitor_keeps_recent_runs_only(make_pipeline, registry, tmp_path):
    bus = MemoryBus()
    monitor = MonitorAgent(bus, keep_runs=1)
    async with AgentCoordinator(bus=bus, agents=[ETLAgent(bus), QualityAgent(bus), monitor], registry=registry,
                                home=tmp_path) as c:
        first = await c.run(make_pipeline(SPEC))
        second = await c.run(make_pipeline(SPEC))
        await bus.drain()
        assert monitor.stats(first.run_id) == [] and len(monitor.stats(second.run_id)) == 2
        assert 'agent_etl_rows_total{pipeline="agents",stage="extract",task="nums"} 20.0' in monitor.metrics_text()
