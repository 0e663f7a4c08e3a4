"""What ``agent-etl init`` learns about a source: its tables (or files) with their columns and
constraints, and the guesses made from them (incremental cursor, range checks)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# names of columns that hold "when the row last changed": an incremental cursor if they are timestamps
_CHANGED = re.compile(r"(^|_)(updated|modified|changed|last_?update|last_?modified|last_?changed|mtime)(_|$)"
                      r"|^(update|modification|change)_?(time|date|ts|timestamp)$", re.I)


@dataclass
class Column:
    name: str
    type: str  # the source's own type name (for comments and memory)
    category: str  # integer | number | text | timestamp | date | bool | other
    nullable: bool = True
    serial: bool = False  # filled by the database from a sequence/identity/auto-increment


@dataclass
class ForeignKey:
    columns: list[str]
    table: str  # the referenced table, as Table.name
    refs: list[str]


@dataclass
class Table:
    """One extract to be: a database table (``table``) or a file/URL (``options``)."""

    name: str  # qualified name in the source (``schema.table`` outside the default schema), or a file
    tool: str
    options: dict[str, Any]  # the extract's tool options besides ``connection``
    columns: list[Column] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)
    unique: list[list[str]] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    ranges: list[dict[str, Any]] = field(default_factory=list)  # range check options, from CHECKs
    rows: int | None = None  # estimate
    enforced_fk: bool = True  # whether the database enforces its foreign keys (SQLite: not by default)
    note: str = ""  # a comment for the extract

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def cursor(self) -> tuple[str, str] | None:
        """The column to read incrementally by, and why: a timestamp named like "last changed", else
        a single-column integer primary key filled from a sequence (monotonic ids)."""
        for c in self.columns:
            if c.category in ("timestamp", "date") and _CHANGED.search(c.name):
                return c.name, f"{c.name} ({c.type}) looks like the time a row last changed"
        if len(self.primary_key) == 1:
            c = self.column(self.primary_key[0])
            if c is not None and c.category == "integer" and c.serial:
                return c.name, f"{c.name} is an integer key filled from a sequence (new rows only, no updates)"
        return None


@dataclass
class SourceSchema:
    """What introspection found: the connection url (None for files), and the tables."""

    kind: str  # postgres | mysql | sqlite | duckdb | files | s3 | rest
    url: str | None
    tables: list[Table]
    where: str  # the source for messages and the header comment (never with a password)
    skipped: list[str] = field(default_factory=list)  # what was found but not made an extract, and why


def pipeline_path(path: str | Path, out_dir: Path) -> str:
    """``path`` (relative to the working directory, or absolute) as the pipeline names it: relative to
    the pipeline file's folder (``../data/x.csv`` when outside it), which is what relative paths in a
    pipeline resolve against; absolute only where no relative path leads there (another drive)."""
    p = Path(path).expanduser().absolute()
    # the folders' real paths on both sides (a symlinked /tmp or working directory), the file's own name kept
    real = Path(os.path.realpath(p.parent)) / p.name
    try:
        return Path(os.path.relpath(real, os.path.realpath(out_dir))).as_posix()
    except ValueError:  # Windows: another drive
        return str(p)


def category(type_name: str) -> str:
    """A database type name's category (for cursor guesses and CHECK bounds)."""
    t = type_name.lower()
    if "interval" in t:
        return "other"
    if re.search(r"timestamp|datetime", t):
        return "timestamp"
    if re.fullmatch(r"date", t.strip()):
        return "date"
    if re.search(r"bool|bit\(1\)|tinyint\(1\)", t):
        return "bool"
    if re.search(r"int|serial", t):
        return "integer"
    if re.search(r"numeric|decimal|real|double|float|money|number", t):
        return "number"
    if re.search(r"char|text|string|clob|uuid|enum", t):
        return "text"
    return "other"


_CAST = re.compile(r"::[a-z_ ]+(\([^)]*\))?(\[\])?", re.I)
_NAME = r'(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[A-Za-z_][A-Za-z0-9_$]*)'
_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_CMP = re.compile(rf"^({_NAME})\s*(>=|>|<=|<)\s*({_NUM})$")
_CMP_REV = re.compile(rf"^({_NUM})\s*(>=|>|<=|<)\s*({_NAME})$")
_BETWEEN = re.compile(rf"^({_NAME})\s+between\s+({_NUM})\s+and\s+({_NUM})$", re.I)
_FLIP = {">=": "<=", ">": "<", "<=": ">=", "<": ">"}


def _unquote(name: str) -> str:
    if name[0] in '"`[':
        return name[1:-1].replace('""', '"')
    return name


def _number(text: str) -> int | float:
    v = float(text)
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v


def check_ranges(expression: str, columns: dict[str, Column]) -> list[dict[str, Any]]:
    """Range checks (``{column, min, max[, inclusive]}``) in a CHECK expression made of comparisons of
    one numeric column with numbers joined by AND (``amount >= 0``, ``qty BETWEEN 1 AND 99``,
    PostgreSQL's ``((amount >= (0)::numeric))``); anything else gives nothing."""
    text = _CAST.sub("", expression.strip())
    text = re.sub(r"^check\s*", "", text, flags=re.I)
    text = text.replace("(", " ").replace(")", " ")
    text = " ".join(text.split())
    if re.search(r"\b(or|not|in|like|is)\b", text, re.I):
        return []
    # split on AND, keeping BETWEEN x AND y whole
    parts, out = re.split(r"\s+and\s+", text, flags=re.I), []
    merged: list[str] = []
    for p in parts:
        if merged and re.search(r"\bbetween\s+\S+$", merged[-1], re.I):
            merged[-1] += f" and {p}"
        else:
            merged.append(p)
    bounds: dict[str, dict[str, Any]] = {}
    for p in merged:
        p = p.strip()
        if m := _BETWEEN.match(p):
            col, lo, hi, strict = _unquote(m[1]), _number(m[2]), _number(m[3]), False
            found = [(col, "min", lo, strict), (col, "max", hi, strict)]
        elif m := _CMP.match(p):
            col, op, value = _unquote(m[1]), m[2], _number(m[3])
            found = [(col, "min" if op.startswith(">") else "max", value, len(op) == 1)]
        elif m := _CMP_REV.match(p):
            value, op, col = _number(m[1]), _FLIP[m[2]], _unquote(m[3])
            found = [(col, "min" if op.startswith(">") else "max", value, len(op) == 1)]
        else:
            return []  # a part we do not understand: the whole CHECK is not a plain range
        for col, side, value, strict in found:
            c = columns.get(col)
            if c is None or c.category not in ("integer", "number"):
                return []
            if strict and c.category == "integer" and isinstance(value, int):  # qty > 0 is qty >= 1
                value, strict = value + (1 if side == "min" else -1), False
            b = bounds.setdefault(col, {"column": col, "strict": set()})
            b[side] = value
            b["strict"].add(strict)
    for b in bounds.values():
        strict = b.pop("strict")
        if strict == {True}:
            b["inclusive"] = False  # every bound is strict (`> 0`); a mix keeps the inclusive default
        out.append(b)
    return out
