"""Options that a named connection may hold for API tools (``connections: {api: {url, headers,
auth, rate_limit, params}}``), merged under a step's own: the step's win, its ``url`` may be a path
under the connection's. The run's shared ``Endpoint`` is per connection (or per origin and
credentials), so its rate limit holds for every task on it."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from pydantic import ValidationError

from agent_etl.exceptions import ToolError
from agent_etl.tools.http.auth import check_secrets
from agent_etl.tools.http.client import Endpoint, endpoint
from agent_etl.tools.http.options import Auth, DateRange, RateLimit

_DURATION = {"s": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400, "w": 604800, "week": 604800}


class Target:
    """Where a step's requests go and how: url, params, headers, the shared endpoint."""

    def __init__(self, config: Any, ctx: Any, what: str):
        conn: dict[str, Any] = dict(ctx.connection(config.connection)) if config.connection else {}
        base = conn.pop("url", None)
        url = config.url
        if url is None and base is None:
            raise ToolError(f"{what}: give `url` (or a `connection` with one)")
        self.url = urljoin(base.rstrip("/") + "/", url.lstrip("/")) if base and url else (url or base)
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ToolError(f"{what}: url {self.url!r} is not an http(s) URL")
        self.params = {**conn.get("params", {}), **config.params}
        self.headers = {**conn.get("headers", {}), **config.headers}
        try:
            auth = config.auth or (Auth.model_validate(conn["auth"]) if conn.get("auth") else None)
            rate = config.rate_limit or (RateLimit.model_validate(conn["rate_limit"]) if conn.get("rate_limit") else None)
        except ValidationError as e:
            raise ToolError(f"{what}: connection {config.connection!r}: {e.errors()[0]['msg']}") from None
        check_secrets(auth, ctx, what)
        origin = urlsplit(self.url)
        key = f"connection:{config.connection}" if config.connection else f"{origin.scheme}://{origin.netloc}"
        self.endpoint: Endpoint = endpoint(ctx, key, auth, rate)


def with_value(url: str, params: dict[str, Any], name: str, value: Any) -> tuple[str, dict[str, Any]]:
    """A fan-out value in the URL (``{name}``) or else as a query parameter."""
    mark = "{" + name + "}"
    if mark in url:
        return url.replace(mark, quote(str(value), safe="")), params
    return url, {**params, name: value}


def date_values(r: DateRange, what: str) -> list[Any]:
    """The dates from ``start`` to ``end`` by ``step``; with ``end_param``, [start, end) windows."""
    try:
        start, end = dt.datetime.fromisoformat(r.start), dt.datetime.fromisoformat(r.end)
    except ValueError:
        raise ToolError(f"{what}: fan_out.dates start and end must be ISO dates, e.g. 2024-01-01") from None
    text = r.step.strip().lower().replace(" ", "")
    num = "".join(c for c in text if c.isdigit() or c == ".")
    unit = text[len(num):].rstrip("s") or "s"
    if not num or unit not in _DURATION:
        raise ToolError(f"{what}: fan_out.dates.step {r.step!r} is not a duration; write e.g. 1d, 7 days, 12h")
    step = dt.timedelta(seconds=float(num) * _DURATION[unit])
    if step <= dt.timedelta(0):
        raise ToolError(f"{what}: fan_out.dates.step must be positive")
    fmt = r.format or ("%Y-%m-%d" if step.total_seconds() % 86400 == 0 and len(r.start) == 10 else None)
    def show(t: dt.datetime) -> str:
        return t.strftime(fmt) if fmt else t.isoformat()

    out: list[Any] = []
    t = start
    while t <= end:
        out.append([show(t), show(t + step)] if r.end_param else show(t))
        t += step
    return out
