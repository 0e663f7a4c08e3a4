"""The monitor agent: counts rows, batches and durations per task from the events, keeps the last
heartbeat of every agent, tells when a busy agent goes silent, and exposes Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agent_etl.agents.base import Agent
from agent_etl.events import (AgentStalled, Event, Heartbeat, RunFinished, RunStarted, TaskCompleted, TaskFailed,
                              TaskProgress, TaskStarted)


@dataclass(slots=True)
class TaskStats:
    run_id: str
    task: str
    agent: str = ""
    status: str = "pending"
    rows: int = 0
    batches: int = 0
    started: float | None = None
    duration: float | None = None
    error: str | None = None

    @property
    def rows_per_second(self) -> float:
        elapsed = self.duration if self.duration is not None else (time.time() - self.started if self.started else 0)
        return self.rows / elapsed if elapsed else 0.0


@dataclass
class AgentSeen:
    kind: str
    last_seen: float
    running: list[str] = field(default_factory=list)
    stalled: bool = False


class MonitorAgent(Agent):
    kind = "monitor"

    def __init__(self, bus, *, stall_timeout: float = 60.0, keep_runs: int = 100, **kw):
        super().__init__(bus, **kw)
        self.keep_runs = keep_runs
        self._finished: deque[str] = deque()
        self.stall_timeout = stall_timeout
        self.tasks: dict[tuple[str, str], TaskStats] = {}
        self.agents: dict[str, AgentSeen] = {}
        self.runs: dict[str, str] = {}  # run_id -> pipeline
        self._run_tasks: dict[str, list[str]] = {}  # run_id -> its tasks in self.tasks, to forget them at once
        self._watch: asyncio.Task | None = None
        self.totals: dict[tuple[str, str], list[float]] = {}  # (pipeline, task) -> rows, batches, count, seconds
        self.outcomes: dict[tuple[str, str], int] = {}  # (pipeline, status) -> tasks
        self._registry: Any = None

    async def on_start(self) -> None:
        self._subs.append(await self.bus.listen("*", self._on_event))
        self._watch = asyncio.get_running_loop().create_task(self._watch_stalls(), name=f"stalls:{self.id}")

    async def on_stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)

    def stats(self, run_id: str) -> list[TaskStats]:
        return [s for (r, _), s in self.tasks.items() if r == run_id]

    def _on_event(self, ev: Event) -> None:
        agent = getattr(ev, "agent", None)
        if agent:
            seen = self.agents.get(agent)
            if seen is not None:
                seen.last_seen = ev.ts
        handler = _HANDLERS.get(type(ev))
        if handler is not None:  # one dict lookup instead of an isinstance chain: this runs for every event
            handler(self, ev)

    def _seen_heartbeat(self, ev: Heartbeat) -> None:
        seen = self.agents.setdefault(ev.agent, AgentSeen(ev.kind, ev.ts))
        seen.last_seen, seen.running, seen.stalled = ev.ts, ev.running, False

    def _run_started(self, ev: RunStarted) -> None:
        run_id = ev.run_id
        self.runs[run_id] = ev.pipeline
        self._run_tasks[run_id] = list(ev.tasks)
        tasks = self.tasks
        for t in ev.tasks:
            tasks[(run_id, t)] = TaskStats(run_id, t)

    def _run_finished(self, ev: RunFinished) -> None:
        self._finished.append(ev.run_id)
        while len(self._finished) > self.keep_runs:  # a long-lived monitor keeps recent runs only
            old = self._finished.popleft()
            self.runs.pop(old, None)
            for t in self._run_tasks.pop(old, ()):
                self.tasks.pop((old, t), None)

    def _stats(self, ev: Any) -> TaskStats:
        key = (ev.run_id, ev.task)
        s = self.tasks.get(key)
        if s is None:
            s = self.tasks[key] = TaskStats(ev.run_id, ev.task)
            self._run_tasks.setdefault(ev.run_id, []).append(ev.task)
        return s

    def _task_started(self, ev: TaskStarted) -> None:
        s = self.tasks.get((ev.run_id, ev.task)) or self._stats(ev)
        s.agent, s.status, s.started, s.rows, s.batches = ev.agent, "running", ev.ts, 0, 0

    def _task_progress(self, ev: TaskProgress) -> None:
        s = self._stats(ev)
        s.rows, s.batches = ev.rows_total, ev.batches

    def _task_completed(self, ev: TaskCompleted) -> None:
        s = self.tasks.get((ev.run_id, ev.task)) or self._stats(ev)
        s.status, s.rows, s.batches, s.duration = "succeeded", ev.rows, ev.batches, ev.duration
        self._observe(ev.run_id, s)

    def _task_failed(self, ev: TaskFailed) -> None:
        s = self._stats(ev)
        s.status, s.duration, s.error = ("upstream_failed" if ev.upstream else "failed"), ev.duration, ev.error
        self._observe(ev.run_id, s)

    async def _watch_stalls(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.stall_timeout / 4))
            now = time.time()
            for agent_id, seen in self.agents.items():
                silent = now - seen.last_seen
                if seen.running and silent > self.stall_timeout and not seen.stalled:
                    seen.stalled = True
                    await self.bus.publish(AgentStalled(agent=agent_id, silent_for=silent, running=seen.running))

    # -- Prometheus ------------------------------------------------------------------------------
    # Totals are plain numbers updated once per finished task; the Prometheus families are built
    # only when metrics are scraped, so the hot path never touches the client library.

    def _observe(self, run_id: str, s: TaskStats) -> None:
        pipeline = self.runs.get(run_id, "")
        t = self.totals.get((pipeline, s.task))
        if t is None:
            t = self.totals[(pipeline, s.task)] = [0, 0, 0, 0.0]
        t[0] += s.rows
        t[1] += s.batches
        t[2] += 1
        t[3] += s.duration or 0.0
        self.outcomes[(pipeline, s.status)] = self.outcomes.get((pipeline, s.status), 0) + 1

    def collect(self):
        """The prometheus_client collector protocol: one family per metric, built now."""
        from prometheus_client.core import CounterMetricFamily, SummaryMetricFamily

        rows = CounterMetricFamily("agent_etl_rows", "Rows processed", labels=["pipeline", "task"])
        batches = CounterMetricFamily("agent_etl_batches", "Batches processed", labels=["pipeline", "task"])
        duration = SummaryMetricFamily("agent_etl_task_duration_seconds", "Task duration", labels=["pipeline", "task"])
        for (pipeline, task), (n_rows, n_batches, count, seconds) in self.totals.items():
            rows.add_metric([pipeline, task], n_rows)
            batches.add_metric([pipeline, task], n_batches)
            duration.add_metric([pipeline, task], count_value=count, sum_value=seconds)
        tasks = CounterMetricFamily("agent_etl_tasks", "Tasks finished", labels=["pipeline", "status"])
        for (pipeline, status), n in self.outcomes.items():
            tasks.add_metric([pipeline, status], n)
        yield from (rows, batches, duration, tasks)

    def metrics_text(self) -> str:
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is None:
            self._registry = CollectorRegistry()
            self._registry.register(self)
        return generate_latest(self._registry).decode()


_HANDLERS = {Heartbeat: MonitorAgent._seen_heartbeat, RunStarted: MonitorAgent._run_started,
             RunFinished: MonitorAgent._run_finished, TaskStarted: MonitorAgent._task_started,
             TaskProgress: MonitorAgent._task_progress, TaskCompleted: MonitorAgent._task_completed,
             TaskFailed: MonitorAgent._task_failed}
