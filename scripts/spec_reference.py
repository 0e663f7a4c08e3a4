#!/usr/bin/env python
"""Write docs/reference/spec.md, the pipeline spec reference, from the spec's pydantic models and
the option models of every tool in the registry (issue 17).

    python scripts/spec_reference.py           # (re)write docs/reference/spec.md
    python scripts/spec_reference.py --check   # exit 1 if the committed file is out of date

tests/docs/test_spec_reference.py runs the check, so a change to a model or a tool's options that
is not followed by a regeneration fails the suite. Every tool must be importable (its extra
installed, as `pip install -e '.[test]'` does): a tool listed without its options would make the
file depend on the machine.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "reference" / "spec.md"

_FAMILIES = [("extractor", "Extractors", "`extract:` steps"),
             ("transform", "Transforms", "`transform:` steps"),
             ("validator", "Checks", "entries of a quality group's `checks:` (and of `tool: validate`)"),
             ("loader", "Loaders", "`load:` steps")]


def type_name(t: Any) -> str:
    """A field's type as a reader of the YAML file sees it."""
    if t is type(None):
        return "null"
    if t is Any:
        return "any"
    origin, args = get_origin(t), get_args(t)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is Literal:
        return " or ".join(f"`{a!r}`".replace("'", '"') for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {type_name(args[1])}" if args else "mapping"
    if isinstance(t, type) and issubclass(t, BaseModel):
        return f"*{t.__name__}*"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(t, getattr(t, "__name__", str(t)))


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(its defaults)"
    if value is None:
        return ""
    if isinstance(value, str):
        return f"`'{value}'`" if '"' in value else f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value, default=str)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _nested(model: type[BaseModel]) -> list[type[BaseModel]]:
    """The models a model's fields hold, depth first, each once."""
    out: list[type[BaseModel]] = []

    def walk(t: Any) -> None:
        if isinstance(t, type) and issubclass(t, BaseModel):
            if t not in out:
                out.append(t)
                for f in t.model_fields.values():
                    walk(f.annotation)
            return
        for a in get_args(t):
            walk(a)

    for f in model.model_fields.values():
        walk(f.annotation)
    return out


# What a spec field means where its model says nothing (no description=, no comment): the spec
# package's models are the first place for such text; these fill the gaps until they say it there.
_MEANINGS = {
    ("Spec", "version"): "the spec's format version; always 1",
    ("Spec", "name"): "the pipeline's name: runs, history, profiles and the result cache are kept under it",
    ("Spec", "description"): "free text, shown by `plan`",
    ("Spec", "defaults"): "settings every task uses unless its step sets its own",
    ("Spec", "connections"): "named connections steps refer to with `connection:`; secrets only as ${VAR} or ${file:path}",
    ("Spec", "extract"): "sources, each under its own name",
    ("Spec", "transform"): "steps in any order; `input:` edges make the task graph",
    ("Spec", "quality"): "quality groups: the checks that gate an input's stream",
    ("Spec", "load"): "destinations, each under its own name",
    ("Spec", "alerts"): "webhooks told of failed runs, quality failures, anomalies and stalls",
    ("Defaults", "batch_size"): "rows per Arrow batch",
    ("Defaults", "retries"): "how a task that failed transiently is retried",
    ("Defaults", "breaker"): "the circuit breaker per connection",
    ("Retries", "max_attempts"): "tries of a task in all, the first included",
    ("Retries", "backoff"): "waits that double from `initial_delay` up to `max_delay`, or stay at `initial_delay`",
    ("Retries", "initial_delay"): "seconds before the second try",
    ("Retries", "max_delay"): "longest wait in seconds",
    ("CommitEvery", "rows"): "commit a unit after this many rows",
    ("CommitEvery", "seconds"): "commit a unit after this many seconds",
    ("Breaker", "failures"): "transient failures on one connection before its other tasks fail at once",
    ("Connection", "url"): "a database URL (`postgresql://`, `mysql://`, `sqlite:///`, `duckdb:///`, any SQLAlchemy URL) "
                           "or a service's base URL; other keys are the tool's connection options",
    ("Step", "name"): "the step's name: the key under `extract:` and `load:`, `name:` in `transform:`",
    ("Step", "tool"): "the tool that runs the step (`agent-etl tools list`); the step's other keys are its options",
    ("ExtractStep", "cache"): "keep the result and reuse it within a ttl: `true` or `{ttl: 10m}`",
    ("TransformStep", "input"): "the step or steps it reads (a list for a join or union)",
    ("LoadStep", "input"): "the step it writes",
    ("QualityGroup", "input"): "the step whose stream the checks gate",
    ("QualityGroup", "checks"): "one mapping per check, e.g. `- not_null: [id]` (see Checks below)",
    ("QualityGroup", "on_failure"): "a failing check stops the run before any destination commits (exit 3), warns, "
                                    "or sends the failing rows to the quarantine",
    ("ProfileOptions", "enabled"): "profile the input at all",
    ("ProfileOptions", "columns"): "the columns to profile (default: all)",
    ("ProfileOptions", "outliers"): "column -> outlier method",
}


def _meaning(model: type, attr: str) -> str:
    for cls in model.__mro__:
        if (found := _MEANINGS.get((cls.__name__, attr))) is not None:
            return found
    return ""


_FIELD = re.compile(r"^\s+(\w+)\s*:[^#]*?(?:#\s*(.*))?$")


def source_comments(model: type) -> dict[str, str]:
    """Field name -> the comment on its line, or else the comment lines right above it, in the
    class bodies of ``model`` and its bases: what a field without ``description=`` means."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines[1:]:
            stripped = line.strip()
            if stripped.startswith("#"):
                above.append(stripped.lstrip("#").strip())
                continue
            m = _FIELD.match(line)
            if m and not stripped.startswith(("def ", "return", "@")) and line.startswith("    ") \
                    and not line.startswith("     "):
                comment = m.group(2) or " ".join(above)
                if comment:
                    out[m.group(1)] = comment
            above = []
    return out


def fields_table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    rows = [(n, f.alias or n, f) for n, f in model.model_fields.items() if (f.alias or n) not in skip]
    if not rows:
        return ["No options.", ""]
    comments = source_comments(model)
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for attr, name, f in rows:
        meaning = f.description or comments.get(attr) or _meaning(model, attr)
        out.append(f"| `{name}` | {type_name(f.annotation)} | {_default(f)} | {_cell(meaning)} |")
    return out + [""]


def _doc(model: type) -> str:
    doc = (model.__doc__ or "").strip()
    if not doc or doc.startswith(("Usage docs:", "A base class")):  # pydantic's own docstrings
        return ""
    return " ".join(doc.split("\n\n")[0].split()).replace("``", "`")


def render(registry: Any = None) -> str:
    from agent_etl.spec import Spec
    from agent_etl.tools.registry import default_registry

    registry = registry or default_registry()
    out = ["# Spec reference", "",
           "<!-- generated by scripts/spec_reference.py from the models: do not edit; run"
           " `python scripts/spec_reference.py` -->", "",
           "A pipeline file is one YAML mapping. This page lists every key the spec's models accept and,"
           " per tool, the options of its step (`agent-etl tools list` shows the same from the installed"
           " tools, `agent-etl schema` the JSON Schema editors use: [Editors](../editors.md)).", "",
           "Keys an extract or load step always has: its name is its key under `extract:` / `load:`;"
           " a transform step has `name:`. Every other key of a step is an option of its `tool`.", "",
           "## Pipeline", ""]
    out += fields_table(Spec)
    for model in _nested(Spec):
        out += [f"### {model.__name__}", ""]
        if doc := _doc(model):
            out += [doc, ""]
        out += fields_table(model)
    for family, title, where in _FAMILIES:
        out += [f"## {title}", "", f"Used as {where}.", ""]
        for name in registry.names(family):
            cls = registry.get(family, name)  # MissingExtra: install the extras (see the docstring)
            out += [f"### {family} `{name}`", ""]
            if summary := cls.summary():
                out += [_cell(summary), ""]
            out += fields_table(cls.Config)
            for model in _nested(cls.Config):
                out += [f"#### {family} `{name}`: {model.__name__}", ""]
                if doc := _doc(model):
                    out += [doc, ""]
                out += fields_table(model)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run `python scripts/spec_reference.py`",
                  file=sys.stderr)
            return 1
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
