"""Where memory lives and how it is opened: ``<state folder>/memory/`` holds the Chroma files
(``chroma/``), the writer lock, and ``pending/``: experiences written while another process held
the lock, added by the next process that opens the memory (so nothing is lost)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

from agent_etl.memory.base import Record, VectorMemory

log = logging.getLogger("agent_etl.memory")
KINDS = ("off", "numpy", "chroma")


def memory_folder(home: str | Path) -> Path:
    return Path(home) / "memory"


def open_memory(kind: str, home: str | Path | None = None) -> VectorMemory:
    """A ``numpy`` memory (new, empty, in this process) or the ``chroma`` memory of the state folder
    ``home`` (its pending experiences added first). Raises ``MemoryLocked`` when another process
    has it open, ``MemoryUnavailable`` when it cannot be opened."""
    if kind == "numpy":
        from agent_etl.memory.ndarray import NumpyMemory

        return NumpyMemory()
    if kind == "chroma":
        if home is None:
            raise ValueError("the chroma memory needs the state folder it lives in")
        from agent_etl.memory.chroma import ChromaMemory

        memory = ChromaMemory(memory_folder(home))
        try:
            _add_pending(memory, memory_folder(home) / "pending")
        except BaseException:
            memory.close()
            raise
        return memory
    raise ValueError(f"memory {kind!r}: choose one of {', '.join(KINDS)} (AGENT_ETL_MEMORY)")


def spool(home: str | Path, name: str, records: Sequence[Record]) -> Path:
    """Keep ``records`` in ``pending/`` for the next process that opens the memory (written whole
    under a temporary name, then renamed: a reader never sees half a file)."""
    from agent_etl.private import private_dir

    folder = private_dir(memory_folder(home) / "pending")
    path = folder / f"{name}-{os.getpid()}-{os.urandom(3).hex()}.jsonl"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"id": r.id, "document": r.document, "metadata": r.metadata}) + "\n"
                           for r in records))
    os.replace(tmp, path)
    return path


def _add_pending(memory: VectorMemory, folder: Path) -> None:
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.jsonl")):
        try:
            records = [Record(d["id"], d["document"], d.get("metadata") or {})
                       for d in map(json.loads, path.read_text().splitlines()) if d]
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("memory: skipping unreadable pending file %s (%s)", path, e)
            path.rename(path.with_suffix(".bad"))
            continue
        memory.add(records)
        path.unlink()
