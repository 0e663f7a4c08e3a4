"""``agent-etl cache``: list and clear the result cache of a state folder (``agent_etl.cache``).
Imports only typer at load time; ``agent-etl --help`` stays fast."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from agent_etl.cli.command import Command

cache_app = typer.Typer(no_args_is_help=True, help="The result cache of extracts with `cache: {ttl: ...}`.")

Home = Annotated[Optional[str], typer.Option("--home", metavar="DIR", help="State folder holding the cache (default: "
                                                                        "AGENT_ETL_HOME, else ./.agent-etl).")]
Pipeline = Annotated[Optional[str], typer.Option("--pipeline", "-p", metavar="FILE", help="The cache of this pipeline "
                                                 "file's state folder (.agent-etl next to it).")]


def _folder(home: str | None, pipeline: str | None) -> Path:
    from agent_etl.settings import Settings

    if home:
        return Path(home).resolve()
    return Settings().home_for(Path(pipeline).resolve().parent if pipeline else None)


@cache_app.command("clear", cls=Command)
def clear(home: Home = None, pipeline: Pipeline = None) -> None:
    """Delete every cached result of the state folder; the next run of each cached extract reads its source."""
    from agent_etl.cli.app import _exit

    def run() -> int:
        from agent_etl.cache import ResultCache

        folder = _folder(home, pipeline)
        entries, size = ResultCache(folder).clear()
        print(f"cleared {entries} cached result(s), {size / 2**20:,.1f} MiB, from {folder / 'cache'}")
        return 0

    _exit(run)


@cache_app.command("list", cls=Command)
def list_(json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
          home: Home = None, pipeline: Pipeline = None) -> None:
    """List the cached results: pipeline, task, rows, size, age and expiry, least recently used first."""
    from agent_etl.cli.app import _exit

    def run() -> int:
        from agent_etl.cache import ResultCache

        entries = ResultCache(_folder(home, pipeline)).entries()
        if json_:
            print(json.dumps(entries, indent=2))
            return 0
        if not entries:
            print("no cached results")
            return 0
        now = time.time()
        print(f"{'key':<14}{'pipeline':<22}{'task':<20}{'rows':>12}{'MiB':>9}  {'stored':<20} expires")
        for e in entries:
            left = float(e.get("expires", 0)) - now
            expires = "expired" if left <= 0 else f"in {_duration(left)}"
            stored = dt.datetime.fromtimestamp(float(e.get("created", 0))).strftime("%Y-%m-%d %H:%M:%S")
            print(f"{e['key'][:12]:<14}{str(e.get('pipeline', '')):<22}{str(e.get('task', '')):<20}"
                  f"{int(e.get('rows', 0)):>12,}{int(e.get('bytes', 0)) / 2**20:>9.1f}  {stored:<20} {expires}")
        return 0

    _exit(run)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def cache_line(info: dict[str, Any]) -> str:
    """A task's ``details["cache"]`` for people: ``hit (disk, 1,000 rows stored 2.5s before)``."""
    status = info.get("status", "?")
    if status == "hit":
        return (f"hit ({info.get('tier')}, {int(info.get('rows') or 0):,} rows stored "
                f"{_duration(float(info.get('age_seconds') or 0))} before; key {info.get('key')})")
    if status == "stored":
        return f"miss: read the source and stored the result (key {info.get('key')})"
    if info.get("why"):
        return f"miss: read the source, not cached: {info['why']}"
    return f"miss: read the source; the result was not stored (key {info.get('key')})"
