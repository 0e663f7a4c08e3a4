"""Control events on the bus. Data never travels here: only what happened, and summaries.

Every event is a small pydantic model with a ``topic`` (``task.assigned``, ``task.progress``, ...),
so a cross-process backend can serialise it with ``model_dump_json`` and rebuild it with
``parse_event``.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)
    topic: ClassVar[str] = "event"
    ts: float = Field(default_factory=time.time)


class RunStarted(Event):
    """A run starts (or a stopped one is resumed): agents build their view of it from
    ``description`` (agent_etl.run_context.RunDescription) and ``resume`` (agent_etl.agents.resume)."""

    topic: ClassVar[str] = "run.started"
    run_id: str
    pipeline: str
    tasks: list[str]
    stages: dict[str, str] = {}  # task -> extract | transform | load
    description: Any = None  # RunDescription
    store_url: str | None = None
    resume: dict[str, Any] | None = None  # ResumePlan.to_dict()
    cursors: dict[str, Any] = {}  # incremental sources' marks, read from their destinations
    tuning: dict[str, dict[str, Any]] = {}  # task -> tuned batch_size / partitions and why (agents.tuning)
    trace: dict[str, str] | None = None  # W3C trace context of the run's span (OpenTelemetry, when installed)


class RunFinished(Event):
    topic: ClassVar[str] = "run.finished"
    run_id: str
    pipeline: str
    status: str
    duration: float


class TaskEvent(Event):
    """Something that happened to one attempt of one task, on one agent."""

    run_id: str
    task: str
    agent: str
    attempt: int = 1


class TaskAssigned(TaskEvent):
    topic: ClassVar[str] = "task.assigned"
    reason: str
    branch: list[str] = []  # the tasks of this attempt of the branch: they stream into each other
    resume: dict[str, Any] | None = None  # a retry goes on after what landed (agents.resume.ResumePlan)
    trace: dict[str, str] | None = None  # W3C trace context of the run's span: a task's span is its child


class TaskStarted(TaskEvent):
    topic: ClassVar[str] = "task.started"


# upper bounds (seconds) of the batch duration histogram that TaskCompleted and TaskFailed carry
BATCH_SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class TaskProgress(TaskEvent):
    topic: ClassVar[str] = "task.progress"
    rows: int  # rows since the task's previous progress event (events come at most every 0.2 s)
    rows_total: int
    batches: int
    bytes_total: int = 0  # Arrow bytes of the batches so far (sampled: ETLAgent measures some, scales the rest)


class TaskCommitted(TaskEvent):
    """A load committed a unit (and its checkpoint)."""

    topic: ClassVar[str] = "task.committed"
    rows: int  # in this unit
    unit: int  # the load's commit count in this attempt, from 1


class TaskCompleted(TaskEvent):
    topic: ClassVar[str] = "task.completed"
    rows: int
    batches: int
    duration: float
    details: dict[str, Any] = {}
    bytes: int = 0
    # batches per duration bucket (BATCH_SECONDS, then one past the last): the time each batch took to
    # arrive from the step's source (an extract's read, a transform's work, a load's input)
    batch_seconds: list[int] = []
    batch_seconds_sum: float = 0.0
    blocked: float = 0.0  # seconds the task waited for room in its output channel (backpressure)


class TaskFailed(TaskEvent):
    topic: ClassVar[str] = "task.failed"
    error: str
    error_type: str
    transient: bool = False
    upstream: bool = False  # failed only because an input failed
    exit_code: int = 1
    duration: float = 0.0
    details: dict[str, Any] = {}
    rows: int = 0
    bytes: int = 0
    batch_seconds: list[int] = []
    batch_seconds_sum: float = 0.0
    blocked: float = 0.0


class TaskStalled(TaskEvent):
    """A running task made no progress for ``silent_for`` seconds (``defaults.stall_timeout``); the
    coordinator fails its attempt transiently, so it is retried."""

    topic: ClassVar[str] = "task.stalled"
    silent_for: float


class BatchValidated(Event):
    topic: ClassVar[str] = "batch.validated"
    run_id: str
    task: str
    input: str
    rows: int
    passed: int
    failed: int


class GateChecked(TaskEvent):
    """What one quality gate of a step found, at the end of its stream (also when it failed): the
    report (``GateReport.to_dict()``: counts, check results, quarantine location; None when the gate
    gave no verdict), the input's data profile (None with ``profile: false``) and the anomalies
    (None when no anomaly check judged it). The gate ran where the step ran; the ETL agent sends
    this to a quality agent (request ``quality.checked``), which keeps the profile as history in
    the run store at ``store_url``, then publishes it and announces the anomalies."""

    topic: ClassVar[str] = "gate.checked"
    pipeline: str
    input: str
    store_url: str | None = None
    report: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    anomalies: list[dict[str, Any]] | None = None


class AnomalyDetected(Event):
    """An input's profile is out of line with its history (``anomaly`` check): the anomalies, each
    ``{input, metric, column, quantile, value, expected, low, high, score, severity, message}``;
    ``severity`` ``fail`` ones also fail the gate."""

    topic: ClassVar[str] = "anomaly.detected"
    run_id: str
    task: str
    input: str
    anomalies: list[dict[str, Any]]


class Heartbeat(Event):
    topic: ClassVar[str] = "agent.heartbeat"
    agent: str
    kind: str
    running: list[str] = []  # "run_id/task" being worked on


class AgentStalled(Event):
    topic: ClassVar[str] = "agent.stalled"
    agent: str
    silent_for: float
    running: list[str] = []


EVENT_TYPES: dict[str, type[Event]] = {
    cls.topic: cls
    for cls in (RunStarted, RunFinished, TaskAssigned, TaskStarted, TaskProgress, TaskCommitted, TaskCompleted,
                TaskFailed, TaskStalled, BatchValidated, GateChecked, AnomalyDetected, Heartbeat, AgentStalled)
}


def parse_event(topic: str, data: str | bytes) -> Event:
    return EVENT_TYPES[topic].model_validate_json(data)


# -- runs spread over worker processes (``agent-etl worker``; agents.worker, agents.dispatch) -------

class BranchAssigned(Event):
    """A branch of a run (tasks that stream into each other) for any worker: a work event, taken
    by one worker of the group (``work``: a broker keeps it in a work queue until one does). It
    carries what a worker needs to build the run without having seen ``RunStarted``."""

    topic: ClassVar[str] = "branch.assigned"
    work: ClassVar[bool] = True
    run_id: str
    pipeline: str
    branch: str  # the branch's id: its first task
    tasks: list[str]
    attempt: int = 1
    reason: str = ""
    description: Any = None  # RunDescription
    store_url: str | None = None
    cursors: dict[str, Any] = {}
    resume: dict[str, Any] | None = None  # ResumePlan.to_dict(): where this attempt goes on
    tags: list[str] = []  # only a worker advertising all of them takes it (its steps' tags:)
    trace: dict[str, str] | None = None  # W3C trace context of the run's span: the worker's task spans are its children


class BranchTaken(Event):
    """A worker took a branch: from now on its heartbeats vouch for it."""

    topic: ClassVar[str] = "branch.taken"
    run_id: str
    branch: str
    attempt: int
    agent: str  # the worker


class BranchReassigned(Event):
    """The worker running a branch went silent (missed heartbeats) or handed it back: the branch
    is assigned again (``attempt``), going on after its last checkpoint."""

    topic: ClassVar[str] = "branch.reassigned"
    run_id: str
    branch: str
    attempt: int  # the new attempt
    agent: str  # the worker that lost it
    reason: str


class RunCancelled(Event):
    """Stop the run's tasks wherever they run (each agent cancels its own)."""

    topic: ClassVar[str] = "run.cancelled"
    run_id: str


EVENT_TYPES.update({cls.topic: cls for cls in (BranchAssigned, BranchTaken, BranchReassigned, RunCancelled)})
