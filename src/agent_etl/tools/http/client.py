"""One HTTP endpoint as the tasks of a run share it: an aiohttp session, the rate limit and the
authentication, and ``request``, which retries what may pass when tried again.

Retried (``retries.max_attempts`` tries, exponential backoff with full jitter): timeouts, dropped
or refused connections, 5xx, and 429, which waits the ``Retry-After`` the server asked for (the
whole connection waits, see ``bucket``). Not retried: 401 and 403 (an OAuth2 token is fetched
again once), and the other 4xx. The last failure is a ``ToolError`` (not transient: the request
was tried enough already, and a task retry on top would make a storm of them).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from agent_etl.exceptions import ToolError
from agent_etl.tools.http.auth import Authenticator
from agent_etl.tools.http.bucket import TokenBucket
from agent_etl.tools.http.options import Auth, RateLimit, Retries


@dataclass
class Response:
    url: str
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class Endpoint:
    """What the tasks on one connection share (``endpoint``): session, bucket, authentication."""

    def __init__(self, auth: Auth | None, bucket: TokenBucket, connections: int = 16):
        self.auth = Authenticator(auth)
        self.bucket = bucket
        self._limit = connections
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit), auto_decompress=True,
                json_serialize=lambda o: orjson.dumps(o).decode())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def show(self, url: str) -> str:
        """``url`` fit for a message or a position: without the API key's query parameter."""
        return strip_param(url, self.auth.query_name())

    async def request(self, method: str, url: str, *, params: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None, json: Any = None, data: bytes | None = None,
                      retries: Retries, timeout: float, what: str) -> Response:
        attempt = 0
        refreshed = False
        shown = self.show(url)
        while True:
            attempt += 1
            await self.bucket.take()
            h = dict(headers or {})
            p = dict(params or {})
            session = self.session()
            await self.auth.apply(session, h, p)
            try:
                async with session.request(method, url, params=p or None, headers=h, json=json, data=data,
                                           timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                    body = await resp.read()
                    out = Response(str(resp.url), resp.status, resp.headers, body)
            except asyncio.TimeoutError:
                failure = f"{method} {shown} timed out after {timeout:g} s"
                hint = "raise `request_timeout`, or check the server"
            except aiohttp.ClientConnectorError as e:
                failure = f"cannot connect to {shown}: {e.os_error.strerror if e.os_error else type(e).__name__}"
                hint = "check the url and that the server is up"
            except aiohttp.ClientError as e:
                failure = f"{method} {shown} failed: {type(e).__name__}"
                hint = "check the server"
            else:
                status = out.status
                if status < 300:
                    return out
                if status in (401, 403):
                    if status == 401 and self.auth.refreshable() and not refreshed:
                        self.auth.expire()
                        refreshed = True
                        attempt -= 1
                        continue
                    raise ToolError(f"{what}: {method} {shown} answered {status} "
                                    f"{'Unauthorized' if status == 401 else 'Forbidden'}; check `auth` (the "
                                    "credentials, and that they may read this resource)")
                if status == 429:
                    wait = retry_after(out.headers.get("Retry-After"))
                    if wait is not None and wait > retries.max_retry_after:
                        raise ToolError(f"{what}: {method} {shown} answered 429 Too Many Requests with Retry-After "
                                        f"{wait:g} s, more than retries.max_retry_after ({retries.max_retry_after:g} "
                                        "s); lower `rate_limit.per_second` or raise max_retry_after")
                    if attempt < retries.max_attempts:
                        self.bucket.hold(wait if wait is not None else backoff(retries, attempt))
                        continue
                    raise ToolError(f"{what}: {method} {shown} answered 429 Too Many Requests {attempt} times; "
                                    "lower `rate_limit.per_second`")
                if status < 500:
                    raise ToolError(f"{what}: {method} {shown} answered {status}: {excerpt(out.body, self.auth.secrets())}"
                                    "; check the url, `params` and `records`")
                failure = f"{method} {shown} answered {status}"
                hint = "the server failed; try again later"
            if attempt >= retries.max_attempts:
                raise ToolError(f"{what}: {failure} (tried {attempt} times); {hint}")
            await asyncio.sleep(backoff(retries, attempt))


def backoff(retries: Retries, attempt: int) -> float:
    """Full jitter: many clients failing together do not come back together."""
    return random.uniform(0, min(retries.max_delay, retries.initial_delay * 2 ** (attempt - 1)))


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def excerpt(body: bytes, secrets: list[str], size: int = 200) -> str:
    from agent_etl.redaction import redact

    text = redact(body[:size].decode("utf-8", "replace").strip().replace("\n", " "), secrets)
    return repr(text + ("..." if len(body) > size else ""))


def strip_param(url: str, name: str | None) -> str:
    if not name or name not in url:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    return urlunsplit(parts._replace(query=urlencode(query)))


def endpoint(ctx: Any, key: str, auth: Auth | None, rate_limit: RateLimit | None) -> Endpoint:
    """The run's endpoint for ``key`` (a connection name, or the URL's origin) and these credentials:
    tasks with the same credentials share a session; every task on ``key`` shares the rate limit
    (the first to ask sets it: give it on the connection)."""
    bucket = ctx.resources.get(("http.bucket", key), lambda: TokenBucket(
        rate_limit.per_second if rate_limit else None, rate_limit.burst if rate_limit else None))
    creds = hashlib.sha256(auth.model_dump_json().encode()).hexdigest() if auth else ""
    return ctx.resources.get(("http", key, creds), lambda: Endpoint(auth, bucket), lambda e: e.close())
