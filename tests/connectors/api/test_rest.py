"""The rest extractor against a real aiohttp API on loopback: every pagination style, auth kinds,
429 with Retry-After, 5xx retries, timeouts, fan-out, incremental, resume, and bad input."""

from __future__ import annotations

import socket

import pyarrow as pa
import pytest

from agent_etl.exceptions import ToolError
from agent_etl.testing import build, read_positions, tool_context
from tests.connectors.api.server import API_KEY, CLIENT_ID, CLIENT_SECRET, PASSWORD, TOKEN, USER, record

FAST = {"max_attempts": 3, "initial_delay": 0.01, "max_delay": 0.05}


async def read(options, tmp_path, batch_size=30, state=None, resume=None, connections=None):
    ctx = tool_context(tmp_path, batch_size=batch_size, state=state, connections=connections)
    ex = build("extractor", "rest", options, ctx)
    if resume is not None:
        ex.resume_from(resume)
    batches, positions = await read_positions(ex)
    table = pa.Table.from_batches(batches) if batches else pa.table({})
    return table, positions, ctx


STYLES = {
    "page": ("/items", {"records": "data", "pagination": {"type": "page", "page_size": 10}}),
    "offset": ("/offset", {"records": "results", "pagination": {"type": "offset", "page_size": 10}}),
    "cursor": ("/cursor", {"records": "items", "pagination": {"type": "cursor", "path": "meta.next", "page_size": 10}}),
    "link": ("/link", {"pagination": {"type": "link"}}),
    "next_url": ("/next", {"records": "data", "pagination": {"type": "next_url", "path": "links.next"}}),
}


@pytest.mark.parametrize("style", sorted(STYLES))
async def test_each_pagination_style_reads_every_record_once(api, tmp_path, style):
    path, opts = STYLES[style]
    table, positions, _ = await read({"url": api.url + path, **opts}, tmp_path)
    assert table.column("id").to_pylist() == list(range(95))
    assert table.schema.field("address").type == pa.struct([("city", pa.string()), ("zip", pa.string())])
    assert table.schema.field("updated_at").type == pa.string()  # ISO text stays text
    assert positions[-1]["rows"] == 95 and positions[-1]["done"] == ["0"]
    assert all(b % 10 == 0 for b in [p["rows"] for p in positions[:-1]])  # batches end on pages


async def test_stops_at_total_and_max_pages(api, tmp_path):
    url = api.url + "/items"
    table, _, _ = await read({"url": url, "records": "data",
                              "pagination": {"type": "page", "page_size": 10, "total_path": "total", "prefetch": 1}}, tmp_path)
    assert table.num_rows == 95 and api.api.pages_seen.count(11) == 0  # no empty page asked for
    table, _, _ = await read({"url": url, "records": "data",
                              "pagination": {"type": "page", "page_size": 10, "max_pages": 3}}, tmp_path)
    assert table.num_rows == 30


AUTHS = {
    "bearer": {"type": "bearer", "token": TOKEN},
    "basic": {"type": "basic", "username": USER, "password": PASSWORD},
    "key": {"type": "api_key", "key": API_KEY},
    "key_query": {"type": "api_key", "key": API_KEY, "query": "api_key"},
}


@pytest.mark.parametrize("kind", sorted(AUTHS))
async def test_auth_kinds(api, tmp_path, kind):
    route = "key" if kind.startswith("key") else kind
    opts = {"url": f"{api.url}/auth/{route}", "records": "data", "auth": AUTHS[kind],
            "pagination": {"type": "next_url", "path": "next"}}
    table, positions, _ = await read(opts, tmp_path, batch_size=10)
    assert table.num_rows == 30
    assert all(API_KEY not in str(p) for p in positions)  # the key echoed in next links is not kept


async def test_oauth2_client_credentials_fetches_and_refreshes_the_token(api, tmp_path):
    auth = {"type": "oauth2", "token_url": api.url + "/oauth/token", "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET}
    opts = {"url": f"{api.url}/auth/oauth", "records": "data", "auth": auth,
            "pagination": {"type": "next_url", "path": "next"}}
    table, _, _ = await read(opts, tmp_path)
    assert table.num_rows == 30 and api.api.oauth_tokens == 1
    api.api.oauth_tokens += 1  # the server revokes the token: the next request gets 401 and a new one
    table, _, _ = await read(opts, tmp_path)
    assert table.num_rows == 30


@pytest.mark.parametrize("route,status", [("auth/bearer", 401), ("forbidden", 403)])
async def test_401_and_403_fail_at_once_without_the_secret(api, tmp_path, route, status):
    opts = {"url": f"{api.url}/{route}", "records": "data", "auth": {"type": "bearer", "token": "wrong-token-xyz"}}
    with pytest.raises(ToolError) as e:
        await read(opts, tmp_path)
    assert f"answered {status}" in str(e.value) and "check `auth`" in str(e.value)
    assert "wrong-token-xyz" not in str(e.value)
    assert api.api.hits[route] == 1  # no retry


async def test_429_waits_retry_after_and_5xx_are_retried(api, tmp_path):
    opts = {"url": api.url + "/limited", "records": "data", "pagination": {"type": "page", "page_size": 50, "prefetch": 1}}
    table, _, _ = await read(opts, tmp_path)
    assert table.num_rows == 95 and api.api.hits["limited"] == 6  # 3 pages, each after one 429
    opts = {"url": api.url + "/flaky", "records": "data", "retries": FAST,
            "pagination": {"type": "page", "page_size": 10, "prefetch": 1}}
    table, _, _ = await read(opts, tmp_path)
    assert table.column("id").to_pylist() == list(range(95))


async def test_a_slow_server_times_out_with_one_clear_message(api, tmp_path):
    opts = {"url": api.url + "/slow?delay=2", "records": "data", "request_timeout": 0.2,
            "retries": {"max_attempts": 2, "initial_delay": 0.01}}
    with pytest.raises(ToolError, match=r"timed out after 0.2 s \(tried 2 times\); raise `request_timeout`"):
        await read(opts, tmp_path)
    table, _, _ = await read({"url": api.url + "/slow?delay=0.3", "records": "data", "request_timeout": 5}, tmp_path)
    assert table.num_rows == 10


async def test_malformed_page_names_page_and_url(api, tmp_path):
    opts = {"url": api.url + "/bad", "records": "data", "pagination": {"type": "page", "page_size": 10}}
    with pytest.raises(ToolError, match=r"page 2 \(http://127.0.0.1:\d+/bad\?page=2&per_page=10\) is not valid JSON"):
        await read(opts, tmp_path)


async def test_records_path_that_matches_nothing_names_the_keys(api, tmp_path):
    with pytest.raises(ToolError, match=r"no records at 'rows' \(keys there: data, total, total_pages\)"):
        await read({"url": api.url + "/items", "records": "rows"}, tmp_path)
    with pytest.raises(ToolError, match=r"no records at 'meta.rows' \(keys there: next\)"):
        await read({"url": api.url + "/cursor", "records": "meta.rows"}, tmp_path)


async def test_unreachable_server(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ToolError, match=rf"cannot connect to http://127.0.0.1:{port}/x: .*\(tried 2 times\); check the url"):
        await read({"url": f"http://127.0.0.1:{port}/x", "retries": {"max_attempts": 2, "initial_delay": 0.01}},
                   tmp_path)


async def test_fan_out_over_ids_and_dates(api, tmp_path):
    opts = {"url": api.url + "/users/{uid}/orders", "records": "data", "pagination": {"type": "page", "prefetch": 1},
            "fan_out": {"param": "uid", "values": list(range(1, 9)), "concurrency": 3}}
    table, positions, _ = await read(opts, tmp_path, batch_size=4)
    got = sorted(zip(table.column("user").to_pylist(), table.column("order").to_pylist()))
    assert got == sorted((u, k) for u in range(1, 9) for k in range(u % 4 * 3))
    assert positions[-1]["done"] == [str(i) for i in range(8)]
    assert 2 <= api.api.most_in_flight <= 3  # reads overlap, within the concurrency limit
    opts = {"url": api.url + "/users/3/orders", "records": "data",
            "fan_out": {"param": "day", "dates": {"start": "2024-01-01", "end": "2024-01-05"}, "concurrency": 2}}
    table, _, _ = await read(opts, tmp_path)
    assert sorted(set(table.column("day").to_pylist())) == [f"2024-01-0{d}" for d in range(1, 6)]
    opts["fan_out"]["dates"] = {"start": "2024-01-01", "end": "2024-01-20", "step": "7 days", "end_param": "until"}
    table, _, _ = await read(opts, tmp_path)
    assert sorted(set(zip(table.column("day").to_pylist(), table.column("until").to_pylist()))) == [
        ("2024-01-01", "2024-01-08"), ("2024-01-08", "2024-01-15"), ("2024-01-15", "2024-01-22")]


async def test_incremental_mark_feeds_the_request_param(api, tmp_path):
    opts = {"url": api.url + "/since", "records": "data", "pagination": {"type": "page"},
            "incremental": {"cursor": "updated_at", "param": "updated_since", "initial": "2024-01-01T00:30:00Z"}}
    table, _, ctx = await read(opts, tmp_path)
    expected = [r["id"] for r in map(record, range(95)) if r["updated_at"] > "2024-01-01T00:30:00Z"]
    assert sorted(table.column("id").to_pylist()) == expected
    mark = ctx.saved_state
    assert mark == {"cursor": "updated_at", "type": "string", "value": "2024-01-01T00:59:00Z"}
    table, _, ctx = await read(opts, tmp_path, state=mark)
    assert table.num_rows == 0 and getattr(ctx, "saved_state", None) is None


@pytest.mark.parametrize("style", ["page", "cursor", "link"])
async def test_resume_from_a_position_reads_the_rest_exactly(api, tmp_path, style):
    path, opts = STYLES[style]
    opts = {"url": api.url + path, **opts}
    _, positions, _ = await read(opts, tmp_path)
    rest, after, _ = await read(opts, tmp_path, resume=positions[1])
    assert rest.column("id").to_pylist() == list(range(60, 95))
    assert after[-1]["rows"] == 95


async def test_nested_as_json_text_and_pinned_types(api, tmp_path):
    opts = {"url": api.url + "/items", "records": "data", "nested": "json", "schema": {"score": "float32"}}
    table, _, _ = await read(opts, tmp_path)
    assert table.schema.field("address").type == pa.string() and table.schema.field("score").type == pa.float32()
    assert table.column("address")[1].as_py() == '{"city":"city1","zip":"10001"}'


async def test_rate_limit_is_shared_by_tasks_on_one_connection(api, tmp_path):
    ctx = tool_context(tmp_path, connections={"api": {"url": api.url, "rate_limit": {"per_second": 50}}})
    a = build("extractor", "rest", {"connection": "api", "url": "/items", "records": "data"}, ctx)
    b = build("extractor", "rest", {"connection": "api", "url": "/offset", "records": "results"}, ctx)
    c = build("extractor", "rest", {"connection": "api", "url": "/auth/bearer", "records": "data",
                                    "auth": {"type": "bearer", "token": TOKEN}}, ctx)
    assert a.endpoint is b.endpoint and a.endpoint.bucket.rate == 50
    assert c.endpoint is not a.endpoint and c.endpoint.bucket is a.endpoint.bucket  # own credentials, one limit
    table, _, _ = await read({"connection": "api", "url": "/auth/bearer", "records": "data", "auth": {
        "type": "bearer", "token": TOKEN}}, tmp_path, connections=ctx.connections)
    assert table.num_rows == 10
    await ctx.resources.aclose()


def test_bad_options_are_spec_errors():
    from pydantic import ValidationError

    from agent_etl.tools.extractors.rest import RestExtractor

    with pytest.raises(ValidationError, match="pagination type cursor needs `path`"):
        RestExtractor.Config.model_validate({"url": "http://x", "pagination": {"type": "cursor"}})
    with pytest.raises(ValidationError, match="auth type bearer needs token"):
        RestExtractor.Config.model_validate({"url": "http://x", "auth": {"type": "bearer"}})


async def test_the_next_request_goes_out_on_a_guess_that_the_parsed_page_confirms(api, tmp_path):
    opts = {"url": api.url + "/cursor", "records": "items",
            "pagination": {"type": "cursor", "path": "meta.next", "page_size": 10}}
    table, _, _ = await read(opts, tmp_path)
    assert table.num_rows == 95 and api.api.hits["cursor"] == 10  # every guess right: no request twice
    api.api.hits["cursor"] = 0
    table, _, _ = await read({**opts, "params": {"tricky": 1}}, tmp_path)  # every guess wrong
    assert table.column("id").to_pylist() == list(range(95)) and api.api.hits["cursor"] <= 20  # one wasted each
