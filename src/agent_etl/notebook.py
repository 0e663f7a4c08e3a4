"""Runs in Jupyter: the HTML of a result and of its quality summary, and a progress table that a run
updates in place while it runs.

Nothing here imports IPython: the progress display is shown only when IPython is already imported
and running a kernel (a notebook), so scripts and the CLI are unchanged.
"""

from __future__ import annotations

import contextlib
import html
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

_RIGHT = "style='text-align:right'"
_COLORS = {"succeeded": "#2e7d32", "passed": "#2e7d32", "failed": "#c62828", "quality_failed": "#c62828",
           "upstream_failed": "#9e9e9e", "quarantined": "#ef6c00", "warned": "#ef6c00", "running": "#1565c0",
           "stalled": "#ef6c00", "interrupted": "#c62828"}


def _status(status: str | None) -> str:
    color = _COLORS.get(status or "", "inherit")
    return f"<b style='color:{color}'>{html.escape(status or '')}</b>"


def _table(head: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td {_RIGHT}>{c}</td>" if i in right else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def quality_html(summary: dict[str, Any]) -> str:
    """Per quality group: its status, rows passed, quarantined and where; a table of its checks."""
    from agent_etl.summary import shown_path

    e = html.escape
    out = []
    for g in summary["groups"]:
        where = (f", {g['rows_quarantined']:,} quarantined to <code>{e(shown_path(g['quarantine_path']))}</code>"
                 if g["rows_quarantined"] else "")
        rows = [[e(c["check"]), _status(c["status"]), f"{c['rows_checked']:,}", f"{c['rows_failed']:,}",
                 e(c["severity"]), e(c["action"]), e(c["message"] or "")] for c in g["checks"]]
        out.append(f"<p>quality of <b>{e(g['input'])}</b>: {_status(g['status'])}, {g['rows_passed']:,} of "
                   f"{g['rows_in']:,} rows passed{where}</p>"
                   + _table(["check", "status", "rows checked", "rows failed", "severity", "action", "detail"],
                            rows, {2, 3}))
    return "".join(out) if out else "<p>no quality checks</p>"


def result_html(result: Any) -> str:
    """A run: its status and time, a row per task (rows, time, where a load lands), its quality."""
    e = html.escape
    rows = [[e(t.name), e(t.kind), e(t.tool), _status(t.status), f"{t.rows:,}", f"{t.duration:.2f}s",
             e(t.target or "") + (f" ({e(t.mode)})" if t.mode else ""), e(t.agent or ""), e(t.error or "")]
            for t in result.tasks.values()]
    out = [f"<div><b>{e(result.pipeline)}</b> run <code>{e(result.run_id)}</code>: {_status(result.status)} "
           f"in {result.duration:.2f}s",
           _table(["task", "kind", "tool", "status", "rows", "time", "lands in", "agent", "error"], rows, {4, 5})]
    summary = result.quality_summary
    if summary["groups"]:
        out.append(quality_html(summary))
    if result.error:
        out.append(f"<p style='color:#c62828'>error: {e(result.error)}</p>")
    if result.resume_command:
        out.append(f"<p>resume with: <code>{e(result.resume_command)}</code></p>")
    return "".join(out) + "</div>"


# -- progress while a run runs ----------------------------------------------------------------------


def in_kernel() -> bool:
    """In a Jupyter kernel: IPython is imported (never imported here) and runs a kernel."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython too old or half imported
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class Progress:
    """A table of the run's tasks (status, rows, time), redrawn in one notebook output at most every
    ``every`` seconds, and once more when the run ends."""

    def __init__(self, run_id: str, pipeline: Any, every: float = 0.25):
        from agent_etl.task_board import TaskBoard

        self.run_id, self.name, self.every = run_id, pipeline.name, every
        self.board = TaskBoard(pipeline)
        self.status, self.started, self.drawn = "running", time.monotonic(), 0.0
        self.handle: Any = None

    def show(self) -> None:
        from IPython.display import HTML, display

        self.handle = display(HTML(self.html()), display_id=True)

    def on_event(self, ev: Any) -> None:
        from agent_etl.events import RunFinished

        if getattr(ev, "run_id", None) != self.run_id:
            return
        if isinstance(ev, RunFinished):
            self.status = ev.status
            self.draw(force=True)
        elif self.board.apply(ev):
            self.draw()

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.handle is None or (not force and now - self.drawn < self.every):
            return
        self.drawn = now
        from IPython.display import HTML

        try:
            self.handle.update(HTML(self.html()))
        except Exception:  # the display is a courtesy: it never fails a run
            self.handle = None

    def html(self) -> str:
        e = html.escape
        now = time.monotonic()
        rows = []
        for r in self.board.rows.values():
            took = r.elapsed(now)
            rows.append([e(r.name), e(r.kind), _status(r.status), f"{r.rows:,}",
                         f"{took:.1f}s" if took is not None else ""])
        return (f"<div><b>{e(self.name)}</b> run <code>{e(self.run_id)}</code>: {_status(self.status)}, "
                f"{self.board.finished()} of {len(self.board.rows)} tasks done, {now - self.started:.1f}s"
                + _table(["task", "kind", "status", "rows", "time"], rows, {3, 4}) + "</div>")


@contextlib.asynccontextmanager
async def progress(bus: Any, run_id: str, pipeline: Any) -> AsyncIterator[Progress | None]:
    """Show the run's progress in the notebook while the block runs; outside a kernel, nothing."""
    if not in_kernel():
        yield None
        return
    shown = Progress(run_id, pipeline)
    try:
        shown.show()
        sub = await bus.listen("*", shown.on_event)
    except Exception:  # no display (a kernel without a frontend), or a bus without listeners
        yield None
        return
    try:
        yield shown
    finally:
        await sub.cancel()
        shown.draw(force=True)
