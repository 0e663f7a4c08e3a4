"""What a tool is: a config model plus an object that consumes and/or produces Arrow batches.

Four families, each registered under its own entry-point group:

- ``Extractor``  (``agent_etl.extractors``): ``batches()`` yields ``pa.RecordBatch``; ``position()``
  tells where the source stands after the last yielded batch (JSON, with ``rows``: rows yielded in
  all); when ``resumable()``, ``resume_from(position)`` before ``batches()`` makes it yield exactly
  the rows after that position, so a resumed run goes on where the last commit left off.
- ``Transform``  (``agent_etl.transforms``): ``run(inputs)`` maps named input streams to one output
  stream. ``BatchTransform`` is the common case: one input, ``apply(batch)`` per batch.
- ``Loader``     (``agent_etl.loaders``): ``load(batches)`` writes a stream and commits it in commit
  units. The protocol of one unit (DESIGN.md §1, "Commits and checkpoints"):

  1. after writing a batch, a loader that ``takes_units()`` asks ``ctx.commit_due()``; when it is
     true (and once more when the stream has ended) it ends the unit;
  2. it makes the unit durable up to the commit itself (flush, staging table filled, temporary file
     closed) and calls ``await ctx.prepare(final)``: this waits until the sibling loads of the same
     input (``defaults.commit: together``) have prepared too, and raises ``SiblingFailed`` if one
     of them failed instead, in which case the loader rolls the unit back;
  3. it commits, writing the checkpoint (run, task, rows, ``ctx.source_position()``) in the same
     transaction where the destination has transactions (``tools.databases.checkpoints``), or in a
     manifest renamed with the data for files;
  4. it calls ``await ctx.commit(rows)`` so the run store mirrors the checkpoint.

  A destination that stores each write as it is made (a stream, an API) has nothing to commit
  between 2 and 4: ``await ctx.end_unit(rows, final)`` does both.

  ``committed()`` reads back what the destination holds for ``ctx.run_id``/``ctx.task`` (the
  destination is the truth about what landed; the run store only mirrors it), so a resumed run
  goes on after the last unit that landed.
- ``Check``      (``agent_etl.validators``): a quality rule (see ``tools.validators.base``).

A tool's ``Config`` (pydantic, unknown keys rejected) is validated when the spec is validated, so
a typo in a tool option is a spec error with its YAML line, not a run-time surprise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agent_etl.tools.capabilities import Capabilities
from agent_etl.tools.resources import Resources

if TYPE_CHECKING:
    import pyarrow as pa


class ToolConfig(BaseModel):
    """Base of every tool's options. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class ToolContext:
    """What a running tool may know about the run it is part of."""

    run_id: str
    task: str
    base_dir: Path  # directory of the pipeline file; relative paths resolve against it
    home: Path  # state directory (.agent-etl)
    batch_size: int = 100_000
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    commit_hook: Callable[[int], Awaitable[None]] | None = None
    line: int | None = None  # YAML line of the step, for error messages
    resources: Resources = field(default_factory=Resources)  # shared by the tasks of the run
    # state carried between runs (an incremental cursor): read it with load_state(), stage the new
    # value with save_state(); it is stored only when this task and everything downstream succeeded
    state_loader: Callable[[], Any] | None = None
    state_hook: Callable[[Any], None] | None = None
    # where the sources of the batches this task received stand ({extract task: position}); a loader
    # writes it into the destination with each commit (``source_position()``)
    position_source: Callable[[], dict[str, Any]] | None = None
    # commit units: whether the batch just received ends one (``commit_due()``), and the barrier
    # with the sibling loads before each commit (``prepare()``); None: one unit, no siblings
    unit_source: Callable[[], bool] | None = None
    prepare_hook: Callable[[bool], Awaitable[None]] | None = None
    # a load: (run_id, unit) -> whether the commit barrier decided to commit that unit of this task
    # (counting the load's calls of ``prepare`` from 1; ``RunStore.decided``): a loader that prepares
    # its units (XA) settles what a crash left prepared by it. None: no run store (a tool run alone)
    decided: Callable[[str, int], bool] | None = None
    # the run this task is part of (agent_etl.run_context.RunContext: pipeline, registry, run store),
    # None when the tool runs alone (agent_etl.testing)
    run: Any = None
    # an extractor: whether a crash could make a run resume this read from a position (a load below
    # commits in units), so it must read in an order that is the same every time; None: unknown
    may_resume: bool | None = None
    # a task of one copy of a partitioned source's branch (a run spread over workers): the copy's
    # range (``reads.part_json``, with ``copy`` and ``of``), fixed by the coordinator
    # (agents.partition_plan); an extractor reads that range alone, a loader shares its
    # destination with the other copies
    partition: dict[str, Any] | None = None

    def path(self, value: str | Path) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def connection(self, name: str) -> dict[str, Any]:
        try:
            return self.connections[name]
        except KeyError:
            from agent_etl.exceptions import SpecError

            known = ", ".join(sorted(self.connections)) or "none"
            raise SpecError(f"task {self.task!r}: unknown connection {name!r} (defined: {known})") from None

    def load_state(self) -> Any:
        """What the last successful run of this task saved with ``save_state`` (None the first time)."""
        return self.state_loader() if self.state_loader is not None else None

    def save_state(self, value: Any) -> None:
        """Carry ``value`` (JSON-serialisable) to the next run of this task, if this run succeeds."""
        if self.state_hook is not None:
            self.state_hook(value)

    def source_position(self) -> dict[str, Any]:
        """The position of each extract upstream after the last batch this task received: what a
        commit made now covers ({} when the task runs alone)."""
        return self.position_source() if self.position_source is not None else {}

    def commit_due(self) -> bool:
        """Whether the batch the loader received last ends a commit unit (``commit_every``). Always
        false where the run could not resume after a unit (a transform upstream needs the whole
        stream, or the source cannot start from a position)."""
        return self.unit_source() if self.unit_source is not None else False

    async def prepare(self, final: bool = False) -> None:
        """Call when a unit is ready to commit, just before the commit; ``final`` for the unit that
        ends the stream. Waits for the sibling loads of the same input to be ready too, and raises
        ``SiblingFailed`` if one of them failed: then roll the unit back instead of committing."""
        if self.prepare_hook is not None:
            await self.prepare_hook(final)

    async def commit(self, rows: int) -> None:
        """Record that ``rows`` more rows are durably in the destination (one commit unit)."""
        if self.commit_hook is not None:
            await self.commit_hook(rows)

    async def end_unit(self, rows: int, final: bool = False) -> None:
        """End a unit of a destination whose writes are stored as they are made (a stream, an API):
        ``prepare(final)``, then ``commit(rows)``. Where a unit is a transaction, the loader commits
        it between the two instead."""
        await self.prepare(final)
        await self.commit(rows)


class Tool:
    kind: ClassVar[str]
    name: ClassVar[str] = ""  # set by the registry to the name it is registered under
    Config: ClassVar[type[ToolConfig]] = ToolConfig
    # the optional extra of the tool's package whose libraries it imports when it runs (lazily):
    # without it installed, the registry lists the tool and refuses to use it, naming the install
    extra: ClassVar[str | None] = None

    def __init__(self, config: ToolConfig, ctx: ToolContext):
        self.config = config
        self.ctx = ctx

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


class Extractor(Tool):
    kind = "extractor"

    def batches(self) -> AsyncIterator[pa.RecordBatch]:
        raise NotImplementedError

    def position(self) -> dict[str, Any] | None:
        """Source position after the last batch yielded (file and offset, cursor value, ...), JSON,
        with ``rows``: the rows yielded in all, counting those before a ``resume_from``."""
        return None

    def resumable(self) -> bool:
        """Whether ``resume_from`` can start this read after a position: the source is read in an
        order that is the same on every read (a key, a file's rows)."""
        return False

    def resume_from(self, position: dict[str, Any]) -> None:
        """Before ``batches()``: yield only the rows after ``position`` (a ``position()`` value of an
        earlier read of the same source). Only called when ``resumable()``."""
        raise NotImplementedError(f"{type(self).__name__} cannot resume from a position")

    async def acknowledge(self, position: dict[str, Any]) -> None:
        """Every load below this extract has durably committed what it yielded up to ``position`` (a
        ``position()`` value): a source that acknowledges messages (a stream) may do so now. Called after
        the commits, never before, and never twice at once; possibly after ``batches()`` has ended."""


class Transform(Tool):
    kind = "transform"
    # how many inputs the transform takes: an int, or None for "one or more"
    arity: ClassVar[int | None] = 1
    # each output batch depends on its input batch alone (filter, select, cast...): a run can resume
    # in the middle of the stream. False for what needs the whole stream (sql over inputs, dedupe).
    streaming: ClassVar[bool] = False

    @classmethod
    def streams(cls, options: dict[str, Any]) -> bool:
        """Whether a step with these options is ``streaming`` (a tool whose options decide it overrides)."""
        return cls.streaming

    def run(self, inputs: dict[str, AsyncIterator[pa.RecordBatch]]) -> AsyncIterator[pa.RecordBatch]:
        raise NotImplementedError


class BatchTransform(Transform):
    """One input, one output batch (or none) per input batch; ``apply`` is vectorised."""

    # apply() is run in a worker thread when it does real work (releases the GIL in Arrow/DuckDB)
    threaded: ClassVar[bool] = False

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        raise NotImplementedError

    async def run(self, inputs: dict[str, AsyncIterator[pa.RecordBatch]]) -> AsyncIterator[pa.RecordBatch]:
        (stream,) = inputs.values()
        async for batch in stream:
            out = await asyncio.to_thread(self.apply, batch) if self.threaded else self.apply(batch)
            if out is not None:
                yield out


class Loader(Tool):
    kind = "loader"
    # what the destination guarantees (modes, transactions, commit units, checkpoints...): read by the
    # runtime and the contract tests (tests/contract) instead of the tool's name
    capabilities: ClassVar[Capabilities] = Capabilities()

    def takes_units(self) -> bool:
        """Whether this load commits in units (``commit_every``): append and merge into a database."""
        return False

    async def committed(self) -> dict[str, Any] | None:
        """What the destination holds of ``ctx.run_id``/``ctx.task``: ``{"rows": rows committed in
        all, "commits": units, "position": the source position of the last unit}``, or None if
        nothing of it landed (or the destination keeps no checkpoints)."""
        return None

    async def mark(self, source: str) -> dict[str, Any] | None:
        """The incremental mark of extract ``source`` that this destination holds: ``position[source]["mark"]``
        of the newest checkpoint of this load (``ctx.task``, this table or file) that has one, from any run;
        None if there is none (or the destination keeps no checkpoints). The next run of an incremental
        source reads after the smallest mark of its loads, so the destination, not a state folder, says
        where the source stands."""
        return None

    def details(self) -> dict[str, Any]:
        """What the run reports of this load in its task's details once ``load`` has returned, e.g.
        which path a replace took and why: ``{"replace": "insert (view public.v depends on the
        table)"}``; {} by default."""
        return {}

    async def load(self, batches: AsyncIterator[pa.RecordBatch]) -> int:
        """Write every batch, commit, and return the number of rows written.

        If the stream raises (an upstream failure or a failed quality gate), nothing may be left
        committed that was not committed before: write to a temporary name or a staging table and
        swap it in only after the stream ended cleanly.
        """
        raise NotImplementedError
