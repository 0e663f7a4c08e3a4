"""The coordinator stores an experience for every task of every run, on both backends; secrets
never reach memory; a memory that fails or is locked never fails a run, and loses nothing."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent_etl.agents.coordinator import AgentCoordinator
from agent_etl.memory import open_memory
from agent_etl.memory.experience import Experience
from agent_etl.settings import Settings
from tests.memory.conftest import write_pipeline


async def test_every_task_of_a_run_is_remembered(memory_kind, tmp_path: Path, opened):
    path = write_pipeline(tmp_path / "p", rows=200)
    home = tmp_path / "p" / ".agent-etl"
    async with AgentCoordinator(settings=Settings(memory=memory_kind)) as c:
        result = await c.run(path)
        assert result.ok, result
        memory = await c.memory.memory(home)
        got = {e.task: e for e in map(Experience.from_record, memory.get())}
    assert set(got) == {"orders", "paid", "lake"}
    lake = got["lake"]
    assert lake.run_id == result.run_id and lake.pipeline == "orders_to_lake" and lake.status == "succeeded"
    assert lake.rows == 100 and lake.agent == result.tasks["lake"].agent
    assert lake.params == {"batch_size": 1000, "concurrency": 4}
    d = lake.descriptor
    assert (d.kind, d.tool, d.sources, d.destinations, d.transforms) == ("load", "parquet", ("csv",), ("parquet",),
                                                                         ("filter",))
    assert dict(d.schema) == {"order_id": "int64", "status": "string", "amount": "double"}  # the run's profile
    assert got["paid"].quality == {"status": "passed", "rows_in": 100, "rows_quarantined": 0, "checks_failed": 0}
    assert got["orders"].descriptor.bytes == (tmp_path / "p" / "orders.csv").stat().st_size


async def test_a_failed_task_is_remembered_with_its_error_class(memory_kind, tmp_path: Path):
    path = write_pipeline(tmp_path / "p")
    (tmp_path / "p" / "orders.csv").unlink()
    async with AgentCoordinator(settings=Settings(memory=memory_kind)) as c:
        result = await c.run(path)
        assert not result.ok
        memory = await c.memory.memory(tmp_path / "p" / ".agent-etl")
        got = {e.task: e for e in map(Experience.from_record, memory.get())}
    assert got["orders"].status == "failed" and got["orders"].error_type
    assert got["lake"].status == "upstream_failed"


async def test_the_chroma_memory_is_kept_after_the_coordinator_stops(tmp_path: Path):
    path = write_pipeline(tmp_path / "p")
    for _ in range(2):
        async with AgentCoordinator(settings=Settings(memory="chroma")) as c:
            assert (await c.run(path)).ok
    m = open_memory("chroma", tmp_path / "p" / ".agent-etl")
    try:
        assert m.count() == 6
    finally:
        m.close()


@pytest.mark.filterwarnings("ignore:Query string argument")  # SQLAlchemy on the password in the sqlite URL
async def test_secrets_never_reach_memory(tmp_path: Path, monkeypatch):
    secret = "s3cr3t-Pa55word-xyz"
    monkeypatch.setenv("WAREHOUSE_PASSWORD", secret)
    text = """\
version: 1
name: {name}
connections:
  wh: {{url: "sqlite:///out/wh.db?password=${{WAREHOUSE_PASSWORD}}"}}
extract:
  orders: {{tool: csv, path: orders.csv}}
load:
  table:
    input: orders
    tool: sql
    connection: wh
    table: orders
"""
    path = write_pipeline(tmp_path / "p", text=text)
    async with AgentCoordinator(settings=Settings(memory="chroma")) as c:
        await c.run(path)  # whether the load manages this URL or not, both tasks are remembered
    folder = tmp_path / "p" / ".agent-etl" / "memory"
    m = open_memory("chroma", tmp_path / "p" / ".agent-etl")
    try:
        records = m.get()
    finally:
        m.close()
    assert {r.metadata["task"] for r in records} == {"orders", "table"}
    assert all("password" not in r.document and "sqlite:///" not in r.document for r in records)
    for f in folder.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert secret.encode() not in data and b"WAREHOUSE_PASSWORD" not in data, f


@pytest.fixture(params=["at the end", "at the start"])
def opened(request, monkeypatch):
    """When a run's memory is opened: as its experiences are written, or as it starts
    (``Recorder.prepare``, WARM_AFTER 0 s into the run)."""
    if request.param == "at the start":
        from agent_etl.memory import recorder

        monkeypatch.setattr(recorder, "WARM_AFTER", 0.0)
    return request.param


async def test_a_broken_memory_only_warns(tmp_path: Path, caplog, opened):
    path = write_pipeline(tmp_path / "p")
    memory = tmp_path / "p" / ".agent-etl" / "memory"
    memory.mkdir(parents=True)
    (memory / "chroma").write_text("a file where the Chroma folder should be")
    with caplog.at_level(logging.WARNING, logger="agent_etl.memory"):
        async with AgentCoordinator(settings=Settings(memory="chroma")) as c:
            result = await c.run(path)
    assert result.ok
    assert any("not stored" in r.getMessage() and "memory reset" in r.getMessage() for r in caplog.records)


async def test_a_run_shorter_than_the_warm_up_leaves_the_memory_closed(tmp_path: Path, monkeypatch):
    """The warm-up a run scheduled is called off when the coordinator stops first: it would open
    the memory (and hold its lock) after everything was closed."""
    from agent_etl.memory import recorder

    monkeypatch.setattr(recorder, "WARM_AFTER", 3600.0)  # never before the stop
    path = write_pipeline(tmp_path / "p")
    async with AgentCoordinator(settings=Settings(memory="chroma")) as c:
        assert (await c.run(path)).ok
        scheduled = list(c.memory._timers)
    assert len(scheduled) == 1 and scheduled[0].cancelled()
    m = open_memory("chroma", tmp_path / "p" / ".agent-etl")  # closed, its lock free
    m.close()


async def test_a_locked_memory_keeps_the_experiences_for_the_next_process(tmp_path: Path, caplog, opened):
    path = write_pipeline(tmp_path / "p")
    home = tmp_path / "p" / ".agent-etl"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from agent_etl.memory import open_memory; m = open_memory('chroma', sys.argv[1]); "
        "print('open', flush=True); sys.stdin.read(); m.close()"), str(home)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with caplog.at_level(logging.WARNING, logger="agent_etl.memory"):
            async with AgentCoordinator(settings=Settings(memory="chroma")) as c:
                result = await c.run(path)
        assert result.ok
        assert any(f"process {holder.pid}" in r.getMessage() and "pending" in r.getMessage() for r in caplog.records)
    finally:
        holder.communicate("", timeout=60)
    assert len(list((home / "memory" / "pending").glob("*.jsonl"))) == 1
    m = open_memory("chroma", home)  # the next opener adds them
    try:
        assert {r.metadata["run_id"] for r in m.get()} == {result.run_id} and m.count() == 3
    finally:
        m.close()
    assert list((home / "memory" / "pending").glob("*")) == []


def test_memory_off_imports_no_chromadb_and_writes_nothing(tmp_path: Path):
    path = write_pipeline(tmp_path / "p")
    code = ("import sys; from agent_etl.result import run; r = run(sys.argv[1]); assert r.ok, r; "
            "print('chromadb' in sys.modules)")
    for kind, imported in (("off", "False"), ("numpy", "False")):
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "AGENT_ETL_MEMORY": kind})
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == imported
    assert not (tmp_path / "p" / ".agent-etl" / "memory").exists()
