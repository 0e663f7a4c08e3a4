"""Turning pydantic validation errors into ``Problem``s with YAML lines and "did you mean" hints."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from agent_etl.exceptions import Problem

if TYPE_CHECKING:
    from agent_etl.spec.yamlsource import Document


def validate_options(cls, options: dict[str, Any], path: tuple, doc: Document, who: str) -> list[Problem]:
    try:
        cls.Config.model_validate(options)
    except ValidationError as e:
        return pydantic_problems(e, doc, path, f"{who} ({cls.name})", cls.Config)
    return []


def pydantic_problems(e: ValidationError, doc: Document, prefix: tuple = (), who: str = "",
                       model: type[BaseModel] | None = None) -> list[Problem]:
    problems = []
    for err in e.errors(include_url=False):
        loc = prefix + tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        # pydantic puts union branch names (str, list[str]) into loc; keep the real path only
        clean = tuple(x for x in loc if not (isinstance(x, str) and ("[" in x or x in {"str", "int", "float", "bool"})))
        where = ".".join(str(x) for x in clean)
        kind = err["type"]
        if kind == "extra_forbidden":
            key = clean[-1]
            allowed = [k for k in allowed_keys(model, clean[len(prefix):]) if k != "name"]
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else (f"allowed keys: {', '.join(allowed)}" if allowed else None)
            msg = f"unknown key {key!r}" + (f" in {who}" if who else "")
            problems.append(Problem(msg, doc.line(clean), hint, where=".".join(str(x) for x in clean[:-1]) or None))
        elif kind == "missing":
            problems.append(Problem(f"missing required key {clean[-1]!r}" + (f" in {who}" if who else ""),
                                    doc.line(clean[:-1]), where=".".join(str(x) for x in clean[:-1]) or None))
        else:
            msg = err["msg"]
            if kind == "value_error":  # our validators' own sentences: they name the value already
                msg = msg.removeprefix("Value error, ")
            elif "input" in err and kind not in ("model_type", "dict_type"):
                got = repr(err["input"])
                msg += f" (got {got if len(got) <= 80 else got[:77] + '...'})"
            problems.append(Problem(msg, doc.line(clean), where=where or None))
    # the same key may be reported once per union branch
    unique: list[Problem] = []
    for p in problems:
        if p not in unique:
            unique.append(p)
    return unique


def allowed_keys(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the (nested) model that holds the key at ``loc``."""
    import typing

    cur: Any = model
    for part in loc[:-1]:
        if cur is None:
            return []
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            field_ = cur.model_fields.get(part) if isinstance(part, str) else None
            cur = field_.annotation if field_ else None
            continue
        args = [a for a in typing.get_args(cur) if a is not type(None)]
        cur = args[-1] if args else None  # dict[str, M] / list[M] / M | None: step into M
    while cur is not None and not (isinstance(cur, type) and issubclass(cur, BaseModel)):
        args = [a for a in typing.get_args(cur) if a is not type(None)]
        cur = args[-1] if args else None
    return sorted(cur.model_fields) if cur is not None else []
