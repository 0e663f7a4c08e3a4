"""The report as one long table (``--format csv``): a line per value, so it loads into any tool and
filters on ``section``.

Columns: ``input, section, item, row, metric, value``

=================  ===========================================  ==========  =========================
section            item                                         row         metric
=================  ===========================================  ==========  =========================
run                (empty)                                      (empty)     run_id, pipeline, status, ...
summary            (empty)                                      (empty)     status, rows_in, checks_failed, ...
check              check label                                  (empty)     kind, severity, status, rows_failed, ...
failing_row        check label                                  row number  a column of the row
quarantined_row    the row's ``_quarantine_reason``             position    a column of the row
profile            column name (empty: the whole input)         (empty)     type, nulls, mean, q0.5, ...
anomaly            metric[(column)][@quantile]                  (empty)     value, expected, low, high, ...
history            run id                                       (empty)     rows, rows_quarantined, ...
=================  ===========================================  ==========  =========================

``row`` of a failing row counts rows of the input stream from 0. Lists and mappings (a histogram,
top values) are written as JSON text; a missing value is an empty field. Values are written as
they are: a spreadsheet that opens the file may read a value starting with ``=`` as a formula (the
xlsx report stores every value as text or a number instead).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

HEADER = ("input", "section", "item", "row", "metric", "value")
Row = tuple[str, str, str, Any, str, Any]
HIDDEN = ("_quarantine_reason", "_run_id")  # shown as the item, and the run id is the report's


def to_csv(model: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows((i, s, it, "" if r is None else r, m, cell(v)) for i, s, it, r, m, v in rows(model))
    return out.getvalue()


def cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def rows(model: dict[str, Any]) -> Iterator[Row]:
    for key, value in model["run"].items():
        yield "", "run", "", None, key, value
    for entry in model["inputs"]:
        name = entry["input"]
        for key in ("status", "rows_in", "rows_passed", "rows_quarantined", "checks_total", "checks_failed",
                    "checks_warned"):
            yield name, "summary", "", None, key, entry.get(key)
        yield name, "summary", "", None, "anomalies", len(entry["anomalies"])
        for gate in entry["gates"]:
            for c in gate["checks"]:
                for key in ("kind", "severity", "status", "rows_failed", "rows_passed", "message"):
                    yield name, "check", c["label"], None, key, c.get(key)
                yield name, "check", c["label"], None, "on_failure", gate["on_failure"]
                for example in c["examples"]:
                    for col, value in example["values"].items():
                        yield name, "failing_row", c["label"], example["row"], col, value
        for k, r in enumerate(entry["failing_rows"]["rows"]):
            for col, value in r.items():
                if col not in HIDDEN:
                    yield name, "quarantined_row", r.get(HIDDEN[0]) or "", k, col, value
        yield from _profile(name, entry["profile"])
        for a in entry["anomalies"]:
            item = anomaly_label(a)
            for key, value in a.items():
                if key not in ("input", "metric", "column", "quantile"):
                    yield name, "anomaly", item, None, key, value
        for p in entry["history"]:
            for key in ("started_at", "status", "rows", "rows_quarantined", "checks_failed"):
                yield name, "history", p["run_id"], None, key, p.get(key)
            yield name, "history", p["run_id"], None, "anomalies", len(p["anomalies"])


def anomaly_label(a: dict[str, Any]) -> str:
    text = str(a.get("metric") or "?")
    if a.get("column"):
        text += f"({a['column']})"
    if a.get("quantile") is not None:
        text += f"@{a['quantile']}"
    return text


def _profile(name: str, profile: dict[str, Any] | None) -> Iterator[Row]:
    if not profile:
        return
    for key in ("rows", "batches", "sampled_rows"):
        if key in profile:
            yield name, "profile", "", None, key, profile[key]
    for col, stats in (profile.get("columns") or {}).items():
        for key, value in (stats or {}).items():
            if key == "quantiles" and isinstance(value, dict):
                for q, v in value.items():
                    yield name, "profile", col, None, f"q{q}", v
            elif key in ("length", "outliers") and isinstance(value, dict):
                for sub, v in value.items():
                    yield name, "profile", col, None, f"{key}.{sub}", v
            else:
                yield name, "profile", col, None, key, value
