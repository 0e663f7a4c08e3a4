"""Commit units, the commit barrier of sibling loads, retries that go on after what landed, resume,
timeouts and the circuit breaker, driven through the coordinator with tools written against the
public tool protocol (a resumable source and a destination that keeps its own checkpoints)."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest

from agent_etl import AgentCoordinator
from agent_etl.exceptions import ToolError, TransientError
from agent_etl.spec import Retries
from agent_etl.tools.base import Extractor, Loader, ToolConfig

# destination key -> committed units: [(run_id, task, ids, position)]
LEDGERS: dict[str, list[tuple[str, str, list[int], dict]]] = {}
FAILURES: dict[str, int] = {}


class Counter(Extractor):
    """Rows 0..rows-1 in batches of ``batch``; resumable by row count."""

    class Config(ToolConfig):
        rows: int = 100
        batch: int = 10
        delay: float = 0.0

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.at = 0

    def resumable(self):
        return True

    def resume_from(self, position):
        self.at = position["rows"]

    def position(self):
        return {"rows": self.at}

    async def batches(self):
        while self.at < self.config.rows:
            end = min(self.at + self.config.batch, self.config.rows)
            batch = pa.record_batch({"id": pa.array(range(self.at, end), pa.int64())})
            self.at = end
            yield batch
            await asyncio.sleep(self.config.delay)


class Ledger(Loader):
    """Appends in commit units to LEDGERS[key]; each unit carries its checkpoint, like a database."""

    class Config(ToolConfig):
        key: str
        fail_at_unit: int | None = None  # raise before committing this unit (counted over the run)
        transient: int = 0  # the first N failures are transient
        connection: str | None = None

    def takes_units(self):
        return True

    async def committed(self):
        mine = [u for u in LEDGERS.get(self.config.key, []) if u[0] == self.ctx.run_id and u[1] == self.ctx.task]
        if not mine:
            return None
        return {"rows": sum(len(u[2]) for u in mine), "commits": len(mine), "position": mine[-1][3]}

    async def load(self, batches):
        ledger = LEDGERS.setdefault(self.config.key, [])
        pending: list[int] = []
        total = 0

        async def commit(final: bool) -> None:
            nonlocal pending, total
            unit = len([u for u in ledger if u[0] == self.ctx.run_id and u[1] == self.ctx.task]) + 1
            if self.config.fail_at_unit == unit:
                key = f"{self.ctx.run_id}/{self.ctx.task}"
                FAILURES[key] = FAILURES.get(key, 0) + 1
                if FAILURES[key] <= self.config.transient:
                    raise TransientError(f"ledger {self.config.key}: connection reset at unit {unit}")
                if not self.config.transient:
                    raise ToolError(f"ledger {self.config.key}: refused unit {unit}")
            await self.ctx.prepare(final)
            if pending or not final:
                ledger.append((self.ctx.run_id, self.ctx.task, pending, self.ctx.source_position()))
                await self.ctx.commit(len(pending))
                total += len(pending)
            pending = []

        async for batch in batches:
            pending.extend(batch.column("id").to_pylist())
            if self.ctx.commit_due():
                await commit(False)
        await commit(True)
        return total


@pytest.fixture
def units_registry(registry):
    LEDGERS.clear()
    FAILURES.clear()
    registry.register("extractor", "counter", Counter)
    registry.register("loader", "ledger", Ledger)
    return registry


def ids(key: str) -> list[int]:
    return sorted(i for u in LEDGERS.get(key, []) for i in u[2])


SPEC = """\
version: 1
name: units
defaults: {{retries: {{max_attempts: {attempts}, initial_delay: 0.01}}{defaults}}}
extract:
  src: {{tool: counter, rows: 100, batch: 10}}
transform:
  - {{name: mid, input: src, tool: {transform}}}
load:
  a: {{input: mid, tool: ledger, key: a, commit_every: {{rows: 30}}{a}}}
  b: {{input: mid, tool: ledger, key: b{b}}}
"""


def spec(attempts=1, defaults="", a="", b="", transform="double"):
    return SPEC.format(attempts=attempts, defaults=defaults, a=a, b=b, transform=transform)


async def run(units_registry, tmp_path, text, **kw):
    from agent_etl.spec import Pipeline

    p = tmp_path / "p.yaml"
    p.write_text(text)
    return await AgentCoordinator(registry=units_registry, home=tmp_path / ".agent-etl").run(
        Pipeline.from_yaml(p, registry=units_registry), **kw)


@pytest.fixture(autouse=True)
def _streaming_double(registry):
    registry.get("transform", "double").streaming = True
    yield
    registry.get("transform", "double").streaming = False


async def test_units_follow_commit_every_and_the_siblings_commit_together(units_registry, tmp_path):
    result = await run(units_registry, tmp_path, spec(b=", commit_every: {rows: 50}"))
    assert result.ok, result.error
    # the smallest commit_every of the siblings marks the units of both: 30 rows -> batches 3, 6, 9, end
    assert [len(u[2]) for u in LEDGERS["a"]] == [30, 30, 30, 10]
    assert [len(u[2]) for u in LEDGERS["b"]] == [30, 30, 30, 10]
    assert [u[3]["src"]["rows"] for u in LEDGERS["a"]] == [30, 60, 90, 100]
    assert ids("a") == ids("b") == [2 * i for i in range(100)]
    assert result.tasks["a"].details["commit_units"] == 4


async def test_a_path_that_needs_the_whole_stream_commits_once(units_registry, tmp_path):
    units_registry.get("transform", "double").streaming = False  # as if it needed the whole stream
    result = await run(units_registry, tmp_path, spec())
    assert result.ok
    assert [len(u[2]) for u in LEDGERS["a"]] == [100] and "commit_units" not in result.tasks["a"].details


async def test_a_failed_sibling_rolls_back_the_unit_of_the_other(units_registry, tmp_path):
    result = await run(units_registry, tmp_path, spec(b=", fail_at_unit: 3"))
    assert result.exit_code == 1
    assert "refused unit 3" in result.tasks["b"].error
    assert result.tasks["a"].status == "upstream_failed" and "sibling load 'b'" in result.tasks["a"].error
    # units 1 and 2 landed in both, unit 3 in neither
    assert ids("a") == ids("b") == [2 * i for i in range(60)]


async def test_commit_each_lets_a_sibling_commit_alone(units_registry, tmp_path):
    result = await run(units_registry, tmp_path, spec(defaults=", commit: each", b=", fail_at_unit: 3"))
    assert result.exit_code == 1 and result.tasks["a"].status == "succeeded"
    assert ids("a") == [2 * i for i in range(100)] and ids("b") == [2 * i for i in range(60)]


async def test_a_transient_failure_is_retried_after_the_units_that_landed(units_registry, tmp_path):
    result = await run(units_registry, tmp_path, spec(attempts=3, a=", fail_at_unit: 3, transient: 1"))
    assert result.ok, result.error
    assert ids("a") == ids("b") == [2 * i for i in range(100)]  # nothing twice, nothing lost
    assert result.tasks["src"].details["resumed_from"] == {"rows": 60}
    assert result.tasks["a"].attempts == 2


async def test_resume_goes_on_after_the_last_unit(units_registry, tmp_path):
    failed = await run(units_registry, tmp_path, spec(a=", fail_at_unit: 3"))
    assert failed.exit_code == 1 and failed.resume_command.startswith(f"agent-etl resume {failed.run_id}")
    assert ids("a") == ids("b") == [2 * i for i in range(60)]
    (tmp_path / "p.yaml").write_text(spec())  # the cause is fixed
    refused = None
    try:
        await AgentCoordinator(registry=units_registry, home=tmp_path / ".agent-etl").run(resume=failed.run_id)
    except Exception as e:  # noqa: BLE001
        refused = e
    assert refused is not None and "load.a changed" in str(refused)
    resumed = await AgentCoordinator(registry=units_registry, home=tmp_path / ".agent-etl").run(
        resume=failed.run_id, force=True)
    assert resumed.ok and resumed.run_id == failed.run_id and resumed.resumed
    assert ids("a") == ids("b") == [2 * i for i in range(100)]
    assert resumed.tasks["src"].details["resumed_from"] == {"rows": 60}
    again = await AgentCoordinator(registry=units_registry, home=tmp_path / ".agent-etl").run(resume=failed.run_id)
    assert again.ok and "nothing to do" in again.note
    from agent_etl.store.runs import RunStore

    store = RunStore.at(tmp_path / ".agent-etl")
    run_row = store.get_run(failed.run_id).run
    store.close()
    assert run_row["description"]["spec"] == spec() and run_row["resumes"] == 1  # it went on with the new spec


async def test_a_load_ahead_of_its_sibling_skips_what_it_committed(units_registry, tmp_path):
    failed = await run(units_registry, tmp_path, spec(defaults=", commit: each", a=", fail_at_unit: 4",
                                                      b=", fail_at_unit: 2"))
    assert failed.exit_code == 1 and ids("a") == [2 * i for i in range(90)] and ids("b") == [2 * i for i in range(30)]
    (tmp_path / "p.yaml").write_text(spec(defaults=", commit: each"))
    resumed = await AgentCoordinator(registry=units_registry, home=tmp_path / ".agent-etl").run(
        resume=failed.run_id, force=True)
    assert resumed.ok, resumed.error
    assert ids("a") == ids("b") == [2 * i for i in range(100)]
    assert resumed.tasks["src"].details["resumed_from"] == {"rows": 30}  # where b needs it


async def test_a_task_past_its_timeout_fails_transiently_and_is_retried(units_registry, tmp_path):
    text = spec(attempts=2).replace("batch: 10}", "batch: 10, delay: 0.05, timeout: 0.2}")
    result = await run(units_registry, tmp_path, text)
    assert result.exit_code == 1
    assert "ran longer than its timeout of 0.2s" in result.tasks["src"].error
    assert result.tasks["src"].attempts == 2


async def test_the_breaker_fails_the_rest_of_the_run_fast(units_registry, tmp_path):
    text = """\
version: 1
name: breaker
defaults: {retries: {max_attempts: 2, initial_delay: 0.01}, concurrency: 1, breaker: {failures: 2}}
connections: {db: {url: "sqlite:///x.db"}}
extract:
  s1: {tool: counter, rows: 10}
  s2: {tool: counter, rows: 10}
  s3: {tool: counter, rows: 10}
load:
  l1: {input: s1, tool: ledger, key: l1, connection: db, fail_at_unit: 1, transient: 9}
  l2: {input: s2, tool: ledger, key: l2, connection: db, fail_at_unit: 1, transient: 9}
  l3: {input: s3, tool: ledger, key: l3, connection: db}
"""
    result = await run(units_registry, tmp_path, text)
    assert result.exit_code == 1
    assert result.tasks["l1"].attempts == 2  # two transient failures open the breaker
    down = [t for t in ("l2", "l3") if "taken as down after 2 failures" in (result.tasks[t].error or "")]
    assert down == ["l2", "l3"] and "l3" not in LEDGERS


def test_backoff_has_jitter_within_half_and_all_of_the_delay():
    r = Retries(initial_delay=1.0, max_delay=8.0)
    delays = [r.delay(3) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 150
    assert Retries(initial_delay=1.0, jitter=False).delay(3) == 4.0


async def test_resume_refuses_a_destination_that_lost_what_it_committed(units_registry, tmp_path):
    from agent_etl.exceptions import ResumeError

    failed = await run(units_registry, tmp_path, spec(a=", fail_at_unit: 3"))
    assert failed.exit_code == 1 and len(LEDGERS["a"]) == 2
    LEDGERS["a"].clear()  # the table was dropped between the crash and the resume
    with pytest.raises(ResumeError, match=r"load 'a' of run .* committed 60 rows in 2 unit\(s\), but its destination"):
        await AgentCoordinator(registry=units_registry, home=tmp_path / ".agent-etl").run(resume=failed.run_id)
    assert LEDGERS["a"] == [] and len(LEDGERS["b"]) == 2  # nothing was rewritten


async def test_a_run_killed_in_flight_is_crashed_and_resumable(units_registry, tmp_path):
    from agent_etl.store.runs import RunStore

    text = spec().replace("batch: 10}", "batch: 10, delay: 0.05}")
    task = asyncio.ensure_future(run(units_registry, tmp_path, text))
    while len(LEDGERS.get("a", [])) < 1:
        await asyncio.sleep(0.01)
    task.cancel()  # like Ctrl-C / SIGTERM: the unit in flight rolls back
    with pytest.raises(asyncio.CancelledError):
        await task
    store = RunStore.at(tmp_path / ".agent-etl")
    (row,) = store.list_runs()
    store.close()
    assert row["status"] == "interrupted"
    done = len(ids("a"))
    assert done % 30 == 0 and 0 < done < 100 and ids("a") == ids("b")
    resumed = await AgentCoordinator(registry=units_registry, home=tmp_path / ".agent-etl").run(resume=row["run_id"])
    assert resumed.ok and ids("a") == ids("b") == [2 * i for i in range(100)]


async def test_a_sibling_that_never_prepares_does_not_hold_the_others(units_registry, tmp_path, sinks):
    # `collect` (tests/conftest.py) is a loader written before commit units: it never calls prepare
    text = spec().replace("b: {input: mid, tool: ledger, key: b}", "b: {input: mid, tool: collect, key: b}")
    result = await asyncio.wait_for(run(units_registry, tmp_path, text), 30)
    assert result.ok, result.error
    assert ids("a") == [2 * i for i in range(100)] and sum(b.num_rows for b in sinks["b"]) == 100


async def test_a_run_rebuilds_from_its_events_as_json(units_registry, tmp_path, monkeypatch):
    """What a worker in another process would get: RunStarted as JSON, no secret values in it, and
    an agent that builds its view of the run from it alone."""
    from agent_etl.bus.memory import MemoryBus
    from agent_etl.agents.etl import ETLAgent
    from agent_etl.events import RunStarted, parse_event
    from agent_etl.run_context import RunDescription
    from agent_etl.spec import Pipeline

    (tmp_path / "p.yaml").write_text(spec().replace("name: units", "name: units\ndescription: ${SECRET_TOKEN}"))
    pipeline = Pipeline.from_yaml(tmp_path / "p.yaml", {"SECRET_TOKEN": "hunter2-secret", "PLAIN": "x"},
                                  registry=units_registry)
    desc = RunDescription.of(pipeline, pipeline.variables, tmp_path / ".agent-etl")
    wire = RunStarted(run_id="r1", pipeline="units", tasks=[t.name for t in pipeline.tasks], description=desc,
                      cursors={"src": {"cursor": "id", "type": "int", "value": 5}}).model_dump_json()
    assert "hunter2" not in wire and "${SECRET_TOKEN}" in wire and '"PLAIN":"x"' in wire
    assert '"secret_variables":["SECRET_TOKEN"]' in wire
    monkeypatch.setenv("SECRET_TOKEN", "hunter2-secret")  # the other process has it in its environment
    agent = ETLAgent(MemoryBus(), registry=units_registry)
    agent._on_run_started(parse_event("run.started", wire))
    rc = agent.runs["r1"]
    assert [t.name for t in rc.pipeline.tasks] == [t.name for t in pipeline.tasks]
    assert rc.pipeline.spec.description == "hunter2-secret"
    assert rc.load_state("src") == {"cursor": "id", "type": "int", "value": 5}
