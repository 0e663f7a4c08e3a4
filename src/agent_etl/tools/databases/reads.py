"""The shape of a database read: the incremental filter, the partitions, the WHERE clause.

Used by the sqlite, duckdb and sql extractors (each brings its own identifier quoting and
parameter marker), so an incremental or partitioned read means the same on every database:

- ``incremental: {cursor}`` reads rows with ``cursor > bound`` (``incremental.bound``: the mark of
  the last successful run, or ``initial``, minus ``lookback``); the new mark is the largest cursor
  value read, staged with ``ctx.save_state`` only once the whole stream was read (and kept by the
  run store only if everything downstream succeeded, so a failed run re-reads the same rows).
- ``partitions: N`` with ``partition_on: key`` splits ``[min(key), max(key)]`` into N ranges; the
  first range has no lower bound and also reads NULL keys, the last has no upper bound, so the
  ranges together read every row of a single read, whatever changes between the min/max probe
  and the reads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from agent_etl.tools.base import Extractor
from agent_etl.tools.databases.blocking import read_stream
from agent_etl.tools.databases.incremental import CursorTracker, bound, decode, partition_bounds
from agent_etl.tools.databases.options import Incremental


@dataclass(frozen=True)
class Part:
    """One partition of a read: ``lo <= key < hi`` (None: unbounded); ``nulls`` adds NULL keys."""

    lo: Any = None
    hi: Any = None
    nulls: bool = False


def parts(lo: Any, hi: Any, n: int) -> list[Part]:
    """The partitions of a key whose values span ``[lo, hi]``; one unbounded part when n is 1."""
    ranges = partition_bounds(lo, hi, n) if n > 1 else [(None, None)]
    if len(ranges) == 1:
        return [Part()]
    return [Part(None if i == 0 else a, b, nulls=i == 0) for i, (a, b) in enumerate(ranges)]


def where(*, mark: Callable[[int], str], cursor: str | None = None, after: Any = None, key: str | None = None,
          part: Part | None = None) -> tuple[str, list[Any]]:
    """`` WHERE ...`` (or "") and its parameters; ``cursor``/``key`` are quoted SQL expressions and
    ``mark(i)`` gives the placeholder of the i-th parameter (``?``, ``%s``, ``$1`` ...)."""
    conds: list[str] = []
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return mark(len(params))

    if cursor is not None and after is not None:
        conds.append(f"{cursor} > {param(after)}")
    if key is not None and part is not None:
        bounds = []
        if part.lo is not None:
            bounds.append(f"{key} >= {param(part.lo)}")
        if part.hi is not None:
            bounds.append(f"{key} < {param(part.hi)}")
        if bounds:
            cond = " AND ".join(bounds)
            conds.append(f"({cond} OR {key} IS NULL)" if part.nulls else f"({cond})")
    return (" WHERE " + " AND ".join(conds) if conds else ""), params


def initial_value(inc: Incremental) -> Incremental:
    """``initial`` as written in YAML: an ISO date or timestamp string becomes a date/datetime, so
    it compares with date and timestamp cursors (and ``lookback`` can be subtracted from it)."""
    value = inc.initial
    if isinstance(value, str):
        try:
            parsed: Any = dt.date.fromisoformat(value) if len(value) == 10 else dt.datetime.fromisoformat(value)
        except ValueError:
            return inc
        return inc.model_copy(update={"initial": parsed})
    return inc


class CursorRead:
    """The incremental side of one extract task run: the bound to read after, the new mark."""

    def __init__(self, inc: Incremental, ctx: Any):
        self.inc, self.ctx = initial_value(inc), ctx
        self.state = ctx.load_state()
        self.after = bound(self.inc, self.state)
        self.tracker = CursorTracker(inc.cursor)

    def observe(self, batch: pa.RecordBatch) -> None:
        self.tracker.observe(batch)

    def finish(self) -> None:
        """Stage the new mark; called once the whole source was read. A mark never moves back."""
        new = self.tracker.state()
        if new is None:
            return
        old = self.state if self.state is not None and self.state.get("cursor") == self.inc.cursor else None
        if old is not None:
            try:
                if not decode(new) > decode(old):
                    return
            except TypeError:  # the cursor column changed type: the new values are what counts
                pass
        self.ctx.save_state(new)


class ReaderExtractor(Extractor):
    """An extractor driving a blocking reader (``open``/``next``/``close``, and ``interrupt`` where
    the driver can stop a call in flight) through ``read_stream``, with the incremental cursor."""

    def __init__(self, config: Any, ctx: Any):
        super().__init__(config, ctx)
        self._rows = 0

    def position(self) -> dict[str, Any]:
        return {"rows": self._rows}

    def reader(self, after: Any) -> Any:
        """The blocking reader of this read; ``after`` is the incremental bound (None: no filter)."""
        raise NotImplementedError

    def errors(self) -> tuple[type[BaseException], ...]:
        """The driver's exceptions, which the reader turns into task errors."""
        raise NotImplementedError

    async def batches(self) -> AsyncIterator[pa.RecordBatch]:
        inc = CursorRead(self.config.incremental, self.ctx) if self.config.incremental is not None else None
        reader = self.reader(inc.after if inc else None)
        stream = read_stream(reader, self.errors(), inc, stop=getattr(reader, "interrupt", None))
        async with contextlib.aclosing(stream):
            async for batch in stream:
                self._rows += batch.num_rows
                yield batch
