"""Small inline SVG charts for the HTML report: a histogram, top-value bars and a row-count
sparkline. Plain SVG markup (no script, no external reference) with a ``<title>`` per mark, so a
browser shows the exact figure on hover without JavaScript. Every label is escaped."""

from __future__ import annotations

from html import escape
from typing import Any


def number(value: Any) -> str:
    """A figure as the report prints it: integers and large floats with thousands separators,
    other floats to 5 significant digits."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        if 1e4 <= abs(value) < 1e15:
            return f"{value:,.0f}"
        return f"{value:.5g}" if abs(value) >= 1e-3 else f"{value:.3e}"
    return str(value)


def histogram(edges: list[Any], counts: list[Any], *, width: int = 180, height: int = 44) -> str:
    counts = [c if isinstance(c, (int, float)) else 0 for c in counts or []]
    if not counts or len(edges or []) != len(counts) + 1:
        return ""
    top = max(counts) or 1
    bar = width / len(counts)
    marks = []
    for i, c in enumerate(counts):
        h = max(1.0, (height - 2) * c / top) if c else 0.0
        label = f"[{number(edges[i])}, {number(edges[i + 1])}{']' if i == len(counts) - 1 else ')'}: {number(c)}"
        marks.append(f'<rect class="bar" x="{i * bar + 0.5:.2f}" y="{height - h:.2f}" width="{max(bar - 1, 0.5):.2f}" '
                     f'height="{h:.2f}"><title>{escape(label)}</title></rect>')
    return (f'<svg class="chart histogram" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="histogram">{"".join(marks)}</svg>')


def top_values(top: list[dict[str, Any]], *, width: int = 260, row: int = 12) -> str:
    top = [t for t in top or [] if isinstance(t, dict)][:5]
    if not top:
        return ""
    most = max((t.get("count") or 0) for t in top) or 1
    marks = []
    for i, t in enumerate(top):
        w = max(1.0, (width * 0.35) * (t.get("count") or 0) / most)
        text = escape(_short(t.get("value")))
        marks.append(f'<rect class="bar" x="0" y="{i * row + 1}" width="{w:.2f}" height="{row - 2}">'
                     f'<title>{text}: {number(t.get("count"))}</title></rect>'
                     f'<text x="{w + 3:.2f}" y="{i * row + row - 2}">{text} ({number(t.get("count"))})</text>')
    h = row * len(top)
    return (f'<svg class="chart top" width="{width}" height="{h}" '
            f'viewBox="0 0 {width} {h}" role="img" aria-label="top values">{"".join(marks)}</svg>')


def sparkline(points: list[dict[str, Any]], *, width: int = 260, height: int = 56) -> str:
    """Row count per run, oldest first; runs with a row-count anomaly are red, the current run is ringed."""
    pts = [p for p in points if isinstance(p.get("rows"), (int, float))]
    if not pts:
        return ""
    lo, hi = min(p["rows"] for p in pts), max(p["rows"] for p in pts)
    span = (hi - lo) or 1
    step = (width - 12) / max(len(pts) - 1, 1)
    xy = [(6 + i * step if len(pts) > 1 else width / 2, height - 6 - (height - 12) * (p["rows"] - lo) / span)
          for i, p in enumerate(pts)]
    line = " ".join(f"{x:.2f},{y:.2f}" for x, y in xy)
    marks = [f'<polyline class="line" points="{line}" fill="none"/>'] if len(pts) > 1 else []
    for (x, y), p in zip(xy, pts):
        flagged = [a for a in p["anomalies"] if a.get("metric") == "row_count"]
        cls = "point" + (" anomaly" if flagged else "") + (" current" if p.get("current") else "")
        note = f"run {p['run_id']}: {number(p['rows'])} rows ({p['status']})"
        if flagged:
            note += "; row-count anomaly"
        marks.append(f'<circle class="{cls}" cx="{x:.2f}" cy="{y:.2f}" r="{4 if flagged or p.get("current") else 2.5}">'
                     f'<title>{escape(note)}</title></circle>')
    return (f'<svg class="chart sparkline" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="rows per run">{"".join(marks)}</svg>')


def _short(value: Any, limit: int = 20) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
