"""The bus backend comes from settings (AGENT_ETL_BUS, or `agent-etl run --bus`): memory, the
default, in process, or NATS JetStream by its URL; an unreachable NATS is one line naming it (exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agent_etl import AgentCoordinator
from agent_etl.bus import BusError, open_bus
from agent_etl.bus.memory import MemoryBus
from agent_etl.settings import Settings

AGENT_ETL = str(Path(sys.executable).parent / "agent-etl")
PIPE = """
version: 1
name: bus_choice
extract:
  rows: {tool: csv, path: in.csv}
load:
  out: {input: rows, tool: parquet, path: out.parquet}
"""


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "p.yaml").write_text(PIPE)
    (tmp_path / "in.csv").write_text("id,name\n1,a\n2,b\n")
    environ = {k: v for k, v in os.environ.items() if k != "AGENT_ETL_BUS"}
    return subprocess.run([AGENT_ETL, "run", "p.yaml", *args], cwd=tmp_path, capture_output=True, text=True,
                          env={**environ, "AGENT_ETL_HOME": str(tmp_path / "home"), **env}, timeout=120, check=False)


def test_memory_is_the_default_and_can_be_named(tmp_path):
    assert cli(tmp_path).returncode == 0
    named = cli(tmp_path, "--bus", "memory")
    assert named.returncode == 0, named.stderr
    assert (tmp_path / "out.parquet").exists()


@pytest.mark.services("nats")
@pytest.mark.parametrize("how", ["option", "env"])
async def test_a_nats_bus_runs_the_pipeline(tmp_path, how):
    url = f"nats://127.0.0.1:4222?namespace=test-{uuid.uuid4().hex[:10]}"
    worker = subprocess.Popen([AGENT_ETL, "worker", "--bus", url], stderr=subprocess.PIPE, text=True)
    try:
        assert "ready on nats://127.0.0.1:4222" in worker.stderr.readline()
        done = cli(tmp_path, "--bus", url) if how == "option" else cli(tmp_path, AGENT_ETL_BUS=url)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "out.parquet").exists()
        assert "started   rows (etl@worker-" in done.stdout  # run by the worker process
    finally:
        worker.terminate()
        assert worker.wait(timeout=60) == 0
        await open_bus(url).destroy()


@pytest.mark.parametrize("how", ["option", "env"])
def test_an_unreachable_nats_is_one_line_naming_it(tmp_path, how):
    url = "nats://127.0.0.1:1"
    done = cli(tmp_path, "--bus", url) if how == "option" else cli(tmp_path, AGENT_ETL_BUS=url)
    assert done.returncode == 1
    assert f"bus {url}: cannot reach NATS at 127.0.0.1:1" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out.parquet").exists()


def test_plan_takes_the_bus_as_run_does(tmp_path):
    cli(tmp_path, "--bus", "memory")  # writes the pipeline
    environ = {k: v for k, v in os.environ.items() if k != "AGENT_ETL_BUS"}
    done = subprocess.run([AGENT_ETL, "plan", "p.yaml", "--bus", "nats://127.0.0.1:1"], cwd=tmp_path,
                          capture_output=True, text=True, env={**environ, "AGENT_ETL_HOME": str(tmp_path / "home")},
                          timeout=120, check=False)
    assert done.returncode == 1 and "bus nats://127.0.0.1:1: cannot reach NATS at 127.0.0.1:1" in done.stderr


def test_an_unknown_bus_names_the_ones_there_are():
    with pytest.raises(BusError, match=r"unknown bus 'kafka://x'; the bus is one of: memory") as e:
        open_bus("kafka://x")
    assert e.value.exit_code == 2


async def test_the_coordinator_takes_its_bus_from_settings(tmp_path):
    c = AgentCoordinator(settings=Settings(bus="memory", home=tmp_path))
    assert isinstance(c.bus, MemoryBus)
    remote = AgentCoordinator(settings=Settings(bus="nats://127.0.0.1:4222", home=tmp_path))
    assert type(remote.bus).__name__ == "NatsBus"  # connects on first use


def test_without_nats_py_the_nats_bus_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nats", None)  # as if nats-py were not installed
    monkeypatch.delitem(sys.modules, "agent_etl.bus.nats", raising=False)
    with pytest.raises(BusError, match=r"needs nats-py: pip install 'agent-etl\[distributed\]'") as e:
        open_bus("nats://127.0.0.1:4222")
    assert e.value.exit_code == 2


@pytest.mark.parametrize("bus, code, message", [
    ("nats://127.0.0.1:1", 1, "bus nats://127.0.0.1:1: cannot reach NATS at 127.0.0.1:1"),
    ("memory", 2, "a worker takes its branches from a broker: --bus nats://host:port, not 'memory'"),
])
def test_a_worker_without_its_broker_says_so_in_one_line(bus, code, message):
    done = subprocess.run([AGENT_ETL, "worker", "--bus", bus], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == code and message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.services("nats", "postgres")
async def test_plan_with_a_nats_bus_while_workers_beat_ends(tmp_path):
    """`plan` under AGENT_ETL_BUS=nats://... (or --bus) with workers running ends: closing its coordinator
    waited forever for heartbeats left in subscriptions it had already cancelled (they pile up
    while the plan reads memory and splits a partitioned PostgreSQL source)."""
    import psycopg

    url = f"nats://127.0.0.1:4222?namespace=test-{uuid.uuid4().hex[:10]}"
    schema = f"plan_bus_{uuid.uuid4().hex[:10]}"
    pg = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".t AS SELECT i AS id FROM generate_series(1, 1000) i')
    (tmp_path / "p.yaml").write_text(
        f"version: 1\nname: plan_bus\nconnections:\n  src: {{url: \"{pg}\"}}\nextract:\n"
        f"  t: {{tool: postgres, connection: src, table: {schema}.t, partitions: 4, partition_on: id}}\n"
        "load:\n  lake: {input: t, tool: parquet, path: lake/t/}\n")
    workers = [subprocess.Popen([AGENT_ETL, "worker", "--bus", url, "--heartbeat", "0.1"], stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    try:
        for worker in workers:
            assert "ready on nats://127.0.0.1:4222" in worker.stderr.readline()
        environ = {**os.environ, "AGENT_ETL_HOME": str(tmp_path / "home"), "AGENT_ETL_MEMORY": "chroma"}
        for how in ("env", "option", "env"):  # AGENT_ETL_BUS, or plan --bus as run --bus
            args, env = (["--bus", url], environ) if how == "option" else ([], {**environ, "AGENT_ETL_BUS": url})
            try:
                plan = subprocess.run([AGENT_ETL, "plan", "p.yaml", "--no-memory", *args], cwd=tmp_path,
                                      capture_output=True, text=True, env=env, timeout=60, check=False)
            except subprocess.TimeoutExpired:
                pytest.fail("agent-etl plan did not end")
            assert plan.returncode == 0, plan.stderr
            assert "over workers: up to 4 copies" in plan.stdout
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            assert worker.wait(timeout=60) == 0
        await open_bus(url).destroy()
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
