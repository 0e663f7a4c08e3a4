"""Page decoding: types inferred over the first pages, pinned, then widened by later pages."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pytest

from agent_etl.exceptions import ToolError
from agent_etl.tools.http.decode import Decoder, PageError, TypeConflict, parse


def page(decoder: Decoder, rows) -> pa.RecordBatch:
    body = orjson.dumps({"data": rows})
    try:
        table = decoder.parse(body, decoder.explicit())
    except TypeConflict:
        table = decoder.parse(body, None)
    return decoder.records(table, body).records


def test_schema_widens_on_later_pages():
    d = Decoder("data", None, "struct")
    first = page(d, [{"id": 1, "v": None, "o": {"a": 1}}])
    assert first.schema.field("v").type == pa.null()
    d.pin()
    second = page(d, [{"id": 2, "v": "x", "o": {"a": 2.5, "b": "new"}, "extra": True}])
    assert d.schema.field("v").type == pa.string()
    assert d.schema.field("o").type == pa.struct([("a", pa.float64()), ("b", pa.string())])
    assert second.schema == d.schema and d.fit(first).schema == d.schema
    assert pa.Table.from_batches([d.fit(first), second]).column("o").to_pylist() == [
        {"a": 1.0, "b": None}, {"a": 2.5, "b": "new"}]


def test_iso_timestamps_stay_text_and_pins_hold():
    d = Decoder("data", {"id": "string"}, "struct")
    batch = page(d, [{"id": "7", "at": "2024-01-01T00:00:00Z"}])
    assert batch.column("at").to_pylist() == ["2024-01-01T00:00:00Z"] and batch.schema.field("id").type == pa.string()


def test_conflicting_types_name_the_field():
    d = Decoder("data", None, "struct")
    page(d, [{"x": 1}])
    d.pin()
    with pytest.raises(ToolError, match=r"field 'x' holds int64 on earlier pages and struct"):
        page(d, [{"x": {"a": 1}}])
    with pytest.raises(TypeConflict, match=r"mixes kinds of values in one field \(Column\(/data/\[\]/y\) changed"):
        parse(orjson.dumps({"data": [{"y": 1}, {"y": "one"}]}), None)


def test_top_level_list_bodies_and_bad_json():
    d = Decoder(None, None, "struct")
    table = parse(b'[{"a": 1}, {"a": 2}]', None)
    assert d.records(table, b"").records.column("a").to_pylist() == [1, 2]
    with pytest.raises(PageError, match="is not valid JSON"):
        parse(b'{"data": [1,', None)


def test_a_field_of_mixed_kinds_reads_as_json_text_when_asked():
    d = Decoder("data", {"y": "json"}, "struct")
    body = orjson.dumps({"data": [{"id": 1, "y": 1}, {"id": 2, "y": "one"}, {"id": 3, "y": {"a": [1]}}, {"id": 4}]})
    batch = d.records(d.parse(body, d.explicit()), body).records
    assert batch.column("y").to_pylist() == ["1", '"one"', '{"a":[1]}', None]
    assert batch.column("id").to_pylist() == [1, 2, 3, 4]
