"""The quality agent: applies the ``quality:`` groups of a step to its batches, on request.

The ETL agent running a gated step opens the gates, sends each batch (by reference) and asks for
the verdict at the end of the stream. Checks run in a worker thread; the agent publishes a
``BatchValidated`` summary per batch. See ``agents.gate`` for what a gate does with failing rows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from agent_etl.agents import runtime
from agent_etl.agents.base import Agent
from agent_etl.events import BatchValidated
from agent_etl.exceptions import QualityGateError


@dataclass
class GateOpen:
    run_id: str
    task: str
    groups: list[Any]  # spec.QualityGroup


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

        rc = runtime.lookup(req.run_id)
        self._gates[(req.run_id, req.task)] = [
            QualityGate(g, run_id=req.run_id, home=Path(rc.home), registry=rc.registry) for g in req.groups
        ]
        self.running.add(f"{req.run_id}/{req.task}")

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
                reports.append(gate.finish())
            except QualityGateError as e:
                failure = failure or e
            finally:
                gate.close()
        if failure is not None:
            raise failure
        return reports

    async def _abort(self, key: tuple[str, str]) -> None:
        self.running.discard("/".join(key))
        for gate in self._gates.pop(key, []):
            gate.close()
