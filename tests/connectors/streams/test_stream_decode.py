"""Payloads to Arrow (streams.decode): one schema per read, widened or pinned, and a clear error for a
malformed message (no server needed)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from agent_etl.exceptions import ToolError
from agent_etl.tools.streams.decode import NDJSON, Decoder
from agent_etl.tools.streams.options import SourceOptions


def decoder(**options) -> Decoder:
    return Decoder(SourceOptions(url="redis://x", stream="s", **options), "stream 's'")


def payloads(*records) -> list[bytes]:
    return [json.dumps(r).encode() for r in records]


def test_schema_is_kept_added_to_and_widened():
    d = decoder()
    first = d.decode(payloads({"a": 1, "b": "x"}, {"a": 2, "b": None}), [1, 2])
    assert first.schema == pa.schema([("a", pa.int64()), ("b", pa.string())])
    later = d.decode(payloads({"a": 1.5, "c": True}), [3])
    assert later.schema.field("a").type == pa.float64() and later.column("c").to_pylist() == [True]
    assert later.column("b").to_pylist() == [None]
    with pytest.raises(ToolError, match="changed type.*column_types"):
        d.decode(payloads({"a": "text"}), [4])


def test_pinned_types_and_other_columns():
    d = decoder(column_types={"id": "int32", "at": "timestamp[ms, tz=UTC]"}, other_columns="ignore")
    b = d.decode(payloads({"id": 1, "at": "2024-05-01T10:00:00Z", "extra": 1}), [1])
    assert b.schema == pa.schema([("id", pa.int32()), ("at", pa.timestamp("ms", tz="UTC"))])
    strict = decoder(column_types={"id": "int64"}, other_columns="error")
    with pytest.raises(ToolError, match="not in column_types"):
        strict.decode(payloads({"id": 1, "extra": 2}), [1])


def test_malformed_message_named_or_skipped_and_pretty_printed_json():
    with pytest.raises(ToolError, match="message 7 is not a JSON object"):
        decoder().decode([b'{"a": 1}', b"[1]"], [6, 7])
    d = decoder(on_malformed="skip", id_column="_id")
    b = d.decode([b'{"a": 1}', b"nope", b'{\n  "a": 3\n}'], [1, 2, 3])
    assert b.column("a").to_pylist() == [1, 3] and b.column("_id").to_pylist() == [1, 3] and d.skipped == 1


def test_joined_block_finds_the_bad_message_through_the_source():
    d = decoder()
    d.split = lambda ids: [b'{"a": 1}', b"{oops"]
    with pytest.raises(ToolError, match="message b? ?2|message 2"):
        d.decode([NDJSON(b'{"a": 1}\n{oops')], [1, 2])
    assert decoder().decode([NDJSON(b'{"a": 1}\n{"a": 2}')], [1, 2]).num_rows == 2


def test_field_maps():
    d = decoder(format="fields", column_types={"n": "int64"})
    b = d.decode([{b"n": b"1", b"s": b"x"}, {b"n": b"2"}], [b"1-0", b"1-1"])
    assert b.column("n").to_pylist() == [1, 2] and b.column("s").to_pylist() == ["x", None]
