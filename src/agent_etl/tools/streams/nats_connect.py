"""Connecting to NATS with one clear message when the server is not there (shared by the nats source
and sink; imported only by them, after ``nats`` itself).

nats-py keeps retrying an initial connection to a closed port, so the TCP endpoint is tried first."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import nats

from agent_etl.exceptions import TransientError


def where(url: str) -> str:
    """host:port of a NATS url, without credentials."""
    first = url.split(",")[0].strip()
    parts = urlsplit(first if "://" in first else f"nats://{first}")
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 4222}"


async def connect(url: str, timeout: float = 5.0) -> Any:
    host, _, port = where(url).rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        writer.close()
    except (OSError, TimeoutError) as e:
        raise TransientError(f"cannot reach NATS at {host}:{port} ({type(e).__name__}: {e or 'timed out'}); check "
                             "that the server is running (with JetStream, -js) and the url") from None

    async def quiet(e: Exception) -> None:  # errors surface on the calls that fail
        pass

    try:
        return await asyncio.wait_for(nats.connect(url, connect_timeout=timeout, max_reconnect_attempts=2,
                                                   error_cb=quiet, pending_size=64 << 20), timeout * 2)
    except (OSError, TimeoutError, nats.errors.Error) as e:
        raise TransientError(f"cannot connect to NATS at {host}:{port} ({type(e).__name__}: {e}); check the url and "
                             "credentials") from None
