"""Fixtures of the stream connector tests: the Redis and NATS servers running on the machine, a unique
stream name per test (deleted afterwards), and helpers to fill a stream and read back a destination."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.cli.conftest import AGENT_ETL

REDIS_URL = "redis://127.0.0.1:6379/0"
NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
def redis_stream():
    """A unique Redis stream name; the key is deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    name = f"aetl_test_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        client.delete(name)
        client.close()


def redis_fill(stream: str, records: list[dict], field: str = "data") -> list[str]:
    """Add ``records`` as JSON entries; their ids."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    pipe = client.pipeline(transaction=False)
    for r in records:
        pipe.xadd(stream, {field: json.dumps(r)})
    ids = [i.decode() for i in pipe.execute()]
    client.close()
    return ids


def redis_pending(stream: str, group: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(client.xpending(stream, group)["pending"])
    finally:
        client.close()


@pytest.fixture
def nats_stream():
    """A unique JetStream stream (subjects ``<name>.>``), deleted afterwards."""
    from nats.js.api import StreamConfig

    name = f"AETL_{uuid.uuid4().hex[:10].upper()}"
    _run(_nats(lambda js: js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))))
    try:
        yield name
    finally:
        _run(_nats(lambda js: js.delete_stream(name)))


def _run(coro):
    """Run ``coro`` to its end from sync or async test code (a thread of its own: a test's loop may be running)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _nats(call):
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        return await call(nc.jetstream())
    finally:
        await nc.close()


def nats_fill(stream: str, records: list[dict | bytes], subject: str | None = None) -> None:
    async def fill(js):
        for r in records:
            await js.publish(subject or f"{stream}.in", r if isinstance(r, bytes) else json.dumps(r).encode())

    _run(_nats(fill))


def nats_consumer(stream: str, durable: str):
    return _run(_nats(lambda js: js.consumer_info(stream, durable)))


def nats_messages(stream: str) -> int:
    return _run(_nats(lambda js: js.stream_info(stream))).state.messages


def rows(db: Path, query: str = "SELECT count(*), count(DISTINCT id) FROM t") -> tuple:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchone()


def cli(path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENT_ETL_HOME": str(path / ".agent-etl")}
    return subprocess.run([AGENT_ETL, *args], cwd=path, env=env, capture_output=True, text=True, timeout=timeout)


def popen(path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "AGENT_ETL_HOME": str(path / ".agent-etl")}
    return subprocess.Popen([AGENT_ETL, *args], cwd=path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
