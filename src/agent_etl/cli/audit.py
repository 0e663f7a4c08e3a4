"""``audit verify`` and ``audit show``: the run store's hash-chained audit trail (``store.audit``)."""

from __future__ import annotations

import datetime as dt
import json

from agent_etl.exceptions import SpecError


def verify_command(run_id: str | None, *, as_json: bool, home: str | None = None) -> int:
    from agent_etl.cli.runs import open_store

    store, _ = open_store(home)
    try:
        if run_id is not None:
            run_id = _resolve(store, run_id)
        verdicts = store.verify(run_id)
    finally:
        store.close()
    broken = [v for v in verdicts if v.problem]
    records = sum(v.records for v in verdicts)
    if as_json:
        print(json.dumps({"intact": not broken, "records": records, "runs": len(verdicts),
                          "problems": [{"run_id": v.run_id, "problem": v.problem} for v in broken]}, indent=2))
    elif broken:
        for v in broken:
            print(f"run {v.run_id}: {v.problem}")
    else:
        print(f"chain intact: {records} records" + (f" in {len(verdicts)} runs" if run_id is None else ""))
    return 1 if broken else 0


def show_command(run_id: str, *, as_json: bool, home: str | None = None) -> int:
    from agent_etl.cli.runs import open_store

    store, _ = open_store(home)
    try:
        rows = store.audit_records(_resolve(store, run_id))
    finally:
        store.close()
    if as_json:
        print(json.dumps([{**r._mapping, "data": json.loads(r.data) if r.data else None} for r in rows], indent=2,
                         default=str))
        return 0
    for r in rows:
        when = dt.datetime.fromtimestamp(r.at).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        data = r.data or ""
        print(f"{r.seq:>5}  {when}  {r.kind:<15} {r.task or '-':<20} {data[:200]}  {r.hash[:12]}")
    return 0


def _resolve(store, run_id: str) -> str:
    record = store.get_run(run_id)
    if record is not None:
        return record.run["run_id"]
    if store.audit_records(run_id):  # records of a run whose row is gone: still verifiable
        return run_id
    raise SpecError(store.missing(run_id))
