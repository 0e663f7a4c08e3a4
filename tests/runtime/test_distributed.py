"""Runs spread over worker processes through NATS JetStream: a coordinator (`agent-etl run --bus
nats://...`) and `agent-etl worker` processes, each a subprocess. A worker killed (SIGKILL) in the
middle of its branch: the coordinator sees its heartbeats stop, assigns the branch again, and it
goes on after its last commit elsewhere; the destinations hold every row once. A partitioned
source runs as one copy of its branch per partition, spread over the workers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

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

# the same two sources, each read in 2 key ranges: a -> a Parquet dataset, b -> a merge
PARTITIONED = """
version: 1
name: partitioned
connections:
  src: {url: "${SRC_URL}"}
  dst: {url: "${DST_URL}"}
defaults: {batch_size: 100, commit_every: {rows: 1000}, retries: {max_attempts: 3, initial_delay: 0.1}}
extract:
  a: {tool: postgres, connection: src, table: a, partitions: 2, partition_on: id}
  b: {tool: postgres, connection: src, table: b, partitions: 2, partition_on: id}
transform:
  - {name: slow_a, input: a, tool: python, function: "slow:pause"}
  - {name: slow_b, input: b, tool: python, function: "slow:pause"}
load:
  a_lake: {input: slow_a, tool: parquet, path: out/a/}
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


class Cluster:
    """Workers of one test on a namespace of their own, the pipeline folder, and what the bus said:
    which worker took each branch (in turn) and the reassignments."""

    def __init__(self, folder: Path, src: str, dst: str):
        self.folder, self.dst = folder, dst
        self.url = f"nats://127.0.0.1:4222?namespace=test-{uuid.uuid4().hex[:10]}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_ETL_")}
        self.environ = {**base, "AGENT_ETL_HOME": str(folder / "home"), "AGENT_ETL_MEMORY": "off",
                        "SRC_URL": f"{PG}?options=-csearch_path%3D{src}",
                        "DST_URL": f"{PG}?options=-csearch_path%3D{dst}"}
        self.watch = open_bus(self.url)
        self.workers: dict[str, asyncio.subprocess.Process] = {}
        self.taken: dict[str, list[str]] = {}  # branch -> the workers that took it, in turn
        self.reassigned: list[BranchReassigned] = []

    async def open(self) -> None:
        await self.watch.listen(BranchTaken, lambda ev: self.taken.setdefault(ev.branch, []).append(ev.agent))
        await self.watch.listen(BranchReassigned, self.reassigned.append)

    async def start_workers(self, n: int, *args: str) -> None:
        for _ in range(n):
            proc = await asyncio.create_subprocess_exec(AGENT_ETL, "worker", "--bus", self.url, "--heartbeat", "0.5",
                                                        *args, env=self.environ, stderr=asyncio.subprocess.PIPE)
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert " ready on nats://127.0.0.1:4222" in line, line
            self.workers[line.split()[1]] = proc

    async def cli(self, *args: str, bus: str | None = None, out: Any = asyncio.subprocess.PIPE
                  ) -> asyncio.subprocess.Process:
        """``agent-etl ARGS`` in the pipeline folder; with ``bus``, AGENT_ETL_BUS names it."""
        environ = {**self.environ, "AGENT_ETL_BUS": bus} if bus else self.environ
        return await asyncio.create_subprocess_exec(AGENT_ETL, *args, cwd=self.folder, env=environ, stdout=out,
                                                    stderr=out)

    async def run(self, pipeline: str, *args: str, bus: str | None = None) -> asyncio.subprocess.Process:
        (self.folder / "p.yaml").write_text(pipeline)
        return await self.cli("run", "p.yaml", "--bus", bus or self.url, *args)

    async def progress(self, task: str, rows: int) -> asyncio.Event:
        """Set once a task whose name starts with ``task`` has had ``rows`` rows (``.task`` names it)."""
        seen = asyncio.Event()

        def on(ev: TaskProgress) -> None:
            if ev.task.startswith(task) and ev.rows_total >= rows and not seen.is_set():
                seen.task = ev.task
                seen.set()

        await self.watch.listen(TaskProgress, on)
        return seen

    async def finished(self, proc: asyncio.subprocess.Process, code: int = 0) -> tuple[str, str]:
        out, err = await asyncio.wait_for(proc.communicate(), 180)
        assert proc.returncode == code, err.decode()
        return (out or b"").decode(), (err or b"").decode()

    def rows(self, table: str = "b") -> tuple[int, int]:
        import psycopg

        with psycopg.connect(PG) as conn:
            return conn.execute(f'SELECT count(*), count(DISTINCT id) FROM "{self.dst}".{table}').fetchone()

    async def close(self) -> None:
        for proc in self.workers.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in self.workers.values():
            await proc.wait()
        await self.watch.destroy()


@pytest.fixture
async def cluster(tmp_path, schemas):
    (tmp_path / "slow.py").write_text(SLOW)
    c = Cluster(tmp_path, *schemas)
    await c.open()
    try:
        yield c
    finally:
        await c.close()


async def test_a_killed_worker_s_branch_goes_on_elsewhere_after_its_last_commit(cluster):
    c = cluster
    committed = await c.progress("b_table", 2500)  # past 2 units of 1000 rows handed to the load: the first is committed
    await c.start_workers(3)
    run = await c.run(PIPE, "--json")
    await asyncio.wait_for(committed.wait(), 120)  # b's branch committed a unit: now kill its worker
    victim = c.taken["b"][0]
    c.workers[victim].send_signal(signal.SIGKILL)
    result = json.loads((await c.finished(run))[0])
    # the reassignment: an event naming the lost worker, and the branch taken by another worker
    assert [(r.branch, r.agent, r.attempt) for r in c.reassigned] == [("b", victim, 2)]
    assert len(c.taken["b"]) == 2 and c.taken["b"][1] != victim and c.taken["a"][0] != victim
    tasks = {t["name"]: t for t in result["tasks"]}
    assert tasks["b_table"]["attempts"] == 2 and tasks["a_lake"]["attempts"] == 1
    assert tasks["b_table"]["details"]["resumed_after_rows"] >= 1000  # after its last commit, not from scratch
    # exactly the rows of the sources, each once
    import psycopg

    with psycopg.connect(PG) as conn:
        count, distinct, low, high = conn.execute(
            f'SELECT count(*), count(DISTINCT id), min(id), max(id) FROM "{c.dst}".b').fetchone()
    assert (count, distinct, low, high) == (ROWS, ROWS, 1, ROWS)
    lake = pq.read_table(c.folder / "out" / "a.parquet")
    assert lake.num_rows == ROWS and sorted(lake.column("id").to_pylist()) == list(range(1, ROWS + 1))


async def test_partitioned_sources_run_as_copies_over_the_workers_and_a_killed_one_goes_on(cluster):
    c = cluster
    # a copy of b (3000 rows in 100-row batches, a unit every 1000) has committed twice
    committed = await c.progress("b_table#", 2000)
    await c.start_workers(3)
    run = await c.run(PARTITIONED, "--json")
    await asyncio.wait_for(committed.wait(), 120)
    load = committed.task  # b_table#<i>: the copy i of b's branch, on one worker
    copy = "b#" + load.split("#")[1]
    victim = c.taken[copy][0]
    c.workers[victim].send_signal(signal.SIGKILL)
    result = json.loads((await c.finished(run))[0])
    # every branch is a copy: two per source, each taken by a worker
    assert sorted(c.taken) == ["a#0", "a#1", "b#0", "b#1"]
    assert [(r.branch, r.agent, r.attempt) for r in c.reassigned] == [(copy, victim, 2)]
    assert len(c.taken[copy]) == 2 and c.taken[copy][1] != victim
    tasks = {t["name"]: t for t in result["tasks"]}
    assert set(tasks) == {f"{s}#{i}" for s in ("a", "b", "slow_a", "slow_b", "a_lake", "b_table") for i in (0, 1)}
    assert tasks[load]["attempts"] == 2 and tasks[load]["details"]["resumed_after_rows"] >= 1000
    assert all(tasks[f"b#{i}"]["rows"] > 0 for i in (0, 1))  # both ranges had rows
    # exactly the rows of the sources, each once: in the table, and in one Parquet dataset
    assert c.rows("b") == (ROWS, ROWS)
    lake = pq.read_table(c.folder / "out" / "a")
    assert sorted(lake.column("id").to_pylist()) == list(range(1, ROWS + 1))
    assert sorted(p.name for p in (c.folder / "out" / "a").iterdir()) == ["p0-part-0.parquet", "p1-part-0.parquet"]
    assert [p.name for p in (c.folder / "out").iterdir()] == ["a"]  # the copies' parts folder is gone
    # runs show: a destination written by copies is one line, with the rows of all of them and where
    shown = (await c.finished(await c.cli("runs", "show", result["run_id"])))[0]
    assert re.search(rf"a_lake\s+{ROWS:,} rows -> out/a/ \(replace; 2 copies\)", shown), shown
    listed = (await c.finished(await c.cli("runs", "list")))[0]
    assert f"a_lake {ROWS:,}, b_table {ROWS:,}" in listed and "#" not in listed, listed
    # the killed copy's rows are those its first attempt committed and those of its last, after that commit
    assert tasks[load]["rows"] == ROWS // 2 and tasks[load]["details"]["committed_rows"] < ROWS // 2
    assert re.search(rf"b_table\s+{ROWS:,} rows -> table b on dst \(merge; 2 copies\)", shown), shown


async def test_nats_lost_mid_run_fails_the_run_clearly_and_it_resumes(cluster):
    c = cluster
    server, port, links = await proxy(4222)
    through = c.url.replace(":4222", f":{port}")
    going = await c.progress("", 1000)
    await c.start_workers(2)
    run = await c.run(PIPE, bus=through)
    await asyncio.wait_for(going.wait(), 120)
    server.close()  # the coordinator's broker goes away, and stays away
    for link in links:
        link.transport.abort()
    out, err = await c.finished(run, 1)
    assert f"lost the NATS server at nats://127.0.0.1:{port}" in out + err
    assert "Traceback" not in err
    listed = json.loads((await c.finished(await c.cli("runs", "list", "--json")))[0])
    assert listed[0]["status"] == "failed"
    await c.finished(await c.cli("resume", listed[0]["run_id"], bus=c.url))
    assert c.rows("b") == (ROWS, ROWS)
    assert pq.read_table(c.folder / "out" / "a.parquet").num_rows == ROWS


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


@pytest.mark.parametrize("second", [False, True], ids=["finishes", "hands-back"])
async def test_a_stopped_worker_finishes_its_branch_or_on_a_second_sigterm_hands_it_back(cluster, second):
    c = cluster
    going = await c.progress("b_table", 1000)
    await c.start_workers(2)
    run = await c.run(PIPE)
    await asyncio.wait_for(going.wait(), 120)
    leaving = c.taken["b"][0]
    stopping = c.workers[leaving]
    stopping.send_signal(signal.SIGTERM)
    if second:
        await asyncio.sleep(0.2)
        stopping.send_signal(signal.SIGTERM)
    _, said = await c.finished(stopping)
    await c.finished(run)
    if second:
        assert "handing back" in said
        assert [(r.branch, r.agent, r.reason) for r in c.reassigned] == [
            ("b", leaving, f"worker {leaving} handed its branches back")]
        assert len(c.taken["b"]) == 2 and c.taken["b"][1] != leaving
    else:
        assert "finishing 1 branch(es)" in said
        assert c.reassigned == []  # it finished its branch: nothing to hand back
    assert c.rows("b") == (ROWS, ROWS)


async def test_a_run_whose_coordinator_died_is_resumed_on_the_same_workers(cluster):
    c = cluster
    going = await c.progress("b_table", 1000)
    await c.start_workers(2)
    run = await c.run(PIPE)
    await asyncio.wait_for(going.wait(), 120)
    run.send_signal(signal.SIGKILL)
    await run.wait()
    kv = await c.watch.kv("workers")
    for _ in range(1200):  # the workers finish what they run (their commits land), and say so
        records = [json.loads(v) for v in (await kv.items()).values()]
        if len(records) == 2 and not any(r["running"] for r in records):
            break
        await asyncio.sleep(0.1)
    for _ in range(600):  # the dead coordinator's lease on the run runs out: it is crashed
        (row,) = json.loads((await c.finished(await c.cli("runs", "list", "--json")))[0])
        if row["status"] == "crashed":
            break
        await asyncio.sleep(0.5)
    assert row["status"] == "crashed"
    result = json.loads((await c.finished(await c.cli("resume", row["run_id"], "--json", bus=c.url)))[0])
    assert result["status"] == "succeeded" and result["resumed"]
    assert c.rows("b") == (ROWS, ROWS)
    assert pq.read_table(c.folder / "out" / "a.parquet").num_rows == ROWS
    # the store says so too: the tasks the workers finished were left running, with 0 rows
    shown = json.loads((await c.finished(await c.cli("runs", "show", row["run_id"], "--json")))[0])
    assert {t["status"] for t in shown["tasks"]} == {"succeeded"}, shown["tasks"]
    landed = {d["load"]: d["rows"] for d in shown["destinations"]}
    assert landed == {"a_lake": ROWS, "b_table": ROWS}, landed  # the merge's rows are in its checkpoints too


FILES = """
version: 1
name: files
defaults: {batch_size: 500}
extract:
  p: {tool: parquet, path: "data/*.parquet", partitions: 2}
transform:
  - {name: c, input: p, tool: python, function: "check:check"}
load:
  d: {input: c, tool: parquet, path: out/d/}
"""

def refusing(row: int) -> str:
    """The text of check.py: its ``check`` transform refuses a batch holding id ``row`` while a file
    ``fail-now`` lies beside it (the test makes a copy fail, then lets the resume through)."""
    return f"""
import pathlib

import pyarrow.compute as pc

FAIL = pathlib.Path(__file__).with_name("fail-now")


def check(table):
    if FAIL.exists() and pc.any(pc.equal(table.column("id"), {row})).as_py():
        raise ValueError("row {row} is refused")
    return table
"""


async def test_a_failed_copy_leaves_the_old_dataset_whole_and_the_resumed_run_swaps_in_the_new(cluster):
    import pyarrow as pa

    c = cluster
    (c.folder / "data").mkdir()
    for i in range(4):  # two groups of two files, one per copy
        pq.write_table(pa.table({"id": pa.array(range(i * 1000, (i + 1) * 1000), pa.int64())}),
                       c.folder / "data" / f"part{i}.parquet")
    (c.folder / "out" / "d").mkdir(parents=True)
    pq.write_table(pa.table({"id": [-1]}), c.folder / "out" / "d" / "old.parquet")  # a previous run's dataset
    (c.folder / "check.py").write_text(refusing(3500))
    (c.folder / "fail-now").touch()
    await c.start_workers(2)
    out, _ = await c.finished(await c.run(FILES, "--json"), 1)
    failed = json.loads(out)
    assert sorted(t["status"] for t in failed["tasks"] if t["name"].startswith("d#")) == ["succeeded",
                                                                                        "upstream_failed"]
    # the dataset is the old one, whole; the copies' parts wait next to it for the resume
    assert [p.name for p in (c.folder / "out" / "d").iterdir()] == ["old.parquet"]
    assert [p.name for p in (c.folder / "out").iterdir() if p.name.startswith(".")] == [
        f".d.parts-{failed['run_id']}"]
    (c.folder / "fail-now").unlink()
    resumed = json.loads((await c.finished(await c.cli("resume", failed["run_id"], "--json", bus=c.url)))[0])
    assert resumed["status"] == "succeeded"
    tasks = {t["name"]: t for t in resumed["tasks"]}
    # the copy that had landed its part is not run again
    assert sorted((tasks[f"d#{i}"]["details"] or {}).get("resumed") == "committed before" for i in (0, 1)) == [
        False, True]
    lake = pq.read_table(c.folder / "out" / "d")
    assert sorted(lake.column("id").to_pylist()) == list(range(4000))
    assert sorted(p.name for p in (c.folder / "out").iterdir()) == ["d"]


async def test_a_branch_whose_step_asks_for_tags_runs_only_on_a_worker_advertising_them(cluster):
    c = cluster
    await c.start_workers(2)
    await c.start_workers(1, "--tags", "gpu,eu-west")
    tagged = list(c.workers)[-1]
    # b's transform asks for a gpu worker: both copies of b's branch wait for that one worker
    step = '{name: slow_b, input: b, tool: python, function: "slow:pause"'
    pipeline = PARTITIONED.replace(step, step + ", tags: [gpu]")
    result = json.loads((await c.finished(await c.run(pipeline, "--json")))[0])
    assert c.taken["b#0"] == [tagged] and c.taken["b#1"] == [tagged]
    assert len(c.taken["a#0"]) == len(c.taken["a#1"]) == 1
    assert c.rows("b") == (ROWS, ROWS)
    # why each task ran where it did: the work queue's placement, not a choice among the agents here
    reasons = {t["name"]: (t["agent"], t["reason"]) for t in result["tasks"]}
    assert reasons["slow_b#1"] == (reasons["b#1"][0], "the first worker with room takes its branch, on a worker "
                                                      "tagged gpu")
    assert {r for _, r in reasons.values()} == {"the first worker with room takes its branch",
                                                 "the first worker with room takes its branch, on a worker tagged gpu"}
    assert reasons["b#0"][0] == reasons["slow_b#0"][0] == f"etl@{tagged}", (tagged, reasons)
