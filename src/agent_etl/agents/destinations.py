"""What the coordinator asks the destinations of a run's loads, through their loaders: what each
holds of a run (``Loader.committed``: a resume goes on after it) and the marks of incremental
sources (``Loader.mark``: the next run reads after the smallest). The destination is the truth;
the run store only mirrors it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_etl.exceptions import ResumeError
from agent_etl.spec import Pipeline


def loaders(registry: Any, run_id: str, pipeline: Pipeline, home: Path, names: set[str] | None,
            resources: Any, store: Any = None) -> dict[str, Any]:
    """Loader objects of the load tasks (all, or ``names``), to ask their destinations; they
    connect only when asked, through ``resources`` (close it afterwards). With the run ``store``,
    they know the commit decisions (``ToolContext.decided``) to settle what a crash left prepared."""
    from agent_etl.tools.base import ToolContext

    connections = {k: c.model_dump() for k, c in pipeline.spec.connections.items()}
    out = {}
    for t in pipeline.tasks:
        if t.kind != "load" or (names is not None and t.name not in names):
            continue
        cls = registry.get("loader", t.tool)
        ctx = ToolContext(run_id=run_id, task=t.name, base_dir=pipeline.base_dir, home=home,
                          connections=connections, resources=resources, line=t.line,
                          decided=_decided(store, t.name))
        out[t.name] = cls(cls.Config.model_validate(t.options), ctx)
    return out


def _decided(store: Any, task: str) -> Any:
    if store is None:
        return None
    return lambda run_id, unit: store.decided(run_id, task, unit)


async def cursors(registry: Any, run_id: str, pipeline: Pipeline, home: Path, store: Any) -> dict[str, Any]:
    """The mark each incremental source reads after, and each stream source starts after (its
    ``Extractor`` class has ``stream_marks``: a Redis entry id, a NATS sequence): the smallest of the
    marks its loads' destinations hold (the destination is the truth: two state folders cannot
    disagree), or the run store's state where no destination holds one."""
    from agent_etl.agents.resume import extracts_above
    from agent_etl.tools.databases.incremental import decode
    from agent_etl.tools.resources import Resources
    from agent_etl.tools.streams import marks as stream_marks

    sources = {t.name: t.options["incremental"].get("cursor") for t in pipeline.tasks
               if t.kind == "extract" and isinstance(t.options.get("incremental"), dict)}
    streams = {t.name: str(t.options.get("stream")) for t in pipeline.tasks
               if t.kind == "extract" and t.name not in sources and _stream_marks(registry, t.tool)}
    if not sources and not streams:
        return {}
    below = {t.name: [e for e in extracts_above(pipeline, t) if e in sources or e in streams]
             for t in pipeline.tasks if t.kind == "load"}
    resources = Resources()
    marks: dict[str, list[dict[str, Any]]] = {}
    try:
        asked = loaders(registry, run_id, pipeline, home, {n for n, es in below.items() if es}, resources, store)
        for name, loader in asked.items():
            for e in below[name]:
                mark = await loader.mark(e)
                if e in streams:
                    if stream_marks.is_stream_mark(mark, streams[e]):
                        marks.setdefault(e, []).append(mark)
                elif isinstance(mark, dict) and mark.get("cursor") == sources[e]:
                    marks.setdefault(e, []).append(mark)
    finally:
        await resources.aclose()
    out = {}
    for e in [*sources, *streams]:
        if marks.get(e):
            out[e] = min(marks[e], key=stream_marks.order if e in streams else decode)
        elif store is not None:
            stored = store.load_state(pipeline.name, e)
            if stored is not None:
                out[e] = stored
    return out


def _stream_marks(registry: Any, tool: str) -> bool:
    try:
        return bool(getattr(registry.get("extractor", tool), "stream_marks", False))
    except Exception:  # noqa: BLE001 - a tool that cannot load says so when its task runs
        return False


async def committed(registry: Any, run_id: str, pipeline: Pipeline, home: Path, store: Any,
                    names: set[str] | None = None) -> tuple[dict[str, Any], dict[str, bool]]:
    """What each load's destination holds of ``run_id`` (the run store's mirror for a loader
    that keeps no checkpoints), and whether it commits in units."""
    from agent_etl.tools.base import Loader
    from agent_etl.tools.resources import Resources

    mirror = store.run_checkpoints(run_id)
    resources = Resources()
    committed: dict[str, Any] = {}
    units: dict[str, bool] = {}
    try:
        for name, loader in loaders(registry, run_id, pipeline, home, names, resources, store).items():
            units[name] = bool(loader.takes_units())
            if type(loader).committed is Loader.committed:
                committed[name] = mirror.get(name)
                continue
            held = committed[name] = await loader.committed()
            seen = mirror.get(name)
            if held is None and seen is not None:
                raise ResumeError(
                    f"load {name!r} of run {run_id} committed {seen['rows']:,} rows in {seen['commits']} "
                    "unit(s), but its destination no longer holds them (was the table or file dropped or "
                    "rewritten since?); resuming would load only part of the data. Start a new run with "
                    "`agent-etl run` instead")
    finally:
        await resources.aclose()
    return committed, units
