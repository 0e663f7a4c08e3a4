"""An ``Experience``: one task of one run, as memory keeps it: the task's descriptor, the agent
that ran it, the parameters it ran with and the outcome. Stored as a ``Record`` whose document is the
descriptor's JSON (what gets embedded) and whose metadata is the rest, flat."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from agent_etl.memory.base import Record
from agent_etl.memory.descriptor import TaskDescriptor, describe

_PARAMS = ("batch_size", "partitions", "concurrency")


@dataclass
class Experience:
    run_id: str
    pipeline: str
    task: str
    descriptor: TaskDescriptor
    agent: str
    params: dict[str, int] = field(default_factory=dict)  # batch_size, partitions, concurrency
    status: str = "succeeded"
    duration: float = 0.0
    rows: int = 0
    rows_per_second: float = 0.0
    error_type: str | None = None
    quality: dict[str, Any] = field(default_factory=dict)  # status, rows_in, rows_quarantined, checks_failed
    created_at: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        return f"{self.run_id}/{self.task}"

    def to_record(self) -> Record:
        d = self.descriptor
        meta: dict[str, Any] = {
            "run_id": self.run_id, "pipeline": self.pipeline, "task": self.task, "kind": d.kind, "tool": d.tool,
            "source": ",".join(d.sources), "destination": ",".join(d.destinations), "agent": self.agent,
            "status": self.status, "duration": float(self.duration), "rows": int(self.rows),
            "rows_per_second": float(self.rows_per_second), "created_at": float(self.created_at),
            **{k: int(v) for k, v in self.params.items()},
            **{f"quality_{k}": v for k, v in self.quality.items() if isinstance(v, (str, int, float, bool))},
        }
        if self.error_type:
            meta["error_type"] = self.error_type
        return Record(self.id, d.to_json(), meta)

    @classmethod
    def from_record(cls, record: Record) -> Experience:
        m = record.metadata
        return cls(run_id=str(m.get("run_id", "")), pipeline=str(m.get("pipeline", "")), task=str(m.get("task", "")),
                   descriptor=TaskDescriptor.from_json(record.document), agent=str(m.get("agent", "")),
                   params={k: int(m[k]) for k in _PARAMS if k in m}, status=str(m.get("status", "")),
                   duration=float(m.get("duration", 0.0)), rows=int(m.get("rows", 0)),
                   rows_per_second=float(m.get("rows_per_second", 0.0)),
                   error_type=str(m["error_type"]) if "error_type" in m else None,
                   quality={k[len("quality_"):]: v for k, v in m.items() if k.startswith("quality_")},
                   created_at=float(m.get("created_at", 0.0)))


def experiences(run_id: str, pipeline: Any, results: dict[str, Any],
                profiles: dict[str, dict[str, Any]] | None = None) -> list[Experience]:
    """The experiences of a finished run: one per task that ran (tasks skipped as committed
    before a resume, or never started, teach nothing). ``results``: task name -> ``TaskResult``;
    ``profiles``: the run's data profiles by input (``RunStore.run_profiles``), for schema shapes."""
    spec = pipeline.spec
    schemas = {name: p.get("profile", {}).get("schema") for name, p in (profiles or {}).items()}
    out: list[Experience] = []
    for task in pipeline.tasks:
        r = results.get(task.name)
        if r is None or r.status in ("pending", "running") or (r.details or {}).get("resumed"):
            continue
        schema = _schema_of(task, pipeline, schemas)
        rows = r.rows or None
        details = r.details or {}
        tuned = details.get("tuning") or {}  # what the coordinator tuned (agents.tuning) wins over the spec
        params = {"batch_size": int(tuned.get("batch_size") or task.options.get("batch_size")
                                    or spec.defaults.batch_size),
                  "concurrency": int(spec.defaults.concurrency)}
        partitions = tuned.get("partitions", task.options.get("partitions"))
        if isinstance(partitions, int):
            params["partitions"] = partitions
        out.append(Experience(
            run_id=run_id, pipeline=pipeline.name, task=task.name,
            descriptor=describe(task, pipeline, schema=schema, rows=rows), agent=r.agent or "", params=params,
            status=r.status, duration=float(r.duration or 0.0), rows=int(r.rows or 0),
            rows_per_second=float(r.rows / r.duration) if r.duration else 0.0,
            error_type=details.get("error_type") if r.status != "succeeded" else None,
            quality=_quality(details.get("quality") or [])))
    return out


def _schema_of(task: Any, pipeline: Any, schemas: dict[str, Any]) -> dict[str, str] | None:
    """The profiled schema of the task's data, else of the nearest profiled input upstream."""
    by_name = {t.name: t for t in pipeline.tasks}
    todo, seen = [task.name], set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        if schemas.get(name):
            return schemas[name]
        t = by_name.get(name)
        if t is not None:
            todo += list(t.data_inputs)
    return None


def _quality(reports: list[dict[str, Any]]) -> dict[str, Any]:
    if not reports:
        return {}
    order = ["passed", "warned", "quarantined", "failed"]
    worst = max((r.get("status", "passed") for r in reports), key=lambda s: order.index(s) if s in order else 0)
    return {"status": worst, "rows_in": sum(int(r.get("rows_in") or 0) for r in reports),
            "rows_quarantined": sum(int(r.get("rows_quarantined") or 0) for r in reports),
            "checks_failed": sum(1 for r in reports for c in r.get("checks", []) if c.get("status") == "failed")}
