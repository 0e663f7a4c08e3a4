"""The read loop every API source shares: pages fetched (ahead where the pagination allows) and
decoded in worker threads, batches of whole pages, positions, fan-out and the incremental mark.

A batch is several pages, up to ``ctx.batch_size`` rows, and always ends on a page boundary, so
``position()`` after it is the request of the next page of each part of the read:

    {"rows": 12000, "pages": 12, "parts": {"0": {"n": 12, "cursor": "abc"}}, "done": []}

``parts`` are the fan-out values (one part, "0", without fan-out); ``done`` the parts read to
their end. With ``incremental``, ``bound`` (the value sent in ``param``) and ``max_state`` (the
largest cursor value so far) are kept too, so a resumed read asks for the same data
(``tools.databases.reads.CursorRead``, the databases' own incremental machinery).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import ToolError
from agent_etl.tools.base import Extractor
from agent_etl.tools.databases.options import Incremental
from agent_etl.tools.databases.reads import CursorRead
from agent_etl.tools.http.client import Endpoint, Response
from agent_etl.tools.http.decode import Decoder, Page, PageError, TypeConflict
from agent_etl.tools.http.nested import as_json
from agent_etl.tools.http.pages import Pager, Request
from agent_etl.tools.http.target import Target

_END = object()


class ApiExtractor(Extractor):
    """Subclasses give ``pager(value)`` (value: a fan-out value or None), ``fan_values()`` and
    ``send(request)``; the endpoint comes from the options (``url`` or a named connection)."""

    def __init__(self, config: Any, ctx: Any):
        super().__init__(config, ctx)
        self._target: Target | None = None
        self._rows = 0
        self._pages = 0
        self._parts: dict[str, dict[str, Any]] = {}
        self._done: set[str] = set()
        self._resume: dict[str, Any] | None = None
        self._decoded = 0  # pages decoded by this read: types are pinned after `infer_pages`
        self._requests: asyncio.Semaphore | None = None
        self.inc: CursorRead | None = None
        self.decoder = Decoder(config.records, config.schema_, config.nested)

    @property
    def target(self) -> Target:
        """Where requests go and with what credentials, resolved on first use (the run's connections)."""
        if self._target is None:
            self._target = Target(self.config, self.ctx, self.what())
        return self._target

    @property
    def endpoint(self) -> Endpoint:
        return self.target.endpoint

    # -- what subclasses give
    def pager(self, value: Any) -> Pager:
        raise NotImplementedError

    def fan_values(self) -> list[Any] | None:
        return None

    def fan_concurrency(self) -> int:
        return 1

    async def send(self, req: Request) -> Response:
        raise NotImplementedError

    def what(self) -> str:
        return f"task {self.ctx.task!r} ({self.name or 'api'})"

    # -- the Extractor protocol
    def resumable(self) -> bool:
        return True  # the pagination styles all ask for the same pages again, given the same data

    def resume_from(self, position: dict[str, Any]) -> None:
        if not isinstance(position, dict) or "parts" not in position or not isinstance(position.get("rows"), int):
            raise ToolError(f"{self.what()}: cannot resume from {position!r}: not the position of an API read")
        self._resume = position

    def position(self) -> dict[str, Any]:
        pos: dict[str, Any] = {"rows": self._rows, "pages": self._pages, "parts": dict(self._parts),
                               "done": sorted(self._done, key=int)}
        if self.inc is not None:
            pos.update(self.inc.position())
        return pos

    def incremental_param(self) -> dict[str, Any]:
        if self.inc is None or self.inc.after is None:
            return {}
        value, inc = self.inc.after, self.config.incremental
        if isinstance(value, (dt.date, dt.datetime)):
            # the first run sends `initial` as written (an API compares its own text, 'Z' and all)
            first = isinstance(inc.initial, str) and inc.lookback is None and self.inc.state is None
            value = inc.initial if first else value.isoformat()
        return {inc.param: value}

    async def batches(self) -> AsyncIterator[pa.RecordBatch]:
        inc = self.config.incremental
        if inc is not None:
            self.inc = CursorRead(Incremental(cursor=inc.cursor, initial=inc.initial, lookback=inc.lookback), self.ctx)
        if self._resume is not None:
            self._rows, self._pages = self._resume["rows"], self._resume.get("pages", 0)
            self._parts = dict(self._resume["parts"])
            self._done = set(self._resume.get("done", []))
            if self.inc is not None:
                self.inc.resume(self._resume)
        values = self.fan_values()
        parts = [str(i) for i in range(len(values))] if values is not None else ["0"]
        todo = [(p, values[int(p)] if values is not None else None) for p in parts if p not in self._done]
        queue: asyncio.Queue = asyncio.Queue(maxsize=max(4, 2 * self.fan_concurrency()))
        gate = asyncio.Semaphore(self.fan_concurrency())
        # fan-out: `concurrency` bounds the requests in flight, pages sent ahead included
        self._requests = asyncio.Semaphore(self.fan_concurrency()) if values is not None else None
        tasks = [asyncio.create_task(self._part(part, value, queue, gate)) for part, value in todo]
        pending: list[tuple[str, dict[str, Any] | None, pa.RecordBatch]] = []
        rows = 0
        open_parts = len(tasks)
        try:
            while open_parts:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item is _END:
                    open_parts -= 1
                    continue
                part, state, batch = item
                pending.append((part, state, batch))
                rows += batch.num_rows
                self._decoded += 1
                if self._decoded >= self.config.infer_pages:
                    self.decoder.pin()
                if rows >= self.ctx.batch_size and self.decoder.pinned_all:
                    out = await self._flush(pending)
                    pending, rows = [], 0
                    if out is not None:
                        yield out
            out = await self._flush(pending)
            if out is not None:
                yield out
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.inc is not None:
            self.inc.finish()

    async def _flush(self, pending: list[tuple[str, dict[str, Any] | None, pa.RecordBatch]]) -> pa.RecordBatch | None:
        """One batch of the pending pages; the position moves past them."""
        batches = [b for _, _, b in pending if b.num_rows]
        out = None
        if batches:
            # the schema as of now: pages decoded later may widen it while this runs in a thread
            out = await asyncio.to_thread(self._assemble, batches, self.decoder.schema)
            if self.inc is not None:
                self.inc.observe(out)
            self._rows += out.num_rows
        for part, state, _ in pending:
            self._pages += 1
            if state is None:
                self._done.add(part)
                self._parts.pop(part, None)
            else:
                self._parts[part] = state
        return out

    def _assemble(self, batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch:
        fitted = [self.decoder.fit(b, schema) for b in batches]
        out = fitted[0] if len(fitted) == 1 else pa.concat_batches(fitted)
        return as_json(out) if self.config.nested == "json" else out

    async def _part(self, part: str, value: Any, queue: asyncio.Queue, gate: asyncio.Semaphore) -> None:
        try:
            async with gate:
                async for state, batch in self._pages_of(part, value):
                    await queue.put((part, state, batch))
            await queue.put(_END)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put(e)

    async def _pages_of(self, part: str, value: Any) -> AsyncIterator[tuple[dict[str, Any] | None, pa.RecordBatch]]:
        """(state after the page, its records) for each page of one part, in order."""
        pager = self.pager(value)
        state = self._parts.get(part)
        read = 0
        if not pager.ahead():
            async for item in self._sequential(pager, state):
                yield item
            return
        # page numbers and offsets: keep `prefetch` requests in flight, take the pages in order
        depth = pager.p.prefetch if pager.p is not None else 1
        first = pager.request(state)
        inflight: list[tuple[Request, asyncio.Task]] = []
        guess = first

        def launch(r: Request) -> None:
            inflight.append((r, asyncio.create_task(self._fetch(r))))

        launch(first)
        try:
            while inflight:
                while len(inflight) < depth and guess is not None:
                    guess = self._guess(pager, guess)
                    if guess is not None:
                        launch(guess)
                req, task = inflight.pop(0)
                resp, table = await task
                page = self._records(req, resp, table)
                read += page.records.num_rows
                nxt = pager.after(req, page, resp.headers, read)
                if nxt is None or not inflight or inflight[0][0].state != nxt:
                    for _, t in inflight:  # pages sent ahead past the end, or at a wrong offset
                        t.cancel()
                    await asyncio.gather(*(t for _, t in inflight), return_exceptions=True)
                    inflight.clear()
                    guess = pager.request(nxt) if nxt is not None else None
                    if guess is not None:
                        launch(guess)
                yield nxt, page.records
        finally:
            for _, t in inflight:
                t.cancel()

    def _guess(self, pager: Pager, req: Request) -> Request | None:
        """The request after ``req`` assuming a full page (offsets move by the page size)."""
        p = pager.p
        assert p is not None
        size = p.page_size or 100
        nxt = pager.following(req, size, 0)
        return pager.request(nxt) if nxt is not None else None

    async def _sequential(self, pager: Pager, state: dict[str, Any] | None) -> AsyncIterator[tuple[dict[str, Any] | None,
                                                                                                 pa.RecordBatch]]:
        """Cursor, link and next-URL pages: each request comes from the page before. The next one is
        sent as soon as the response is in, from a guess (the Link header, or the token found in the
        raw body), while the body is parsed; the parsed body confirms the guess, or the request is
        sent again with the real token."""
        req = pager.request(state)
        get = asyncio.create_task(self._get(req))
        ahead: tuple[dict[str, Any], Request, asyncio.Task] | None = None
        read = 0
        try:
            while True:
                resp = await get
                guess = self._clean(pager.speculate(req, resp))
                if guess is not None:
                    r = pager.request(guess)
                    ahead = (guess, r, asyncio.create_task(self._get(r)))
                page = self._records(req, resp, await self._parse(req, resp))
                read += page.records.num_rows
                nxt = self._clean(pager.after(req, page, resp.headers, read))
                yield nxt, page.records
                if nxt is None:
                    return
                if ahead is not None and ahead[0] == nxt:
                    req, get = ahead[1], ahead[2]
                else:
                    if ahead is not None:
                        ahead[2].cancel()
                    req = pager.request(nxt)
                    get = asyncio.create_task(self._get(req))
                ahead = None
        finally:
            for task in (get, ahead[2] if ahead is not None else None):
                if task is not None and not task.done():
                    task.cancel()

    def _clean(self, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """A state fit for a position: a next URL without the API key's query parameter."""
        if state is not None and "url" in state:
            state["url"] = self.endpoint.show(state["url"])
        return state

    async def _get(self, req: Request) -> Response:
        if self._requests is not None:
            async with self._requests:
                return await self.send(req)
        return await self.send(req)

    async def _fetch(self, req: Request) -> tuple[Response, pa.Table]:
        resp = await self._get(req)
        return resp, await self._parse(req, resp)

    async def _parse(self, req: Request, resp: Response) -> pa.Table:
        explicit = self.decoder.explicit()
        try:
            try:
                table = await asyncio.to_thread(self.decoder.parse, resp.body, explicit)
            except TypeConflict:
                if explicit is None:
                    raise
                # a wider type than the pinned one (1.5 in an int field): infer this page, then widen
                table = await asyncio.to_thread(self.decoder.parse, resp.body, None)
        except PageError as e:
            raise self._page_error(req, resp, e) from None
        return table

    def _records(self, req: Request, resp: Response, table: pa.Table) -> Page:
        try:
            return self.decoder.records(table, resp.body)
        except PageError as e:
            raise self._page_error(req, resp, e) from None

    def _page_error(self, req: Request, resp: Response, e: Exception) -> ToolError:
        return ToolError(f"{self.what()}: page {req.number} ({self.endpoint.show(resp.url)}) {e}")
