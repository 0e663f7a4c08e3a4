"""Showing a run while it happens: a Rich live table on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from agent_etl.events import Event, TaskCompleted, TaskFailed, TaskStalled, TaskStarted
from agent_etl.task_board import TaskBoard


class PlainReporter:
    """One line per task event, for logs and pipes."""

    def __init__(self, pipeline: Any, enabled: bool = True, stream=None):
        self.pipeline, self.enabled = pipeline, enabled
        self.stream = stream or sys.stdout

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _print(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    async def on_event(self, ev: Event) -> None:
        if isinstance(ev, TaskStarted):
            self._print(f"started   {ev.task} ({ev.agent}{', attempt ' + str(ev.attempt) if ev.attempt > 1 else ''})")
        elif isinstance(ev, TaskCompleted):
            rate = ev.rows / ev.duration if ev.duration else 0
            self._print(f"done      {ev.task}: {ev.rows:,} rows in {ev.duration:.2f}s ({rate:,.0f} rows/s)")
        elif isinstance(ev, TaskFailed):
            if ev.upstream and ev.error.startswith("skipped: "):
                self._print(f"skipped   {ev.task}: {ev.error.removeprefix('skipped: ')}")
            elif ev.upstream:
                self._print(f"stopped   {ev.task}: {ev.error}")
            elif ev.transient and self.pipeline is not None and ev.attempt < self.pipeline.spec.defaults.retries.max_attempts:
                # a retry may follow and the run succeed: the end then says nothing of this error
                self._print(f"failed    {ev.task}: {ev.error.splitlines()[0] if ev.error else ''} (transient)")
            else:  # the error itself is printed once, at the end
                self._print(f"failed    {ev.task}")
        elif isinstance(ev, TaskStalled):
            self._print(f"stalled   {ev.task}: no progress for {ev.silent_for:.0f}s; stopping it to try again")

    def summary(self, result: Any) -> None:
        from agent_etl.summary import destination_lines, quality_lines

        out = sys.stdout
        print(f"run {result.run_id} {result.status} in {result.duration:.2f}s", file=out)
        dests = result.destinations
        if dests:
            print("loaded:", file=out)
            for line in destination_lines(dests, "  "):
                print(line, file=out)
        for line in quality_lines(result.quality_summary):
            print(line, file=out)
        # each root failure once (dependants only said "skipped: <task> failed")
        errors = [t.error for t in result.tasks.values() if t.status == "failed" and t.error]
        for error in errors or ([result.error] if result.error else []):
            print(f"error: {error}", file=sys.stderr)


class RichReporter(PlainReporter):
    """A live table: one row per task with status, rows and rows/s."""

    # the table's words for the board's statuses, where they differ
    SHOWN = {"upstream_failed": "skipped"}
    COLORS = {"succeeded": "green", "failed": "red", "skipped": "yellow", "running": "cyan"}

    def __init__(self, pipeline: Any, enabled: bool = True):
        super().__init__(pipeline, enabled)
        self.board = TaskBoard(pipeline)
        self.live = None

    def __enter__(self):
        from rich.live import Live

        self.live = Live(self._table(), refresh_per_second=8, transient=False)
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(*exc)

    def _table(self):
        from rich.table import Table

        table = Table(title=self.pipeline.name, expand=False)
        for col in ("task", "kind", "tool", "status", "rows", "rows/s"):
            table.add_column(col, justify="right" if col.startswith("rows") else "left")
        now = time.monotonic()
        for r in self.board.rows.values():
            elapsed = r.elapsed(now)
            rate = f"{r.rows / elapsed:,.0f}" if elapsed and r.rows else ""
            status = self.SHOWN.get(r.status, r.status)
            table.add_row(r.name, r.kind, r.tool, f"[{self.COLORS.get(status, 'white')}]{status}[/]", f"{r.rows:,}",
                          rate)
        return table

    async def on_event(self, ev: Event) -> None:
        if self.board.apply(ev) and self.live is not None:
            self.live.update(self._table())


def make_reporter(pipeline: Any, enabled: bool) -> PlainReporter:
    if enabled and sys.stdout.isatty():
        return RichReporter(pipeline)
    return PlainReporter(pipeline, enabled)
