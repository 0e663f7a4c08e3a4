"""The state of a run's tasks as its events arrive: one row a task (status, rows, time).

Both live views of a run read it: the terminal's table (``cli.progress``) and the notebook's
(``notebook.Progress``); each only draws the rows its own way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agent_etl.events import Event, TaskCompleted, TaskFailed, TaskProgress, TaskStalled, TaskStarted

# the statuses a task ends in: it runs no more in this run
FINISHED = frozenset({"succeeded", "failed", "upstream_failed"})


@dataclass
class TaskRow:
    """One task of the board: ``pending`` until it starts, then ``running``, ``stalled``, and at the
    end ``succeeded``, ``failed`` or ``upstream_failed`` (stopped or skipped for an upstream task)."""

    name: str
    kind: str
    tool: str
    status: str = "pending"
    rows: int = 0
    start: float | None = None  # time.monotonic() at the start of its latest attempt
    duration: float | None = None  # seconds, once it has finished

    def elapsed(self, now: float) -> float | None:
        """Seconds it took, or has taken so far; None before it starts."""
        if self.duration is not None:
            return self.duration
        return now - self.start if self.start is not None else None


class TaskBoard:
    """A row per task of ``pipeline``, in the pipeline's order, kept up to date by ``apply``."""

    def __init__(self, pipeline: Any):
        self.rows = {t.name: TaskRow(t.name, t.kind, t.tool) for t in pipeline.tasks}

    def apply(self, ev: Event) -> bool:
        """Take in one event; True if it changed a row (an event of no task on the board does not)."""
        row = self.rows.get(getattr(ev, "task", None) or "")
        if row is None:
            return False
        if isinstance(ev, TaskStarted):  # a new attempt starts from nothing
            row.status, row.start, row.rows, row.duration = "running", time.monotonic(), 0, None
        elif isinstance(ev, TaskProgress):
            row.rows = ev.rows_total
        elif isinstance(ev, TaskCompleted):
            row.status, row.rows, row.duration = "succeeded", ev.rows, ev.duration
        elif isinstance(ev, TaskFailed):
            row.status, row.duration = ("upstream_failed" if ev.upstream else "failed"), ev.duration or None
        elif isinstance(ev, TaskStalled):
            row.status = "stalled"
        else:
            return False
        return True

    def finished(self) -> int:
        """How many tasks have finished."""
        return sum(1 for r in self.rows.values() if r.status in FINISHED)
