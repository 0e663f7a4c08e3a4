"""What earlier runs of the same pipeline saw of each input: one point per run with its row count,
quarantined rows, failed checks and anomalies, for the report's history table and sparkline.

Read with two queries over the run store's tables (runs joined with the tasks that carry gate
reports, then the stored profiles of those runs), not one ``get_run`` per past run.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from agent_etl.store import schema


def load(store, run: dict[str, Any], inputs: list[str], limit: int) -> dict[str, list[dict[str, Any]]]:
    """``{input: [point, ...]}`` of the last ``limit`` runs of ``run``'s pipeline started before it, oldest first."""
    if limit <= 0 or not inputs:
        return {}
    runs, tasks = schema.runs, schema.tasks
    q = (select(runs.c.run_id, runs.c.started_at, runs.c.status).where(
        runs.c.pipeline == run["pipeline"], runs.c.started_at < run["started_at"])
        .order_by(runs.c.started_at.desc()).limit(limit))
    with store.engine.connect() as conn:
        past = [dict(r._mapping) for r in conn.execute(q)]
        ids = [r["run_id"] for r in past]
        if not ids:
            return {}
        details = conn.execute(select(tasks.c.run_id, tasks.c.details).where(
            tasks.c.run_id.in_(ids), tasks.c.details.is_not(None))).all()
        stored = []
        profiles = getattr(schema, "profiles", None)  # absent in stores written before profiling existed
        if profiles is not None:
            stored = conn.execute(select(profiles.c.run_id, profiles.c.input, profiles.c.profile,
                                         profiles.c.anomalies).where(profiles.c.run_id.in_(ids),
                                                                     profiles.c.input.in_(inputs))).all()
    gates: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run_id, d in details:
        for gate in (d or {}).get("quality") or []:
            if gate.get("input") in inputs:
                gates.setdefault((run_id, gate["input"]), []).append(gate)
    prof = {(r.run_id, r.input): (r.profile or {}, r.anomalies or []) for r in stored}
    out: dict[str, list[dict[str, Any]]] = {}
    for r in reversed(past):
        for name in inputs:
            key = (r["run_id"], name)
            if key not in gates and key not in prof:
                continue
            g = gates.get(key, [])
            profile, anomalies = prof.get(key, ({}, []))
            out.setdefault(name, []).append({
                "run_id": r["run_id"], "started_at": r["started_at"], "status": r["status"],
                "rows": _rows(profile, g), "rows_quarantined": sum(x.get("rows_quarantined") or 0 for x in g),
                "checks_failed": sum(_failed(c) for x in g for c in x.get("checks") or []),
                "anomalies": _marks(anomalies), "current": False})
    return out


def point(run: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The history point of the run the report is about."""
    return {"run_id": run["run_id"], "started_at": run["started_at"], "status": run["status"],
            "rows": _rows(entry["profile"] or {}, entry["gates"]), "rows_quarantined": entry["rows_quarantined"],
            "checks_failed": entry["checks_failed"], "anomalies": _marks(entry["anomalies"]), "current": True}


def _rows(profile: dict[str, Any], gates: list[dict[str, Any]]) -> int | None:
    if isinstance(profile.get("rows"), int):
        return profile["rows"]
    counts = [g.get("rows_in") for g in gates if isinstance(g.get("rows_in"), int)]
    return max(counts) if counts else None


def _failed(check: dict[str, Any]) -> bool:
    if check.get("status"):
        return check["status"] in ("failed", "quarantined")
    return bool(check.get("failed_rows") or check.get("message"))  # reports from before checks had a status


def _marks(anomalies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"metric": a.get("metric"), "column": a.get("column"), "severity": a.get("severity")}
            for a in anomalies or [] if isinstance(a, dict)]
