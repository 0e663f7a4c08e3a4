"""Everything that goes on the bus is serialisable: each event of real runs (gates, quarantine,
anomalies, validate steps, heartbeats) and each event type round-trips through the JSON a
cross-process backend sends (``model_dump_json`` / ``parse_event``), unchanged."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agent_etl import AgentCoordinator
from agent_etl.events import EVENT_TYPES, AgentStalled, Event, parse_event
from agent_etl.run_context import RunDescription

PIPE = """
version: 1
name: orders_bus
extract:
  orders: {tool: parquet, path: orders.parquet}
transform:
  - {name: checked, input: orders, tool: validate, on_failure: quarantine, checks: [{not_null: [status]}]}
quality:
  - input: orders
    on_failure: quarantine
    checks:
      - range: {column: amount, min: 0}
      - anomaly: {min_history: 2, on_anomaly: warn, seasonality: none}
load:
  out: {input: checked, tool: parquet, path: out/orders.parquet}
"""


def day(path, seed: int, rows: int) -> None:
    rng = np.random.default_rng(seed)
    amount = rng.normal(100, 10, rows)
    amount[:3] = -1.0  # quarantined by the range check
    status = pa.array(rng.choice(["paid", "open"], rows), mask=np.arange(rows) == 5)  # by the validate step
    pq.write_table(pa.table({"id": np.arange(rows), "amount": amount, "status": status}), path / "orders.parquet")


def round_trip(ev: Event) -> Event:
    text = ev.model_dump_json()
    json.loads(text)  # plain JSON, nothing a non-Python reader could not parse
    return parse_event(ev.topic, text)


async def test_every_event_of_real_runs_round_trips_through_json(tmp_path):
    (tmp_path / "p.yaml").write_text(PIPE)
    seen: list[Event] = []

    async def keep(ev: Event) -> None:
        seen.append(ev)

    async with AgentCoordinator(home=tmp_path / "home") as c:
        await c.bus.subscribe("*", keep)
        for seed, rows in ((1, 2000), (2, 2020), (3, 1990), (4, 20_000)):  # the last one's volume is an anomaly
            day(tmp_path, seed, rows)
            result = await c.run(tmp_path / "p.yaml")
            assert result.ok, result.error
        await c.bus.drain()
    topics = {ev.topic for ev in seen}
    assert {"run.started", "task.assigned", "task.started", "task.completed", "batch.validated", "gate.checked",
            "anomaly.detected", "agent.heartbeat", "run.finished"} <= topics
    checked = [ev for ev in seen if ev.topic == "gate.checked"]
    assert checked[-1].report["rows_quarantined"] == 3 and checked[-1].report["quarantine_path"]
    assert checked[-1].profile and checked[-1].anomalies
    for ev in seen:
        back = round_trip(ev)
        if ev.topic == "run.started":  # the description crosses as its JSON; the ETL agent rebuilds it
            assert RunDescription.model_validate(back.description).model_dump() == ev.description.model_dump()
            back = back.model_copy(update={"description": ev.description})
        assert back == ev, ev.topic


def test_every_event_type_is_known_by_its_topic_and_round_trips():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    concrete = {cls for cls in subclasses(Event) if "topic" in vars(cls)}
    assert concrete == set(EVENT_TYPES.values())
    stalled = AgentStalled(agent="etl-1", silent_for=61.5, running=["r/t"])
    assert round_trip(stalled) == stalled
