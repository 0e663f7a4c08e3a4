"""The lifecycle of a database table writer, as ``blocking.write_stream`` drives it.

Every database loader has one writer object per load whose methods are blocking calls, run one at
a time in worker threads (``blocking.in_thread``)::

    open()                      connect; nothing is written yet
    write(batch)  *             per batch: the first one creates or fits the table (``schema_policy``)
                                and begins the transaction; the rows go into the table or a stage
    ready(final) -> bool        the unit ends: apply it (merge, swap) and write its checkpoint row,
                                all but the COMMIT; False when there is no unit (no rows since the
                                last commit of a load that already committed one)
    commit()                    COMMIT; ``count_commit()`` leaves the rows in ``landed``
    close()                     always: roll back what is still open, undo what only that unit did
                                (a created stage), give the connection back
    error(e) -> Exception       a driver error in the user's words (``ToolError``/``TransientError``)

``ready`` and ``commit`` repeat once per commit unit; ``ctx.prepare`` is awaited between them (the
barrier with the sibling loads). The counters of ``blocking.Units`` (mixed in) say what landed.
What a destination can do beyond this (merge, two-phase, schema evolution) is declared on its
loader class as ``capabilities`` (``tools.capabilities``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pyarrow as pa


class UnitWriter(Protocol):
    """What ends a commit unit (``blocking.end_unit``) and reports it (``blocking.report``). The
    postgres loader drives its own writes (encoded COPY data in flight while the next batch is
    encoded) and shares only this part."""

    rows: int  # rows written by the load, in all its units
    since: int  # ``rows`` when the open unit began
    commits: int  # units committed
    landed: int | None  # rows of the unit just committed, until ``report`` passes them on

    def ready(self, final: bool) -> bool: ...

    def commit(self) -> None: ...


class TableWriter(UnitWriter, Protocol):
    """A writer ``blocking.write_stream`` drives from open to close."""

    def open(self) -> None: ...

    def write(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...

    def error(self, e: BaseException) -> Exception: ...
