"""Choosing the agent that runs a task. ``Selector`` is the extension point: it sees the agents as
``AgentInfo`` records (id, capabilities, limits, tags, current load: what a remote worker will
advertise in its heartbeat), each task with its ``TaskDescriptor``, and learns from the experience
of every finished task. ``CapabilitySelector`` picks the least busy capable agent; a memory-driven
selector (issue 14) implements the same protocol."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from agent_etl.exceptions import AgentETLError
from agent_etl.memory.descriptor import TaskDescriptor
from agent_etl.spec import Task


@dataclass(frozen=True)
class AgentInfo:
    id: str
    kind: str = "etl"
    # "extract", "transform", "load", or "extract:csv" for one tool only
    capabilities: frozenset[str] = frozenset()
    limits: Mapping[str, float] = field(default_factory=dict)  # e.g. {"concurrency": 4, "memory_mb": 4096}
    tags: frozenset[str] = frozenset()  # e.g. location: {"eu-west", "gpu"}
    load: int = 0  # tasks running now

    def can_run(self, kind: str, tool: str) -> bool:
        return kind in self.capabilities or f"{kind}:{tool}" in self.capabilities

    @classmethod
    def of(cls, agent: Any) -> AgentInfo:
        """The record of a live agent of this process."""
        return cls(agent.id, agent.kind, frozenset(agent.capabilities), dict(getattr(agent, "limits", None) or {}),
                   frozenset(getattr(agent, "tags", None) or ()), len(agent.running))


@dataclass(frozen=True)
class Choice:
    agent: str  # an AgentInfo id
    reason: str


class Selector(Protocol):
    async def select(self, tasks: Sequence[Task], agents: Sequence[AgentInfo],
                     descriptors: Mapping[str, TaskDescriptor]) -> dict[str, Choice]:
        """An agent for every task (by name), with the reason it was chosen."""
        ...

    async def learn(self, experiences: Sequence[Any]) -> None:
        """Told what happened to each task of a finished run (``memory.experience.Experience``)."""
        ...


class CapabilitySelector:
    """Among the agents able to run the task's kind and tool, the one with the fewest tasks."""

    async def select(self, tasks: Sequence[Task], agents: Sequence[AgentInfo],
                     descriptors: Mapping[str, TaskDescriptor] | None = None) -> dict[str, Choice]:
        load: Counter[str] = Counter({a.id: a.load for a in agents})
        chosen: dict[str, Choice] = {}
        # (kind, tool) -> the agents able to run it and the reason; a pipeline has few distinct pairs
        options: dict[tuple[str, str], tuple[list[AgentInfo], str]] = {}
        for task in tasks:
            option = options.get((task.kind, task.tool))
            if option is None:
                capable = [a for a in agents if a.can_run(task.kind, task.tool)]
                if not capable:
                    raise AgentETLError(f"no agent can run {task.kind} task {task.name!r} (tool {task.tool}); "
                                        f"start an agent with capability {task.kind!r}")
                reason = (f"only agent able to {task.kind}" if len(capable) == 1
                          else f"least busy of {len(capable)} agents able to {task.kind}")
                option = options[(task.kind, task.tool)] = (capable, reason)
            capable, reason = option
            agent = capable[0] if len(capable) == 1 else min(capable, key=lambda a: (load[a.id], a.id))
            load[agent.id] += 1
            chosen[task.name] = Choice(agent.id, reason)
        return chosen

    async def learn(self, experiences: Sequence[Any]) -> None:
        """Capabilities do not change with experience."""
