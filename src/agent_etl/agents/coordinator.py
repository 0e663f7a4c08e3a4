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
from pathlib import Path
from typing import Any

from agent_etl.agents import destinations
from agent_etl.agents.base import Agent
from agent_etl.agents.breakers import Breakers
from agent_etl.agents.outcome import outcome, settled_state, with_ancestors
from agent_etl.agents.partition_plan import combine, split
from agent_etl.agents.planning import Chosen, PlannedTask, Planner
from agent_etl.agents.selector import CapabilitySelector, Selector
from agent_etl.bus.base import EventBus
from agent_etl import redaction
from agent_etl.exceptions import AgentETLError, ResumeError
from agent_etl.events import (AgentStalled, BatchValidated, Event, Heartbeat, RunFinished, RunStarted, TaskAssigned,
                              TaskCompleted, TaskFailed, TaskStalled, TaskStarted)
from agent_etl.observe import tracing
from agent_etl.observe.logs import bound
from agent_etl.result import STATUS_BY_EXIT, RunResult, TaskResult
from agent_etl.run_context import RunDescription
from agent_etl.spec import Pipeline, Task
from agent_etl.spec.copies import as_written
from agent_etl.summary import landing

log = logging.getLogger("agent_etl.coordinator")
_NONE: dict[str, TaskResult] = {}  # the results of a run that is not this coordinator's


class _Attempt:
    """One attempt of a branch: the final event of each of its tasks, and a future that is done once
    all have one (one future per attempt, not one per task)."""

    __slots__ = ("number", "size", "outcome", "done", "tasks")

    def __init__(self, number: int, tasks: list[str]):
        self.number, self.size, self.tasks = number, len(tasks), tasks
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
    dispatch: Any = None  # agents.dispatch.Dispatch when the bus is a broker

    def __init__(self, *, bus: EventBus | None = None, agents: list[Agent] | None = None,
                 selector: Selector | None = None, store: Any = None, registry: Any = None,
                 home: str | Path | None = None, settings: Any = None):
        from agent_etl.settings import Settings

        self.settings = settings or Settings(**({"home": Path(home)} if home else {}))
        self._owns_bus = bus is None
        if bus is None:
            from agent_etl.bus import open_bus

            bus = open_bus(self.settings.bus)
        super().__init__(bus, heartbeat_interval=self.settings.heartbeat_interval)
        if selector is None:  # with memory off nothing is learnt: capabilities decide
            from agent_etl.agents.memory_selector import MemorySelector

            selector = CapabilitySelector() if self.settings.memory == "off" else MemorySelector()
        self.planner = Planner(self.settings, selector)  # the choices before a run, and the memory recorder
        self._store_option = store
        self.store: Any = None  # the store given, or the last one a run used
        self._stores: dict[str, Any] = {}  # url -> RunStore this coordinator opened (shared with its agents)
        self._live: dict[str, Any] = {}  # run id -> its store, while the run is in progress
        self._registry = registry
        self._agents_given = agents
        self.agents: list[Agent] = []
        self.monitor: Any = None
        self._waiting: dict[tuple[str, str], _Attempt] = {}  # (run, task) -> its current attempt
        self._results: dict[str, dict[str, TaskResult]] = {}
        self._flusher: asyncio.Task | None = None
        self._unsticking: set[asyncio.Task] = set()

    @property
    def selector(self) -> Selector:
        return self.planner.selector

    @property
    def memory(self) -> Any:
        """The memory recorder once made (``memory.recorder.Recorder``): the experiences of finished runs."""
        return self.planner.memory

    def recorder(self) -> Any:
        """The memory recorder (made on first use): stores each run's experiences, opens the memory."""
        return self.planner.recorder()

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
        from agent_etl.observe.alerts import Alerts

        hb = self.settings.heartbeat_interval
        if self._agents_given is None:
            self.agents = [ETLAgent(self.bus, heartbeat_interval=hb, registry=self.registry, stores=self._stores),
                           QualityAgent(self.bus, heartbeat_interval=hb, stores=self._stores),
                           MonitorAgent(self.bus, heartbeat_interval=hb, stall_timeout=self.settings.stall_timeout,
                                        alerts=Alerts.from_settings(self.settings))]
        else:
            self.agents = list(self._agents_given)
        if self._agents_given is None:  # the declared fleet's ETL agents (configs/agents.yaml), in process
            from agent_etl.agents.fleet import with_fleet

            self.agents = with_fleet(self.agents, self.settings, self.registry, self._stores, hb)
        for agent in self.agents:
            if isinstance(agent, ETLAgent):
                agent.registry = agent.registry or self.registry
            if isinstance(agent, (ETLAgent, QualityAgent)) and not agent.stores:
                agent.stores = self._stores  # an agent built without stores shares this coordinator's
        self.monitor = next((a for a in self.agents if isinstance(a, MonitorAgent)), None)
        self.dispatch = None  # over a broker, branches go to worker processes (agent-etl worker)
        if getattr(self.bus, "remote", False):
            from agent_etl.agents.dispatch import Dispatch

            self.dispatch = await Dispatch.open(self.bus, self.id, self._on_failed)
            self._subs.append(self.dispatch)
        if self._store_option not in (None, False):
            self.store = self._store_option
            self._stores[getattr(self.store, "url", "given")] = self.store
        # bookkeeping only: listeners run inside publish, without a queue or a task switch
        for topic, listener in ((TaskStarted, self._on_started), (TaskCompleted, self._on_completed),
                                (TaskFailed, self._on_failed), (AgentStalled, self._on_stalled),
                                (TaskStalled, self._on_task_stalled), ("*", self._record_event)):
            self._subs.append(await self.bus.listen(topic, listener))
        for agent in self.agents:
            await agent.start()
        if self._store_option is not False:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_store(), name="run-store-flush")

    async def _flush_store(self) -> None:
        """Every second: write what the stores hold in memory, so `runs list` sees runs in progress,
        and renew the lease of the runs in progress (a run whose lease runs out is crashed)."""
        while True:
            await asyncio.sleep(1.0)
            for store in list(self._stores.values()):
                live = [r for r, s in self._live.items() if s is store]
                await asyncio.to_thread(_flush_and_renew, store, live)

    def home_for(self, pipeline: Pipeline | None) -> Path:
        """The state folder of a pipeline's runs: AGENT_ETL_HOME (or ``home=``) if set, else
        ``.agent-etl`` next to the pipeline file, never the working directory's."""
        return self.settings.home_for(pipeline.base_dir if pipeline is not None else None)

    def store_for(self, home: Path) -> Any:
        if self._store_option is False:
            return None
        if self._store_option is not None:
            return self._store_option
        url = self.settings.store_url_for(home)
        store = self._stores.get(url)
        if store is None:
            from agent_etl.store.runs import RunStore

            store = self._stores[url] = RunStore(url)
        self.store = store
        return store

    async def on_stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        for agent in reversed(self.agents):
            await agent.stop()
        await self.bus.drain()
        if self.memory is not None:  # before the stores close: the writer reads the runs' profiles
            await self.memory.close()
        if self._store_option is None:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
        if self._owns_bus:
            from agent_etl.bus import open_bus

            await self.bus.close()
            self.bus = open_bus(self.settings.bus)  # a coordinator can be started again

    # -- planning ---------------------------------------------------------------------------------

    async def plan(self, pipeline: Pipeline) -> list[PlannedTask]:
        """The tasks in order, with the agent each would be given and why; nothing runs."""
        if not self.agents:
            from agent_etl.agents.etl import ETLAgent

            agents: list[Agent] = [ETLAgent(self.bus)]
        else:
            agents = self.agents
        chosen, tuning = await self._decide(pipeline, agents)  # as a run decides
        return [PlannedTask(t, chosen[t.name][0].id, chosen[t.name][1], tuning.get(t.name)) for t in pipeline.tasks]

    async def _decide(self, pipeline: Pipeline, agents: list[Agent], tune: bool = True
                      ) -> tuple[Chosen, dict[str, dict[str, Any]]]:
        """The agent of every task and why, and the tuning: one way for `plan` and a run (agents.planning)."""
        return await self.planner.decide(pipeline, agents, self.home_for(pipeline), self.registry,
                                         broker=getattr(self.bus, "remote", False), tune=tune)

    # -- running ----------------------------------------------------------------------------------

    async def run(self, pipeline: Pipeline | str | Path | None = None, *, variables: dict[str, str] | None = None,
                  resume: str | bool | None = None, force: bool = False) -> RunResult:
        """Run ``pipeline``. ``resume``: a run id to go on with (its stored description is run, after
        its last commits), or True with a pipeline for that pipeline's latest unfinished run;
        ``force`` resumes even though the pipeline file changed since, with the file as it is now."""
        if isinstance(pipeline, (str, Path)):
            pipeline = Pipeline.from_yaml(pipeline, variables, registry=self._registry)
        if not self.started:
            async with self:
                return await self.run(pipeline, variables=variables, resume=resume, force=force)
        if pipeline is not None:
            redaction.remember(pipeline.secrets)
        try:
            if resume:
                return await self._resume(resume, pipeline, variables, force)
            if pipeline is None:
                raise ResumeError("nothing to run: give a pipeline, or resume=RUN_ID")
            home = self.home_for(pipeline)
            desc = RunDescription.of(pipeline, variables or pipeline.variables, home)
            run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(3).hex()
            store = self.store_for(home)
            if self.dispatch is not None:  # spread over workers: a partitioned source's branch per range
                pipeline = await split(self.registry, pipeline, desc, run_id)
            cursors = await destinations.cursors(self.registry, run_id, pipeline, home, store)
            return await self._execute(run_id, pipeline, desc, store, None, cursors)
        except AgentETLError as e:  # raised outside a task (asking a destination, resuming): no secret in it
            raise redaction.scrub(e)

    async def _resume(self, resume: str | bool, pipeline: Pipeline | None, variables: dict[str, str] | None,
                      force: bool) -> RunResult:
        from agent_etl.agents.resume import reopen

        store = self.store_for(self.home_for(pipeline))
        if store is None:
            raise ResumeError("resume needs the run store; this coordinator runs without one (store=False)")
        found = await reopen(self.registry, store, resume, pipeline, variables, force)
        if isinstance(found, RunResult):  # it had succeeded: nothing to do
            return found
        return await self._execute(*found)

    async def _execute(self, run_id: str, pipeline: Pipeline, desc: RunDescription, store: Any, plan: Any,
                       cursors: dict[str, Any]) -> RunResult:
        """Run it with its span (OpenTelemetry, when installed), its run id on every log line and, in
        a notebook, a table of its tasks updated while it runs."""
        from agent_etl.notebook import progress

        with bound(run_id), tracing.span("run " + pipeline.name, None, run_id=run_id, pipeline=pipeline.name,
                                         resumed=plan is not None) as span:
            async with progress(self.bus, run_id, pipeline):
                result = await self._execute_run(run_id, pipeline, desc, store, plan, cursors)
            tracing.annotate(span, status=result.status, rows_loaded=result.rows_loaded)
            if not result.ok:
                tracing.failed(span, result.status, result.error or result.status)
            return result

    async def _execute_run(self, run_id: str, pipeline: Pipeline, desc: RunDescription, store: Any, plan: Any,
                           cursors: dict[str, Any]) -> RunResult:
        from agent_etl.store.locks import RunLock

        branches = pipeline.branches()
        # a resumed run goes on with the spec's values (tuning again could split a read otherwise)
        chosen, tuning = await self._decide(pipeline, self.agents, tune=plan is None)
        if self.settings.memory != "off":  # opened while the run goes on: its end only writes
            self.recorder().prepare(desc.home)
        results = {t.name: TaskResult(t.name, t.kind, t.tool, agent=chosen[t.name][0].id, reason=chosen[t.name][1],
                                      **(landing(t.tool, as_written(t), pipeline.base_dir) if t.kind == "load" else {}))
                   for t in pipeline.tasks}
        skipped = plan.skipped(pipeline) if plan is not None else set()
        for name in skipped:
            r = results[name]
            r.status, r.reason = "succeeded", "committed before the run was resumed"
            r.rows = plan.done.get(name, 0)
            r.details = {"resumed": "committed before"}
        lock = RunLock(Path(desc.home), pipeline.name)
        if not lock.acquire(run_id, wait=False, raise_busy=False):  # on the loop: a free lock costs microseconds
            await asyncio.to_thread(lock.acquire, run_id, pipeline.spec.defaults.concurrent_runs == "wait")
        self._results[run_id] = results
        started = time.perf_counter()
        if store is not None:
            self._live[run_id] = store
            store.protect(run_id, pipeline.secrets)
            rows = [{"task": t.name, "position": i, "kind": t.kind, "tool": t.tool, "inputs": t.inputs,
                     "agent": chosen[t.name][0].id, "reason": chosen[t.name][1]} for i, t in enumerate(pipeline.tasks)]
            if plan is None:
                store.start_run(run_id, pipeline.name, pipeline.fingerprint,
                                str(pipeline.path) if pipeline.path else None, rows, desc.model_dump(), cursors)
            else:
                store.resume_run(run_id, [{**r, "status": "pending"} for r in rows if r["task"] not in skipped],
                                 desc.model_dump())
                for name in skipped:  # done before: a coordinator that died left them running in the store
                    store.update_task(run_id, name, status="succeeded", **({"rows": plan.done[name]}
                                                                            if name in plan.done else {}))
        await self.bus.publish(RunStarted(run_id=run_id, pipeline=pipeline.name, tasks=[t.name for t in pipeline.tasks],
                                          stages={t.name: t.kind for t in pipeline.tasks}, trace=tracing.carrier(),
                                          description=desc, store_url=getattr(store, "url", None),
                                          resume=plan.to_dict() if plan is not None else None,
                                          cursors=cursors, tuning=tuning))
        exit_code, error = 0, None
        breakers = Breakers(pipeline)
        try:
            limit = asyncio.Semaphore(pipeline.spec.defaults.concurrency)

            async def branch(tasks: list[Task]) -> None:
                async with limit:
                    await self._run_branch(run_id, pipeline, tasks, chosen, desc, store, breakers)

            todo = [[t for t in b if t.name not in skipped] for b in branches]
            await asyncio.gather(*(branch(b) for b in todo if b))
            if desc.copies:  # the copies' Parquet parts become the one dataset
                await combine(pipeline, desc.copies, results)
            exit_code, error = outcome(results)
        except asyncio.CancelledError:
            exit_code, error = 130, "interrupted"
            await self._cancel(run_id)
            raise
        finally:
            # no await before the store has the run's end: a second cancellation (a second Ctrl-C)
            # must not leave the run recorded as running
            self._results.pop(run_id, None)
            self._live.pop(run_id, None)
            duration = time.perf_counter() - started
            status = STATUS_BY_EXIT.get(exit_code, "failed")
            finished = RunFinished(run_id=run_id, pipeline=pipeline.name, status=status, duration=duration)
            if store is not None:
                _record(store, finished)  # written with the run's end: a follower sees both
                staged = {n: r.details["state"] for n, r in results.items() if r.details and "state" in r.details}
                if staged:
                    store.save_state(pipeline.name, run_id, settled_state(pipeline, results, staged))
                rows = sum(t.rows for t in results.values() if t.kind == "load" and t.status == "succeeded")
                # on the loop thread: the run is over, and a worker thread would wait for the GIL
                # while the loop drains events (up to the 5 ms switch interval)
                store.finish_run(run_id, status, exit_code, rows, error, duration)
            lock.release()
            if self.settings.memory != "off":  # queued for a writer thread; a memory failure is only a warning
                self.recorder().record(run_id, pipeline, results, desc.home, store)
            try:
                await self.bus.publish(finished)
            finally:
                for agent in self.agents:
                    release = getattr(agent, "release", None)
                    if release is not None:
                        await release(run_id)
        return RunResult(run_id, pipeline.name, status, exit_code, duration, results, error,
                         resumed=plan is not None, home=desc.home)

    def run_sync(self, pipeline: Pipeline | str | Path, *, variables: dict[str, str] | None = None) -> RunResult:
        from agent_etl.result import run

        return run(pipeline, variables, bus=None, registry=self._registry, settings=self.settings,
                   store=self._store_option)

    async def _run_branch(self, run_id: str, pipeline: Pipeline, tasks: list[Task], chosen: Chosen,
                          desc: RunDescription, store: Any, breakers: Breakers) -> None:
        """Run one branch; retry what failed transiently, going on after the commit units that
        landed (a retry is a resume of the failed loads), unless a connection's breaker is open."""
        from agent_etl.agents.resume import plan_resume

        retries = pipeline.spec.defaults.retries
        todo, attempt, plan = tasks, 1, None
        while True:
            down = breakers.down(todo)
            if down is not None:
                await self._fail_fast(run_id, todo, down)
                return
            outcome = await self._attempt(run_id, todo, chosen, attempt, plan)
            failed = [ev for ev in outcome.values() if isinstance(ev, TaskFailed)]
            roots = [f for f in failed if not f.upstream]
            for f in roots:
                if f.transient:
                    breakers.failed(f.task, f.error)
            if not failed or not roots or attempt >= retries.max_attempts or not all(f.transient for f in roots):
                return
            consumed = {i for t in todo for i in t.inputs}
            sinks = [t for t in todo if t.name not in consumed and isinstance(outcome[t.name], TaskFailed)]
            todo = with_ancestors(sinks, todo)
            delay = retries.delay(attempt)
            log.warning("run %s: %s failed transiently (%s); retrying %d task(s) in %.1fs", run_id,
                        roots[0].task, roots[0].error, len(todo), delay)
            await asyncio.sleep(delay)
            if store is not None:
                names = {t.name for t in todo if t.kind == "load"}
                committed, units = await destinations.committed(self.registry, run_id, pipeline, Path(desc.home),
                                                                store, names)
                plan = plan_resume(run_id, pipeline, self.registry, {}, committed, units, loads=names)
                skipped = plan.skipped(pipeline)
                todo = [t for t in todo if t.name not in skipped]
                for name in skipped & names:  # its last attempt committed it whole: done, with those rows
                    r = self._results[run_id][name]
                    r.status, r.rows = "succeeded", plan.done.get(name, r.rows)
                    store.update_task(run_id, name, status="succeeded", rows=r.rows)
                if not todo:
                    return
            attempt += 1

    async def _fail_fast(self, run_id: str, tasks: list[Task], reason: str) -> None:
        """Fail ``tasks`` without running them: a connection they need is down."""
        for i, t in enumerate(tasks):
            await self.bus.publish(TaskFailed(run_id=run_id, task=t.name, agent=self.id, error=reason,
                                              error_type="CircuitOpen", transient=False, upstream=i > 0, exit_code=1))

    async def _attempt(self, run_id: str, tasks: list[Task], chosen: Chosen,
                       number: int, plan: Any = None) -> dict[str, Event]:
        attempt = _Attempt(number, [t.name for t in tasks])
        branch = [t.name for t in tasks]
        for t in tasks:
            self._waiting[(run_id, t.name)] = attempt
        try:
            if self.dispatch is not None:  # one work event: a worker with room takes the whole branch
                await self.dispatch.assign(run_id, branch, number, plan, chosen[tasks[0].name][1],
                                           sorted({g for t in tasks for g in t.tags}))
            for i, t in enumerate(reversed(tasks) if self.dispatch is None else ()):  # readers first: a producer
                # never waits on an unassigned reader
                agent, reason = chosen[t.name]
                # the first assignment of the attempt carries the branch: the agent wires it on that one
                await self.bus.publish(TaskAssigned(run_id=run_id, task=t.name, agent=agent.id, reason=reason,
                                                    trace=tracing.carrier(),
                                                    attempt=number, branch=branch if i == 0 else [],
                                                    resume=plan.to_dict() if plan is not None and i == 0 else None))
            await attempt.done
        finally:
            for t in tasks:
                if self._waiting.get((run_id, t.name)) is attempt:
                    del self._waiting[(run_id, t.name)]
        return {t.name: attempt.outcome[t.name] for t in tasks}

    def _on_started(self, ev: TaskStarted) -> None:
        r = self._results.get(ev.run_id, _NONE).get(ev.task)
        if r is None:
            return
        r.status, r.attempts, r.agent = "running", ev.attempt, ev.agent
        store = self._live.get(ev.run_id)
        if store is not None:
            store.update_task(ev.run_id, ev.task, status="running", attempts=ev.attempt, agent=ev.agent,
                                   started_at=ev.ts)
            store.audit(ev.run_id, "task.started", ev.task, {"agent": ev.agent, "attempt": ev.attempt})

    def _on_completed(self, ev: TaskCompleted) -> None:
        r = self._results.get(ev.run_id, _NONE).get(ev.task)
        if r is None:
            return
        # a load resumed after its last commit unit committed the rows before it, and this attempt's
        before = int((ev.details or {}).get("resumed_after_rows") or 0)
        r.status, r.rows, r.batches, r.duration, r.details, r.error = ("succeeded", before + ev.rows, ev.batches,
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
        store = self._live.get(ev.run_id)
        if store is not None:
            store.update_task(ev.run_id, ev.task, status=r.status, rows=r.rows, batches=r.batches,
                                   finished_at=ev.ts, duration=r.duration, error=r.error, details=r.details or None)
            store.audit(ev.run_id, "task.finished", ev.task, {"status": r.status, "rows": r.rows,
                                                              "attempt": ev.attempt, "error": r.error})
        attempt = self._waiting.get((ev.run_id, ev.task))
        if attempt is not None:
            attempt.record(ev)

    def _on_stalled(self, ev: AgentStalled) -> None:
        log.warning("agent %s silent for %.0fs while running %s", ev.agent, ev.silent_for, ", ".join(ev.running))

    def _on_task_stalled(self, ev: TaskStalled) -> None:
        attempt = self._waiting.get((ev.run_id, ev.task))
        if attempt is None or attempt.number != ev.attempt or ev.task in attempt.outcome:
            return
        if self.dispatch is not None:
            # its branch runs on a worker, which this process cannot stop: a second attempt next to a
            # live first one could write twice, so a stall there is only reported
            log.warning("run %s: task %s made no progress for %.0fs on %s", ev.run_id, ev.task, ev.silent_for,
                        ev.agent)
            return
        work = asyncio.get_running_loop().create_task(self._unstick(ev, attempt), name=f"unstick:{ev.run_id}")
        self._unsticking.add(work)
        work.add_done_callback(self._unsticking.discard)

    async def _unstick(self, ev: TaskStalled, attempt: _Attempt) -> None:
        """A task made no progress for the stall timeout: stop its attempt of the branch (what it had
        not committed rolls back) and fail it transiently, so the branch is retried."""
        log.warning("run %s: task %s made no progress for %.0fs; stopping its attempt %d to retry it", ev.run_id,
                    ev.task, ev.silent_for, ev.attempt)
        names = [n for n in attempt.tasks if n not in attempt.outcome]
        keys = {f"{ev.run_id}/{n}" for n in names}
        for agent in self.agents:
            tasks: set[asyncio.Task] = getattr(agent, "_work", set())
            work = [w for w in tasks if w.get_name() in keys]
            for w in work:
                w.cancel()
            await asyncio.gather(*work, return_exceptions=True)
            tasks.difference_update(work)
        for n in names:
            if n not in attempt.outcome:
                await self.bus.publish(TaskFailed(
                    run_id=ev.run_id, task=n, agent=ev.agent, attempt=ev.attempt, transient=True, upstream=n != ev.task,
                    error_type="Stalled", error=f"task {ev.task!r} made no progress for {ev.silent_for:.0f}s "
                    "(defaults.stall_timeout); stopped"))

    def _record_event(self, ev: Event) -> None:
        """Keep a run's events in its run store (written with the store's next flush), for
        `agent-etl events`; heartbeats and per-batch summaries are left out."""
        run_id = getattr(ev, "run_id", None)
        if run_id is None or type(ev) in _UNRECORDED:
            return
        store = self._live.get(run_id)
        if store is not None:
            _record(store, ev)

    async def _cancel(self, run_id: str) -> None:
        """Stop the run's tasks: an event each agent acts on, here or in a worker process; the drain
        waits for this process's agents to have stopped theirs."""
        from agent_etl.events import RunCancelled

        await self.bus.publish(RunCancelled(run_id=run_id))
        await self.bus.drain()


_UNRECORDED = frozenset({BatchValidated, Heartbeat})


def _record(store: Any, ev: Event) -> None:
    events = getattr(store, "events", None)  # a store given by the caller may keep none
    if events is not None:
        events.add(ev.run_id, ev)


def _flush_and_renew(store: Any, live: list[str]) -> None:
    store.flush()
    store.renew(live)

