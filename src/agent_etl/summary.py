"""What a run did, said the same way everywhere (``RunResult``, ``run``'s output, ``runs show``):
the rows each destination received, and the run's quality summary (per check: rows checked and
failed, severity, action; the rows quarantined and where they went).

Both are built from task records (``TaskResult`` fields or the run store's task rows), so a run
that finished long ago reads the same as the one that just ended.
"""

from __future__ import annotations

import os
from typing import Any

# loaders that rewrite their whole target on every run (a file, an object, a dataset)
_WHOLE = {"csv", "jsonl", "json", "parquet", "excel", "s3"}


def landing(tool: str, options: dict[str, Any], base: Any = None) -> dict[str, Any]:
    """Where a load writes and how: ``{"target": ..., "mode": ...}``. The target is the path, the
    table (with its connection), the URL or the stream, as written in the spec; a relative path
    joined to ``base`` (the pipeline's folder, which it is relative to) when given."""
    if options.get("table"):
        conn = options.get("connection")
        target = f"table {options['table']}" + (f" on {conn}" if conn else "")
    elif options.get("path"):
        target = str(options["path"])
        if base is not None and "://" not in target and "${" not in target and not os.path.isabs(target):
            target = os.path.join(str(base), target)
    elif options.get("url") and tool in ("s3", "http"):
        target = str(options["url"])
    elif options.get("stream") or options.get("subject"):
        target = f"stream {options.get('stream') or options.get('subject')}"
    else:
        target = tool
    mode = options.get("mode") or ("replace" if tool in _WHOLE else "append")
    if options.get("partition_by"):
        mode += f", partitioned by {', '.join(options['partition_by'])}"
    return {"target": target, "mode": mode}


def destinations(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per load: its name, tool, target, mode, status and the rows it received. ``tasks``
    are dicts with ``name`` (or ``task``), ``kind``, ``tool``, ``status``, ``rows`` and, for loads,
    ``target``/``mode`` when known."""
    out = []
    for t in tasks:
        if t.get("kind") != "load":
            continue
        out.append({"load": t.get("name") or t.get("task"), "tool": t.get("tool"), "target": t.get("target"),
                    "mode": t.get("mode"), "status": t.get("status"), "rows": t.get("rows") or 0})
    return out


def _action(check: dict[str, Any], on_failure: str) -> str:
    """What a failure of this check does (reports stored before the gate said so itself)."""
    if check.get("severity") == "warn" or on_failure == "warn":
        return "warn"
    if on_failure == "quarantine" and check.get("kind", "row") == "row":
        return "quarantine"
    return "fail"


class QualitySummary(dict):
    """The run-level quality summary: a plain dict (``status``, ``checks``, ``checks_failed``,
    ``rows_quarantined``, ``groups``) that also shows itself as text, as HTML in a notebook, and
    gives its checks as a DataFrame."""

    def __str__(self) -> str:
        return "\n".join(quality_lines(self)) or "no quality checks"

    def _repr_html_(self) -> str:
        from agent_etl.notebook import quality_html

        return quality_html(self)

    def to_pandas(self) -> Any:
        """One row per check: input, check, kind, rows checked and failed, severity, action, status,
        message and the group's quarantine path."""
        import pandas as pd

        rows = [{"input": g["input"], **c, "quarantine_path": g["quarantine_path"]}
                for g in self["groups"] for c in g["checks"]]
        return pd.DataFrame(rows, columns=["input", "check", "kind", "rows_checked", "rows_failed", "severity",
                                           "action", "status", "message", "quarantine_path"])


def quality_summary(reports: list[dict[str, Any]]) -> QualitySummary:
    """The run-level quality summary of the gate reports (``GateReport.to_dict()``) of a run."""
    groups, statuses = [], []
    for r in reports:
        checks = [{"check": c["label"], "kind": c.get("kind", "row"), "rows_checked": r.get("rows_in", 0),
                   "rows_failed": c.get("failed_rows", 0), "severity": c.get("severity", "error"),
                   "action": c.get("action") or _action(c, r.get("on_failure", "fail")), "status": c.get("status", "passed"),
                   "message": c.get("message")}
                  for c in r.get("checks", [])]
        groups.append({"input": r["input"], "on_failure": r.get("on_failure"), "status": r.get("status"),
                       "rows_in": r.get("rows_in", 0), "rows_passed": r.get("rows_passed", 0),
                       "rows_quarantined": r.get("rows_quarantined", 0),
                       "quarantine_path": r.get("quarantine_path"), "checks": checks})
        statuses.append(r.get("status"))
    order = ["failed", "quarantined", "warned", "passed"]
    status = next((s for s in order if s in statuses), None)
    return QualitySummary(status=status, checks=sum(len(g["checks"]) for g in groups),
                          checks_failed=sum(1 for g in groups for c in g["checks"] if c["status"] != "passed"),
                          rows_quarantined=sum(g["rows_quarantined"] for g in groups), groups=groups)


def quality_lines(summary: dict[str, Any], indent: str = "") -> list[str]:
    """The summary as text: a line per group, then a line per check."""
    lines = []
    for g in summary["groups"]:
        failed = g["rows_in"] - g["rows_passed"]
        lines.append(f"{indent}quality {g['input']}: {g['status']}, {g['rows_passed']:,} of {g['rows_in']:,} rows "
                     f"passed" + (f", {failed:,} failed" if failed else "")
                     + (f", {g['rows_quarantined']:,} quarantined to {shown_path(g['quarantine_path'])}"
                        if g["rows_quarantined"] else ""))
        width = max((len(c["check"]) for c in g["checks"]), default=0)
        for c in g["checks"]:
            if c["kind"] == "row" or c["rows_failed"]:
                what = (f"{c['rows_failed']:,} of {c['rows_checked']:,} rows failed" if c["rows_failed"]
                        else f"ok, {c['rows_checked']:,} rows")
            else:
                what = c["message"] or ("ok" if c["status"] == "passed" else "failed")
            warned = " (warned)" if c["status"] == "warned" else ""
            lines.append(f"{indent}  {c['check']:<{width}}  {what}{warned}  "
                         f"[{c['severity']}, on failure: {c['action']}]")
    return lines


def shown_path(path: str | None) -> str:
    """``path`` relative to the working directory when it is below it (shorter to read), else as is."""
    from pathlib import Path

    if not path or "://" in path:
        return str(path)
    try:
        shown = str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path
    return shown + "/" if path.endswith("/") else shown  # a folder (a dataset) stays one


def destination_lines(dests: list[dict[str, Any]], indent: str = "") -> list[str]:
    """A line per destination: rows, where, how. The copies of a load over workers (``lake#0``,
    ``lake#1``, ...) into one target, all with one status, are one line: their rows added up."""
    dests = _copies_as_one(dests)
    width = max((len(d["load"]) for d in dests), default=0)
    lines = []
    for d in dests:
        where = f" -> {shown_path(d['target'])} ({d['mode']})" if d.get("target") else ""
        state = "" if d["status"] == "succeeded" else f"  [{d['status']}]"
        lines.append(f"{indent}{d['load']:<{width}}  {d['rows']:>12,} rows{where}{state}")
    return lines


def _copies_as_one(dests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for d in dests:
        groups.setdefault(str(d["load"]).split("#")[0] if "#" in str(d["load"]) else str(d["load"]), []).append(d)
    out = []
    for name, ds in groups.items():
        same = {(d.get("target"), d.get("mode"), d["status"]) for d in ds}
        if len(ds) < 2 or len(same) > 1 or not all("#" in str(d["load"]) for d in ds):
            out += ds
            continue
        first = ds[0]
        mode = f"{first['mode']}; {len(ds)} copies" if first.get("mode") else first.get("mode")
        out.append({**first, "load": name, "rows": sum(d["rows"] or 0 for d in ds), "mode": mode})
    return out
