"""The quality agent: applies the ``quality:`` groups of a step to its batches, on request.

The ETL agent running a gated step opens the gates, sends each batch (by reference) and asks for
the verdict at the end of the stream. Checks run in a worker thread; the agent publishes a
``BatchValidated`` summary per batch. See ``agents.gate`` for what a gate does with failing rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from agent_etl.agents.base import Agent
from agent_etl.events import AnomalyDetected, BatchValidated
from agent_etl.exceptions import QualityGateError, ToolError

log = logging.getLogger("agent_etl.quality")


@dataclass
class GateOpen:
    run_id: str
    task: str
    groups: list[Any]  # spec.QualityGroup
    run: Any = None  # the ETL agent's RunContext: home, registry, channels of the references, store


@dataclass
class GateValidate:
    run_id: str
    task: str
    batch: pa.RecordBatch


@dataclass
class GateFinish:
    run_id: str
    task: str


class QualityAgent(Agent):
    kind = "quality"
    capabilities = frozenset({"quality"})

    def __init__(self, bus, **kw):
        super().__init__(bus, **kw)
        self._gates: dict[tuple[str, str], list[Any]] = {}
        self._runs: dict[tuple[str, str], Any] = {}  # (run, task) -> the RunContext its GateOpen brought

    async def on_start(self) -> None:
        self._subs += [
            self.bus.serve("quality.open", self._open),
            self.bus.serve("quality.validate", self._validate),
            self.bus.serve("quality.finish", self._finish),
            self.bus.serve("quality.abort", self._abort),
        ]

    async def on_stop(self) -> None:
        for key in list(self._gates):
            await self._abort(key)

    async def _open(self, req: GateOpen) -> None:
        from agent_etl.agents.gate import QualityGate
        from agent_etl.agents.quarantine import build_sink

        rc = req.run
        self._runs[(req.run_id, req.task)] = rc
        gates = self._gates[(req.run_id, req.task)] = []
        self.running.add(f"{req.run_id}/{req.task}")
        for g in req.groups:
            sink = None
            if g.quarantine and g.on_failure == "quarantine":  # a loader; the default file is the gate's own
                sink = build_sink(g.quarantine, input=g.input, run_id=req.run_id, home=Path(rc.home),
                                  base_dir=rc.pipeline.base_dir, registry=rc.registry, connections=rc.connections,
                                  resources=rc.resources, line=g._line)
            gates.append(QualityGate(g, run_id=req.run_id, home=Path(rc.home), registry=rc.registry, sink=sink, run=rc))
        await read_references(gates, {name: rc.channels[name].envelopes(rc.readers[(req.task, name)])
                                      for name in dict.fromkeys(n for g in gates for n in g.references())})

    async def _validate(self, req: GateValidate) -> pa.RecordBatch | None:
        gates = self._gates[(req.run_id, req.task)]
        batch: pa.RecordBatch | None = req.batch
        rows = batch.num_rows
        for gate in gates:
            if not gate.bound:
                gate.bind(batch.schema)
            batch = await asyncio.to_thread(gate.validate, batch)
            if batch is None:
                break
        passed = 0 if batch is None else batch.num_rows
        await self.bus.publish(BatchValidated(run_id=req.run_id, task=req.task, input=req.task, rows=rows,
                                              passed=passed, failed=rows - passed))
        return batch

    async def _finish(self, req: GateFinish) -> list[Any]:
        gates = self._gates.pop((req.run_id, req.task), [])
        self.running.discard(f"{req.run_id}/{req.task}")
        reports, failure = [], None
        for gate in gates:  # every gate gives its verdict, even after one has failed
            try:
                reports.append(await asyncio.to_thread(gate.finish))  # writes the last quarantined rows
            except (QualityGateError, ToolError) as e:  # ToolError: the quarantine file could not be written
                failure = failure or e
            finally:
                gate.close()
            try:
                await gate.sink.finish()  # a quarantine loader commits what it got, even for a failed gate
            except ToolError as e:
                failure = failure or e
        profiles = [(g.input, g.profile, g.anomalies) for g in gates if g.profile is not None]
        rc = self._runs.pop((req.run_id, req.task), None)
        if profiles and rc is not None and rc.store is not None:  # a failed gate's profile is kept too: its report shows it
            await asyncio.to_thread(_save_profiles, rc.store, req.run_id, rc.pipeline.name, profiles)
        for gate in gates:
            if gate.anomalies:
                for a in gate.anomalies:
                    if a["severity"] == "warn":  # a failing one is in the gate's error already
                        log.warning("run %s: anomaly: %s", req.run_id, a["message"])
                await self.bus.publish(AnomalyDetected(run_id=req.run_id, task=req.task, input=gate.input,
                                                       anomalies=gate.anomalies))
        if failure is not None:
            raise failure
        return reports

    async def _abort(self, key: tuple[str, str]) -> None:
        self.running.discard("/".join(key))
        self._runs.pop(key, None)
        for gate in self._gates.pop(key, []):
            await asyncio.to_thread(gate.close)  # writes the quarantined rows that wait
            await gate.sink.abort()


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


def _save_profiles(store: Any, run_id: str, pipeline: str, profiles: list[tuple[str, dict[str, Any], Any]]) -> None:
    for name, profile, anomalies in profiles:  # anomalies: None when no anomaly check judged the input
        store.save_profile(run_id, pipeline, name, profile, anomalies)
