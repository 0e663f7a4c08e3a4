"""``agent-etl memory``: search, list, forget and reset the experience memory of a state folder.
This module imports only typer at load time (``agent-etl --help`` stays fast); chromadb is
imported when a command opens the memory."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from agent_etl.cli.command import Command

memory_app = typer.Typer(no_args_is_help=True, help="The experience memory: what every task of past runs did.")

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Home = Annotated[Optional[str], typer.Option("--home", metavar="DIR", help="State folder holding the memory (default: AGENT_ETL_HOME, "
                                                            "else ./.agent-etl; with --like, next to the pipeline).")]


@memory_app.command("search", cls=Command)
def search(text: Annotated[Optional[str], typer.Argument(help="Words to look for, e.g. 'postgres parquet'.")] = None,
           like: Annotated[Optional[str], typer.Option("--like", metavar="PIPELINE", help="Pipeline YAML file: the experiences nearest "
                                                                      "to each of its tasks.")] = None,
           k: Annotated[int, typer.Option("-k", "--limit", metavar="N", help="How many per query.")] = 5,
           json: Json = False, home: Home = None) -> None:
    """Find the experiences most similar to some words, or to the tasks of a pipeline."""
    from agent_etl.cli.app import _exit

    _exit(lambda: search_command(text, like, k, as_json=json, home=home))


@memory_app.command("list", cls=Command)
def list_(limit: Annotated[int, typer.Option(metavar="N", help="How many, newest first.")] = 20,
          pipeline: Annotated[Optional[str], typer.Option(metavar="NAME", help="Only this pipeline's experiences.")] = None,
          json: Json = False, home: Home = None) -> None:
    """List stored experiences, newest first."""
    from agent_etl.cli.app import _exit

    _exit(lambda: list_command(limit, pipeline, as_json=json, home=home))


@memory_app.command("forget", cls=Command)
def forget(id: Annotated[str, typer.Argument(help="An experience id (RUN_ID/TASK), or a run id: all its tasks.")],
           home: Home = None) -> None:
    """Forget one experience, or every experience of one run."""
    from agent_etl.cli.app import _exit

    _exit(lambda: forget_command(id, home=home))


@memory_app.command("reset", cls=Command)
def reset(yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
          home: Home = None) -> None:
    """Delete the whole memory folder (every experience); runs, checkpoints and reports stay."""
    from agent_etl.cli.app import _exit

    _exit(lambda: reset_command(yes, home=home))


# -- command bodies -------------------------------------------------------------------------------

def _home(home: str | None, pipeline: str | None = None) -> Path:
    from agent_etl.settings import Settings

    settings = Settings(**({"home": home} if home else {}))
    return settings.home_for(Path(pipeline).resolve().parent if pipeline else None)


def _open(home: Path) -> Any:
    from agent_etl.exceptions import AgentETLError
    from agent_etl.memory import memory_folder, open_memory
    from agent_etl.settings import Settings

    kind = Settings().memory
    if kind != "chroma":
        raise AgentETLError(f"AGENT_ETL_MEMORY is {kind}: no memory is kept on disk "
                            f"(set AGENT_ETL_MEMORY=chroma, the default, to keep one in {memory_folder(home)})")
    if not (memory_folder(home) / "chroma").exists() and not (memory_folder(home) / "pending").exists():
        return None
    return open_memory("chroma", home)


def _row(record: Any, distance: float | None = None) -> dict[str, Any]:
    from agent_etl.memory.descriptor import TaskDescriptor

    m = record.metadata
    try:
        summary = TaskDescriptor.from_json(record.document).summary()
    except (ValueError, TypeError):
        summary = record.document[:80]
    row = {"id": record.id, "pipeline": m.get("pipeline"), "task": m.get("task"), "agent": m.get("agent"),
           "status": m.get("status"), "rows": m.get("rows"), "rows_per_second": m.get("rows_per_second"),
           "duration": m.get("duration"), "error_type": m.get("error_type"), "descriptor": summary,
           "params": {k: m[k] for k in ("batch_size", "partitions", "concurrency") if k in m},
           "created_at": m.get("created_at")}
    if distance is not None:
        row["distance"] = round(distance, 4)
    return row


def _print(rows: list[dict[str, Any]], with_distance: bool = False, last: str = "descriptor") -> None:
    head = (f"{'distance':>8} " if with_distance else "") + f"{'id':<40} {'status':<15} {'rows/s':>12}  {last}"
    print(head)
    for r in rows:
        dist = f"{r['distance']:>8.3f} " if with_distance else ""
        rps = f"{r['rows_per_second']:,.0f}" if r.get("rows_per_second") is not None else "-"
        print(f"{dist}{r['id']:<40} {str(r['status']):<15} {rps:>12}  {r['descriptor']}")


def search_command(text: str | None, like: str | None, k: int, *, as_json: bool, home: str | None) -> int:
    from agent_etl.exceptions import SpecError

    if bool(text) == bool(like):
        raise SpecError("give either TEXT or --like PIPELINE, e.g. `agent-etl memory search 'postgres parquet'`")
    queries: list[tuple[str, str]] = []
    if like:
        from agent_etl.memory.descriptor import describe
        from agent_etl.spec import Pipeline

        pipeline = Pipeline.from_yaml(like)
        queries = [(t.name, describe(t, pipeline).to_json()) for t in pipeline.tasks]
    else:
        queries = [("", str(text))]
    memory = _open(_home(home, like))
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        for name, document in queries:
            hits = memory.query(document, k) if memory is not None else []
            results[name] = [_row(h.record, h.distance) for h in hits]
    finally:
        if memory is not None:
            memory.close()
    if as_json:
        print(json.dumps(results if like else results[""], indent=2, default=str))
        return 0
    if not any(results.values()):
        print("no experiences stored yet")
        return 0
    for name, rows in results.items():
        if like:
            print(f"\n{name}:")
        _print(rows, with_distance=True)
    return 0


def list_command(limit: int, pipeline: str | None, *, as_json: bool, home: str | None) -> int:
    memory = _open(_home(home))
    try:
        records = memory.get(where={"pipeline": pipeline} if pipeline else None) if memory is not None else []
    finally:
        if memory is not None:
            memory.close()
    rows = sorted((_row(r) for r in records), key=lambda r: -(r["created_at"] or 0))[:limit]
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no experiences stored yet")
        return 0
    for r in rows:
        r["descriptor"] = f"{_when(r['created_at']):<19}  {r['descriptor']}"
    _print(rows, last=f"{'stored':<19}  descriptor")
    return 0


def forget_command(id: str, *, home: str | None) -> int:
    from agent_etl.exceptions import AgentETLError

    memory = _open(_home(home))
    if memory is None:
        raise AgentETLError(f"no experience {id!r}: the memory is empty")
    try:
        ids = [r.id for r in memory.get(ids=[id])] or [r.id for r in memory.get(where={"run_id": id})]
        if not ids:
            raise AgentETLError(f"no experience {id!r} in the memory; `agent-etl memory list` shows the ids")
        memory.delete(ids)
    finally:
        memory.close()
    print(f"forgot {len(ids)} experience{'s' if len(ids) != 1 else ''}")
    return 0


def reset_command(yes: bool, *, home: str | None) -> int:
    from agent_etl.memory import memory_folder
    from agent_etl.memory.lock import WriterLock

    folder = memory_folder(_home(home))
    if not folder.exists():
        print(f"no memory in {folder}")
        return 0
    if not yes and not typer.confirm(f"Delete every experience in {folder}?", default=False):
        print("nothing deleted")
        return 1
    lock = WriterLock(folder)
    lock.acquire()  # a process using the memory keeps it: fail rather than pull it from under that process
    try:
        for child in folder.iterdir():
            if child.name != lock.path.name:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    finally:
        lock.release()
    print(f"memory reset: {folder} is empty")
    return 0


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"
