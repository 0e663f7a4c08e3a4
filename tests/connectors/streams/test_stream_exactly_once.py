"""The key property of the stream sources: a run killed (SIGKILL) after the destinations committed a
unit and before the source acknowledged it, then run again, lands every message exactly once, in a
merge destination and in an append destination alike (the marks in their checkpoints say what was
committed; the messages delivered again at or before them are acknowledged and dropped).

The child process runs the pipeline through the real coordinator with the source's ``acknowledge``
ending the process on its second call (a subclass registered under the tool's name): the moment
between a commit and its ack, exactly. The second run is a plain ``agent-etl run``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.connectors.streams.conftest import NATS_URL, REDIS_URL, cli, nats_consumer, nats_fill, redis_fill
from tests.connectors.streams.conftest import redis_pending, rows

MESSAGES = 6000

CHILD = """\
import asyncio, os, sys
from agent_etl.agents.coordinator import AgentCoordinator
from agent_etl.tools.registry import default_registry

path, tool, die_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
registry = default_registry()
base = registry.get("extractor", tool)


class DiesBeforeAck(base):
    calls = 0

    async def acknowledge(self, position):
        DiesBeforeAck.calls += 1
        if DiesBeforeAck.calls >= die_at:
            os._exit(9)  # the destinations hold the unit; its messages are never acknowledged
        await super().acknowledge(position)


registry.register("extractor", tool, DiesBeforeAck)


async def main():
    async with AgentCoordinator(registry=registry, home=os.environ["AGENT_ETL_HOME"]) as c:
        await c.run(path)

asyncio.run(main())
"""


def spec(tool: str, stream: str) -> str:
    source = (f'url: "{REDIS_URL}", group: g, create_group: true' if tool == "redis_stream"
              else f'url: "{NATS_URL}", durable: d')
    return f"""version: 1
name: once_{stream.lower()}
connections:
  merged: {{url: "sqlite:///merged.db"}}
  appended: {{url: "sqlite:///appended.db"}}
extract:
  src: {{tool: {tool}, {source}, stream: {stream}, idle_seconds: 0.5, batch_size: 500}}
load:
  merged: {{input: src, tool: sqlite, connection: merged, table: t, mode: merge, key: [id], commit_every: {{rows: 1000}}}}
  appended: {{input: src, tool: sqlite, connection: appended, table: t, commit_every: {{rows: 1000}}}}
"""


@pytest.mark.parametrize("tool", ["redis_stream", "nats"])
def test_killed_between_commit_and_ack_lands_every_message_once(tmp_path: Path, tool: str, request):
    stream = request.getfixturevalue("redis_stream" if tool == "redis_stream" else "nats_stream")
    records = [{"id": i, "v": f"m{i}"} for i in range(MESSAGES)]
    redis_fill(stream, records) if tool == "redis_stream" else nats_fill(stream, records)
    (tmp_path / "p.yaml").write_text(spec(tool, stream))
    (tmp_path / "child.py").write_text(CHILD)
    import os

    env = {**os.environ, "AGENT_ETL_HOME": str(tmp_path / ".agent-etl")}
    child = subprocess.run([sys.executable, "child.py", "p.yaml", tool, "2"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 9, child.stderr
    # killed after the second unit landed in both destinations, before its ack
    landed = rows(tmp_path / "appended.db")
    assert landed[0] == landed[1] and 2000 <= landed[0] < MESSAGES
    assert rows(tmp_path / "merged.db") == landed
    # the first unit was acknowledged; the second is committed and still pending: it will be delivered again
    if tool == "redis_stream":
        assert redis_pending(stream, "g") >= landed[0] - 1000 > 0
    else:
        info = nats_consumer(stream, "d")
        assert info.num_ack_pending > 0 and info.ack_floor.stream_seq == 1000 < landed[0]

    again = cli(tmp_path, "run", "p.yaml")
    assert again.returncode == 0, again.stderr
    for db in ("merged.db", "appended.db"):
        assert rows(tmp_path / db) == (MESSAGES, MESSAGES), db  # nothing lost, nothing twice
        assert rows(tmp_path / db, "SELECT min(id), max(id), count(DISTINCT v) FROM t") == (0, MESSAGES - 1, MESSAGES)
    if tool == "redis_stream":
        assert redis_pending(stream, "g") == 0
    else:
        info = nats_consumer(stream, "d")
        assert info.num_ack_pending == 0 and info.ack_floor.stream_seq == MESSAGES
