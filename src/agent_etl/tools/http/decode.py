"""JSON bodies to Arrow without Python objects: Arrow's JSON reader parses a whole page body in
C++ (no GIL: pages decode in worker threads while the next ones download), and the records are
the list at a dotted path of it.

Types are inferred over the first pages (``infer_pages``) and unified; from then on the schema
is pinned (pages parse faster, and alike), and a later page that brings a new field or a wider
type (an int field holding 1.5, a null field holding text) widens it: batches after that carry
the wider schema. ``schema: {field: type}`` pins fields from the start. ISO date strings stay
strings (Arrow would guess timestamps per page, and a later page with other precision would no
longer parse). ``nested: json`` keeps nested objects and lists as their JSON text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.json as pj

from agent_etl.exceptions import ToolError

WRAP = "__records"  # a body that is a list is parsed as {"__records": [...]}
_READ = pj.ReadOptions(use_threads=False, block_size=1 << 30)


class PageError(ToolError):
    """A page could not be decoded; the extractor adds which page and URL."""


def parse(body: bytes, explicit: pa.Schema | None) -> pa.Table:
    """The body as a one-row table (pure: run it in a worker thread)."""
    stripped = body.lstrip()
    if stripped[:1] == b"[":
        body = b'{"' + WRAP.encode() + b'":' + body + b"}"
    elif not stripped:
        raise PageError("the body is empty, not JSON")
    opts = pj.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer",
                           newlines_in_values=b"\n" in stripped.rstrip()) if explicit is not None else \
        pj.ParseOptions(newlines_in_values=b"\n" in stripped.rstrip())
    try:
        return pj.read_json(pa.BufferReader(body), read_options=_READ, parse_options=opts)
    except pa.ArrowInvalid as e:
        text = str(e)
        if "changed from" in text or "Failed to convert" in text or "couldn't parse" in text:
            detail = text.removeprefix("JSON parse error: ")
            raise TypeConflict(f"mixes kinds of values in one field ({detail}), and one Arrow column holds one "
                               "type; read it as JSON text with `schema: {field: json}`") from None
        raise PageError(f"is not valid JSON ({text.removeprefix('JSON parse error: ')})") from None


class TypeConflict(PageError):
    pass


def at(table: pa.Table, path: list[str]) -> tuple[pa.Array | None, list[str]]:
    """The value at ``path`` of the one-row table, and the keys where the path stopped matching."""
    if not path:
        return None, table.schema.names
    if path[0] not in table.schema.names:
        return None, table.schema.names
    arr: pa.Array = table.column(path[0]).combine_chunks()
    for key in path[1:]:
        if not pa.types.is_struct(arr.type):
            return None, []
        names = [arr.type.field(i).name for i in range(arr.type.num_fields)]
        if key not in names:
            return None, names
        arr = arr.field(key)
    return arr, []


def scalar(table: pa.Table, path: str) -> Any:
    """The Python value at dotted ``path`` of a page body (None if absent)."""
    arr, _ = at(table, path.split("."))
    return None if arr is None or len(arr) == 0 else arr[0].as_py()


def strings_for_timestamps(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(strings_for_timestamps(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(t.value_field.with_type(strings_for_timestamps(t.value_type)))
    return t


def conform(arr: pa.Array, t: pa.DataType) -> pa.Array:
    """``arr`` as type ``t``, a widening of its type: struct fields by name (missing ones null)."""
    if arr.type.equals(t):
        return arr
    if pa.types.is_struct(t) and pa.types.is_struct(arr.type):
        names = {arr.type.field(i).name for i in range(arr.type.num_fields)}
        children = [conform(arr.field(f.name), f.type) if f.name in names else pa.nulls(len(arr), f.type) for f in t]
        return pa.StructArray.from_arrays(children, fields=list(t), mask=arr.is_null() if arr.null_count else None)
    if pa.types.is_list(t) and pa.types.is_list(arr.type):
        if arr.offset:
            arr = pa.concat_arrays([arr])  # from_arrays wants offsets from zero
        values = conform(arr.values, t.value_type)
        return pa.ListArray.from_arrays(arr.offsets, values, type=t, mask=arr.is_null() if arr.null_count else None)
    return arr.cast(t)


def widen(old: pa.DataType, new: pa.DataType, field: str) -> pa.DataType:
    if old.equals(new):
        return old
    try:
        return pa.unify_schemas([pa.schema([(field, old)]), pa.schema([(field, new)])],
                                promote_options="permissive").field(0).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        raise ToolError(f"field {field!r} holds {old} on earlier pages and {new} on this one, and one Arrow column "
                        "holds one type: the API mixes kinds of values (number, text, object, list) in this field; "
                        f"read it as JSON text with `schema: {{{field}: json}}`") from None


@dataclass
class Page:
    table: pa.Table  # the whole body, one row: next tokens, totals
    records: pa.RecordBatch


class Decoder:
    """Records of page bodies, in one schema that widens as pages come."""

    def __init__(self, records: str | None, pinned: dict[str, str] | None, nested: str, unwrap: str | None = None):
        self.path = records.split(".") if records else [WRAP]
        self.unwrap = unwrap  # each list item holds its record under this key (GraphQL edges' node)
        self.nested = nested
        self.pinned: dict[str, pa.DataType] = {}
        # fields read as their JSON text whatever their values (`schema: {field: json}`): bodies
        # are rewritten first (orjson, one pass over the records), then read as any other
        self.text_fields = frozenset(n for n, t in (pinned or {}).items() if t == "json")
        for name, text in (pinned or {}).items():
            if text == "json":
                self.pinned[name] = pa.string()
                continue
            try:
                self.pinned[name] = pa.type_for_alias(text)
            except ValueError:
                raise ToolError(f"schema: {name}: {text!r} is not an Arrow type; write e.g. int64, double, string, "
                                "bool, timestamp[us], or json (the value's JSON text)") from None
        self.schema: pa.Schema | None = pa.schema(list(self.pinned.items())) if self.pinned else None
        self.pinned_all = False  # whether the inferred schema is used to parse (after infer_pages)

    def explicit(self) -> pa.Schema | None:
        """What pages are parsed with now: the records' known fields, at the records path."""
        if self.pinned_all and self.schema is not None:
            return self.body_schema(pa.struct(list(self.schema)))
        return self.body_schema(pa.struct(list(self.pinned.items()))) if self.pinned else None

    def parse(self, body: bytes, explicit: pa.Schema | None) -> pa.Table:
        """``parse`` of the body, with the ``json`` fields' values made text first (pure: run it in a thread)."""
        return parse(self._as_text(body) if self.text_fields else body, explicit)

    def _as_text(self, body: bytes) -> bytes:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise PageError(f"is not valid JSON ({e})") from None
        items = doc
        for key in self.path if not isinstance(doc, list) else []:
            items = items.get(key) if isinstance(items, dict) else None
        for item in items if isinstance(items, list) else []:
            rec = item.get(self.unwrap) if self.unwrap is not None and isinstance(item, dict) else item
            if isinstance(rec, dict):
                for f in self.text_fields:
                    if rec.get(f) is not None:
                        rec[f] = orjson.dumps(rec[f]).decode()
        return orjson.dumps(doc)

    def body_schema(self, record: pa.DataType) -> pa.Schema:
        t: pa.DataType = pa.list_(pa.struct([(self.unwrap, record)]) if self.unwrap else record)
        for key in reversed(self.path[1:]):
            t = pa.struct([(key, t)])
        return pa.schema([(self.path[0], t)])

    def pin(self) -> None:
        self.pinned_all = True

    def records(self, table: pa.Table, body: bytes) -> Page:
        arr, keys = at(table, self.path)
        if arr is None:
            shown = ", ".join(k for k in keys if k != WRAP) or "none"
            raise PageError(f"has no records at {'.'.join(self.path)!r} (keys there: {shown}); set `records` to the "
                            "dotted path of the list of records")
        if pa.types.is_null(arr.type) or (arr.null_count == len(arr)):
            return Page(table, pa.RecordBatch.from_pydict({}))
        if not pa.types.is_list(arr.type):
            raise PageError(f"holds {arr.type} at {'.'.join(self.path)!r}, not a list of records; set `records` to the "
                            "dotted path of the list")
        values = arr.flatten()
        if pa.types.is_null(values.type):
            return Page(table, pa.RecordBatch.from_pydict({}))
        if not pa.types.is_struct(values.type):
            raise PageError(f"holds a list of {values.type} at {'.'.join(self.path)!r}, not of objects")
        if self.unwrap is not None:
            if values.type.get_field_index(self.unwrap) < 0:
                raise PageError(f"has items without {self.unwrap!r} at {'.'.join(self.path)!r}")
            values = values.field(self.unwrap)
        plain = strings_for_timestamps(values.type)
        if not plain.equals(values.type):  # Arrow guessed timestamps: read the page again, keeping the text
            table = self.parse(body, self.body_schema(plain))
            values = at(table, self.path)[0].flatten()
            if self.unwrap is not None:
                values = values.field(self.unwrap)
        batch = pa.RecordBatch.from_struct_array(values)
        return Page(table, self._widen(batch))

    def _widen(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.schema is None:
            self.schema = batch.schema
        elif not batch.schema.equals(self.schema):
            fields = {f.name: f.type for f in self.schema}
            for f in batch.schema:
                fields[f.name] = widen(fields[f.name], f.type, f.name) if f.name in fields else f.type
            for name, t in self.pinned.items():
                fields[name] = t
            self.schema = pa.schema(list(fields.items()))
        return self.fit(batch)

    def fit(self, batch: pa.RecordBatch, schema: pa.Schema | None = None) -> pa.RecordBatch:
        """``batch`` in ``schema`` (default: the current one), a page decoded before it widened."""
        schema = schema if schema is not None else self.schema
        assert schema is not None
        if batch.schema.equals(schema):
            return batch
        n = batch.num_rows
        cols = [conform(batch.column(f.name), f.type) if f.name in batch.schema.names else pa.nulls(n, f.type)
                for f in schema]
        return pa.RecordBatch.from_arrays(cols, schema=schema)
