"""OpenTelemetry spans (the `otel` extra) with the SDK's in-memory exporter: a span per run, task
and commit with the run id, tasks under their run, commits under their task, and the run's trace
context on the events that cross to agents."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from agent_etl import AgentCoordinator  # noqa: E402
from agent_etl.events import RunStarted, TaskAssigned  # noqa: E402

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider():
    # the global provider can be set once per process: this module's, for all its tests
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(tp)
    yield tp


SPEC = """
version: 1
name: traced
extract:
  nums: {tool: numbers, rows: 10, batch: 4}
transform:
  - {name: twice, input: nums, tool: double}
load:
  out: {input: twice, tool: collect, key: out, fail: FAIL}
"""


async def test_spans_of_a_run(make_pipeline, registry, tmp_path):
    EXPORTER.clear()
    carried = []
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        await c.bus.listen(TaskAssigned, lambda ev: carried.append(ev.trace))
        await c.bus.listen(RunStarted, lambda ev: carried.append(ev.trace))
        result = await c.run(make_pipeline(SPEC.replace("FAIL", "false")))
    assert result.ok
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    run = spans["run traced"]
    assert run.parent is None and run.attributes["agent_etl.run_id"] == result.run_id
    assert run.attributes["agent_etl.status"] == "succeeded"
    for name in ("nums", "twice", "out"):
        task = spans[f"task {name}"]
        assert task.parent.span_id == run.context.span_id  # parented through the carried context
        assert task.context.trace_id == run.context.trace_id
        assert task.attributes["agent_etl.run_id"] == result.run_id and task.attributes["agent_etl.task"] == name
    assert spans["task out"].attributes["agent_etl.rows"] == 10
    commit = spans["commit out"]
    assert commit.parent.span_id == spans["task out"].context.span_id and commit.attributes["agent_etl.rows"] == 10
    run_hex = format(run.context.span_id, "016x")
    assert carried and all(t and run_hex in t["traceparent"] for t in carried)


async def test_a_failed_task_marks_its_span_and_the_run(make_pipeline, registry, tmp_path):
    from opentelemetry.trace import StatusCode

    EXPORTER.clear()
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        result = await c.run(make_pipeline(SPEC.replace("FAIL", "true")))
    assert result.exit_code == 1
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    assert spans["task out"].status.status_code == StatusCode.ERROR
    assert "destination refused" in spans["task out"].status.description
    assert spans["run traced"].status.status_code == StatusCode.ERROR


def test_without_opentelemetry_runs_work_and_nothing_imports_it(tmp_path):
    code = f"""
import sys
sys.modules["opentelemetry"] = None  # as if the extra were not installed: importing it fails
sys.path.insert(0, {str(tmp_path)!r})
import agent_etl
(__import__("pathlib").Path({str(tmp_path)!r}) / "d.csv").write_text("a\\n1\\n2\\n")
(__import__("pathlib").Path({str(tmp_path)!r}) / "p.yaml").write_text(
    "version: 1\\nname: plain\\nextract:\\n  d: {{tool: csv, path: d.csv}}\\nload:\\n  o: {{input: d, tool: parquet, path: o/}}\\n")
r = agent_etl.run({str(tmp_path / 'p.yaml')!r}, home={str(tmp_path / 'state')!r})
assert r.ok, r.error
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={
        **__import__("os").environ, "AGENT_ETL_MEMORY": "off"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_help_imports_no_observability_library():
    code = ("import sys; from typer.testing import CliRunner; from agent_etl.cli.app import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('opentelemetry', 'prometheus_client', 'aiohttp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.services("nats")
async def test_a_worker_s_task_spans_join_the_run_s_trace(make_pipeline, registry, tmp_path, monkeypatch):
    """Over NATS the branch goes to a worker (here in this process, on its own connection): its
    tasks' spans are children of the run's span through the context on BranchAssigned."""
    import uuid

    monkeypatch.setenv("AGENT_ETL_MEMORY", "off")  # spans only, as the other tests here

    from agent_etl.agents.worker import Worker
    from agent_etl.bus import open_bus

    url = f"nats://127.0.0.1:4222?namespace=test-{uuid.uuid4().hex[:10]}"
    EXPORTER.clear()
    worker = Worker(open_bus(url), registry=registry, interval=0.2)
    await worker.start()
    bus = open_bus(url)
    try:
        async with AgentCoordinator(bus=bus, registry=registry, home=tmp_path) as c:
            result = await c.run(make_pipeline(SPEC.replace("FAIL", "false")))
    finally:
        await worker.stop(finish=False)
        await worker.bus.close()
        await bus.destroy()
    assert result.ok, result.error
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    run = spans["run traced"]
    for name in ("nums", "twice", "out"):
        assert spans[f"task {name}"].parent.span_id == run.context.span_id
    assert result.tasks["out"].agent.startswith("etl@worker-")
