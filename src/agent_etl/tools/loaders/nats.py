"""NATS JetStream sink (``tool: nats``): each row one message on ``subject``, published in batches
with asynchronous publish acks.

Options (``streams.options.SinkOptions``, and): ``subject`` (a subject the stream ``stream`` takes),
``max_pending`` (messages published and not yet acknowledged by the server, default 20,000) and
``dedupe`` (default true): each message carries a ``Nats-Msg-Id`` made of the run, the task and the
row's place in its source's read (the source position after its batch, and the row's distance from
the batch's end), so a unit sent again by a retry or a resume is dropped by the stream as a duplicate
within its duplicate window (``duplicate_window``, 2 minutes by default in NATS).

The stream: where ``stream`` does not exist, the load creates it (``create``, default true),
taking the one subject ``subject``, with the server's defaults for the rest (file storage, limits
retention with no limit, a 2-minute duplicate window), as ``nats stream add STREAM --subjects
SUBJECT --defaults`` does; set ``create: false`` to have a missing stream fail the load
instead. A stream that is there but does not take ``subject`` fails the load before anything is
published, naming the subjects it takes.

Messages are published as batches arrive, and a commit unit (``commit_every``; the load takes units)
is reported committed only once the server has acknowledged every message of it (stored in the
stream). A publish the stream refuses (a full stream) fails the load with the server's reason.
Without dedupe, a failure replays the unit under way: at-least-once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
import nats.js.errors
import pyarrow as pa
from pydantic import Field

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.tools.base import Loader
from agent_etl.tools.streams.encode import Encoder
from agent_etl.tools.streams.nats_connect import connect, where
from agent_etl.tools.streams.options import SinkOptions


class NatsLoader(Loader):
    """Publish rows to a NATS JetStream stream, waiting for publish acks before each commit."""

    class Config(SinkOptions):
        subject: str = Field(min_length=1, description="the subject to publish on (the stream must take it)")
        max_pending: int = Field(20_000, ge=1, description="messages awaiting their publish ack at most")
        dedupe: bool = Field(True, description="a Nats-Msg-Id per row, so a replayed unit is not stored twice")
        create: bool = Field(True, description="create `stream` where it does not exist, taking `subject` "
                                                      "(the server's defaults for the rest); false: a missing stream "
                                                      "fails the load")

    def takes_units(self) -> bool:
        return True

    async def load(self, batches: AsyncIterator[pa.RecordBatch]) -> int:
        c = self.config
        url = c.server(self.ctx)
        nc = await connect(url)
        try:
            await self._stream(nc.jetstream(), where(url))
        except BaseException:
            await nc.close()
            raise
        self.sent = self.acked = 0
        self.error: str | None = None
        self.caught_up = asyncio.Event()
        self.target = 0
        encoder = Encoder(f"load {self.ctx.task!r} (nats stream {c.stream!r})")
        inbox = nc.new_inbox()
        self.prefix = f"{inbox}."
        rows = unit = 0
        self._last_key: str | None = None
        self._repeat = 0
        try:
            sub = await nc.subscribe(f"{inbox}.*", cb=self._on_ack, pending_msgs_limit=-1, pending_bytes_limit=-1)
            async for batch in batches:
                ids = self._ids(batch.num_rows)
                for start in range(0, batch.num_rows, c.batch_size):  # batch_size rows encoded at a time
                    payloads = await asyncio.to_thread(encoder.payloads, batch.slice(start, c.batch_size))
                    await self._publish(nc, payloads, ids[start:start + c.batch_size] if ids is not None else None)
                rows += batch.num_rows
                unit += batch.num_rows
                if self.ctx.commit_due():
                    await self._settle(nc)
                    await self.ctx.end_unit(unit)
                    unit = 0
            await self._settle(nc)
            await self.ctx.end_unit(unit, final=True)
            await sub.unsubscribe()
        except (nats.errors.Error, OSError) as e:
            raise TransientError(f"load {self.ctx.task!r}: NATS: {type(e).__name__}: {e}") from None
        finally:
            encoder.close()
            await nc.close()
        return rows

    async def _stream(self, js: Any, server: str) -> None:
        """The stream is there (created where it was not and ``create``), and takes ``subject``."""
        c, what = self.config, f"load {self.ctx.task!r}: nats stream {self.config.stream!r} on {server}"
        try:
            try:
                subjects = (await js.stream_info(c.stream)).config.subjects or []
            except nats.js.errors.NotFoundError:
                if not c.create:
                    raise ToolError(f"{what} does not exist; create it (nats stream add {c.stream} --subjects "
                                    f"'{c.subject}' --defaults), or set create: true") from None
                await js.add_stream(name=c.stream, subjects=[c.subject])
                return
        except nats.js.errors.BadRequestError as e:  # e.g. the subject is another stream's
            raise ToolError(f"{what}: cannot create it: {e.description}; fix the stream or the subject") from None
        except (nats.errors.Error, OSError) as e:
            raise TransientError(f"{what}: {type(e).__name__}: {e}; is JetStream enabled (nats-server -js)?") from None
        if not any(takes(pattern, c.subject) for pattern in subjects):
            raise ToolError(f"{what} takes subjects {subjects}, not {c.subject!r}; publish on one of them, or add it "
                            f"(nats stream edit {c.stream} --subjects ...)")

    def _ids(self, n: int) -> list[str] | None:
        """Message ids of a batch's rows: the run, the task, the sources' position after the batch, and each
        row's distance from the batch's end (a batch cut where a resumed load goes on keeps its tail's)."""
        if not self.config.dedupe:
            return None
        position = self.ctx.source_position()
        key = ",".join(f"{k}:{(v or {}).get('rows', '')}" for k, v in sorted(position.items())) or "-"
        if key == self._last_key:  # a transform made several batches of one source batch
            self._repeat += 1
        else:
            self._last_key, self._repeat = key, 0
        base = f"{self.ctx.run_id}/{self.ctx.task}/{key}/{self._repeat}/"
        return [f"{base}{n - 1 - i}" for i in range(n)]

    async def _publish(self, nc: Any, payloads: list[bytes], ids: list[str] | None) -> None:
        subject, prefix = self.config.subject, self.prefix
        limit = self.config.max_pending
        for i, payload in enumerate(payloads):
            if self.sent - self.acked >= limit:
                await self._wait(nc, self.sent - limit // 2)
            self.sent += 1
            await nc.publish(subject, payload, reply=f"{prefix}{self.sent}",
                             headers={"Nats-Msg-Id": ids[i]} if ids is not None else None)

    async def _on_ack(self, msg: Any) -> None:
        self.acked += 1
        if msg.headers and msg.headers.get("Status"):  # 503: nothing takes the subject (the stream went away)
            self.error = self.error or (f"no stream takes subject {self.config.subject!r} (NATS {msg.headers.get('Status')}"
                                        f" {msg.headers.get('Description', '')}); create the stream or fix the subject")
        elif msg.data[:9] == b'{"error":' or b'"error"' in msg.data[:12]:
            self.error = self.error or f"the stream refused a message: {json.loads(msg.data)['error'].get('description')}"
        if self.acked >= self.target:
            self.caught_up.set()

    async def _wait(self, nc: Any, target: int) -> None:
        if self.acked < target:
            self.target = target
            self.caught_up.clear()
            await nc.flush()
            try:
                await asyncio.wait_for(self.caught_up.wait(), 30)
            except TimeoutError:
                raise TransientError(f"load {self.ctx.task!r}: NATS did not acknowledge {target - self.acked:,} "
                                     "published messages within 30 s") from None
        if self.error is not None:
            raise ToolError(f"load {self.ctx.task!r}: nats stream {self.config.stream!r}: {self.error}")

    async def _settle(self, nc: Any) -> None:
        """Every message published so far is stored in the stream (its publish ack came back)."""
        await self._wait(nc, self.sent)


def takes(pattern: str, subject: str) -> bool:
    """Whether a stream's subject ``pattern`` (``*``: one token, ``>``: one or more at the end) matches ``subject``."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)
