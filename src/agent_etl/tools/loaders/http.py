"""``http``: POST record batches to a webhook or ingestion API, as a JSON array or JSONL.

    load:
      hook:
        input: orders
        tool: http
        url: https://hooks.example.com/ingest
        auth: {type: bearer, token: "${HOOK_TOKEN}"}
        format: jsonl            # or json (an array per request)
        batch_size: 500          # records per request
        rate_limit: {per_second: 5}

An HTTP endpoint has no transaction: each request is delivered at least once. A request that
fails after its retries fails the load; what was posted before stays posted, and a resumed run
posts again everything after the last commit unit (``commit_every``; without it, everything):
the receiver should be idempotent (dedupe on a key). Retries, 429/Retry-After, the rate limit
and auth are the API extractors' (``tools.http``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp  # noqa: F401 - the api extra: the registry names it when missing
import orjson
import pyarrow as pa
from pydantic import Field

from agent_etl.tools.base import Loader, ToolConfig
from agent_etl.tools.capabilities import Capabilities
from agent_etl.tools.http.options import Auth, RateLimit, Retries
from agent_etl.tools.http.target import Target

_TYPES = {"json": "application/json", "jsonl": "application/x-ndjson"}


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(type(value).__name__)


def encode(batch: pa.RecordBatch, fmt: str) -> bytes:
    rows = batch.to_pylist()
    if fmt == "json":
        return orjson.dumps(rows, default=_default)
    return b"".join(orjson.dumps(r, default=_default, option=orjson.OPT_APPEND_NEWLINE) for r in rows)


class HttpLoader(Loader):
    """POST batches as JSON or JSONL to an HTTP endpoint (at-least-once)."""

    # appends only, and promises nothing the contract suite checks beyond that: no transaction, and
    # no checkpoint the endpoint could give back (its units are recorded in the run store only)
    capabilities = Capabilities(modes=("append",))

    class Config(ToolConfig):
        connection: str | None = Field(
            None, description="a `connections:` entry holding url (base), headers, auth, rate_limit")
        url: str | None = Field(None, description="the endpoint (relative to the connection's url, if there is one)")
        method: Literal["POST", "PUT", "PATCH"] = Field("POST", description="the HTTP method")
        params: dict[str, Any] = Field({}, description="query parameters of every request")
        headers: dict[str, str] = Field({}, description="headers of every request")
        auth: Auth | None = Field(None, description="how requests authenticate")
        format: Literal["json", "jsonl"] = Field(
            "json", description="json: a body is a JSON array of records; jsonl: one record a line")
        batch_size: int = Field(1000, ge=1, description="records per request")
        rate_limit: RateLimit | None = Field(None, description="requests per second at most")
        retries: Retries = Field(Retries(), description="how failed requests (429, 5xx, timeouts) are retried")
        request_timeout: float = Field(30.0, gt=0, description="seconds per request")

    def takes_units(self) -> bool:
        return True  # a unit is what was posted: a resume posts only what came after the last one

    async def load(self, batches: AsyncIterator[pa.RecordBatch]) -> int:
        c = self.config
        what = f"load {self.ctx.task!r} (http)"
        target = Target(c, self.ctx, what)
        headers = {"Content-Type": _TYPES[c.format], **target.headers}
        total = unit = 0
        async for batch in batches:
            for start in range(0, batch.num_rows, c.batch_size):
                part = batch.slice(start, c.batch_size)
                body = await asyncio.to_thread(encode, part, c.format)
                await target.endpoint.request(c.method, target.url, params=target.params, headers=headers,
                                              data=body, retries=c.retries, timeout=c.request_timeout, what=what)
                unit += part.num_rows
            total += batch.num_rows
            if self.ctx.commit_due():
                await self.ctx.end_unit(unit)
                unit = 0
        await self.ctx.end_unit(unit, final=True)
        return total
