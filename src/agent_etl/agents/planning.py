"""What a coordinator decides before it runs a pipeline, the same for ``plan`` and a run: an agent for
every task and why, each branch kept on one agent, and batch size and partitions tuned from similar
past runs where the spec leaves them open.

The selector sees the agents as ``AgentInfo`` records and every task's ``TaskDescriptor``; a learning
selector first recalls experience near those tasks (warm-up). Warm-up and tuning read the memory
through the recorder, which also stores the experiences of every finished run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_etl.agents.base import Agent
from agent_etl.agents.selector import AgentInfo, Selector, tags_here
from agent_etl.spec import Pipeline, Task

log = logging.getLogger("agent_etl.coordinator")
Chosen = dict[str, tuple[Agent, str]]  # task name -> the agent that runs it, and why


@dataclass
class PlannedTask:
    task: Task
    agent: str
    reason: str
    tuning: dict[str, Any] | None = None  # batch_size / partitions tuned from experience, and why


class Planner:
    """A coordinator's selector and memory recorder, and the choices made with them."""

    def __init__(self, settings: Any, selector: Selector):
        self.settings, self.selector = settings, selector
        self.memory: Any = None  # memory.recorder.Recorder: the experiences of finished runs (AGENT_ETL_MEMORY)

    def recorder(self) -> Any:
        """The memory recorder (made on first use): stores each run's experiences, opens the memory."""
        from agent_etl.memory.recorder import Recorder

        self.memory = self.memory or Recorder(self.settings.memory, learn=self.selector.learn)
        return self.memory

    async def decide(self, pipeline: Pipeline, agents: list[Agent], home: Path, registry: Any, *, broker: bool,
                     tune: bool = True) -> tuple[Chosen, dict[str, dict[str, Any]]]:
        """The agent of every task and why, and per task what tuning applies (none when ``tune`` is
        false). ``home``: the state folder whose memory is read; ``broker``: the branches go to a
        broker's workers, which match the steps' tags themselves (``selector.tags_here``,
        ``over_workers``)."""
        chosen = one_agent_per_branch(pipeline.branches(), await self._choose(pipeline, agents, home, broker))
        if broker:  # the work queue places each branch, not the choice made here
            chosen = over_workers(pipeline.branches(), chosen)
        return chosen, (await self._tune(pipeline, home, registry) if tune else {})

    async def _choose(self, pipeline: Pipeline, agents: list[Agent], home: Path, broker: bool) -> Chosen:
        """The selector's choice for every task: it sees the agents' records and the tasks' descriptors."""
        from agent_etl.memory.descriptor import describe

        by_id = {a.id: a for a in agents}
        descriptors = {t.name: describe(t, pipeline) for t in pipeline.tasks}
        infos = [AgentInfo.of(a) for a in agents]
        tasks = tags_here(pipeline.tasks, infos, broker=broker)  # tags no agent here has
        warm = getattr(self.selector, "warm", None)  # a learning selector recalls experience first
        if warm is not None and self.settings.memory != "off":
            recorder = self.recorder()
            await warm(descriptors, infos, lambda doc, k: recorder.experiences(home, doc, k))
        choices = await self.selector.select(tasks, infos, descriptors)
        return {name: (by_id[c.agent], c.reason) for name, c in choices.items()}

    async def _tune(self, pipeline: Pipeline, home: Path, registry: Any) -> dict[str, dict[str, Any]]:
        """Batch size and partitions from similar past runs, where the spec leaves them open (agents.tuning)."""
        if self.settings.memory == "off":
            return {}
        from agent_etl.agents.tuning import tune

        from agent_etl.memory.folder import memory_folder

        recorder = self.recorder()

        async def read(fn: Any) -> Any:
            if self.settings.memory == "chroma" and not (memory_folder(home) / "chroma").is_dir():
                return []  # no experience yet: chromadb is not imported before the first run
            return await recorder.read(home, fn)

        try:
            return await tune(pipeline, registry, read)
        except Exception as e:  # memory held by another process, unreadable: the spec's values
            log.warning("tuning: the spec's values, no experience read: %s: %s", type(e).__name__, e)
            return {}


def worker_reason(tags: list[str]) -> str:
    """Why a task runs where it does over a broker (agents.dispatch): the work queue's placement."""
    return "the first worker with room takes its branch" + (f", on a worker tagged {', '.join(tags)}" if tags else "")


def over_workers(branches: list[list[Task]], chosen: Chosen) -> Chosen:
    """Over a broker, why each task is where it runs: a worker takes its branch from the work queue
    (with the tags its steps ask for, ``on a worker tagged ...``); the agent kept here is a
    placeholder until a worker starts the task."""
    out = dict(chosen)
    for branch in branches:
        reason = worker_reason(sorted({g for t in branch for g in t.tags}))
        for t in branch:
            out[t.name] = (chosen[t.name][0], reason)
    return out


def one_agent_per_branch(branches: list[list[Task]], chosen: Chosen) -> Chosen:
    """Keep the tasks of a branch on one agent (they stream into each other through in-process
    channels): the agent chosen for the branch's first task, where it can run them all."""
    out = dict(chosen)
    for branch in branches:
        agent, reason = chosen[branch[0].name]
        if all(agent.can_run(t.kind, t.tool) for t in branch):
            # a task moved to it: not the first task's reason (which names the first task's kind), but
            # why it is there, with what the placement left out of the branch
            _, _, left = reason.partition("; ")
            moved = (f"with its branch on the agent chosen for {branch[0].name}, able to run the whole branch"
                     + (f"; {left}" if left else ""))
            for t in branch:
                out[t.name] = (agent, chosen[t.name][1] if chosen[t.name][0] is agent else moved)
    return out
