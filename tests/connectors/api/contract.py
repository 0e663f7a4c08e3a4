"""The rest extractor's entry in the contract suites (tests/contract/backends.py): a loopback API
serving a table as pages of JSON records at ``/tables/<name>``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa
from aiohttp import web

from tests.connectors.api.server import Api, Server

PAGE = 100


class TableApi(Api):
    """The test API plus ``/tables/{name}?page=``: the rows of a table, PAGE at a time (404 if none)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[bytes]] = {}

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/tables/{name}", self.table)
        return app

    async def table(self, req: web.Request) -> web.Response:
        pages = self.tables.get(req.match_info["name"])
        if pages is None:
            return web.json_response({"error": "no such table"}, status=404)
        page = int(req.query.get("page", 1))
        body = pages[page - 1] if 1 <= page <= len(pages) else b'{"data": []}'
        return web.Response(body=body, content_type="application/json")


@contextlib.contextmanager
def rest_api(place: Any) -> Iterator[None]:
    server = Server(TableApi()).start()
    place.data["server"] = server
    try:
        yield
    finally:
        server.stop()


def rest_write(place: Any, table: pa.Table) -> dict[str, Any]:
    server = place.data["server"]
    rows = table.to_pylist()  # dates and timestamps: orjson writes them ISO 8601
    server.api.tables[place.name] = [orjson.dumps({"data": rows[i:i + PAGE]}) for i in range(0, len(rows), PAGE)]
    return {"url": f"{server.url}/tables/{place.name}", "records": "data",
            "pagination": {"type": "page", "page_size": PAGE, "prefetch": 2}}


def rest_missing(place: Any) -> dict[str, Any]:
    return {"url": f"{place.data['server'].url}/tables/{place.name}_missing", "records": "data"}


def hook_options(place: Any) -> dict[str, Any]:
    from tests.connectors.api.server import TOKEN

    return {"url": f"{place.data['server'].url}/hook", "auth": {"type": "bearer", "token": TOKEN}, "batch_size": 7}


def read_hook(place: Any) -> pa.Table:
    """What the webhook received (an endpoint is always there: no rows is an empty table)."""
    rows = place.data["server"].api.posted_rows()
    return pa.Table.from_pylist(rows) if rows else pa.table({})
