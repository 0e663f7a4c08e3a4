"""The s3 extractor against a real S3 server: every format, compression, many objects, large
objects read without holding them whole, the same results as the local file tools, and resume."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from agent_etl.testing import build, collect, run_extractor, tool_context
from agent_etl.tools.s3.url import glob_regex, parse_url


def table(n: int, start: int = 0) -> pa.Table:
    ids = pa.array(range(start, start + n), pa.int64())
    return pa.table({"id": ids, "name": pa.array([f"n{i}" for i in range(start, start + n)]),
                     "amount": pa.array([i * 0.5 for i in range(start, start + n)]),
                     "day": pa.array([f"2024-01-{1 + i % 28:02d}" for i in range(start, start + n)])})


def csv_bytes(t: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(t, sink)
    return sink.getvalue().to_pybytes()


def compress(data: bytes, codec: str) -> bytes:
    if codec == "gzip":
        return gzip.compress(data)
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as f:
        f.write(data)
    return sink.getvalue().to_pybytes()


async def read(url: str, endpoint: str, tmp_path, **options) -> pa.Table:
    batch_size = options.pop("batch_size", 100_000)
    return await run_extractor("s3", {"url": url, "endpoint_url": endpoint, **options}, base_dir=tmp_path,
                               batch_size=batch_size)


@pytest.mark.parametrize("codec, suffix", [(None, ""), ("gzip", ".gz"), ("zstd", ".zst")])
@pytest.mark.parametrize("whole", [64 << 20, 0], ids=["fetched-whole", "streamed"])
async def test_csv_reads_like_the_local_csv_tool(s3_endpoint, put, bucket, tmp_path, codec, suffix, whole):
    data = csv_bytes(table(5000))
    body = compress(data, codec) if codec else data
    local = tmp_path / f"local.csv{suffix}"
    local.write_bytes(body)
    put(f"in/a.csv{suffix}", body)
    options = {"column_types": {"day": "date32"}, "block_size": 1 << 16}
    got = await read(f"s3://{bucket}/in/a.csv{suffix}", s3_endpoint, tmp_path, whole_object_max=whole,
                     batch_size=700, **options)
    want = await run_extractor("csv", {"path": str(local), **options}, base_dir=tmp_path, batch_size=700)
    assert got.equals(want) and got.num_rows == 5000
    assert got.schema.field("day").type == pa.date32()


@pytest.mark.parametrize("whole", [64 << 20, 0], ids=["fetched-whole", "streamed"])
async def test_jsonl_json_and_parquet(s3_endpoint, put, bucket, tmp_path, whole):
    t = table(3000)
    put("j/a.jsonl.gz", gzip.compress("\n".join(json.dumps(r) for r in t.to_pylist()).encode()))
    put("d/a.json", json.dumps({"data": {"items": t.slice(0, 10).to_pylist()}}).encode())
    sink = pa.BufferOutputStream()
    pq.write_table(t, sink, row_group_size=1000)
    put("p/a.parquet", sink.getvalue().to_pybytes())
    jsonl = await read(f"s3://{bucket}/j/*.jsonl.gz", s3_endpoint, tmp_path, whole_object_max=whole)
    assert jsonl.column("id").to_pylist() == list(range(3000))
    js = await read(f"s3://{bucket}/d/a.json", s3_endpoint, tmp_path, records="data.items", whole_object_max=whole)
    assert js.column("name").to_pylist() == [f"n{i}" for i in range(10)]
    pqt = await read(f"s3://{bucket}/p/", s3_endpoint, tmp_path, format="parquet", columns=["id", "amount"],
                     whole_object_max=whole,
                     batch_size=400)
    assert pqt.equals(t.select(["id", "amount"]))


async def test_many_objects_in_key_order(s3_endpoint, put, bucket, tmp_path):
    # names whose key order differs from their upload order and from a numeric sort
    for i in reversed(range(40)):
        put(f"many/part-{i:03d}.csv", csv_bytes(table(50, start=i * 50)))
    put("many/.hidden.csv", b"id\n-1\n")  # hidden, as a file starting with a dot is to glob
    put("many/sub/deeper.csv", csv_bytes(table(1, start=9999)))  # * does not cross /
    got = await read(f"s3://{bucket}/many/*.csv", s3_endpoint, tmp_path, concurrency=4)
    assert got.column("id").to_pylist() == list(range(2000))
    deep = await read(f"s3://{bucket}/many/**/*.csv", s3_endpoint, tmp_path, concurrency=4)
    assert deep.num_rows == 2001


def test_glob_rules():
    assert glob_regex("a/*.csv").match("a/x.csv") and not glob_regex("a/*.csv").match("a/b/x.csv")
    assert glob_regex("a/**/*.csv").match("a/x.csv") and glob_regex("a/**/*.csv").match("a/b/c/x.csv")
    assert glob_regex("a/part-[0-1]?.csv").match("a/part-07.csv") and not glob_regex("a/part-[!0]?.csv").match(
        "a/part-07.csv")
    assert parse_url("s3://bkt/a/b*/x.csv").prefix == "a/"
    with pytest.raises(ValueError, match="not an s3:// URL"):
        parse_url("/tmp/x.csv")


@pytest.mark.parametrize("name, whole", [("plain.csv", 0), ("plain.csv", 64 << 20), ("zipped.csv.gz", 0),
                                         ("rows.parquet", 0), ("rows.jsonl", 64 << 20)])
async def test_resume_from_a_position_yields_exactly_the_rest(s3_endpoint, put, bucket, tmp_path, name, whole):
    first, second = table(4000), table(3000, start=4000)
    for i, part in enumerate((first, second)):
        if name.endswith(".parquet"):
            sink = pa.BufferOutputStream()
            pq.write_table(part, sink, row_group_size=512)
            body = sink.getvalue().to_pybytes()
        elif name.endswith(".jsonl"):
            body = "\n".join(json.dumps(r) for r in part.to_pylist()).encode()
        else:
            body = csv_bytes(part)
            body = gzip.compress(body) if name.endswith(".gz") else body
        put(f"r/{i}-{name}", body)
    options = {"url": f"s3://{bucket}/r/*-{name}", "endpoint_url": s3_endpoint, "whole_object_max": whole}
    if name.endswith(("csv", ".gz", ".jsonl")):
        options["block_size"] = 1 << 16
    ctx = tool_context(tmp_path, batch_size=300)
    reader = build("extractor", "s3", options, ctx)
    seen, positions = [], []
    async for batch in reader.batches():
        seen.append(batch)
        positions.append(reader.position())
    whole_read = pa.Table.from_batches(seen)
    assert whole_read.column("id").to_pylist() == list(range(7000))
    for cut in (3, len(seen) // 2 + 1, len(seen) - 2):  # in the first object, in the second, near the end
        position = json.loads(json.dumps(positions[cut - 1]))  # as stored
        assert position["file"].startswith(f"s3://{bucket}/r/")
        again = build("extractor", "s3", options, tool_context(tmp_path, batch_size=300))
        again.resume_from(position)
        rest = await collect(again.batches())
        done = sum(b.num_rows for b in seen[:cut])
        assert rest.column("id").to_pylist() == list(range(done, 7000)), (cut, position)
    await ctx.resources.aclose()


async def test_read_ahead_stays_within_its_bounds(s3_endpoint, put, bucket, tmp_path):
    """Objects fetched ahead of the reader: at most ``concurrency`` of them and twice ``whole_object_max``
    bytes; empty objects are not fetched, and a reader that skips one does not leave it counted."""
    for i in range(12):
        put(f"w/{i:02d}.jsonl", b"" if i % 4 == 1 else b'{"id": %d}\n' % i + b" " * 40_000)
    options = {"url": f"s3://{bucket}/w/*.jsonl", "endpoint_url": s3_endpoint, "concurrency": 3,
               "whole_object_max": 50_000}
    ctx = tool_context(tmp_path)
    reader = build("extractor", "s3", options, ctx)
    seen = []
    async for batch in reader.batches():
        objects, held = reader.reader._prefetch.in_flight()
        assert objects <= 3 and held <= 100_000
        seen.extend(batch.column("id").to_pylist())
    assert seen == [i for i in range(12) if i % 4 != 1]
    await ctx.resources.aclose()
