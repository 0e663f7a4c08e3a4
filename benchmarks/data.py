"""Benchmark data: a CSV of N rows x 10 columns (ints, floats, strings, dates, a nullable column),
written once under benchmarks/.data and reused."""

from __future__ import annotations

from pathlib import Path

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv

DATA = Path(__file__).parent / ".data"


def csv_file(rows: int) -> Path:
    DATA.mkdir(exist_ok=True)
    path = DATA / f"rows_{rows}.csv"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(42)
    chunk = 1_000_000
    cats = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"])
    with pv.CSVWriter(tmp, _schema()) as w:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            ids = np.arange(start + 1, start + n + 1)
            maybe = pa.array(ids % 100_000, mask=(ids % 20 == 0))
            w.write_table(pa.table({
                "id": ids,
                "big": (ids * 2654435761) % 9_000_000_000_000,
                "txt": pa.array(np.char.add("t", (ids * 7919 % 1_000_003).astype(str))),
                "amount": np.round(rng.random(n) * 1_000_000, 2),
                "score": rng.random(n) * 1000,
                "flag": ids % 2 == 0,
                "ts": pa.array(np.datetime64("2020-01-01T00:00:00") + (ids * 37).astype("timedelta64[s]")),
                "d": pa.array(np.datetime64("2020-01-01") + (ids % 1500).astype("timedelta64[D]")),
                "category": pa.array(cats[ids % 8]),
                "maybe": maybe,
            }, schema=_schema()))
    tmp.rename(path)
    return path


def csv_to_parquet_spec(src: Path, dst: str) -> str:
    """The pipeline both CSV -> Parquet benchmarks run."""
    return (f'version: 1\nname: csv_to_parquet\nextract:\n  src: {{tool: csv, path: "{src}"}}\n'
            f'load:\n  out: {{input: src, tool: parquet, path: "{dst}"}}\n')


def _schema() -> pa.Schema:
    return pa.schema([("id", pa.int64()), ("big", pa.int64()), ("txt", pa.string()), ("amount", pa.float64()),
                      ("score", pa.float64()), ("flag", pa.bool_()), ("ts", pa.timestamp("s")), ("d", pa.date32()),
                      ("category", pa.string()), ("maybe", pa.int64())])


def import_runtime(*tools: str) -> None:
    """Import what an ``agent-etl`` run imports lazily (the agents, the run store and SQLAlchemy,
    settings, the YAML parser, the registry) and the modules of ``tools``, as the peers' imports
    are done before the clock: a fixed cost per process, not throughput. Nothing runs or warms up."""
    import importlib

    from agent_etl.settings import Settings

    # the experience memory's backend, which a run opens at its end to record what it did (chromadb:
    # ~0.3 s of imports); what remains in the clock is the write itself
    memory = {"chroma": ("chromadb", "chromadb.api.rust", "chromadb.telemetry.product.posthog",
                         "agent_etl.memory.chroma"), "numpy": ()}.get(Settings().memory, ())
    # what a run imports on its way (python -X importtime of a benchmark child lists what the clock
    # still holds): tuning and agent selection read the memory (memory_selector embeds with numpy)
    for module in ("agent_etl.agents.coordinator", "agent_etl.agents.etl", "agent_etl.agents.monitor",
                   "agent_etl.agents.quality", "agent_etl.agents.fleet", "agent_etl.agents.memory_selector",
                   "agent_etl.agents.outcomes", "agent_etl.agents.tuning", "agent_etl.bus.memory",
                   "agent_etl.settings", "agent_etl.store.runs", "agent_etl.store.locks", "agent_etl.notebook",
                   "agent_etl.tools.registry", "agent_etl.tools.databases.incremental", "agent_etl.tools.streams.marks",
                   "agent_etl.memory.recorder", "agent_etl.memory.ndarray", *memory, "ruamel.yaml",
                   "ruamel.yaml.mergevalue", "pyarrow.pandas_compat", "sqlite3",
                   "sqlalchemy.dialects.sqlite",  # the run store's dialect, imported by its first create_engine
                   *tools):
        importlib.import_module(module)


def home() -> Path:
    """The ``.agent-etl`` home the pipeline benchmarks run in: kept between runs, with its run store
    made once (here, before any clock), as it is on every run of a pipeline after its first; a
    fresh home would add the store's creation (~13 ms of SQLite DDL) to every measured run."""
    from agent_etl.store.runs import RunStore

    path = DATA / "agent-etl-home"
    RunStore.at(path).close()
    return path
