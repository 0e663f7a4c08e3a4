"""The quality agent keeps what the gates found: each gated step's profile is in the run store by
the time the run returns (the ETL agent waits for the agent's reply); without a quality agent the
gates still run where the step runs, and only the history is not kept."""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.parquet as pq

from agent_etl import AgentCoordinator
from agent_etl.agents.etl import ETLAgent
from agent_etl.agents.quality import QualityAgent
from agent_etl.bus.memory import MemoryBus
from agent_etl.store.runs import RunStore

PIPE = """
version: 1
name: kept
extract:
  orders: {tool: parquet, path: orders.parquet}
quality:
  - input: orders
    on_failure: quarantine
    checks: [{range: {column: amount, min: 0}}]
load:
  out: {input: orders, tool: parquet, path: out.parquet}
"""


def write(tmp_path) -> None:
    (tmp_path / "p.yaml").write_text(PIPE)
    pq.write_table(pa.table({"id": list(range(6)), "amount": [1.0, -2.0, 3.0, 4.0, -5.0, 6.0]}),
                   tmp_path / "orders.parquet")


async def test_the_profile_is_kept_when_the_run_returns(tmp_path):
    write(tmp_path)
    async with AgentCoordinator(home=tmp_path / "home") as c:
        for _ in range(3):
            result = await c.run(tmp_path / "p.yaml")
            assert result.ok and result.tasks["orders"].details["quality"][0]["rows_quarantined"] == 2
            assert c.store.run_profiles(result.run_id)["orders"]["profile"]["rows"] == 6  # no drain, no wait
    assert len(RunStore.at(tmp_path / "home").profile_history("kept", "orders")) == 3


async def test_two_quality_agents_share_the_summaries(tmp_path):
    write(tmp_path)
    bus = MemoryBus()
    agents = [ETLAgent(bus), QualityAgent(bus), QualityAgent(bus)]
    async with AgentCoordinator(bus=bus, agents=agents, home=tmp_path / "home") as c:
        ids = [(await c.run(tmp_path / "p.yaml")).run_id for _ in range(2)]
        assert all(c.store.run_profiles(i)["orders"]["profile"]["rows"] == 6 for i in ids)
    await bus.close()


async def test_without_a_quality_agent_the_gates_still_run(tmp_path, caplog):
    write(tmp_path)
    bus = MemoryBus()
    with caplog.at_level(logging.WARNING, "agent_etl.etl"):
        async with AgentCoordinator(bus=bus, agents=[ETLAgent(bus)], home=tmp_path / "home") as c:
            result = await c.run(tmp_path / "p.yaml")
            assert result.ok and result.rows_loaded == 4
            assert c.store.run_profiles(result.run_id) == {}
    assert "no quality agent serves quality.checked; the profile of 'orders' is not kept" in caplog.text
    assert pq.read_table(tmp_path / "home" / "quarantine" / result.run_id / "orders.parquet").num_rows == 2
    await bus.close()
