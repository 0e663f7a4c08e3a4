"""Placing branches on worker processes over a broker (``--bus nats://``): the coordinator's side.

Each attempt of a branch becomes one ``BranchAssigned`` work event; one worker of the group takes
it (the broker's work queue, explicit ack) and says so (``BranchTaken``). Workers write a
heartbeat record (``AgentInfo``, the branches they run, a beat count) into the ``workers`` KV
bucket every ``interval`` seconds. A record that stops changing for ``MISSED`` intervals is a lost
worker, and so is one that says ``gone`` (a worker stopped by SIGTERM, its branches finished or
handed back): its unfinished tasks fail transiently with ``WorkerLost``, a ``BranchReassigned``
event says so, and the coordinator's retry assigns the branch again, resumed after the commits
that landed (its checkpoints), as it does after any transient failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from agent_etl.agents.planning import worker_reason
from agent_etl.agents.selector import AgentInfo
from agent_etl.events import (BranchAssigned, BranchReassigned, BranchTaken, RunFinished, RunStarted, TaskCompleted,
                              TaskFailed)
from agent_etl.observe import tracing

log = logging.getLogger("agent_etl.dispatch")
MISSED = 3  # heartbeats a worker may miss before its branches are taken as lost
WORKERS = "workers"  # the KV bucket of the workers' heartbeat records
NO_TAKER = 10.0  # seconds a branch may wait for a worker before the coordinator says so
WORKERS_TTL = 3600.0  # a record not renewed for this long goes from the bucket


def info_of(record: dict[str, Any]) -> AgentInfo:
    """The ``AgentInfo`` a worker's heartbeat record carries."""
    return AgentInfo(record["id"], record.get("kind", "worker"), frozenset(record.get("capabilities", ())),
                     dict(record.get("limits", {})), frozenset(record.get("tags", ())), int(record.get("load", 0)))


def place(tags: list[str] | tuple[str, ...]) -> str:
    """The work subject's last token for a branch needing ``tags`` (a worker serves every subset of
    its own tags); "" for a branch any worker may take."""
    return "+".join(sorted(set(tags)))


def places(tags: list[str] | tuple[str, ...]) -> list[str]:
    """Every non-empty subset of a worker's tags, as ``place`` names it: the branches it may take."""
    tags = sorted(set(tags))
    return [place([t for i, t in enumerate(tags) if mask >> i & 1]) for mask in range(1, 1 << len(tags))]


class _Placed:
    __slots__ = ("run_id", "branch", "attempt", "tasks", "tags", "agent", "done", "since")

    def __init__(self, run_id: str, branch: str, attempt: int, tasks: list[str], tags: list[str]):
        self.run_id, self.branch, self.attempt, self.tasks, self.tags = run_id, branch, attempt, tasks, tags
        self.agent: str | None = None
        self.done: set[str] = set()
        self.since = time.monotonic()


class Dispatch:
    def __init__(self, bus: Any, coordinator_id: str, local: Any = None):
        # local: called with the TaskFailed events of a lost bus (they cannot travel on it)
        self.bus, self.id, self.local = bus, coordinator_id, local
        self.runs: dict[str, RunStarted] = {}
        self.placed: dict[tuple[str, str], _Placed] = {}  # (run, branch) -> its current attempt
        self.seen: dict[str, tuple[bytes, float]] = {}  # worker -> (its last record, when it changed)
        self.reassigned: list[BranchReassigned] = []
        self._subs: list[Any] = []
        self._watch: asyncio.Task | None = None

    @classmethod
    async def open(cls, bus: Any, coordinator_id: str, local: Any = None) -> Dispatch:
        d = cls(bus, coordinator_id, local)
        d.kv = await bus.kv(WORKERS, ttl=WORKERS_TTL)
        for topic, fn in ((RunStarted, d._on_run), (RunFinished, d._on_run_finished), (BranchTaken, d._on_taken),
                          (TaskCompleted, d._on_final), (TaskFailed, d._on_final)):
            d._subs.append(await bus.listen(topic, fn))
        d._watch = asyncio.get_running_loop().create_task(d._watching(), name="dispatch-watch")
        return d

    async def workers(self) -> list[AgentInfo]:
        """The workers whose heartbeat records are there now."""
        return [info_of(json.loads(v)) for v in (await self.kv.items()).values()]

    async def assign(self, run_id: str, tasks: list[str], attempt: int, plan: Any, reason: str = "",
                     tags: list[str] | None = None) -> None:
        """Put one attempt of a branch in the work queue; with ``tags`` only a worker advertising
        all of them takes it (its own work subject: ``place``)."""
        if run_id not in self.runs:  # the RunStarted the coordinator just published is on its way back
            await self.bus.drain()
        run = self.runs[run_id]
        self.placed[(run_id, tasks[0])] = _Placed(run_id, tasks[0], attempt, tasks, tags or [])
        await self.bus.publish(BranchAssigned(
            run_id=run_id, pipeline=run.pipeline, branch=tasks[0], tasks=tasks, attempt=attempt,
            reason=reason or worker_reason(tags or []), description=run.description,
            store_url=run.store_url, cursors=run.cursors, resume=plan.to_dict() if plan is not None else run.resume,
            trace=tracing.carrier(), tags=tags or []))

    def _on_run(self, ev: RunStarted) -> None:
        self.runs[ev.run_id] = ev

    def _on_run_finished(self, ev: RunFinished) -> None:
        self.runs.pop(ev.run_id, None)
        for key in [k for k in self.placed if k[0] == ev.run_id]:
            del self.placed[key]

    def _on_taken(self, ev: BranchTaken) -> None:
        p = self.placed.get((ev.run_id, ev.branch))
        if p is not None and p.attempt == ev.attempt:
            p.agent = ev.agent

    def _on_final(self, ev: TaskCompleted | TaskFailed) -> None:
        for p in self.placed.values():
            if p.run_id == ev.run_id and p.attempt == ev.attempt and ev.task in p.tasks:
                p.done.add(ev.task)

    async def _watching(self) -> None:
        warned: set[str] = set()
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            lost = getattr(self.bus, "lost", None)
            if lost:
                self._bus_lost(lost)
                continue
            for p in self.placed.values():
                if p.agent is None and now - p.since > NO_TAKER and p.run_id not in warned:
                    warned.add(p.run_id)
                    log.warning("run %s: no worker has taken branch %s for %.0f s; is `agent-etl worker --bus %s%s` "
                                "running?", p.run_id, p.branch, now - p.since, getattr(self.bus, "server", ""),
                                f" --tags {','.join(p.tags)}" if p.tags else "")
            for agent in {p.agent for p in self.placed.values() if p.agent is not None and len(p.done) < len(p.tasks)}:
                try:
                    value = await self.kv.get(agent)
                except Exception as e:  # the broker is gone: the run's events stop too, and it fails there
                    log.warning("cannot read the heartbeat of %s: %s", agent, e)
                    continue
                last = self.seen.get(agent)
                if value is not None and (last is None or last[0] != value):
                    self.seen[agent] = (value, now)
                record = json.loads(value) if value else {}
                limit = MISSED * float(record.get("interval", 1.0))
                changed = self.seen.get(agent, (b"", now))[1]
                if record.get("gone") or now - changed > limit:
                    how = "handed its branches back" if record.get("gone") else "stopped heartbeating"
                    for p in [p for p in self.placed.values() if p.agent == agent and len(p.done) < len(p.tasks)]:
                        await self._lost(p, how)

    async def _lost(self, p: _Placed, how: str) -> None:
        agent, p.agent = p.agent, None
        log.warning("run %s: worker %s %s while running branch %s (attempt %d); assigning it again", p.run_id,
                    agent, how, p.branch, p.attempt)
        ev = BranchReassigned(run_id=p.run_id, branch=p.branch, attempt=p.attempt + 1, agent=agent or "",
                              reason=f"worker {agent} {how}")
        self.reassigned.append(ev)
        await self.bus.publish(ev)
        error = (f"worker {agent} {how} while running branch {p.branch!r}; the branch goes on elsewhere after "
                 "its last commit")
        first = True
        for task in p.tasks:
            if task not in p.done:  # transient: the coordinator's retry assigns the branch again
                await self.bus.publish(TaskFailed(run_id=p.run_id, task=task, agent=agent or "", attempt=p.attempt,
                                                  error=error, error_type="WorkerLost", transient=True,
                                                  upstream=not first))
                first = False

    def _bus_lost(self, why: str) -> None:
        """Fail every unfinished task of the runs placed here: the broker is gone, so the workers'
        events can no longer arrive. The run ends failed and can be resumed once it is back."""
        for p in list(self.placed.values()):
            first = True
            for task in p.tasks:
                if task in p.done:
                    continue
                p.done.add(task)
                ev = TaskFailed(run_id=p.run_id, task=task, agent=p.agent or "", attempt=p.attempt,
                                error=f"{why}; resume the run (agent-etl resume {p.run_id}) once it is back",
                                error_type="BusLost", transient=False, upstream=not first)
                first = False
                if self.local is not None:
                    self.local(ev)

    async def cancel(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        for sub in self._subs:
            await sub.cancel()
        self._subs.clear()
