"""Experience memory: a ``VectorMemory`` (Chroma, persistent, the default; or numpy, in-process)
of task descriptors and what happened when they ran. Importing this package imports neither
chromadb nor numpy; opening a memory does.

    from agent_etl.memory import open_memory
    memory = open_memory("chroma", home)      # <home>/memory, one process at a time
    hits = memory.query("postgres parquet", k=5, where={"status": "succeeded"})
"""

from agent_etl.memory.base import Hit, Record, VectorMemory, Where
from agent_etl.memory.folder import memory_folder, open_memory
from agent_etl.memory.lock import MemoryLocked, MemoryUnavailable

__all__ = ["Hit", "MemoryLocked", "MemoryUnavailable", "Record", "VectorMemory", "Where", "memory_folder",
           "open_memory"]
