"""Continuous reads through the CLI: micro-batches commit as they come (each one a unit, acknowledged
after its commit), and SIGTERM or SIGINT stops the run after the current commit: exit 130, every
message read is in the destination, nothing is left unacknowledged."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.connectors.streams.conftest import NATS_URL, REDIS_URL, nats_consumer, nats_fill, popen, redis_fill
from tests.connectors.streams.conftest import redis_pending, rows


def spec(tool: str, stream: str) -> str:
    source = (f'url: "{REDIS_URL}", group: g, create_group: true' if tool == "redis_stream"
              else f'url: "{NATS_URL}", durable: d')
    return f"""version: 1
name: live_{stream.lower()}
connections:
  db: {{url: "sqlite:///out.db"}}
extract:
  src: {{tool: {tool}, {source}, stream: {stream}, mode: continuous, target_latency: 0.2}}
load:
  dst: {{input: src, tool: sqlite, connection: db, table: t}}
"""


def wait_for(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def landed(path: Path) -> int:
    try:
        return rows(path / "out.db")[0]
    except Exception:  # noqa: BLE001 - the table is created by the first commit
        return 0


@pytest.mark.parametrize("tool,sig", [("redis_stream", signal.SIGTERM), ("nats", signal.SIGTERM),
                                      ("redis_stream", signal.SIGINT)])
def test_continuous_read_commits_micro_batches_and_stops_cleanly(tmp_path: Path, tool: str, sig: int, request):
    stream = request.getfixturevalue("redis_stream" if tool == "redis_stream" else "nats_stream")
    fill = redis_fill if tool == "redis_stream" else nats_fill
    fill(stream, [{"id": i} for i in range(100)])
    (tmp_path / "p.yaml").write_text(spec(tool, stream))
    proc = popen(tmp_path, "run", "p.yaml", "-q")
    try:
        wait_for(lambda: landed(tmp_path) == 100)  # committed while the run goes on
        for k in range(1, 4):
            fill(stream, [{"id": k * 100 + i} for i in range(100)])
            wait_for(lambda: landed(tmp_path) == (k + 1) * 100)
        units = rows(tmp_path / "out.db", "SELECT count(*) FROM _agent_etl_checkpoints")[0]
        assert units >= 4  # a unit per micro-batch at least for each burst
        assert proc.poll() is None
        fill(stream, [{"id": 400 + i} for i in range(100)])
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopped" in err and "Traceback" not in err
    got = rows(tmp_path / "out.db")
    assert got[0] == got[1] and got[0] in (400, 500)  # the last burst is in, or left for the next run
    if tool == "redis_stream":
        assert redis_pending(stream, "g") == 0
    else:
        assert nats_consumer(stream, "d").num_ack_pending == 0
