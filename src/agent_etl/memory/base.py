"""The ``VectorMemory`` protocol every backend implements, its records and its filters.

A record is an id, a document (what gets embedded: a task descriptor's JSON, see
``memory.descriptor``) and flat metadata (str, int, float or bool values). The backend embeds
documents itself with the one embedding of ``memory.embedding``, so every backend ranks alike:
distances are cosine distances (0 = same direction, 2 = opposite).

Filters (``where``) are a mapping of metadata key to a value (equality) or to one operator:
``{"status": "succeeded", "rows": {"$gte": 1000}, "tool": {"$in": ["csv", "parquet"]}}``;
all keys must match. Operators: ``$eq $ne $gt $gte $lt $lte $in $nin``.
"""

from __future__ import annotations

import operator

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, Union

Scalar = Union[str, int, float, bool]
Where = Mapping[str, Any]
OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")


@dataclass(frozen=True)
class Record:
    id: str
    document: str
    metadata: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    record: Record
    distance: float


class VectorMemory(Protocol):
    """What the coordinator, the selector and the CLI use; blocking calls (run them off the loop)."""

    def add(self, records: Sequence[Record]) -> None:
        """Store records; a record whose id is stored already replaces it."""

    def query(self, document: str, k: int = 10, where: Where | None = None) -> list[Hit]:
        """The ``k`` records nearest to ``document`` (a descriptor's JSON or free text), nearest first."""

    def get(self, ids: Sequence[str] | None = None, where: Where | None = None,
            limit: int | None = None) -> list[Record]:
        """Records by id and/or filter (all of them with neither), in no particular order."""

    def delete(self, ids: Sequence[str]) -> None:
        """Forget these records; unknown ids are ignored."""

    def count(self) -> int: ...

    def close(self) -> None: ...


def check_where(where: Where | None) -> list[tuple[str, str, Any]]:
    """``where`` as (key, operator, value) triples; a ValueError names what is wrong."""
    out: list[tuple[str, str, Any]] = []
    for key, cond in (where or {}).items():
        if isinstance(cond, Mapping):
            if len(cond) != 1 or next(iter(cond)) not in OPERATORS:
                raise ValueError(f"filter on {key!r}: give one of {', '.join(OPERATORS)}, got {dict(cond)!r}")
            op, value = next(iter(cond.items()))
        else:
            op, value = "$eq", cond
        if op in ("$in", "$nin") and not isinstance(value, (list, tuple)):
            raise ValueError(f"filter on {key!r}: {op} takes a list")
        out.append((key, op, value))
    return out


_MISSING = object()
_OPS = {"$eq": operator.eq, "$ne": operator.ne, "$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt,
        "$lte": operator.le}


def matches(metadata: Mapping[str, Any], conditions: list[tuple[str, str, Any]]) -> bool:
    """Whether a record's metadata passes ``check_where``'s conditions, as Chroma and NumpyMemory
    decide it: a missing key, or a value of another type (a bool is not a number), matches only
    ``$ne`` (and ``$nin``)."""
    return all(_holds(metadata, key, op, value) for key, op, value in conditions)


def _holds(metadata: Mapping[str, Any], key: str, op: str, value: Any) -> bool:
    if op in ("$in", "$nin"):
        hit = any(_holds(metadata, key, "$eq", v) for v in value)
        return hit if op == "$in" else not hit
    have = metadata.get(key, _MISSING)
    if have is _MISSING or _kind(have) is not _kind(value):
        return op == "$ne"
    return bool(_OPS[op](have, value))


def _kind(value: Any) -> type:
    if isinstance(value, bool):
        return bool
    return float if isinstance(value, (int, float)) else type(value)
