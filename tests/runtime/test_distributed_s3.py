"""An S3 source with ``partitions:`` in a run spread over worker processes (NATS JetStream): its
objects, listed once by the coordinator, in groups of about equal bytes, one group per copy of its
branch; every row lands once, in a Parquet dataset and in a PostgreSQL table."""

from __future__ import annotations

import asyncio
import gzip
import json
import re

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.connectors.s3 import conftest as s3_server  # moto's S3 server (the test extra), as the s3 tests have it
from tests.runtime import test_distributed as distributed

# the fixtures of the s3 tests (a server, a client, a bucket of the test's own) and of the distributed
# ones (PostgreSQL schemas of the test's own, workers on a NATS namespace of its own)
s3_endpoint, s3, bucket = s3_server.s3_endpoint, s3_server.s3, s3_server.bucket
schemas, cluster = distributed.schemas, distributed.cluster

pytestmark = pytest.mark.services("postgres", "nats")

PIPE = """
version: 1
name: s3_copies
connections:
  dst: {url: "${DST_URL}"}
defaults: {batch_size: 200, commit_every: {rows: 1000}}
extract:
  events: {tool: s3, url: "s3://BUCKET/events/*.parquet", endpoint_url: "ENDPOINT", partitions: 3}
  orders: {tool: s3, url: "s3://BUCKET/orders/", format: csv, endpoint_url: "ENDPOINT", partitions: 3}
load:
  lake: {input: events, tool: parquet, path: out/events/}
  book: {input: orders, tool: postgres, connection: dst, table: orders, mode: append}
"""
EVENTS = [900, 150, 600, 300, 1200, 450, 400]  # rows per Parquet object: 4,000 in all
ORDERS = [1000, 200, 700, 300, 800]  # rows per gzip CSV object: 3,000 in all


def parquet(ids: range) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "v": [f"e{i}" for i in ids]}), sink,
                   compression="none")
    return sink.getvalue().to_pybytes()


def csv_gz(ids: range) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.table({"id": pa.array(ids, pa.int64()), "v": [f"o{i}" for i in ids]}), sink)
    return gzip.compress(sink.getvalue().to_pybytes())


def upload(s3, bucket, name: str, counts: list[int], body) -> dict[str, range]:
    """Objects ``name/part-<i>`` of ``counts[i]`` rows each; their keys and the ids each holds."""
    out, start = {}, 0
    for i, n in enumerate(counts):
        key = f"{name}/part-{i}.{'parquet' if body is parquet else 'csv.gz'}"
        s3.put_object(Bucket=bucket, Key=key, Body=body(range(start, start + n)))
        out[key], start = range(start, start + n), start + n
    return out


def shown_copies(shown: dict, source: str) -> list[list[str]]:
    """The object keys of each copy of ``source``, as the run's stored description keeps them."""
    return [[key for key, _ in part["objects"]] for part in shown["run"]["description"]["copies"][source]["parts"]]


async def test_s3_objects_are_read_by_copies_over_the_workers_each_row_once(cluster, s3, bucket, s3_endpoint):
    c = cluster
    events = upload(s3, bucket, "events", EVENTS, parquet)
    orders = upload(s3, bucket, "orders", ORDERS, csv_gz)
    pipeline = PIPE.replace("BUCKET", bucket).replace("ENDPOINT", s3_endpoint)
    (c.folder / "p.yaml").write_text(pipeline)
    planned = json.loads((await c.finished(await c.cli("plan", "p.yaml", "--json", "--bus", c.url)))[0])
    said = {t["task"]: t["distributed"] for t in planned["tasks"] if "distributed" in t}
    assert said == {s: {"partitions": 3, "copies": True, "reason": "up to 3 copies of its branch, one per group of "
                        "objects of about equal size, spread over the workers"} for s in ("events", "orders")}
    await c.start_workers(3)
    run = await c.run(pipeline, "--json")
    out, err = await asyncio.wait_for(run.communicate(), 180)
    assert run.returncode == 0, (out + err).decode()
    result = json.loads(out)
    # every branch is a copy, each taken once by a worker
    copies = [f"{s}#{i}" for s in ("events", "orders") for i in range(3)]
    assert sorted(c.taken) == copies and all(len(c.taken[b]) == 1 and c.taken[b][0] in c.workers for b in copies)
    tasks = {t["name"]: t for t in result["tasks"]}
    assert set(tasks) == {f"{s}#{i}" for s in ("events", "orders", "lake", "book") for i in range(3)}
    shown = json.loads((await c.finished(await c.cli("runs", "show", result["run_id"], "--json")))[0])
    for source, objects in (("events", events), ("orders", orders)):
        groups = shown_copies(shown, source)
        assert sorted(k for g in groups for k in g) == sorted(objects)  # every object in exactly one copy
        sizes = [sum(s3.head_object(Bucket=bucket, Key=k)["ContentLength"] for k in g) for g in groups]
        largest = max(s3.head_object(Bucket=bucket, Key=k)["ContentLength"] for k in objects)
        assert max(sizes) - min(sizes) <= largest, sizes  # about equal bytes
        for i, g in enumerate(groups):  # each copy read its group's objects, and nothing else
            assert tasks[f"{source}#{i}"]["rows"] == sum(len(objects[k]) for k in g)
            agent = next(t["agent"] for t in shown["tasks"] if t["task"] == f"{source}#{i}")
            assert agent == f"etl@{c.taken[f'{source}#{i}'][0]}"
    # every row once: in the Parquet dataset (its copies' parts put together) and in the table
    lake = pq.read_table(c.folder / "out" / "events")
    assert sorted(lake.column("id").to_pylist()) == list(range(sum(EVENTS)))
    assert sorted(p.name for p in (c.folder / "out" / "events").iterdir()) == [f"p{i}-part-0.parquet" for i in
                                                                                range(3)]
    assert c.rows("orders") == (sum(ORDERS), sum(ORDERS))
    text = (await c.finished(await c.cli("runs", "show", result["run_id"])))[0]
    assert re.search(rf"lake\s+{sum(EVENTS):,} rows -> out/events/ \(replace; 3 copies\)", text), text
    assert re.search(rf"book\s+{sum(ORDERS):,} rows -> table orders on dst \(append; 3 copies\)", text), text
    assert all(re.search(rf"{b}\s+extract\s+s3\s+succeeded", text) for b in copies), text


FAILING = """
version: 1
name: s3_resume
extract:
  events: {tool: s3, url: "s3://BUCKET/events/*.parquet", endpoint_url: "ENDPOINT", partitions: 3}
transform:
  - {name: checked, input: events, tool: python, function: "check:check"}
load:
  lake: {input: checked, tool: parquet, path: out/events/}
"""


async def test_a_resumed_run_s_copies_read_the_objects_listed_at_its_start(cluster, s3, bucket, s3_endpoint):
    c = cluster
    events = upload(s3, bucket, "events", EVENTS, parquet)
    (c.folder / "check.py").write_text(distributed.refusing(1000))
    (c.folder / "fail-now").touch()
    await c.start_workers(2)
    pipeline = FAILING.replace("BUCKET", bucket).replace("ENDPOINT", s3_endpoint)
    failed = json.loads((await c.finished(await c.run(pipeline, "--json"), 1))[0])
    statuses = {t["name"]: t["status"] for t in failed["tasks"]}
    assert sorted(statuses[f"lake#{i}"] for i in range(3)) == ["succeeded", "succeeded", "upstream_failed"]
    # the bucket changes before the resume: an object more, whose rows no copy of this run reads
    s3.put_object(Bucket=bucket, Key="events/part-9.parquet", Body=parquet(range(90_000, 90_500)))
    (c.folder / "fail-now").unlink()
    resumed = json.loads((await c.finished(await c.cli("resume", failed["run_id"], "--json", bus=c.url)))[0])
    assert resumed["status"] == "succeeded"
    shown = json.loads((await c.finished(await c.cli("runs", "show", failed["run_id"], "--json")))[0])
    assert sorted(k for g in shown_copies(shown, "events") for k in g) == sorted(events)
    lake = pq.read_table(c.folder / "out" / "events")
    assert sorted(lake.column("id").to_pylist()) == list(range(sum(EVENTS)))  # each once, none of part-9
