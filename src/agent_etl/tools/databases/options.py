"""Options of the database extractors and loaders (the names are fixed by DESIGN.md §2).

Extractors: ``connection``, exactly one of ``query`` or ``table``, ``partitions`` with
``partition_on``, ``incremental: {cursor, initial, lookback}``.
Loaders: ``connection``, ``table``, ``mode: append | replace | merge``, ``key`` (merge),
``schema_policy: evolve | freeze``, ``replace_strategy: auto | swap | insert`` (replace): how a
replace lands. ``swap`` writes a new table and swaps it in for the old one (fast: each row is
written once), an error when the destination cannot swap this table (the message names what is in
the way); ``insert`` empties the table and inserts the new rows in one transaction (the table
itself, its dependants and grants untouched); ``auto`` (default) swaps where the loader can and
inserts otherwise. The run's task details say which was taken and why (``replace``).

A table name is ``name`` or ``schema.name``; double quotes keep dots and anything else in a name
(``'"odd.name"'``, ``'analytics."x; drop table t"'``). Names are always quoted by the driver, so a
name is never SQL.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from agent_etl.tools.base import ToolConfig

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|second|m|min|minute|h|hour|d|day|w|week)s?\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
            "d": 86400, "day": 86400, "w": 604800, "week": 604800}


class Incremental(ToolConfig):
    """Read only rows whose ``cursor`` is past the high-water mark of the last successful run."""

    cursor: str = Field(
        min_length=1,
        description="the column whose high-water mark is kept between runs (an integer, date or timestamp)")
    initial: Any = None  # lower bound of the first run (exclusive); None reads everything
    # re-read rows this far behind the mark (late arrivals): a number for numeric cursors, a
    # duration ("2 hours", "1d", "30 min") for date and timestamp cursors
    lookback: float | str | None = None

    @field_validator("lookback")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str) and not _DURATION.match(value):
            raise ValueError(f"lookback {value!r} is not a duration; write e.g. '2 hours', '1d' or '30 min'")
        return value

    def lookback_seconds(self) -> float | None:
        if isinstance(self.lookback, str):
            m = _DURATION.match(self.lookback)
            assert m is not None
            return float(m.group(1)) * _SECONDS[m.group(2).lower()]
        return None


class SourceOptions(ToolConfig):
    # whether a table may be split without a key, by its storage blocks (PostgreSQL's ctid ranges)
    block_partitions: ClassVar[bool] = False

    connection: str = Field(description="a `connections:` entry whose url is the database")
    query: str | None = Field(None, description="the SQL to read (give query or table)")
    table: str | None = Field(None, description="the table to read, `name` or `schema.name` (give query or table)")
    partitions: int = Field(1, ge=1, le=64, description="reads at once, each of one range of partition_on (or of the table's blocks where the tool can)")
    partition_on: str | None = Field(
        None, description="the integer, date or timestamp column whose range partitions split")
    incremental: Incremental | None = Field(
        None, description="read only rows past the last successful run's high-water mark")

    @model_validator(mode="after")
    def _one_source(self) -> SourceOptions:
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of `query` or `table`")
        if self.partitions > 1 and not self.partition_on:
            if not self.block_partitions:
                raise ValueError("`partitions` needs `partition_on`: an integer, date or timestamp column to split on")
            if self.table is None:
                raise ValueError("`partitions` without `partition_on` splits a table by its storage blocks: give "
                                 "`table`, or `partition_on` (an integer, date or timestamp column) for a query")
        return self


class SinkOptions(ToolConfig):
    connection: str = Field(description="a `connections:` entry whose url is the database")
    table: str = Field(min_length=1, description="the table to write, `name` or `schema.name` (created if missing)")
    mode: Literal["append", "replace", "merge"] = Field(
        "append", description="append: add rows; replace: the stream becomes the table; merge: upsert on key")
    key: list[str] | None = Field(None, description="merge: the column(s) that identify a row")
    schema_policy: Literal["evolve", "freeze"] = Field(
        "evolve", description="evolve: add the input's new columns to the table; freeze: fail instead")
    replace_strategy: Literal["auto", "swap", "insert"] = Field(
        "auto", description="replace: swap in a new table, insert into the emptied one, or auto")

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _merge_key(self) -> SinkOptions:
        if self.mode == "merge" and not self.key:
            raise ValueError("mode: merge needs `key`: the column(s) that identify a row, e.g. key: [id]")
        if self.replace_strategy != "auto" and self.mode != "replace":
            raise ValueError(f"replace_strategy: {self.replace_strategy} is for mode: replace (mode is {self.mode}); "
                             "drop replace_strategy or set mode: replace")
        return self


def split_table(name: str) -> tuple[str | None, str]:
    """``schema.table`` into its parts; double quotes keep dots (``""`` is a literal quote)."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    i = 0
    while i < len(name):
        ch = name[i]
        if quoted:
            if ch == '"' and name[i + 1:i + 2] == '"':
                buf.append('"')
                i += 1
            elif ch == '"':
                quoted = False
            else:
                buf.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == "." and len(parts) < 1:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    if quoted:
        raise ValueError(f"table name {name!r} has an unclosed double quote")
    parts.append("".join(buf))
    if any(p == "" for p in parts):
        raise ValueError(f"table name {name!r} has an empty part; write `table` or `schema.table`")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def key_index_name(table: str, key: list[str]) -> str:
    """The name of the unique index a merge creates on ``key``: the table's name (cut to fit the
    63-byte limits) and a hash of the table and key, so no other table's index or table has it."""
    digest = hashlib.sha1("\0".join([table, *key]).encode()).hexdigest()[:10]
    return f"{table[:40]}_key_{digest}"
