"""The run store: every run and task, their row counts, durations, status, errors and the agent
chosen (and why), plus loader checkpoints. SQLAlchemy Core; SQLite at ``.agent-etl/runs.db`` by
default, any SQLAlchemy URL otherwise.

Writes that only record progress (a run starting, task updates) are kept in memory and flushed
together, one transaction for many rows: the coordinator flushes every second and when a run ends,
so the store costs microseconds per task, not a transaction each. Checkpoints are written at once:
they must be durable when the loader's commit is.

The audit trail (``store.audit``) rides on the same writes: records appended with ``audit`` are
chained and written with the next write, in the order they were appended.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, bindparam, create_engine, delete, event, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Engine

from agent_etl.private import private_dir, private_file
from agent_etl.redaction import redact_data
from agent_etl.store import audit as audit_chain
from agent_etl.store.events import EventLog
from agent_etl.store.schema import audit, checkpoints, decisions, metadata, profiles, runs, state, tasks
from agent_etl.tempfiles import alive


@dataclass
class RunRecord:
    run: dict[str, Any]
    tasks: list[dict[str, Any]]


class RunStore:
    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            db = Path(url.removeprefix("sqlite:///"))
            private_dir(db.parent)  # the state folder: owner-only, as the database and its WAL
            private_file(db)
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.events = EventLog(self.engine)  # its table is on ``metadata`` once store.events is imported
        metadata.create_all(self.engine)
        _add_missing_columns(self.engine)
        # writes not made yet: the tasks' updates go with the next flush, one executemany per set of
        # columns (a run's tasks themselves are inserted with the run, start_run)
        self._new_runs: dict[str, dict[str, Any]] = {}
        self._run_updates: dict[str, dict[str, Any]] = {}
        self._task_updates: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._chain = audit_chain.Chain()
        self._secrets: dict[str, list[str]] = {}  # run id -> the secrets masked in what is written of it
        self._writing = threading.Lock()  # one write transaction at a time: the audit chain's order

    @classmethod
    def at(cls, home: Path) -> RunStore:
        return cls(f"sqlite:///{home / 'runs.db'}")

    # -- writes ---------------------------------------------------------------------------------

    def flush(self) -> None:
        with self._flushing:  # flushes run one at a time, so writes land in the order they were made
            self.events.flush()  # before the runs' rows: a follower that sees a run end has its last events
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            new_runs, self._new_runs = list(self._new_runs.values()), {}
            run_updates, self._run_updates = self._run_updates, {}
            task_updates, self._task_updates = self._task_updates, {}
        if not (new_runs or run_updates or task_updates or self._chain.pending):
            return

        def write(conn: Any) -> None:
            if new_runs:
                _insert_many(conn, runs, new_runs)
            for run_id, values in run_updates.items():
                _update_run(conn, run_id, values)
            # one statement per set of columns, run as executemany
            by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for (run_id, task), values in task_updates.items():
                by_columns.setdefault(tuple(sorted(values)), []).append({"_run_id": run_id, "_task": task, **values})
            for columns, rows in by_columns.items():
                stmt = (update(tasks).where(tasks.c.run_id == bindparam("_run_id"), tasks.c.task == bindparam("_task"))
                        .values({c: bindparam(c) for c in columns}))
                conn.execute(stmt, rows)

        self._write(write)

    def _write(self, work: Any) -> None:
        """Run ``work(conn)`` in a transaction that also writes the audit records appended so far.
        Another process appending to a run's chain at the same time makes the insert collide on
        (run, seq): then the chain's head is read again and the transaction retried."""
        with self._writing:
            for attempt in range(5):
                with self._lock:
                    records, self._chain.pending = self._chain.pending, []
                try:
                    with self.engine.begin() as conn:
                        work(conn)
                        heads = {}
                        if records:
                            rows, heads = self._chain.rows(conn, records)
                            _insert_many(conn, audit, rows)
                except Exception as e:
                    self._requeue(records)
                    if not records or attempt == 4 or not (_integrity(e) or _stale_snapshot(e)):
                        raise
                    self._chain.forget({r[0] for r in records})
                    continue
                except BaseException:
                    self._requeue(records)
                    raise
                self._chain.advance(heads)
                return

    def _requeue(self, records: list[Any]) -> None:
        with self._lock:
            self._chain.pending[:0] = records

    def audit(self, run_id: str, kind: str, task: str | None = None, data: Any = None) -> None:
        """Append a record to the audit trail of ``run_id`` (written with the store's next write)."""
        record = (run_id, time.time(), kind, task, audit_chain.text(self._clean(run_id, data)))
        with self._lock:
            self._chain.pending.append(record)

    def start_run(self, run_id: str, pipeline: str, fingerprint: str, spec_path: str | None,
                  plan: list[dict[str, Any]], description: dict[str, Any] | None = None,
                  cursors: dict[str, Any] | None = None) -> None:
        now = time.time()
        self.audit(run_id, "run.started", None, {"pipeline": pipeline, "fingerprint": fingerprint,
                                                 "spec_path": spec_path, "tasks": [t["task"] for t in plan],
                                                 "cursors": cursors or None, "owner": OWNER})
        # the run's row and its tasks at once, in one transaction: a process killed in its first
        # second must leave a run that shows as crashed, with its tasks, and can be resumed (with the
        # tasks left to the next flush, a coordinator killed before it left a run without tasks, whose
        # resume then had none to mark: runs show listed none)
        def write(conn: Any) -> None:
            _insert_many(conn, runs, [{
                "run_id": run_id, "pipeline": pipeline, "fingerprint": fingerprint, "spec_path": spec_path,
                "status": "running", "started_at": now, "rows_loaded": 0, "description": description,
                "owner": OWNER, "heartbeat_at": now, "resumes": 0, "cursors": cursors or None}])
            if plan:
                _insert_many(conn, tasks, [{"run_id": run_id, "status": "pending", "attempts": 0, "rows": 0,
                                            "batches": 0, **t} for t in plan])

        self._write(write)

    def resume_run(self, run_id: str, plan: list[dict[str, Any]], description: dict[str, Any]) -> None:
        """Take ``run_id`` up again in this process: running, with a new lease, and the description
        it goes on with (a forced resume's new spec); tasks that will run again are pending (the
        others keep what they had)."""
        now = time.time()
        self.flush()
        with self.engine.connect() as conn:
            resumes = conn.execute(select(runs.c.resumes).where(runs.c.run_id == run_id)).scalar() or 0
        self.audit(run_id, "run.resumed", None, {"resume": resumes + 1, "fingerprint": description.get("fingerprint"),
                                                 "tasks": [t["task"] for t in plan], "owner": OWNER})

        def write(conn: Any) -> None:
            conn.execute(update(runs).where(runs.c.run_id == run_id).values(
                status="running", exit_code=None, finished_at=None, error=None, owner=OWNER, heartbeat_at=now,
                resumes=resumes + 1, description=description))
            for t in plan:
                conn.execute(update(tasks).where(tasks.c.run_id == run_id, tasks.c.task == t["task"]).values(**{
                    k: v for k, v in t.items() if k != "task"}))

        self._write(write)

    def renew(self, run_ids: list[str]) -> None:
        """Renew the lease of runs in progress in this process (the coordinator does, every second)."""
        if run_ids:
            with self.engine.begin() as conn:
                conn.execute(update(runs).where(runs.c.run_id.in_(run_ids)).values(heartbeat_at=time.time()))

    def protect(self, run_id: str, secrets: Any) -> None:
        """Mask ``secrets`` (``agent_etl.redaction``) in the errors, details and audit records written
        of ``run_id`` from now on."""
        self._secrets[run_id] = [s for s in secrets if s]
        if len(self._secrets) > 1000:  # runs long over
            for old in list(self._secrets)[:500]:
                del self._secrets[old]

    def _clean(self, run_id: str, value: Any) -> Any:
        secrets = self._secrets.get(run_id)
        return redact_data(value, secrets) if secrets and value is not None else value

    def update_task(self, run_id: str, task: str, **values: Any) -> None:
        for name in ("error", "details"):
            if values.get(name) is not None:
                values[name] = self._clean(run_id, values[name])
        with self._lock:
            self._task_updates.setdefault((run_id, task), {}).update(values)

    def finish_run(self, run_id: str, status: str, exit_code: int, rows_loaded: int, error: str | None,
                   duration: float) -> None:
        error = self._clean(run_id, error)
        values = {"status": status, "exit_code": exit_code, "finished_at": time.time(), "rows_loaded": rows_loaded,
                  "error": error, "duration": duration}
        self.audit(run_id, "run.finished", None, {"status": status, "exit_code": exit_code, "rows_loaded": rows_loaded,
                                                  "error": error, "duration": round(duration, 6)})
        with self._lock:
            row = self._new_runs.get(run_id)
            (row if row is not None else self._run_updates.setdefault(run_id, {})).update(values)
        self.flush()

    def checkpoint(self, run_id: str, pipeline: str, task: str, position: dict[str, Any] | None, rows: int) -> None:
        now = time.time()
        # the commit's audit record goes in the checkpoint's own transaction
        self.audit(run_id, "commit", task, {"rows": rows, "position": position})
        self._write(lambda conn: _insert_many(conn, checkpoints, [{
            "run_id": run_id, "pipeline": pipeline, "task": task, "position": position, "rows": rows,
            "created_at": now}]))

    def decide(self, run_id: str, members: list[tuple[str, int]]) -> None:
        """Record, in one transaction written at once, that units ``(task, unit)`` of ``run_id`` commit."""
        if not members:
            return
        now = time.time()
        self.audit(run_id, "commit.decided", None, {"units": [[t, u] for t, u in members]})

        def write(conn: Any) -> None:
            # a retried attempt counts its units from 1 again: a decision already there stays
            have = {(r.task, r.unit) for r in conn.execute(select(decisions.c.task, decisions.c.unit).where(
                decisions.c.run_id == run_id, decisions.c.task.in_([t for t, _ in members])))}
            new = [{"run_id": run_id, "task": task, "unit": unit, "decided_at": now}
                   for task, unit in dict.fromkeys(members) if (task, unit) not in have]
            if new:
                _insert_many(conn, decisions, new)

        self._write(write)

    def decided(self, run_id: str, task: str, unit: int) -> bool | None:
        """Whether unit ``unit`` of load ``task`` of ``run_id`` was decided to commit (``decide``);
        None for a run this store does not know (another pipeline's, with a task of the same name:
        not ours to settle)."""
        self.flush()
        with self.engine.connect() as conn:
            if conn.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first() is None:
                return None
            return conn.execute(select(decisions.c.unit).where(
                decisions.c.run_id == run_id, decisions.c.task == task, decisions.c.unit == unit)).first() is not None

    def save_state(self, pipeline: str, run_id: str, values: dict[str, Any]) -> None:
        """Replace the carried-over state of tasks of ``pipeline`` (called only for successful runs)."""
        if not values:
            return
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(delete(state).where(state.c.pipeline == pipeline, state.c.task.in_(list(values))))
            _insert_many(conn, state, [{"pipeline": pipeline, "task": task, "value": value, "run_id": run_id,
                                        "updated_at": now} for task, value in values.items()])

    def load_state(self, pipeline: str, task: str) -> Any:
        """The state the last successful run of ``pipeline`` saved for ``task`` (None if none did)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(state.c.value).where(state.c.pipeline == pipeline, state.c.task == task)).first()
        return None if row is None else row[0]

    def save_profile(self, run_id: str, pipeline: str, input: str, profile: dict[str, Any],
                     anomalies: list[dict[str, Any]] | None = None) -> None:
        """Store the data profile of ``input`` in this run (a retried task replaces its earlier one)."""
        now = time.time()

        def write(conn: Any) -> None:
            conn.execute(delete(profiles).where(profiles.c.run_id == run_id, profiles.c.input == input))
            _insert_many(conn, profiles, [{"run_id": run_id, "input": input, "pipeline": pipeline,
                                           "created_at": now, "profile": profile, "anomalies": anomalies}])

        self._write(write)

    def set_anomalies(self, run_id: str, input: str, anomalies: list[dict[str, Any]] | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(profiles).where(profiles.c.run_id == run_id, profiles.c.input == input)
                         .values(anomalies=anomalies))

    # -- reads ----------------------------------------------------------------------------------

    def run_profiles(self, run_id: str) -> dict[str, dict[str, Any]]:
        """``{input: {"profile": ..., "anomalies": [...] | None}}`` of one run, inputs in storing order."""
        q = select(profiles.c.input, profiles.c.profile, profiles.c.anomalies).where(
            profiles.c.run_id == run_id).order_by(profiles.c.created_at)
        with self.engine.connect() as conn:
            return {r.input: {"profile": r.profile, "anomalies": r.anomalies} for r in conn.execute(q)}

    def profile_history(self, pipeline: str, input: str, limit: int = 100,
                        before: str | float | None = None, times: bool = False) -> list[Any]:
        """The last ``limit`` profiles of ``input`` from successful runs of ``pipeline``, oldest first.

        Only runs that finished ``succeeded`` (or ``warned``) count: a failed run's data is not a
        baseline. ``before`` is a run id (that run is left out, and so is anything stored after
        it) or a ``time.time()`` timestamp. ``times``: ``(created_at, profile)`` pairs instead
        (anomaly detection compares a run with earlier runs on the same weekday)."""
        self.flush()  # the runs' final statuses may still be buffered
        q = (select(profiles.c.profile, profiles.c.created_at).join(runs, runs.c.run_id == profiles.c.run_id)
             .where(profiles.c.pipeline == pipeline, profiles.c.input == input,
                    runs.c.status.in_(("succeeded", "warned")))
             .order_by(profiles.c.created_at.desc()).limit(limit))
        with self.engine.connect() as conn:
            if isinstance(before, str):
                q = q.where(profiles.c.run_id != before)
                at = conn.execute(select(profiles.c.created_at).where(
                    profiles.c.run_id == before, profiles.c.input == input)).scalar()
                if at is None:
                    at = conn.execute(select(runs.c.started_at).where(runs.c.run_id == before)).scalar()
                if at is not None:
                    q = q.where(profiles.c.created_at < at)
            elif before is not None:
                q = q.where(profiles.c.created_at < before)
            rows = [(r.created_at, r.profile) if times else r.profile for r in conn.execute(q)]
        rows.reverse()
        return rows


    def list_runs(self, limit: int = 20, pipeline: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` runs, of ``pipeline`` and with ``status`` if given (``crashed``: recorded
        as running, whose process is gone; ``running``: still alive)."""
        self.flush()
        q = select(*[c for c in runs.c if c.name != "description"]).order_by(runs.c.started_at.desc())
        if pipeline:
            q = q.where(runs.c.pipeline == pipeline)
        if status:
            q = q.where(runs.c.status == ("running" if status == "crashed" else status))
        with self.engine.connect() as conn:
            if status not in ("running", "crashed"):
                return [_live(dict(r._mapping)) for r in conn.execute(q.limit(limit))]
            rows = (_live(dict(r._mapping)) for r in conn.execute(q))
            return [r for r in rows if r["status"] == status][:limit]

    def loads(self, run_ids: list[str]) -> dict[str, dict[str, int]]:
        """Per run, the rows each of its loads wrote (in plan order): a list of runs says them apart
        instead of one sum over destinations."""
        self.flush()
        out: dict[str, dict[str, int]] = {r: {} for r in run_ids}
        if not run_ids:
            return out
        q = select(tasks.c.run_id, tasks.c.task, tasks.c.rows).where(
            tasks.c.run_id.in_(run_ids), tasks.c.kind == "load").order_by(tasks.c.run_id, tasks.c.position)
        with self.engine.connect() as conn:
            for run_id, task, rows in conn.execute(q):
                out[run_id][task] = rows or 0
        return out

    def latest_unfinished(self, pipeline: str) -> dict[str, Any] | None:
        """The newest run of ``pipeline`` that did not finish: failed, interrupted, crashed, or still
        running (which the caller refuses to take over)."""
        self.flush()
        q = (select(runs).where(runs.c.pipeline == pipeline).order_by(runs.c.started_at.desc()).limit(50))
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                row = _live(dict(r._mapping))
                if row["status"] in ("succeeded", "warned"):
                    return None
                if row["status"] in RESUMABLE or row["status"] == "running":
                    return row
        return None

    def get_run(self, run_id: str) -> RunRecord | None:
        self.flush()
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)).first()
            if row is None:
                matches = conn.execute(select(runs).where(runs.c.run_id.startswith(run_id)).limit(2)).all()
                if len(matches) != 1:
                    return None
                row = matches[0]
            rid = row._mapping["run_id"]
            task_rows = conn.execute(select(tasks).where(tasks.c.run_id == rid).order_by(tasks.c.position)).all()
            return RunRecord(_live(dict(row._mapping)), [dict(t._mapping) for t in task_rows])

    def missing(self, run_id: str) -> str:
        """Why ``get_run(run_id)`` found nothing, for a message: no such run, or a prefix of several."""
        q = select(runs.c.run_id).where(runs.c.run_id.startswith(run_id, autoescape=True)).order_by(runs.c.run_id)
        with self.engine.connect() as conn:
            matches = [r[0] for r in conn.execute(q.limit(4))]
        if len(matches) > 1:
            return (f"run id prefix {run_id!r} matches more than one run ({', '.join(matches[:3])}"
                    f"{', ...' if len(matches) > 3 else ''}); give more of the run id")
        return (f"no run {run_id!r} in the run store; see `agent-etl runs list` for the run ids, or set "
                "AGENT_ETL_HOME to the directory the pipeline ran in")

    def run_checkpoints(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The run store's mirror of what each load of ``run_id`` committed: ``{task: {"rows": all
        rows, "commits": units, "position": the last unit's source position}}``."""
        self.flush()
        q = select(checkpoints).where(checkpoints.c.run_id == run_id).order_by(checkpoints.c.id)
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                seen = out.setdefault(r.task, {"rows": 0, "commits": 0, "position": None})
                seen["rows"] += r.rows
                seen["commits"] += 1
                seen["position"] = r.position
        return out

    def audit_records(self, run_id: str) -> list[Any]:
        """The audit records of ``run_id`` in the order of their sequence numbers."""
        self.flush()
        with self.engine.connect() as conn:
            return list(conn.execute(select(audit).where(audit.c.run_id == run_id).order_by(audit.c.seq)))

    def verify(self, run_id: str | None = None) -> list[audit_chain.Verdict]:
        """Check the audit chain of ``run_id``, or of every run in the store (``store.audit``)."""
        self.flush()
        key = audit_chain.audit_key()
        with self.engine.connect() as conn:
            q = select(runs.c.run_id, runs.c.status)
            known = {r.run_id: _live(dict(r._mapping))["status"] for r in conn.execute(
                q if run_id is None else q.where(runs.c.run_id == run_id))}
            ids = [run_id] if run_id is not None else sorted(
                set(known) | {r[0] for r in conn.execute(select(audit.c.run_id).distinct())})
            out = []
            for rid in ids:
                rows = list(conn.execute(select(audit).where(audit.c.run_id == rid).order_by(audit.c.seq)))
                finished = known.get(rid) not in (None, "running", "crashed")
                out.append(audit_chain.verify_run(rid, rows, finished, key))
        return out

    def checkpoints(self, pipeline: str, task: str | None = None) -> list[dict[str, Any]]:
        self.flush()
        q = select(checkpoints).where(checkpoints.c.pipeline == pipeline).order_by(checkpoints.c.id)
        if task:
            q = q.where(checkpoints.c.task == task)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def close(self) -> None:
        self.flush()
        self.engine.dispose()


# a run's process renews its lease every second; one not renewed for this long is gone
LEASE_SECONDS = 15.0
OWNER = f"{socket.gethostname()}:{os.getpid()}"
RESUMABLE = ("failed", "interrupted", "crashed", "quality_failed")


def _live(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``status`` ``crashed`` for a run recorded as running whose process is gone: its
    lease ran out, or it ran on this host and its process no longer exists."""
    if row.get("status") != "running":
        return row
    owner, beat = row.get("owner"), row.get("heartbeat_at")
    host, _, pid = (owner or "").rpartition(":")
    gone = beat is not None and time.time() - beat > LEASE_SECONDS
    if not gone and host == socket.gethostname() and pid.isdigit() and owner != OWNER:
        gone = not alive(int(pid))
    if owner is None and beat is None:  # recorded before runs had leases
        gone = True
    if gone:
        row = {**row, "status": "crashed"}
    return row


def _integrity(e: BaseException) -> bool:
    """A unique key collided: SQLAlchemy's IntegrityError, or the driver's own (``_insert_many``
    goes through the driver: sqlite3, psycopg and pymysql each have an ``IntegrityError``)."""
    return isinstance(e, IntegrityError) or any(c.__name__ == "IntegrityError" for c in type(e).__mro__)


def _stale_snapshot(e: BaseException) -> bool:
    """SQLite refused to turn a transaction that read the chain's head into a write because another
    process wrote since (SQLITE_BUSY_SNAPSHOT, at once, whatever busy_timeout): read again, retry."""
    return "database is locked" in str(e)


def _add_missing_columns(engine: Engine) -> None:
    """Bring a run store made by an older version up to date: add the columns it lacks (all of them
    nullable). CREATE TABLE IF NOT EXISTS leaves an existing table as it is."""
    found = inspect(engine)
    for table in metadata.sorted_tables:
        have = {c["name"] for c in found.get_columns(table.name)}
        missing = [c for c in table.columns if c.name not in have]
        if missing:
            with engine.begin() as conn:
                for c in missing:
                    kind = c.type.compile(dialect=engine.dialect)
                    conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{c.name}" {kind}'))


# (columns, dialect) -> the UPDATE's text and, for a positional driver, its parameter order
_UPDATES: dict[tuple[tuple[str, ...], str], tuple[str, list[str] | None]] = {}


def _update_run(conn: Any, run_id: str, values: dict[str, Any]) -> None:
    """UPDATE one run through the driver, compiled once per set of columns (as ``_insert_many``:
    SQLAlchemy's per-statement work cost more than the update itself, once per run)."""
    keys = tuple(sorted(values))
    shape = _UPDATES.get((keys, conn.dialect.name))
    if shape is None:
        compiled = (update(runs).where(runs.c.run_id == bindparam("_rid"))
                    .values({k: bindparam(k) for k in keys}).compile(dialect=conn.dialect))
        order = list(compiled.positiontup) if compiled.positional else None
        shape = _UPDATES[(keys, conn.dialect.name)] = (str(compiled), order)
    sql, order = shape
    params = {"_rid": run_id, **{k: _to_json(v) if isinstance(runs.c[k].type, JSON) and v is not None else v
                                 for k, v in values.items()}}
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(sql, tuple(params[k] for k in order) if order is not None else params)
    finally:
        cursor.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


# (table, columns, dialect) -> the INSERT's text, its parameter order, which of those are JSON, positional?
_INSERTS: dict[tuple[str, tuple[str, ...], str], tuple[str, list[str], list[int], bool]] = {}
_to_json = json.JSONEncoder().encode


def _insert_many(conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """INSERT rows through the driver's executemany, in the dialect's own parameter style.

    SQLAlchemy's per-row parameter processing cost more than SQLite's insert itself (1.5 ms
    against 0.6 ms for a run of 52 tasks); the statement is still compiled by SQLAlchemy, and the
    only processing the columns need, JSON, is done here. A column that is None in every row is
    left out (it is NULL either way): the driver binds None through its slow adapter path."""
    present = {k for r in rows for k, v in r.items() if v is not None}
    keys = tuple(c.name for c in table.columns if c.name in present)
    key = (table.name, keys, conn.dialect.name)
    shape = _INSERTS.get(key)
    if shape is None:  # compiling costs more than inserting a run's rows: once per shape
        compiled = insert(table).compile(dialect=conn.dialect, column_keys=list(keys))
        order = list(compiled.positiontup) if compiled.positional else list(keys)
        shape = _INSERTS[key] = (str(compiled), order,
                                 [i for i, k in enumerate(order) if isinstance(table.c[k].type, JSON)],
                                 compiled.positional)
    sql, order, json_at, positional = shape
    params: list[Any] = []
    for r in rows:
        values = list(map(r.get, order))
        for i in json_at:
            if values[i] is not None:
                values[i] = _to_json(values[i])
        params.append(tuple(values) if positional else dict(zip(order, values)))
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.executemany(sql, params)
    finally:
        cursor.close()
