"""``TaskDescriptor``: what a task is, in the terms memory compares tasks by, and its features.

A task streams within its branch (extract -> transforms -> loads), so it is described with its
branch: the kinds of the sources and destinations, the transforms in between, the schema shape
when known (from a data profile of the run, or declared in the spec), a size estimate and the
task's options. Secrets never get in: connection URLs, passwords, tokens, headers and auth are left
out, and so is any option value that holds a secret the pipeline interpolated or a URL.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent_etl.redaction import secret_name

MARK = "agent_etl.task/1"  # a descriptor's JSON starts with it; anything else embeds as free text
# options left out of a descriptor: those named like a secret (agent_etl.redaction), and those that
# may hold one (a URL, headers, request parameters) or say where a system is
_MAY_HOLD_SECRET = re.compile(r"pass|auth|header|private|dsn|url|endpoint|connection|params", re.I)
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class TaskDescriptor:
    kind: str  # extract | transform | load
    tool: str
    sources: tuple[str, ...] = ()  # kinds of the branch's sources, e.g. ("postgres",) or ("sql:mysql",)
    destinations: tuple[str, ...] = ()
    transforms: tuple[str, ...] = ()  # tools of the branch's transforms, in order
    schema: tuple[tuple[str, str], ...] = ()  # (column, arrow type) when known
    rows: int | None = None  # size estimate
    bytes: int | None = None
    options: tuple[tuple[str, str], ...] = ()  # flattened safe options, e.g. ("incremental.cursor", "updated_at")

    def to_json(self) -> str:
        """Canonical JSON (the same descriptor always gives the same text): the document memory embeds."""
        return json.dumps({"descriptor": MARK, **asdict(self)}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> TaskDescriptor:
        data = json.loads(text)
        if not isinstance(data, dict) or data.pop("descriptor", None) != MARK:
            raise ValueError("not a task descriptor")
        for key in ("sources", "destinations", "transforms"):
            data[key] = tuple(data.get(key) or ())
        data["schema"] = tuple(tuple(c) for c in data.get("schema") or ())
        data["options"] = tuple(tuple(o) for o in data.get("options") or ())
        return cls(**data)

    def summary(self) -> str:
        """One line for people: ``load parquet: postgres -> filter -> parquet, ~1e6 rows, 12 columns``."""
        path = " -> ".join([",".join(self.sources) or "?", *self.transforms, ",".join(self.destinations) or "?"])
        size = f", ~{self.rows:,} rows" if self.rows else ""
        cols = f", {len(self.schema)} columns" if self.schema else ""
        return f"{self.kind} {self.tool}: {path}{size}{cols}"

    def features(self) -> list[tuple[str, float]]:
        """Weighted tokens for feature hashing. Structured tokens (``src=postgres``) make descriptors
        of similar tasks close; plain words (``w=postgres``) let free-text queries find them."""
        out: list[tuple[str, float]] = [(f"kind={self.kind}", 1.0), (f"tool={self.kind}:{self.tool}", 2.0),
                                        *_words(f"{self.kind} {self.tool}", 1.5)]
        for s in self.sources:
            out += [(f"src={s}", 3.0), *_words(s, 1.0)]
        for d in self.destinations:
            out += [(f"dst={d}", 3.0), *_words(d, 1.0)]
        for i, t in enumerate(self.transforms):
            out += [(f"tf={t}", 1.5), *_words(t, 0.5)]
            if i:
                out.append((f"tf2={self.transforms[i - 1]}>{t}", 0.75))
        if not self.transforms:
            out.append(("tf=none", 1.0))
        if self.schema:
            w = 2.0 / math.sqrt(len(self.schema))
            out.append((f"ncols~{_bucket(len(self.schema), 2)}", 1.0))
            for name, typ in self.schema:
                out += [(f"col={name.lower()}", w), (f"coltype={name.lower()}:{typ}", w), (f"type={typ}", w / 2),
                        *_words(name, w / 2)]
        for unit, value in (("rows", self.rows), ("bytes", self.bytes)):
            if value:  # log10 buckets, neighbours at half weight: 1e5 rows is near 1e6, far from 1e9
                b = _bucket(value, 10)
                out += [(f"{unit}~{b}", 1.5), (f"{unit}~{b - 1}", 0.5), (f"{unit}~{b + 1}", 0.5)]
        for key, value in self.options:
            out += [(f"opt={key}", 0.5), (f"opt={key}={value}", 0.75), *_words(value, 0.3)]
        return out


def text_features(text: str) -> list[tuple[str, float]]:
    """Free text (``memory search``): its words, matching the plain words of descriptors."""
    return _words(text, 1.0)


def _words(text: str, weight: float) -> list[tuple[str, float]]:
    return [(f"w={w}", weight) for w in _WORD.findall(text.lower())]


def _bucket(n: float, base: int) -> int:
    return int(round(math.log(max(n, 1), base)))


def describe(task: Any, pipeline: Any, *, schema: dict[str, str] | None = None, rows: int | None = None
             ) -> TaskDescriptor:
    """The descriptor of ``task`` (a ``spec.Task``) of ``pipeline`` (a ``spec.Pipeline``). ``schema``
    ({column: type}) and ``rows`` are what a run saw; without them the spec's declarations and the
    size of the source files are used when there are any."""
    by_name = {t.name: t for t in pipeline.tasks}
    branch = next((b for b in pipeline.branches() if any(t.name == task.name for t in b)), [task])
    connections = getattr(pipeline.spec, "connections", {}) or {}
    secrets = {s for s in getattr(pipeline, "secrets", set()) or set() if s}
    kind_of = {t.name: _source_kind(t, connections) for t in branch}
    sources = tuple(sorted({kind_of[t.name] for t in branch if t.kind == "extract"}))
    destinations = tuple(sorted({kind_of[t.name] for t in branch if t.kind == "load"}))
    transforms = tuple(t.tool for t in branch if t.kind == "transform")
    if schema is None:
        schema = _declared_schema(task, by_name)
    size = _file_bytes(task, pipeline) if task.kind == "extract" else None
    return TaskDescriptor(kind=task.kind, tool=kind_of[task.name], sources=sources, destinations=destinations,
                          transforms=transforms, schema=tuple((str(k), str(v)) for k, v in (schema or {}).items()),
                          rows=rows, bytes=size, options=tuple(sorted(safe_options(task.options, secrets))))


def safe_options(options: dict[str, Any], secrets: set[str], prefix: str = "") -> list[tuple[str, str]]:
    """The options as flat (dotted key, text) pairs, without anything that is or may hold a secret."""
    out: list[tuple[str, str]] = []
    for key, value in options.items():
        name = f"{prefix}{key}"
        if secret_name(str(key)) or _MAY_HOLD_SECRET.search(str(key)):
            continue
        if isinstance(value, dict):
            out += safe_options(value, secrets, name + ".")
            continue
        if isinstance(value, (list, tuple)):
            if not all(isinstance(v, (str, int, float, bool)) for v in value):
                continue
            text = ",".join(str(v) for v in value)
        elif isinstance(value, (str, int, float, bool)) or value is None:
            text = "" if value is None else str(value)
        else:
            continue
        if "://" in text or any(s in text for s in secrets):
            continue
        if key in ("path",):  # the file's kind of name, not where it is on this machine
            text = Path(text).name
        out.append((name, text[:200]))
    return out


def _source_kind(task: Any, connections: dict[str, Any]) -> str:
    """The tool, and for the generic ``sql`` tool the database behind its connection (URL scheme only)."""
    conn = task.options.get("connection")
    if task.tool == "sql" and isinstance(conn, str) and conn in connections:
        url = str(getattr(connections[conn], "url", "") or "")
        scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
        if scheme and re.fullmatch(r"[a-z][a-z0-9]*", scheme):
            return f"sql:{scheme}"
    return task.tool


def _declared_schema(task: Any, by_name: dict[str, Any]) -> dict[str, str] | None:
    """Columns the spec declares for the task's data: a ``schema`` check, ``column_types``, or upstream's."""
    seen: set[str] = set()
    todo = [task]
    while todo:
        t = todo.pop(0)
        if t.name in seen:
            continue
        seen.add(t.name)
        for group in getattr(t, "gates", []) or []:
            for check in group.checks:
                cols = check.get("schema", {}).get("columns") if isinstance(check.get("schema"), dict) else None
                if isinstance(cols, dict) and cols:
                    return {str(k): str(v) for k, v in cols.items()}
        types = t.options.get("column_types")
        if isinstance(types, dict) and types:
            return {str(k): str(v) for k, v in types.items()}
        todo += [by_name[i] for i in getattr(t, "data_inputs", t.inputs) if i in by_name]
    return None


def _file_bytes(task: Any, pipeline: Any) -> int | None:
    path = task.options.get("path")
    if not isinstance(path, str) or "://" in path:
        return None
    base = Path(getattr(pipeline, "base_dir", ".") or ".")
    try:
        p = Path(path) if Path(path).is_absolute() else base / path
        if p.is_file():
            return p.stat().st_size
        if any(ch in path for ch in "*?["):
            return sum(f.stat().st_size for f in base.glob(path) if f.is_file()) or None
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) or None
    except (OSError, ValueError, NotImplementedError):
        return None
    return None
