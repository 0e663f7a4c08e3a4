"""``run --only TASK``, ``run --limit N`` and ``validate --connect`` (agent_etl.slices, agent_etl.probe)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any


def _home(pipeline: Any):
    from agent_etl.settings import Settings

    return Settings().home_for(pipeline.base_dir)


def sliced_run(pipeline: Any, limit: int | None, only: str | None, show_rows: bool, run: Callable[..., int]) -> int:
    """Run one task (``only``) and/or a preview (``limit``, whose rows are printed after the run's
    summary with ``show_rows``); ``run(pipeline, **options)`` runs it."""
    from agent_etl import slices

    home = _home(pipeline)
    if only is not None:
        pipeline = slices.only(pipeline, only, home)
    if limit is None:
        return run(pipeline)
    derived, registry, files, left_out = slices.preview(pipeline, limit, home)
    for old in files.values():  # rows of an earlier preview must not pass for this one's
        old.unlink(missing_ok=True)
    code = run(derived, registry=registry, memory="off")
    if left_out:  # once, after the run's summary; on stderr under --json, whose stdout is the JSON
        print(f"preview: not applied to a sample of {limit:,} row{'' if limit == 1 else 's'} per source, as they judge "
              f"the whole data: {'; '.join(left_out)}", file=sys.stdout if show_rows else sys.stderr)
    for line in slices.show(files) if show_rows else []:
        print(line)
    return code


def connect_problems(pipeline: Any) -> list[str]:
    from agent_etl.probe import probe

    return asyncio.run(probe(pipeline, _home(pipeline)))
