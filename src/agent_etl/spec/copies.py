"""The copies of a partitioned source's branch: ``name#i`` for every task of the branch, copy ``i``
reading range ``i`` of the source (``agents.partition_plan`` decides and probes them when a run is
spread over workers). Both the coordinator and the workers rebuild the same task DAG from the run's
description, so the copies are a pure function of the pipeline and the stored ``copies``."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import PurePosixPath
from typing import Any

from agent_etl.spec import Pipeline, Task

MARK = "#"  # no step name can hold it


def origin(name: str) -> str:
    """The step a task copies (``lake#2`` -> ``lake``); a step's own name otherwise."""
    return name.partition(MARK)[0]


def staging(path: str, run_id: str) -> str:
    """Where the copies of a dataset load write their parts until the run puts them in place: a
    hidden folder next to the dataset, ``.<name>.parts-<run id>``, relative as ``path`` is."""
    p = PurePosixPath(path.rstrip("/"))
    return str(p.parent / f".{p.name}.parts-{run_id}")


def branch_of(pipeline: Pipeline, extract: str) -> list[Task]:
    return next(b for b in pipeline.branches() if any(t.name == extract for t in b))


def expand(pipeline: Pipeline, copies: dict[str, Any]) -> Pipeline:
    """A pipeline whose partitioned sources' branches are replaced by their copies (task order kept:
    each step's copies where the step was). ``copies``: extract -> ``{"parts": [...], "datasets":
    {load: {"path", "staging"}}}``. Every task of copy ``i`` carries its range (``Task.part``): the
    extract reads it alone, a load knows it shares its destination with the other copies."""
    replaced: dict[str, list[Task]] = {}
    for extract, plan in copies.items():
        parts = plan["parts"]
        datasets = plan.get("datasets") or {}
        for t in branch_of(pipeline, extract):
            made = []
            for i, part in enumerate(parts):
                options = dict(t.options)
                if t.name in datasets:
                    options["path"] = f"{datasets[t.name]['staging']}/p{i}/"
                mine = {"copy": i, "of": len(parts), **part}
                if t.name in datasets:
                    mine["dataset"] = datasets[t.name]["path"]
                made.append(dataclasses.replace(
                    t, name=f"{t.name}{MARK}{i}", inputs=[f"{x}{MARK}{i}" for x in t.inputs], options=options,
                    refs=[f"{x}{MARK}{i}" for x in t.refs], cache=None, copy_of=t.name, part=mine))
            replaced[t.name] = made
    if not replaced:
        return pipeline
    out = copy.copy(pipeline)
    out.tasks = [c for t in pipeline.tasks for c in replaced.get(t.name, [t])]
    return out


def as_written(task: Task) -> dict[str, Any]:
    """A task's options as its step wrote them: a dataset load's copy writes its part elsewhere."""
    dataset = (task.part or {}).get("dataset")
    return {**task.options, "path": dataset} if dataset else task.options
