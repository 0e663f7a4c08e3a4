"""The report model: one JSON-ready dict with everything a quality report of one run shows, read
from the run store. Every renderer (HTML, JSON, CSV, Excel) starts from it.

Shape (``version`` 1)::

    {"version": 1, "generated_at": ts,
     "run": {"run_id", "pipeline", "status", "exit_code", "started_at", "finished_at", "duration",
             "rows_loaded", "error"},
     "inputs": [{"input", "task", "status", "rows_in", "rows_passed", "rows_quarantined",
                 "checks_total", "checks_failed", "checks_warned",
                 "gates": [gate report, its checks each with "rows_failed", "rows_passed",
                           "examples": [{"row": n, "values": {column: value}}]],
                 "failing_rows": {"source": "quarantine" | None, "path", "columns", "rows"},
                 "profile": profile | None, "anomalies": [anomaly, ...],
                 "history": [{"run_id", "started_at", "status", "rows", "rows_quarantined",
                              "checks_failed", "anomalies": [metric, ...], "current": bool}]}]}

The store may come from an older or newer version of the quality agent, so every key of a gate
report past ``input``/``status`` is optional here. Values from the data (failing rows, profile
minimums and maximums) are made JSON-safe: dates and decimals become strings, NaN/inf become the
strings ``"nan"``/``"inf"``; they stay untrusted text that each renderer escapes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from agent_etl.exceptions import SpecError
from agent_etl.report import history

VERSION = 1
SAMPLE_ROWS = 20  # rows read from the quarantine file
STATUS_ORDER = ["passed", "warned", "quarantined", "failed"]


def build(store, run_id: str, *, history_runs: int = 20) -> dict[str, Any]:
    """The report model of run ``run_id`` (a unique prefix is enough); SpecError if no run matches."""
    record = store.get_run(run_id)
    if record is None:
        raise SpecError(store.missing(run_id))
    run = {k: record.run.get(k) for k in ("run_id", "pipeline", "status", "exit_code", "started_at",
                                          "finished_at", "duration", "rows_loaded", "error")}
    profiles = store.run_profiles(run["run_id"]) if hasattr(store, "run_profiles") else {}
    inputs: dict[str, dict[str, Any]] = {}
    for task in record.tasks:
        for gate in (task.get("details") or {}).get("quality") or []:
            entry = inputs.setdefault(gate.get("input") or task["task"], _new_input(gate.get("input") or task["task"]))
            entry["task"] = task["task"]
            entry["gates"].append(_gate(gate))
    for name in profiles:
        inputs.setdefault(name, _new_input(name))
    past = history.load(store, run, list(inputs), history_runs)
    for name, entry in inputs.items():
        stored = profiles.get(name) or {}
        entry["profile"] = plain(stored.get("profile"))
        entry["anomalies"] = plain(stored.get("anomalies") or [])
        _summarise(entry)
        entry["failing_rows"] = _quarantine_sample(entry["gates"])
        entry["history"] = past.get(name, []) + [history.point(run, entry)]
    return {"version": VERSION, "generated_at": time.time(), "run": plain(run), "inputs": list(inputs.values())}


def _new_input(name: str) -> dict[str, Any]:
    return {"input": name, "task": None, "status": None, "gates": [], "profile": None, "anomalies": []}


def _gate(report: dict[str, Any]) -> dict[str, Any]:
    gate = {"input": report.get("input"), "on_failure": report.get("on_failure"),
            "status": report.get("status") or "passed", "rows_in": report.get("rows_in") or 0,
            "rows_passed": report.get("rows_passed") or 0, "rows_quarantined": report.get("rows_quarantined") or 0,
            "quarantine_path": report.get("quarantine_path")}
    gate["checks"] = [_check(c, gate) for c in report.get("checks") or []]
    return plain(gate)


def _check(check: dict[str, Any], gate: dict[str, Any]) -> dict[str, Any]:
    failed = check.get("failed_rows") or 0
    status = check.get("status")
    if status is None:  # reports stored before checks carried their own status
        if not failed and not check.get("message"):
            status = "passed"
        elif gate["on_failure"] == "warn":
            status = "warned"
        elif gate["on_failure"] == "quarantine" and failed:
            status = "quarantined"
        else:
            status = "failed"
    # a dataset check's verdict (row_count) fails no single row: "rows passed" means nothing for it
    passed = None if status != "passed" and not failed else max(gate["rows_in"] - failed, 0)
    return {"label": check.get("label", "?"), "kind": check.get("kind"), "severity": check.get("severity"),
            "status": status, "rows_failed": failed, "rows_passed": passed,
            "message": check.get("message"), "examples": [_example(x) for x in check.get("examples") or []]}


def _example(row: dict[str, Any]) -> dict[str, Any]:
    """A failing row as ``{"row": n, "values": {column: value}}``: the gate keys the row number
    ``_row`` so it cannot clash with a column named ``row`` (older reports used ``row``)."""
    key = "_row" if "_row" in row else "row"
    return {"row": row.get(key), "values": {k: v for k, v in row.items() if k != key}}


def _summarise(entry: dict[str, Any]) -> None:
    gates = entry["gates"]
    checks = [c for g in gates for c in g["checks"]]
    entry["rows_in"] = max((g["rows_in"] for g in gates), default=(entry["profile"] or {}).get("rows"))
    entry["rows_passed"] = min((g["rows_passed"] for g in gates), default=None)
    entry["rows_quarantined"] = sum(g["rows_quarantined"] for g in gates)
    entry["checks_total"] = len(checks)
    entry["checks_failed"] = sum(c["status"] in ("failed", "quarantined") for c in checks)
    entry["checks_warned"] = sum(c["status"] == "warned" for c in checks)
    statuses = [g["status"] for g in gates if g["status"] in STATUS_ORDER]
    entry["status"] = max(statuses, key=STATUS_ORDER.index) if statuses else None
    if entry["status"] in (None, "passed") and any(a.get("severity") == "fail" for a in entry["anomalies"]):
        entry["status"] = "failed"
    elif entry["status"] in (None, "passed") and entry["anomalies"]:
        entry["status"] = "warned"


def _quarantine_sample(gates: list[dict[str, Any]]) -> dict[str, Any]:
    """The first SAMPLE_ROWS quarantined rows (all columns, with the reasons); none if no file is left."""
    for gate in gates:
        path = gate.get("quarantine_path")
        if not path or not Path(path).is_file():
            continue
        import pyarrow.parquet as pq

        try:
            table = next(pq.ParquetFile(path).iter_batches(batch_size=SAMPLE_ROWS), None)
        except (OSError, ValueError):  # removed or not Parquet (any more): the report renders without it
            continue
        if table is None:
            continue
        rows = plain(table.to_pylist())
        return {"source": "quarantine", "path": path, "columns": table.schema.names, "rows": rows}
    return {"source": None, "path": None, "columns": [], "rows": []}


def plain(value: Any) -> Any:
    """``value`` with every leaf JSON-safe (see the module docstring)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
