"""The s3 extractor's split for a run spread over workers (agents.partition_plan) against a real S3
server: the URL's objects, listed once, in ``partitions`` groups of about equal bytes, every object
in exactly one group; a copy given its group reads those objects alone, even when the bucket has
changed since."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent_etl.exceptions import ToolError
from agent_etl.testing import build, collect, tool_context


def parquet(n: int, start: int) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": pa.array(range(start, start + n), pa.int64())}), sink, compression="none")
    return sink.getvalue().to_pybytes()


async def split(url: str, endpoint: str, tmp_path, partitions: int, **options) -> list[dict]:
    options = {"url": url, "endpoint_url": endpoint, "partitions": partitions, **options}
    return await build("extractor", "s3", options, tool_context(tmp_path)).split()


async def test_objects_are_split_in_groups_of_about_equal_bytes_each_object_once(s3_endpoint, put, bucket, tmp_path):
    # CSV objects of 2, 3, 4, 5, 6, 7, 8 and 9 KiB: 44 KiB in 3 groups, none a whole object off another
    sizes = {f"in/part-{i}.csv": (2 + i) * 1024 for i in range(8)}
    for key, size in sizes.items():
        put(key, b"id\n" + b"1\n" * ((size - 3) // 2) + b"\n" * ((size - 3) % 2))
    put("in/.hidden/skip.csv", b"id\n1\n")  # not of the read: never in a group
    parts = await split(f"s3://{bucket}/in/", s3_endpoint, tmp_path, 3, format="csv")
    assert len(parts) == 3
    groups = [[key for key, _ in p["objects"]] for p in parts]
    assert sorted(k for g in groups for k in g) == sorted(sizes)  # every object, exactly once
    assert all(g == sorted(g) for g in groups)  # each group in key order: the order a resume takes
    assert all(size == sizes[key] for p in parts for key, size in p["objects"])  # sizes as listed
    totals = sorted(sum(size for _, size in p["objects"]) for p in parts)
    assert totals[-1] - totals[0] <= max(sizes.values()), totals  # about equal: 13, 15 and 16 KiB
    assert sum(totals) == sum(sizes.values())


async def test_fewer_objects_than_partitions_give_one_group_per_object_even_empty_ones(s3_endpoint, put, bucket,
                                                                                    tmp_path):
    put("d/a.parquet", parquet(10, 0))
    put("d/b.parquet", parquet(0, 0))  # a Parquet file without rows
    parts = await split(f"s3://{bucket}/d/*.parquet", s3_endpoint, tmp_path, 5)
    assert sorted(key for p in parts for key, _ in p["objects"]) == ["d/a.parquet", "d/b.parquet"]
    assert [len(p["objects"]) for p in parts] == [1, 1]
    # three objects of 0 bytes in two groups: no group is left empty
    for name in ("x", "y", "z"):
        put(f"e/{name}.csv", b"")
    parts = await split(f"s3://{bucket}/e/", s3_endpoint, tmp_path, 2, format="csv")
    assert sorted(len(p["objects"]) for p in parts) == [1, 2]


async def test_a_copy_reads_its_group_of_objects_alone(s3_endpoint, put, bucket, s3, tmp_path):
    for i, n in enumerate([300, 100, 250, 50, 200]):
        put(f"d/p{i}.parquet", parquet(n, i * 1000))
    url = f"s3://{bucket}/d/*.parquet"
    parts = await split(url, s3_endpoint, tmp_path, 2)
    put("d/p9.parquet", parquet(5, 9000))  # after the split: no copy reads it
    s3.delete_object(Bucket=bucket, Key="d/p1.parquet")  # gone since: the copy that has it says so
    read: list[int] = []
    for i, part in enumerate(parts):
        ctx = dataclasses.replace(tool_context(tmp_path, task=f"d#{i}"), partition={"copy": i, "of": 2, **part})
        extractor = build("extractor", "s3", {"url": url, "endpoint_url": s3_endpoint, "partitions": 2}, ctx)
        keys = [key for key, _ in part["objects"]]
        if "d/p1.parquet" in keys:
            with pytest.raises(ToolError, match=r"p1\.parquet: no such object .* deleted since it was listed"):
                await collect(extractor.batches())
            continue
        got = await collect(extractor.batches())
        want = sorted(r for key in keys for r in range(int(key[3]) * 1000, int(key[3]) * 1000
                                                       + [300, 100, 250, 50, 200][int(key[3])]))
        assert sorted(got.column("id").to_pylist()) == want
        read += got.column("id").to_pylist()
    assert read and 9000 not in read
