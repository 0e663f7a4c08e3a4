"""A token bucket: at most ``rate`` requests per second on average, ``burst`` at once.

One bucket per connection, shared by every task of the run that uses it (``ctx.resources``), so
three extracts against one API together keep to its limit. A 429 with ``Retry-After`` pauses the
whole bucket (``hold``): the other tasks wait too instead of earning their own 429s.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate: float | None, burst: int | None = None):
        self.rate = rate
        self.capacity = float(burst or max(1.0, rate or 1.0))
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.not_before = 0.0  # a server's Retry-After holds every request until then
        self._lock = asyncio.Lock()

    def hold(self, seconds: float) -> None:
        self.not_before = max(self.not_before, time.monotonic() + seconds)

    async def take(self) -> None:
        async with self._lock:  # one waiter at a time: requests leave in the order they asked
            while True:
                now = time.monotonic()
                if now < self.not_before:
                    await asyncio.sleep(self.not_before - now)
                    continue
                if self.rate is None:
                    return
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)
