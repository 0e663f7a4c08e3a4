"""Runs spread over worker processes through NATS JetStream: a coordinator (`agent-etl run --bus
nats://...`) and three `agent-etl worker` processes, each a subprocess. One worker is killed
(SIGKILL) in the middle of its branch: the coordinator sees its heartbeats stop, assigns the branch
again, and it goes on after its last commit elsewhere; the destinations hold every row once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agent_etl.bus import open_bus
from agent_etl.events import BranchReassigned, BranchTaken, TaskProgress

pytestmark = pytest.mark.services("postgres", "nats")

AGENT_ETL = os.environ.get("AGENT_ETL_CLI") or str(Path(sys.executable).parent / "agent-etl")
PG = "postgresql://postgres@127.0.0.1:5432/test"
ROWS = 6000

PIPE = """
version: 1
name: distributed
connections:
  src: {url: "${SRC_URL}"}
  dst: {url: "${DST_URL}"}
defaults: {batch_size: 250, commit_every: {rows: 1000}, retries: {max_attempts: 3, initial_delay: 0.1}}
extract:
  a: {tool: postgres, connection: src, table: a}
  b: {tool: postgres, connection: src, table: b}
transform:
  - {name: slow_a, input: a, tool: python, function: "slow:pause"}
  - {name: slow_b, input: b, tool: python, function: "slow:pause"}
load:
  a_lake: {input: slow_a, tool: parquet, path: out/a.parquet}
  b_table: {input: slow_b, tool: postgres, connection: dst, table: b, mode: merge, key: [id]}
"""

SLOW = """
import time


def pause(table):
    time.sleep(0.1)  # a branch takes a few seconds: long enough to be killed in the middle
    return table
"""


@pytest.fixture
def schemas():
    import psycopg

    src, dst = f"dsrc_{uuid.uuid4().hex[:10]}", f"ddst_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{src}"')
        conn.execute(f'CREATE SCHEMA "{dst}"')
        for t in ("a", "b"):
            conn.execute(f'CREATE TABLE "{src}".{t} (id bigint PRIMARY KEY, v text NOT NULL)')
            conn.execute(f"INSERT INTO \"{src}\".{t} SELECT i, 'row ' || i FROM generate_series(1, {ROWS}) i")
        try:
            yield src, dst
        finally:
            conn.execute(f'DROP SCHEMA IF EXISTS "{src}" CASCADE')
            conn.execute(f'DROP SCHEMA IF EXISTS "{dst}" CASCADE')


def env(tmp_path: Path, src: str, dst: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_ETL_")}
    return {**base, "AGENT_ETL_HOME": str(tmp_path / "home"), "AGENT_ETL_MEMORY": "off",
            "SRC_URL": f"{PG}?options=-csearch_path%3D{src}", "DST_URL": f"{PG}?options=-csearch_path%3D{dst}"}


async def start_worker(url: str, environ: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(AGENT_ETL, "worker", "--bus", url, "--heartbeat", "0.5",
                                                env=environ, stderr=asyncio.subprocess.PIPE)
    line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
    assert " ready on nats://127.0.0.1:4222" in line, line
    return proc, line.split()[1]


async def test_a_killed_worker_s_branch_goes_on_elsewhere_after_its_last_commit(tmp_path, schemas):
    import psycopg

    src, dst = schemas
    (tmp_path / "p.yaml").write_text(PIPE)
    (tmp_path / "slow.py").write_text(SLOW)
    url = f"nats://127.0.0.1:4222?namespace=test-{uuid.uuid4().hex[:10]}"
    environ = env(tmp_path, src, dst)
    watch = open_bus(url)
    taken: dict[str, list[str]] = {}  # branch -> the workers that took it, in turn
    reassigned: list[BranchReassigned] = []
    committed = asyncio.Event()
    await watch.listen(BranchTaken, lambda ev: taken.setdefault(ev.branch, []).append(ev.agent))
    await watch.listen(BranchReassigned, reassigned.append)
    # past 2 units of 1000 rows handed to the load: the first is committed
    await watch.listen(TaskProgress, lambda ev: ev.task == "b_table" and ev.rows_total >= 2500 and committed.set())
    workers = {}
    try:
        for _ in range(3):
            proc, wid = await start_worker(url, environ)
            workers[wid] = proc
        run = await asyncio.create_subprocess_exec(AGENT_ETL, "run", "p.yaml", "--bus", url, "--json", cwd=tmp_path,
                                                   env=environ, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
        await asyncio.wait_for(committed.wait(), 120)  # b's branch committed a unit: now kill its worker
        victim = taken["b"][0]
        workers[victim].send_signal(signal.SIGKILL)
        out, err = await asyncio.wait_for(run.communicate(), 180)
        assert run.returncode == 0, err.decode()
        result = json.loads(out)
    finally:
        for proc in workers.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in workers.values():
            await proc.wait()
        await watch.destroy()
    # the reassignment: an event naming the lost worker, and the branch taken by another worker
    assert [(r.branch, r.agent, r.attempt) for r in reassigned] == [("b", victim, 2)]
    assert len(taken["b"]) == 2 and taken["b"][1] != victim and taken["a"][0] != victim
    tasks = {t["name"]: t for t in result["tasks"]}
    assert tasks["b_table"]["attempts"] == 2 and tasks["a_lake"]["attempts"] == 1
    assert tasks["b_table"]["details"]["resumed_after_rows"] >= 1000  # after its last commit, not from scratch
    # exactly the rows of the sources, each once
    with psycopg.connect(PG) as conn:
        count, distinct, low, high = conn.execute(
            f'SELECT count(*), count(DISTINCT id), min(id), max(id) FROM "{dst}".b').fetchone()
    assert (count, distinct, low, high) == (ROWS, ROWS, 1, ROWS)
    lake = pq.read_table(tmp_path / "out" / "a.parquet")
    assert lake.num_rows == ROWS and sorted(lake.column("id").to_pylist()) == list(range(1, ROWS + 1))


async def proxy(port_to: int) -> tuple[asyncio.Server, int, list[asyncio.StreamWriter]]:
    """A TCP proxy to NATS that the test can pull away: the coordinator's link to the broker."""
    links: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port_to)
        links.extend([writer, up_writer])
        asyncio.get_running_loop().create_task(pipe(reader, up_writer))
        asyncio.get_running_loop().create_task(pipe(up_reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], links


async def test_nats_lost_mid_run_fails_the_run_clearly_and_it_resumes(tmp_path, schemas):
    import psycopg

    src, dst = schemas
    (tmp_path / "p.yaml").write_text(PIPE)
    (tmp_path / "slow.py").write_text(SLOW)
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    url = f"nats://127.0.0.1:4222?namespace={namespace}"
    environ = env(tmp_path, src, dst)
    server, port, links = await proxy(4222)
    through = f"nats://127.0.0.1:{port}?namespace={namespace}"
    watch = open_bus(url)
    going = asyncio.Event()
    await watch.listen(TaskProgress, lambda ev: ev.rows_total >= 1000 and going.set())
    workers = []
    try:
        for _ in range(2):
            workers.append((await start_worker(url, environ))[0])
        run = await asyncio.create_subprocess_exec(AGENT_ETL, "run", "p.yaml", "--bus", through, cwd=tmp_path,
                                                   env=environ, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
        await asyncio.wait_for(going.wait(), 120)
        server.close()  # the coordinator's broker goes away, and stays away
        for link in links:
            link.transport.abort()
        out, err = await asyncio.wait_for(run.communicate(), 180)
        assert run.returncode == 1, err.decode()
        assert f"lost the NATS server at nats://127.0.0.1:{port}" in out.decode() + err.decode()
        assert "Traceback" not in err.decode()
        runs = await asyncio.create_subprocess_exec(AGENT_ETL, "runs", "list", "--json", env=environ, cwd=tmp_path,
                                                    stdout=asyncio.subprocess.PIPE)
        listed = json.loads((await runs.communicate())[0])
        run_id = listed[0]["run_id"]
        assert listed[0]["status"] == "failed"
        resumed = await asyncio.create_subprocess_exec(AGENT_ETL, "resume", run_id, cwd=tmp_path,
                                                       env={**environ, "AGENT_ETL_BUS": url},
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(resumed.communicate(), 180)
        assert resumed.returncode == 0, err.decode()
    finally:
        for proc in workers:
            if proc.returncode is None:
                proc.terminate()
        for proc in workers:
            await proc.wait()
        await watch.destroy()
    with psycopg.connect(PG) as conn:
        assert conn.execute(f'SELECT count(*), count(DISTINCT id) FROM "{dst}".b').fetchone() == (ROWS, ROWS)
    assert pq.read_table(tmp_path / "out" / "a.parquet").num_rows == ROWS


async def test_a_worker_stopped_by_sigterm_finishes_its_branch_first(tmp_path, schemas):
    import psycopg

    src, dst = schemas
    (tmp_path / "p.yaml").write_text(PIPE)
    (tmp_path / "slow.py").write_text(SLOW)
    url = f"nats://127.0.0.1:4222?namespace=test-{uuid.uuid4().hex[:10]}"
    environ = env(tmp_path, src, dst)
    watch = open_bus(url)
    taken: dict[str, str] = {}
    reassigned: list[BranchReassigned] = []
    going = asyncio.Event()
    await watch.listen(BranchTaken, lambda ev: taken.setdefault(ev.branch, ev.agent))
    await watch.listen(BranchReassigned, reassigned.append)
    await watch.listen(TaskProgress, lambda ev: ev.task == "b_table" and ev.rows_total >= 1000 and going.set())
    workers = {}
    try:
        for _ in range(2):
            proc, wid = await start_worker(url, environ)
            workers[wid] = proc
        run = await asyncio.create_subprocess_exec(AGENT_ETL, "run", "p.yaml", "--bus", url, cwd=tmp_path,
                                                   env=environ, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
        await asyncio.wait_for(going.wait(), 120)
        stopping = workers[taken["b"]]
        stopping.send_signal(signal.SIGTERM)
        _, said = await asyncio.wait_for(stopping.communicate(), 120)
        assert stopping.returncode == 0 and "finishing 1 branch(es)" in said.decode()
        out, err = await asyncio.wait_for(run.communicate(), 180)
        assert run.returncode == 0, err.decode()
    finally:
        for proc in workers.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in workers.values():
            await proc.wait()
        await watch.destroy()
    assert reassigned == []  # it finished its branch: nothing to hand back
    with psycopg.connect(PG) as conn:
        assert conn.execute(f'SELECT count(*), count(DISTINCT id) FROM "{dst}".b').fetchone() == (ROWS, ROWS)


async def test_a_second_sigterm_hands_the_branch_back_at_once(tmp_path, schemas):
    import psycopg

    src, dst = schemas
    (tmp_path / "p.yaml").write_text(PIPE)
    (tmp_path / "slow.py").write_text(SLOW)
    url = f"nats://127.0.0.1:4222?namespace=test-{uuid.uuid4().hex[:10]}"
    environ = env(tmp_path, src, dst)
    watch = open_bus(url)
    taken: dict[str, list[str]] = {}
    reassigned: list[BranchReassigned] = []
    going = asyncio.Event()
    await watch.listen(BranchTaken, lambda ev: taken.setdefault(ev.branch, []).append(ev.agent))
    await watch.listen(BranchReassigned, reassigned.append)
    await watch.listen(TaskProgress, lambda ev: ev.task == "b_table" and ev.rows_total >= 1000 and going.set())
    workers = {}
    try:
        for _ in range(2):
            proc, wid = await start_worker(url, environ)
            workers[wid] = proc
        run = await asyncio.create_subprocess_exec(AGENT_ETL, "run", "p.yaml", "--bus", url, cwd=tmp_path,
                                                   env=environ, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
        await asyncio.wait_for(going.wait(), 120)
        leaving = taken["b"][0]
        stopping = workers[leaving]
        stopping.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        stopping.send_signal(signal.SIGTERM)
        _, said = await asyncio.wait_for(stopping.communicate(), 120)
        assert stopping.returncode == 0 and "handing back" in said.decode()
        out, err = await asyncio.wait_for(run.communicate(), 180)
        assert run.returncode == 0, err.decode()
    finally:
        for proc in workers.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in workers.values():
            await proc.wait()
        await watch.destroy()
    assert [(r.branch, r.agent, r.reason) for r in reassigned] == [("b", leaving, f"worker {leaving} handed its "
                                                                                  "branches back")]
    assert len(taken["b"]) == 2 and taken["b"][1] != leaving
    with psycopg.connect(PG) as conn:
        assert conn.execute(f'SELECT count(*), count(DISTINCT id) FROM "{dst}".b').fetchone() == (ROWS, ROWS)


async def test_a_run_whose_coordinator_died_is_resumed_on_the_same_workers(tmp_path, schemas):
    import psycopg

    src, dst = schemas
    (tmp_path / "p.yaml").write_text(PIPE)
    (tmp_path / "slow.py").write_text(SLOW)
    url = f"nats://127.0.0.1:4222?namespace=test-{uuid.uuid4().hex[:10]}"
    environ = env(tmp_path, src, dst)
    watch = open_bus(url)
    going = asyncio.Event()
    await watch.listen(TaskProgress, lambda ev: ev.task == "b_table" and ev.rows_total >= 1000 and going.set())
    workers = []
    try:
        for _ in range(2):
            workers.append((await start_worker(url, environ))[0])
        run = await asyncio.create_subprocess_exec(AGENT_ETL, "run", "p.yaml", "--bus", url, cwd=tmp_path,
                                                   env=environ, stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.DEVNULL)
        await asyncio.wait_for(going.wait(), 120)
        run.send_signal(signal.SIGKILL)
        await run.wait()
        kv = await watch.kv("workers")
        for _ in range(1200):  # the workers finish what they run (their commits land), and say so
            records = [json.loads(v) for v in (await kv.items()).values()]
            if len(records) == 2 and not any(r["running"] for r in records):
                break
            await asyncio.sleep(0.1)
        for _ in range(600):  # the dead coordinator's lease on the run runs out: it is crashed
            listed = await asyncio.create_subprocess_exec(AGENT_ETL, "runs", "list", "--json", env=environ,
                                                          cwd=tmp_path, stdout=asyncio.subprocess.PIPE)
            (row,) = json.loads((await listed.communicate())[0])
            if row["status"] == "crashed":
                break
            await asyncio.sleep(0.5)
        assert row["status"] == "crashed"
        resumed = await asyncio.create_subprocess_exec(AGENT_ETL, "resume", row["run_id"], "--json", cwd=tmp_path,
                                                       env={**environ, "AGENT_ETL_BUS": url},
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(resumed.communicate(), 180)
        assert resumed.returncode == 0, err.decode()
    finally:
        for proc in workers:
            if proc.returncode is None:
                proc.terminate()
        for proc in workers:
            await proc.wait()
        await watch.destroy()
    result = json.loads(out)
    assert result["status"] == "succeeded" and result["resumed"]
    with psycopg.connect(PG) as conn:
        assert conn.execute(f'SELECT count(*), count(DISTINCT id) FROM "{dst}".b').fetchone() == (ROWS, ROWS)
    assert pq.read_table(tmp_path / "out" / "a.parquet").num_rows == ROWS
