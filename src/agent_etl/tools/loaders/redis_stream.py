"""Redis Streams sink (``tool: redis_stream``): each row one entry, added by pipelined ``XADD``.

Options (``streams.options.SinkOptions``, and): ``field`` (default ``data``): the entry field that
holds the row as a JSON object; ``format: fields`` makes each column a field instead (values as
text, nulls left out); ``maxlen: N`` trims the stream to about N entries as it adds (``MAXLEN ~``);
``create: false`` refuses to create a stream that does not exist (``NOMKSTREAM``).

Entries are written as batches arrive, ``batch_size`` (at most 10,000) per round trip, from a worker
thread: one ``EVALSHA`` of a small Lua script that runs the ``XADD`` of each payload in the server, so
the client sends one command per batch and reads one reply (about 3x the entries per second of
pipelined ``XADD``, whose per-command packing and reply parsing is Python), and each such batch lands
whole or not at all. Where scripts are not allowed (ACL ``NOPERM``, a proxy without ``EVALSHA``), and
for ``format: fields``, entries go by pipelined ``XADD``. Entries are visible to readers at once: a
stream has no transaction to hold them back across batches. A commit unit (``commit_every``; the load takes units) is the
entries written since the last one; its checkpoint is kept by the run store. If the run fails or dies,
what was written stays, and a resume or retry goes on after the last committed unit, so the entries of
the unit under way may be written twice: at-least-once. Give the rows a key and dedupe downstream
(or read with ``id_column``) where that matters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import redis
from pydantic import Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from agent_etl.exceptions import ToolError
from agent_etl.tools.base import Loader
from agent_etl.tools.streams.encode import Encoder
from agent_etl.tools.streams.options import SinkOptions
from agent_etl.tools.streams.redis_errors import unreachable

_NET = (RedisConnectionError, RedisTimeout, OSError)
# XADD of every payload: KEYS[1] the stream, ARGV[1] the field, ARGV[2] MAXLEN ('' for none), then payloads
ADD_ALL = """
local f, m = ARGV[1], ARGV[2]
for i = 3, #ARGV do
  if m == '' then redis.call('XADD', KEYS[1], '*', f, ARGV[i])
  else redis.call('XADD', KEYS[1], 'MAXLEN', '~', m, '*', f, ARGV[i]) end
end
return #ARGV - 2
"""


class RedisStreamLoader(Loader):
    """Add rows to a Redis stream, one server-side script call per batch of XADDs (at-least-once)."""

    class Config(SinkOptions):
        field: str = Field("data", min_length=1, description="the entry field holding the row as JSON")
        format: Literal["json", "fields"] = Field(
            "json", description="json: the row as one JSON object in `field`; fields: a field per column")
        maxlen: int | None = Field(None, ge=1, description="trim the stream to about this many entries (MAXLEN ~)")
        create: bool = Field(True, description="create the stream if it does not exist")

    def takes_units(self) -> bool:
        return True

    async def load(self, batches: AsyncIterator[pa.RecordBatch]) -> int:
        c = self.config
        client = redis.Redis.from_url(c.server(self.ctx), decode_responses=False)
        encoder = Encoder(f"load {self.ctx.task!r} (redis stream {c.stream!r})")
        head = ["XADD", c.stream] + (["NOMKSTREAM"] if not c.create else []) + (
            ["MAXLEN", "~", c.maxlen] if c.maxlen else []) + ["*"]
        rows = unit = 0
        self.script = client.register_script(ADD_ALL) if c.format == "json" else None
        try:
            await asyncio.to_thread(self._ping, client)
            async for batch in batches:
                step = min(c.batch_size, 10_000)
                for start in range(0, batch.num_rows, step):
                    part = batch.slice(start, step)
                    await asyncio.to_thread(self._write, client, encoder, head, part)
                rows += batch.num_rows
                unit += batch.num_rows
                if self.ctx.commit_due():
                    await self.ctx.end_unit(unit)
                    unit = 0
            await self.ctx.end_unit(unit, final=True)
        finally:
            encoder.close()
            client.close()
        return rows

    def _ping(self, client: Any) -> None:
        try:
            client.ping()
            if not self.config.create and not client.exists(self.config.stream):
                raise ToolError(f"load {self.ctx.task!r}: redis stream {self.config.stream!r} does not exist and "
                                "create: false; create it, or set create: true")
        except _NET as e:
            raise unreachable(client, e) from None

    def _write(self, client: Any, encoder: Encoder, head: list[Any], batch: pa.RecordBatch) -> None:
        c = self.config
        if self.script is not None:
            payloads = encoder.payloads(batch)
            try:
                self.script(keys=[c.stream], args=[c.field, c.maxlen or "", *payloads], client=client)
                return
            except _NET as e:
                raise unreachable(client, e) from None
            except ResponseError as e:
                if "NOPERM" not in str(e) and "unknown command" not in str(e).lower():
                    raise ToolError(f"load {self.ctx.task!r}: redis stream {c.stream!r}: Redis refused XADD: "
                                    f"{e}") from None
                self.script = None  # scripts are not allowed here: pipelined XADD instead
            return self._pipelined(client, head, [[c.field, p] for p in payloads])
        self._pipelined(client, head, _field_lists(batch))

    def _pipelined(self, client: Any, head: list[Any], entries: list[list[Any]]) -> None:
        c = self.config
        pipe = client.pipeline(transaction=False)
        for fields in entries:
            pipe.execute_command(*head, *fields)
        try:
            replies = pipe.execute(raise_on_error=False)
        except _NET as e:
            raise unreachable(client, e) from None
        for r in replies:
            if isinstance(r, ResponseError):
                raise ToolError(f"load {self.ctx.task!r}: redis stream {c.stream!r}: Redis refused XADD: {r}")
            if r is None:  # NOMKSTREAM and no stream
                raise ToolError(f"load {self.ctx.task!r}: redis stream {c.stream!r} does not exist and create: "
                                "false; create it, or set create: true")


def _field_lists(batch: pa.RecordBatch) -> list[list[Any]]:
    """Each row as [field, value, ...] (values as text; nulls left out)."""
    names = batch.schema.names
    columns = [pc.cast(col, pa.string()).to_pylist() for col in batch.columns]
    out = []
    for values in zip(*columns):
        row: list[Any] = []
        for name, v in zip(names, values):
            if v is not None:
                row += (name, v)
        out.append(row or [names[0] if names else "_", ""])
    return out
