"""``graphql``: records from a GraphQL API: a query with variables, Relay cursor or offset pagination.

    extract:
      posts:
        tool: graphql
        url: https://api.example.com/graphql
        auth: {type: bearer, token: "${API_TOKEN}"}
        query: |
          query($first: Int, $after: String) {
            posts(first: $first, after: $after) {
              edges { node { id title author { name } } }
              pageInfo { hasNextPage endCursor }
            }
          }
        pagination: {type: relay, path: posts, page_size: 100}

``path`` (and ``records``) are dotted paths under the response's ``data``. Relay reads the
records from ``<path>.edges[].node`` and goes on while ``pageInfo.hasNextPage``, sending
``endCursor`` as ``$after``; offset pagination sends ``$offset`` and ``$limit`` and stops at an
empty page. A response with an ``errors`` array fails the task with the server's message, also
when its status is 200.
"""

from __future__ import annotations

from typing import Any, Literal

import aiohttp  # noqa: F401 - the api extra: the registry names it when missing
import pyarrow as pa
from pydantic import Field, model_validator

from agent_etl.exceptions import ToolError
from agent_etl.tools.base import ToolConfig
from agent_etl.tools.http.client import Response
from agent_etl.tools.http.decode import Decoder, Page, at, scalar
from agent_etl.tools.http.options import SourceOptions
from agent_etl.tools.http.pages import Pager, Request
from agent_etl.tools.http.source import ApiExtractor


class GraphQLPagination(ToolConfig):
    type: Literal["relay", "offset"] = Field(description="relay (cursor connections) or offset")
    path: str  # the connection (relay) or the list's parent (offset), under data
    page_size: int = Field(100, ge=1, description="records asked for per page")
    size_variable: str | None = None  # default: first (relay), limit (offset)
    cursor_variable: str = "after"  # relay
    offset_variable: str = "offset"  # offset
    max_pages: int | None = Field(None, ge=1, description="pages read at most")
    prefetch: int = Field(2, ge=1, le=32)  # offset: requests sent ahead


class GraphQLPager(Pager):
    def __init__(self, p: GraphQLPagination | None, url: str, query: str, variables: dict[str, Any]):
        # `p` as the read loop asks of ahead pagination: prefetch and page_size
        self.p, self.gp, self.url, self.params = p, p, url, {}
        self.query, self.variables = query, variables

    def ahead(self) -> bool:
        return self.gp is not None and self.gp.type == "offset"

    def request(self, state: dict[str, Any] | None) -> Request:
        state = dict(state or {"n": 0})
        variables = dict(self.variables)
        g = self.gp
        if g is not None and g.type == "relay":
            variables[g.size_variable or "first"] = g.page_size
            if state.get("cursor") is not None:
                variables[g.cursor_variable] = state["cursor"]
        elif g is not None:
            state.setdefault("offset", 0)
            variables[g.offset_variable] = state["offset"]
            variables[g.size_variable or "limit"] = g.page_size
        return Request(self.url, {}, json={"query": self.query, "variables": variables}, state=state)

    def following(self, req: Request, rows: int, total_rows: int) -> dict[str, Any] | None:
        g = self.gp
        n = req.number
        if g is None or rows == 0 or (g.max_pages is not None and n >= g.max_pages):
            return None
        return {"n": n, "offset": req.state["offset"] + rows}

    def after(self, req: Request, page: Page, headers: Any, read_rows: int) -> dict[str, Any] | None:
        g = self.gp
        if g is None:
            return None
        if g.type == "offset":
            return self.following(req, page.records.num_rows, read_rows)
        n = req.number
        if g.max_pages is not None and n >= g.max_pages:
            return None
        info = f"data.{g.path}.pageInfo"
        if not scalar(page.table, f"{info}.hasNextPage"):
            return None
        cursor = scalar(page.table, f"{info}.endCursor")
        return None if cursor is None else {"n": n, "cursor": cursor}


class GraphQLExtractor(ApiExtractor):
    """Read records from a GraphQL API (query, variables, Relay or offset pagination)."""

    class Config(SourceOptions):
        query: str = Field(min_length=1, description="the GraphQL query")
        variables: dict[str, Any] = Field({}, description="the query's variables")
        pagination: GraphQLPagination | None = Field(None, description="how to page through the results")

        @model_validator(mode="after")
        def _records(self) -> GraphQLExtractor.Config:
            if self.records is None and self.pagination is None:
                raise ValueError("give `records`: the dotted path of the list of records under data, e.g. posts.items")
            return self

    def __init__(self, config: Any, ctx: Any):
        super().__init__(config, ctx)
        p = config.pagination
        if config.records is not None:
            self.decoder = Decoder(f"data.{config.records}", config.schema_, config.nested)
        elif p.type == "relay":
            self.decoder = Decoder(f"data.{p.path}.edges", config.schema_, config.nested, unwrap="node")
        else:
            self.decoder = Decoder(f"data.{p.path}", config.schema_, config.nested)

    def pager(self, value: Any) -> Pager:
        c = self.config
        return GraphQLPager(c.pagination, self.target.url, c.query, {**c.variables, **self.incremental_vars()})

    def incremental_vars(self) -> dict[str, Any]:
        return self.incremental_param()

    async def send(self, req: Request) -> Response:
        c = self.config
        return await self.endpoint.request("POST", req.url, params=self.target.params, headers=self.target.headers,
                                           json=req.json, retries=c.retries, timeout=c.request_timeout,
                                           what=self.what())

    def _records(self, req: Request, resp: Response, table: pa.Table) -> Page:
        errors, _ = at(table, ["errors"])
        if errors is not None and len(errors) and errors[0].is_valid:
            items = errors[0].as_py() or []
            msgs = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in items[:3])
            raise ToolError(f"{self.what()}: the GraphQL server answered errors: {msgs or repr(items)}; check `query` "
                            "and `variables`")
        return super()._records(req, resp, table)
