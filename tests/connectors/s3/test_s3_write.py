"""The s3 loader against a real S3 server: formats, partitions, multipart output, the manifest that
``committed()`` reads back, and a failed load that leaves nothing visible."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from agent_etl.exceptions import SiblingFailed, ToolError
from agent_etl.testing import build, run_extractor, stream, tool_context


def table(n: int, start: int = 0) -> pa.Table:
    ids = pa.array(range(start, start + n), pa.int64())
    return pa.table({"id": ids, "kind": pa.array([("a", "b", None)[i % 3] for i in range(start, start + n)]),
                     "amount": pa.array([i * 0.25 for i in range(start, start + n)])})


def loader(tmp_path, endpoint, url, position=None, prepare=None, **options):
    ctx = tool_context(tmp_path, task="out", run_id="run-1", position=position or {"src": {"rows": 1}},
                       prepare=prepare)
    return build("loader", "s3", {"url": url, "endpoint_url": endpoint, **options}, ctx), ctx


@pytest.mark.parametrize("name", ["o.parquet", "o.csv", "o.jsonl"])
async def test_one_object_round_trip_and_checkpoint(s3_endpoint, s3, bucket, keys, uploads, tmp_path, name):
    t = table(2500)
    tool, ctx = loader(tmp_path, s3_endpoint, f"s3://{bucket}/out/{name}", position={"src": {"rows": 2500}})
    assert await tool.load(stream(t, batch_size=1000)) == 2500
    assert ctx.commits == [2500]
    assert keys() == [f"out/.{name}.checkpoint.json", f"out/{name}"] and uploads() == []
    back = await run_extractor("s3", {"url": f"s3://{bucket}/out/{name}", "endpoint_url": s3_endpoint},
                               base_dir=tmp_path)
    assert back.column("id").to_pylist() == list(range(2500))
    assert back.column("kind").to_pylist() == t.column("kind").to_pylist()
    assert await tool.committed() == {"rows": 2500, "commits": 1, "position": {"src": {"rows": 2500}}}
    other = build("loader", "s3", {"url": f"s3://{bucket}/out/{name}", "endpoint_url": s3_endpoint},
                  tool_context(tmp_path, task="out", run_id="run-2"))
    assert await other.committed() is None  # another run's manifest


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
async def test_partitioned_dataset_replaces_the_previous_one(s3_endpoint, bucket, keys, tmp_path, fmt):
    url = f"s3://{bucket}/ds/"
    first, _ = loader(tmp_path, s3_endpoint, url, format=fmt, partition_by=["kind"])
    await first.load(stream(table(300), batch_size=100))
    suffix = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}[fmt]
    assert keys("ds/") == ["ds/.checkpoint.json", f"ds/kind=__HIVE_DEFAULT_PARTITION__/part-0{suffix}",
                           f"ds/kind=a/part-0{suffix}", f"ds/kind=b/part-0{suffix}"]
    only_a = table(300).filter(pa.compute.equal(table(300).column("kind"), "a"))
    second, _ = loader(tmp_path, s3_endpoint, url, format=fmt, partition_by=["kind"])
    await second.load(stream(only_a))
    assert keys("ds/") == ["ds/.checkpoint.json", f"ds/kind=a/part-0{suffix}"]  # the old partitions are gone
    back = await run_extractor("s3", {"url": f"{url}**/*{suffix}", "endpoint_url": s3_endpoint}, base_dir=tmp_path)
    assert sorted(back.column("id").to_pylist()) == only_a.column("id").to_pylist()


async def test_large_output_goes_up_in_parts(s3_endpoint, s3, bucket, tmp_path):
    n = 600_000  # about 14 MB of CSV: three parts of 5 MiB
    tool, _ = loader(tmp_path, s3_endpoint, f"s3://{bucket}/big.csv", part_size=5 << 20)
    await tool.load(stream(table(n), batch_size=100_000))
    head = s3.head_object(Bucket=bucket, Key="big.csv")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object's ETag counts its parts
    body = s3.get_object(Bucket=bucket, Key="big.csv")["Body"].read()
    assert pacsv.read_csv(io.BytesIO(body)).num_rows == n


async def broken(t: pa.Table, after: int):
    for i, batch in enumerate(t.to_batches(max_chunksize=100)):
        if i == after:
            raise ToolError("upstream broke")
        yield batch


@pytest.mark.parametrize("options", [{"url": "o.parquet"}, {"url": "ds/", "partition_by": ["kind"]}],
                         ids=["object", "dataset"])
async def test_failed_load_leaves_the_previous_output_and_nothing_else(s3_endpoint, s3, bucket, keys, uploads,
                                                                       tmp_path, options):
    url = f"s3://{bucket}/{options['url']}"
    good, _ = loader(tmp_path, s3_endpoint, url, **{k: v for k, v in options.items() if k != "url"}, part_size=5 << 20)
    await good.load(stream(table(100)))
    before = {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys()}
    failing, ctx = loader(tmp_path, s3_endpoint, url, **{k: v for k, v in options.items() if k != "url"},
                          part_size=5 << 20)
    with pytest.raises(ToolError, match="upstream broke"):
        await failing.load(broken(table(400_000), after=3000))
    assert ctx.commits == []
    assert {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys()} == before
    assert uploads() == []  # no parts left behind

    async def sibling_failed(final: bool) -> None:
        raise SiblingFailed("the other load failed")

    vetoed, ctx = loader(tmp_path, s3_endpoint, url, prepare=sibling_failed,
                         **{k: v for k, v in options.items() if k != "url"})
    with pytest.raises(SiblingFailed):
        await vetoed.load(stream(table(50, start=1000)))
    assert {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys()} == before and uploads() == []


async def test_empty_stream_writes_an_empty_object(s3_endpoint, s3, bucket, tmp_path):
    tool, ctx = loader(tmp_path, s3_endpoint, f"s3://{bucket}/e.parquet")
    assert await tool.load(stream([])) == 0
    body = s3.get_object(Bucket=bucket, Key="e.parquet")["Body"].read()
    assert pq.read_table(io.BytesIO(body)).num_rows == 0


async def test_mark_is_read_back_from_the_manifest(s3_endpoint, s3, bucket, tmp_path):
    tool, _ = loader(tmp_path, s3_endpoint, f"s3://{bucket}/m.jsonl",
                     position={"src": {"rows": 3, "mark": {"cursor": "2024-05-01"}}})
    await tool.load(stream(table(3)))
    assert await tool.mark("src") == {"cursor": "2024-05-01"}
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=".m.jsonl.checkpoint.json")["Body"].read())
    assert manifest["keys"] == ["m.jsonl"] and manifest["run_id"] == "run-1"


@pytest.mark.parametrize("options, key", [
    ({"url": "out/o.csv.gz"}, "out/o.csv.gz"),
    ({"url": "out/o.jsonl", "compression": "zstd"}, "out/o.jsonl"),
    ({"url": "ds/", "format": "csv", "compression": "gzip", "partition_by": ["kind"]}, "ds/kind=a/part-0.csv.gz"),
])
async def test_compressed_csv_and_jsonl(s3_endpoint, s3, bucket, keys, tmp_path, options, key):
    t = table(1000)
    tool, _ = loader(tmp_path, s3_endpoint, f"s3://{bucket}/{options.pop('url')}", **options)
    await tool.load(stream(t, batch_size=300))
    assert key in keys()
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body[:2] == b"\x1f\x8b" or body[:4] == b"\x28\xb5\x2f\xfd"  # gzip or zstd magic
    url = f"s3://{bucket}/{key}" if not key.startswith("ds/") else f"s3://{bucket}/ds/**/*.csv.gz"
    fmt = {"format": "jsonl", "compression": "zstd"} if ".jsonl" in key else {}
    back = await run_extractor("s3", {"url": url, "endpoint_url": s3_endpoint, **fmt}, base_dir=tmp_path)
    assert sorted(back.column("id").to_pylist()) == t.column("id").to_pylist()  # every partition


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
async def test_partitioned_dataset_reads_back_with_its_partition_columns(s3_endpoint, bucket, tmp_path, fmt):
    t = table(3000)
    tool, _ = loader(tmp_path, s3_endpoint, f"s3://{bucket}/ds/", format=fmt, partition_by=["kind"])
    await tool.load(stream(t, batch_size=500))
    options = {"url": f"s3://{bucket}/ds/", "format": fmt, "endpoint_url": s3_endpoint, "hive_partitioning": True}
    ctx = tool_context(tmp_path, batch_size=250)
    reader = build("extractor", "s3", options, ctx)
    batches, positions = [], []
    async for batch in reader.batches():
        batches.append(batch)
        positions.append(reader.position())
    back = pa.Table.from_batches(batches)
    assert back.schema.names == ["id", "amount", "kind"]
    assert sorted(zip(back.column("id").to_pylist(), back.column("kind").to_pylist())) == \
        list(zip(t.column("id").to_pylist(), t.column("kind").to_pylist()))
    cut = len(batches) // 2 + 1  # in the second partition's object
    again = build("extractor", "s3", options, tool_context(tmp_path, batch_size=250))
    again.resume_from(json.loads(json.dumps(positions[cut - 1])))
    rest = pa.Table.from_batches([b async for b in again.batches()])
    assert rest.equals(back.slice(sum(b.num_rows for b in batches[:cut])))
    await ctx.resources.aclose()
