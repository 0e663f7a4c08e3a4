"""Redis Streams source (``tool: redis_stream``): a consumer group read with ``XREADGROUP``, messages
acknowledged (``XACK``) only after every load below committed them.

Options (``streams.options.SourceOptions``, and): ``group`` (the consumer group), ``consumer`` (this
reader's name in it; default the task name, so a run after a crash reads the entries the crashed one
left pending), ``create_group: true`` to create the group (and the stream, ``MKSTREAM``) when missing,
at ``start: first`` (the whole stream, the default) or ``new`` (only entries added later), and
``field`` (default ``data``): the entry field whose value is the JSON payload; ``format: fields``
makes each entry's field/value map the record instead.

The read takes this consumer's pending entries first (``XREADGROUP ... 0``: delivered to it before but
never acknowledged, e.g. by a run that died), then new ones (``>``). Each batch's position carries the
last entry id as its ``mark``; at the start, entries at or before the mark the destinations hold are
acknowledged and left out (they were committed, then the run died before its ``XACK``). Entries of the
group pending on other consumer names are not claimed.
"""

from __future__ import annotations

from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from agent_etl.exceptions import ToolError
from agent_etl.tools.streams.marks import entry_order
from agent_etl.tools.streams.options import SourceOptions
from agent_etl.tools.streams.redis_errors import unreachable, where
from agent_etl.tools.streams.source import StreamExtractor

_NET = (RedisConnectionError, RedisTimeout, OSError)


class RedisStreamExtractor(StreamExtractor):
    """Read a Redis stream through a consumer group; acknowledge after the destinations commit."""

    what = "redis stream"

    class Config(SourceOptions):
        group: str = Field(min_length=1, description="the consumer group")
        consumer: str | None = Field(None, description="this reader's name in the group (default: the task name)")
        create_group: bool = Field(False, description="create the group (and the stream) if missing")
        start: Literal["first", "new"] = Field("first", description="where a created group starts")
        field: str = Field("data", min_length=1, description="the entry field holding the JSON payload")

    async def _open(self) -> None:
        c = self.config
        client = aioredis.from_url(c.server(self.ctx), decode_responses=False)
        # raw replies: [[id, [field, value, ...]], ...] without a dict per entry
        client.set_response_callback("XREADGROUP", lambda r, **kw: r)
        self.client = self.ctx.resources.get(("redis_stream", self.ctx.task, id(self)), lambda: client,
                                             lambda cl: cl.aclose())
        self.consumer = c.consumer or self.ctx.task
        self.key = c.stream.encode()
        self.name_field = c.field.encode()
        self.pending = b"0"  # this consumer's pending entries after this id; None once they are read
        try:
            exists = await client.exists(c.stream)
            groups = [g["name"].decode() for g in await client.xinfo_groups(c.stream)] if exists else []
            if c.group not in groups:
                if not c.create_group:
                    if not exists:
                        raise ToolError(f"extract {self.ctx.task!r}: redis stream {c.stream!r} does not exist on "
                                        f"{where(client)}; check the name, or set create_group: true to create it "
                                        "with the group")
                    raise ToolError(f"extract {self.ctx.task!r}: redis stream {c.stream!r} has no consumer group "
                                    f"{c.group!r} (groups: {', '.join(groups) or 'none'}); set create_group: true "
                                    "to create it")
                try:
                    await client.xgroup_create(c.stream, c.group, id="0" if c.start == "first" else "$",
                                               mkstream=True)
                except ResponseError as e:
                    if "BUSYGROUP" not in str(e):  # another reader created it just now
                        raise
        except _NET as e:
            raise unreachable(client, e) from None
        except ResponseError as e:
            if "WRONGTYPE" in str(e):
                raise ToolError(f"extract {self.ctx.task!r}: key {c.stream!r} on {where(client)} is not a stream") from None
            raise ToolError(f"extract {self.ctx.task!r}: redis stream {c.stream!r}: {e}") from None

    async def _read(self, count: int, wait: float) -> tuple[list[Any], list[Any], Any]:
        if count <= 0:
            return [], [], []
        c = self.config
        args = ["XREADGROUP", "GROUP", c.group, self.consumer, "COUNT", count]
        if self.pending is None:
            args += ["BLOCK", max(1, int(wait * 1000))]
        args += ["STREAMS", c.stream, self.pending if self.pending is not None else ">"]
        try:
            reply = await self.client.execute_command(*args)
        except _NET as e:
            raise unreachable(self.client, e) from None
        except ResponseError as e:
            if "NOGROUP" in str(e):
                raise ToolError(f"extract {self.ctx.task!r}: redis stream {c.stream!r} or its group {c.group!r} was "
                                "deleted while reading") from None
            raise ToolError(f"extract {self.ctx.task!r}: redis stream {c.stream!r}: {e}") from None
        # RESP3 gives {stream: entries}, RESP2 [[stream, entries]]
        entries = (next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]) if reply else []
        if self.pending is not None:
            if not entries:
                self.pending = None  # this consumer's pending entries are all read: new ones next
                return await self._read(count, wait)
            self.pending = entries[-1][0]
        if not entries:
            return [], [], []
        ids = [e[0] for e in entries]
        if c.format == "fields":
            return [_pairs(f) for _, f in entries], ids, ids
        name = self.name_field
        try:
            payloads = [f[1] if f[0] == name else _value(f, name) for _, f in entries]
        except (LookupError, TypeError):
            payloads = [_value(f, name) for _, f in entries]
        bad = [i for i, p in enumerate(payloads) if p is None] if None in payloads else []
        if bad:
            return self._without(payloads, ids, [i for i in bad if entries[i][1]])
        return payloads, ids, ids

    def _without(self, payloads: list[Any], ids: list[Any], bad: list[int]) -> tuple[list[Any], list[Any], Any]:
        """Entries without the payload field (``bad``: an error naming the first, or skipped with
        ``on_malformed: skip``), or trimmed from the stream while pending (skipped); all are acknowledged
        with their batch."""
        if bad and self.config.on_malformed != "skip":
            first = ids[bad[0]].decode()
            raise ToolError(f"extract {self.ctx.task!r}: redis stream {self.config.stream!r}: entry {first} has no "
                            f"field {self.config.field!r}; set field: to the field holding the JSON payload, "
                            "format: fields to read field/value maps, or on_malformed: skip")
        self.decoder.skipped += len(bad)
        keep = [i for i in range(len(ids)) if payloads[i] is not None]
        if not keep:  # nothing to yield: acknowledge them at once
            self._unacked.append((self._order(ids[-1]), [ids]))
            return [], [], []
        return [payloads[i] for i in keep], [ids[i] for i in keep], ids

    def _tokens(self, tokens: Any, keep: slice) -> Any:
        return tokens[keep]

    async def _ack(self, tokens: list[Any]) -> None:
        ids = [i for chunk in tokens for i in chunk]
        for start in range(0, len(ids), 50_000):
            try:
                await self.client.xack(self.config.stream, self.config.group, *ids[start:start + 50_000])
            except _NET as e:
                raise unreachable(self.client, e) from None

    def _mark(self, last_id: Any) -> dict[str, Any]:
        return {"stream": self.config.stream, "id": last_id.decode()}

    def _order(self, message_id: Any) -> tuple[int, int]:
        return entry_order(message_id.decode() if isinstance(message_id, bytes) else message_id)


def _value(fields: Any, name: bytes) -> Any:
    if not fields:
        return None
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == name:
            return fields[i + 1]
    return None


def _pairs(fields: Any) -> dict[bytes, bytes]:
    return dict(zip(fields[::2], fields[1::2])) if fields else {}
