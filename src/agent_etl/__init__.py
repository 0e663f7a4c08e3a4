"""agent-etl: an asyncio agent runtime for ETL.

    from agent_etl import AgentCoordinator, Pipeline
    result = await AgentCoordinator().run(Pipeline.from_yaml("pipeline.yaml"))

Names are imported lazily so that ``import agent_etl`` (and the CLI's ``--help``) stays fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# pyarrow's allocator (mimalloc 3) asks for transparent huge pages where the kernel gives them on
# request (THP "madvise"), and each first touch of one zeroes 2 MiB. Batches allocated in one thread
# and freed in another keep touching fresh ones: the kernel's page zeroing took about half the CPU of
# a Parquet -> PostgreSQL load and 0.1 s of a 1M-row PostgreSQL -> Parquet copy (docs/benchmarks.md).
# mimalloc reads this when pyarrow is first imported, so it applies when agent_etl comes first; a
# value set by the user is kept.
os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")

__version__ = "0.1.0"

_EXPORTS = {
    "AgentCoordinator": "agent_etl.agents.coordinator",
    "Pipeline": "agent_etl.spec",
    "RunResult": "agent_etl.result",
    "TaskResult": "agent_etl.result",
    "run": "agent_etl.result",
    "Registry": "agent_etl.tools.registry",
    "AgentETLError": "agent_etl.exceptions",
    "SpecError": "agent_etl.exceptions",
    "ToolError": "agent_etl.exceptions",
    "TransientError": "agent_etl.exceptions",
    "UpstreamError": "agent_etl.exceptions",
    "QualityGateError": "agent_etl.exceptions",
    "RunInterrupted": "agent_etl.exceptions",
    "Problem": "agent_etl.exceptions",
}

__all__ = ["AgentCoordinator", "AgentETLError", "Pipeline", "Problem", "QualityGateError", "Registry",  # noqa: RUF022
           "RunInterrupted", "RunResult", "SpecError", "TaskResult", "ToolError", "TransientError",
           "UpstreamError", "run"]

if TYPE_CHECKING:
    from agent_etl.agents.coordinator import AgentCoordinator
    from agent_etl.exceptions import (AgentETLError, Problem, QualityGateError, RunInterrupted, SpecError,
                                      ToolError, TransientError, UpstreamError)
    from agent_etl.result import RunResult, TaskResult, run
    from agent_etl.spec import Pipeline
    from agent_etl.tools.registry import Registry


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agent_etl' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
