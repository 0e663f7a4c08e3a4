"""``schema``: the JSON Schema of pipeline files, for editors."""

from __future__ import annotations

import json
from pathlib import Path


def schema_command(out: str | None) -> int:
    from agent_etl.spec.schema import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if out is None or out == "-":
        print(text, end="")
    else:
        Path(out).write_text(text)
        print(f"wrote {out}")
    return 0
