"""The base class of the database loaders (postgres, mysql, sqlite, duckdb, sql): which loads commit in
units, and how what landed is read back from the destination's checkpoint table (``databases.checkpoints``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from agent_etl.tools.base import Loader, ToolContext
from agent_etl.tools.capabilities import DATABASE, Capabilities
from agent_etl.tools.databases.blocking import in_thread


class DatabaseLoader(Loader):
    """A loader into a database table, configured by ``SinkOptions``.

    A subclass names two blocking functions of its database (``staticmethod``), run in a worker
    thread, that read the checkpoint table without creating anything: ``read_committed(ctx,
    config)`` answers ``committed()``, ``read_mark(ctx, config, source)`` answers ``mark()``."""

    capabilities: ClassVar[Capabilities] = DATABASE
    read_committed: ClassVar[Callable[[ToolContext, Any], dict[str, Any] | None]]
    read_mark: ClassVar[Callable[[ToolContext, Any, str], dict[str, Any] | None]]
    # the running load's writer; where it has a ``path_taken`` (a ``databases.replace.Path``), the
    # run's task details say which replace path was taken and why
    writer: Any = None

    def details(self) -> dict[str, Any]:
        taken = getattr(self.writer, "path_taken", None)
        return {"replace": taken.details} if taken is not None else {}

    def takes_units(self) -> bool:
        # replace swaps a whole new table in: it is one unit
        return self.capabilities.commit_units and self.config.mode in ("append", "merge")

    async def committed(self) -> dict[str, Any] | None:
        return await in_thread(self.read_committed, self.ctx, self.config)

    async def mark(self, source: str) -> dict[str, Any] | None:
        return await in_thread(self.read_mark, self.ctx, self.config, source)
