"""What the agents of one process share about a run in progress: the pipeline, the channels between
tasks and the run store. Events on the bus carry only the run id; an agent looks the rest up here,
so events stay small and serialisable."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_etl.spec import Pipeline, Task
from agent_etl.store.runs import RunStore
from agent_etl.stream import Channel
from agent_etl.tools.resources import Resources


@dataclass
class RunContext:
    run_id: str
    pipeline: Pipeline
    home: Path
    store: RunStore | None
    registry: Any
    channels: dict[str, Channel] = field(default_factory=dict)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (task, input) -> index of the task's queue in the input's channel
    readers: dict[tuple[str, str], int] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    # task -> state its tool staged with ctx.save_state (saved if the task's part of the run succeeds)
    staged_state: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, Task] = field(init=False)  # by name

    def __post_init__(self) -> None:
        self.connections = {k: c.model_dump() for k, c in self.pipeline.spec.connections.items()}
        self.tasks = {t.name: t for t in self.pipeline.tasks}

    def load_state(self, task: str) -> Any:
        return None if self.store is None else self.store.load_state(self.pipeline.name, task)

    def stage_state(self, task: str, value: Any) -> None:
        self.staged_state[task] = value

    def wire(self, tasks: list[Any], queue_size: int) -> None:
        """(Re)create the channels between ``tasks`` (one attempt of a branch)."""
        names = {t.name for t in tasks}
        consumers: dict[str, int] = {t.name: 0 for t in tasks}
        for t in tasks:
            for i in t.inputs:
                if i in names:
                    self.readers[(t.name, i)] = consumers[i]
                    consumers[i] += 1
        for t in tasks:
            if t.kind != "load":
                self.channels[t.name] = Channel(t.name, consumers[t.name], queue_size)


_active: dict[str, RunContext] = {}


def register(ctx: RunContext) -> None:
    _active[ctx.run_id] = ctx


def lookup(run_id: str) -> RunContext:
    try:
        return _active[run_id]
    except KeyError:
        raise LookupError(f"run {run_id!r} is not active in this process") from None


def unregister(run_id: str) -> None:
    _active.pop(run_id, None)
