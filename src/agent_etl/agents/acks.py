"""Acknowledgements after commit: tell a source what every load below it has durably committed.

A source that can acknowledge (``Extractor.acknowledge``: a stream read) registers when its task
starts. Each commit of a load reports the load's position per source (``_Commits.commit`` in
``agents.etl``); per source this keeps the latest committed position of each load below it, and when
the smallest of them (by ``rows``) moves forward, calls the source's ``acknowledge`` with it. So a
message is acknowledged only once every destination holds it; a load that fails never commits again,
and holds the acknowledgements back from then on.

Rows a quality gate sets aside are committed only when the gate finishes (the end of its input): a
source with a gate (or a ``validate`` step) between it and a load is acknowledged only by the final
commits (``end`` in the position), never by a unit's. Acknowledgements of one source never overlap.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agent_etl.agents.resume import above, extracts_above

log = logging.getLogger("agent_etl.acks")


class Acks:
    def __init__(self) -> None:
        self.sources: dict[str, _Source] = {}

    def register(self, rc: Any, extract: str, tool: Any) -> None:
        """The extract's ``tool`` acknowledges what the loads below it (that run in this run) commit."""
        pipeline = rc.pipeline
        done = set(rc.resume.done) if rc.resume is not None else set()
        loads = [t for t in pipeline.tasks
                 if t.kind == "load" and t.name not in done and extract in extracts_above(pipeline, t)]
        gated = any(t.gates or (t.kind == "transform" and t.tool == "validate")
                    for load in loads for t in above(pipeline, load))
        old = self.sources.get(extract)
        src = self.sources[extract] = _Source(tool, {t.name for t in loads}, gated)
        if old is not None:  # a retry: what the loads committed before still counts
            src.latest.update(old.latest)

    async def committed(self, load: str, position: dict[str, Any]) -> None:
        """Load ``load`` committed everything up to ``position`` ({extract: its position})."""
        for extract, src in self.sources.items():
            if load in src.loads and isinstance(position.get(extract), dict):
                await src.committed(load, position[extract])


class _Source:
    __slots__ = ("tool", "loads", "ends_only", "latest", "acked", "lock")

    def __init__(self, tool: Any, loads: set[str], ends_only: bool):
        self.tool, self.loads, self.ends_only = tool, loads, ends_only
        self.latest: dict[str, dict[str, Any]] = {}  # load -> its latest committed position of the source
        self.acked = -1  # rows of the last position acknowledged
        self.lock = asyncio.Lock()

    async def committed(self, load: str, position: dict[str, Any]) -> None:
        if self.ends_only and not position.get("end"):
            return
        self.latest[load] = position
        if not self.loads <= set(self.latest):
            return  # a load below has committed none of it yet
        low = min((self.latest[n] for n in self.loads), key=lambda p: int(p.get("rows") or 0))
        rows = int(low.get("rows") or 0)
        async with self.lock:
            if rows <= self.acked:
                return
            self.acked = rows
            try:
                await self.tool.acknowledge(low)
            except Exception:  # the commit stands; the source sees the messages again and drops them by mark
                log.warning("acknowledging what load %r committed failed", load, exc_info=True)
