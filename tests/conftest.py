"""Small tools written against the public tool protocol, to drive the runtime without files."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.spec import Pipeline
from agent_etl.tools.base import BatchTransform, Extractor, Loader, ToolConfig
from agent_etl.tools.registry import Registry
from tests.services import require

# runs keep their experiences in process, not in a Chroma folder per test: importing chromadb costs
# ~1.5 s per process and opening a folder ~0.2 s per run (tests/memory set the backend they test)
os.environ.setdefault("AGENT_ETL_MEMORY", "numpy")

SINKS: dict[str, list[pa.RecordBatch]] = {}


class Numbers(Extractor):
    """Rows 0..rows-1 in batches."""

    class Config(ToolConfig):
        rows: int = 10
        batch: int = 3
        fail_after: int | None = None  # raise after this many batches
        transient_failures: int = 0  # fail transiently this many times (counted per process)

    attempts: dict[str, int] = {}

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.sent = 0

    async def batches(self):
        key = f"{self.ctx.run_id}/{self.ctx.task}"
        seen = Numbers.attempts[key] = Numbers.attempts.get(key, 0) + 1
        for start in range(0, self.config.rows, self.config.batch):
            if self.config.fail_after is not None and self.sent >= self.config.fail_after:
                raise ToolError(f"numbers {self.ctx.task!r}: broke after {self.sent} batches")
            if seen <= self.config.transient_failures and self.sent >= 1:
                raise TransientError(f"numbers {self.ctx.task!r}: connection reset")
            ids = pa.array(range(start, min(start + self.config.batch, self.config.rows)), pa.int64())
            self.sent += 1
            yield pa.record_batch({"id": ids, "even": pc.equal(pc.bit_wise_and(ids, 1), 0)})
            await asyncio.sleep(0)

    def position(self):
        return {"batches": self.sent}


class Double(BatchTransform):
    """id * 2."""

    def apply(self, batch):
        return batch.set_column(0, "id", pc.multiply(batch.column(0), 2))


class Collect(Loader):
    """Keeps batches in SINKS[key]; commits at the end."""

    class Config(ToolConfig):
        key: str
        fail: bool = False

    async def load(self, batches):
        got = []
        async for b in batches:
            got.append(b)
        if self.config.fail:
            raise ToolError(f"collect {self.ctx.task!r}: destination refused")
        SINKS[self.config.key] = got
        rows = sum(b.num_rows for b in got)
        await self.ctx.commit(rows)
        return rows


def pytest_configure(config):
    config.addinivalue_line("markers", "services(*names): the test needs these servers (tests/services.py)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    require(item)


@pytest.fixture
def registry():
    SINKS.clear()
    reg = Registry()
    reg.register("extractor", "numbers", Numbers)
    reg.register("transform", "double", Double)
    reg.register("loader", "collect", Collect)
    return reg


@pytest.fixture
def make_pipeline(registry, tmp_path: Path):
    def make(text: str, **variables) -> Pipeline:
        return Pipeline.from_text(text, base_dir=tmp_path, registry=registry, variables=variables)

    return make


@pytest.fixture
def sinks():
    return SINKS
