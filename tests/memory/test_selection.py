"""The selector's interface: it sees AgentInfo records and task descriptors, and learns the
experiences of every finished task (on both memory backends)."""

from __future__ import annotations

from pathlib import Path

from agent_etl.agents.coordinator import AgentCoordinator
from agent_etl.agents.selector import AgentInfo, CapabilitySelector, Choice
from agent_etl.settings import Settings
from agent_etl.spec import Pipeline
from tests.memory.conftest import write_pipeline


class Watching(CapabilitySelector):
    """Chooses as the capability selector does, and keeps what it was shown and taught."""

    def __init__(self):
        self.shown: list[tuple[list[AgentInfo], dict]] = []
        self.taught: list = []

    async def select(self, tasks, agents, descriptors=None):
        self.shown.append((list(agents), dict(descriptors or {})))
        chosen = await super().select(tasks, agents, descriptors)
        return {name: Choice(c.agent, "watched: " + c.reason) for name, c in chosen.items()}

    async def learn(self, experiences):
        self.taught.extend(experiences)


async def test_the_selector_sees_records_and_descriptors_and_learns_every_task(memory_kind, tmp_path: Path):
    path = write_pipeline(tmp_path / "p")
    selector = Watching()
    async with AgentCoordinator(selector=selector, settings=Settings(memory=memory_kind)) as c:
        pipeline = Pipeline.from_yaml(path)
        planned = await c.plan(pipeline)
        result = await c.run(pipeline)
    assert result.ok
    assert all(p.reason.startswith("watched: ") for p in planned)
    assert all(t.reason.startswith("watched: ") for t in result.tasks.values())
    agents, descriptors = selector.shown[-1]
    etl = next(a for a in agents if a.kind == "etl")
    assert etl.can_run("extract", "csv") and etl.load == 0 and isinstance(etl.capabilities, frozenset)
    assert descriptors["lake"].destinations == ("parquet",) and descriptors["orders"].bytes
    assert {e.task for e in selector.taught} == {"orders", "paid", "lake"}
    assert {e.run_id for e in selector.taught} == {result.run_id}


async def test_capabilities_choose_the_least_busy_agent_from_records():
    from agent_etl.spec import Task

    tasks = [Task("a", "extract", "csv", [], {}), Task("b", "extract", "csv", [], {}), Task("c", "load", "csv", ["a"], {})]
    agents = [AgentInfo("e1", capabilities=frozenset({"extract", "load"}), load=1),
              AgentInfo("e2", capabilities=frozenset({"extract:csv"}))]
    chosen = await CapabilitySelector().select(tasks, agents, {})
    assert chosen["a"].agent == "e2" and chosen["b"].agent in ("e1", "e2") and chosen["c"].agent == "e1"
    assert chosen["c"].reason == "only agent able to load"
