"""The coordinator: plans a pipeline into a task DAG, selects an agent for every task, assigns the
tasks over the bus, collects what happened, retries transient failures and records it all.

Tasks of one branch (a weakly connected part of the DAG) stream into each other, so they run
together; independent branches run concurrently up to ``defaults.concurrency``. When a task fails
its channel closes with the error and the tasks downstream stop; sibling loads go on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_etl.agents import runtime
from agent_etl.agents.base import Agent
from agent_etl.agents.selector import CapabilitySelector, Selector
from agent_etl.bus.base import EventBus
from agent_etl.events import (AgentStalled, Event, RunFinished, RunStarted, TaskAssigned, TaskCompleted, TaskFailed,
                              TaskStarted)
from agent_etl.result import STATUS_BY_EXIT, RunResult, TaskResult
from agent_etl.spec import Pipeline, Task

log = logging.getLogger("agent_etl.coordinator")
_NONE: dict[str, TaskResult] = {}  # the results of a run that is not this coordinator's


@dataclass
class PlannedTask:
    task: Task
    agent: str
    reason: str


class _Attempt:
    """One attempt of a branch: the final event of each of its tasks, and a future that is done once
    all have one (one future per attempt, not one per task)."""

    __slots__ = ("number", "size", "outcome", "done")

    def __init__(self, number: int, size: int):
        self.number, self.size = number, size
        self.outcome: dict[str, Event] = {}
        self.done = asyncio.get_running_loop().create_future()

    def record(self, ev: Event) -> None:
        if ev.attempt != self.number or ev.task in self.outcome:
            return
        self.outcome[ev.task] = ev
        if len(self.outcome) == self.size and not self.done.done():
            self.done.set_result(None)


class AgentCoordinator(Agent):
    """Runs pipelines. Use as ``async with AgentCoordinator() as c: result = await c.run(path)``;
    ``await AgentCoordinator().run(path)`` also works and starts/stops the agents around the run."""

    kind = "coordinator"

    def __init__(self, *, bus: EventBus | None = None, agents: list[Agent] | None = None,
                 selector: Selector | None = None, store: Any = None, registry: Any = None,
                 home: str | Path | None = None, settings: Any = None):
        from agent_etl.settings import Settings

        self.settings = settings or Settings(**({"home": Path(home)} if home else {}))
        self._owns_bus = bus is None
        if bus is None:
            from agent_etl.bus.memory import MemoryBus

            bus = MemoryBus()
        super().__init__(bus, heartbeat_interval=self.settings.heartbeat_interval)
        self.home = Path(self.settings.home).resolve()
        self.selector = selector or CapabilitySelector()
        self._store_option = store
        self.store: Any = None
        self._registry = registry
        self._agents_given = agents
        self.agents: list[Agent] = []
        self.monitor: Any = None
        self._waiting: dict[tuple[str, str], _Attempt] = {}  # (run, task) -> its current attempt
        self._results: dict[str, dict[str, TaskResult]] = {}
        self._flusher: asyncio.Task | None = None

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from agent_etl.tools.registry import default_registry

            self._registry = default_registry()
        return self._registry

    # -- life cycle -------------------------------------------------------------------------------

    async def on_start(self) -> None:
        from agent_etl.agents.etl import ETLAgent
        from agent_etl.agents.monitor import MonitorAgent
        from agent_etl.agents.quality import QualityAgent

        hb = self.settings.heartbeat_interval
        if self._agents_given is None:
            self.agents = [ETLAgent(self.bus, heartbeat_interval=hb), QualityAgent(self.bus, heartbeat_interval=hb),
                           MonitorAgent(self.bus, heartbeat_interval=hb, stall_timeout=self.settings.stall_timeout)]
        else:
            self.agents = list(self._agents_given)
        self.monitor = next((a for a in self.agents if isinstance(a, MonitorAgent)), None)
        if self._store_option is None:
            from agent_etl.store.runs import RunStore

            self.store = RunStore(self.settings.run_store_url)
        elif self._store_option is not False:
            self.store = self._store_option
        # bookkeeping only: listeners run inside publish, without a queue or a task switch
        self._subs += [self.bus.listen(TaskStarted, self._on_started), self.bus.listen(TaskCompleted, self._on_completed),
                       self.bus.listen(TaskFailed, self._on_failed), self.bus.listen(AgentStalled, self._on_stalled)]
        for agent in self.agents:
            await agent.start()
        if self.store is not None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_store(), name="run-store-flush")

    async def _flush_store(self) -> None:
        """Write what the store holds in memory every second, so `runs list` sees runs in progress."""
        while True:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(self.store.flush)

    async def on_stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        for agent in reversed(self.agents):
            await agent.stop()
        await self.bus.drain()
        if self.store is not None and self._store_option is None:
            self.store.close()
        if self._owns_bus:
            from agent_etl.bus.memory import MemoryBus

            await self.bus.close()
            self.bus = MemoryBus()  # a coordinator can be started again

    # -- planning ---------------------------------------------------------------------------------

    def plan(self, pipeline: Pipeline) -> list[PlannedTask]:
        """The tasks in order, with the agent each would be given and why; nothing runs."""
        if not self.agents:
            from agent_etl.agents.etl import ETLAgent

            agents: list[Agent] = [ETLAgent(self.bus)]
        else:
            agents = self.agents
        chosen = self.selector.select(pipeline.tasks, agents)
        return [PlannedTask(t, chosen[t.name][0].id, chosen[t.name][1]) for t in pipeline.tasks]

    # -- running ----------------------------------------------------------------------------------

    async def run(self, pipeline: Pipeline | str | Path, *, variables: dict[str, str] | None = None) -> RunResult:
        if not isinstance(pipeline, Pipeline):
            pipeline = Pipeline.from_yaml(pipeline, variables, registry=self._registry)
        if not self.started:
            async with self:
                return await self.run(pipeline)
        run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(3).hex()
        chosen = self.selector.select(pipeline.tasks, self.agents)
        results = {t.name: TaskResult(t.name, t.kind, t.tool, agent=chosen[t.name][0].id, reason=chosen[t.name][1])
                   for t in pipeline.tasks}
        self._results[run_id] = results
        rc = runtime.RunContext(run_id, pipeline, self.home, self.store, self.registry)
        runtime.register(rc)
        started = time.perf_counter()
        if self.store is not None:
            plan = [{"task": t.name, "position": i, "kind": t.kind, "tool": t.tool, "inputs": t.inputs,
                     "agent": chosen[t.name][0].id, "reason": chosen[t.name][1]} for i, t in enumerate(pipeline.tasks)]
            self.store.start_run(run_id, pipeline.name, pipeline.fingerprint,
                                 str(pipeline.path) if pipeline.path else None, plan)
        await self.bus.publish(RunStarted(run_id=run_id, pipeline=pipeline.name, tasks=[t.name for t in pipeline.tasks]))
        exit_code, error = 0, None
        try:
            limit = asyncio.Semaphore(pipeline.spec.defaults.concurrency)

            async def branch(tasks: list[Task]) -> None:
                async with limit:
                    await self._run_branch(rc, tasks, chosen)

            await asyncio.gather(*(branch(b) for b in pipeline.branches()))
            exit_code, error = _outcome(results)
        except asyncio.CancelledError:
            exit_code, error = 130, "interrupted"
            await self._cancel(run_id)
            raise
        finally:
            # no await before the store has the run's end: a second cancellation (a second Ctrl-C)
            # must not leave the run recorded as running
            runtime.unregister(run_id)
            self._results.pop(run_id, None)
            duration = time.perf_counter() - started
            status = STATUS_BY_EXIT.get(exit_code, "failed")
            if self.store is not None:
                if rc.staged_state:
                    self.store.save_state(pipeline.name, run_id, _settled_state(pipeline, results, rc.staged_state))
                rows = sum(t.rows for t in results.values() if t.kind == "load" and t.status == "succeeded")
                # on the loop thread: the run is over, and a worker thread would wait for the GIL
                # while the loop drains events (up to the 5 ms switch interval)
                self.store.finish_run(run_id, status, exit_code, rows, error, duration)
            try:
                await self.bus.publish(RunFinished(run_id=run_id, pipeline=pipeline.name, status=status,
                                                   duration=duration))
            finally:
                await rc.resources.aclose()
        return RunResult(run_id, pipeline.name, status, exit_code, duration, results, error)

    def run_sync(self, pipeline: Pipeline | str | Path, *, variables: dict[str, str] | None = None) -> RunResult:
        from agent_etl.result import run

        return run(pipeline, variables, bus=None, registry=self._registry, settings=self.settings,
                   store=self._store_option)

    async def _run_branch(self, rc: runtime.RunContext, tasks: list[Task], chosen: dict[str, tuple[Agent, str]]) -> None:
        retries = rc.pipeline.spec.defaults.retries
        todo, attempt = tasks, 1
        while True:
            outcome = await self._attempt(rc, todo, chosen, attempt)
            failed = [ev for ev in outcome.values() if isinstance(ev, TaskFailed)]
            roots = [f for f in failed if not f.upstream]
            if not failed or not roots or attempt >= retries.max_attempts or not all(f.transient for f in roots):
                return
            consumed = {i for t in todo for i in t.inputs}
            sinks = [t for t in todo if t.name not in consumed and isinstance(outcome[t.name], TaskFailed)]
            todo = _with_ancestors(sinks, todo)
            delay = retries.delay(attempt)
            log.warning("run %s: %s failed transiently (%s); retrying %d task(s) in %.1fs", rc.run_id,
                        roots[0].task, roots[0].error, len(todo), delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def _attempt(self, rc: runtime.RunContext, tasks: list[Task], chosen: dict[str, tuple[Agent, str]],
                       number: int) -> dict[str, Event]:
        rc.wire(tasks, rc.pipeline.spec.defaults.queue_size)
        attempt = _Attempt(number, len(tasks))
        for t in tasks:
            self._waiting[(rc.run_id, t.name)] = attempt
        try:
            for t in reversed(tasks):  # readers first, so a producer never waits on an unassigned reader
                agent, reason = chosen[t.name]
                await self.bus.publish(TaskAssigned(run_id=rc.run_id, task=t.name, agent=agent.id, reason=reason,
                                                    attempt=number))
            await attempt.done
        finally:
            for t in tasks:
                if self._waiting.get((rc.run_id, t.name)) is attempt:
                    del self._waiting[(rc.run_id, t.name)]
        return {t.name: attempt.outcome[t.name] for t in tasks}

    def _on_started(self, ev: TaskStarted) -> None:
        r = self._results.get(ev.run_id, _NONE).get(ev.task)
        if r is None:
            return
        r.status, r.attempts, r.agent = "running", ev.attempt, ev.agent
        if self.store is not None:
            self.store.update_task(ev.run_id, ev.task, status="running", attempts=ev.attempt, agent=ev.agent,
                                   started_at=ev.ts)

    def _on_completed(self, ev: TaskCompleted) -> None:
        r = self._results.get(ev.run_id, _NONE).get(ev.task)
        if r is None:
            return
        r.status, r.rows, r.batches, r.duration, r.details, r.error = ("succeeded", ev.rows, ev.batches,
                                                                       ev.duration, ev.details, None)
        self._finished(ev, r)

    def _on_failed(self, ev: TaskFailed) -> None:
        r = self._results.get(ev.run_id, _NONE).get(ev.task)
        if r is None:
            return
        r.status = "upstream_failed" if ev.upstream else "failed"
        r.duration, r.error = ev.duration, ev.error
        r.details = {"error_type": ev.error_type, "exit_code": ev.exit_code, "transient": ev.transient, **ev.details}
        self._finished(ev, r)

    def _finished(self, ev: TaskCompleted | TaskFailed, r: TaskResult) -> None:
        if self.store is not None:
            self.store.update_task(ev.run_id, ev.task, status=r.status, rows=r.rows, batches=r.batches,
                                   finished_at=ev.ts, duration=r.duration, error=r.error, details=r.details or None)
        attempt = self._waiting.get((ev.run_id, ev.task))
        if attempt is not None:
            attempt.record(ev)

    def _on_stalled(self, ev: AgentStalled) -> None:
        log.warning("agent %s silent for %.0fs while running %s", ev.agent, ev.silent_for, ", ".join(ev.running))

    async def _cancel(self, run_id: str) -> None:
        prefix = f"{run_id}/"
        for agent in self.agents:
            tasks: set[asyncio.Task] = getattr(agent, "_work", set())
            work = [w for w in tasks if w.get_name().startswith(prefix)]
            for w in work:
                w.cancel()
            await asyncio.gather(*work, return_exceptions=True)
            tasks.difference_update(work)  # a task cancelled before it started did not take itself out


def _with_ancestors(sinks: list[Task], tasks: list[Task]) -> list[Task]:
    by_name = {t.name: t for t in tasks}
    need: set[str] = set()
    stack = [t.name for t in sinks]
    while stack:
        n = stack.pop()
        if n in need or n not in by_name:
            continue
        need.add(n)
        stack.extend(by_name[n].inputs)
    return [t for t in tasks if t.name in need]


def _settled_state(pipeline: Pipeline, results: dict[str, TaskResult], staged: dict[str, Any]) -> dict[str, Any]:
    """The staged state of the tasks that succeeded along with everything downstream of them: an
    incremental cursor moves on only once every destination fed from it has committed the rows."""
    below: dict[str, list[str]] = {}
    for t in pipeline.tasks:
        for i in t.inputs:
            below.setdefault(i, []).append(t.name)

    def settled(name: str) -> bool:
        r = results.get(name)
        return r is not None and r.status == "succeeded" and all(settled(d) for d in below.get(name, ()))

    return {task: value for task, value in staged.items() if settled(task)}


def _outcome(results: dict[str, TaskResult]) -> tuple[int, str | None]:
    roots = [r for r in results.values() if r.status == "failed"]
    if not roots:
        return 0, None
    codes = {r.details.get("exit_code", 1) for r in roots}
    code = 1 if 1 in codes else (2 if 2 in codes else 3)
    first = next(r for r in roots if r.details.get("exit_code", 1) == code)
    return code, first.error

