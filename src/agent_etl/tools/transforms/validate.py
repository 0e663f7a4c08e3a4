"""``validate``: a quality gate inline, as a transform step.

    transform:
      - name: checked_orders
        input: orders                # [orders, customers] when a referential check reads customers
        tool: validate
        checks:
          - not_null: [order_id]
          - range: {column: amount, min: 0}
          - referential: {column: customer_id, input: customers, key: id}
        on_failure: quarantine       # fail (default) | warn | quarantine
        quarantine: {tool: sqlite, connection: wh, table: bad_orders}   # optional; any loader

The checks, ``on_failure`` and ``quarantine`` mean what they mean in a ``quality:`` group (see
docs/quality.md) and run through the same gate; the step yields the rows that pass (all of them
with ``warn``). Where a group gates the output of the step it names, a validate step is a node of
its own: steps downstream read it, so one pipeline can check a stream at several points. The
default quarantine file is named after the step. An input that a referential check reads must be
listed in ``input:`` as well; it is read in full before the first batch is checked. Data profiles
come from ``quality:`` groups, not from validate steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from agent_etl.exceptions import QualityGateError, ToolError
from agent_etl.tools.base import ToolConfig, Transform


class Validate(Transform):
    """Run quality checks on a stream and pass on the rows that pass: checks: [...], on_failure."""

    arity: ClassVar[int | None] = None  # the validated input, plus the inputs referential checks read
    inline_checks: ClassVar[bool] = True  # the spec validates `checks` and `quarantine` like a group's

    class Config(ToolConfig):
        """Quality checks inline: checks: [...], on_failure: fail|warn|quarantine, quarantine: {tool: ...}."""

        checks: list[dict[str, Any]] = Field(min_length=1, description="checks, as in a quality: group")
        on_failure: Literal["fail", "warn", "quarantine"] = Field(
            "fail", description="fail the run, warn, or quarantine the failing rows and pass the rest")
        quarantine: dict[str, Any] | None = Field(None, description="{tool: <loader>, ...} for quarantined rows")

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.quality_reports: list[Any] = []  # the gate's report, for the task's details

    async def run(self, inputs: dict[str, AsyncIterator[pa.RecordBatch]]) -> AsyncIterator[pa.RecordBatch]:
        from agent_etl.quality.gates import read_references

        gate = self._gate()
        refs = gate.references()
        data = [name for name in inputs if name not in refs]
        if len(data) != 1 or any(r not in inputs for r in refs):
            raise ToolError(f"task {self.ctx.task!r} (validate): validates one input besides the ones its referential "
                            f"checks read ({', '.join(refs) or 'none'}); got {', '.join(inputs)}")
        try:
            await read_references([gate], {name: inputs[name] for name in refs})
            async for batch in inputs[data[0]]:
                out = await asyncio.to_thread(gate.validate, batch)
                if out is not None:
                    yield out
            failure = None
            try:
                self.quality_reports = [gate.finish()]
            except QualityGateError as e:
                failure = e
            await gate.sink.finish()  # what was set aside is kept, as a quality group keeps it
            if failure is not None:
                raise failure
        except BaseException:
            gate.close()
            await gate.sink.abort()
            raise

    def _gate(self) -> Any:
        from agent_etl.quality.gate import QualityGate
        from agent_etl.quality.quarantine import build_sink
        from agent_etl.spec import QualityGroup
        from agent_etl.tools.registry import default_registry

        cfg = self.config
        fields: dict[str, Any] = {"input": self.ctx.task, "checks": cfg.checks, "on_failure": cfg.on_failure,
                                  "quarantine": cfg.quarantine}
        if "profile" in QualityGroup.model_fields:
            fields["profile"] = False
        group = QualityGroup.model_validate(fields)
        rc = self.ctx.run
        if rc is None:  # run on its own (testing helpers): the step's line for every check
            registry, group._check_lines = default_registry(), [self.ctx.line] * len(cfg.checks)
        else:
            registry = rc.registry
            step = next((s for s in rc.pipeline.spec.transform if s.name == self.ctx.task.partition("#")[0]), None)
            group._check_lines = [rc.pipeline.doc.line(step._path + ("checks", j)) if step is not None
                                  else self.ctx.line for j in range(len(cfg.checks))]
        sink = None
        if cfg.quarantine and cfg.on_failure == "quarantine":
            sink = build_sink(cfg.quarantine, input=self.ctx.task, run_id=self.ctx.run_id, home=self.ctx.home,
                              base_dir=self.ctx.base_dir, registry=registry, connections=self.ctx.connections,
                              resources=self.ctx.resources, line=self.ctx.line)
        return QualityGate(group, run_id=self.ctx.run_id, home=self.ctx.home, registry=registry, sink=sink,
                           run=self.ctx.run)
