"""Choosing the agent that runs a task. ``Selector`` is the extension point: capability-based now,
memory-driven (past runs of similar tasks) later."""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from agent_etl.agents.base import Agent
from agent_etl.exceptions import AgentETLError
from agent_etl.spec import Task


class Selector(Protocol):
    def select(self, tasks: list[Task], agents: list[Agent]) -> dict[str, tuple[Agent, str]]:
        """An agent for every task, with the reason it was chosen."""
        ...


class CapabilitySelector:
    """Among the agents able to run the task's kind and tool, the one with the fewest tasks."""

    def select(self, tasks: list[Task], agents: list[Agent]) -> dict[str, tuple[Agent, str]]:
        load: Counter[str] = Counter({a.id: len(a.running) for a in agents})
        chosen: dict[str, tuple[Agent, str]] = {}
        # (kind, tool) -> the agents able to run it and the reason; a pipeline has few distinct pairs
        options: dict[tuple[str, str], tuple[list[Agent], str]] = {}
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
            chosen[task.name] = (agent, reason)
        return chosen
