"""Sample a stream: ``sample`` transform (single pass, seeded, reproducible).

Options:

- ``method: reservoir`` (default) with ``size``: a uniform random sample of ``size`` rows
  (Algorithm L; the whole stream if it is shorter). Emitted at the end of the stream, in stream
  order.
- ``method: stratified`` with ``by`` (a column) and either ``per_stratum`` (that many rows of
  every value of ``by``) or ``size`` (that many rows in all, split across the values in proportion
  to their row counts). One reservoir per value; at most 10,000 values.
- ``method: systematic`` with ``fraction``: every (1/fraction)-th row from a random start, across
  batch boundaries; rows stream through as they come.
- ``seed`` (default 0): the same seed and the same rows give the same sample, however the stream
  is split into batches; change it for another sample.

See ``agent_etl.quality.sampling`` for the algorithms.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

import pyarrow as pa
from pydantic import Field, model_validator

from agent_etl.quality.sampling import MAX_STRATA, Reservoir, StratifiedReservoir, Systematic
from agent_etl.tools.base import ToolConfig, Transform
from agent_etl.tools.transforms.inputs import missing_columns, tool_error


class Sample(Transform):
    """Keep a seeded random sample of the rows: reservoir, stratified or systematic."""

    class Config(ToolConfig):
        """Keep a seeded random sample of the rows: reservoir, stratified or systematic."""

        method: Literal["reservoir", "stratified", "systematic"] = Field(
            "reservoir", description="reservoir: size rows; stratified: per value of by; systematic: a fraction")
        size: int | None = Field(None, ge=1, description="rows in the sample (reservoir; stratified, proportional)")
        fraction: float | None = Field(None, gt=0, le=1, description="share of rows kept (systematic)")
        by: str | None = Field(None, description="stratum column (stratified)")
        per_stratum: int | None = Field(None, ge=1, description="rows per value of `by` (stratified)")
        seed: int = Field(0, ge=0, description="random seed; same seed, same rows -> same sample")

        @model_validator(mode="after")
        def _fits_method(self):
            m = self.method
            if m == "reservoir" and (self.size is None or self.fraction or self.by or self.per_stratum):
                raise ValueError("method reservoir takes `size` (rows to keep); for a share of the rows "
                                 "use method: systematic with `fraction`")
            if m == "systematic" and (self.fraction is None or self.size or self.by or self.per_stratum):
                raise ValueError("method systematic takes `fraction` (e.g. 0.1 keeps every 10th row)")
            if m == "stratified":
                if not self.by:
                    raise ValueError("method stratified needs `by`, the column whose values are the strata")
                if (self.size is None) == (self.per_stratum is None) or self.fraction:
                    raise ValueError("method stratified takes `size` (rows in all, split in proportion to the "
                                     "strata) or `per_stratum` (rows of each stratum), not both")
            return self

    async def run(self, inputs: dict[str, AsyncIterator[pa.RecordBatch]]) -> AsyncIterator[pa.RecordBatch]:
        (stream,) = inputs.values()
        c = self.config
        if c.method == "systematic":
            sampler = Systematic(c.fraction, c.seed)
            async for batch in stream:
                yield sampler.observe(batch)
            return
        sampler = (Reservoir(c.size, c.seed) if c.method == "reservoir"
                   else StratifiedReservoir(c.by, size=c.size, per_stratum=c.per_stratum, seed=c.seed))
        schema = None
        async for batch in stream:
            if schema is None:
                schema = batch.schema
                if c.by:
                    missing_columns(self, [c.by], schema, "stratum column")
            try:
                await asyncio.to_thread(sampler.observe, batch)
            except ValueError as e:
                raise tool_error(self, f"cannot stratify: {e}",
                                 f"stratify by a column with at most {MAX_STRATA:,} values") from e
        table = sampler.result()
        if table is None:
            if schema is not None:
                yield pa.RecordBatch.from_pylist([], schema=schema)
            return
        for batch in table.combine_chunks().to_batches(max_chunksize=self.ctx.batch_size):
            yield batch
