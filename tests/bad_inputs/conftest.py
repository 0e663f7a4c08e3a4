"""Servers the bad-input cases point at: a misbehaving HTTP API, moto's S3 and a PostgreSQL schema
of the test's own; each case says which it needs (``needs:``) and gets their addresses as ``--var``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from tests.connectors.s3.conftest import s3, s3_endpoint  # noqa: F401 - fixtures used by the cases
from tests.threaded_app import ThreadedApp

aiohttp_web = pytest.importorskip("aiohttp.web", reason="aiohttp (the api extra) is not installed")


class BadApi:
    """An API that fails in every way a case needs: /401, /429 (always), /500 (always), /slow,
    /html (200 but not JSON), /deep (a record path that is not there)."""

    def __init__(self) -> None:
        web = aiohttp_web
        self.app = web.Application()
        answers = {
            "/401": lambda: web.json_response({"error": "unauthorized"}, status=401),
            "/429": lambda: web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "0"}),
            "/500": lambda: web.Response(status=500, text="internal error"),
            "/html": lambda: web.Response(text="<html>maintenance</html>", content_type="text/html"),
            "/deep": lambda: web.json_response({"data": {"rows": [{"id": 1}]}}),
        }
        for path, answer in answers.items():
            self.app.router.add_get(path, self._handler(answer))
        self.app.router.add_get("/slow", self.slow)
        self.server = ThreadedApp(self.app)

    @staticmethod
    def _handler(answer):
        async def handle(_):
            return answer()
        return handle

    async def slow(self, _):
        await asyncio.sleep(30)
        return aiohttp_web.json_response([])

    def start(self) -> str:
        return self.server.start().url

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="session")
def bad_api() -> Iterator[str]:
    server = BadApi()
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def pg_schema_url() -> Iterator[tuple[str, str]]:
    """A schema of this test's own in the shared database: (url, schema), dropped afterwards."""
    import psycopg

    url = "postgresql://postgres@127.0.0.1:5432/test"
    schema = f"bad_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield url, schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def s3_bucket(s3) -> Iterator[str]:  # noqa: F811 - the s3 fixture imported above
    name = f"bad-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for o in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=o["Key"])
    s3.delete_bucket(Bucket=name)
