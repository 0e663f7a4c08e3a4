"""What a resumed run does: which loads already landed, which go on after their last commit unit,
where each extract starts again (DESIGN.md §1, "Commits and checkpoints").

For every load the destination is asked what it holds of the run (``Loader.committed()``); a
loader that keeps no checkpoints is answered by the run store's mirror. Then:

- nothing landed: the load runs from the start (its one commit never happened);
- its last commit covered its sources to their end, or the load commits once (replace, files, a
  path or a source that cannot resume mid-stream): done, not run again;
- it landed in units: it goes on after the last unit (if that was the last one, the source yields
  nothing more and the load commits nothing).

An extract starts from the earliest position any of its remaining loads needs; a load that had
gone further skips the batches it already committed. Tasks whose loads are all done do not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent_etl.exceptions import ResumeError
from agent_etl.spec import Pipeline, Task


@dataclass
class ResumePlan:
    run_id: str
    done: dict[str, int] = field(default_factory=dict)  # load -> rows it had committed
    resumed: dict[str, dict[str, Any]] = field(default_factory=dict)  # load -> {rows, position}
    start: dict[str, dict[str, Any]] = field(default_factory=dict)  # extract -> position to resume from

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "done": self.done, "resumed": self.resumed, "start": self.start}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResumePlan:
        return cls(d["run_id"], dict(d["done"]), dict(d["resumed"]), dict(d["start"]))

    def over(self, other: ResumePlan | None, names: list[str]) -> ResumePlan:
        """This plan, made for the tasks ``names`` (a retry of part of a branch), with what ``other``
        says of the other tasks."""
        if other is None:
            return self

        def merged(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
            return {**{k: v for k, v in theirs.items() if k not in names}, **mine}

        return ResumePlan(self.run_id, merged(self.done, other.done), merged(self.resumed, other.resumed),
                          merged(self.start, other.start))

    def skipped(self, pipeline: Pipeline) -> set[str]:
        """Tasks that need not run: done loads, and tasks every load below of which is done."""
        below: dict[str, list[str]] = {}
        for t in pipeline.tasks:
            for i in t.inputs:
                below.setdefault(i, []).append(t.name)
        memo: dict[str, bool] = {}

        def idle(name: str) -> bool:
            if name not in memo:
                kids = below.get(name, [])
                memo[name] = name in self.done if not kids else all(idle(k) for k in kids)
            return memo[name]

        return {t.name for t in pipeline.tasks if (t.kind == "load" and t.name in self.done)
                or (t.kind != "load" and below.get(t.name) and idle(t.name))}


def above(pipeline: Pipeline, task: Task) -> list[Task]:
    """Every task whose rows reach ``task``."""
    seen: dict[str, Task] = {}
    stack = list(task.inputs)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen[n] = pipeline.task(n)
            stack.extend(seen[n].inputs)
    return list(seen.values())


def extracts_above(pipeline: Pipeline, task: Task) -> list[str]:
    """The extract tasks whose rows reach ``task``."""
    return sorted(t.name for t in above(pipeline, task) if t.kind == "extract")


def streaming_path(pipeline: Pipeline, task: Task, registry: Any) -> bool:
    """Whether every transform between the extracts and ``task`` maps each batch on its own (so a
    run can go on in the middle of the stream), and no quality gate reads a whole input first."""
    return not any(t.refs or (t.kind == "transform" and not registry.get("transform", t.tool).streams(t.options))
                   for t in above(pipeline, task))


def plan_resume(run_id: str, pipeline: Pipeline, registry: Any, task_status: dict[str, str],
                committed: dict[str, dict[str, Any] | None], units: dict[str, bool],
                loads: set[str] | None = None) -> ResumePlan:
    """The plan, from each load's ``committed`` answer (destination, else run store mirror), whether
    it commits in units (``Loader.takes_units``) and the tasks' recorded status; ``loads``: plan
    only these (a retry of part of a branch)."""
    plan = ResumePlan(run_id)
    need: dict[str, list[dict[str, Any] | None]] = {}
    for t in pipeline.tasks:
        if t.kind != "load" or (loads is not None and t.name not in loads):
            continue
        cp = committed.get(t.name)
        if cp is None:
            if task_status.get(t.name) == "succeeded":
                # the run store saw it succeed, but the destination holds none of it
                raise ResumeError(f"load {t.name!r} of run {run_id} committed before, but its destination no longer "
                                  "holds that commit (was the table or file dropped or rewritten?); resuming would "
                                  "load only part of the data: start a new run with `agent-etl run` instead")
            for e in extracts_above(pipeline, t):
                need.setdefault(e, []).append(None)
            continue
        position = cp.get("position") or {}
        ended = all((position.get(e) or {}).get("end") for e in extracts_above(pipeline, t))
        if ended or not units.get(t.name) or not streaming_path(pipeline, t, registry):
            plan.done[t.name] = int(cp.get("rows") or 0)
            continue
        plan.resumed[t.name] = {"rows": int(cp.get("rows") or 0), "position": position}
        for e in extracts_above(pipeline, t):
            need.setdefault(e, []).append(position.get(e))
    for e, positions in need.items():
        if any(p is None for p in positions):
            continue  # some load needs the source from its start
        plan.start[e] = min(positions, key=lambda p: p.get("rows", 0))
    return plan


async def reopen(registry: Any, store: Any, resume: str | bool, pipeline: Pipeline | None,
                 variables: dict[str, str] | None, force: bool) -> Any:
    """The run ``resume`` names (or, for True, ``pipeline``'s latest unfinished one), rebuilt from its
    stored description and checked against the pipeline as it is now: a ``RunResult`` when it had
    already succeeded, else ``(run_id, pipeline, description, store, ResumePlan, cursors)`` for the
    coordinator to execute. ``ResumeError`` says why it cannot go on."""
    from pathlib import Path

    from agent_etl import redaction
    from agent_etl.agents import destinations
    from agent_etl.result import RunResult, TaskResult
    from agent_etl.run_context import RunDescription
    from agent_etl.slices import is_preview
    from agent_etl.spec.changes import changes
    from agent_etl.store.runs import RESUMABLE

    if resume is True:
        if pipeline is None:
            raise ResumeError("resume=True needs the pipeline whose latest unfinished run to resume")
        row = store.latest_unfinished(pipeline.name)
        if row is None:
            raise ResumeError(f"pipeline {pipeline.name!r} has no unfinished run to resume (its latest run "
                              "succeeded, or it never ran); start one with `agent-etl run`")
        resume = row["run_id"]
    record = store.get_run(str(resume))
    if record is None:
        raise ResumeError(f"{store.missing(str(resume))} (run store {store.url})")
    run = record.run
    run_id = run["run_id"]
    if run["status"] in ("succeeded", "warned"):
        results = {t["task"]: TaskResult(t["task"], t["kind"], t["tool"], status=t["status"], rows=t["rows"] or 0,
                                         agent=t["agent"] or "", reason="")
                   for t in record.tasks}
        return RunResult(run_id, run["pipeline"], run["status"], 0, 0.0, results,
                         note=f"run {run_id} already {run['status']}; nothing to do")
    if is_preview(run["pipeline"], [t["task"] for t in record.tasks if t["kind"] == "load"]):
        raise ResumeError(f"run {run_id} was a preview (`agent-etl run --limit`): a resume would read its "
                          "sources whole; run the preview again")
    if run["status"] not in RESUMABLE:
        raise ResumeError(f"run {run_id} is {run['status']} (process {run.get('owner')}); a run in progress "
                          "cannot be resumed: wait for it to end, or stop it (Ctrl-C, SIGTERM) and resume then")
    if not run.get("description"):
        raise ResumeError(f"run {run_id} was recorded without its description (an older agent-etl); "
                          "start a new run with `agent-etl run`")
    desc = RunDescription.model_validate(run["description"])
    rebuilt = desc.pipeline(variables, registry=registry)
    redaction.remember(rebuilt.secrets)
    now = pipeline.doc.source_text if pipeline is not None else (
        Path(desc.path).read_text() if desc.path and Path(desc.path).is_file() else desc.spec)
    changed = changes(desc.spec, now)
    if changed:
        if desc.copies:  # the copies' checkpoints are of the old ranges and names: going on would load twice
            raise ResumeError(f"the pipeline changed since run {run_id} started ({changed}), and that run read "
                              f"{', '.join(desc.copies)} in copies over workers, which a changed pipeline cannot go "
                              "on with; run it anew with `agent-etl run`")
        if not force:
            raise ResumeError(f"the pipeline changed since run {run_id} started: {changed}; resuming would mix "
                              "two versions of it. Run it anew with `agent-etl run`, or resume with --force to "
                              "go on with the pipeline as it is now")
        merged = {**desc.variables, **(variables or {})}
        source = pipeline if pipeline is not None else Pipeline.from_yaml(desc.path, merged,
                                                                           registry=registry)
        store.audit(run_id, "config.changed", None, {"from": desc.fingerprint, "to": source.fingerprint,
                                                     "changes": changed})
        rebuilt, desc = source, RunDescription.of(source, merged, Path(desc.home))
    status = {t["task"]: t["status"] for t in record.tasks}
    committed, units = await destinations.committed(registry, run_id, rebuilt, Path(desc.home), store)
    plan = plan_resume(run_id, rebuilt, registry, status, committed, units)
    # the bounds the run started with: a resumed incremental read reads the same rows
    return run_id, rebuilt, desc, store, plan, run.get("cursors") or {}
