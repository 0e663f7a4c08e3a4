"""nats source and sink against the NATS JetStream running on the machine: round trips, stop rules,
publish dedupe, acknowledgements only after commit, and bad input."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.testing import build, run_extractor, run_loader, stream, tool_context
from tests.connectors.streams.conftest import (NATS_URL, _nats, _run, cli, nats_consumer, nats_fill, nats_messages,
                                              rows)

SOURCE = {"url": NATS_URL, "durable": "d", "idle_seconds": 0.3}


def spec(stream_name: str, load: str, extract: str = "") -> str:
    return f"""version: 1
name: nats_{stream_name.lower()}
connections:
  db: {{url: "sqlite:///out.db"}}
extract:
  src: {{tool: nats, url: "{NATS_URL}", stream: {stream_name}, durable: d, idle_seconds: 0.3, batch_size: 700{extract}}}
load:
  dst: {{input: src, {load}}}
"""


def test_stream_to_sqlite_through_the_cli_acks_everything(tmp_path: Path, nats_stream: str):
    nats_fill(nats_stream, [{"id": i, "name": f"n{i}"} for i in range(5000)])
    (tmp_path / "p.yaml").write_text(spec(nats_stream, "tool: sqlite, connection: db, table: t, "
                                                       "commit_every: {rows: 1500}"))
    done = cli(tmp_path, "run", "p.yaml")
    assert done.returncode == 0, done.stderr
    assert rows(tmp_path / "out.db") == (5000, 5000)
    info = nats_consumer(nats_stream, "d")
    assert info.num_ack_pending == 0 and info.ack_floor.stream_seq == 5000
    nats_fill(nats_stream, [{"id": i, "name": "late"} for i in range(5000, 5100)])
    again = cli(tmp_path, "run", "p.yaml")
    assert again.returncode == 0, again.stderr
    assert rows(tmp_path / "out.db") == (5100, 5100)


async def test_round_trip_through_the_sink(tmp_path: Path, nats_stream: str):
    table = pa.table({"id": pa.array(range(3000), pa.int64()), "s": [f"x{i}" for i in range(3000)]})
    opts = {"url": NATS_URL, "stream": nats_stream, "subject": f"{nats_stream}.out", "batch_size": 1000}
    assert await run_loader("nats", opts, table, base_dir=tmp_path) == 3000
    back = await run_extractor("nats", {**SOURCE, "stream": nats_stream, "subject": f"{nats_stream}.out",
                                        "id_column": "_seq"}, base_dir=tmp_path)
    assert back.select(["id", "s"]).equals(table)
    assert back.column("_seq").to_pylist() == list(range(1, 3001))


async def test_a_replayed_unit_is_not_stored_twice(tmp_path: Path, nats_stream: str):
    """The same rows at the same source position (a unit sent again by a retry) carry the same message
    ids: JetStream drops them as duplicates."""
    table = pa.table({"id": pa.array(range(500), pa.int64())})
    opts = {"url": NATS_URL, "stream": nats_stream, "subject": f"{nats_stream}.out"}
    for _ in range(2):
        ctx = tool_context(tmp_path, task="out", run_id="run-1", position={"src": {"rows": 500}})
        await build("loader", "nats", opts, ctx).load(stream(table))
    assert nats_messages(nats_stream) == 500
    ctx = tool_context(tmp_path, task="out", run_id="run-2", position={"src": {"rows": 500}})
    await build("loader", "nats", opts, ctx).load(stream(table))
    assert nats_messages(nats_stream) == 1000  # another run is new data


@pytest.mark.parametrize("rule,expect", [({"max_messages": 1234}, 1234), ({}, 3000)])
async def test_bounded_stop_rules(tmp_path: Path, nats_stream: str, rule: dict, expect: int):
    nats_fill(nats_stream, [{"id": i} for i in range(3000)])
    got = await run_extractor("nats", {**SOURCE, "stream": nats_stream, "batch_size": 500, **rule}, base_dir=tmp_path)
    assert got.column("id").to_pylist() == list(range(expect))


def test_a_failing_load_acks_nothing_and_the_next_run_gets_everything(tmp_path: Path, nats_stream: str):
    import sqlite3

    nats_fill(nats_stream, [{"id": i, "v": "a"} for i in range(2000)])
    with sqlite3.connect(tmp_path / "out.db") as conn:
        conn.execute("CREATE TABLE t (id INTEGER, v TEXT, must TEXT NOT NULL)")
    (tmp_path / "p.yaml").write_text(spec(nats_stream, "tool: sqlite, connection: db, table: t, "
                                                       "commit_every: {rows: 500}"))
    failed = cli(tmp_path, "run", "p.yaml")
    assert failed.returncode == 1
    info = nats_consumer(nats_stream, "d")
    assert info.num_ack_pending > 0 and (info.ack_floor.stream_seq or 0) == 0
    with sqlite3.connect(tmp_path / "out.db") as conn:
        conn.execute("DROP TABLE t")
    again = cli(tmp_path, "run", "p.yaml")  # does not wait ack_wait (300 s) for the redelivery
    assert again.returncode == 0, again.stderr
    assert rows(tmp_path / "out.db") == (2000, 2000)
    assert nats_consumer(nats_stream, "d").num_ack_pending == 0


@pytest.mark.services("nats")
async def test_missing_stream_unreachable_server_and_no_stream_for_a_subject(tmp_path: Path):
    with pytest.raises(ToolError, match=r"nats stream 'AETL_NOPE' does not exist on 127.0.0.1:4222"):
        await run_extractor("nats", {**SOURCE, "stream": "AETL_NOPE"}, base_dir=tmp_path)
    with pytest.raises(TransientError, match=r"cannot reach NATS at 127.0.0.1:1 "):
        await run_extractor("nats", {**SOURCE, "url": "nats://user:secret@127.0.0.1:1", "stream": "S"},
                            base_dir=tmp_path)
    with pytest.raises(ToolError, match=r"^load 'test': nats stream 'AETL_NOPE' on 127.0.0.1:4222 does not exist; "
                                        r"create it \(nats stream add AETL_NOPE --subjects 'aetl.nowhere.x' --defaults\), "
                                        r"or set create: true$"):
        await run_loader("nats", {"url": NATS_URL, "stream": "AETL_NOPE", "subject": "aetl.nowhere.x",
                                  "create": False}, pa.table({"a": [1, 2]}), base_dir=tmp_path)
    assert _stream_subjects("AETL_NOPE") is None


def _stream_subjects(name: str) -> list[str] | None:
    import nats.js.errors

    async def subjects(js):
        try:
            return (await js.stream_info(name)).config.subjects
        except nats.js.errors.NotFoundError:
            return None

    return _run(_nats(subjects))


def test_a_load_creates_its_missing_stream_taking_its_subject(tmp_path: Path):
    name = f"AETL_NEW_{uuid.uuid4().hex[:8].upper()}"
    (tmp_path / "in.csv").write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(300)))
    (tmp_path / "p.yaml").write_text(
        f"version: 1\nname: new_stream\nextract:\n  src: {{tool: csv, path: in.csv}}\nload:\n"
        f"  dst: {{input: src, tool: nats, url: '{NATS_URL}', stream: {name}, subject: {name}.rows}}\n")
    try:
        done = cli(tmp_path, "run", "p.yaml")
        assert done.returncode == 0, done.stderr
        assert _stream_subjects(name) == [f"{name}.rows"]
        assert nats_messages(name) == 300
        again = cli(tmp_path, "run", "p.yaml")  # the stream is there now: used as it is
        assert again.returncode == 0, again.stderr
        assert nats_messages(name) == 600
    finally:
        _run(_nats(lambda js: js.delete_stream(name)))


async def test_a_stream_that_does_not_take_the_subject_is_named(tmp_path: Path, nats_stream: str):
    with pytest.raises(ToolError, match=rf"^load 'test': nats stream '{nats_stream}' on 127.0.0.1:4222 takes subjects "
                                        rf"\['{nats_stream}\.>'\], not 'elsewhere\.x'; publish on one of them, or add "
                                        rf"it \(nats stream edit {nats_stream} --subjects \.\.\.\)$"):
        await run_loader("nats", {"url": NATS_URL, "stream": nats_stream, "subject": "elsewhere.x"},
                         pa.table({"a": [1, 2]}), base_dir=tmp_path)
    assert nats_messages(nats_stream) == 0


async def test_malformed_message_is_named_or_skipped(tmp_path: Path, nats_stream: str):
    nats_fill(nats_stream, [{"id": 1}, b"[1, 2]", {"id": 3}])
    with pytest.raises(ToolError, match=r"message 2 is not a JSON object.*on_malformed: skip"):
        await run_extractor("nats", {**SOURCE, "stream": nats_stream}, base_dir=tmp_path)
    got = await run_extractor("nats", {**SOURCE, "stream": nats_stream, "durable": "d2", "on_malformed": "skip"},
                              base_dir=tmp_path)
    assert got.column("id").to_pylist() == [1, 3]
