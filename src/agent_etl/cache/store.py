"""The result cache: extraction results by key (``cache.keys``), in this process's memory (LRU
within a byte budget) and on disk under the state folder (``<home>/cache/``, LRU within a byte
budget), each with an expiry time.

On disk an entry is ``<key>.arrow``, an Arrow IPC file (read memory-mapped: a hit's first batch
costs a footer read, no copy), and ``<key>.json``: when it was made and expires, rows, bytes, and
the pipeline and task that stored it (no option, url or secret: the key is a hash). The JSON is
written last, so an entry without one is incomplete and never read. A memory entry is served only
while its disk entry is there, so ``agent-etl cache clear`` also ends what a long-lived process holds.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

log = logging.getLogger("agent_etl.cache")
MEMORY_BYTES = 256 * 2**20  # until the settings are read


def cache_folder(home: str | Path) -> Path:
    return Path(home) / "cache"


@dataclass
class Hit:
    batches: list[pa.RecordBatch]  # in memory, or views of the memory-mapped IPC file
    tier: str  # where it was found: memory | disk
    meta: dict[str, Any]

    def __iter__(self):
        return iter(self.batches)


class _Memory:
    """The process-wide LRU of results held in memory, within a byte budget."""

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self.entries: OrderedDict[str, tuple[list[pa.RecordBatch], int, float]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> list[pa.RecordBatch] | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                return None
            if entry[2] <= time.time():
                self._drop(key)
                return None
            self.entries.move_to_end(key)
            return entry[0]

    def put(self, key: str, batches: list[pa.RecordBatch], nbytes: int, expires: float) -> None:
        if nbytes > self.budget:
            return
        with self.lock:
            self._drop(key)
            self.entries[key] = (batches, nbytes, expires)
            self.used += nbytes
            while self.used > self.budget:
                self._drop(next(iter(self.entries)))

    def _drop(self, key: str) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.used -= entry[1]

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.used = 0


_memory = _Memory(MEMORY_BYTES)


@functools.cache
def _budgets() -> tuple[int, int]:
    from agent_etl.settings import Settings

    s = Settings()
    return s.cache_memory_mb * 2**20, s.cache_disk_mb * 2**20


def _touch(path: Path) -> None:
    """Mark an entry used now; its JSON's mtime orders the LRU. Set from the precise clock: the file
    system's own stamps come from a coarse one, and two entries of one millisecond would tie."""
    try:
        now = time.time_ns()
        os.utime(path, ns=(now, now))
    except OSError:
        pass


def _used(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


class ResultCache:
    """The cache of one state folder (its disk tier) and of this process (its memory tier)."""

    def __init__(self, home: str | Path, *, memory_bytes: int | None = None, disk_bytes: int | None = None):
        """Budgets: the arguments, else AGENT_ETL_CACHE_MEMORY_MB / AGENT_ETL_CACHE_DISK_MB (``Settings``)."""
        self.folder = cache_folder(home)
        memory, disk = _budgets()
        _memory.budget = memory if memory_bytes is None else memory_bytes
        self.disk_bytes = disk if disk_bytes is None else disk_bytes

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.arrow", self.folder / f"{key}.json"

    def get(self, key: str) -> Hit | None:
        """The unexpired entry of ``key``, or None."""
        data, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_bytes())
        except (OSError, ValueError):
            return None
        if float(meta.get("expires", 0)) <= time.time():
            self._remove(key)
            return None
        batches = _memory.get(key)
        if batches is not None:
            _touch(meta_path)
            return Hit(batches, "memory", meta)
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(data)))
        except (OSError, pa.ArrowInvalid) as e:
            log.warning("result cache: entry %s unreadable (%s); dropped", key[:12], e)
            self._remove(key)
            return None
        _touch(meta_path)  # recently used: evicted last
        # into the memory tier: the batches are views of the mapped file (no copy), and the next hit in
        # this process skips opening it
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        _memory.put(key, batches, sum(b.nbytes for b in batches), float(meta["expires"]))
        return Hit(batches, "disk", meta)

    def writer(self, key: str, ttl: float, meta: dict[str, Any]) -> Writer:
        return Writer(self, key, ttl, meta)

    def _remove(self, key: str) -> None:
        for p in self._paths(key):
            try:
                p.unlink()
            except OSError:
                pass
        with _memory.lock:
            _memory._drop(key)

    def entries(self) -> list[dict[str, Any]]:
        """Every complete entry's metadata (with ``key`` and ``expired``), least recently used first."""
        out = []
        now = time.time()
        for meta_path in sorted(self.folder.glob("*.json"), key=_used):
            try:
                meta = json.loads(meta_path.read_bytes())
            except (OSError, ValueError):
                continue
            out.append({"key": meta_path.stem, **meta, "expired": float(meta.get("expires", 0)) <= now})
        return out

    def clear(self) -> tuple[int, int]:
        """Remove every entry (and leftovers of interrupted writes); returns (entries, bytes) removed."""
        count = size = 0
        if self.folder.is_dir():
            for p in self.folder.iterdir():
                if p.suffix == ".json":
                    count += 1
                try:
                    size += p.stat().st_size
                    p.unlink()
                except OSError:
                    pass
        _memory.clear()
        return count, size

    def evict(self) -> None:
        """Drop expired entries, then the least recently used ones until the folder fits its budget."""
        entries = self.entries()
        total = sum(int(e.get("bytes", 0)) for e in entries)
        for e in entries:
            if e["expired"] or total > self.disk_bytes:
                self._remove(e["key"])
                total -= int(e.get("bytes", 0))


class Writer:
    """Writes one result as it streams by; ``commit`` makes it an entry, ``abort`` leaves nothing."""

    def __init__(self, cache: ResultCache, key: str, ttl: float, meta: dict[str, Any]):
        self.cache, self.key, self.ttl, self.meta = cache, key, ttl, meta
        self.batches: list[pa.RecordBatch] = []
        self.rows = self.nbytes = 0
        self.sink: Any = None
        self.out: Any = None
        self.failed = False
        self.tmp = cache.folder / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"

    def add(self, batch: pa.RecordBatch) -> None:
        if self.failed:
            return
        try:
            if self.out is None:
                self.cache.folder.mkdir(parents=True, exist_ok=True)
                self.sink = pa.OSFile(str(self.tmp), "wb")
                self.out = pa.ipc.new_file(self.sink, batch.schema)
            self.out.write_batch(batch)
        except (OSError, pa.ArrowInvalid, pa.ArrowTypeError) as e:  # e.g. a later batch of another schema
            log.warning("result cache: not storing %s (%s)", self.meta.get("task"), e)
            self.abort()
            self.failed = True
            return
        self.rows += batch.num_rows
        self.nbytes += batch.nbytes
        if self.nbytes <= _memory.budget:
            self.batches.append(batch)

    def commit(self) -> bool:
        if self.failed or self.out is None:
            self.abort()
            return False
        self.out.close()
        self.sink.close()
        data, meta_path = self.cache._paths(self.key)
        now = time.time()
        meta = {**self.meta, "created": now, "expires": now + self.ttl, "ttl": self.ttl, "rows": self.rows,
                "bytes": self.tmp.stat().st_size}
        os.replace(self.tmp, data)
        tmp_meta = meta_path.with_suffix(".json.tmp")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, meta_path)
        _touch(meta_path)
        if self.nbytes <= _memory.budget:
            _memory.put(self.key, self.batches, self.nbytes, meta["expires"])
        self.batches = []
        self.cache.evict()
        return True

    def abort(self) -> None:
        for closing in (self.out, self.sink):
            try:
                if closing is not None:
                    closing.close()
            except (OSError, pa.ArrowException):
                pass
        self.out = self.sink = None
        self.batches = []
        try:
            self.tmp.unlink()
        except OSError:
            pass
