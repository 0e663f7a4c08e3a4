"""A run as data: the stored description any process can rebuild it from, and the context the agents
of one process build from that description to execute their part.

``RunDescription`` is what the run store keeps for every run (DESIGN.md §1, "A run is a stored
description"): the pipeline file's text as written (``${VAR}`` references, never their values),
where it was, the ``--var`` values that are not secrets (the names of those that are), the
fingerprint and the package version. ``pipeline()`` rebuilds the validated pipeline; the secrets
are read again from the environment (or ``--var``) of the process that rebuilds it.

``RunContext`` is one agent's view of a live run: the pipeline, the channels between the tasks it
runs, the run store. Agents build their own from the ``RunStarted`` event's description, and hand
it to their tools through ``ToolContext``; nothing looks live runs up in a process-wide table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, PrivateAttr

from agent_etl.spec import Pipeline, Task
from agent_etl.stream import Channel
from agent_etl.tools.resources import Resources


class RunDescription(BaseModel):
    """Everything needed to rebuild a run in another process (JSON; no secret values)."""

    pipeline_name: str
    spec: str  # the pipeline file's text, before interpolation
    path: str | None = None  # the pipeline file, absolute
    base_dir: str  # what relative paths in the spec resolve against
    variables: dict[str, str] = {}  # --var values that are not secrets
    secret_variables: list[str] = []  # --var names whose values are secrets: given again on resume
    fingerprint: str
    version: str
    home: str  # the state folder of the run (run store, quarantine, spool files)
    # partitioned sources spread over workers: the ranges of their branches' copies (spec.copies)
    copies: dict[str, Any] = {}
    _pipeline: Pipeline | None = PrivateAttr(None)  # in the process that made it: no second parse

    @classmethod
    def of(cls, pipeline: Pipeline, variables: dict[str, str] | None, home: Path) -> RunDescription:
        from agent_etl import __version__

        from agent_etl.redaction import MIN_LENGTH, secret_name

        variables = dict(variables or {})
        # kept out: variables named like a secret, and those whose value is or holds one (a URL with
        # its password); a resume reads them again from the environment or --var
        secrets = [s for s in pipeline.secrets if len(s) >= MIN_LENGTH]
        secret = sorted(k for k, v in variables.items()
                        if secret_name(k) or v in pipeline.secrets or any(s in v for s in secrets))
        desc = cls(pipeline_name=pipeline.name, spec=pipeline.doc.source_text,
                   path=str(pipeline.path.resolve()) if pipeline.path else None, base_dir=str(pipeline.base_dir),
                   variables={k: v for k, v in variables.items() if k not in secret}, secret_variables=secret,
                   fingerprint=pipeline.fingerprint, version=__version__, home=str(home))
        desc._pipeline = pipeline
        return desc

    def pipeline(self, variables: dict[str, str] | None = None, registry: Any = None) -> Pipeline:
        """The validated pipeline; ``variables`` add to (and win over) the stored ones."""
        if self._pipeline is None or variables:
            self._pipeline = Pipeline.from_text(self.spec, source=self.path or self.pipeline_name,
                                                base_dir=self.base_dir, variables={**self.variables, **(variables or {})},
                                                registry=registry, path=Path(self.path) if self.path else None)
            if self.copies:
                from agent_etl.spec.copies import expand

                self._pipeline = expand(self._pipeline, self.copies)
        return self._pipeline


@dataclass
class RunContext:
    run_id: str
    pipeline: Pipeline
    home: Path
    store: Any  # RunStore | None
    registry: Any
    channels: dict[str, Channel] = field(default_factory=dict)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (task, input) -> index of the task's queue in the input's channel
    readers: dict[tuple[str, str], int] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    # task -> state its tool staged with ctx.save_state (saved if the task's part of the run succeeds)
    staged_state: dict[str, Any] = field(default_factory=dict)
    # what a resumed run starts from (agents.resume.ResumePlan), None for a new run
    resume: Any = None
    # commit units (agents.commits): the clock of each channel that feeds loads committing in units,
    # those loads, and the barrier of each input whose sibling loads commit together
    clocks: dict[str, Any] = field(default_factory=dict)
    unit_loads: set[str] = field(default_factory=set)
    barriers: dict[str, Any] = field(default_factory=dict)
    resumable: dict[str, bool] = field(default_factory=dict)  # extract -> its read can resume_from
    # incremental sources' marks as the coordinator read them from the destinations at the run's
    # start (the smallest of each source's loads); other tasks' state comes from the run store
    cursors: dict[str, Any] = field(default_factory=dict)
    # task -> batch_size / partitions the coordinator tuned from experience, and why (agents.tuning)
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)
    # sources that acknowledge what the loads below them committed (agents.acks.Acks)
    acks: Any = None
    tasks: dict[str, Task] = field(init=False)  # by name

    def __post_init__(self) -> None:
        self.connections = {k: c.model_dump() for k, c in self.pipeline.spec.connections.items()}
        self.tasks = {t.name: t for t in self.pipeline.tasks}

    def load_state(self, task: str) -> Any:
        if task in self.cursors:
            return self.cursors[task]
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
