"""One process at a time on a memory folder: Chroma's persistent client is not safe for two
processes on one directory (the second one's vectors are silently lost), so the process that opens
it holds ``flock`` on ``<folder>/writer.lock``. The kernel lets go when the process ends, even by
SIGKILL; the file says which process holds it, for the message another one gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from agent_etl.exceptions import AgentETLError


class MemoryUnavailable(AgentETLError):
    """The memory folder cannot be used (locked, corrupt, made by an incompatible version)."""


class MemoryLocked(MemoryUnavailable):
    def __init__(self, folder: Path, pid: int | None):
        self.folder, self.pid = folder, pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"memory folder {folder} is in use by {who}; one process at a time can open it "
                         "(wait for it to end, or use another AGENT_ETL_HOME)")


class WriterLock:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / "writer.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``MemoryLocked`` at once if another process (or another open
        memory in this one) holds it."""
        from agent_etl.private import private_dir

        private_dir(self.folder)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise MemoryLocked(self.folder, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.time()}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


def _holder(fd: int) -> int | None:
    try:
        pid = json.loads(os.pread(fd, 4096, 0) or b"{}").get("pid")
    except (ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None
