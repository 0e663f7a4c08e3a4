"""One fixture runs every memory test against both backends: ``memory_kind`` (numpy, chroma),
also set as AGENT_ETL_MEMORY for the runs a test starts, and ``memory``, one opened of that kind."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from agent_etl.memory import open_memory


@pytest.fixture(params=["numpy", "chroma"])
def memory_kind(request, monkeypatch) -> str:
    monkeypatch.setenv("AGENT_ETL_MEMORY", request.param)
    return request.param


@pytest.fixture
def memory(memory_kind, tmp_path: Path):
    m = open_memory(memory_kind, tmp_path / "state")
    yield m
    m.close()


PIPELINE = """\
version: 1
name: {name}
defaults: {{batch_size: 1000}}
extract:
  orders: {{tool: csv, path: orders.csv}}
transform:
  - {{name: paid, input: orders, tool: filter, where: "status = 'paid'"}}
quality:
  - input: paid
    checks:
      - not_null: [order_id]
load:
  lake: {{input: paid, tool: parquet, path: out/paid.parquet}}
"""


def write_pipeline(folder: Path, name: str = "orders_to_lake", rows: int = 50, text: str = PIPELINE) -> Path:
    """A CSV -> filter -> Parquet pipeline over ``rows`` orders, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "orders.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["order_id", "status", "amount"])
        for i in range(rows):
            w.writerow([i, "paid" if i % 2 else "open", i * 1.5])
    path = folder / "pipeline.yaml"
    path.write_text(text.format(name=name))
    return path
