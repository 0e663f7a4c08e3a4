"""Parts of a pipeline run on their own: one task (``run --only``) and a preview (``run --limit``).

``only(pipeline, task, home)`` is the pipeline cut down to ``task``. Steps stream into each other
in a normal run, so a task run alone needs its inputs from somewhere: each input that an earlier
``--only`` run staged (``<home>/stage/<pipeline>/<input>.parquet``) is read from there, any other
is run again along with what it needs, the same rule applied upstream. A task that is not a load
stages its own output for the tasks below it. A load writes its destination, as in a full run. So
``--only`` run for every task in the plan's order (what ``agent-etl export airflow`` schedules)
produces what one full run does, with each step's output on disk between tasks; a task run alone
with nothing staged runs its upstream in-stream. Quality groups go with the task they gate (a
staged input passed its gate when it was staged).

``preview(pipeline, limit, home)`` is the pipeline with every source stopped after ``limit`` rows
and its loads replaced by Parquet files in a scratch folder under the state folder
(``<home>/preview/<pipeline>/<input>.parquet``, one per input that a load reads): nothing is
written to the destinations. Both run under their own pipeline name (``<name>.<task>``,
``<name>.preview``), so their run history, locks, quality baselines and incremental marks are
their own and never mix with full runs'. A preview leaves out the quality checks judged on the whole
data (referential, row_count, statistics, freshness, anomaly): a sample can neither pass nor fail
them; ``run --limit`` says which, once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent_etl.exceptions import SpecError

STAGE = "stage"
PREVIEW = "preview"


def stage_path(home: Path, pipeline: str, task: str) -> Path:
    return Path(home) / STAGE / pipeline / f"{task}.parquet"


def _raw(pipeline: Any) -> dict[str, Any]:
    """The pipeline's mapping as written (``${VAR}`` references kept: they are read at the run)."""
    from agent_etl.spec.yamlsource import load_yaml

    return load_yaml(pipeline.doc.source_text, str(pipeline.path or pipeline.name)).data


def _rebuild(pipeline: Any, data: dict[str, Any], registry: Any = None) -> Any:
    from agent_etl.spec import Pipeline

    derived = Pipeline.from_text(json.dumps(data, indent=1), source=f"{pipeline.path or pipeline.name} ({data['name']})",
                                 base_dir=pipeline.base_dir, variables=pipeline.variables, registry=registry)
    derived.variables = dict(pipeline.variables)
    # messages name the lines of the pipeline file, not of the derived text
    lines = {t.name: t.line for t in pipeline.tasks}
    for t in derived.tasks:
        t.line = lines.get(t.name, t.line)
    groups = {g.input: g for g in pipeline.spec.quality}
    for g in derived.spec.quality:
        if g.input in groups:
            g._line, g._check_lines = groups[g.input]._line, list(groups[g.input]._check_lines)
    return derived


def _transforms(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in data.get("transform") or [] if isinstance(t, dict)}


def only(pipeline: Any, task: str, home: Path, registry: Any = None) -> Any:
    """``pipeline`` cut down to ``task`` (see the module's docstring)."""
    names = [t.name for t in pipeline.tasks]
    if task not in names:
        raise SpecError(f"--only {task!r}: no such step in {pipeline.name}; steps: {', '.join(names)}")
    data = _raw(pipeline)
    transforms = _transforms(data)
    by_name = {t.name: t for t in pipeline.tasks}
    extract: dict[str, Any] = {}
    keep_transforms: list[str] = []
    staged: set[str] = set()

    def need(name: str) -> None:
        if name in extract or name in keep_transforms:
            return
        if name != task and stage_path(home, pipeline.name, name).is_file():
            extract[name] = {"tool": "parquet", "path": str(stage_path(home, pipeline.name, name))}
            staged.add(name)
            return
        t = by_name[name]
        for i in t.inputs:
            need(i)
        if t.kind == "extract":
            extract[name] = data["extract"][name]
        elif t.kind == "transform":
            keep_transforms.append(name)

    target = by_name[task]
    for name in target.inputs if target.kind == "load" else [task]:
        need(name)
    out = {k: v for k, v in data.items() if k not in ("extract", "transform", "load", "quality")}
    out["name"] = f"{pipeline.name}.{task}"
    out["extract"] = extract
    order = [t.name for t in pipeline.tasks]
    out["transform"] = [transforms[n] for n in sorted(keep_transforms, key=order.index)]
    running = set(extract) | set(keep_transforms)
    out["quality"] = [g for g in data.get("quality") or [] if isinstance(g, dict) and g.get("input") in running
                      and g.get("input") not in staged]
    if target.kind == "load":
        out["load"] = {task: data["load"][task]}
    else:
        out["load"] = {_free(f"stage_{task}", names): {"input": task, "tool": "parquet",
                                                       "path": str(stage_path(home, pipeline.name, task))}}
    return _rebuild(pipeline, out, registry)


def preview(pipeline: Any, limit: int, home: Path, *, whole_data_checks: bool = False
            ) -> tuple[Any, Any, dict[str, Path], list[str]]:
    """The preview pipeline, the registry whose extractors stop after ``limit`` rows, the scratch
    file of each input that a load reads, and the checks left out of it, as ``check on input``:
    those judged on the whole data (``Check.whole_data``: referential, row_count, statistics,
    freshness, anomaly), which the first rows of each source can neither pass nor fail (a child
    row's parent may be past the limit). ``whole_data_checks`` keeps them (``validate --connect``
    binds every check to the real columns and ignores their verdicts)."""
    from agent_etl.tools.registry import default_registry

    if limit < 1:
        raise SpecError(f"--limit must be at least 1, not {limit}")
    data = _raw(pipeline)
    name = f"{pipeline.name}.{PREVIEW}"
    inputs = list(dict.fromkeys(t.inputs[0] for t in pipeline.tasks if t.kind == "load"))
    if not inputs:  # nothing loads: show what every step that no other step reads gives
        read = {i for t in pipeline.tasks for i in t.inputs}
        inputs = [t.name for t in pipeline.tasks if t.name not in read]
    files = {i: Path(home) / PREVIEW / pipeline.name / f"{i}.parquet" for i in inputs}
    taken = [t.name for t in pipeline.tasks]
    data = {**data, "name": name, "load": {_free(f"preview_{i}", taken): {"input": i, "tool": "parquet",
                                                                          "path": str(files[i])} for i in inputs}}
    registry = default_registry().__class__()
    for t in pipeline.tasks:
        if t.kind == "extract" and not _limited(registry, t.tool):
            registry.register("extractor", t.tool, _limit(registry.get("extractor", t.tool), limit))
    left_out: list[str] = []
    if not whole_data_checks:
        data["quality"], left_out = _sample_checks(data.get("quality") or [], registry)
    return _rebuild(pipeline, data, registry), registry, files, left_out


def _sample_checks(groups: list[Any], registry: Any) -> tuple[list[Any], list[str]]:
    """The quality groups without their whole-data checks (a group left with none goes), and
    those checks as ``name(column) on input``."""
    kept: list[Any] = []
    left_out: list[str] = []
    for group in groups:
        if not isinstance(group, dict) or not isinstance(group.get("checks"), list):
            kept.append(group)
            continue
        checks = []
        for entry in group["checks"]:
            name = next(iter(entry)) if isinstance(entry, dict) and len(entry) == 1 else None
            if name is not None and getattr(registry.get("validator", name), "whole_data", False):
                options = entry[name]
                column = options.get("column") if isinstance(options, dict) else None
                left_out.append(f"{name}({column}) on {group.get('input')}" if column else
                                f"{name} on {group.get('input')}")
            else:
                checks.append(entry)
        if checks:
            kept.append({**group, "checks": checks})
    return kept, left_out


def is_preview(pipeline: str, loads: list[str]) -> bool:
    """Whether a run of ``pipeline`` with these loads is a preview (``run --limit``): its reads
    stopped after the limit, which a resume, rebuilt without it, would not."""
    return pipeline.endswith(f".{PREVIEW}") and bool(loads) and all(n.startswith("preview_") for n in loads)


def _free(name: str, taken: list[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... if a step of the pipeline has it already."""
    n, out = 1, name
    while out in taken:
        n += 1
        out = f"{name}_{n}"
    return out


def _limited(registry: Any, tool: str) -> bool:
    return getattr(registry.get("extractor", tool), "preview_limit", None) is not None


def _limit(cls: type, limit: int) -> type:
    """``cls`` whose reads stop after ``limit`` rows (the source is closed then, not read to the end)."""

    async def batches(self):  # type: ignore[no-untyped-def]
        left = limit
        it = cls.batches(self)
        try:
            async for batch in it:
                if batch.num_rows > left:
                    batch = batch.slice(0, left)
                left -= batch.num_rows
                yield batch
                if left <= 0:
                    break
        finally:
            close = getattr(it, "aclose", None)
            if close is not None:
                await close()

    return type(cls.__name__, (cls,), {"batches": batches, "preview_limit": limit, "__module__": cls.__module__,
                                        "__doc__": cls.__doc__})


def show(files: dict[str, Path], rows: int = 20) -> list[str]:
    """The first ``rows`` rows of each preview file, as text."""
    import pyarrow.parquet as pq

    lines = []
    for name, path in files.items():
        if not path.exists():
            lines.append(f"{name}: no rows (the step did not finish)")
            continue
        table = pq.read_table(path)
        lines.append(f"{name}: {table.num_rows:,} rows, {table.num_columns} columns  ({path})")
        frame = table.slice(0, rows).to_pandas()
        lines.append(frame.to_string(max_colwidth=40, index=False))
        if table.num_rows > rows:
            lines.append(f"... {table.num_rows - rows:,} more rows")
        lines.append("")
    return lines
