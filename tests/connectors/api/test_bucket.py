"""The token bucket behind `rate_limit` and Retry-After (no wall-clock assertions: only that a
request which must wait a second or a minute does not go out at once)."""

from __future__ import annotations

import asyncio

import pytest

from agent_etl.tools.http.bucket import TokenBucket
from agent_etl.tools.http.client import retry_after


async def test_burst_then_wait():
    bucket = TokenBucket(rate=0.5, burst=3)  # a token every 2 s, 3 at once
    for _ in range(3):
        await asyncio.wait_for(bucket.take(), 1)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(bucket.take(), 0.05)


async def test_a_hold_stops_every_request_until_it_ends():
    bucket = TokenBucket(rate=None)
    await asyncio.wait_for(bucket.take(), 1)  # no rate: never waits
    bucket.hold(60)  # a 429 asked for a minute
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(bucket.take(), 0.05)


def test_retry_after_in_seconds_or_a_date():
    assert retry_after("3") == 3.0 and retry_after(None) is None and retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: go now
