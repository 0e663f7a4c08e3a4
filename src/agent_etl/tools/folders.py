"""The folder an output goes into: every loader that writes a local file (csv, jsonl, parquet, excel,
a SQLite or DuckDB database, ``tool: sql`` on a SQLite url) creates it, with its parents, the same way."""

from __future__ import annotations

from pathlib import Path

from agent_etl.exceptions import ToolError


def make_folder_for(path: Path, task: str) -> None:
    """Create the folder ``path`` goes into and its parents. Where that cannot be done (a file stands
    where a folder should be, no permission), a one-line ``ToolError`` names the path and why."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise ToolError(f"task {task!r}: cannot make the folder {folder} for {path}: {blocker} is a file, not a "
                        "folder; move that file or change the path") from None
    except OSError as e:
        raise ToolError(f"task {task!r}: cannot make the folder {folder} for {path}: {e.strerror or e}; check the "
                        "path and that it is writable") from None
