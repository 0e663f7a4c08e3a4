"""What a run's task results add up to: the run's exit code and root error, which tasks a partial
run needs, and which incremental states may move on (the coordinator's arithmetic, kept apart)."""

from __future__ import annotations

from typing import Any

from agent_etl.result import TaskResult
from agent_etl.spec import Pipeline, Task


def with_ancestors(sinks: list[Task], tasks: list[Task]) -> list[Task]:
    by_name = {t.name: t for t in tasks}
    need: set[str] = set()
    stack = [t.name for t in sinks]
    while stack:
        n = stack.pop()
        if n in need or n not in by_name:
            continue
        need.add(n)
        stack.extend(by_name[n].inputs)
    return [t for t in tasks if t.name in need]


def settled_state(pipeline: Pipeline, results: dict[str, TaskResult], staged: dict[str, Any]) -> dict[str, Any]:
    """The staged state of the tasks that succeeded along with everything downstream of them: an
    incremental cursor moves on only once every destination fed from it has committed the rows."""
    below: dict[str, list[str]] = {}
    for t in pipeline.tasks:
        for i in t.inputs:
            below.setdefault(i, []).append(t.name)

    def settled(name: str) -> bool:
        r = results.get(name)
        return r is not None and r.status == "succeeded" and all(settled(d) for d in below.get(name, ()))

    return {task: value for task, value in staged.items() if settled(task)}


def outcome(results: dict[str, TaskResult]) -> tuple[int, str | None]:
    roots = [r for r in results.values() if r.status == "failed"]
    if not roots:
        return 0, None
    codes = {r.details.get("exit_code", 1) for r in roots}
    code = 1 if 1 in codes else (2 if 2 in codes else 3)
    first = next(r for r in roots if r.details.get("exit_code", 1) == code)
    return code, first.error

