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

import asyncio
from typing import Any, Literal

import redis
from pydantic import Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from agent_etl.exceptions import ToolError
from agent_etl.tools.streams import redis_scripts
from agent_etl.tools.streams.decode import NDJSON
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

    def _deleted(self) -> ToolError:
        c = self.config
        return ToolError(f"extract {self.ctx.task!r}: redis stream {c.stream!r} or its group {c.group!r} was deleted "
                         "while reading")

    async def _open(self) -> None:
        c = self.config
        # the blocking client, called in a worker thread: its reply parser is about twice as fast as the
        # asyncio one's (a StreamReader call per line), and XREADGROUP replies are many small lines
        client = redis.Redis.from_url(c.server(self.ctx), decode_responses=False)
        # raw replies: [[id, [field, value, ...]], ...] without a dict per entry
        client.set_response_callback("XREADGROUP", lambda r, **kw: r)
        self.client = self.ctx.resources.get(("redis_stream", self.ctx.task, id(self)), lambda: client,
                                             lambda cl: cl.close())
        self.consumer = c.consumer or self.ctx.task
        self.key = c.stream.encode()
        self.name_field = c.field.encode()
        self.pending = b"0"  # this consumer's pending entries after this id; None once they are read
        self._ahead: asyncio.Future | None = None  # the next XREADGROUP, already sent
        # JSON payloads are read by a server script (redis_scripts.READ) unless scripts are refused
        self.scripts = c.format == "json"
        self.read_script = client.register_script(redis_scripts.READ)
        self.ack_script = client.register_script(redis_scripts.ACK_UPTO)
        self.decoder.split = self._payloads
        try:
            await asyncio.to_thread(self._setup, client)
        except _NET as e:
            raise unreachable(client, e) from None
        except ResponseError as e:
            if "WRONGTYPE" in str(e):
                raise ToolError(f"extract {self.ctx.task!r}: key {c.stream!r} on {where(client)} is not a stream") from None
            raise ToolError(f"extract {self.ctx.task!r}: redis stream {c.stream!r}: {e}") from None

    def _setup(self, client: Any) -> None:
        """Check the stream and the group; create the group if asked (blocking)."""
        c = self.config
        exists = client.exists(c.stream)
        info = {g["name"].decode(): g for g in client.xinfo_groups(c.stream)} if exists else {}
        groups = list(info)
        # new entries are those after the group's last delivered id (what a blocking wait waits after)
        self.delivered = info[c.group].get("last-delivered-id", b"0-0") if c.group in info else b"0-0"
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
                client.xgroup_create(c.stream, c.group, id="0" if c.start == "first" else "$", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):  # another reader created it just now
                    raise

    async def _read(self, count: int, wait: float) -> tuple[list[Any], list[Any], Any]:
        if count <= 0:
            return [], [], []
        if self.scripts:
            try:
                return await self._read_scripted(count, wait)
            except ResponseError as e:
                if "NOPERM" not in str(e) and "unknown command" not in str(e).lower():
                    raise ToolError(f"extract {self.ctx.task!r}: redis stream {self.config.stream!r}: {e}") from None
                self.scripts = False  # scripts are not allowed here: plain XREADGROUP
        return await self._read_entries(count, wait)

    async def _read_scripted(self, count: int, wait: float) -> tuple[list[Any], list[Any], Any]:
        """Up to ``count`` entries through the server script: the payloads come back as one NDJSON block."""
        c = self.config
        floor = self.committed["id"] if self.committed else ""
        start = self.pending if self.pending is not None else ">"
        args = [c.group, self.consumer, count, start, c.field, floor]
        try:
            if self._ahead is not None:
                ahead, self._ahead = self._ahead, None
                n, last, ids, data, bad = await ahead
            else:
                n, last, ids, data, bad = await asyncio.to_thread(self.read_script, keys=[c.stream], args=args)
            if n == count and self.pending is None and not floor and c.max_messages is None:
                # more are likely there: the server reads the next chunk while this one is decoded and
                # loaded (what is read ahead and never yielded stays pending: the next run reads it first)
                self._ahead = asyncio.ensure_future(asyncio.to_thread(self.read_script, keys=[c.stream], args=args))
            if not n and self.pending is None:
                # nothing new: wait for an entry after the last delivered one, then read it
                got = await asyncio.to_thread(self.client.execute_command, "XREAD", "COUNT", 1, "BLOCK",
                                              max(1, int(wait * 1000)), "STREAMS", c.stream, self.delivered)
                if got:
                    n, last, ids, data, bad = await asyncio.to_thread(self.read_script, keys=[c.stream], args=args)
        except _NET as e:
            raise unreachable(self.client, e) from None
        except ResponseError as e:
            if "NOGROUP" in str(e):
                raise self._deleted() from None
            raise
        if self.pending is not None:
            if not n:
                self.pending = None  # this consumer's pending entries are all read: new ones next
                return await self._read_scripted(count, wait)
            self.pending = last
        elif n:
            self.delivered = last
        if bad:
            await self._bad(bad)
        if not ids:
            return [], [], []
        id_list = ids.split(b" ")
        return [NDJSON(data)], id_list, [id_list[-1]]

    async def _bad(self, bad: list[bytes]) -> None:
        """Entries without the payload field: an error naming the first, or (``on_malformed: skip``) counted
        and acknowledged at once (they are never loaded)."""
        if self.config.on_malformed != "skip":
            raise ToolError(f"extract {self.ctx.task!r}: redis stream {self.config.stream!r}: entry "
                            f"{bad[0].decode()} has no field {self.config.field!r}; set field: to the field holding "
                            "the JSON payload, format: fields to read field/value maps, or on_malformed: skip")
        self.decoder.skipped += len(bad)
        await asyncio.to_thread(self.client.xack, self.config.stream, self.config.group, *bad)

    def _payloads(self, ids: list[Any]) -> list[bytes]:
        """The payloads of entries one by one (to name a malformed one in an NDJSON block; blocking, rare)."""
        out = []
        for i in ids:
            entry = self.client.xrange(self.config.stream, i, i)
            fields = entry[0][1] if entry else {}
            out.append(fields.get(self.config.field.encode(), b""))
        return out

    async def _read_entries(self, count: int, wait: float) -> tuple[list[Any], list[Any], Any]:
        """Up to ``count`` entries by plain XREADGROUP (format: fields, or where scripts are refused)."""
        c = self.config
        args = ["XREADGROUP", "GROUP", c.group, self.consumer, "COUNT", count]
        if self.pending is None:
            args += ["BLOCK", max(1, int(wait * 1000))]
        args += ["STREAMS", c.stream, self.pending if self.pending is not None else ">"]
        try:
            if self._ahead is not None:
                ahead, self._ahead = self._ahead, None
                reply = await ahead
            else:
                reply = await asyncio.to_thread(self.client.execute_command, *args)
        except _NET as e:
            raise unreachable(self.client, e) from None
        except ResponseError as e:
            if "NOGROUP" in str(e):
                raise self._deleted() from None
            raise ToolError(f"extract {self.ctx.task!r}: redis stream {c.stream!r}: {e}") from None
        # RESP3 gives {stream: entries}, RESP2 [[stream, entries]]
        entries = (next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]) if reply else []
        if self.pending is not None:
            if not entries:
                self.pending = None  # this consumer's pending entries are all read: new ones next
                return await self._read_entries(count, wait)
            self.pending = entries[-1][0]
        if not entries:
            return [], [], []
        if ">" in args and len(entries) == count and c.max_messages is None:
            # more are likely there: read the next chunk in the worker thread while this one is decoded
            # and loaded (what is read ahead and never yielded stays pending: the next run reads it first)
            self._ahead = asyncio.ensure_future(asyncio.to_thread(self.client.execute_command, *args))
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

    async def _close(self) -> None:
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            await asyncio.gather(ahead, return_exceptions=True)

    def _compact(self, tokens: Any) -> Any:
        return tokens[-1:] if self.scripts else tokens

    async def _ack(self, tokens: list[Any]) -> None:
        ids = [i for chunk in tokens for i in chunk]
        if self.scripts and ids:
            # this consumer's pending entries up to the last one: what it read up to there, in order
            c = self.config
            try:
                await asyncio.to_thread(self.ack_script, keys=[c.stream], args=[c.group, self.consumer, ids[-1]])
                return
            except _NET as e:
                raise unreachable(self.client, e) from None
            except ResponseError:
                self.scripts = False
                raise
        for start in range(0, len(ids), 50_000):
            try:
                await asyncio.to_thread(self.client.xack, self.config.stream, self.config.group,
                                        *ids[start:start + 50_000])
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
