"""NATS JetStream source (``tool: nats``): a durable pull consumer, acknowledged after commit.

Options (``streams.options.SourceOptions``, and): ``durable`` (the consumer's name; created if it does
not exist), ``subject`` (a filter within the stream, default all of it), ``start: first|new`` (where a
new consumer starts), ``ack_wait`` (seconds the server waits for an ack before it delivers a message
again; default 300) and ``max_ack_pending`` (default -1, no limit: the read asks for more messages only
as the pipeline takes them, so what is unacknowledged is bounded by the queues and the commit unit; a
limit below that would stall the read until a commit).

The consumer acknowledges with ``AckAll``: one ``+ACK`` of a batch's last message, sent as a request so
the server has it when it returns, covers every message before it. Messages are pulled by requests of
``batch_size`` sent straight to ``$JS.API.CONSUMER.MSG.NEXT`` and received by one subscription callback,
which is about five times faster than nats-py's ``fetch`` (one ``wait_for`` per message).

Each batch's position carries the last stream sequence as its ``mark``. At the start, when the
consumer holds unacknowledged messages (a run died before its ack), it is created again at the mark
the destinations hold (or its ack floor), so those messages come at once rather than after
``ack_wait``, and none committed is delivered twice. Messages the server delivers again during a
read (``ack_wait`` passed before their commit) are dropped by their sequence.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import Field

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.tools.streams.marks import order
from agent_etl.tools.streams.nats_connect import connect, where
from agent_etl.tools.streams.nats_wire import Wire, supported
from agent_etl.tools.streams.options import SourceOptions
from agent_etl.tools.streams.source import StreamExtractor


class NatsExtractor(StreamExtractor):
    """Read a NATS JetStream stream through a durable pull consumer; acknowledge after the destinations commit."""

    what = "nats stream"

    class Config(SourceOptions):
        durable: str = Field(min_length=1, pattern=r"^[^.*>\s]+$", description="the durable consumer's name")
        subject: str | None = Field(None, description="only messages of this subject (wildcards allowed)")
        start: Literal["first", "new"] = Field("first", description="where a new consumer starts")
        ack_wait: float = Field(300.0, gt=0, description="seconds before an unacknowledged message is sent again")
        max_ack_pending: int = Field(-1, description="unacknowledged messages the server allows (-1: no limit)")

    async def _open(self) -> None:
        c = self.config
        url = c.server(self.ctx)
        nc = await connect(url)
        self.nc = self.ctx.resources.get(("nats", self.ctx.task, id(self)), lambda: nc, lambda n: n.close())
        self.last = 0  # the last sequence taken: a message delivered again during the read is dropped
        self.buf: list[Any] = []
        self.arrived = asyncio.Event()
        self.open_request = False  # a pull request is out and not answered in full
        self.asked = 0
        self.failure: str | None = None
        js = nc.jetstream()
        try:
            await js.stream_info(c.stream)
        except nats.js.errors.NotFoundError:
            raise ToolError(f"extract {self.ctx.task!r}: nats stream {c.stream!r} does not exist on {where(url)}; "
                            "check the name, or create it (nats stream add)") from None
        except (nats.errors.Error, OSError) as e:
            raise TransientError(f"extract {self.ctx.task!r}: NATS at {where(url)}: {type(e).__name__}: {e}; is "
                                 "JetStream enabled (nats-server -js)?") from None
        await self._consumer(js)
        self.inbox = nc.new_inbox()
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{c.stream}.{c.durable}"
        self.wire: Wire | None = None
        if supported(url):  # messages come over a connection of our own, parsed in bulk
            wire = Wire()
            try:
                await wire.open(url, self.inbox)
            except (OSError, TimeoutError) as e:
                await wire.close()
                raise TransientError(f"extract {self.ctx.task!r}: NATS at {where(url)}: {e}") from None
            self.wire = self.ctx.resources.get(("nats-wire", self.ctx.task, id(self)), lambda: wire,
                                               lambda w: w.close())
            self.raw: list[Any] = []
            self.outstanding = 0  # messages asked for by pull requests and not yet received or expired
        else:
            self.sub = await nc.subscribe(self.inbox, cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1)

    async def _consumer(self, js: Any) -> None:
        """The durable consumer, created if missing, and again where a dead run left messages unacknowledged."""
        c = self.config
        try:
            info = await js.consumer_info(c.stream, c.durable)
        except nats.js.errors.NotFoundError:
            info = None
        if info is not None:
            if info.config.deliver_subject:
                raise ToolError(f"extract {self.ctx.task!r}: consumer {c.durable!r} of nats stream {c.stream!r} is a "
                                "push consumer; name another durable (a pull consumer is created for it)")
            if info.config.ack_policy != AckPolicy.ALL:
                raise ToolError(f"extract {self.ctx.task!r}: consumer {c.durable!r} of nats stream {c.stream!r} has "
                                f"ack_policy {info.config.ack_policy}, and agent-etl acknowledges with AckAll; name "
                                "another durable, or delete this one (nats consumer rm)")
            if not info.num_ack_pending:
                return
            # a run died with messages delivered and not acknowledged: start again right after what the
            # destinations hold, rather than wait ack_wait for them
            floor = max(info.ack_floor.stream_seq if info.ack_floor else 0, order(self.committed)[0])
            await js.delete_consumer(c.stream, c.durable)
            await self._create(js, floor + 1)
            return
        await self._create(js, order(self.committed)[0] + 1 if self.committed else None)

    async def _create(self, js: Any, start: int | None) -> None:
        c = self.config
        if start is not None:
            policy = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start}
        else:
            policy = {"deliver_policy": DeliverPolicy.ALL if c.start == "first" else DeliverPolicy.NEW}
        await js.add_consumer(c.stream, ConsumerConfig(
            durable_name=c.durable, ack_policy=AckPolicy.ALL, ack_wait=c.ack_wait, max_ack_pending=c.max_ack_pending,
            filter_subject=c.subject, max_waiting=16, **policy))

    async def _on_msg(self, msg: Any) -> None:
        headers = msg.headers
        if headers and "Status" in headers:
            status = headers.get("Status")
            if status in ("404", "408"):  # no messages / the request expired
                self.open_request = False
            elif status != "100":
                self.open_request = False
                self.failure = f"{status} {headers.get('Description', '')}".strip()
            self.arrived.set()
            return
        self.buf.append(msg)
        if len(self.buf) >= self.asked:
            self.open_request = False
            self.arrived.set()

    async def _read(self, count: int, wait: float) -> tuple[list[Any], list[Any], Any]:
        if count <= 0:
            return [], [], []
        if self.wire is not None:
            return await self._read_wire(count, wait)
        if not self.buf and not self.open_request:
            self.asked = count
            self.open_request = True
            self.arrived.clear()
            request = {"batch": count, "expires": int(wait * 1e9)}
            await self.nc.publish(self.next_subject, json.dumps(request).encode(), reply=self.inbox)
        if self.open_request and len(self.buf) < count:
            try:
                await asyncio.wait_for(self.arrived.wait(), wait + 1.0)
            except TimeoutError:
                self.open_request = False  # the request is lost (no answer): ask again
        if self.failure is not None:
            raise ToolError(f"extract {self.ctx.task!r}: nats stream {self.config.stream!r}, consumer "
                            f"{self.config.durable!r}: the server answered {self.failure}")
        msgs, self.buf = self.buf[:count], self.buf[count:]
        if not msgs:
            return [], [], []
        return self._taken([m.data for m in msgs], [_sequence(m.reply) for m in msgs], [m.reply for m in msgs])

    async def _read_wire(self, count: int, wait: float) -> tuple[list[Any], list[Any], Any]:
        wire = self.wire
        # keep pull requests out for the next batch too (two in flight), so the server sends the next
        # messages while this batch is decoded and loaded; not with a message budget, which asks exactly
        ahead = count if self.config.max_messages is None else 0
        if len(self.buf) + self.outstanding < count + ahead:
            want = count + ahead - len(self.buf) - self.outstanding
            self.outstanding += want
            wire.publish(self.next_subject, json.dumps({"batch": want, "expires": int(wait * 1e9)}).encode(),
                         self.inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait + 1.0
        try:
            while self.outstanding > 0 and len(self.buf) < count:
                raw = self.raw
                wire.messages(raw)
                if raw:
                    data = [m for m in raw if m[0] is not None]
                    if len(data) != len(raw):
                        self._statuses([m for m in raw if m[0] is None])
                    self.buf += data
                    self.outstanding = max(0, self.outstanding - len(data))
                    raw.clear()
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    self.outstanding = 0  # the requests are lost (no answer): ask again
                    break
                await wire.receive(left)
        except (OSError, ConnectionError) as e:
            raise TransientError(f"extract {self.ctx.task!r}: NATS connection lost: {e}") from None
        if self.failure is not None:
            raise ToolError(f"extract {self.ctx.task!r}: nats stream {self.config.stream!r}, consumer "
                            f"{self.config.durable!r}: the server answered {self.failure}")
        msgs, self.buf = self.buf[:count], self.buf[count:]
        if not msgs:
            return [], [], []
        return self._taken([m[1] for m in msgs], [m[3] or _sequence(m[0]) for m in msgs], [m[0] for m in msgs])

    def _taken(self, data: list[Any], seqs: list[int], replies: list[Any]) -> tuple[list[Any], list[Any], Any]:
        """The messages of one read past the last one taken, in stream order: a message delivered
        again during the read (an ack_wait ran out) is dropped, as the destination has it already."""
        if seqs[0] <= self.last or any(b <= a for a, b in zip(seqs, seqs[1:])):
            keep, top = [], self.last
            for i, seq in enumerate(seqs):
                if seq > top:
                    keep.append(i)
                    top = seq
            if not keep:
                return [], [], []
            data, seqs, replies = [data[i] for i in keep], [seqs[i] for i in keep], [replies[i] for i in keep]
        self.last = seqs[-1]
        return data, seqs, replies

    def _statuses(self, statuses: list[Any]) -> None:
        """Status messages of pull requests (no reply subject): 408 (expired) says how many of the request
        will not come (``Nats-Pending-Messages``); 404 (no messages) ends it; others are failures."""
        for _, _, headers, _ in statuses:
            lines = (headers or b"").split(b"\r\n")
            line = lines[0].decode(errors="replace")  # NATS/1.0 408 Request Timeout
            code = line[9:12]
            if code == "408":
                pending = [x for x in lines if x.lower().startswith(b"nats-pending-messages:")]
                self.outstanding = max(0, self.outstanding - int(pending[0].split(b":")[1]) if pending else 0)
            elif code == "404":
                self.outstanding = 0
            elif code != "100":
                self.outstanding = 0
                self.failure = line[9:].strip()

    def _compact(self, tokens: Any) -> Any:
        return tokens[-1:]  # AckAll: the last message acknowledges the rest

    async def _ack(self, tokens: list[Any]) -> None:
        replies = [r for chunk in tokens for r in chunk[-1:]]
        if not replies:
            return
        reply = replies[-1]
        try:
            await self.nc.request(reply.decode() if isinstance(reply, bytes) else reply, b"+ACK", timeout=10)
        except (nats.errors.Error, OSError) as e:
            raise TransientError(f"nats stream {self.config.stream!r}: the ack was not confirmed: {e}") from None

    def _mark(self, last_id: Any) -> dict[str, Any]:
        return {"stream": self.config.stream, "seq": int(last_id)}

    def _order(self, message_id: Any) -> tuple[int, int]:
        return (int(message_id), 0)


def _sequence(reply: str) -> int:
    """The stream sequence in a JetStream ack subject ($JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...,
    or the form with domain and account hash, two tokens longer)."""
    tokens = reply.split(b"." if isinstance(reply, bytes) else ".")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])
