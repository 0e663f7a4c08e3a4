"""Blocking database calls from the event loop, so that cancelling never races the cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from agent_etl.tools.databases.spool import Spool
from agent_etl.tools.databases.writer import TableWriter, UnitWriter


async def in_thread(fn: Callable[..., Any], *args: Any, stop: Callable[[], None] | None = None) -> Any:
    """Run blocking database work in a worker thread; on cancellation, wait for it to stop.

    A cancelled await would otherwise return while the thread still uses the connection, and the
    cleanup (rollback, close) would race it. ``stop`` asks the thread to give up early.
    """
    fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        if stop is not None:
            stop()
        while not fut.done():
            try:
                await asyncio.wait({fut})
            except asyncio.CancelledError:
                pass
        if not fut.cancelled():
            fut.exception()  # retrieved: the cancellation is what propagates
        raise


class Units:
    """What a writer of ``write_stream`` counts of its commit units (mixed in)."""

    rows = 0  # rows written by the load, in all its units
    since = 0  # ``rows`` when the open unit began
    commits = 0  # units committed
    landed: int | None = None  # rows of the unit just committed, until ``report`` passes them on

    @property
    def unit_rows(self) -> int:
        return self.rows - self.since

    def pending(self) -> bool:
        """Whether the open unit is one to commit: it has rows, or it is the load's first (a load of
        no rows commits its checkpoint too)."""
        return self.rows > self.since or not self.commits

    def count_commit(self) -> None:
        """Call right after the COMMIT of a unit."""
        self.landed, self.since = self.unit_rows, self.rows
        self.commits += 1

    # What a failure leaves, in the words of its message (the same in every database loader).

    def undone(self, nothing: str = "the load was rolled back and nothing was written") -> str:
        """``nothing`` before the first commit, else: the unit under way rolled back, earlier ones kept."""
        if not self.commits:
            return nothing
        return f"the commit unit under way was rolled back; {self.kept()}"

    def kept(self) -> str:
        """The units committed before a failure, which stay (said once there is one)."""
        return f"the {self.since} rows of the {self.commits} unit(s) committed before stay in the table"

    def rolled(self) -> str:
        """What a failure rolled back: the load, or (once a unit has committed) the unit under way."""
        return "the load was rolled back" if not self.commits else "its commit unit was rolled back"


async def write_stream(writer: TableWriter, batches: AsyncIterator[Any], ctx: Any, errors: tuple[type[BaseException], ...],
                       stop: Callable[[], None] | None = None, units: bool = False, spool: bool = False) -> int:
    """Drive a blocking table writer (``databases.writer``) over a stream, in commit units
    (``tools.base``, ``Loader``).

    ``open``, ``write`` per batch (``stop`` interrupts a write when the load is cancelled); where
    ``units`` and ``ctx.commit_due()`` after a batch, and always once the stream has ended, the unit
    ends (``end_unit``). ``close`` always runs: it rolls back the unit still open (earlier units
    stay committed) and undoes what only that unit did. Driver ``errors`` become ``writer.error(e)``.
    Once a unit has committed, it is reported to ``ctx.commit`` even if the load is cancelled just
    after the COMMIT: the rows are in, so is the checkpoint. Without ``commit_due`` the load is one
    unit, with no call more than a single COMMIT needs.

    ``spool`` is for a database with one writer at a time (SQLite) when the load has siblings to
    commit with: a load that held the write lock while it waited for them at ``prepare`` would keep
    a sibling writing into the same file from ever getting there. The unit's batches go to Arrow
    files on local disk instead (``databases.spool``); after ``prepare`` they are written into the database
    and committed at once, so the lock is held only for that. The price: what the database refuses
    (a constraint, a lock wait that timed out) shows only after the siblings were told this unit
    was ready."""
    held = Spool() if spool else None
    try:
        try:
            await in_thread(writer.open)
            async for batch in batches:
                if held is not None:
                    await in_thread(held.write, batch)
                else:
                    await in_thread(writer.write, batch, stop=stop)
                if units and ctx.commit_due():
                    await end_unit(writer, ctx, final=False, spool=held, stop=stop)
            await end_unit(writer, ctx, final=True, spool=held, stop=stop)
        except errors as e:
            raise writer.error(e) from e
    finally:
        await in_thread(writer.close)
        if held is not None:
            await in_thread(held.close)
        await report(writer, ctx)
    return writer.rows


async def end_unit(writer: UnitWriter, ctx: Any, final: bool, spool: Spool | None = None,
                   stop: Callable[[], None] | None = None) -> None:
    """End a commit unit: ``writer.ready(final)`` does everything up to the COMMIT (data applied,
    checkpoint row written in the open transaction) and says whether there is a unit at all (no
    rows since the last commit of the load: nothing to commit); ``ctx.prepare(final)`` waits for
    the sibling loads, and is called either way so that none of them waits for this one in vain;
    ``writer.commit()`` commits and leaves the rows committed in ``writer.landed`` for ``report``.
    If ``prepare`` raises, the unit is left open for ``close`` to roll back. With a ``spool``, the
    unit is complete in its files at ``prepare``, and written into the database after it."""
    if spool is not None:
        await ctx.prepare(final)
        await in_thread(spool.replay, writer.write, stop=stop)
        if await in_thread(writer.ready, final):
            await in_thread(writer.commit)
            await report(writer, ctx)
        return
    if await in_thread(writer.ready, final):
        await ctx.prepare(final)
        await in_thread(writer.commit)
        await report(writer, ctx)
    else:
        await ctx.prepare(final)


async def report(writer: UnitWriter, ctx: Any) -> None:
    """Tell ``ctx.commit`` about the unit the writer committed last, once."""
    rows, writer.landed = writer.landed, None
    if rows is not None:
        await ctx.commit(rows)


async def read_stream(reader: Any, errors: tuple[type[BaseException], ...], inc: Any = None,
                      stop: Callable[[], None] | None = None) -> AsyncIterator[Any]:
    """Drive a blocking table reader: ``open``, ``next`` until it returns None, and always ``close``
    (``stop`` interrupts the call in flight when the read is cancelled). Driver ``errors`` become
    ``reader.error(e)``. An incremental read (``inc``) sees every batch and stages its new mark once
    the stream has ended. Iterate it inside ``contextlib.aclosing`` so that a consumer that stops
    early closes the reader at once, not when the generator is collected."""
    try:
        try:
            await in_thread(reader.open, stop=stop)
        except errors as e:
            raise reader.error(e) from e
        while True:
            try:
                batch = await in_thread(reader.next, stop=stop)
            except errors as e:
                raise reader.error(e) from e
            if batch is None:
                break
            if inc is not None:
                inc.observe(batch)
            yield batch
        if inc is not None:
            inc.finish()
    finally:
        await in_thread(reader.close)
