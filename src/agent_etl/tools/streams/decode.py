"""Message payloads to Arrow.

JSON payloads (one object per message) are joined into one NDJSON block and read by ``pyarrow.json``
(C++, two threads): no Python work per record. The first batch's inferred schema is kept for the
next ones (``column_types`` pin what must not be guessed), so one stream gives one schema: a field
that appears later is added, a field whose values widen (int to float) is widened, and a field that
changes kind (a number, then text) is an error that says to pin it. Only when a block does not parse
are the payloads looked at one by one, to name the message at fault (or skip it).

Redis field/value maps (``format: fields``) become string columns, cast to ``column_types``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from agent_etl.exceptions import ToolError
from agent_etl.tools.streams.options import SourceOptions

_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


class NDJSON(bytes):
    """Payloads a source already joined with newlines (a Redis script's reply): one block, several messages."""


class Decoder:
    def __init__(self, options: SourceOptions, what: str, split: Callable[[Sequence[Any]], list[bytes]] | None = None):
        self.options, self.what = options, what  # what: "redis stream 'orders'", for messages
        self.split = split  # the payloads of messages by id, one by one: to find a bad one in an NDJSON block
        self.pinned = options.types()
        self.schema: pa.Schema | None = None  # settled by the first batch
        self.skipped = 0

    def decode(self, payloads: Sequence[Any], ids: Sequence[Any]) -> pa.RecordBatch | None:
        """One batch of the messages ``payloads`` (ids name them in errors and fill ``id_column``);
        None when every one was skipped as malformed."""
        if self.options.format == "fields":
            table = self._fields(payloads, ids)
        else:
            table, ids = self._json(payloads, ids)
        if table is None:
            return None
        if self.options.id_column:
            values = pa.array(ids, pa.int64() if ids and isinstance(ids[0], int) else pa.string())
            table = table.append_column(self.options.id_column, values)
        return table.combine_chunks().to_batches()[0] if table.num_rows else None

    # JSON payloads -----------------------------------------------------------------------------

    def _json(self, payloads: Sequence[bytes], ids: Sequence[Any]) -> tuple[pa.Table | None, Sequence[Any]]:
        data = b"\n".join(payloads)
        table = self._read(data, len(ids))
        if table is None and payloads and isinstance(payloads[0], NDJSON):
            if self.split is None:
                raise ToolError(f"{self.what}: messages {_name(ids[0])}..{_name(ids[-1])} are not all JSON objects")
            payloads = self.split(ids)
        if table is None:  # a payload is not one JSON object: find it
            good = self._check(payloads, ids)
            if not good:
                return None, []
            payloads = [payloads[i] for i in good]
            ids = [ids[i] for i in good]
            table = self._read(b"\n".join(payloads), len(payloads))
            if table is None:
                raise ToolError(f"{self.what}: messages {_name(ids[0])}..{_name(ids[-1])} could not be read as JSON objects")
        return self._settle(table), ids

    def _read(self, data: bytes, rows: int) -> pa.Table | None:
        """The NDJSON block as a table, or None if it does not hold ``rows`` JSON objects."""
        explicit = self._explicit()
        parse = pj.ParseOptions(
            explicit_schema=explicit, newlines_in_values=data.count(b"\n") != rows - 1,
            unexpected_field_behavior="infer" if self.options.other_columns == "infer" else self.options.other_columns)
        read = pj.ReadOptions(block_size=max(1 << 22, len(data) // 2 + 1), use_threads=True)
        try:
            table = pj.read_json(pa.py_buffer(data), read_options=read, parse_options=parse)
        except _ERRORS as e:
            if self.schema is not None and "unexpected field" not in str(e).lower():
                # a settled column's values changed: read with the pinned types only, then widen
                try:
                    table = pj.read_json(pa.py_buffer(data), read_options=read, parse_options=pj.ParseOptions(
                        explicit_schema=pa.schema(self.pinned.items()) if self.pinned else None,
                        newlines_in_values=parse.newlines_in_values,
                        unexpected_field_behavior=parse.unexpected_field_behavior))
                except _ERRORS:
                    return None
            else:
                if "unexpected field" in str(e).lower():
                    raise ToolError(f"{self.what}: a message has a field not in column_types ({e}); add it to "
                                    "column_types, or set other_columns: ignore (or infer)") from None
                return None
        return table if table.num_rows == rows else None

    def _explicit(self) -> pa.Schema | None:
        if self.schema is not None:
            return self.schema
        return pa.schema(self.pinned.items()) if self.pinned else None

    def _settle(self, table: pa.Table) -> pa.Table:
        """The table in the stream's schema: the first batch's, widened when a later one needs it."""
        if self.schema is None:
            self.schema = table.schema
            return table
        if table.schema.equals(self.schema):
            return table
        try:
            wider = pa.unify_schemas([self.schema, table.schema], promote_options="permissive")
            for f in self.pinned:
                wider = wider.set(wider.get_field_index(f), pa.field(f, self.pinned[f]))
            table = _conform(table, wider)
        except _ERRORS as e:
            raise ToolError(f"{self.what}: a field changed type between messages ({e}); pin its type with "
                            "column_types: {field: type}") from None
        self.schema = wider
        return table

    def _check(self, payloads: Sequence[bytes], ids: Sequence[Any]) -> list[int]:
        """Indexes of the payloads that are JSON objects; a bad one fails the read, or is skipped."""
        good = []
        for i, p in enumerate(payloads):
            try:
                ok = isinstance(json.loads(p), dict)
                why = "not a JSON object"
            except ValueError as e:
                ok, why = False, f"not JSON: {e}"
            if ok:
                good.append(i)
            elif self.options.on_malformed == "skip":
                self.skipped += 1
            else:
                raise ToolError(f"{self.what}: message {_name(ids[i])} is {why}; fix the producer, or set "
                                "on_malformed: skip to count and skip such messages")
        return good

    # field/value maps ---------------------------------------------------------------------------

    def _fields(self, maps: Sequence[dict[bytes, bytes]], ids: Sequence[Any]) -> pa.Table:
        names: dict[bytes, None] = {}
        for m in maps:
            names.update(dict.fromkeys(m))
        columns = {}
        for key in names:
            name = key.decode()
            if self.options.other_columns == "ignore" and name not in self.pinned:
                continue
            if self.options.other_columns == "error" and name not in self.pinned:
                raise ToolError(f"{self.what}: message {_name(ids[0])}.. has field {name!r}, not in column_types; add "
                                "it, or set other_columns: ignore")
            values = pc.cast(pa.array([m.get(key) for m in maps], pa.binary()), pa.string())
            if name in self.pinned:
                try:
                    values = pc.cast(values, self.pinned[name])
                except _ERRORS as e:
                    raise ToolError(f"{self.what}: field {name!r} of messages {_name(ids[0])}..{_name(ids[-1])} is not "
                                    f"{self.pinned[name]}: {e}") from None
            columns[name] = values
        for name, type_ in self.pinned.items():
            columns.setdefault(name, pa.nulls(len(maps), type_))
        return pa.table(columns)


def _name(message_id: Any) -> str:
    return message_id.decode() if isinstance(message_id, bytes) else str(message_id)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns, in its order (missing ones null) and types."""
    cols = []
    for f in schema:
        i = table.schema.get_field_index(f.name)
        cols.append(pc.cast(table.column(i), f.type) if i >= 0 else pa.nulls(table.num_rows, f.type))
    return pa.table(cols, schema=schema)
