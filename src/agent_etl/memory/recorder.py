"""``Recorder``: how a coordinator stores the experiences of its finished runs, off the event loop.

One writer thread does all memory work (so Chroma calls never run on the loop, and never two at
once): it reads the run's data profiles, builds the experiences and adds them in one batch, opening
the memory of each state folder on first use (importing chromadb then, never at start). A memory
failure is a logged warning, never a failed run; when another process holds the memory folder, the
experiences wait in ``pending/`` for the next process that opens it. ``learn`` (the selector's hook)
is given each run's experiences, on the event loop the run was recorded from.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable

from agent_etl.memory.base import VectorMemory
from agent_etl.memory.experience import Experience, experiences
from agent_etl.memory.folder import open_memory, spool
from agent_etl.memory.lock import MemoryLocked

log = logging.getLogger("agent_etl.memory")


WARM_AFTER = 0.4  # seconds into a run when its memory is opened (Recorder.prepare)


class Recorder:
    def __init__(self, kind: str = "chroma", learn: Callable[[list[Experience]], Awaitable[None]] | None = None):
        self.kind = kind
        self._learn = learn
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._memories: dict[Path, VectorMemory] = {}
        self._futures: list[Future] = []
        self._learning: list[Future] = []
        self._timers: list[asyncio.TimerHandle] = []  # the warm-ups ``prepare`` has scheduled

    def record(self, run_id: str, pipeline: Any, results: dict[str, Any], home: str | Path, store: Any = None) -> None:
        """Queue the experiences of a finished run; returns at once, never raises."""
        if self.kind == "off":
            return
        try:
            self._loop = asyncio.get_running_loop()
            self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(self._submit(self._write, run_id, pipeline, dict(results), Path(home), store))
        except Exception as e:  # e.g. the interpreter is shutting down
            log.warning("memory: experiences of run %s not stored: %s", run_id, e)

    def prepare(self, home: str | Path) -> None:
        """At a run's start: in ``WARM_AFTER`` seconds (once the run is under way, not competing
        with its start), open the memory of ``home`` on the writer thread and make its first read
        (Chroma's first operation on a collection costs ~50 ms); the run's end then waits for its own
        writes only. Returns at once; a failure is the write's to report."""
        if self.kind == "off":
            return
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if t.when() > loop.time()]  # those still to fire
        self._timers.append(loop.call_later(WARM_AFTER, self._queue_warm, Path(home)))

    def _queue_warm(self, home: Path) -> None:
        self._futures.append(self._submit(self._warm, home))

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """``fn(*args)`` on the writer thread (started on first use)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="agent-etl-memory")
        return self._pool.submit(fn, *args)

    def _warm(self, home: Path) -> None:
        try:
            self._memory(home).count()
        except Exception as e:  # locked by another process, unreadable: the run's write says so
            log.debug("memory: not opened at the run's start: %s: %s", type(e).__name__, e)

    def _write(self, run_id: str, pipeline: Any, results: dict[str, Any], home: Path, store: Any) -> None:
        try:
            profiles = store.run_profiles(run_id) if store is not None else {}
            items = experiences(run_id, pipeline, results, profiles)
            if not items:
                return
            if self._learn is not None and self._loop is not None:
                self._learning.append(asyncio.run_coroutine_threadsafe(_learn(self._learn, items), self._loop))
            records = [e.to_record() for e in items]
            try:
                memory = self._memory(home)
            except MemoryLocked as e:
                path = spool(home, run_id, records)
                log.warning("memory: %s; the experiences of run %s wait in %s for the next process that opens it",
                            e, run_id, path)
                return
            memory.add(records)
        except Exception as e:
            log.warning("memory: experiences of run %s not stored: %s: %s", run_id, type(e).__name__, e)

    def _memory(self, home: Path) -> VectorMemory:
        key = home.resolve() if self.kind == "chroma" else Path("")
        memory = self._memories.get(key)
        if memory is None:
            memory = self._memories[key] = open_memory(self.kind, home)
        return memory

    async def memory(self, home: str | Path) -> VectorMemory:
        """The memory of ``home`` as this recorder holds it open (after the writes queued so far)."""
        await self.flush()
        return await asyncio.wrap_future(self._submit(self._memory, Path(home)))

    async def read(self, home: str | Path, fn: Callable[[VectorMemory], Any]) -> Any:
        """``fn(memory)`` on the writer thread, with the memory of ``home`` (after the writes queued so far)."""
        memory = await self.memory(home)
        return await asyncio.wrap_future(self._submit(fn, memory))

    async def experiences(self, home: str | Path, document: str, k: int = 10, where: Any = None) -> list[Experience]:
        """The experiences nearest to ``document`` (a descriptor's JSON or text), nearest first."""
        memory = await self.memory(home)
        hits = await asyncio.wrap_future(self._submit(memory.query, document, k, where))
        return [Experience.from_record(h.record) for h in hits]

    async def flush(self) -> None:
        """Wait for the writes queued so far, and for ``learn`` to have taken their experiences."""
        pending, self._futures = self._futures, []
        for f in pending:
            await asyncio.wrap_future(f)
        learning, self._learning = self._learning, []
        for f in learning:
            await asyncio.wrap_future(f)

    async def close(self) -> None:
        """Finish the queued writes and close every memory (releasing their folders' locks)."""
        for timer in self._timers:  # a run shorter than WARM_AFTER: its write opened the memory
            timer.cancel()
        self._timers = []
        await self.flush()
        if self._pool is None:
            return
        memories, self._memories = list(self._memories.values()), {}
        pool, self._pool = self._pool, None

        def close_all() -> None:
            for m in memories:
                try:
                    m.close()
                except Exception as e:
                    log.warning("memory: closing failed: %s", e)

        await asyncio.wrap_future(pool.submit(close_all))
        pool.shutdown(wait=True)


async def _learn(learn: Callable[[list[Experience]], Awaitable[None]], items: list[Experience]) -> None:
    try:
        await learn(items)
    except Exception as e:
        log.warning("memory: the selector could not learn from run %s: %s: %s", items[0].run_id, type(e).__name__, e)
