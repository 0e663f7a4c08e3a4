"""``run``, ``validate`` and ``plan``."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from agent_etl.exceptions import SpecError


def parse_vars(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError(f"--var {pair!r} is not K=V")
        out[key] = value
    return out


def _load(path: str, pairs: list[str], profile: str | None = None):
    """The pipeline at ``path``, with the overlay of ``profile`` (configs/<profile>.yaml) if given."""
    import os
    from pathlib import Path

    from agent_etl.profiles import ENV, apply
    from agent_etl.spec import Pipeline

    variables = parse_vars(pairs)
    if not (profile or os.environ.get(ENV)) or not Path(path).is_file():
        return Pipeline.from_yaml(path, variables)
    base_dir = Path(path).resolve().parent
    text, source = apply(Path(path).read_text(), path, profile, base_dir)
    return Pipeline.from_text(text, source=source, base_dir=base_dir, variables=variables)


def validate_command(path: str, pairs: list[str], *, as_json: bool, connect: bool = False,
                     profile: str | None = None) -> int:
    try:
        pipeline = _load(path, pairs, profile)
    except SpecError as e:
        if not as_json:
            raise
        problems = [{"message": p.message, "line": p.line, "hint": p.hint, "where": p.where} for p in e.problems]
        print(json.dumps({"valid": False, "pipeline": path, "problems": problems}, indent=2))
        return 2
    if connect:
        from agent_etl.cli.slicing import connect_problems

        found = connect_problems(pipeline)
        if found:
            if as_json:
                print(json.dumps({"valid": False, "pipeline": path, "problems": [{"message": m} for m in found]},
                                 indent=2))
            for message in [] if as_json else found:
                print(f"error: {message}", file=sys.stderr)
            return 2
    if as_json:
        print(json.dumps({"valid": True, "pipeline": pipeline.name, "tasks": [t.name for t in pipeline.tasks]}, indent=2))
    else:
        print(f"{path}: ok ({pipeline.name}, {len(pipeline.tasks)} tasks{', connections and sources checked' if connect else ''})")
    return 0


def plan_command(path: str, pairs: list[str], *, as_json: bool, profile: str | None = None,
                 memory: str | None = None, bus: str | None = None) -> int:
    from agent_etl.agents.coordinator import AgentCoordinator
    from agent_etl.settings import Settings

    pipeline = _load(path, pairs, profile)

    async def make_plan() -> tuple[list[Any], dict[str, Any], bool]:
        from agent_etl.agents.partition_plan import verdicts

        chosen = {k: v for k, v in (("memory", memory), ("bus", bus)) if v}
        async with AgentCoordinator(store=False, settings=Settings(**chosen)) as c:
            return await c.plan(pipeline), verdicts(pipeline, c.registry), getattr(c.bus, "remote", False)

    from agent_etl.agents.planning import worker_reason
    from agent_etl.summary import landing, shown_path

    planned, copies, broker = asyncio.run(make_plan())  # broker: the work queue places branches
    rows = [{"step": i + 1, "task": p.task.name, "kind": p.task.kind, "tool": p.task.tool, "inputs": p.task.inputs,
             "quality": [{"checks": [next(iter(c), "?") for c in g.checks], "on_failure": g.on_failure}
                         for g in p.task.gates],
             **({"reads": _reads(p.task.options)} if p.task.kind == "extract" else {}),
             **(landing(p.task.tool, p.task.options, pipeline.base_dir) if p.task.kind == "load" else {}),
             "agent": p.agent, "reason": p.reason, **({"tuning": p.tuning} if p.tuning else {}),
             **({"distributed": copies[p.task.name].to_dict()} if p.task.name in copies else {})}
            for i, p in enumerate(planned)]
    if as_json:
        print(json.dumps({"pipeline": pipeline.name, "tasks": rows}, indent=2))
        return 0
    print(f"{pipeline.name}: {len(rows)} tasks")
    agents = {r["agent"] for r in rows}
    # a fleet had a say: a choice, or agents left out by tags or memory
    choice = not broker and any(not r["reason"].startswith("only agent able") or "; left out: " in r["reason"]
                                or "tags " in r["reason"] for r in rows)
    width = max(len(r["task"]) for r in rows)
    tunings = {r["task"]: r.get("tuning") for r in rows}
    for r in rows:
        inputs = f" <- {', '.join(r['inputs'])}" if r["inputs"] else ""
        reads = f" from {r['reads']}" if r.get("reads") else ""
        print(f"{r['step']:>3}. {r['task']:<{width}}  {r['kind']} {r['tool']}{reads}{inputs}")
        if "target" in r:
            print(f"       -> {shown_path(r['target'])} ({r['mode']})")
        if "distributed" in r:  # partition_plan: what a run over workers (--bus nats://) makes of the partitions
            d = r["distributed"]
            print(f"       over workers: {d['reason'] if d['copies'] else 'one branch: ' + d['reason']}")
        for q in r["quality"]:
            print(f"       quality: {len(q['checks'])} checks ({', '.join(q['checks'])}), on failure {q['on_failure']}")
        if broker:  # the same for every branch, but where the steps ask for tags
            if r["reason"] != worker_reason([]):
                print(f"       placement: {r['reason']}")
        elif len(agents) > 1 or choice:  # one agent for everything is not news; a choice between agents is
            print(f"       agent {r['agent']}: {r['reason']}")
        tuned = r.get("tuning") or {}
        # once per branch, and only when experience had a say (--json has the baseline's too)
        if tuned.get("experience") and not any((tunings.get(i) or {}).get("reason") == tuned["reason"]
                                               for i in r["inputs"]):
            print(f"       {tuned_line(tuned)}")
    return 0


def tuned_line(tuning: dict[str, Any]) -> str:
    """``tuned: batch_size 200,000, partitions 2 (why)``, or ``not tuned (why)``: agents.tuning's say."""
    values = ", ".join(f"{k} {tuning[k]:,}" for k in ("batch_size", "partitions") if k in tuning)
    return f"tuned: {values} ({tuning.get('reason', '')})" if values else f"not tuned ({tuning.get('reason', '')})"


def _reads(options: dict[str, Any]) -> str | None:
    """What an extract reads, as written: its path, table, URL or (the start of) its query."""
    for key in ("path", "table", "url", "stream"):
        if options.get(key):
            return str(options[key])
    query = " ".join(str(options.get("query") or "").split())
    return (query if len(query) <= 60 else query[:57] + "...") or None


def run_command(path: str, pairs: list[str], *, as_json: bool, quiet: bool, resume: bool = False,
                force: bool = False, bus: str | None = None, metrics_port: int | None = None,
                log_format: str | None = None, limit: int | None = None, only: str | None = None,
                profile: str | None = None, memory: str | None = None) -> int:
    pipeline = _load(path, pairs, profile)
    if limit is not None or only is not None:
        from agent_etl.cli.slicing import sliced_run

        return sliced_run(pipeline, limit, only, not as_json, lambda p, **kw: _run(
            p, pairs, as_json=as_json, quiet=quiet, resume=None, force=False, bus=bus, metrics_port=metrics_port,
            log_format=log_format, **kw))
    return _run(pipeline, pairs, as_json=as_json, quiet=quiet, resume=resume or None, force=force, bus=bus,
                metrics_port=metrics_port, log_format=log_format, memory=memory)


def resume_command(run_id: str, pairs: list[str], *, as_json: bool, quiet: bool, force: bool,
                   home: str | None, memory: str | None = None) -> int:
    return _run(None, pairs, as_json=as_json, quiet=quiet, resume=run_id, force=force, home=home, memory=memory)


async def _open_memory(coordinator: Any, pipeline: Any) -> None:
    """Open the state folder's chroma memory before the run (the coordinator's recorder keeps it
    open to store the run's experiences): a folder that cannot be opened stops the run before it
    starts, with how to reset it or run without it. Held by another process is no reason to stop
    (the experiences wait in pending/); no folder yet, nothing to open."""
    from agent_etl.memory import MemoryLocked, MemoryUnavailable, memory_folder

    home = coordinator.home_for(pipeline)
    if coordinator.settings.memory != "chroma" or not (memory_folder(home) / "chroma").is_dir():
        return
    try:
        await coordinator.recorder().memory(home)
    except MemoryLocked:
        pass
    except MemoryUnavailable as e:
        raise MemoryUnavailable(str(e).replace("set AGENT_ETL_MEMORY=off", "pass --no-memory (AGENT_ETL_MEMORY=off)")) from None


def _run(pipeline: Any, pairs: list[str], *, as_json: bool, quiet: bool, resume: Any, force: bool,
         home: str | None = None, bus: str | None = None, metrics_port: int | None = None,
         log_format: str | None = None, registry: Any = None, memory: str | None = None) -> int:
    """Run (or resume) with the progress display; SIGTERM stops the run like Ctrl-C: the commit unit
    in flight rolls back, what was committed stays, and the run can be resumed (exit 130). While stream
    reads run (redis_stream, nats), the first signal instead ends them after their current micro-batch,
    which is committed and acknowledged: the run ends cleanly, and the CLI exits 130 too."""
    import signal

    from agent_etl.agents.coordinator import AgentCoordinator
    from agent_etl.cli.progress import make_reporter
    from agent_etl.settings import Settings

    settings = Settings(**({"home": home} if home else {}), **({"bus": bus} if bus else {}),
                        **({"memory": memory} if memory else {}))
    from agent_etl.observe import logs

    logs.configure(settings.log_level, log_format or settings.log_format)
    variables = parse_vars(pairs)
    reporter = make_reporter(pipeline, enabled=not (as_json or quiet or pipeline is None))

    stopped = []  # signals received

    async def main():
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()

        def on_signal() -> None:
            # the first signal stops stream reads after their current micro-batch (it is committed and
            # acknowledged, the run ends cleanly); without one, or on a second signal, cancel as before
            stopped.append(1)
            if len(stopped) == 1:
                from agent_etl.tools.streams.rules import request_stop

                if request_stop():
                    print("stopping: stream reads end after the current commit (again to cancel at once)",
                          file=sys.stderr)
                    return
            me.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        async with AgentCoordinator(settings=settings, registry=registry) as coordinator:
            sub = await coordinator.bus.subscribe("*", reporter.on_event, maxsize=4096)
            server = None
            if metrics_port is not None and coordinator.monitor is not None:
                from agent_etl.observe.metrics import serve

                server = serve(coordinator.monitor, metrics_port, settings.metrics_host)
            try:
                await _open_memory(coordinator, pipeline)
                return await coordinator.run(pipeline, variables=variables, resume=resume, force=force)
            finally:
                await coordinator.bus.drain()
                await sub.cancel()
                if server is not None:
                    server.close()

    with reporter:
        try:
            result = asyncio.run(main())
        except asyncio.CancelledError:
            print("interrupted: the commit in flight was rolled back; resume with `agent-etl run --resume` or "
                  "`agent-etl resume RUN_ID` (`agent-etl runs list` shows it)", file=sys.stderr)
            return 130
    if stopped and result.exit_code == 0:  # stopped cleanly: everything read was committed
        print("stopped: stream reads ended after their last commit; nothing read is left uncommitted", file=sys.stderr)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        if result.note:
            print(result.note)
        reporter.summary(result)
        if result.resume_command:
            print(f"resume with: {result.resume_command}", file=sys.stderr)
    return 130 if stopped and result.exit_code == 0 else result.exit_code
