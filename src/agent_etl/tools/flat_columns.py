"""The check that a schema has no nested columns, for the formats that hold flat rows only (CSV,
Excel): shared by the file and object-store loaders that write them."""

from __future__ import annotations

import pyarrow as pa

from agent_etl.exceptions import ToolError


def check_flat(schema: pa.Schema, fmt: str, task: str, name: str) -> None:
    """Raise a ToolError naming the nested columns of ``schema`` that ``fmt`` cannot hold in ``name``."""
    nested = [f.name for f in schema if pa.types.is_nested(f.type)]
    if nested:
        raise ToolError(f"task {task!r}: {fmt} cannot hold the nested columns {nested} for {name}; flatten or "
                        "cast them to string upstream, or load to jsonl or parquet")
