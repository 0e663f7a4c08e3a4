"""The extractor contract (``tools.base.Extractor``), once per source of ``backends.EXTRACTORS``.

Every source is given the same table (``backends.ExtractorBackend.write``): it must give every row
back with the types the backend declares, resume after any ``position()`` it reported exactly where
the full read went on, read an empty source as no rows, and name a missing location in one error.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pytest
from backends import ExtractorBackend, Place

from agent_etl.exceptions import AgentETLError
from agent_etl.testing import build, read_positions, tool_context

N = 3000  # rows: enough for several batches (or CSV blocks) at the batch size below
BATCH = 400


def source(n: int = N) -> pa.Table:
    """Rows in shuffled id order (stored order is not key order), with nulls in every column but id."""
    ids = [(i * 7919) % n for i in range(n)]  # a permutation of 0..n-1 (7919 is prime)
    day0, at0 = dt.date(2024, 1, 1), dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "name": pa.array([None if i % 11 == 0 else f"n{i}-{'ä' if i % 3 else 'b'}" for i in ids], pa.string()),
        "amount": pa.array([None if i % 13 == 0 else i / 4 for i in ids], pa.float64()),
        "flag": pa.array([None if i % 17 == 0 else i % 2 == 0 for i in ids], pa.bool_()),
        "day": pa.array([None if i % 19 == 0 else day0 + dt.timedelta(days=i % 400) for i in ids], pa.date32()),
        "at": pa.array([None if i % 10 == 0 else at0 + dt.timedelta(minutes=i * 37, milliseconds=i % 1000)
                        for i in ids], pa.timestamp("us", "UTC")),
    })


def expected_schema(backend: ExtractorBackend, table: pa.Table) -> pa.Schema:
    return pa.schema([pa.field(f.name, backend.types.get(f.name, f.type)) for f in table.schema])


async def read(backend: ExtractorBackend, place: Place, options: dict[str, Any], position: dict | None = None,
               may_resume: bool = True) -> tuple[pa.Table | None, list[dict], Any]:
    """Every batch, the position after each, and the tool."""
    ctx = tool_context(place.dir, task="extract", batch_size=BATCH, connections=place.connections)
    ctx.may_resume = may_resume
    tool = build("extractor", backend.tool, options, ctx)
    if position is not None:
        tool.resume_from(json.loads(json.dumps(position)))  # as a checkpoint stores it
    batches, positions = await read_positions(tool)
    return (pa.Table.from_batches(batches) if batches else None), positions, tool


async def test_reads_every_row_with_its_types(extractor_backend):
    backend, place = extractor_backend
    table = source()
    got, _, _ = await read(backend, place, backend.write(place, table), may_resume=False)
    want = expected_schema(backend, table)
    assert got.column_names == table.column_names
    assert {f.name: f.type for f in got.schema} == {f.name: f.type for f in want}
    assert got.cast(table.schema).sort_by("id").equals(table.sort_by("id"))


async def test_resume_from_a_position_reads_the_rest(extractor_backend):
    backend, place = extractor_backend
    options = backend.write(place, source())
    full, positions, tool = await read(backend, place, options)
    if not tool.resumable():
        pytest.skip(f"{backend.tool} is not resumable")
    assert len(positions) >= 3, "the source gave too few batches to cut between them"
    counts = [p["rows"] for p in positions]
    assert counts == sorted(counts) and counts[-1] == full.num_rows == N
    for k in sorted({0, 1, len(positions) // 2, len(positions) - 2}):
        rest, after, _ = await read(backend, place, options, positions[k])
        at = positions[k]["rows"]
        if rest is None:
            assert at == N
            continue
        assert rest.equals(full.slice(at)), (backend.id, k)
        assert after[-1]["rows"] == N
    rest, _, _ = await read(backend, place, options, positions[-1])  # after the last row: nothing more
    assert rest is None or rest.num_rows == 0


async def test_an_empty_source_gives_no_rows(extractor_backend):
    backend, place = extractor_backend
    table = source(0)
    got, positions, _ = await read(backend, place, backend.write(place, table))
    assert got is None or got.num_rows == 0
    if got is not None and got.num_columns:  # where the source keeps its columns, they are there
        assert got.column_names == table.column_names
    assert all(p is None or p.get("rows", 0) == 0 for p in positions)


async def test_a_missing_location_is_one_clear_error(extractor_backend):
    backend, place = extractor_backend
    options = backend.missing(place)
    with pytest.raises(AgentETLError) as info:
        await read(backend, place, options)
    message = str(info.value)
    where = options.get("path") or options.get("url")  # a file, or an object's URL
    shown = where.rsplit("/", 1)[-1] if where else options["table"].rsplit(".", 1)[-1]
    assert shown in message, message
    assert "Traceback" not in message
