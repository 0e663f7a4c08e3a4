"""A worker process (``agent-etl worker --bus nats://...``): hosts an ETL agent and a quality agent,
takes branches from the broker's work queue while it has room, and heartbeats.

- It takes a ``BranchAssigned`` only when it runs fewer than ``concurrency`` branches (the
  subscription's ``ready``), so an idle worker of the group gets the next one; it builds the run
  from the description the event carries, wires the branch and runs its tasks in its ETL agent.
  Task events go back over the bus; data stays here.
- Every ``interval`` seconds it writes its record (``AgentInfo``: capabilities, limits, tags, load,
  and the branches it runs) into the ``workers`` KV bucket, which the coordinator watches: a
  worker killed outright stops writing, and its branches are assigned again (``agents.dispatch``).
- ``stop()`` (SIGTERM) takes no more branches, lets those running finish, and marks its record gone;
  ``stop(finish=False)`` (a second signal) cancels them and marks the record gone, so the
  coordinator hands them to another worker at once, resumed after their last commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import socket
import uuid
from typing import Any

from agent_etl.agents.dispatch import WORKERS, WORKERS_TTL, places
from agent_etl.agents.etl import ETLAgent
from agent_etl.agents.quality import QualityAgent
from agent_etl.events import (BranchAssigned, BranchTaken, RunFinished, RunStarted, TaskAssigned)
from agent_etl.exceptions import AgentETLError

log = logging.getLogger("agent_etl.worker")
GROUP = "workers"  # the queue group (and durable consumer) of the branch work queue
TAG = re.compile(r"[A-Za-z0-9_-]+")
MAX_TAGS = 5  # a worker serves every subset of its tags: 2^n - 1 work consumers


class Worker:
    kind = "worker"

    def __init__(self, bus: Any, *, concurrency: int = 1, tags: list[str] | tuple[str, ...] = (),
                 interval: float = 1.0, registry: Any = None, worker_id: str | None = None):
        self.bus = bus
        self.id = worker_id or f"worker-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.concurrency, self.tags, self.interval = concurrency, sorted(set(tags)), interval
        bad = [t for t in self.tags if not TAG.fullmatch(t)]
        if bad or len(self.tags) > MAX_TAGS:
            raise AgentETLError(f"worker tags {bad or self.tags}: give at most {MAX_TAGS} tags of letters, digits, "
                                "'_' and '-' (a step's tags: name the same)")
        self.stores: dict[str, Any] = {}
        self.etl = ETLAgent(bus, agent_id=f"etl@{self.id}", registry=registry, stores=self.stores)
        self.quality = QualityAgent(bus, agent_id=f"quality@{self.id}", stores=self.stores)
        self.branches: dict[tuple[str, str, int], asyncio.Task] = {}  # (run, branch, attempt) -> its tasks
        self._room = asyncio.Semaphore(concurrency)
        self._subs: list[Any] = []
        self._taking: list[Any] = []
        self._beat: asyncio.Task | None = None
        self.kv: Any = None
        self.beats = 0

    def record(self) -> dict[str, Any]:
        """What the heartbeat says: the worker's AgentInfo, and what it runs."""
        return {"id": self.id, "kind": self.kind, "capabilities": sorted(self.etl.capabilities |
                                                                          self.quality.capabilities),
                "limits": {"concurrency": self.concurrency}, "tags": self.tags, "load": len(self.branches),
                "running": [f"{r}/{b}#{a}" for r, b, a in self.branches], "interval": self.interval,
                "pid": os.getpid(), "host": socket.gethostname(), "beat": self.beats}

    async def start(self) -> None:
        self.kv = await self.bus.kv(WORKERS, ttl=WORKERS_TTL)
        await self.etl.start()
        await self.quality.start()
        await self._beat_once()
        self._beat = asyncio.get_running_loop().create_task(self._heartbeat(), name=f"heartbeat:{self.id}")
        self._subs.append(await self.bus.listen(RunFinished, self._on_run_finished))
        self._taking = [await self.bus.subscribe(BranchAssigned, self._on_branch, queue=GROUP, durable=GROUP,
                                                 max_deliver=5, ready=self._has_room)]
        # a branch whose steps ask for tags has a work subject of its own (dispatch.place): this worker
        # serves those of every subset of its tags, each a consumer shared with the workers serving it
        for where in places(self.tags) if getattr(self.bus, "remote", False) else ():
            durable = f"{GROUP}-{hashlib.sha1(where.encode()).hexdigest()[:12]}"
            self._taking.append(await self.bus.subscribe(BranchAssigned, self._on_branch, queue=durable,
                                                         durable=durable, max_deliver=5, ready=self._has_room,
                                                         place=where))

    async def _has_room(self) -> None:
        await self._room.acquire()
        self._room.release()

    async def _beat_once(self) -> None:
        self.beats += 1  # the record changes with every beat: the coordinator watches it change
        await self.kv.put(self.id, json.dumps(self.record()).encode())

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._beat_once()
            except Exception as e:  # the broker is gone for now; the coordinator sees the silence
                log.warning("worker %s: heartbeat not written: %s", self.id, e)

    async def _on_branch(self, ev: BranchAssigned) -> None:
        await self._room.acquire()
        key = (ev.run_id, ev.branch, ev.attempt)
        try:
            await self.bus.publish(BranchTaken(run_id=ev.run_id, branch=ev.branch, attempt=ev.attempt,
                                               agent=self.id))
            if ev.run_id not in self.etl.runs:
                self.etl._on_run_started(RunStarted(run_id=ev.run_id, pipeline=ev.pipeline, tasks=ev.tasks,
                                                    description=ev.description, store_url=ev.store_url,
                                                    cursors=ev.cursors))
            # each assignment is wired anew: the same attempt number comes again when a run is resumed
            self.etl._wired.discard((ev.run_id, ev.attempt, tuple(ev.tasks)))
            for i, task in enumerate(reversed(ev.tasks)):  # readers first, as the coordinator assigns them
                self.etl._on_assigned(TaskAssigned(run_id=ev.run_id, task=task, agent=self.etl.id, reason=ev.reason,
                                                   attempt=ev.attempt, branch=ev.tasks if i == 0 else [],
                                                   resume=ev.resume if i == 0 else None, trace=ev.trace))
            names = {f"{ev.run_id}/{t}" for t in ev.tasks}
            work = [w for w in self.etl._work if w.get_name() in names]
        except BaseException:
            self._room.release()
            raise
        log.info("worker %s took branch %s of run %s (attempt %d)", self.id, ev.branch, ev.run_id, ev.attempt)
        self.branches[key] = asyncio.get_running_loop().create_task(self._finishing(key, work),
                                                                    name=f"branch:{ev.run_id}/{ev.branch}")
        await self._beat_once()

    async def _finishing(self, key: tuple[str, str, int], work: list[asyncio.Task]) -> None:
        try:
            await asyncio.gather(*work, return_exceptions=True)
        finally:
            self.branches.pop(key, None)
            self._room.release()

    async def _on_run_finished_later(self, run_id: str) -> None:
        running = [t for k, t in self.branches.items() if k[0] == run_id]
        await asyncio.gather(*running, return_exceptions=True)
        await self.etl.release(run_id)

    def _on_run_finished(self, ev: RunFinished) -> None:
        if ev.run_id in self.etl.runs:
            asyncio.get_running_loop().create_task(self._on_run_finished_later(ev.run_id))

    async def stop(self, finish: bool = True) -> None:
        """Take no more branches; let the running ones finish (or cancel them), then say goodbye."""
        for taking in self._taking:
            await taking.cancel()
        self._taking = []
        running = list(self.branches.values())
        if not finish:
            for key in list(self.branches):
                prefix = f"{key[0]}/"
                for w in [w for w in self.etl._work if w.get_name().startswith(prefix)]:
                    w.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
        try:  # the coordinator takes what is left as handed back
            await self.kv.put(self.id, json.dumps({**self.record(), "gone": True}).encode())
        except Exception:
            pass
        for sub in self._subs:
            await sub.cancel()
        await self.quality.stop()
        await self.etl.stop()
        for store in self.stores.values():
            store.close()
