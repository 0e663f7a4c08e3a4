"""Incremental cursors and partitioned reads, the same for every database.

The high-water mark is kept as run-store state of the extract task (``ctx.save_state``), saved only
when the task and everything downstream of it succeeded, so a failed run re-reads the same rows.
State is ``{"cursor": column, "type": kind, "value": json}`` with kind int, float, decimal, date,
timestamp, timestamptz or string.

Rows are read when ``cursor > bound``: the bound is the saved mark (or ``initial``) minus
``lookback``. Rows whose cursor is NULL are never read incrementally.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from agent_etl.exceptions import ToolError
from agent_etl.tools.databases.options import Incremental


def bound(inc: Incremental, state: Any) -> Any:
    """The value rows' cursor must be greater than, or None to read everything."""
    value = decode(state) if state is not None and state.get("cursor") == inc.cursor else inc.initial
    if value is None or inc.lookback is None:
        return value
    if isinstance(value, (dt.datetime, dt.date)) or isinstance(inc.lookback, str):
        seconds = inc.lookback_seconds()
        if seconds is None:
            seconds = float(inc.lookback)  # a bare number on a time cursor counts seconds
        if isinstance(value, dt.datetime):
            return value - dt.timedelta(seconds=seconds)
        if isinstance(value, dt.date):
            return value - dt.timedelta(days=max(1, int(seconds // 86400)))
        raise ToolError(f"incremental cursor {inc.cursor!r}: lookback {inc.lookback!r} is a duration but the "
                        f"cursor holds {type(value).__name__} values; give a number")
    if isinstance(value, decimal.Decimal):
        return value - decimal.Decimal(str(inc.lookback))
    return value - type(value)(inc.lookback) if isinstance(value, (int, float)) else value


class CursorTracker:
    """The maximum cursor value over the batches read."""

    def __init__(self, column: str):
        self.column = column
        self.max: pa.Scalar | None = None

    def observe(self, batch: pa.RecordBatch) -> None:
        try:
            col = batch.column(self.column)
        except KeyError:
            raise ToolError(f"incremental cursor {self.column!r} is not a column of the result; "
                            f"columns: {', '.join(batch.schema.names)}") from None
        if len(col) == col.null_count:
            return
        m = pc.max(col)
        if self.max is None or pc.greater(m, self.max).as_py():
            self.max = m

    def state(self) -> dict[str, Any] | None:
        return None if self.max is None else encode(self.column, self.max)


def encode(cursor: str, scalar: pa.Scalar) -> dict[str, Any]:
    t, v = scalar.type, scalar.as_py()
    if pa.types.is_integer(t):
        kind, value = "int", int(v)
    elif pa.types.is_floating(t):
        kind, value = "float", float(v)
    elif pa.types.is_decimal(t):
        kind, value = "decimal", str(v)
    elif pa.types.is_timestamp(t):
        kind, value = ("timestamptz" if t.tz else "timestamp"), v.isoformat()
    elif pa.types.is_date(t):
        kind, value = "date", v.isoformat()
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        kind, value = "string", v
    else:
        raise ToolError(f"incremental cursor {cursor!r} has type {t}; use an integer, decimal, date, timestamp "
                        "or string column")
    return {"cursor": cursor, "type": kind, "value": value}


def decode(state: dict[str, Any]) -> Any:
    kind, value = state["type"], state["value"]
    if kind in ("timestamp", "timestamptz"):
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "decimal":
        return decimal.Decimal(value)
    return value


def partition_bounds(lo: Any, hi: Any, n: int) -> list[tuple[Any, Any]]:
    """``n`` ranges ``[lo_i, hi_i)`` covering ``[lo, hi]`` (the last one is closed: ``hi_i`` is None).

    Integers split evenly; dates and timestamps by time. Fewer ranges come back when there are fewer
    distinct values than ``n``. The first range is the one that should also read NULL keys."""
    if lo is None or hi is None:
        return [(None, None)]
    if isinstance(lo, (dt.datetime, dt.date)):
        span = hi - lo
        step = span / n
        if isinstance(lo, dt.date) and not isinstance(lo, dt.datetime):
            step = dt.timedelta(days=max(1, step.days))
            n = min(n, span.days + 1)
        if step == dt.timedelta(0):
            return [(lo, None)]
        cuts = [lo + step * i for i in range(n)]
    else:
        lo_i, hi_i = int(lo), int(hi)
        n = max(1, min(n, hi_i - lo_i + 1))
        cuts = [lo_i + ((hi_i - lo_i + 1) * i) // n for i in range(n)]
    cuts = sorted(set(cuts))
    return [(cuts[i], cuts[i + 1] if i + 1 < len(cuts) else None) for i in range(len(cuts))]
