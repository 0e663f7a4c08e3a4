"""/metrics served while a run goes (``run --metrics-port``) and after it (``observe.metrics.serve``),
parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_etl import AgentCoordinator
from agent_etl.observe.metrics import serve

AGENT_ETL = os.path.join(os.path.dirname(sys.executable), "agent-etl")


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(metrics, name, **labels) -> float | None:
    return metrics.get(name, {}).get(tuple(sorted(labels.items())))


def test_run_serves_metrics_while_it_runs(gated, free_port):
    env = {**os.environ, "AGENT_ETL_HOME": str(gated / ".agent-etl"), "AGENT_ETL_MEMORY": "off"}
    proc = subprocess.Popen([AGENT_ETL, "run", "pipeline.yaml", "-q", "--metrics-port", str(free_port)], cwd=gated,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{free_port}/metrics"
    try:
        mid = None
        for _ in range(600):  # until the run is under way and its first batch went through
            try:
                m = scrape(url)
            except OSError:
                m = None
            if m and (value(m, "agent_etl_rows_total", pipeline="gated", task="nums", stage="extract") or 0) > 0 \
                    and value(m, "agent_etl_runs_in_progress", pipeline="gated") == 1:
                mid = m
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert mid is not None, "the endpoint never showed the run in progress"
        assert value(mid, "agent_etl_runs_total", pipeline="gated", status="succeeded") is None
        assert value(mid, "agent_etl_tasks_running") >= 1
        assert any(k for k in mid.get("agent_etl_agent_up", {}))  # the agents' heartbeats
        (gated / "go").write_text("")
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    finally:
        (gated / "go").write_text("")
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_metrics_after_a_run(gated, free_port):
    (gated / "go").write_text("")
    async with AgentCoordinator(home=gated / ".agent-etl") as c:
        with serve(c.monitor, free_port) as server:
            result = await c.run(gated / "pipeline.yaml")
            await c.bus.drain()
            m = scrape(server.url)
    assert result.ok
    assert value(m, "agent_etl_rows_total", pipeline="gated", task="nums", stage="extract") == 200
    assert value(m, "agent_etl_rows_total", pipeline="gated", task="out", stage="load") == 200
    assert value(m, "agent_etl_batches_total", pipeline="gated", task="held", stage="transform") == 4
    assert value(m, "agent_etl_bytes_total", pipeline="gated", task="nums", stage="extract") > 0
    assert value(m, "agent_etl_task_duration_seconds_count", pipeline="gated", task="out", stage="load") == 1
    assert value(m, "agent_etl_batch_duration_seconds_count", pipeline="gated", task="nums", stage="extract") == 4
    assert value(m, "agent_etl_batch_duration_seconds_bucket", pipeline="gated", task="nums", stage="extract",
                 le="+Inf") == 4
    assert value(m, "agent_etl_runs_total", pipeline="gated", status="succeeded") == 1
    assert value(m, "agent_etl_runs_in_progress", pipeline="gated") == 0
    assert value(m, "agent_etl_last_success_timestamp_seconds", pipeline="gated") > 0
    assert value(m, "agent_etl_commits_total", pipeline="gated", task="out") >= 1
    assert value(m, "agent_etl_tasks_total", pipeline="gated", status="succeeded") == 3
    labels = {k for series in m.values() for key in series for k, _ in key}
    assert "run_id" not in labels  # unbounded values never become labels


def test_a_busy_metrics_port_is_one_line(gated, free_port):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port))
        s.listen()
        env = {**os.environ, "AGENT_ETL_HOME": str(gated / ".agent-etl"), "AGENT_ETL_MEMORY": "off"}
        r = subprocess.run([AGENT_ETL, "run", "pipeline.yaml", "-q", "--metrics-port", str(free_port)], cwd=gated,
                           env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"cannot serve metrics on 127.0.0.1:{free_port}" in r.stderr


@pytest.mark.services("nats")
def test_a_worker_serves_the_metrics_of_its_own_work(gated, free_port):
    import uuid

    url = f"nats://127.0.0.1:4222?namespace=test-{uuid.uuid4().hex[:10]}"
    (gated / "go").write_text("")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AGENT_ETL_")},
           "AGENT_ETL_HOME": str(gated / ".agent-etl"), "AGENT_ETL_MEMORY": "off"}
    worker = subprocess.Popen([AGENT_ETL, "worker", "--bus", url, "--metrics-port", str(free_port)], cwd=gated,
                              env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = worker.stderr.readline()
        assert " ready on nats://" in line, line + worker.stderr.read()
        run = subprocess.run([AGENT_ETL, "run", "pipeline.yaml", "-q", "--bus", url], cwd=gated, env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        m = scrape(f"http://127.0.0.1:{free_port}/metrics")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        from agent_etl.bus import open_bus

        async def destroy():
            await open_bus(url).destroy()

        import asyncio

        asyncio.run(destroy())
    assert worker.returncode == 0
    assert value(m, "agent_etl_rows_total", pipeline="gated", task="nums", stage="extract") == 200
    assert value(m, "agent_etl_rows_total", pipeline="gated", task="out", stage="load") == 200
    assert value(m, "agent_etl_commits_total", pipeline="gated", task="out") >= 1
    assert "agent_etl_runs_total" not in m  # a run is counted by its coordinator's process


async def test_backpressure_is_the_time_a_step_waits_for_a_slower_one(make_pipeline, registry, tmp_path):
    from agent_etl.tools.base import Loader, ToolConfig

    class Slow(Loader):
        class Config(ToolConfig):
            pass

        async def load(self, batches):
            rows = 0
            async for b in batches:
                await asyncio.sleep(0.01)
                rows += b.num_rows
            await self.ctx.commit(rows)
            return rows

    registry.register("loader", "slow", Slow)
    text = """
version: 1
name: pressed
defaults: {queue_size: 1}
extract:
  nums: {tool: numbers, rows: 200, batch: 10}
load:
  out: {input: nums, tool: slow}
"""
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        assert (await c.run(make_pipeline(text))).ok
        await c.bus.drain()
        m = {}
        for family in text_string_to_metric_families(c.monitor.metrics_text()):
            for s in family.samples:
                m.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    assert value(m, "agent_etl_backpressure_seconds_total", pipeline="pressed", task="nums", stage="extract") > 0
    assert value(m, "agent_etl_backpressure_seconds_total", pipeline="pressed", task="out", stage="load") is None
