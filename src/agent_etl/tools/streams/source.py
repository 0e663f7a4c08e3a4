"""``StreamExtractor``: the read loop every stream source shares.

A source supplies four coroutines: ``_open()`` (connect, check the stream, create the group or
consumer), ``_read(count, wait)`` (up to ``count`` messages, waiting at most ``wait`` seconds for the
first: ``(payloads, ids, tokens)``, ids in stream order; the payloads one per message, or
``decode.NDJSON`` blocks already joined), ``_ack(tokens)`` (acknowledge messages) and
``_close()``. This class gathers the messages into micro-batches (``rules.BatchClock``), decodes them
(``decode.Decoder``), stops by the stop rules (``rules.StopRules``), and keeps what each yielded batch
needs acknowledging until the runtime says the loads below committed it (``acknowledge``).

Exactly once: the position after each batch carries a ``mark`` (the last message's id), which every
load's checkpoint keeps. A new run starts from the smallest mark its destinations hold
(``ctx.load_state()``, filled by ``agents.destinations.cursors``) and drops, and acknowledges, the
messages at or before it that the server delivers again: so a crash between a commit and its ack
gives no duplicate, even into an append destination.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import pyarrow as pa

from agent_etl.tools.base import Extractor, ToolContext
from agent_etl.tools.streams.decode import Decoder
from agent_etl.tools.streams.marks import is_stream_mark, order
from agent_etl.tools.streams.options import SourceOptions
from agent_etl.tools.streams.rules import BatchClock, StopRules

log = logging.getLogger("agent_etl.streams")


class StreamExtractor(Extractor):
    Config: ClassVar[type[SourceOptions]] = SourceOptions
    # where a run starts comes from the marks its destinations hold (agents.destinations.cursors)
    stream_marks: ClassVar[bool] = True
    what: str = "stream"

    @classmethod
    def commits_per_batch(cls, options: dict[str, Any]) -> bool:
        """A continuous read: loads below commit (and so acknowledge) every micro-batch, unless the
        pipeline sets ``commit_every`` itself."""
        return options.get("mode") == "continuous"

    def __init__(self, config: SourceOptions, ctx: ToolContext):
        super().__init__(config, ctx)
        self.rows = 0
        self.mark: dict[str, Any] | None = None  # the mark of the last message yielded
        self.committed: dict[str, Any] | None = None  # messages at or before it are in the destinations
        self.dropped = 0  # messages delivered again that were already committed
        self._unacked: deque[tuple[tuple[int, int], Any]] = deque()  # (order of a batch's last id, tokens)
        self._acking = asyncio.Lock()  # one ack at a time
        self.decoder = Decoder(config, f"{self.what} {config.stream!r}")

    # to be supplied by a source ------------------------------------------------------------------

    async def _open(self) -> None:
        raise NotImplementedError

    async def _read(self, count: int, wait: float) -> tuple[list[Any], list[Any], Any]:
        raise NotImplementedError

    async def _ack(self, tokens: list[Any]) -> None:
        raise NotImplementedError

    def _mark(self, last_id: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def _close(self) -> None:
        """The read ended (or failed): stop what the source does in the background. The connection stays
        open for the acknowledgements still to come (``ctx.resources`` closes it with the run)."""

    def _order(self, message_id: Any) -> tuple[int, int]:
        raise NotImplementedError

    def _tokens(self, tokens: Any, keep: slice) -> Any:
        """The ack tokens of part of a chunk (``_read``'s third value)."""
        return tokens[keep]

    def _compact(self, tokens: Any) -> Any:
        """What of a chunk's tokens is kept until its ack (all of them, unless one acks the rest)."""
        return tokens

    # the Extractor protocol ---------------------------------------------------------------------

    def resumable(self) -> bool:
        return True

    def resume_from(self, position: dict[str, Any]) -> None:
        self.rows = int(position.get("rows") or 0)
        self._after(position.get("mark"))

    def position(self) -> dict[str, Any]:
        return {"rows": self.rows, **({"mark": self.mark} if self.mark is not None else {})}

    @property
    def skipped_rows(self) -> int:
        return self.decoder.skipped

    def _after(self, mark: Any) -> None:
        if is_stream_mark(mark, self.config.stream) and order(mark) > order(self.committed):
            self.committed = mark

    async def batches(self) -> AsyncIterator[pa.RecordBatch]:
        self._after(self.ctx.load_state())
        await self._open()
        try:
            async for batch in self._micro_batches():
                yield batch
        finally:
            await self._close()

    async def _micro_batches(self) -> AsyncIterator[pa.RecordBatch]:
        clock = BatchClock(self.config)
        payloads: list[Any] = []
        ids: list[Any] = []
        tokens: list[Any] = []
        loop = asyncio.get_running_loop()
        with StopRules(self.config) as rules:
            last_seen = loop.time()
            while not rules.done():
                want = rules.budget(self.config.batch_size - len(ids))
                got, got_ids, got_tokens = await self._read(want, rules.wait(clock.left()))
                if got_ids:
                    last_seen = loop.time()
                    got, got_ids, got_tokens = await self._fresh(got, got_ids, got_tokens)
                elif not rules.continuous and loop.time() - last_seen >= self.config.idle_seconds:
                    rules.caught_up = True
                if got_ids:
                    clock.started()
                    rules.read += len(got_ids)
                    payloads += got
                    ids += got_ids
                    tokens.append(self._compact(got_tokens))
                if ids and (len(ids) >= self.config.batch_size or clock.left() == 0 or rules.done()):
                    batch = self._batch(payloads, ids, tokens)
                    payloads, ids, tokens = [], [], []
                    clock.reset()
                    if batch is not None:
                        yield batch
            if ids:
                batch = self._batch(payloads, ids, tokens)
                if batch is not None:
                    yield batch

    def _batch(self, payloads: list[Any], ids: list[Any], tokens: list[Any]) -> pa.RecordBatch | None:
        batch = self.decoder.decode(payloads, ids)
        self.mark = self._mark(ids[-1])
        self._unacked.append((self._order(ids[-1]), tokens))
        self.ctx.save_state(self.mark)  # the next run's start where no destination keeps marks
        if batch is not None:
            self.rows += batch.num_rows
        return batch

    async def _fresh(self, got: list[Any], ids: list[Any], tokens: Any) -> tuple[list[Any], list[Any], Any]:
        """The messages of a chunk after the committed mark; those at or before it were delivered again
        after a crash between a commit and its ack: acknowledge them now, and leave them out."""
        if self.committed is None:
            return got, ids, tokens
        floor = order(self.committed)
        if self._order(ids[0]) > floor:
            self.committed = None  # ids only grow from here
            return got, ids, tokens
        cut = bisect.bisect_right(_Orders(ids, self._order), floor)
        self.dropped += cut
        await self._ack([self._tokens(tokens, slice(0, cut))])
        if cut == len(ids):
            return [], [], None
        self.committed = None
        return got[cut:], ids[cut:], self._tokens(tokens, slice(cut, None))

    async def acknowledge(self, position: dict[str, Any]) -> None:
        """Every load below committed what this source yielded up to ``position``: acknowledge it."""
        upto = order(position.get("mark"))
        async with self._acking:
            done = []
            while self._unacked and self._unacked[0][0] <= upto:
                done.extend(self._unacked.popleft()[1])
            if done:
                try:
                    await self._ack(done)
                except Exception as e:  # noqa: BLE001 - the data is committed; the next run drops them
                    log.warning("%s %r: acknowledging committed messages failed (%s); they will be delivered "
                                "again and dropped by their mark", self.what, self.config.stream, e)


class _Orders(Sequence):
    """The orders of a chunk's ids, computed as bisect asks for them (no list of all)."""

    def __init__(self, ids: list[Any], key: Any):
        self.ids, self.key = ids, key

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: Any) -> Any:
        return self.key(self.ids[i])
