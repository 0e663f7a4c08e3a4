"""The quality gates of one step, run in the process that runs the step.

A step's ``quality:`` groups (or a ``validate`` step's checks) are applied here, on each batch as
it flows, by whoever runs the step: the ETL agent, or the ``validate`` transform. A record batch
never leaves the process; what the rest of the runtime learns is a summary
(``StepGates.summaries``: counts, check results, quarantine location, the data profile) that the
ETL agent sends as ``GateChecked`` messages for the quality agent's history and anomaly events.

    gates = await StepGates.open(run_id, task, groups, rc)   # builds sinks, reads references
    batch = await gates.validate(batch)                      # None: no row passed
    reports = await gates.finish()                           # raises the first gate failure
    await gates.abort()                                      # on failure or cancellation instead

Checks run in a worker thread (``asyncio.to_thread``); see ``quality.gate`` for what a gate does
with failing rows and ``quality.quarantine`` for where they go.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import QualityGateError, ToolError
from agent_etl.quality.gate import GateReport, QualityGate


class StepGates:
    """The gates of one attempt of one step, in the order of its ``quality:`` groups."""

    def __init__(self, gates: list[QualityGate]):
        self.gates = gates
        self.reports: list[GateReport] = []  # after finish: one per gate that gave a verdict
        self._ended = False

    @classmethod
    async def open(cls, run_id: str, task: str, groups: list[Any], rc: Any) -> StepGates:
        """Build the gates of ``groups`` (spec.QualityGroup) for ``task`` of the run ``rc``
        (a RunContext: home, registry, connections, and the channels the references are read from).
        No timeout: opening reads the inputs that referential checks need in full."""
        from agent_etl.quality.quarantine import build_sink

        gates: list[QualityGate] = []
        for g in groups:
            sink = None
            if g.quarantine and g.on_failure == "quarantine":  # a loader; the default file is the gate's own
                sink = build_sink(g.quarantine, input=g.input, run_id=run_id, home=Path(rc.home),
                                  base_dir=rc.pipeline.base_dir, registry=rc.registry, connections=rc.connections,
                                  resources=rc.resources, line=g._line)
            gates.append(QualityGate(g, run_id=run_id, home=Path(rc.home), registry=rc.registry, sink=sink, run=rc))
        self = cls(gates)
        try:
            await read_references(gates, {name: rc.channels[name].envelopes(rc.readers[(task, name)])
                                          for name in dict.fromkeys(n for g in gates for n in g.references())})
        except BaseException:
            await self.abort()
            raise
        return self

    async def validate(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        """What of ``batch`` flows on past every gate (None: no row does)."""
        out: pa.RecordBatch | None = batch
        for gate in self.gates:
            if not gate.bound:
                gate.bind(out.schema)
            out = await asyncio.to_thread(gate.validate, out)
            if out is None:
                break
        return out

    async def finish(self) -> list[GateReport]:
        """Every gate's verdict (even after one has failed), its quarantine committed; raise the first
        failure. ``reports`` and ``summaries`` hold what the gates found either way."""
        self._ended = True
        failure: BaseException | None = None
        for gate in self.gates:
            try:
                self.reports.append(await asyncio.to_thread(gate.finish))  # writes the last quarantined rows
            except (QualityGateError, ToolError) as e:  # ToolError: the quarantine file could not be written
                failure = failure or e
                if isinstance(e, QualityGateError) and getattr(e, "report", None) is not None:
                    self.reports.append(e.report)
            finally:
                gate.close()
            try:
                await gate.sink.finish()  # a quarantine loader commits what it got, even for a failed gate
            except ToolError as e:
                failure = failure or e
        if failure is not None:
            raise failure
        return list(self.reports)

    async def abort(self) -> None:
        """The step failed or was cancelled: keep what the quarantine files hold, roll loaders back.
        Nothing to do after ``finish``."""
        if self._ended:
            return
        self._ended = True
        for gate in self.gates:
            await asyncio.to_thread(gate.close)  # writes the quarantined rows that wait
            await gate.sink.abort()

    def summaries(self) -> list[dict[str, Any]]:
        """What each gate found, JSON-safe: ``{input, report, profile, anomalies}`` (report: the
        ``GateReport`` as a dict, None for a gate that never gave a verdict; profile: None with
        ``profile: false``; anomalies: None when no anomaly check judged the input)."""
        by_input = {r.input: r for r in self.reports}
        out = []
        for gate in self.gates:
            report = by_input.get(gate.input)
            if report is None and gate.profile is None:
                continue
            out.append({"input": gate.input, "report": report.to_dict() if report is not None else None,
                        "profile": gate.profile, "anomalies": gate.anomalies})
        return out


async def read_references(gates: list[Any], streams: dict[str, AsyncIterator[Any]]) -> None:
    """Feed every batch of each referenced input to the gates, all inputs at once (two of them fed
    by one producer must advance together), then let the gates check what they got."""

    async def one(name: str, envelopes: AsyncIterator[Any]) -> None:
        async for env in envelopes:
            batch = getattr(env, "batch", env)
            if batch is None:  # the end of the stream, with its final position
                continue
            for gate in gates:
                if name in gate.references():
                    await asyncio.to_thread(gate.reference, name, batch)

    if streams:
        try:
            async with asyncio.TaskGroup() as tg:
                for name, envelopes in streams.items():
                    tg.create_task(one(name, envelopes))
        except BaseExceptionGroup as group:
            first = group.exceptions[0]  # the failure itself (an upstream error), not a group wrapper
            raise first from first.__cause__
    for gate in gates:
        gate.referenced()
