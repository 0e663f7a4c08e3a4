"""A real JSON API on a loopback port for the API connector tests: every pagination style,
auth kinds, 429 with Retry-After, intermittent 500s, slow responses, a malformed page, a GraphQL
endpoint and a webhook. Runs in a thread with its own event loop, so a CLI run in a child
process can reach it as well as the test's own loop."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import defaultdict
from typing import Any

from aiohttp import web

from tests.threaded_app import ThreadedApp

TOKEN = "s3cret-token-value"
USER, PASSWORD = "ana", "pa55word-value"
API_KEY = "key-0123456789"
CLIENT_ID, CLIENT_SECRET = "client-1", "client-secret-value"


def record(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"user{i}", "score": i * 0.5, "active": i % 2 == 0,
            "address": {"city": f"city{i % 7}", "zip": f"{10000 + i}"}, "tags": [f"t{i % 3}"],
            "updated_at": f"2024-01-{1 + i // 100:02d}T00:{i % 60:02d}:00Z"}


class Api:
    def __init__(self, rows: int = 95):
        self.rows = rows
        self.hits: dict[str, int] = defaultdict(int)
        self.posts: list[tuple[str, bytes]] = []
        self.hook_failures = 0  # the webhook answers 500 this many times
        self.oauth_tokens = 0
        self.slow_page: int | None = None  # /items answers this page after `slow` seconds
        self.slow = 0.0
        self.graph_rows = 23
        self.pages_seen: list[int] = []
        self.since_seen: list[str | None] = []
        self.in_flight = self.most_in_flight = 0

    def items(self, start: int, count: int, total: int | None = None) -> list[dict[str, Any]]:
        total = self.rows if total is None else total
        return [record(i) for i in range(start, min(total, start + count))]

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/items", self.page)
        r.add_get("/offset", self.offset)
        r.add_get("/cursor", self.cursor)
        r.add_get("/link", self.link)
        r.add_get("/next", self.next_url)
        r.add_get("/auth/{kind}", self.auth)
        r.add_post("/oauth/token", self.token)
        r.add_get("/flaky", self.flaky)
        r.add_get("/limited", self.limited)
        r.add_get("/slow", self.slow_page_handler)
        r.add_get("/bad", self.bad)
        r.add_get("/forbidden", self.forbidden)
        r.add_get("/users/{uid}/orders", self.orders)
        r.add_get("/since", self.since)
        r.add_post("/graphql", self.graphql)
        r.add_post("/hook", self.hook)
        return app

    async def page(self, req: web.Request) -> web.Response:
        self.hits["items"] += 1
        page, size = int(req.query.get("page", 1)), int(req.query.get("per_page", 10))
        self.pages_seen.append(page)
        if self.slow_page is not None and page >= self.slow_page:
            await asyncio.sleep(self.slow)
        return web.json_response({"data": self.items((page - 1) * size, size), "total": self.rows,
                                  "total_pages": -(-self.rows // size)})

    async def offset(self, req: web.Request) -> web.Response:
        off, limit = int(req.query.get("offset", 0)), int(req.query.get("limit", 10))
        return web.json_response({"results": self.items(off, limit)})

    async def cursor(self, req: web.Request) -> web.Response:
        self.hits["cursor"] += 1
        start = int(req.query.get("cursor", "c0")[1:])
        limit = int(req.query.get("limit", 10))
        nxt = f"c{start + limit}" if start + limit < self.rows else None
        if "tricky" in req.query:  # the records have a field named like the token, after it in the body
            items = [{**r, "next": "c999"} for r in self.items(start, limit)]
            return web.json_response({"meta": {"next": nxt}, "items": items})
        return web.json_response({"items": self.items(start, limit), "meta": {"next": nxt}})

    async def link(self, req: web.Request) -> web.Response:
        page = int(req.query.get("page", 1))
        headers = {}
        if page * 10 < self.rows:
            headers["Link"] = f'<http://{req.host}/link?page={page + 1}>; rel="next", <http://{req.host}/link?page=1>; rel="first"'
        return web.json_response(self.items((page - 1) * 10, 10), headers=headers)

    async def next_url(self, req: web.Request) -> web.Response:
        page = int(req.query.get("page", 1))
        nxt = f"/next?page={page + 1}" if page * 10 < self.rows else None
        return web.json_response({"data": self.items((page - 1) * 10, 10), "links": {"next": nxt}})

    async def auth(self, req: web.Request) -> web.Response:
        kind = req.match_info["kind"]
        self.hits[f"auth/{kind}"] += 1
        got = req.headers.get("Authorization", "")
        ok = {"bearer": got == f"Bearer {TOKEN}",
              "basic": got == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
              "key": req.headers.get("X-API-Key") == API_KEY or req.query.get("api_key") == API_KEY,
              "oauth": got == f"Bearer oauth-{self.oauth_tokens}"}[kind]
        if not ok:
            return web.json_response({"error": "unauthorized"}, status=401)
        page = int(req.query.get("page", 1))
        nxt = f"/auth/{kind}?page={page + 1}" if page < 3 else None
        if kind == "key" and nxt and "api_key" in req.query:
            nxt += f"&api_key={API_KEY}"  # some APIs echo the key in their links
        return web.json_response({"data": self.items((page - 1) * 10, 10), "next": nxt})

    async def token(self, req: web.Request) -> web.Response:
        form = await req.post()
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return web.json_response({"error": "invalid_client"}, status=401)
        self.oauth_tokens += 1
        return web.json_response({"access_token": f"oauth-{self.oauth_tokens}", "expires_in": 3600})

    async def flaky(self, req: web.Request) -> web.Response:
        self.hits["flaky"] += 1
        if self.hits["flaky"] % 3 == 1:
            return web.Response(status=503, text="busy")
        return await self.page(req)

    async def limited(self, req: web.Request) -> web.Response:
        self.hits["limited"] += 1
        if self.hits["limited"] % 2 == 1:
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "1"})
        return await self.page(req)

    async def slow_page_handler(self, req: web.Request) -> web.Response:
        await asyncio.sleep(float(req.query.get("delay", "1")))
        return await self.page(req)

    async def bad(self, req: web.Request) -> web.Response:
        page = int(req.query.get("page", 1))
        if page == 2:
            return web.Response(text='{"data": [{"id": 1,', content_type="application/json")
        return await self.page(req)

    async def forbidden(self, req: web.Request) -> web.Response:
        self.hits["forbidden"] += 1
        return web.json_response({"error": "forbidden"}, status=403)

    async def orders(self, req: web.Request) -> web.Response:
        uid = int(req.match_info["uid"])
        page = int(req.query.get("page", 1))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.02)  # long enough for concurrent reads to overlap
        finally:
            self.in_flight -= 1
        n = uid % 4 * 3  # user u has (u % 4) * 3 orders
        rows = [{"user": uid, "order": k, "day": req.query.get("day"), "until": req.query.get("until")} for k in range((page - 1) * 2, min(n, page * 2))]
        return web.json_response({"data": rows})

    async def since(self, req: web.Request) -> web.Response:
        bound = req.query.get("updated_since")
        self.since_seen.append(bound)
        rows = [r for r in self.items(0, self.rows) if bound is None or r["updated_at"] > bound]
        page, size = int(req.query.get("page", 1)), 10
        return web.json_response({"data": rows[(page - 1) * size:page * size]})

    async def graphql(self, req: web.Request) -> web.Response:
        doc = await req.json()
        query, variables = doc.get("query", ""), doc.get("variables") or {}
        if "broken" in query:
            return web.json_response({"data": None, "errors": [{"message": "Cannot query field 'broken' on type 'Query'"}]})
        nodes = [{"id": i, "title": f"post {i}", "author": {"name": f"a{i % 3}"}} for i in range(self.graph_rows)]
        if "offset" in variables:
            off, lim = int(variables["offset"]), int(variables.get("limit", 5))
            return web.json_response({"data": {"posts": {"items": nodes[off:off + lim]}}})
        after = variables.get("after")
        start = int(after) + 1 if after is not None else 0
        first = int(variables.get("first", 5))
        chunk = nodes[start:start + first]
        end = start + len(chunk) - 1
        return web.json_response({"data": {"posts": {
            "edges": [{"node": n, "cursor": str(n["id"])} for n in chunk],
            "pageInfo": {"hasNextPage": end + 1 < len(nodes), "endCursor": str(end) if chunk else None}}}})

    async def hook(self, req: web.Request) -> web.Response:
        body = await req.read()
        if self.hook_failures > 0:
            self.hook_failures -= 1
            return web.Response(status=500, text="oops")
        if req.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401)
        self.posts.append((req.content_type, body))
        return web.json_response({"ok": True})

    def posted_rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for kind, body in self.posts:
            if kind == "application/x-ndjson":
                out += [json.loads(line) for line in body.decode().splitlines() if line]
            else:
                out += json.loads(body)
        return out


class Server(ThreadedApp):
    """The API on 127.0.0.1, a free port, in a thread of its own."""

    def __init__(self, api: Api):
        self.api = api
        super().__init__(api.app())

    def start(self) -> Server:
        super().start()
        return self
