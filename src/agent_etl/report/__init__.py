"""Quality reports of a run: ``agent-etl report RUN_ID --format html|json|csv|xlsx``.

``model.build(store, run_id)`` collects one JSON-ready dict from the run store (gate reports with
their checks, sample failing rows, the profile, anomalies, history of earlier runs);
``render(model, fmt)`` turns it into the bytes of a file. See docs/quality.md, "Reports".
"""

from __future__ import annotations

import json
from typing import Any

FORMATS = ("html", "json", "csv", "xlsx")


def render(model: dict[str, Any], fmt: str) -> bytes:
    """The report file's bytes in format ``fmt`` (one of FORMATS)."""
    if fmt == "html":
        from agent_etl.report.html import to_html

        return to_html(model).encode("utf-8")
    if fmt == "json":
        return (json.dumps(model, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    if fmt == "csv":
        from agent_etl.report.flat import to_csv

        return to_csv(model).encode("utf-8")
    if fmt == "xlsx":
        from agent_etl.report.xlsx import to_xlsx

        return to_xlsx(model)
    raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
