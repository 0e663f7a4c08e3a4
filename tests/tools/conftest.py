"""Helpers for the file tool tests: build tools from the registry as the runtime does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_etl.tools.base import ToolContext
from agent_etl.tools.registry import default_registry


class Commits(list):
    async def __call__(self, rows: int) -> None:
        self.append(rows)


@pytest.fixture
def file_commits() -> Commits:
    return Commits()


@pytest.fixture
def file_ctx(tmp_path: Path, file_commits: Commits):
    """``file_ctx(batch_size=...)``: a ToolContext rooted at tmp_path whose commits land in ``file_commits``."""

    def make(batch_size: int = 100_000) -> ToolContext:
        return ToolContext(run_id="r1", task="t", base_dir=tmp_path, home=tmp_path / ".agent-etl",
                           batch_size=batch_size, commit_hook=file_commits)

    return make


@pytest.fixture
def file_tool(file_ctx):
    """``file_tool(kind, name, options, batch_size=...)``: a configured tool from the default registry."""

    def make(kind: str, name: str, options: dict[str, Any], batch_size: int = 100_000) -> Any:
        cls = default_registry().get(kind, name)
        return cls(cls.Config.model_validate(options), file_ctx(batch_size))

    return make
