"""Reading a fleet file: every problem at once with its line, aliases normalised, the built-in
agent kept, renamed or dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_etl.agents.fleet import load_fleet, with_fleet
from agent_etl.exceptions import SpecError
from agent_etl.settings import Settings
from agent_etl.tools.registry import default_registry


def test_a_good_fleet_file(tmp_path: Path):
    path = tmp_path / "agents.yaml"
    path.write_text("agents:\n  - name: pg\n    capabilities: [source:postgres, transform, destination:parquet]\n"
                    "    limits: {concurrency: 2, memory_mb: 4096}\n    tags: [eu-west]\n")
    fleet = load_fleet(path, default_registry())
    (agent,) = fleet.agents
    assert agent.capabilities == {"extract:postgres", "transform", "load:parquet"}
    assert agent.limits == {"concurrency": 2.0, "memory_mb": 4096.0} and agent.tags == {"eu-west"}
    assert fleet.default_agent


def test_every_problem_with_its_line(tmp_path: Path):
    path = tmp_path / "agents.yaml"
    path.write_text("agents:\n"
                    "  - name: a\n    capabilities: [extract, fly]\n"            # line 3
                    "  - name: a\n    capabilities: [load]\n    limits: {cpus: 2}\n"  # lines 4-6
                    "  - name: default\n    capabilities: []\n"                     # lines 7-8
                    "colour: blue\n")                                               # line 9
    with pytest.raises(SpecError) as e:
        load_fleet(path, default_registry())
    text = str(e.value)
    assert "line 3" in text and "unknown capability 'fly'" in text
    assert "agent name 'a' is used twice" in text and "unknown limit 'cpus'" in text
    assert "'default' is the built-in agent's name" in text and "needs a list of capabilities" in text
    assert "line 9" in text and "unknown key 'colour'" in text
    assert e.value.exit_code == 2


async def test_the_built_in_agent_beside_the_fleet(tmp_path: Path):
    from agent_etl.agents.etl import ETLAgent
    from agent_etl.bus.memory import MemoryBus

    path = tmp_path / "agents.yaml"
    bus = MemoryBus()
    path.write_text("agents:\n  - name: near\n    capabilities: [extract:csv, load:parquet]\n")
    agents = with_fleet([ETLAgent(bus)], Settings(fleet=path), None, {}, 5.0)
    assert [a.id for a in agents] == ["near", "default"]
    assert agents[0].can_run("extract", "csv") and not agents[0].can_run("extract", "postgres")
    path.write_text("default_agent: false\nagents:\n  - name: near\n    capabilities: [extract, load]\n")
    assert [a.id for a in with_fleet([ETLAgent(bus)], Settings(fleet=path), None, {}, 5.0)] == ["near"]
