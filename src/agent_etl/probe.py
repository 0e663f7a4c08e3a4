"""``validate --connect``: what a run would meet, found before it. Every source is opened and read
for its first row (so its schema is known), that row goes through the transforms and the quality
gates (which bind their checks to the real columns), and every destination is asked what it holds
(which opens its connection). Nothing is written: the loads are replaced by a scratch folder, as in
a preview (``agent_etl.slices.preview``) in a temporary state folder, and no run is recorded.

A quality check that merely fails on the row read is not a problem of the pipeline: only failures
that would stop any run are reported (a missing file, an unknown column, an unreachable database,
bad SQL, bad credentials)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_etl.exceptions import AgentETLError

QUALITY_FAILED = 3


async def probe(pipeline: Any, home: Path) -> list[str]:
    """One line per problem found; empty when the pipeline can run."""
    from agent_etl.agents.coordinator import AgentCoordinator
    from agent_etl.settings import Settings
    from agent_etl.slices import preview
    from agent_etl.tempfiles import temporary_dir

    # a state folder of its own, dropped afterwards: the scratch output and any quarantined row of
    # the probe leave nothing in the pipeline's (nor does a killed probe: the next one sweeps it)
    with temporary_dir("connect") as scratch:
        # every check, also those a sample cannot judge: each is bound to the real columns, verdicts aside
        derived, registry, _, _ = preview(pipeline, 1, Path(scratch), whole_data_checks=True)
        settings = Settings(home=Path(scratch), memory="off")
        async with AgentCoordinator(store=False, registry=registry, settings=settings) as coordinator:
            result = await coordinator.run(derived)
    # the error's own "task 'x': " goes: the line names the step already
    problems = [f"{t.kind} {t.name}: {_first(t.error).removeprefix(f'task {t.name!r}: ')}"
                for t in result.tasks.values()
                if t.status == "failed" and t.error and t.details.get("exit_code") != QUALITY_FAILED]
    problems += await _destinations(pipeline, home)
    return problems


async def _destinations(pipeline: Any, home: Path) -> list[str]:
    from agent_etl.agents.destinations import loaders
    from agent_etl.tools.base import Loader
    from agent_etl.tools.registry import default_registry
    from agent_etl.tools.resources import Resources

    problems = []
    resources = Resources()
    try:
        for name, loader in loaders(default_registry(), "validate-connect", pipeline, home, None, resources).items():
            if type(loader).committed is Loader.committed:
                continue  # keeps no checkpoints at its destination: nothing to ask before the run
            try:
                await loader.committed()
            except AgentETLError as e:
                problems.append(f"load {name}: {_first(str(e))}")
    finally:
        await resources.aclose()
    return problems


def _first(message: str | None) -> str:
    """The message without its indented detail lines (a query, a hint): one line per problem."""
    return (message or "").splitlines()[0] if message else ""
