"""The monitor agent: counts rows, batches and durations per task from the events, keeps the last
heartbeat of every agent, tells when a busy agent goes silent or a task makes no progress, sends
the alerts a run asks for, and exposes Prometheus metrics (``observe.metrics``)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agent_etl.agents.base import Agent
from agent_etl.events import (AgentStalled, AnomalyDetected, Event, GateChecked, Heartbeat, RunFinished, RunStarted,
                              TaskCommitted, TaskCompleted, TaskEvent, TaskFailed, TaskProgress, TaskStalled,
                              TaskStarted)
from agent_etl.observe.alerts import Alerts
from agent_etl.observe.metrics import RunMetrics


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
    attempt: int = 1
    moved: float = 0.0  # when it last made progress (started, a batch, a commit)
    stalled: bool = False

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

    def __init__(self, bus, *, stall_timeout: float = 60.0, keep_runs: int = 100, alerts: Alerts | None = None,
                 scope: set[str] | None = None, **kw):
        """``scope``: the ids of the agents whose work to count (a worker's own, ``agent-etl worker
        --metrics-port``); then runs, alerts and stalls are left to the coordinator's monitor."""
        super().__init__(bus, **kw)
        self.scope = scope
        self.keep_runs = keep_runs
        self._finished: deque[str] = deque()
        self.stall_timeout = stall_timeout
        self.tasks: dict[tuple[str, str], TaskStats] = {}
        self.agents: dict[str, AgentSeen] = {}
        self.runs: dict[str, str] = {}  # run_id -> pipeline
        self._run_tasks: dict[str, list[str]] = {}  # run_id -> its tasks in self.tasks, to forget them at once
        self._watch: asyncio.Task | None = None
        self.metrics = RunMetrics(runs=scope is None)
        self.alerts = alerts if alerts is not None else Alerts()
        self._specs: dict[str, Any] = {}  # run id -> its spec (task inputs, stall timeout, alerts)
        self._gate_alerted: set[tuple[str, str]] = set()  # (run, input) whose failed gate was alerted
        self._registry: Any = None

    async def on_start(self) -> None:
        self._subs.append(await self.bus.listen("*", self._on_event))
        if self.scope is not None:
            return
        # alerts go out from a queue of their own: a slow webhook never holds up a publisher
        for topic in (RunFinished, GateChecked, TaskFailed, AnomalyDetected, TaskStalled, AgentStalled):
            self._subs.append(await self.bus.subscribe(topic, self._alert))
        self._watch = asyncio.get_running_loop().create_task(self._watch_stalls(), name=f"stalls:{self.id}")

    async def on_stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self.alerts.close()  # the alerts in flight are sent (each gives up after its attempts)

    def stats(self, run_id: str) -> list[TaskStats]:
        return [s for (r, _), s in self.tasks.items() if r == run_id]

    def _on_event(self, ev: Event) -> None:
        if self.scope is not None and isinstance(ev, TaskEvent) and ev.agent not in self.scope:
            return  # another process's work
        agent = getattr(ev, "agent", None)
        if agent:
            seen = self.agents.get(agent)
            if seen is not None:
                seen.last_seen = ev.ts
        handler = _HANDLERS.get(type(ev))
        if handler is not None:  # one dict lookup instead of an isinstance chain: this runs for every event
            handler(self, ev)
        self.metrics.observe(ev)

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
        self._specs[run_id] = _spec(ev.description)

    def _run_finished(self, ev: RunFinished) -> None:
        self._finished.append(ev.run_id)
        while len(self._finished) > self.keep_runs:  # a long-lived monitor keeps recent runs only
            old = self._finished.popleft()
            self.runs.pop(old, None)
            self._specs.pop(old, None)
            self._gate_alerted = {k for k in self._gate_alerted if k[0] != old}
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
        s.attempt, s.moved, s.stalled = ev.attempt, ev.ts, False

    def _task_progress(self, ev: TaskProgress) -> None:
        s = self._stats(ev)
        s.rows, s.batches, s.moved = ev.rows_total, ev.batches, ev.ts

    def _task_committed(self, ev: TaskCommitted) -> None:
        self._stats(ev).moved = ev.ts

    def _task_completed(self, ev: TaskCompleted) -> None:
        s = self.tasks.get((ev.run_id, ev.task)) or self._stats(ev)
        s.status, s.rows, s.batches, s.duration = "succeeded", ev.rows, ev.batches, ev.duration

    def _task_failed(self, ev: TaskFailed) -> None:
        s = self._stats(ev)
        s.status, s.duration, s.error = ("upstream_failed" if ev.upstream else "failed"), ev.duration, ev.error

    async def _watch_stalls(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min([self.stall_timeout, *self._task_timeouts()]) / 4))
            now = time.time()
            for agent_id, seen in self.agents.items():
                silent = now - seen.last_seen
                if seen.running and silent > self.stall_timeout and not seen.stalled:
                    seen.stalled = True
                    await self.bus.publish(AgentStalled(agent=agent_id, silent_for=silent, running=seen.running))
            for s in self.stalled_tasks(now):
                s.stalled = True
                await self.bus.publish(TaskStalled(run_id=s.run_id, task=s.task, agent=s.agent, attempt=s.attempt,
                                                   silent_for=now - s.moved))

    def _task_timeouts(self) -> list[float]:
        return [t for t in (getattr(spec.defaults, "stall_timeout", None) for spec in self._specs.values()) if t]

    def stalled_tasks(self, now: float) -> list[TaskStats]:
        """Running tasks of runs with a ``stall_timeout`` that made no progress for that long while
        none of their inputs is still running (a task waiting for its input is not stalled)."""
        out = []
        for run_id, spec in self._specs.items():
            limit = getattr(getattr(spec, "defaults", None), "stall_timeout", None)
            if not limit or run_id not in self.runs:
                continue
            inputs = _inputs(spec)
            for task in self._run_tasks.get(run_id, ()):
                s = self.tasks.get((run_id, task))
                if s is None or s.status != "running" or s.stalled or now - s.moved <= limit:
                    continue
                if any((u := self.tasks.get((run_id, i))) is not None and u.status == "running"
                       for i in inputs.get(task, ())):
                    continue
                out.append(s)
        return out

    async def _alert(self, ev: Event) -> None:
        """Hand what deserves an alert to the webhooks of its run (and of the settings)."""
        run_id = getattr(ev, "run_id", None)
        spec = self._specs.get(run_id) if run_id else None
        hooks = getattr(spec, "alerts", None) or []
        pipeline = self.runs.get(run_id, "") if run_id else ""
        if isinstance(ev, RunFinished):
            if ev.status not in ("succeeded", "warned"):
                s = [t for t in self.stats(ev.run_id) if t.status == "failed"]
                self.alerts.send("run_failed", hooks, pipeline=ev.pipeline, run_id=ev.run_id, status=ev.status,
                                 message=s[0].error if s else ev.status, duration=ev.duration,
                                 failed_tasks=[t.task for t in s])
        elif isinstance(ev, (GateChecked, TaskFailed)):
            # a gate that fails stops its step: its report comes with the TaskFailed (else GateChecked)
            reports = [ev.report] if isinstance(ev, GateChecked) else ev.details.get("quality", [])
            for r in reports:
                if not r or r.get("status") != "failed" or (ev.run_id, r["input"]) in self._gate_alerted:
                    continue
                self._gate_alerted.add((ev.run_id, r["input"]))
                self.alerts.send("quality_failed", hooks, pipeline=pipeline, run_id=ev.run_id, task=ev.task,
                                 input=r["input"], rows_in=r["rows_in"], rows_passed=r["rows_passed"],
                                 failed_checks=[{"check": c["label"], "failed_rows": c["failed_rows"],
                                                 "message": c["message"]} for c in r["checks"]
                                                if c["status"] == "failed"],
                                 message=f"quality gate on {r['input']!r} failed")
        elif isinstance(ev, AnomalyDetected):
            self.alerts.send("anomaly", hooks, pipeline=pipeline, run_id=ev.run_id, task=ev.task, input=ev.input,
                             anomalies=ev.anomalies, message="; ".join(a.get("message", "") for a in ev.anomalies))
        elif isinstance(ev, TaskStalled):
            self.alerts.send("stall", hooks, pipeline=pipeline, run_id=ev.run_id, task=ev.task, agent=ev.agent,
                             silent_for=round(ev.silent_for, 3),
                             message=f"task {ev.task!r} made no progress for {ev.silent_for:.0f}s; retrying it")
        elif isinstance(ev, AgentStalled):
            run_ids = sorted({r.partition("/")[0] for r in ev.running})
            for rid in run_ids or [""]:
                spec = self._specs.get(rid)
                self.alerts.send("stall", getattr(spec, "alerts", None) or [], pipeline=self.runs.get(rid, ""),
                                 run_id=rid or None, agent=ev.agent, silent_for=round(ev.silent_for, 3),
                                 running=ev.running, message=f"agent {ev.agent} silent for {ev.silent_for:.0f}s")

    # -- Prometheus ------------------------------------------------------------------------------
    # The run metrics are plain numbers updated per event (observe.metrics); the Prometheus families
    # are built only when metrics are scraped, so the hot path never touches the client library.

    def collect(self):
        """The prometheus_client collector protocol: one family per metric, built now."""
        from prometheus_client.core import GaugeMetricFamily

        yield from self.metrics.families()
        now = time.time()
        age = GaugeMetricFamily("agent_etl_agent_heartbeat_age_seconds", "Seconds since an agent was last heard from",
                                labels=["agent", "kind"])
        up = GaugeMetricFamily("agent_etl_agent_up", "1 while an agent is heard from, 0 once it is stalled",
                               labels=["agent", "kind"])
        for agent_id, seen in list(self.agents.items()):
            age.add_metric([agent_id, seen.kind], max(0.0, now - seen.last_seen))
            up.add_metric([agent_id, seen.kind], 0 if seen.stalled else 1)
        yield age
        yield up
        pending = getattr(self.bus, "pending", None)
        if pending is not None:
            yield GaugeMetricFamily("agent_etl_bus_queue_depth", "Events waiting in the bus's subscriber queues",
                                    value=pending())
        yield GaugeMetricFamily("agent_etl_tasks_running", "Task attempts in progress",
                                value=sum(1 for s in list(self.tasks.values()) if s.status == "running"))
        yield GaugeMetricFamily("agent_etl_alerts_failed", "Alerts that could not be delivered",
                                value=self.alerts.failed)

    def metrics_text(self) -> str:
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is None:
            self._registry = CollectorRegistry()
            self._registry.register(self)
        return generate_latest(self._registry).decode()


def _spec(description: Any) -> Any:
    """The spec of a run from its RunStarted description (in this process: already parsed)."""
    if description is None:
        return None
    try:
        if hasattr(description, "pipeline"):
            return description.pipeline().spec
        from agent_etl.run_context import RunDescription

        return RunDescription.model_validate(description).pipeline().spec
    except Exception:  # a description this process cannot rebuild (a tool not installed here): no alerts
        return None


def _inputs(spec: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t in getattr(spec, "transform", []):
        out[t.name] = list(t.input) if isinstance(t.input, list) else [t.input]
    for name, step in getattr(spec, "load", {}).items():
        out[name] = [step.input]
    return out


_HANDLERS = {Heartbeat: MonitorAgent._seen_heartbeat, RunStarted: MonitorAgent._run_started,
             RunFinished: MonitorAgent._run_finished, TaskStarted: MonitorAgent._task_started,
             TaskProgress: MonitorAgent._task_progress, TaskCompleted: MonitorAgent._task_completed,
             TaskCommitted: MonitorAgent._task_committed,
             TaskFailed: MonitorAgent._task_failed}
