"""``runs list`` and ``runs show``."""

from __future__ import annotations

import datetime as dt
import json

from agent_etl.exceptions import SpecError


def open_store(home: str | None = None, pipeline: str | None = None):
    """The run store the commands that name no run's pipeline read: ``--home``, else
    AGENT_ETL_HOME, else the ``.agent-etl`` next to ``pipeline`` when it is a pipeline file, else
    ``./.agent-etl``. Returns the store and the pipeline name to filter on."""
    from pathlib import Path

    from agent_etl.settings import Settings
    from agent_etl.store.runs import RunStore

    settings = Settings(**({"home": home} if home else {}))
    name = pipeline
    base = None
    if pipeline and pipeline.endswith((".yaml", ".yml")) and Path(pipeline).is_file():
        from agent_etl.spec.yamlsource import load_yaml

        data = load_yaml(Path(pipeline).read_text(), pipeline).data
        name = data.get("name") if isinstance(data, dict) else None
        base = Path(pipeline).resolve().parent
    return RunStore(settings.store_url_for(settings.home_for(base))), name


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def list_command(limit: int, pipeline: str | None, *, as_json: bool, home: str | None = None,
                 status: str | None = None) -> int:
    store, name = open_store(home, pipeline)
    rows = store.list_runs(limit, name, status)
    loads = store.loads([r["run_id"] for r in rows])
    store.close()
    for r in rows:
        r["loads"] = loads[r["run_id"]]
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no runs recorded yet" if not (status or name) else "no runs match")
        return 0
    print(f"{'run id':<24} {'pipeline':<20} {'status':<15} {'started':<19} {'seconds':>8}  rows per destination")
    for r in rows:
        secs = f"{r['duration']:.2f}" if r["duration"] is not None else "-"
        print(f"{r['run_id']:<24} {r['pipeline'][:20]:<20} {r['status']:<15} {_when(r['started_at']):<19} "
              f"{secs:>8}  {_per_destination(r['loads'])}")
    return 0


def _per_destination(loads: dict[str, int], shown: int = 3) -> str:
    """``lake 19,297, warehouse 19,297, revenue 24`` (the first few loads, then how many more)."""
    if not loads:
        return "-"
    merged: dict[str, int] = {}  # the copies of a load over workers (lake#0, lake#1, ...) as one
    for task, rows in loads.items():
        merged[task.split("#")[0]] = merged.get(task.split("#")[0], 0) + (rows or 0)
    loads = merged
    parts = [f"{task} {rows:,}" for task, rows in list(loads.items())[:shown]]
    more = len(loads) - shown
    return ", ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def show_command(run_id: str, *, as_json: bool, home: str | None = None) -> int:
    store, _ = open_store(home)
    record = store.get_run(run_id)
    if record is None:
        message = store.missing(run_id)
        store.close()
        raise SpecError(message)
    store.close()
    from agent_etl.summary import destination_lines, destinations, quality_lines, quality_summary

    r = record.run
    landings = _landings(r)  # a copy over workers (lake#0) writes where its step (lake) does
    tasks = [{**t, **landings.get(t["task"].split("#")[0], {})} for t in record.tasks]
    dests = destinations(tasks)
    quality = quality_summary([q for t in tasks for q in (t["details"] or {}).get("quality", [])])
    if as_json:
        print(json.dumps({"run": r, "tasks": tasks, "destinations": dests, "quality": quality}, indent=2, default=str))
        return 0
    secs = f"{r['duration']:.2f}s" if r["duration"] is not None else "-"
    print(f"run {r['run_id']}  pipeline {r['pipeline']}  {r['status']} (exit {r['exit_code']})  {secs}")
    print(f"started {_when(r['started_at'])}")
    if r["error"] and not any(t["error"] == r["error"] for t in tasks):  # else said once, at its task
        print(f"error: {r['error']}")
    for t in tasks:
        dur = f"{t['duration']:.2f}s" if t["duration"] is not None else "-"
        print(f"  {t['task']:<20} {t['kind']:<9} {t['tool']:<10} {t['status']:<15} {t['rows'] or 0:>10,} rows {dur:>8}"
              f"  agent {t['agent']} ({t['reason']})")
        if (t["details"] or {}).get("cache"):
            from agent_etl.cli.cache import cache_line

            print(f"      cache: {cache_line(t['details']['cache'])}")
        if ((t["details"] or {}).get("tuning") or {}).get("experience"):  # settings from experience (agents.tuning)
            from agent_etl.cli.running import tuned_line

            print(f"      {tuned_line(t['details']['tuning'])}")
        if t["error"] and t["status"] != "upstream_failed":
            print(f"      error: {t['error']}")
        elif t["error"]:
            print(f"      {t['error']}")
    if dests:
        print("loaded:")
        for line in destination_lines(dests, "  "):
            print(line)
    for line in quality_lines(quality):
        print(line)
    from agent_etl.store.runs import RESUMABLE

    if r["status"] in RESUMABLE:
        import shlex

        print(f"resume with: agent-etl resume {r['run_id']}" + (f" --home {shlex.quote(home)}" if home else ""))
    return 0


def _landings(run: dict) -> dict[str, dict]:
    """Where each load of a recorded run writes, from the spec text it ran (no interpolation needed)."""
    from agent_etl.exceptions import SpecError
    from agent_etl.summary import landing
    from agent_etl.spec.yamlsource import load_yaml

    spec = (run.get("description") or {}).get("spec")
    if not spec:
        return {}
    try:
        data = load_yaml(spec, "run").data
    except SpecError:
        return {}
    loads = data.get("load")
    if not isinstance(loads, dict):
        return {}
    base = (run.get("description") or {}).get("base_dir")
    return {name: landing(str(step.get("tool")), step, base) for name, step in loads.items() if isinstance(step, dict)}
