"""examples/api (docs/connectors/api.md) against a local API and webhook: three pages of orders by
cursor behind a bearer token, all of them to Parquet, the paid ones POSTed as JSON Lines (issue 17)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.docs.test_docs_examples import copy_example, run_ok
from tests.threaded_app import ThreadedApp

web = pytest.importorskip("aiohttp.web", reason="aiohttp (the api extra) is not installed")

ORDERS = [{"order_id": i, "status": "paid" if i % 3 else "cancelled", "amount": i * 1.5,
           "updated_at": f"2024-05-0{1 + i % 9}T10:00:00Z"} for i in range(1, 13)]


class ShopApi:
    """GET /v1/orders: pages of 5 by cursor, only with the example's bearer token; POST /hook: the
    JSON Lines bodies it got."""

    def __init__(self) -> None:
        self.posted: list[dict] = []
        self.since: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/v1/orders", self.orders)
        self.app.router.add_post("/hook", self.hook)
        self.server = ThreadedApp(self.app)

    async def orders(self, request):
        if request.headers.get("Authorization") != "Bearer t0ken":
            return web.json_response({"error": "unauthorized"}, status=401)
        self.since.append(request.query.get("updated_since", ""))
        start = int(request.query.get("cursor", "0"))
        page = ORDERS[start:start + 5]
        more = start + 5 < len(ORDERS)
        return web.json_response({"data": page, "meta": {"next_cursor": str(start + 5) if more else None}})

    async def hook(self, request):
        self.posted += [json.loads(line) for line in (await request.text()).splitlines() if line]
        return web.json_response({"ok": True})

    def start(self) -> str:
        return self.server.start().url

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def shop() -> Iterator[tuple[ShopApi, str]]:
    server = ShopApi()
    url = server.start()
    try:
        yield server, url
    finally:
        server.stop()


def test_api_example(tmp_path: Path, shop: tuple[ShopApi, str]):
    server, url = shop
    where = copy_example("api", tmp_path)
    run_ok(where, "--var", f"API_URL={url}/v1", "--var", "API_TOKEN=t0ken", "--var", f"WEBHOOK_URL={url}/hook",
           "pipeline.yaml")
    assert pq.read_table(where / "out" / "orders.parquet").num_rows == 12
    assert sorted(r["order_id"] for r in server.posted) == [o["order_id"] for o in ORDERS if o["status"] == "paid"]
    assert server.since[0] == "2024-01-01T00:00:00Z"  # the incremental cursor's initial value
