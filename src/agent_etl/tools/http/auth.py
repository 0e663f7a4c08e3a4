"""Authentication of requests: bearer, basic, API key (header or query), OAuth2 client credentials.

Secret values reach a tool interpolated; ``check_secrets`` refuses values written inline in the
pipeline file (the run's ``pipeline.secrets`` holds what came from ``${ENV}``/``${file:}``), and
no secret is ever put in a message: messages name the option, never its value.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp
import orjson

from agent_etl.exceptions import ToolError
from agent_etl.tools.http.options import Auth


def check_secrets(auth: Auth | None, ctx: Any, where: str) -> None:
    """Refuse a secret written inline in the pipeline file (only known inside a run)."""
    run = getattr(ctx, "run", None)
    pipeline = getattr(run, "pipeline", None)
    if auth is None or pipeline is None:
        return
    known = pipeline.secrets
    for name, value in auth.secret_fields().items():
        if value not in known:
            raise ToolError(f"{where}: auth.{name} is written in the pipeline file; give it as ${{ENV_VAR}} or "
                            "${file:path} so that it is never stored with the run")


class Authenticator:
    """Headers and query parameters to add to each request; an OAuth2 token is fetched when first
    needed and again shortly before it expires, or when the API answers 401 (``refresh``)."""

    def __init__(self, auth: Auth | None):
        self.auth = auth
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def secrets(self) -> list[str]:
        out = list(self.auth.secret_fields().values()) if self.auth else []
        return out + ([self._token] if self._token else [])

    def query_name(self) -> str | None:
        return self.auth.query if self.auth is not None and self.auth.type == "api_key" else None

    async def apply(self, session: aiohttp.ClientSession, headers: dict[str, str], params: dict[str, Any]) -> None:
        a = self.auth
        if a is None:
            return
        if a.type == "bearer":
            headers["Authorization"] = f"Bearer {a.token}"
        elif a.type == "basic":
            raw = f"{a.username}:{a.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        elif a.type == "api_key":
            if a.query:
                params[a.query] = a.key
            else:
                headers[a.header or "X-API-Key"] = a.key or ""
        else:
            headers["Authorization"] = f"Bearer {await self._oauth_token(session)}"

    def refreshable(self) -> bool:
        return self.auth is not None and self.auth.type == "oauth2"

    def expire(self) -> None:
        self._expires = 0.0

    async def _oauth_token(self, session: aiohttp.ClientSession) -> str:
        async with self._lock:
            if self._token is not None and time.monotonic() < self._expires:
                return self._token
            a = self.auth
            assert a is not None and a.token_url
            form = {"grant_type": "client_credentials", "client_id": a.client_id or "",
                    "client_secret": a.client_secret or ""}
            if a.scope:
                form["scope"] = a.scope
            try:
                async with session.post(a.token_url, data=form) as resp:
                    body = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                raise ToolError(f"cannot get an OAuth2 token from {a.token_url}: {type(e).__name__}; check "
                                "auth.token_url") from None
            if status != 200:
                raise ToolError(f"OAuth2 token endpoint {a.token_url} answered {status}: check auth.client_id and "
                                "auth.client_secret (and auth.scope)")
            try:
                doc = orjson.loads(body)
                self._token = str(doc["access_token"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise ToolError(f"OAuth2 token endpoint {a.token_url} did not answer JSON with access_token") from None
            # refresh a little early, so a token never expires on its way to the API
            life = float(doc.get("expires_in") or 3600)
            self._expires = time.monotonic() + max(1.0, life * 0.9 - 5)
            return self._token
