"""The graphql extractor and the http loader against the loopback API."""

from __future__ import annotations

import pyarrow as pa
import pytest

from agent_etl.exceptions import ToolError
from agent_etl.testing import build, read_positions, stream, tool_context
from tests.connectors.api.server import TOKEN

QUERY = "query($first: Int, $after: String) { posts(first: $first, after: $after) { edges { node { id } } } }"


async def extract(options, tmp_path, resume=None):
    ctx = tool_context(tmp_path, batch_size=5)
    ex = build("extractor", "graphql", options, ctx)
    if resume is not None:
        ex.resume_from(resume)
    batches, positions = await read_positions(ex)
    return pa.Table.from_batches(batches), positions


async def test_relay_pagination(api, tmp_path):
    opts = {"url": api.url + "/graphql", "query": QUERY, "pagination": {"type": "relay", "path": "posts", "page_size": 5}}
    table, positions = await extract(opts, tmp_path)
    assert table.column("id").to_pylist() == list(range(23))
    assert table.schema.field("author").type == pa.struct([("name", pa.string())])
    assert positions[0]["parts"] == {"0": {"n": 3, "cursor": "14"}}  # the first batch: the pages types are inferred on
    rest, _ = await extract(opts, tmp_path, resume=positions[0])
    assert rest.column("id").to_pylist() == list(range(15, 23))


async def test_offset_pagination_and_variables(api, tmp_path):
    opts = {"url": api.url + "/graphql", "query": "query($offset: Int, $limit: Int) { posts { items { id } } }",
            "variables": {"lang": "en"}, "pagination": {"type": "offset", "path": "posts.items", "page_size": 4}}
    table, _ = await extract(opts, tmp_path)
    assert table.column("id").to_pylist() == list(range(23))


async def test_errors_in_a_200_response_fail_with_the_message(api, tmp_path):
    opts = {"url": api.url + "/graphql", "query": "{ broken }", "records": "posts.items"}
    with pytest.raises(ToolError, match="answered errors: Cannot query field 'broken' on type 'Query'"):
        await extract(opts, tmp_path)


def rows(n: int) -> pa.Table:
    return pa.table({"id": list(range(n)), "name": [f"n{i}" for i in range(n)],
                     "nested": [{"a": i} for i in range(n)]})


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
async def test_http_loader_posts_batches(api, tmp_path, fmt):
    api.api.hook_failures = 2  # two 500s first: retried
    ctx = tool_context(tmp_path)
    loader = build("loader", "http", {"url": api.url + "/hook", "format": fmt, "batch_size": 40,
                                      "auth": {"type": "bearer", "token": TOKEN},
                                      "retries": {"max_attempts": 4, "initial_delay": 0.01}}, ctx)
    try:
        assert await loader.load(stream(rows(100), batch_size=50)) == 100
    finally:
        await ctx.resources.aclose()
    assert api.api.posted_rows() == rows(100).to_pylist()
    assert len(api.api.posts) == 4 and ctx.commits == [100]  # 40+10 per input batch of 50


async def test_http_loader_commits_units_and_fails_clearly(api, tmp_path):
    due = iter([True, False, True])
    ctx = tool_context(tmp_path, units=lambda: next(due))
    loader = build("loader", "http", {"url": api.url + "/hook", "auth": {"type": "bearer", "token": TOKEN}}, ctx)
    await loader.load(stream(rows(30), batch_size=10))
    await ctx.resources.aclose()
    assert ctx.commits == [10, 20, 0]
    ctx = tool_context(tmp_path)
    loader = build("loader", "http", {"url": api.url + "/hook", "auth": {"type": "bearer", "token": "nope-nope"}}, ctx)
    with pytest.raises(ToolError, match=r"answered 401 Unauthorized; check `auth`"):
        await loader.load(stream(rows(3)))
    await ctx.resources.aclose()
