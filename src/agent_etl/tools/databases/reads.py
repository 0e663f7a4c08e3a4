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

Resuming (``Extractor.resume_from``): a ``table`` read of a table with a primary key (or a unique
index on NOT NULL columns) is read ``ORDER BY`` that key, or by (cursor, key) when incremental
(``KeyOrder``), so every read returns the rows in the same order. ``Progress`` keeps, per
partition, the order's values of the last row yielded; the position holds them (typed JSON,
``encode_value``), the partition bounds and, when incremental, the run's bound and the largest
cursor value so far. A resumed read keeps the bounds and the incremental bound of the position
and reads, per partition, only the rows after its last values (``after_last``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import ToolError
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
        self.prior: dict[str, Any] | None = None  # the largest cursor value read before a resume

    def resume(self, position: dict[str, Any]) -> None:
        """Go on with the read that took ``position``: its bound, and its largest cursor value so far."""
        self.after = decode_value(position.get("bound"))
        self.prior = position.get("max_state")

    def position(self) -> dict[str, Any]:
        """The bound and the largest cursor value so far, as a resumed read takes them back."""
        new = self.new_mark()
        return {"bound": encode_value(self.after), "max_state": new}

    def observe(self, batch: pa.RecordBatch) -> None:
        self.tracker.observe(batch)

    def new_mark(self) -> dict[str, Any] | None:
        """The largest cursor value of the task's read, rows before a resume included."""
        new = self.tracker.state()
        if self.prior is not None:
            try:
                if new is None or decode(self.prior) > decode(new):
                    return self.prior
            except TypeError:
                return new
        return new

    def finish(self) -> None:
        """Stage the new mark; called once the whole source was read. A mark never moves back."""
        new = self.new_mark()
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


def encode_value(value: Any) -> Any:
    """A key, cursor or bound value as JSON that gives it back with its type: ``[kind, value]``."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", value]
    if isinstance(value, float):
        return ["float", repr(value)]  # exact, and NaN or infinities stay JSON
    if isinstance(value, decimal.Decimal):
        return ["decimal", str(value)]
    if isinstance(value, dt.datetime):
        return ["datetime", value.isoformat()]
    if isinstance(value, dt.date):
        return ["date", value.isoformat()]
    if isinstance(value, dt.time):
        return ["time", value.isoformat()]
    if isinstance(value, dt.timedelta):
        return ["timedelta", [value.days, value.seconds, value.microseconds]]
    if isinstance(value, str):
        return ["str", value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ["bytes", bytes(value).hex()]
    if isinstance(value, uuid.UUID):
        return ["uuid", str(value)]
    raise ToolError(f"a key value of type {type(value).__name__} ({value!r}) cannot be kept in a position; "
                    "the read cannot resume")


def decode_value(item: Any) -> Any:
    if item is None:
        return None
    kind, value = item
    return {"bool": bool, "int": int, "float": float, "decimal": decimal.Decimal, "str": str,
            "datetime": dt.datetime.fromisoformat, "date": dt.date.fromisoformat, "time": dt.time.fromisoformat,
            "timedelta": lambda v: dt.timedelta(*v), "bytes": bytes.fromhex, "uuid": uuid.UUID}[kind](value)


@dataclass(frozen=True)
class KeyOrder:
    """The order of a resumable read: ``columns`` (the incremental cursor first, if any, then the
    key); ``nullable`` when the first is a cursor that may be NULL (no bound), whose NULLs sort last."""

    columns: tuple[str, ...]
    nullable: bool = False

    @classmethod
    def of(cls, key: list[str], cursor: str | None, bounded: bool) -> KeyOrder:
        if cursor is None or cursor in key:
            return cls(tuple(key) if cursor is None or key[0] == cursor else (cursor, *[k for k in key if k != cursor]))
        return cls((cursor, *key), nullable=not bounded)


def order_by(order: KeyOrder, quote: Callable[[str], str], nulls_last: Callable[[str], str]) -> str:
    """`` ORDER BY ...`` of a read in ``order``; ``nulls_last(col)`` sorts a column's NULLs last."""
    cols = [quote(c) for c in order.columns]
    if order.nullable:
        cols[0] = nulls_last(cols[0])
    return " ORDER BY " + ", ".join(cols)


def after_last(order: KeyOrder, last: list[Any], quote: Callable[[str], str], param: Callable[[Any], str],
               row_values: bool = True) -> str:
    """The condition "after ``last`` in ``order``" (the rows a resumed partition still has to read).

    ``row_values``: the database compares ``(a, b) > (x, y)`` (and uses an index for it); else it
    is spelled out as ``a > x OR (a = x AND b > y)``. The key is NOT NULL; a nullable cursor's
    NULLs come after every value."""
    cols = [quote(c) for c in order.columns]

    def greater(i: int) -> str:
        if len(cols) - i == 1:
            return f"{cols[i]} > {param(last[i])}"
        if row_values:
            return f"({', '.join(cols[i:])}) > ({', '.join(param(v) for v in last[i:])})"
        return f"({cols[i]} > {param(last[i])} OR ({cols[i]} = {param(last[i])} AND {greater(i + 1)}))"

    if not order.nullable:
        return greater(0)
    if last[0] is None:
        return f"({cols[0]} IS NULL AND {greater(1)})"
    return f"({greater(0)} OR {cols[0]} IS NULL)"


class Progress:
    """How far each partition of a keyed read got: the order's values of its last row yielded."""

    def __init__(self, order: KeyOrder, parts: list[Part]):
        self.order, self.parts = order, parts
        self.last: list[list[Any] | None] = [None] * len(parts)

    def observe(self, batch: pa.RecordBatch, part: int = 0) -> None:
        """``batch`` (of partition ``part``) was yielded: its last row is where the partition stands."""
        if batch.num_rows:
            self.last[part] = [batch.column(c)[-1].as_py() for c in self.order.columns]

    def part_of(self, value: Any) -> int:
        """The partition a row with partition key ``value`` belongs to."""
        for i, p in enumerate(self.parts):
            if value is None:
                if p.nulls:
                    return i
            elif (p.lo is None or value >= p.lo) and (p.hi is None or value < p.hi):
                return i
        return 0 if value is None else len(self.parts) - 1

    def position(self) -> dict[str, Any]:
        return {"order": list(self.order.columns),
                "parts": [{"lo": encode_value(p.lo), "hi": encode_value(p.hi), "nulls": p.nulls,
                           "last": None if last is None else [encode_value(v) for v in last]}
                          for p, last in zip(self.parts, self.last)]}

    @classmethod
    def resumed(cls, order: KeyOrder, position: dict[str, Any], what: str) -> Progress:
        """The progress of the read that took ``position``, checked against this read's ``order``."""
        if position.get("order") != list(order.columns) or not position.get("parts"):
            raise ToolError(f"{what}: cannot resume from this position: it was taken by a read in the order of "
                            f"{position.get('order')}, and this read is ordered by {list(order.columns)} (the table's "
                            "key or the incremental cursor changed); start the read anew")
        parts = [Part(decode_value(p["lo"]), decode_value(p["hi"]), p["nulls"]) for p in position["parts"]]
        progress = cls(order, parts)
        progress.last = [None if p["last"] is None else [decode_value(v) for v in p["last"]]
                         for p in position["parts"]]
        return progress


def may_resume(ctx: Any) -> bool:
    """Whether a crash of this run could resume this read from a position, so that it must be read
    in key order: as the runtime says (``ctx.may_resume``: a load below commits in units), and
    always when the tool runs alone (tests, ``agent_etl.testing``). A run that commits each load
    once, at its end, never starts a read in the middle, and ORDER BY would only cost: on PostgreSQL
    an index scan instead of ``COPY table``, about a fifth more server time on the 1M-row table."""
    flag = getattr(ctx, "may_resume", None)
    return True if flag is None else bool(flag)


def check_position(position: Any, what: str) -> dict[str, Any]:
    """``position`` if it is one a keyed read took (``rows``, ``order``, ``parts``), else a ToolError."""
    if not isinstance(position, dict) or not isinstance(position.get("rows"), int) or "order" not in position \
            or "parts" not in position:
        raise ToolError(f"{what}: cannot resume from {position!r}: it is not the position of a keyed table read "
                        "(rows, order, parts)")
    return position


class _Split(Exception):
    """Ends a read that ``split`` planned: it carries the partitions."""

    def __init__(self, parts: list[Part]):
        super().__init__("split")
        self.parts = parts


def part_json(part: Part) -> dict[str, Any]:
    """A partition as JSON (typed values): how a copy of a partitioned source is told its range."""
    return {"lo": encode_value(part.lo), "hi": encode_value(part.hi), "nulls": part.nulls}


def part_of(value: dict[str, Any]) -> Part:
    return Part(decode_value(value.get("lo")), decode_value(value.get("hi")), bool(value.get("nulls")))


class KeyedExtractor(Extractor):
    """A database extractor whose ``table`` reads are in key order, hence resumable.

    The read asks ``keyed`` for the partitions to read (and then reads partition ``i`` in
    ``progress.order``, after ``progress.last[i]``) and records each yielded batch's last values
    in ``progress``. ``find_key`` is the database's own lookup of the table's key."""

    def __init__(self, config: Any, ctx: Any):
        super().__init__(config, ctx)
        self._key: list[str] | None | bool = False  # False: not looked up yet
        self._resume: dict[str, Any] | None = None
        self._planned = False
        self.inc: CursorRead | None = None
        self.progress: Progress | None = None
        self._splitting = False

    async def split(self) -> list[dict[str, Any]]:
        """The partitions a read of this configuration would read now (the key's range probed, as
        the read itself does), without reading a row, as JSON (``part_json``): what the coordinator
        hands to the copies of a partitioned source, one range each, when the run is spread over
        workers."""
        self._splitting = True
        stream = self.batches()
        found = [Part()]
        try:
            async for _ in stream:
                break
        except _Split as e:
            found = e.parts
        finally:
            self._splitting = False
            await stream.aclose()
        return [part_json(p) for p in found]

    def keyed_read(self) -> bool:
        """Whether this configuration reads in key order when the table has a key."""
        return self.config.table is not None

    def find_key(self) -> list[str] | None:
        """The columns of the table's primary key (or unique NOT NULL key), looked up now (blocking)."""
        return None

    def key(self) -> list[str] | None:
        if self._key is False:
            self._key = self.find_key() if self.keyed_read() else None
        return self._key  # type: ignore[return-value]

    def resumable(self) -> bool:
        """Before the read: whether ``resume_from`` can start it after a position (a ``table`` read of
        a table with a key; the first call asks the database, a catalog query). Once the read is
        planned: whether its positions can be resumed from (it is in key order, ``may_resume``)."""
        if self._planned:
            return self.progress is not None
        return self.keyed_read() and self.key() is not None

    def resume_from(self, position: dict[str, Any]) -> None:
        self._resume = check_position(position, f"task {self.ctx.task!r}")

    def wants_order(self) -> bool:
        """Whether this read goes in key order if the table has a key (so the key is worth a lookup)."""
        return self.keyed_read() and (self._resume is not None or may_resume(self.ctx))

    def resumed_cursor(self) -> CursorRead | None:
        """The incremental side of this read (None: not incremental), set back to the position's bound."""
        inc = CursorRead(self.config.incremental, self.ctx) if self.config.incremental is not None else None
        if inc is not None and self._resume is not None:
            inc.resume(self._resume)
        self.inc = inc
        return inc

    def keyed_position(self) -> dict[str, Any]:
        """What a keyed read adds to the position: the order, each partition's last values, and the
        incremental bound and largest cursor value so far."""
        if self.progress is None:
            return {}
        pos = self.progress.position()
        if self.inc is not None:
            pos.update(self.inc.position())
        return pos

    def keyed(self, key: list[str] | None, after: Any, probe: Callable[[], list[Part]], what: str) -> list[Part]:
        """The partitions to read (``probe`` finds them for a new read), and ``self.progress`` when
        the read is in key order. Called as the read is planned, with the key found in its own
        transaction (None: no key, or not a keyed read).

        A copy of a partitioned read (``ctx.partition``: one of the ranges ``split`` gave the
        coordinator) reads that range alone; ``split`` stops the read here, with the ranges."""
        if self._splitting:
            raise _Split(probe())
        fixed = getattr(self.ctx, "partition", None)
        if fixed is not None:
            probe = lambda: [part_of(fixed)]  # noqa: E731
        self.progress, self._planned = None, True
        if key is not None:
            self._key = key
        if key is None or not self.wants_order():
            if self._resume is not None:
                raise ToolError(f"task {self.ctx.task!r}: {what} has no primary key or unique NOT NULL key (or is "
                                "not read in key order), so the read cannot go on from its position; start it anew")
            return probe()
        cursor = self.config.incremental.cursor if self.config.incremental is not None else None
        order = KeyOrder.of(key, cursor, bounded=after is not None)
        if self._resume is not None:
            self.progress = Progress.resumed(order, self._resume, f"task {self.ctx.task!r}: {what}")
        else:
            self.progress = Progress(order, probe())
        return self.progress.parts


class ReaderExtractor(KeyedExtractor):
    """An extractor driving a blocking reader (``open``/``next``/``close``, and ``interrupt`` where
    the driver can stop a call in flight) through ``read_stream``, with the incremental cursor;
    keyed reads as in ``KeyedExtractor`` (the reader calls ``keyed`` as it opens)."""

    def __init__(self, config: Any, ctx: Any):
        super().__init__(config, ctx)
        self._rows = 0

    def position(self) -> dict[str, Any]:
        return {"rows": self._rows, **self.keyed_position()}

    def reader(self, after: Any) -> Any:
        """The blocking reader of this read; ``after`` is the incremental bound (None: no filter)."""
        raise NotImplementedError

    def errors(self) -> tuple[type[BaseException], ...]:
        """The driver's exceptions, which the reader turns into task errors."""
        raise NotImplementedError

    async def batches(self) -> AsyncIterator[pa.RecordBatch]:
        inc = self.resumed_cursor()
        if self._resume is not None:
            self._rows = self._resume["rows"]
        reader = self.reader(inc.after if inc else None)
        stream = read_stream(reader, self.errors(), inc, stop=getattr(reader, "interrupt", None))
        async with contextlib.aclosing(stream):
            async for batch in stream:
                self._rows += batch.num_rows
                yield batch
