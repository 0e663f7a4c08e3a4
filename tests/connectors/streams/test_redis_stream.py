"""redis_stream source and sink against the Redis running on the machine: round trips, the bounded stop
rules, acknowledgements only after commit, and bad input (one clear message each)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.testing import run_extractor, run_loader
from tests.connectors.streams.conftest import REDIS_URL, cli, redis_fill, redis_pending, rows

SOURCE = {"url": REDIS_URL, "group": "g", "create_group": True, "idle_seconds": 0.3}


def spec(stream: str, load: str, extract: str = "") -> str:
    return f"""version: 1
name: redis_{stream}
connections:
  db: {{url: "sqlite:///out.db"}}
extract:
  src: {{tool: redis_stream, url: "{REDIS_URL}", stream: {stream}, group: g, create_group: true, idle_seconds: 0.3,
        batch_size: 700{extract}}}
load:
  dst: {{input: src, {load}}}
"""


def test_stream_to_sqlite_through_the_cli_acks_everything(tmp_path: Path, redis_stream: str):
    redis_fill(redis_stream, [{"id": i, "name": f"n{i}", "amount": i / 4} for i in range(5000)])
    (tmp_path / "p.yaml").write_text(spec(redis_stream, "tool: sqlite, connection: db, table: t, "
                                                        "commit_every: {rows: 1500}"))
    done = cli(tmp_path, "run", "p.yaml")
    assert done.returncode == 0, done.stderr
    assert rows(tmp_path / "out.db") == (5000, 5000)
    assert redis_pending(redis_stream, "g") == 0
    # commit units each carry the mark: the last entry id the unit covered
    positions = rows(tmp_path / "out.db", "SELECT count(*) FROM _agent_etl_checkpoints WHERE position LIKE '%mark%'")
    assert positions[0] == 3  # 700-row batches: units end at 2100, 4200 and the end
    # a second run reads only what was added since
    redis_fill(redis_stream, [{"id": i, "name": "late", "amount": 0.0} for i in range(5000, 5100)])
    again = cli(tmp_path, "run", "p.yaml")
    assert again.returncode == 0, again.stderr
    assert rows(tmp_path / "out.db") == (5100, 5100)


async def test_round_trip_through_the_sink(tmp_path: Path, redis_stream: str):
    table = pa.table({"id": pa.array(range(3000), pa.int64()), "s": [f"x{i}" for i in range(3000)],
                      "ok": [i % 2 == 0 for i in range(3000)]})
    assert await run_loader("redis_stream", {"url": REDIS_URL, "stream": redis_stream, "batch_size": 1000},
                            table, base_dir=tmp_path) == 3000
    back = await run_extractor("redis_stream", {**SOURCE, "stream": redis_stream}, base_dir=tmp_path)
    assert back.select(["id", "s", "ok"]).equals(table)


async def test_sink_maxlen_and_field_maps(tmp_path: Path, redis_stream: str):
    table = pa.table({"id": pa.array(range(2000), pa.int64()), "s": [None if i % 3 else "x" for i in range(2000)]})
    await run_loader("redis_stream", {"url": REDIS_URL, "stream": redis_stream, "format": "fields", "maxlen": 500},
                     table, base_dir=tmp_path)
    client = redis.Redis.from_url(REDIS_URL)
    assert client.xlen(redis_stream) < 2000  # trimmed to about 500 (MAXLEN ~ trims whole nodes)
    first = client.xrange(redis_stream, count=1)[0][1]
    assert b"id" in first
    back = await run_extractor("redis_stream", {**SOURCE, "stream": redis_stream, "format": "fields",
                                                "column_types": {"id": "int64"}}, base_dir=tmp_path)
    assert back.column("id").type == pa.int64() and back.column("id").to_pylist()[-1] == 1999


@pytest.mark.parametrize("rule,expect", [({"max_messages": 1234}, 1234), ({"max_seconds": 0.5}, None), ({}, 3000)])
async def test_bounded_stop_rules(tmp_path: Path, redis_stream: str, rule: dict, expect: int | None):
    redis_fill(redis_stream, [{"id": i} for i in range(3000)])
    got = await run_extractor("redis_stream", {**SOURCE, "stream": redis_stream, "batch_size": 500, **rule},
                              base_dir=tmp_path)
    if expect is not None:
        assert got.num_rows == expect
    else:  # a time budget: some or all, but it ends on its own
        assert 0 < got.num_rows <= 3000
    assert got.column("id").to_pylist() == list(range(got.num_rows))


def test_a_failing_load_acks_nothing_and_the_next_run_gets_everything(tmp_path: Path, redis_stream: str):
    redis_fill(redis_stream, [{"id": i, "v": "a"} for i in range(2000)])
    # the load fails on its first unit: a NOT NULL column the messages never fill
    import sqlite3

    with sqlite3.connect(tmp_path / "out.db") as conn:
        conn.execute("CREATE TABLE t (id INTEGER, v TEXT, must TEXT NOT NULL)")
    (tmp_path / "p.yaml").write_text(spec(redis_stream, "tool: sqlite, connection: db, table: t, "
                                                        "commit_every: {rows: 500}"))
    failed = cli(tmp_path, "run", "p.yaml")
    assert failed.returncode == 1
    assert redis_pending(redis_stream, "g") > 0  # delivered, never acknowledged
    with sqlite3.connect(tmp_path / "out.db") as conn:
        conn.execute("DROP TABLE t")
    again = cli(tmp_path, "run", "p.yaml")
    assert again.returncode == 0, again.stderr
    assert rows(tmp_path / "out.db") == (2000, 2000)  # the pending entries came first, then the rest
    assert redis_pending(redis_stream, "g") == 0


async def test_missing_stream_and_group(tmp_path: Path, redis_stream: str):
    with pytest.raises(ToolError, match=rf"redis stream '{redis_stream}' does not exist.*create_group: true"):
        await run_extractor("redis_stream", {"url": REDIS_URL, "stream": redis_stream, "group": "g"}, base_dir=tmp_path)
    redis_fill(redis_stream, [{"id": 1}])
    with pytest.raises(ToolError, match=r"has no consumer group 'g'.*create_group: true"):
        await run_extractor("redis_stream", {"url": REDIS_URL, "stream": redis_stream, "group": "g"}, base_dir=tmp_path)


async def test_unreachable_server(tmp_path: Path):
    with pytest.raises(TransientError, match=r"cannot reach Redis at 127.0.0.1:1 .*server is running"):
        await run_extractor("redis_stream", {"url": "redis://:secret@127.0.0.1:1/0", "stream": "s", "group": "g"},
                            base_dir=tmp_path)
    with pytest.raises(TransientError, match="cannot reach Redis") as e:
        await run_loader("redis_stream", {"url": "redis://:secret@127.0.0.1:1/0", "stream": "s"},
                         pa.table({"a": [1]}), base_dir=tmp_path)
    assert "secret" not in str(e.value)


async def test_malformed_message_is_named_or_skipped(tmp_path: Path, redis_stream: str):
    ids = redis_fill(redis_stream, [{"id": 1}, {"id": 2}])
    client = redis.Redis.from_url(REDIS_URL)
    bad = client.xadd(redis_stream, {"data": b"{not json"}).decode()
    redis_fill(redis_stream, [{"id": 3}])
    with pytest.raises(ToolError, match=rf"message {bad} is not JSON.*on_malformed: skip"):
        await run_extractor("redis_stream", {**SOURCE, "stream": redis_stream}, base_dir=tmp_path)
    got = await run_extractor("redis_stream", {**SOURCE, "stream": redis_stream, "group": "g2", "on_malformed": "skip",
                                               "id_column": "_id"}, base_dir=tmp_path)
    assert got.column("id").to_pylist() == [1, 2, 3] and got.column("_id").to_pylist()[:2] == ids
    no_field = client.xadd(redis_stream, {"other": b"1"}).decode()
    with pytest.raises(ToolError, match=rf"entry {no_field} has no field 'data'"):
        await run_extractor("redis_stream", {**SOURCE, "stream": redis_stream, "group": "g3"}, base_dir=tmp_path)


def test_bad_options_are_spec_errors(tmp_path: Path):
    (tmp_path / "p.yaml").write_text("""version: 1
name: bad
extract:
  src: {tool: redis_stream, url: "redis://127.0.0.1:6379", stream: s, group: g, mode: continuous, max_messages: 5}
load:
  out: {input: src, tool: parquet, path: out.parquet}
""")
    done = cli(tmp_path, "validate", "p.yaml")
    assert done.returncode == 2 and "continuous read runs until it is stopped" in (done.stdout + done.stderr)


def test_stream_to_parquet(tmp_path: Path, redis_stream: str):
    redis_fill(redis_stream, [{"id": i, "tags": ["a", "b"], "nested": {"k": i}} for i in range(1000)])
    (tmp_path / "p.yaml").write_text(spec(redis_stream, "tool: parquet, path: out.parquet"))
    done = cli(tmp_path, "run", "p.yaml")
    assert done.returncode == 0, done.stderr
    t = pq.read_table(tmp_path / "out.parquet")
    assert t.num_rows == 1000 and t.column("nested").type == pa.struct([("k", pa.int64())])
    assert redis_pending(redis_stream, "g") == 0
