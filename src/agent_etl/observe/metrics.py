"""Prometheus metrics of runs, counted from the bus's events, and the ``/metrics`` endpoint.

``RunMetrics.observe(event)`` keeps plain numbers (a dict update per event; the client library is
never touched on the hot path); ``families()`` builds the Prometheus families when a scrape asks.
Labels are the pipeline, the task, its stage (extract, transform, load) and the input of a quality
gate: names from the spec, so their number is bounded. A run id is never a label.

``serve(collector, port)`` serves ``/metrics`` from a thread (prometheus-client's own server), for
``agent-etl run --metrics-port`` and for a long-lived worker alike.
"""

from __future__ import annotations

import bisect
import time
from typing import Any

from agent_etl.events import (BATCH_SECONDS, AnomalyDetected, Event, GateChecked, RunFinished, RunStarted,
                              TaskAssigned, TaskCommitted, TaskCompleted, TaskFailed, TaskProgress, TaskStalled)

TASK_SECONDS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
OK = ("succeeded", "warned")


class RunMetrics:
    def __init__(self, runs: bool = True) -> None:
        """``runs=False``: leave out the run-level counts (runs, in progress, last success), which
        belong to the coordinator's process, not to a worker that runs some of a run's tasks."""
        self.count_runs = runs
        self.pipelines: dict[str, str] = {}  # run id -> pipeline, while the run is in progress
        self.stages: dict[tuple[str, str], str] = {}  # (pipeline, task) -> stage
        # (run, task) -> [attempt, rows, bytes, batches] counted so far of the attempt in progress
        self._seen: dict[tuple[str, str], list[int]] = {}
        self.work: dict[tuple[str, str], list[int]] = {}  # (pipeline, task) -> rows, bytes, batches
        self.task_seconds: dict[tuple[str, str], list[float]] = {}  # buckets..., +Inf, sum
        self.batch_seconds: dict[tuple[str, str], list[float]] = {}
        self.blocked: dict[tuple[str, str], float] = {}  # (pipeline, task) -> seconds waiting for room downstream
        self.outcomes: dict[tuple[str, str], int] = {}  # (pipeline, status) -> tasks
        self.retries: dict[tuple[str, str], int] = {}
        self.stalls: dict[tuple[str, str], int] = {}
        self.commits: dict[tuple[str, str], list[int]] = {}  # (pipeline, task) -> commits, rows
        self.gates: dict[tuple[str, str, str], int] = {}  # (pipeline, input, status) -> gates
        self.quality: dict[tuple[str, str], list[int]] = {}  # (pipeline, input) -> failed rows, quarantined, failed checks
        self.anomalies: dict[tuple[str, str, str], int] = {}  # (pipeline, input, severity)
        self.runs: dict[tuple[str, str], int] = {}  # (pipeline, status) -> runs
        self.in_progress: dict[str, int] = {}
        self.last_success: dict[str, float] = {}
        self.last_finish: dict[str, float] = {}

    def observe(self, ev: Event) -> None:
        handler = _HANDLERS.get(type(ev))
        if handler is not None:
            handler(self, ev)

    # -- events ---------------------------------------------------------------------------------

    def _run_started(self, ev: RunStarted) -> None:
        self.pipelines[ev.run_id] = ev.pipeline
        for task, stage in ev.stages.items():
            self.stages[(ev.pipeline, task)] = stage
        if self.count_runs:
            self.in_progress[ev.pipeline] = self.in_progress.get(ev.pipeline, 0) + 1

    def _run_finished(self, ev: RunFinished) -> None:
        self.pipelines.pop(ev.run_id, None)
        for key in [k for k in self._seen if k[0] == ev.run_id]:
            del self._seen[key]
        if not self.count_runs:
            return
        p = ev.pipeline
        self.in_progress[p] = max(0, self.in_progress.get(p, 0) - 1)
        self.runs[(p, ev.status)] = self.runs.get((p, ev.status), 0) + 1
        self.last_finish[p] = ev.ts
        if ev.status in OK:
            self.last_success[p] = ev.ts

    def _count(self, run_id: str, task: str, attempt: int, rows: int, nbytes: int, batches: int) -> str:
        """Add what the attempt did since its last event to its task's totals; the pipeline."""
        pipeline = self.pipelines.get(run_id, "")
        seen = self._seen.get((run_id, task))
        if seen is None or seen[0] != attempt:
            seen = self._seen[(run_id, task)] = [attempt, 0, 0, 0]
        work = self.work.get((pipeline, task))
        if work is None:
            work = self.work[(pipeline, task)] = [0, 0, 0]
        work[0] += max(0, rows - seen[1])
        work[1] += max(0, nbytes - seen[2])
        work[2] += max(0, batches - seen[3])
        seen[1:] = [max(rows, seen[1]), max(nbytes, seen[2]), max(batches, seen[3])]
        return pipeline

    def _progress(self, ev: TaskProgress) -> None:
        self._count(ev.run_id, ev.task, ev.attempt, ev.rows_total, ev.bytes_total, ev.batches)

    def _finished(self, ev: TaskCompleted | TaskFailed) -> None:
        batches = ev.batches if isinstance(ev, TaskCompleted) else sum(ev.batch_seconds)
        pipeline = self._count(ev.run_id, ev.task, ev.attempt, ev.rows, ev.bytes, batches)
        self._seen.pop((ev.run_id, ev.task), None)
        status = "succeeded" if isinstance(ev, TaskCompleted) else ("upstream_failed" if ev.upstream else "failed")
        self.outcomes[(pipeline, status)] = self.outcomes.get((pipeline, status), 0) + 1
        key = (pipeline, ev.task)
        if not (isinstance(ev, TaskFailed) and ev.upstream):  # a task that never ran took no time
            h = self.task_seconds.get(key)
            if h is None:
                h = self.task_seconds[key] = [0.0] * (len(TASK_SECONDS) + 2)
            h[bisect.bisect_left(TASK_SECONDS, ev.duration)] += 1
            h[-1] += ev.duration
        if ev.blocked:
            self.blocked[key] = self.blocked.get(key, 0.0) + ev.blocked
        if ev.batch_seconds:
            h = self.batch_seconds.get(key)
            if h is None:
                h = self.batch_seconds[key] = [0.0] * (len(BATCH_SECONDS) + 2)
            for i, n in enumerate(ev.batch_seconds[:len(BATCH_SECONDS) + 1]):
                h[i] += n
            h[-1] += ev.batch_seconds_sum

    def _assigned(self, ev: TaskAssigned) -> None:
        if ev.attempt > 1:
            key = (self.pipelines.get(ev.run_id, ""), ev.task)
            self.retries[key] = self.retries.get(key, 0) + 1

    def _stalled(self, ev: TaskStalled) -> None:
        key = (self.pipelines.get(ev.run_id, ""), ev.task)
        self.stalls[key] = self.stalls.get(key, 0) + 1

    def _committed(self, ev: TaskCommitted) -> None:
        key = (self.pipelines.get(ev.run_id, ""), ev.task)
        c = self.commits.get(key)
        if c is None:
            c = self.commits[key] = [0, 0]
        c[0] += 1
        c[1] += ev.rows

    def _gate(self, ev: GateChecked) -> None:
        r = ev.report
        if r is None:
            return
        gate = (ev.pipeline, ev.input, r["status"])
        self.gates[gate] = self.gates.get(gate, 0) + 1
        q = self.quality.get((ev.pipeline, ev.input))
        if q is None:
            q = self.quality[(ev.pipeline, ev.input)] = [0, 0, 0]
        q[0] += max(0, r["rows_in"] - r["rows_passed"])
        q[1] += r["rows_quarantined"]
        q[2] += sum(1 for c in r["checks"] if c["status"] == "failed")

    def _anomaly(self, ev: AnomalyDetected) -> None:
        pipeline = self.pipelines.get(ev.run_id, "")
        for a in ev.anomalies:
            key = (pipeline, ev.input, str(a.get("severity", "warn")))
            self.anomalies[key] = self.anomalies.get(key, 0) + 1

    # -- Prometheus ------------------------------------------------------------------------------

    def families(self) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        task_labels = ["pipeline", "task", "stage"]
        rows = CounterMetricFamily("agent_etl_rows", "Rows read, made or written by a task", labels=task_labels)
        nbytes = CounterMetricFamily("agent_etl_bytes", "Arrow bytes of the batches of a task", labels=task_labels)
        batches = CounterMetricFamily("agent_etl_batches", "Batches of a task", labels=task_labels)
        for (pipeline, task), (r, b, n) in list(self.work.items()):
            labels = [pipeline, task, self.stages.get((pipeline, task), "")]
            rows.add_metric(labels, r)
            nbytes.add_metric(labels, b)
            batches.add_metric(labels, n)
        task_h = HistogramMetricFamily("agent_etl_task_duration_seconds", "Duration of a task attempt",
                                       labels=task_labels)
        for key, h in list(self.task_seconds.items()):
            task_h.add_metric([*key, self.stages.get(key, "")], _buckets(TASK_SECONDS, h), h[-1])
        batch_h = HistogramMetricFamily("agent_etl_batch_duration_seconds", "Time a batch took to reach a task "
                                        "(read, computed or received)", labels=task_labels)
        for key, h in list(self.batch_seconds.items()):
            batch_h.add_metric([*key, self.stages.get(key, "")], _buckets(BATCH_SECONDS, h), h[-1])
        blocked = CounterMetricFamily("agent_etl_backpressure_seconds", "Time a task waited for room in its "
                                      "output channel (the steps below it were slower)", labels=task_labels)
        for key, seconds in list(self.blocked.items()):
            blocked.add_metric([*key, self.stages.get(key, "")], seconds)
        out: list[Any] = [rows, nbytes, batches, task_h, batch_h, blocked]
        out.append(_counter("agent_etl_tasks", "Task attempts finished", ["pipeline", "status"], self.outcomes))
        out.append(_counter("agent_etl_task_retries", "Task attempts after the first", ["pipeline", "task"],
                            self.retries))
        out.append(_counter("agent_etl_task_stalls", "Tasks that made no progress for the stall timeout",
                            ["pipeline", "task"], self.stalls))
        out.append(_counter("agent_etl_commits", "Commit units a load committed", ["pipeline", "task"],
                            {k: v[0] for k, v in list(self.commits.items())}))
        out.append(_counter("agent_etl_committed_rows", "Rows a load committed", ["pipeline", "task"],
                            {k: v[1] for k, v in list(self.commits.items())}))
        out.append(_counter("agent_etl_quality_gates", "Quality gates judged, by verdict",
                            ["pipeline", "input", "status"], self.gates))
        out.append(_counter("agent_etl_quality_failed_rows", "Rows that failed a row check",
                            ["pipeline", "input"], {k: v[0] for k, v in list(self.quality.items())}))
        out.append(_counter("agent_etl_quarantined_rows", "Rows set aside in quarantine", ["pipeline", "input"],
                            {k: v[1] for k, v in list(self.quality.items())}))
        out.append(_counter("agent_etl_quality_check_failures", "Checks that failed", ["pipeline", "input"],
                            {k: v[2] for k, v in list(self.quality.items())}))
        out.append(_counter("agent_etl_anomalies", "Anomalies found in a profile",
                            ["pipeline", "input", "severity"], self.anomalies))
        out.append(_counter("agent_etl_runs", "Runs finished, by status", ["pipeline", "status"], self.runs))
        running = GaugeMetricFamily("agent_etl_runs_in_progress", "Runs in progress", labels=["pipeline"])
        for p, n in list(self.in_progress.items()):
            running.add_metric([p], n)
        last = GaugeMetricFamily("agent_etl_last_success_timestamp_seconds", "When a run last succeeded",
                                 labels=["pipeline"])
        for p, ts in list(self.last_success.items()):
            last.add_metric([p], ts)
        ended = GaugeMetricFamily("agent_etl_last_run_timestamp_seconds", "When a run last ended (any status)",
                                  labels=["pipeline"])
        for p, ts in list(self.last_finish.items()):
            ended.add_metric([p], ts)
        out += [running, last, ended]
        return out


def _buckets(bounds: tuple[float, ...], h: list[float]) -> list[tuple[str, float]]:
    out, total = [], 0.0
    for bound, n in zip(bounds, h):
        total += n
        out.append((repr(float(bound)), total))
    out.append(("+Inf", total + h[len(bounds)]))
    return out


def _counter(name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], float]) -> Any:
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in list(values.items()):  # a scrape runs in its own thread
        family.add_metric(list(key), n)
    return family


_HANDLERS = {RunStarted: RunMetrics._run_started, RunFinished: RunMetrics._run_finished,
             TaskProgress: RunMetrics._progress, TaskCompleted: RunMetrics._finished,
             TaskFailed: RunMetrics._finished, TaskAssigned: RunMetrics._assigned,
             TaskStalled: RunMetrics._stalled, TaskCommitted: RunMetrics._committed,
             GateChecked: RunMetrics._gate, AnomalyDetected: RunMetrics._anomaly}


class MetricsServer:
    """``/metrics`` served from a daemon thread; ``port`` is the one bound (ask for 0 to get a free one)."""

    def __init__(self, collector: Any, port: int, host: str = "127.0.0.1"):
        from prometheus_client import CollectorRegistry, start_http_server

        self.registry = CollectorRegistry()
        self.registry.register(collector)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            from agent_etl.exceptions import SpecError

            raise SpecError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}; pick another "
                            "--metrics-port") from None
        self.host, self.port = host, self._server.server_address[1]
        self.started = time.time()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve(collector: Any, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``collector`` (a ``MonitorAgent``, or anything with ``collect()``) at
    ``http://host:port/metrics`` until ``close()``. What ``run --metrics-port`` and a worker call."""
    return MetricsServer(collector, port, host)
