"""A partitioned source spread over workers: one copy of its branch per partition.

When a run goes to worker processes (``--bus nats://``), an extract with ``partitions: N`` becomes
N copies of its branch (``orders#0`` .. ``orders#N-1``, and so on for every step below it, see
``spec.copies``), each reading one range of the source, placed on the workers like any branch.
The coordinator probes the ranges once, at the run's start, as the read itself would (a database
table or query: the key's min and max, or the table's pages for a block split,
``KeyedExtractor.split``; files: the path's files in groups of about equal size,
``FileExtractor.split``; S3: the URL's objects, listed once, in groups of about equal size,
``S3Reading.split``), and keeps them in the run's description: the workers, a retry and
``agent-etl resume`` all read the same ranges (the same objects). Copies read in snapshots of
their own (as Spark's JDBC partitions do): together they read every row of a table that does not
change meanwhile.
Each copy is a branch of its own: its own commit units and checkpoints (its task names), so a
copy on a killed worker goes on after its own last commit.

How the copies' loads land in the one destination:

- a database table (postgres, mysql, sql) with ``mode: append`` or ``merge``: every copy writes
  its rows into the table, committing on its own;
- a Parquet dataset (a directory ``path``, or ``partition_by``): every copy writes its files under
  a hidden folder of the run next to the dataset (``.<name>.parts-<run id>/p<i>/``); once every
  copy has succeeded, the coordinator links them into one new dataset directory and swaps it in
  for the old one, as a file load does. A failed run leaves the old dataset as it was (the parts
  wait for ``agent-etl resume``).

Anything else runs as one branch, its partitions read in parallel inside one task, and the plan
says why: ``mode: replace`` (a replace lands atomically from one writer, as dlt's and Spark's
JDBC writers do it too: Spark's overwrite truncates and lets each partition insert, which leaves
a half-filled table after a failure), a single output file, an incremental source (its next mark
is one value over the whole read), a cached read, a branch that joins another input, a transform
that needs the whole stream (``sql`` over inputs, ``dedupe``, ``validate``), a quarantine or
referential check (a quality group's, or a ``validate`` step's own), or a tool that does not split
its read. In process (``--bus memory``) partitions stay in one task.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_etl.spec import Pipeline, Task
from agent_etl.spec.copies import MARK, branch_of, expand, staging

log = logging.getLogger("agent_etl.partition_plan")
TABLE_LOADERS = frozenset({"postgres", "mysql", "sql"})  # servers that take concurrent writers


@dataclass(frozen=True)
class Verdict:
    """Whether a partitioned extract's branch is copied per partition in a distributed run, and why."""

    extract: str
    partitions: int
    copies: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"partitions": self.partitions, "copies": self.copies, "reason": self.reason}


def verdicts(pipeline: Pipeline, registry: Any) -> dict[str, Verdict]:
    """For every extract with ``partitions`` > 1: whether a distributed run copies its branch."""
    out = {}
    for t in pipeline.tasks:
        n = int(t.options.get("partitions") or 1) if t.kind == "extract" else 1
        if n > 1:
            why = _obstacle(pipeline, t, registry)
            each = getattr(registry.get("extractor", t.tool), "split_into", "partition")
            out[t.name] = Verdict(t.name, n, why is None, why or f"up to {n} copies of its branch, one per "
                                  f"{each}, spread over the workers")
    return out


def _obstacle(pipeline: Pipeline, extract: Task, registry: Any) -> str | None:
    """What keeps ``extract``'s branch from being copied per partition (None: nothing)."""
    if not hasattr(registry.get("extractor", extract.tool), "split"):
        return f"the {extract.tool} source does not split its read"
    if extract.options.get("incremental"):
        return "an incremental source's next mark is one value over its whole read"
    if extract.cache is not None:
        return "its read is cached (cache:)"
    for t in branch_of(pipeline, extract.name):
        if t.kind == "extract" and t is not extract:
            return f"its branch also reads {t.name!r}"
        if t.refs or any(g.on_failure == "quarantine" for g in t.gates):
            return f"{t.name!r} has a referential check or a quarantine"
        across = _across_rows(t, registry)
        if across:
            return (f"{t.name!r} has a check judged over all its rows ({', '.join(across)}), which a copy "
                    "seeing its part alone could not judge")
        if (t.kind == "transform" and getattr(registry.get("transform", t.tool), "inline_checks", False)
                and t.options.get("on_failure") == "quarantine"):  # a validate step's own quarantine
            return f"validate step {t.name!r} quarantines failing rows (copies would each write the quarantine)"
        if t.kind == "transform" and not registry.get("transform", t.tool).streams(t.options):
            return f"transform {t.name!r} ({t.tool}) needs the whole stream"
        if t.kind == "load":
            mode = t.options.get("mode", "append")
            if t.tool in TABLE_LOADERS and mode == "replace":
                return (f"load {t.name!r} replaces its table, which lands atomically from one writer; use "
                        "append or merge to spread it")
            if t.tool in TABLE_LOADERS and mode in ("append", "merge"):
                continue
            if t.tool == "parquet" and (str(t.options.get("path", "")).endswith("/") or t.options.get("partition_by")):
                continue
            return (f"load {t.name!r} ({t.tool}) takes one writer (a Parquet directory, path ending in /, or a "
                    "postgres/mysql/sql table in append or merge mode take copies)")
    return None


def _across_rows(task: Task, registry: Any) -> list[str]:
    """The checks of ``task``'s quality groups that judge rows together (a repeat of a key, a count,
    a statistic, the newest value: ``Check.whole_data`` or ``across_rows``), as ``name(columns)``."""
    found = []
    for group in task.gates:
        for entry in group.checks:
            name = next(iter(entry))
            cls = registry.get("validator", name)
            if cls.whole_data or cls.across_rows:
                options = entry[name]
                columns = options if isinstance(options, (list, str)) else (options or {}).get(
                    "columns", (options or {}).get("column"))
                shown = ",".join(columns) if isinstance(columns, list) else columns
                found.append(f"{name}({shown})" if shown else name)
    return found


async def split(registry: Any, pipeline: Pipeline, desc: Any, run_id: str) -> Pipeline:
    """Probe the ranges of the run's copyable partitioned sources, keep them in ``desc.copies``,
    and return the pipeline with the copies (the one to run)."""
    from agent_etl.tools.base import ToolContext
    from agent_etl.tools.resources import Resources

    wanted = [v for v in verdicts(pipeline, registry).values() if v.copies]
    if not wanted:
        return pipeline
    connections = {k: c.model_dump() for k, c in pipeline.spec.connections.items()}
    copies: dict[str, Any] = {}
    resources = Resources()
    try:
        for v in wanted:
            t = pipeline.task(v.extract)
            cls = registry.get("extractor", t.tool)
            ctx = ToolContext(run_id=run_id, task=t.name, base_dir=pipeline.base_dir, home=Path(desc.home),
                              connections=connections, resources=resources, line=t.line, may_resume=True)
            parts = await cls(cls.Config.model_validate(t.options), ctx).split()
            if len(parts) < 2:
                log.info("run %s: %s has one range to read; its branch runs whole", run_id, t.name)
                continue
            datasets = {d.name: {"path": d.options["path"], "staging": staging(d.options["path"], run_id)}
                        for d in branch_of(pipeline, t.name) if d.kind == "load" and d.tool == "parquet"}
            copies[t.name] = {"parts": parts, "datasets": datasets}
    finally:
        await resources.aclose()
    if not copies:
        return pipeline
    desc.copies = copies
    expanded = expand(pipeline, copies)
    desc._pipeline = expanded
    return expanded


async def combine(pipeline: Pipeline, copies: dict[str, Any], results: dict[str, Any]) -> None:
    """Put each copied Parquet dataset in place once all its copies succeeded: their parts linked
    into one new directory, swapped in for the old dataset. A failure fails the copies' results."""
    for plan in copies.values():
        n = len(plan["parts"])
        for load, where in (plan.get("datasets") or {}).items():
            names = [f"{load}{MARK}{i}" for i in range(n)]
            if not all(results[x].status == "succeeded" for x in names if x in results):
                continue  # the parts wait for a resume; the old dataset stays as it was
            target = _path(pipeline, where["path"])
            try:
                files = await asyncio.to_thread(_link, _path(pipeline, where["staging"]), target, n)
            except OSError as e:
                for x in names:
                    r = results[x]
                    r.status, r.error = "failed", f"cannot put the dataset {target} together from its copies: {e}"
                continue
            log.info("dataset %s: %d files from %d copies", target, files, n)


def _path(pipeline: Pipeline, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else pipeline.base_dir / p


def _link(parts: Path, target: Path, n: int) -> int:
    """Hard-link the files of ``parts/p<i>/`` into a new directory (``p<i>-`` before each name, the
    sub-folders of partition_by kept), then swap it in for ``target``; the parts go last, so a crash
    on the way leaves them whole for the next try."""
    new = target.with_name(f".{target.name}.tmp-{parts.name}")
    old = target.with_name(f".{target.name}.old-{parts.name}")
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    new.mkdir(parents=True)
    count = 0
    for i in range(n):
        root = parts / f"p{i}"
        for dirpath, _dirs, files in os.walk(root):
            rel = Path(dirpath).relative_to(root)
            for name in files:
                if name.startswith("."):
                    continue
                (new / rel).mkdir(parents=True, exist_ok=True)
                os.link(Path(dirpath) / name, new / rel / f"p{i}-{name}")
                count += 1
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(parts, ignore_errors=True)
    return count
