"""Hive-style partition columns (``day=2024-01-01/`` in a key) added to the rows of each object, as
the loader's ``partition_by`` writes them: string columns after the object's own, null for
``__HIVE_DEFAULT_PARTITION__``, values URL-unescaped."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import ToolError
from agent_etl.tools.extractors.file_source import Source

NULL = "__HIVE_DEFAULT_PARTITION__"


def partition_values(key: str) -> dict[str, str | None]:
    """The ``name=value`` folders of ``key``, in order."""
    out: dict[str, str | None] = {}
    for part in key.split("/")[:-1]:
        name, eq, value = part.partition("=")
        if eq and name:
            out[urllib.parse.unquote(name)] = None if value == NULL else urllib.parse.unquote(value)
    return out


def without(schema: pa.Schema | None, names: list[str]) -> pa.Schema | None:
    """``schema`` less the partition columns (what the object itself holds)."""
    return None if schema is None else pa.schema([f for f in schema if f.name not in names])


def with_partitions(source: Source, values: dict[str, str | None], where: str, task: str) -> Source:
    """``source`` with a constant string column per partition value."""
    clash = [n for n in values if n in source.schema.names]
    if clash:
        source.close()
        raise ToolError(f"task {task!r}: {where} has columns {clash} that are also partition folders of its key; "
                        "rename them, or set hive_partitioning: false")
    fields = [pa.field(n, pa.string()) for n in values]
    schema = pa.schema(list(source.schema) + fields)

    def read_next() -> pa.RecordBatch | None:
        batch = source.read_next()
        if batch is None:
            return None
        columns = list(batch.columns) + [pa.repeat(pa.scalar(v, pa.string()), batch.num_rows) for v in values.values()]
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    def mark() -> dict[str, Any]:
        return source.mark() if source.mark is not None else {}

    return Source(schema, read_next, source.close, mark)
