"""``rest``: records from a JSON REST API, page by page, into Arrow.

    extract:
      orders:
        tool: rest
        url: https://api.example.com/v1/orders
        params: {status: paid}
        auth: {type: bearer, token: "${API_TOKEN}"}
        records: data                        # the list of records in each body
        pagination: {type: cursor, path: meta.next_cursor, param: cursor, page_size: 500}
        rate_limit: {per_second: 10}
        incremental: {cursor: updated_at, param: updated_since}

Everything HTTP (session, auth, rate limit, retries, pages, decoding) is in ``tools.http``;
docs/connectors/api.md has every option.
"""

from __future__ import annotations

from typing import Any, Literal

import aiohttp  # noqa: F401 - the api extra: the registry names it when missing
from pydantic import Field

from agent_etl.tools.http.client import Response
from agent_etl.tools.http.options import FanOut, Pagination, SourceOptions
from agent_etl.tools.http.pages import Pager, Request
from agent_etl.tools.http.target import date_values, with_value
from agent_etl.tools.http.source import ApiExtractor


class RestExtractor(ApiExtractor):
    """Read records from a JSON REST API (pagination, auth, rate limit, incremental)."""

    class Config(SourceOptions):
        method: Literal["GET", "POST"] = Field("GET", description="the HTTP method")
        body: Any = Field(None, description="a JSON body (POST)")
        pagination: Pagination | None = Field(None, description="how to page through the results")
        fan_out: FanOut | None = Field(None, description="one paginated read per value or date, put in a parameter")

    def __init__(self, config: Any, ctx: Any):
        super().__init__(config, ctx)

    def fan_values(self) -> list[Any] | None:
        f = self.config.fan_out
        if f is None:
            return None
        return list(f.values) if f.values is not None else date_values(f.dates, self.what())

    def fan_concurrency(self) -> int:
        return self.config.fan_out.concurrency if self.config.fan_out else 1

    def pager(self, value: Any) -> Pager:
        t = self.target
        url, params = t.url, {**t.params, **self.incremental_param()}
        f = self.config.fan_out
        if f is not None:
            if f.dates is not None and f.dates.end_param:  # a window: [start, end)
                url, params = with_value(url, params, f.dates.end_param, value[1])
                value = value[0]
            url, params = with_value(url, params, f.param, value)
        return Pager(self.config.pagination, url, params)

    async def send(self, req: Request) -> Response:
        c = self.config
        return await self.endpoint.request(c.method, req.url, params=req.params, headers=self.target.headers,
                                           json=c.body, retries=c.retries, timeout=c.request_timeout,
                                           what=self.what())
