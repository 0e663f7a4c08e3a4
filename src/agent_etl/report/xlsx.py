"""The report as an Excel workbook (``--format xlsx``), one sheet per section: Summary, Checks,
Failing rows, Profile, Anomalies, History.

Values from the data are untrusted: a string is always stored as text (openpyxl would otherwise
store ``=...`` as a formula that runs when the file is opened), characters Excel cannot hold are
dropped, and cells are cut at Excel's 32,767 characters.
"""

from __future__ import annotations

import io
import json
from typing import Any

from agent_etl.report.flat import HIDDEN, anomaly_label

MAX_CELL = 32767
STATS = ("type", "kind", "count", "nulls", "null_rate", "distinct", "distinct_exact", "min", "max", "mean", "std")
ANOMALY = ("input", "metric", "column", "quantile", "value", "expected", "low", "high", "score", "severity", "message")


def to_xlsx(model: dict[str, Any]) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    sheets = {name: (wb.active if i == 0 else wb.create_sheet()) for i, name in enumerate(
        ("Summary", "Checks", "Failing rows", "Profile", "Anomalies", "History"))}
    for name, ws in sheets.items():
        ws.title = name
    _summary(sheets["Summary"], model)
    inputs = model["inputs"]
    _table(sheets["Checks"], ("input", "on_failure", "check", "kind", "severity", "status", "rows_failed",
                              "rows_passed", "message"),
           [(e["input"], g["on_failure"], c["label"], c["kind"], c["severity"], c["status"], c["rows_failed"],
             c["rows_passed"], c["message"]) for e in inputs for g in e["gates"] for c in g["checks"]])
    _failing(sheets["Failing rows"], inputs)
    _profile(sheets["Profile"], inputs)
    _table(sheets["Anomalies"], ("anomaly", *ANOMALY),
           [(anomaly_label(a), *(a.get(k) for k in ANOMALY)) for e in inputs for a in e["anomalies"]])
    _table(sheets["History"], ("input", "run_id", "current", "started_at", "status", "rows", "rows_quarantined",
                               "checks_failed", "anomalies"),
           [(e["input"], p["run_id"], p["current"], p["started_at"], p["status"], p["rows"], p["rows_quarantined"],
             p["checks_failed"], ", ".join(anomaly_label(a) for a in p["anomalies"])) for e in inputs
            for p in e["history"]])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _summary(ws, model: dict[str, Any]) -> None:
    _table(ws, ("field", "value"), list(model["run"].items()))
    ws.append([])
    keys = ("input", "status", "rows_in", "rows_passed", "rows_quarantined", "checks_total", "checks_failed",
            "checks_warned")
    _append(ws, (*keys, "anomalies"), bold=True)
    for e in model["inputs"]:
        _append(ws, (*(e.get(k) for k in keys), len(e["anomalies"])))


def _failing(ws, inputs: list[dict[str, Any]]) -> None:
    """One line per failing row: the checks' examples first, then the quarantine file's sample."""
    lines: list[tuple[str, str, Any, dict[str, Any]]] = []
    for e in inputs:
        for g in e["gates"]:
            for c in g["checks"]:
                lines += [(e["input"], c["label"], x["row"], x["values"]) for x in c["examples"]]
        lines += [(e["input"], r.get(HIDDEN[0]) or "quarantined", None, r) for r in e["failing_rows"]["rows"]]
    columns: dict[str, None] = {}
    for *_, values in lines:
        columns.update(dict.fromkeys(k for k in values if k not in HIDDEN))
    _table(ws, ("input", "check", "row", *columns),
           [(i, check, row, *(values.get(c) for c in columns)) for i, check, row, values in lines])


def _profile(ws, inputs: list[dict[str, Any]]) -> None:
    profiled = [(e["input"], col, s or {}) for e in inputs
                for col, s in ((e["profile"] or {}).get("columns") or {}).items()]
    quantiles: dict[str, None] = {}
    for *_, s in profiled:
        quantiles.update(dict.fromkeys(s.get("quantiles") or {}))
    nested = [f"{k}.{sub}" for k, subs in (("length", ("min", "max", "mean")), ("outliers", ("method", "count", "low",
                                                                                             "high"))) for sub in subs]
    lines = []
    for name, col, s in profiled:
        q = s.get("quantiles") or {}
        lines.append((name, col, *(s.get(k) for k in STATS), *(q.get(k) for k in quantiles),
                      *((s.get(n.split(".")[0]) or {}).get(n.split(".")[1]) for n in nested), s.get("top")))
    _table(ws, ("input", "column", *STATS, *(f"q{k}" for k in quantiles), *nested, "top"), lines)


def _table(ws, header: tuple[str, ...], lines: list[tuple[Any, ...]]) -> None:
    _append(ws, header, bold=True)
    for line in lines:
        _append(ws, line)
    ws.freeze_panes = "A2"
    for i, name in enumerate(header, start=1):
        ws.column_dimensions[ws.cell(row=1, column=i).column_letter].width = max(10, min(len(name) + 4, 40))


def _append(ws, values, *, bold: bool = False) -> None:
    from openpyxl.styles import Font

    ws.append([_value(v) for v in values])
    for cell in ws[ws.max_row]:
        if isinstance(cell.value, str):
            cell.data_type = "s"  # never a formula
        if bold:
            cell.font = Font(bold=True)


def _value(value: Any) -> Any:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
    return ILLEGAL_CHARACTERS_RE.sub("", text)[:MAX_CELL]
