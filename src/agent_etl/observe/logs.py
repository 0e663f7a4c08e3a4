"""Log lines that name their run and task: human-readable by default, one JSON object per line
with ``--log-format json``.

The run id and the task live in context variables: the coordinator binds the run, and the ETL
agent binds the run and the task in the asyncio task that runs it, so every line logged from there
(a tool's, a loader's) carries them without being passed along.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time

RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("agent_etl_run_id", default=None)
TASK: contextvars.ContextVar[str | None] = contextvars.ContextVar("agent_etl_task", default=None)
FORMATS = ("text", "json")


def bind(run_id: str | None, task: str | None = None) -> None:
    """Name the run (and task) of what the current context logs from now on."""
    RUN_ID.set(run_id)
    TASK.set(task)


@contextlib.contextmanager
def bound(run_id: str | None, task: str | None = None):
    """``bind`` inside the block only (the caller's context gets its values back after)."""
    tokens = RUN_ID.set(run_id), TASK.set(task)
    try:
        yield
    finally:
        RUN_ID.reset(tokens[0])
        TASK.reset(tokens[1])


class ContextFilter(logging.Filter):
    """Adds ``run_id`` and ``task`` to every record (None outside a run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = RUN_ID.get()
        record.task = TASK.get()
        return True


class TextFormatter(logging.Formatter):
    """``LEVEL logger [run RUN task TASK]: message``."""

    def format(self, record: logging.LogRecord) -> str:
        where = ""
        run_id, task = getattr(record, "run_id", None), getattr(record, "task", None)
        if run_id:
            where = f" [run {run_id}{f' task {task}' if task else ''}]"
        line = f"{record.levelname} {record.name}{where}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC), level, logger, message, run_id, task, and
    exception (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage(),
               "run_id": getattr(record, "run_id", None), "task": getattr(record, "task", None)}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str = "WARNING", fmt: str = "text", stream=None) -> logging.Handler:
    """Send agent-etl's log lines (and everything else at ``level``) to ``stream`` (stderr) in
    ``fmt``; replaces a handler an earlier call installed. Returns the handler."""
    if fmt not in FORMATS:
        from agent_etl.exceptions import SpecError

        raise SpecError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_agent_etl", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._agent_etl = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
