"""Webhook alerts against a local aiohttp receiver: run failure, quality failure, stall (see
test_stall.py); retries; a webhook that never answers does not change the run's outcome."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from agent_etl import AgentCoordinator
from agent_etl.settings import Settings


class Receiver:
    def __init__(self, fail_first: int = 0, status: int = 500):
        self.got: list[dict] = []
        self.tries = 0
        self.fail_first, self.status = fail_first, status

    async def handle(self, request: web.Request) -> web.Response:
        self.tries += 1
        if self.tries <= self.fail_first:
            return web.Response(status=self.status)
        self.got.append({"body": await request.json(), "headers": dict(request.headers)})
        return web.Response(status=204)


@pytest.fixture
async def receiver():
    made = []

    async def start(**kw) -> tuple[Receiver, str]:
        r = Receiver(**kw)
        app = web.Application()
        app.router.add_post("/hook", r.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        made.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        return r, f"http://127.0.0.1:{port}/hook"

    yield start
    for runner in made:
        await runner.cleanup()


def spec(url: str, *, fail: bool = False, check: str = "", on: str = "") -> str:
    quality = f"""
quality:
  - input: nums
    checks:
      - {check}
    on_failure: fail
""" if check else ""
    return f"""
version: 1
name: alerting
defaults: {{retries: {{max_attempts: 1}}}}
extract:
  nums: {{tool: numbers, rows: 10, batch: 4}}
load:
  out: {{input: nums, tool: collect, key: out, fail: {str(fail).lower()}}}
{quality}
alerts:
  - webhook: {url}
    headers: {{X-Team: data}}
{on}
"""


async def test_run_failure_posts_an_alert(receiver, make_pipeline, registry, tmp_path):
    r, url = await receiver()
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        result = await c.run(make_pipeline(spec(url, fail=True)))
    assert result.exit_code == 1
    (alert,) = [g for g in r.got if g["body"]["alert"] == "run_failed"]
    body = alert["body"]
    assert body["pipeline"] == "alerting" and body["run_id"] == result.run_id and body["status"] == "failed"
    assert "destination refused" in body["message"] and body["failed_tasks"] == ["out"]
    assert alert["headers"]["X-Team"] == "data" and alert["headers"]["Content-Type"] == "application/json"


async def test_quality_failure_posts_the_failed_checks(receiver, make_pipeline, registry, tmp_path):
    r, url = await receiver()
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        result = await c.run(make_pipeline(spec(url, check="range: {column: id, max: 5}")))
    assert result.exit_code == 3
    kinds = sorted(g["body"]["alert"] for g in r.got)
    assert kinds == ["quality_failed", "run_failed"]
    (q,) = [g["body"] for g in r.got if g["body"]["alert"] == "quality_failed"]
    assert q["input"] == "nums" and q["run_id"] == result.run_id and q["pipeline"] == "alerting"
    # on_failure: fail stops at the first batch with a failing row (ids 6 and 7 of the second)
    assert q["failed_checks"] == [{"check": "range(id)", "failed_rows": 2, "message": q["failed_checks"][0]["message"]}]


async def test_alerts_only_for_the_kinds_asked(receiver, make_pipeline, registry, tmp_path):
    r, url = await receiver()
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        result = await c.run(make_pipeline(spec(url, check="range: {column: id, max: 5}", on="    on: [run_failed]")))
    assert result.exit_code == 3
    assert [g["body"]["alert"] for g in r.got] == ["run_failed"]


async def test_a_succeeding_run_sends_nothing(receiver, make_pipeline, registry, tmp_path):
    r, url = await receiver()
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        assert (await c.run(make_pipeline(spec(url)))).ok
    assert r.got == [] and r.tries == 0


async def test_a_failing_receiver_is_retried(receiver, make_pipeline, registry, tmp_path):
    r, url = await receiver(fail_first=2)
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        result = await c.run(make_pipeline(spec(url, fail=True)))
        c_monitor_alerts = c.monitor.alerts
    assert result.exit_code == 1
    assert r.tries == 3 and [g["body"]["alert"] for g in r.got] == ["run_failed"]
    assert c_monitor_alerts.sent == 1 and c_monitor_alerts.failed == 0


async def test_a_webhook_that_refuses_is_not_retried(receiver, make_pipeline, registry, tmp_path):
    r, url = await receiver(fail_first=5, status=400)
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        result = await c.run(make_pipeline(spec(url, fail=True)))
        alerts = c.monitor.alerts
    assert result.exit_code == 1 and r.tries == 1 and alerts.failed == 1


async def test_an_unreachable_webhook_never_fails_the_run(make_pipeline, registry, tmp_path, caplog):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://user:sekret@127.0.0.1:{port}/hook"
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        c.monitor.alerts.pause = 0.01
        ok = await c.run(make_pipeline(spec(url)))
        failed = await c.run(make_pipeline(spec(url, fail=True)))
        alerts = c.monitor.alerts
    assert ok.ok and failed.exit_code == 1  # the outcomes the runs would have had anyway
    assert alerts.failed == 1 and alerts.sent == 0
    assert "not delivered after 3 attempt(s)" in caplog.text
    assert "sekret" not in caplog.text  # the log names the host only


async def test_settings_webhook_gets_every_run(receiver, make_pipeline, registry, tmp_path):
    r, url = await receiver()
    text = spec("http://127.0.0.1:9/unused", fail=True).split("alerts:")[0]
    async with AgentCoordinator(registry=registry, settings=Settings(home=tmp_path, alert_webhook=url)) as c:
        result = await c.run(make_pipeline(text))
    assert result.exit_code == 1 and [g["body"]["alert"] for g in r.got] == ["run_failed"]
    await asyncio.sleep(0)


def test_an_alert_webhook_must_be_http(make_pipeline):
    from agent_etl.exceptions import SpecError

    with pytest.raises(SpecError) as e:
        make_pipeline(spec("file:///etc/passwd"))
    assert "webhook" in str(e.value)


async def test_an_anomaly_posts_an_alert(receiver, make_pipeline, registry, tmp_path):
    r, url = await receiver()

    def text(rows: int) -> str:
        return f"""
version: 1
name: drifting
extract:
  nums: {{tool: numbers, rows: {rows}, batch: 50}}
load:
  out: {{input: nums, tool: collect, key: out}}
quality:
  - input: nums
    checks:
      - anomaly: {{metrics: [row_count], min_history: 3, on_anomaly: warn}}
    on_failure: warn
alerts:
  - webhook: {url}
    on: [anomaly]
"""

    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        for rows in (100, 102, 98, 101):
            assert (await c.run(make_pipeline(text(rows)))).ok
        assert r.got == []
        result = await c.run(make_pipeline(text(5000)))
    assert result.ok  # warn: the run goes on, the alert goes out
    (alert,) = [g["body"] for g in r.got]
    assert alert["alert"] == "anomaly" and alert["run_id"] == result.run_id and alert["input"] == "nums"
    assert alert["pipeline"] == "drifting"
    assert [a["metric"] for a in alert["anomalies"]] == ["row_count"] and "row count is 5,000" in alert["message"]
