"""Webhook alerts: a JSON POST on run failure, quality failure, anomaly and stall.

Where they go: the pipeline's ``alerts:`` (``- webhook: ${ALERT_URL}``, ``on: [run_failed, ...]``)
and ``AGENT_ETL_ALERT_WEBHOOK`` (every run, every kind). The body is one JSON object::

    {"alert": "run_failed", "pipeline": "orders", "run_id": "...", "message": "...", "ts": 1700000000.0, ...}

A delivery is tried ``attempts`` times with a growing pause (0.5 s, 1 s, 2 s, ...); one that still
fails is logged (naming the host only: a token in the URL stays out of the log) and counted,
never raised: an alert never fails a run. Deliveries run in the background, and ``close()`` waits
for those in flight, so the alert of a run's end goes out before the process exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("agent_etl.alerts")
KINDS = ("run_failed", "quality_failed", "anomaly", "stall")


@dataclass(frozen=True)
class Webhook:
    url: str
    on: tuple[str, ...] = KINDS
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 5.0
    attempts: int = 3

    @classmethod
    def of(cls, alert: Any) -> Webhook:
        """From a spec ``Alert`` (or anything with its fields)."""
        return cls(alert.webhook, tuple(alert.on), tuple(sorted(alert.headers.items())), alert.timeout, alert.attempts)

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc.rpartition("@")[2]


class Alerts:
    """Sends alerts to webhooks. ``hooks`` given to ``send`` are a run's (spec ``Alert`` models or
    ``Webhook``s); ``always`` (from the settings) get every alert too."""

    def __init__(self, always: list[Webhook] | None = None, *, pause: float = 0.5):
        self.always = list(always or [])
        self.pause = pause
        self.sent = 0
        self.failed = 0
        self._flight: set[asyncio.Task] = set()

    @classmethod
    def from_settings(cls, settings: Any) -> Alerts:
        url = getattr(settings, "alert_webhook", None)
        if url and not url.startswith(("http://", "https://")):
            from agent_etl.exceptions import SpecError

            raise SpecError("AGENT_ETL_ALERT_WEBHOOK must be an http:// or https:// URL")
        return cls([Webhook(url)] if url else [])

    def send(self, kind: str, hooks: list[Any], **payload: Any) -> None:
        """Post ``{"alert": kind, **payload, "ts": now}`` to every hook that wants ``kind``, in the
        background; returns at once."""
        targets = [h if isinstance(h, Webhook) else Webhook.of(h) for h in hooks] + self.always
        targets = [t for t in dict.fromkeys(targets) if kind in t.on]
        if not targets:
            return
        body = json.dumps({"alert": kind, **payload, "ts": time.time()}, default=str).encode()
        loop = asyncio.get_running_loop()
        for hook in targets:
            task = loop.create_task(self._deliver(hook, body, kind), name=f"alert:{kind}")
            self._flight.add(task)
            task.add_done_callback(self._flight.discard)

    async def _deliver(self, hook: Webhook, body: bytes, kind: str) -> None:
        error = ""
        for attempt in range(1, hook.attempts + 1):
            try:
                status = await asyncio.to_thread(_post, hook, body)
            except Exception as e:  # noqa: BLE001 - any failure to deliver is retried, then logged
                error = _reason(e)
            else:
                if 200 <= status < 300:
                    self.sent += 1
                    return
                error = f"HTTP {status}"
                if 400 <= status < 500 and status not in (408, 429):
                    break  # the receiver refuses it: sending it again will not help
            if attempt < hook.attempts:
                await asyncio.sleep(self.pause * 2 ** (attempt - 1))
        self.failed += 1
        log.warning("alert %s to %s not delivered after %d attempt(s): %s", kind, hook.host, attempt, error)

    async def close(self) -> None:
        """Wait for the deliveries in flight."""
        while self._flight:
            await asyncio.gather(*list(self._flight), return_exceptions=True)


def _post(hook: Webhook, body: bytes) -> int:
    request = urllib.request.Request(hook.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "agent-etl",
                                              **dict(hook.headers)})
    try:
        with urllib.request.urlopen(request, timeout=hook.timeout) as response:  # noqa: S310 - http(s) only (spec)
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def _reason(e: Exception) -> str:
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return f"{type(e).__name__}: {e}"
