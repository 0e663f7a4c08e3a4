"""``agent-etl events RUN_ID [--follow]``: a run's events from the run store, as it runs."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from agent_etl.exceptions import SpecError

POLL = 0.5  # seconds between reads while following (the coordinator writes events every second)


def events_command(run_id: str, *, follow: bool, as_json: bool, home: str | None = None,
                   poll: float = POLL) -> int:
    from agent_etl.cli.runs import open_store

    store, _ = open_store(home)
    try:
        record = store.get_run(run_id)
        if record is None:
            raise SpecError(store.missing(run_id))
        rid = record.run["run_id"]
        after, ended = 0, False
        while True:
            rows = store.events.read(rid, after)
            for row in rows:
                after = row["id"]
                print(json.dumps(row, default=str) if as_json else line(row), flush=True)
                ended = ended or row["topic"] == "run.finished"
            if not follow or ended:
                return 0
            if not rows:
                run = store.get_run(rid)
                if run is not None and run.run["status"] != "running":
                    # ended without a run.finished (it crashed): what it wrote before is all there is
                    if not store.events.read(rid, after, 1):
                        if not as_json:
                            print(f"run {rid} is {run.run['status']}")
                        return 0
                    continue
                time.sleep(poll)
    finally:
        store.close()


def line(row: dict[str, Any]) -> str:
    """One event as a line: time, topic, task, and what it says."""
    when = dt.datetime.fromtimestamp(row["ts"]).strftime("%H:%M:%S.%f")[:-3]
    task = row["task"] or ""
    return f"{when}  {row['topic']:<16} {task:<20} {_what(row['topic'], row['data'])}".rstrip()


def _what(topic: str, d: dict[str, Any]) -> str:
    attempt = f" (attempt {d['attempt']})" if d.get("attempt", 1) > 1 else ""
    if topic == "run.started":
        return f"pipeline {d['pipeline']}: {len(d['tasks'])} tasks"
    if topic == "run.finished":
        return f"{d['status']} in {d['duration']:.2f}s"
    if topic == "task.assigned":
        return f"to {d['agent']}{attempt}: {d['reason']}"
    if topic == "task.started":
        return f"on {d['agent']}{attempt}"
    if topic == "task.progress":
        return f"{d['rows_total']:,} rows, {d['batches']:,} batches{attempt}"
    if topic == "task.committed":
        return f"unit {d['unit']}: {d['rows']:,} rows{attempt}"
    if topic == "task.completed":
        return f"{d['rows']:,} rows, {d['batches']:,} batches in {d['duration']:.2f}s{attempt}"
    if topic == "task.failed":
        kind = "skipped" if d.get("upstream") else ("failed (transient)" if d.get("transient") else "failed")
        return f"{kind}{attempt}: {d['error']}"
    if topic == "task.stalled":
        return f"no progress for {d['silent_for']:.0f}s{attempt}"
    if topic == "gate.checked":
        r = d.get("report") or {}
        if not r:
            return f"input {d['input']}: profiled"
        return (f"input {d['input']}: {r['status']}, {r['rows_passed']:,}/{r['rows_in']:,} passed"
                + (f", {r['rows_quarantined']:,} quarantined" if r.get("rows_quarantined") else ""))
    if topic == "anomaly.detected":
        return "; ".join(a.get("message", "") for a in d.get("anomalies", []))
    if topic == "agent.stalled":
        return f"agent {d['agent']} silent for {d['silent_for']:.0f}s"
    return json.dumps(d, default=str)[:200]
