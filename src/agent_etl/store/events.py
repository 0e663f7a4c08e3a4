"""A run's events in the run store, for ``agent-etl events RUN_ID [--follow]``.

The coordinator hands every event of a run in progress to ``EventLog.add`` (a list append on the
loop); they are written in one INSERT with the store's next flush (every second, and at the run's
end). Heartbeats and per-batch summaries are not kept; a run's description and a gate's profile are
left out of the stored JSON (the run and the profiles tables hold them).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from sqlalchemy import Column, Float, Index, Integer, String, Table, Text, select

from agent_etl.store.schema import metadata

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("ts", Float, nullable=False),
    Column("topic", String(40), nullable=False),
    Column("task", String(200)),
    Column("data", Text, nullable=False),  # the event as JSON (events.parse_event rebuilds it)
    Index("ix_events_run", "run_id", "id"),
)

_LEFT_OUT = {"run.started": {"description", "resume", "cursors"}, "gate.checked": {"profile"}}


class EventLog:
    def __init__(self, engine: Any):
        self.engine = engine
        self._pending: list[Any] = []
        self._lock = threading.Lock()

    def add(self, run_id: str, event: Any) -> None:
        with self._lock:
            self._pending.append(event)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        rows = [{"run_id": ev.run_id, "ts": ev.ts, "topic": ev.topic, "task": getattr(ev, "task", None),
                 "data": ev.model_dump_json(exclude=_LEFT_OUT.get(ev.topic))} for ev in pending]
        from agent_etl.store.runs import _insert_many  # the driver's executemany: a tenth of Core's cost per row

        with self.engine.begin() as conn:
            _insert_many(conn, events, rows)

    def read(self, run_id: str, after: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        """The events of ``run_id`` stored after id ``after``, oldest first: ``{id, ts, topic, task, data}``."""
        q = (select(events).where(events.c.run_id == run_id, events.c.id > after).order_by(events.c.id)
             .limit(limit))
        with self.engine.connect() as conn:
            return [{**r._mapping, "data": json.loads(r.data)} for r in conn.execute(q)]
