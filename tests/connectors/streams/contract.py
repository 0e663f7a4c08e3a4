"""The redis_stream extractor's entry in the contract suites (tests/contract/backends.py): a unique
stream on the running Redis, one JSON entry per row, read through a consumer group it creates."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa

REDIS_URL = "redis://127.0.0.1:6379/0"


@contextlib.contextmanager
def redis_stream(place: Any) -> Iterator[None]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    place.data["redis"] = client
    try:
        yield
    finally:
        client.delete(place.name)
        client.close()


def redis_write(place: Any, table: pa.Table) -> dict[str, Any]:
    client = place.data["redis"]
    pipe = client.pipeline(transaction=False)
    for row in table.to_pylist():  # dates and timestamps: orjson writes them ISO 8601
        pipe.xadd(place.name, {"data": orjson.dumps(row)})
    pipe.execute()
    return {"url": REDIS_URL, "stream": place.name, "group": "contract", "create_group": True,
            "idle_seconds": 0.2, "batch_size": 500}


def redis_missing(place: Any) -> dict[str, Any]:
    return {"url": REDIS_URL, "stream": f"{place.name}_missing", "group": "contract", "idle_seconds": 0.2}


NATS_URL = "nats://127.0.0.1:4222"


def _nats_name(place: Any) -> str:
    return "AETL_" + "".join(c if c.isalnum() else "_" for c in place.name).upper()


@contextlib.contextmanager
def nats_stream(place: Any) -> Iterator[None]:
    from nats.js.api import StreamConfig

    from tests.connectors.streams.conftest import _nats, _run

    name = _nats_name(place)
    _run(_nats(lambda js: js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))))
    try:
        yield
    finally:
        _run(_nats(lambda js: js.delete_stream(name)))


def nats_write(place: Any, table: pa.Table) -> dict[str, Any]:
    from tests.connectors.streams.conftest import nats_fill

    name = _nats_name(place)
    nats_fill(name, [orjson.dumps(row) for row in table.to_pylist()])
    return {"url": NATS_URL, "stream": name, "durable": "contract", "idle_seconds": 0.2, "batch_size": 500}


def nats_missing(place: Any) -> dict[str, Any]:
    return {"url": NATS_URL, "stream": _nats_name(place) + "_MISSING", "durable": "contract", "idle_seconds": 0.2}


def redis_sink_options(place: Any) -> dict[str, Any]:
    return {"url": REDIS_URL, "stream": place.name}


def read_redis(place: Any) -> pa.Table:
    """The stream's entries as rows (a stream is always there to read: no entries is an empty table)."""
    rows = [orjson.loads(fields[b"data"]) for _, fields in place.data["redis"].xrange(place.name)]
    return pa.Table.from_pylist(rows) if rows else pa.table({})


def nats_sink_options(place: Any) -> dict[str, Any]:
    name = _nats_name(place)
    return {"url": NATS_URL, "stream": name, "subject": f"{name}.out"}


def read_nats(place: Any) -> pa.Table:
    """The stream's messages as rows, read by direct get in sequence order (no consumer left behind)."""
    from tests.connectors.streams.conftest import _nats, _run

    name = _nats_name(place)

    async def messages(js: Any) -> list[bytes]:
        last = (await js.stream_info(name)).state.last_seq
        return [(await js.get_msg(name, seq)).data for seq in range(1, last + 1)]

    rows = [orjson.loads(m) for m in _run(_nats(messages))]
    return pa.Table.from_pylist(rows) if rows else pa.table({})
