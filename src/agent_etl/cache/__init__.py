"""The result cache of extracts (``cache: {ttl: 10m}`` on an extract step): a second read of the
same source with the same options, while the source has not changed (files: size and modification
time) and the entry has not expired, streams the stored result instead of reading the source.
``ResultCache`` (``cache.store``) keeps entries in memory and as Arrow IPC files under the state
folder; ``cached`` is the read path the ETL agent uses. docs/cache.md tells the rules.

Not cached, by design (the spec says so when asked): incremental extracts (each read starts at the
last mark, so the same options mean other rows) and stream sources (each read takes new messages).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from agent_etl.cache.keys import Unlisted, cache_key, source_version
from agent_etl.cache.store import ResultCache, cache_folder

__all__ = ["ResultCache", "cache_folder", "cache_key", "cached", "source_version"]


async def cached(cache: ResultCache, *, tool: str, options: dict[str, Any], connection: dict[str, Any] | None,
                 base_dir: Path, ttl: float, read: Callable[[], AsyncIterator[pa.RecordBatch]],
                 details: dict[str, Any], meta: dict[str, Any]) -> AsyncIterator[pa.RecordBatch]:
    """The batches of an extract: from the cache when it holds the result, else from ``read()``,
    stored as they stream by (kept only if the read ends cleanly). ``details["cache"]`` says which:
    ``{"status": "hit" | "stored" | "miss", "key": first 12 hex digits, ...}``."""
    try:
        version = await asyncio.to_thread(source_version, tool, options, connection, base_dir) if tool == "s3" \
            else source_version(tool, options, connection, base_dir)
    except Unlisted as e:
        details["cache"] = {"status": "miss", "why": f"the source's version is unknown ({e})"[:300]}
        async for batch in read():
            yield batch
        return
    key = cache_key(tool, options, connection, version)
    hit = cache.get(key)
    if hit is not None:
        details["cache"] = {"status": "hit", "key": key[:12], "tier": hit.tier, "rows": hit.meta.get("rows"),
                            "age_seconds": round(time.time() - float(hit.meta.get("created", 0)), 3)}
        for batch in hit:
            yield batch
        return
    details["cache"] = {"status": "miss", "key": key[:12]}
    writer = cache.writer(key, ttl, meta)
    clean = False
    try:
        async for batch in read():
            if batch.num_rows > 65536:  # a big batch's write overlaps with the loop's other work
                await asyncio.to_thread(writer.add, batch)
            else:
                writer.add(batch)
            yield batch
        clean = True
    finally:
        if clean and writer.commit():
            details["cache"]["status"] = "stored"
        elif not clean:
            writer.abort()
