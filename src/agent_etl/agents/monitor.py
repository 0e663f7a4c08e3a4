"""The monitor agent: counts rows, batches and durations per task from the events, keeps the last
heartbeat of every agent, tells when a busy agent goes silent, and exposes Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from agent_etl.agents.base import Agent
from agent_etl.events import (AgentStalled, Event, Heartbeat, RunFinished, RunStarted, TaskCompleted, TaskFailed,
                              TaskProgress, TaskStarted)


@dataclass
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

    def __init__(self, bus, *, stall_timeout: float = 60.0, **kw):
        super().__init__(bus, **kw)
        self.stall_timeout = stall_timeout
        self.tasks: dict[tuple[str, str], TaskStats] = {}
        self.agents: dict[str, AgentSeen] = {}
        self.runs: dict[str, str] = {}  # run_id -> pipeline
        self._watch: asyncio.Task | None = None
        self._metrics: Any = None

    async def on_start(self) -> None:
        self._subs.append(self.bus.subscribe("*", self._on_event, maxsize=4096))
        self._watch = asyncio.get_running_loop().create_task(self._watch_stalls(), name=f"stalls:{self.id}")

    async def on_stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)

    def stats(self, run_id: str) -> list[TaskStats]:
        return [s for (r, _), s in self.tasks.items() if r == run_id]

    async def _on_event(self, ev: Event) -> None:
        agent = getattr(ev, "agent", None)
        if agent and agent in self.agents:
            self.agents[agent].last_seen = ev.ts
        if isinstance(ev, Heartbeat):
            seen = self.agents.setdefault(ev.agent, AgentSeen(ev.kind, ev.ts))
            seen.last_seen, seen.running, seen.stalled = ev.ts, ev.running, False
            return
        if isinstance(ev, RunStarted):
            self.runs[ev.run_id] = ev.pipeline
            for t in ev.tasks:
                self.tasks[(ev.run_id, t)] = TaskStats(ev.run_id, t)
            return
        if isinstance(ev, RunFinished):
            return
        run_id, task = getattr(ev, "run_id", None), getattr(ev, "task", None)
        if run_id is None or task is None:
            return
        s = self.tasks.setdefault((run_id, task), TaskStats(run_id, task))
        if isinstance(ev, TaskStarted):
            s.agent, s.status, s.started, s.rows, s.batches = ev.agent, "running", ev.ts, 0, 0
        elif isinstance(ev, TaskProgress):
            s.rows, s.batches = ev.rows_total, ev.batches
        elif isinstance(ev, TaskCompleted):
            s.status, s.rows, s.batches, s.duration = "succeeded", ev.rows, ev.batches, ev.duration
            self._observe(run_id, s)
        elif isinstance(ev, TaskFailed):
            s.status, s.duration, s.error = ("upstream_failed" if ev.upstream else "failed"), ev.duration, ev.error
            self._observe(run_id, s)

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

    def _observe(self, run_id: str, s: TaskStats) -> None:
        m = self.metrics
        pipeline = self.runs.get(run_id, "")
        m["rows"].labels(pipeline, s.task).inc(s.rows)
        m["batches"].labels(pipeline, s.task).inc(s.batches)
        m["tasks"].labels(pipeline, s.status).inc()
        if s.duration is not None:
            m["duration"].labels(pipeline, s.task).observe(s.duration)

    @property
    def metrics(self) -> dict[str, Any]:
        if self._metrics is None:
            from prometheus_client import CollectorRegistry, Counter, Histogram

            reg = CollectorRegistry()
            self._metrics = {
                "registry": reg,
                "rows": Counter("agent_etl_rows", "Rows processed", ["pipeline", "task"], registry=reg),
                "batches": Counter("agent_etl_batches", "Batches processed", ["pipeline", "task"], registry=reg),
                "tasks": Counter("agent_etl_tasks", "Tasks finished", ["pipeline", "status"], registry=reg),
                "duration": Histogram("agent_etl_task_duration_seconds", "Task duration", ["pipeline", "task"],
                                      registry=reg),
            }
        return self._metrics

    def metrics_text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.metrics["registry"]).decode()
