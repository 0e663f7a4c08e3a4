"""The ETL agent: runs extract, transform and load tasks by calling tools from the registry.

A task reads its inputs from the channels of the tasks upstream and writes its output batches to
its own channel (bounded queues: backpressure, flat memory). Batches of a step with a quality gate
go through its gates here, in process (``quality.gates``), and only the rows they let through go
on; a batch never crosses the bus. What the gates found travels as summaries: ``BatchValidated``
events per batch, and per gate at the end a ``GateChecked`` request to the quality agent, which
keeps the profile as history and announces anomalies. A failure closes the task's channel with the error, so every task downstream stops too.

The agent builds its own view of each run (``RunContext``) from the ``RunStarted`` event: the
run's description, and where a resumed run starts again. Loads commit in units where the spec asks
(``commit_every``) and the path from the source allows it; sibling loads of one input commit
together (``agents.commits``).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from agent_etl.agents.acks import Acks
from agent_etl.agents.base import Agent
from agent_etl.agents.commits import CommitBarrier, UnitClock
from agent_etl.agents.quality import CHECKED
from agent_etl.agents.resume import ResumePlan, extracts_above, streaming_path
from agent_etl.bus.base import NoResponder
from agent_etl.events import (BATCH_SECONDS, BatchValidated, GateChecked, RunFinished, RunStarted, TaskAssigned,
                              TaskCommitted, TaskCompleted, TaskFailed, TaskProgress, TaskStarted)
from agent_etl.exceptions import AgentETLError, ToolError, TransientError, UpstreamError
from agent_etl.observe import tracing
from agent_etl.observe.logs import bind
from agent_etl.quality.gates import StepGates
from agent_etl.run_context import RunContext, RunDescription
from agent_etl.spec import Task
from agent_etl.stream import Envelope, Tracker
from agent_etl.tools.base import Extractor, ToolContext
from agent_etl.redaction import redact

log = logging.getLogger("agent_etl.etl")
# progress events carry running totals, so they need not come per batch: a fast stream of small
# batches would spend more time on events than on data
PROGRESS_EVERY = 0.2


class ETLAgent(Agent):
    kind = "etl"
    capabilities = frozenset({"extract", "transform", "load"})

    def __init__(self, bus, *, registry: Any = None, stores: Any = None, **kw):
        super().__init__(bus, **kw)
        self._work: set[asyncio.Task] = set()
        self.registry = registry
        # url -> RunStore, given by a coordinator in the same process (it shares its own), else opened here
        self.stores: dict[str, Any] = stores if stores is not None else {}
        self.runs: dict[str, RunContext] = {}
        self._wired: set[tuple[str, int, tuple[str, ...]]] = set()

    async def on_start(self) -> None:
        for topic, listener in ((RunStarted, self._on_run_started), (TaskAssigned, self._on_assigned),
                                (RunFinished, self._on_run_finished)):
            self._subs.append(await self.bus.listen(topic, listener))
        from agent_etl.events import RunCancelled

        # the listener cancels the run's tasks as the event arrives (in process: inside publish, so
        # nothing more is committed); the handler waits until they stopped (the coordinator's drain)
        self._subs.append(await self.bus.listen(RunCancelled, self._cancel_run))
        self._subs.append(await self.bus.subscribe(RunCancelled, self._on_cancelled))

    async def on_stop(self) -> None:
        for t in list(self._work):
            t.cancel()
        await asyncio.gather(*self._work, return_exceptions=True)
        self._work.clear()
        for run_id in list(self.runs):
            await self.release(run_id)

    def _on_run_started(self, ev: RunStarted) -> None:
        if ev.description is None:
            return
        if self.registry is None:
            from agent_etl.tools.registry import default_registry

            self.registry = default_registry()
        # a RunDescription in this process; its JSON when the event crossed a process boundary
        desc = ev.description if isinstance(ev.description, RunDescription) else RunDescription.model_validate(
            ev.description)
        store = None
        if ev.store_url is not None:
            store = self.stores.get(ev.store_url)
            if store is None:
                from agent_etl.store.runs import RunStore

                store = self.stores[ev.store_url] = RunStore(ev.store_url)
        rc = RunContext(ev.run_id, desc.pipeline(registry=self.registry), Path(desc.home), store, self.registry)
        rc.resume = ResumePlan.from_dict(ev.resume) if ev.resume else None
        rc.cursors = dict(ev.cursors)
        rc.tuning = dict(ev.tuning)
        rc.acks = Acks()
        self.runs[ev.run_id] = rc

    def _on_run_finished(self, ev: RunFinished) -> None:
        self._wired = {w for w in self._wired if w[0] != ev.run_id}

    def _cancel_run(self, ev: Any) -> None:
        """Cancel this agent's tasks of the run (a RunCancelled event)."""
        for w in self._work:
            if w.get_name().startswith(f"{ev.run_id}/"):
                w.cancel()

    async def _on_cancelled(self, ev: Any) -> None:
        """Wait until this agent's cancelled tasks of the run have stopped."""
        work = [w for w in self._work if w.get_name().startswith(f"{ev.run_id}/")]
        await asyncio.gather(*work, return_exceptions=True)
        self._work.difference_update(work)  # a task cancelled before it started did not take itself out

    async def release(self, run_id: str) -> None:
        """Close what the run held here (connection pools); the run has ended."""
        rc = self.runs.pop(run_id, None)
        if rc is not None:
            await rc.resources.aclose()

    def _on_assigned(self, ev: TaskAssigned) -> None:
        if ev.agent != self.id:
            return
        rc = self.runs.get(ev.run_id)
        if rc is not None and ev.branch:
            key = (ev.run_id, ev.attempt, tuple(ev.branch))
            if key not in self._wired:  # the first assignment of an attempt wires the whole branch
                self._wired.add(key)
                if ev.resume is not None:
                    rc.resume = ResumePlan.from_dict(ev.resume).over(rc.resume, ev.branch)
                _wire(rc, [rc.tasks[n] for n in ev.branch])
        work = asyncio.get_running_loop().create_task(self.execute(ev.run_id, ev.task, ev.attempt, ev.trace),
                                                      name=f"{ev.run_id}/{ev.task}")
        self._work.add(work)  # execute() takes it out when it ends: cheaper than a done callback per task

    async def execute(self, run_id: str, name: str, attempt: int = 1, trace: dict[str, str] | None = None) -> None:
        bind(run_id, name)  # this asyncio task's log lines name the run and the task
        with tracing.span("task " + name, trace, run_id=run_id, task=name, attempt=attempt) as span:
            await self._execute(run_id, name, attempt, span)

    async def _execute(self, run_id: str, name: str, attempt: int, span: Any) -> None:
        rc = self.runs.get(run_id)
        if rc is None:  # the run's description never reached this agent: say so rather than hang the run
            self._work.discard(asyncio.current_task())
            await self.bus.publish(TaskFailed(
                run_id=run_id, task=name, agent=self.id, attempt=attempt, error_type="UnknownRun",
                error=f"agent {self.id} was assigned {name!r} of run {run_id}, whose RunStarted it never received"))
            return
        task = rc.tasks[name]
        key = f"{run_id}/{name}"
        self.running.add(key)
        started = time.perf_counter()
        await self.bus.publish(TaskStarted(run_id=run_id, task=name, agent=self.id, attempt=attempt))
        run = None
        try:
            # inside the try: a tool that cannot even be built must still report a failure
            run = _TaskRun(self, rc, task, attempt)
            details = await _within(task, run.execute())
        except BaseException as e:
            barrier = _barrier(rc, task)
            if barrier is not None:
                barrier.fail(name)
            out = rc.channels.get(name)
            if out is not None:
                await out.close(e)
            if run is not None and run.gates is not None:
                await run.gates.abort()
            for channel_name in task.inputs:  # stop reading: producers must not wait on this task
                index = rc.readers.get((name, channel_name))
                if index is not None and channel_name in rc.channels:
                    rc.channels[channel_name].detach(index)
            if isinstance(e, asyncio.CancelledError):
                raise
            if not isinstance(e, AgentETLError):
                log.exception("task %s failed", key)
            message = redact(_message(e, task), rc.pipeline.secrets)
            report = getattr(e, "report", None)
            tracing.failed(span, type(e).__name__, message)
            await self.bus.publish(TaskFailed(
                rows=run.rows if run is not None else 0, bytes=run.bytes if run is not None else 0,
                batch_seconds=run.histogram if run is not None else [],
                batch_seconds_sum=run.waited if run is not None else 0.0,
                blocked=run.blocked if run is not None else 0.0,
                details={"quality": [report.to_dict()]} if report is not None else {},
                run_id=run_id, task=name, agent=self.id, error=message, error_type=type(e).__name__,
                transient=isinstance(e, TransientError), upstream=isinstance(e, UpstreamError),
                exit_code=getattr(e, "exit_code", 1), duration=time.perf_counter() - started, attempt=attempt))
        else:
            barrier = _barrier(rc, task)
            if barrier is not None:
                barrier.finished(name)
            tracing.annotate(span, rows=run.rows, batches=run.batches)
            await self.bus.publish(TaskCompleted(
                run_id=run_id, task=name, agent=self.id, rows=run.rows, batches=run.batches, bytes=run.bytes,
                batch_seconds=run.histogram, batch_seconds_sum=run.waited, blocked=run.blocked,
                duration=time.perf_counter() - started, attempt=attempt, details=details))
        finally:
            self.running.discard(key)
            self._work.discard(asyncio.current_task())


def _config(task: Task, cls: Any) -> Any:
    """The tool's validated options. Tool configs are frozen, so one validation serves every run and
    every attempt of the task (the spec validated them once already; this keeps a run from paying again)."""
    cache = task.__dict__.get("_configs")
    if cache is None:
        cache = task.__dict__["_configs"] = {}
    config = cache.get(cls.Config)
    if config is None:
        config = cache[cls.Config] = cls.Config.model_validate(task.options)
    return config


def _message(e: BaseException, task: Task) -> str:
    if isinstance(e, AgentETLError):
        return str(e)
    return f"{task.kind} {task.name!r} ({task.tool}) failed: {type(e).__name__}: {e}"


async def _within(task: Task, work: Any) -> Any:
    """``work``, stopped after the task's ``timeout``: the commit unit in flight rolls back, and the
    task fails transiently (it is retried)."""
    if task.timeout is None:
        return await work
    try:
        async with asyncio.timeout(task.timeout):
            return await work
    except TimeoutError:
        raise TransientError(f"{task.kind} {task.name!r} ran longer than its timeout of {task.timeout:g}s and was "
                             "stopped; what it had not committed was rolled back. Raise `timeout` if the work is "
                             "just big") from None


def _wire(rc: RunContext, tasks: list[Task]) -> None:
    """Channels, commit-unit clocks and commit barriers of one attempt of a branch."""
    spec = rc.pipeline.spec
    rc.wire(tasks, spec.defaults.queue_size)
    loads: dict[str, list[Task]] = {}
    for t in tasks:
        if t.kind == "load":
            loads.setdefault(t.inputs[0], []).append(t)
    for name, siblings in loads.items():
        every = [s for s in (spec.load[t.copy_of or t.name].commit_every or spec.defaults.commit_every for t in siblings) if s]
        per_batch = not every and _commits_per_batch(rc, siblings[0])
        unit = [t for t in siblings if streaming_path(rc.pipeline, t, rc.registry)
                and _takes_units(rc, t)] if every or per_batch else []
        if unit:
            rows = [e.rows for e in every if e.rows]
            secs = [e.seconds for e in every if e.seconds]
            # a continuous stream read without commit_every: every micro-batch is a unit
            rc.clocks[name] = UnitClock(1, None) if per_batch else UnitClock(min(rows) if rows else None,
                                                                              min(secs) if secs else None)
        rc.unit_loads.update(t.name for t in unit)
        if spec.defaults.commit == "together" and len(siblings) > 1:
            decide = functools.partial(rc.store.decide, rc.run_id) if rc.store is not None else None
            rc.barriers[name] = CommitBarrier([t.name for t in siblings], [t.name for t in unit], decide)


def _commits_per_batch(rc: RunContext, load: Task) -> bool:
    """Whether an extract above ``load`` asks for a commit per batch (a continuous stream read)."""
    for e in extracts_above(rc.pipeline, load):
        t = rc.tasks[e]
        per_batch = getattr(rc.registry.get("extractor", t.tool), "commits_per_batch", None)
        if per_batch is not None and per_batch(t.options):
            return True
    return False


def _barrier(rc: RunContext, task: Task) -> CommitBarrier | None:
    """The commit barrier a load meets its siblings at (None: no siblings, or commit: each)."""
    return rc.barriers.get(task.inputs[0]) if task.kind == "load" else None


def _decided(store: Any, task: str) -> Any:
    """``ToolContext.decided`` of load ``task``: the run store's decision log (None without a store)."""
    if store is None:
        return None
    return lambda run_id, unit: store.decided(run_id, task, unit)


def _may_resume(rc: RunContext, task: Task) -> bool:
    """Whether a load below the extract ``task`` commits in units (then a crash could make a run go
    on from the middle of its read), or the run resumes it now."""
    if rc.resume is not None and task.name in rc.resume.start:
        return True
    return any(t.kind == "load" and t.name in rc.unit_loads and task.name in extracts_above(rc.pipeline, t)
               for t in rc.pipeline.tasks)


def _takes_units(rc: RunContext, task: Task) -> bool:
    cls = rc.registry.get("loader", task.tool)
    ctx = ToolContext(run_id=rc.run_id, task=task.name, base_dir=rc.pipeline.base_dir, home=rc.home)
    return bool(cls(_config(task, cls), ctx).takes_units())  # a loader connects in load(), not here


class _TaskRun:
    """One attempt of one task."""

    def __init__(self, agent: ETLAgent, rc: RunContext, task: Task, attempt: int):
        self.agent, self.rc, self.task, self.attempt = agent, rc, task, attempt
        self.rows = 0
        self.batches = 0
        self.bytes = 0
        self.histogram = [0] * (len(BATCH_SECONDS) + 1)  # batches per duration bucket
        self._batch_at = time.perf_counter()
        self.waited = 0.0  # the sum of the batches' durations
        self._per_row: float | None = None  # Arrow bytes per row of the last batch measured
        self.blocked = 0.0  # seconds spent waiting for room in the output channel (backpressure)
        self._unreported = 0
        self._reported_at = time.monotonic()
        self.tracker = Tracker()
        self.gates: StepGates | None = None
        self._sources: list[str] | None = None
        self.commits = _Commits(rc, task.name, self.tracker, agent, attempt)
        spec = rc.pipeline.spec
        self.tuned = rc.tuning.get(task.name) or {}  # agents.tuning: what the spec left open, from experience
        cls = rc.registry.get(task.family, task.tool)
        units = task.kind == "load" and task.name in rc.unit_loads
        barrier = _barrier(rc, task)
        self.ctx = ToolContext(
            run_id=rc.run_id, task=task.name, base_dir=rc.pipeline.base_dir, home=rc.home,
            batch_size=int(self.tuned.get("batch_size") or spec.defaults.batch_size),
            connections=rc.connections,
            commit_hook=self.commits.commit, position_source=self.commits.position, line=task.line,
            resources=rc.resources,
            state_loader=lambda: rc.load_state(task.name), state_hook=lambda v: rc.stage_state(task.name, v),
            unit_source=self._unit_due if units else None,
            may_resume=_may_resume(rc, task) if task.kind == "extract" else None, partition=task.part,
            prepare_hook=(lambda final: barrier.prepare(task.name, final)) if barrier is not None else None,
            decided=_decided(rc.store, task.name) if task.kind == "load" else None,
            run=rc)
        config = _config(task, cls)
        if "partitions" in self.tuned:
            config = cls.Config.model_validate({**task.options, "partitions": self.tuned["partitions"]})
        self.tool = cls(config, self.ctx)
        if task.kind == "extract" and type(self.tool).acknowledge is not Extractor.acknowledge and rc.acks is not None:
            rc.acks.register(rc, task.name, self.tool)

    async def execute(self) -> dict[str, Any]:
        details: dict[str, Any] = {"tuning": dict(self.tuned)} if self.tuned else {}
        resume = self.rc.resume
        if self.task.kind == "load":
            envelopes = self._input(self.task.inputs[0])
            before = resume.resumed.get(self.task.name) if resume is not None else None
            if before is not None:
                envelopes = _after(envelopes, before["position"], self.task, self.rc)
                details["resumed_after_rows"] = before["rows"]
            self.rows = await self.tool.load(self._count(self.tracker.batches(envelopes)))
            details.update(self.tool.details())
            details["committed_rows"] = self.commits.rows
            if self.task.name in self.rc.unit_loads and self.commits.units:
                details["commit_units"] = self.commits.units
            return details
        if self.task.kind == "extract":
            start = resume.start.get(self.task.name) if resume is not None else None
            if start is not None:
                if not self.tool.resumable():
                    raise ToolError(f"extract {self.task.name!r}: the run committed part of this source, but the "
                                    f"{self.task.tool} source cannot start from a position now; start a new run")
                self.tool.resume_from(start)
                details["resumed_from"] = start
            out = self.tool.batches() if self.task.cache is None or start is not None else _cached(self, details)
            position = lambda: {self.task.name: self.tool.position()}  # noqa: E731
        else:
            out = self.tool.run({i: self.tracker.batches(self._input(i)) for i in self.task.data_inputs})
            position = lambda: dict(self.tracker.position)  # noqa: E731
        channel = self.rc.channels[self.task.name]
        clock = self.rc.clocks.get(self.task.name)
        gates = None
        if self.task.gates:
            gates = self.gates = await StepGates.open(self.rc.run_id, self.task.name, self.task.gates, self.rc)
        try:
            async for batch in out:
                if self.task.kind == "extract" and not self.batches:
                    # known once the read is open (a table's key): loads below commit in units only if so
                    # a cache hit has no source position (and asking the source would reach it)
                    self.rc.resumable[self.task.name] = (details.get("cache") or {}).get("status") != "hit" and bool(
                        self.tool.resumable())
                self._seen(batch)
                if gates is not None:
                    batch = await self._validated(gates, batch)
                    if batch is None:
                        continue
                put = time.perf_counter()
                await channel.put(Envelope(batch, position(), clock is not None and clock.due(batch.num_rows)))
                self.blocked += time.perf_counter() - put  # waiting for room: the steps below are slower
                if self._progress_due(batch.num_rows):
                    await self._progress()
        finally:  # a gate that failed leaves the read open: closed here, not by the garbage collector
            close = getattr(out, "aclose", None)  # (whose finalizers closing nested reads at once raced)
            if close is not None:
                await close()
        if gates is not None:
            try:
                reports = await gates.finish()  # waits for a quarantine loader's commit
            finally:
                await self._checked(gates)
            details["quality"] = [r.to_dict() for r in reports]
        mark = self.rc.staged_state.get(self.task.name)
        if mark is not None:  # the coordinator saves it once the loads below succeed
            details["state"] = mark
        for attr in ("skipped_rows",):
            if getattr(self.tool, attr, None):
                details[attr] = getattr(self.tool, attr)
        if getattr(self.tool, "quality_reports", None):  # a validate step's own gate
            details.setdefault("quality", []).extend(r.to_dict() for r in self.tool.quality_reports)
        final = position()
        if self.task.kind == "extract":
            # what the loads' last commit records: the source was read to its end (a resume has
            # nothing left of it), and an incremental read's new mark (the next run's bound)
            final = {self.task.name: {**(final.get(self.task.name) or {}), "end": True,
                                      **({"mark": mark} if mark is not None else {})}}
        await channel.close(position=final)
        return details

    async def _validated(self, gates: StepGates, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        """What of ``batch`` passes the step's gates, with a ``BatchValidated`` summary."""
        rows = batch.num_rows
        out = await gates.validate(batch)
        passed = 0 if out is None else out.num_rows
        await self.agent.bus.publish(BatchValidated(run_id=self.rc.run_id, task=self.task.name, input=self.task.name,
                                                    rows=rows, passed=passed, failed=rows - passed))
        return out

    async def _checked(self, gates: StepGates) -> None:
        """Send what each gate found (also when one failed) to a quality agent, which keeps the
        profile as history and announces the anomalies; without one, the step goes on regardless."""
        rc = self.rc
        for s in gates.summaries():
            summary = GateChecked(run_id=rc.run_id, task=self.task.name, agent=self.agent.id, attempt=self.attempt,
                                  pipeline=rc.pipeline.name, store_url=getattr(rc.store, "url", None), **s)
            try:
                await self.agent.bus.request(CHECKED, summary, timeout=None)
            except NoResponder:
                log.warning("run %s: no quality agent serves %s; the profile of %r is not kept", rc.run_id, CHECKED,
                            summary.input)

    def _unit_due(self) -> bool:
        """A commit unit ends with the batch just handed to the load: the clock marked it, and every
        source above can start again after it (else the load commits once, at the end)."""
        if not self.tracker.boundary:
            return False
        sources = self._sources
        if sources is None:
            sources = self._sources = extracts_above(self.rc.pipeline, self.task)
        return all(self.rc.resumable.get(e, False) for e in sources)

    def _input(self, name: str) -> AsyncIterator[Envelope]:
        return self.rc.channels[name].envelopes(self.rc.readers[(self.task.name, name)])

    async def _count(self, batches: AsyncIterator[pa.RecordBatch]) -> AsyncIterator[pa.RecordBatch]:
        async for b in batches:
            self._seen(b)
            if self._progress_due(b.num_rows):
                await self._progress()
            yield b

    def _seen(self, batch: pa.RecordBatch) -> None:
        """Count a batch that arrived: rows, bytes, and the time it took (since the previous one)."""
        now = time.perf_counter()
        took = now - self._batch_at
        self.histogram[bisect.bisect_left(BATCH_SECONDS, took)] += 1
        self.waited += took
        self._batch_at = now
        rows = batch.num_rows
        self.rows += rows
        self.batches += 1
        # exact sizes cost ~3 us a batch (more with many columns): measured on the first batch and
        # about every PROGRESS_EVERY seconds, the others are counted at the last measured bytes per row
        if self._per_row is None or time.monotonic() - self._reported_at >= PROGRESS_EVERY:
            size = batch.nbytes
            self._per_row = size / rows if rows else self._per_row
            self.bytes += size
        else:
            self.bytes += int(rows * self._per_row)

    def _progress_due(self, rows: int) -> bool:
        """Count ``rows``; true when the task's totals are due: at most every PROGRESS_EVERY seconds
        (TaskCompleted has the final ones). A plain call, not a coroutine: it runs for every batch."""
        self._unreported += rows
        return time.monotonic() - self._reported_at >= PROGRESS_EVERY

    async def _progress(self) -> None:
        self._reported_at = time.monotonic()
        await self.agent.bus.publish(TaskProgress(run_id=self.rc.run_id, task=self.task.name, agent=self.agent.id,
                                                  rows=self._unreported, rows_total=self.rows, batches=self.batches,
                                                  bytes_total=self.bytes))
        self._unreported = 0


class _Commits:
    """A task's commit hook: counts the rows committed and records a checkpoint with each commit.

    Apart from ``_TaskRun`` so that the tool's context does not point back at it: without that
    reference cycle a finished task is freed at once, not left to the garbage collector."""

    __slots__ = ("rc", "task", "tracker", "rows", "units", "agent", "attempt")

    def __init__(self, rc: RunContext, task: str, tracker: Tracker, agent: ETLAgent, attempt: int):
        self.rc, self.task, self.tracker = rc, task, tracker
        self.agent, self.attempt = agent, attempt
        self.rows = 0
        self.units = 0

    def position(self) -> dict[str, Any]:
        return dict(self.tracker.position)

    async def commit(self, rows: int) -> None:
        self.rows += rows
        self.units += 1
        with tracing.span("commit " + self.task, None, run_id=self.rc.run_id, task=self.task, rows=rows,
                          unit=self.units):
            store = self.rc.store
            if store is not None:
                # one short local transaction: cheaper on the loop than a thread hop that waits for the GIL
                store.checkpoint(self.rc.run_id, self.rc.pipeline.name, self.task, self.position(), rows)
            if self.rc.acks is not None and self.rc.acks.sources:
                # the sources above may acknowledge what every load below them has now committed
                await self.rc.acks.committed(self.task, self.position())
        await self.agent.bus.publish(TaskCommitted(run_id=self.rc.run_id, task=self.task, agent=self.agent.id,
                                                   attempt=self.attempt, rows=rows, unit=self.units))


def _cached(run: _TaskRun, details: dict[str, Any]) -> AsyncIterator[pa.RecordBatch]:
    """The extract's batches through the result cache of the run's state folder (``cache:``)."""
    from agent_etl.cache import ResultCache, cached

    task, rc = run.task, run.rc
    conn = task.options.get("connection")
    connection = rc.connections.get(conn) if isinstance(conn, str) else None
    meta = {"pipeline": rc.pipeline.name, "task": task.name, "tool": task.tool, "run_id": rc.run_id}
    return cached(ResultCache(rc.home), tool=task.tool, options=task.options, connection=connection,
                  base_dir=rc.pipeline.base_dir, ttl=task.cache.ttl, read=run.tool.batches, details=details, meta=meta)


async def _after(envelopes: AsyncIterator[Envelope], position: dict[str, Any], task: Task,
                 rc: RunContext) -> AsyncIterator[Envelope]:
    """The envelopes of a resumed load past what it committed before (``position``): its source may
    start earlier, for a sibling load that had committed less. A batch that straddles the position
    is cut where the load left off, which needs the load to read its source's rows unchanged."""
    sources = extracts_above(rc.pipeline, task)
    direct = task.inputs[0] in sources
    async for env in envelopes:
        if env.batch is None:  # the end, with the sources' final position
            yield env
            continue
        behind = [(e, env.position[e].get("rows", 0), position[e].get("rows", 0)) for e in sources
                  if e in env.position and e in position]
        if behind and all(now <= then for _, now, then in behind):
            continue  # committed before
        straddle = [(now, then) for _, now, then in behind if now - env.batch.num_rows < then]
        if straddle:
            if not direct or len(behind) != 1:
                raise ToolError(f"load {task.name!r}: cannot go on in the middle of a batch after a transform; "
                                "resume needs the loads of one input to commit together (defaults.commit: together)")
            now, then = straddle[0]
            env = Envelope(env.batch.slice(env.batch.num_rows - (now - then)), env.position, env.boundary)
        yield env
