"""One process at a time on a memory folder: Chroma's persistent client is not safe for two
processes on one directory (the second one's vectors are silently lost), so the process that opens
it holds ``flock`` on ``<folder>/writer.lock``. The kernel lets go when the process ends, even by
SIGKILL; the file says which process holds it, for the message another one gets.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent_etl.exceptions import AgentETLError
from agent_etl.lockfile import LockFile


class MemoryUnavailable(AgentETLError):
    """The memory folder cannot be used (locked, corrupt, made by an incompatible version)."""


class MemoryLocked(MemoryUnavailable):
    def __init__(self, folder: Path, pid: int | None):
        self.folder, self.pid = folder, pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"memory folder {folder} is in use by {who}; one process at a time can open it "
                         "(wait for it to end, or use another AGENT_ETL_HOME)")


class WriterLock(LockFile):
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        super().__init__(self.folder / "writer.lock")

    def acquire(self) -> None:
        """Take the lock, or raise ``MemoryLocked`` at once if another process (or another open
        memory in this one) holds it."""
        from agent_etl.private import private_dir

        private_dir(self.folder)
        fd = self._open()
        if not self._try(fd):
            pid = self.holder(fd).get("pid")
            os.close(fd)
            raise MemoryLocked(self.folder, pid if isinstance(pid, int) else None)
        self._hold(fd)
