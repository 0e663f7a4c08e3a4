"""Options the API tools share (names of DESIGN.md §2: ``url``, ``params``, ``headers``, ``auth``,
``records``, ``pagination``, ``rate_limit``), and the ones they add (``retries``, ``timeout``,
``fan_out``, ``incremental``, ``nested``, ``schema``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from agent_etl.tools.base import ToolConfig


class Auth(ToolConfig):
    """How requests authenticate. Secret values must come from ``${ENV}`` or ``${file:path}``."""

    type: Literal["bearer", "basic", "api_key", "oauth2"] = Field(
        description="bearer, basic, api_key or oauth2 (client credentials)")
    token: str | None = None  # bearer
    username: str | None = None  # basic
    password: str | None = Field(None, description="basic: the password (from ${ENV} or ${file:path})")
    key: str | None = None  # api_key: the key's value
    header: str | None = None  # api_key: sent in this header (default X-API-Key) ...
    query: str | None = None  # ... or in this query parameter
    token_url: str | None = None  # oauth2 client credentials
    client_id: str | None = Field(None, description="oauth2: the client id")
    client_secret: str | None = Field(None, description="oauth2: the client secret (from ${ENV} or ${file:path})")
    scope: str | None = Field(None, description="oauth2: the scope asked for")

    @model_validator(mode="after")
    def _complete(self) -> Auth:
        need = {"bearer": ["token"], "basic": ["username", "password"], "api_key": ["key"],
                "oauth2": ["token_url", "client_id", "client_secret"]}[self.type]
        missing = [n for n in need if getattr(self, n) is None]
        if missing:
            raise ValueError(f"auth type {self.type} needs {', '.join(missing)}")
        if self.header and self.query:
            raise ValueError("api_key goes in a `header` or a `query` parameter, not both")
        return self

    def secret_fields(self) -> dict[str, str]:
        return {n: v for n in ("token", "password", "key", "client_secret") if (v := getattr(self, n))}


class RateLimit(ToolConfig):
    per_second: float = Field(gt=0, description="requests per second at most")
    burst: int | None = Field(None, ge=1)  # requests allowed at once after a quiet spell (default: 1 s worth)


class Retries(ToolConfig):
    """Retries of one request: timeouts, dropped connections, 5xx and 429 (with Retry-After)."""

    max_attempts: int = Field(5, ge=1, le=50)
    initial_delay: float = Field(0.5, ge=0)
    max_delay: float = Field(30.0, ge=0)
    max_retry_after: float = Field(300.0, ge=0)  # a longer Retry-After fails the request instead of waiting


class Pagination(ToolConfig):
    """``page``: page numbers in ``param`` from ``start``; ``offset``: an offset in ``param`` and the
    page size in ``limit_param``; ``cursor``: the token at ``path`` of a body goes in ``param``;
    ``link``: the ``Link: <...>; rel="next"`` header; ``next_url``: the URL at ``path`` of a body.
    Reading stops at an empty page, at ``total_path`` records (or pages: ``total_pages_path``), at
    ``max_pages``, or when there is no next token/URL."""

    type: Literal["page", "offset", "cursor", "link", "next_url"] = Field(
        description="page, offset, cursor, link or next_url")
    param: str | None = Field(
        None, description="page, offset, cursor: the query parameter of the page number, offset or token")
    path: str | None = Field(None, description="cursor, next_url: the dotted path of the token or URL in a body")
    page_size: int | None = Field(None, ge=1, description="records asked for per page")
    size_param: str | None = None  # page, cursor: where page_size goes (default per_page / limit)
    limit_param: str = "limit"  # offset
    start: int = 1  # page: the first page's number (0 for zero-based APIs)
    total_path: str | None = Field(None, description="dotted path of the total record count in a body: stop there")
    total_pages_path: str | None = Field(None, description="dotted path of the total page count in a body: stop there")
    max_pages: int | None = Field(None, ge=1, description="pages read at most")
    # page/offset: requests in flight ahead of the page being decoded (pages still come in order)
    prefetch: int = Field(4, ge=1, le=32)

    @model_validator(mode="after")
    def _shape(self) -> Pagination:
        if self.type in ("cursor", "next_url") and not self.path:
            raise ValueError(f"pagination type {self.type} needs `path`: the dotted path of the next "
                             f"{'token' if self.type == 'cursor' else 'URL'} in the body, e.g. meta.next")
        return self

    def request_param(self) -> str:
        return self.param or {"page": "page", "offset": "offset", "cursor": "cursor"}.get(self.type, "")


class DateRange(ToolConfig):
    start: str = Field(description="the first date (ISO)")
    end: str = Field(description="the last date (ISO)")
    step: str = "1d"  # a duration: '1d', '7 days', '12 hours'
    format: str | None = None  # strftime of the values; default ISO date (or timestamp when step < 1 day)
    # windows: each read also gets the window's end (its start + step, exclusive) in this parameter
    end_param: str | None = None


class FanOut(ToolConfig):
    """One paginated read per value: ``values`` or the ``dates`` of a range, put in ``param`` (a
    query parameter, or ``{param}`` in the URL), with at most ``concurrency`` reads at once."""

    param: str = Field(description="the query parameter, or `{param}` in the URL, that takes each value")
    values: list[Any] | None = Field(None, description="the values, one read each (or dates)")
    dates: DateRange | None = Field(None, description="a range of dates, one read each (or values)")
    concurrency: int = Field(4, ge=1, le=64, description="reads at once")

    @model_validator(mode="after")
    def _one(self) -> FanOut:
        if (self.values is None) == (self.dates is None):
            raise ValueError("fan_out needs exactly one of `values` or `dates`")
        return self


class ApiIncremental(ToolConfig):
    """``cursor``: a field of the records; its high-water mark of the last successful run goes in
    request parameter ``param`` (``initial`` the first time)."""

    cursor: str = Field(min_length=1, description="a field of the records whose high-water mark is kept between runs")
    param: str = Field(min_length=1, description="the request parameter that takes the mark")
    initial: Any = Field(None, description="the value sent the first time (none: read everything)")
    lookback: float | str | None = Field(
        None, description="send the mark less this (a number, or a duration such as '2 hours')")


class SourceOptions(ToolConfig):
    """What every API source has: where, how to authenticate, how fast, and how to decode."""

    connection: str | None = None  # a `connections:` entry holding url (base), headers, auth, rate_limit
    url: str | None = Field(None, description="the endpoint (relative to the connection's url, if there is one)")
    params: dict[str, Any] = Field({}, description="query parameters of every request")
    headers: dict[str, str] = Field({}, description="headers of every request")
    auth: Auth | None = Field(None, description="how requests authenticate")
    records: str | None = None  # dotted path of the records list in a body; None: the body is the list
    rate_limit: RateLimit | None = Field(None, description="requests per second at most")
    retries: Retries = Field(Retries(), description="how failed requests (429, 5xx, timeouts) are retried")
    request_timeout: float = Field(30.0, gt=0)  # seconds per request (`timeout` is the whole task's)
    nested: Literal["struct", "json"] = "struct"  # nested objects and lists: Arrow structs/lists or JSON text
    schema_: dict[str, str] | None = Field(
        None, alias="schema",
        description="pin: {field: arrow type}, e.g. {id: int64}; `json` keeps a field's values as their JSON text")
    infer_pages: int = Field(3, ge=1, le=100)  # pages whose types are unified before the first batch
    incremental: ApiIncremental | None = Field(
        None, description="read only records past the last successful run's high-water mark")
