"""A lock held with ``flock`` on a file that says who holds it (a JSON object: pid, since, and what
the holder adds), for the message another process gets. The kernel lets go when the process ends,
even by SIGKILL, so a crash never leaves a stale lock. Used by ``store.locks.RunLock`` (one run of a
pipeline at a time) and ``memory.lock.WriterLock`` (one process on a memory folder)."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any


class LockFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def _open(self) -> int:
        """The lock file, opened (created, and its private folder, where missing)."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            from agent_etl.private import private_dir

            private_dir(self.path.parent)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    @staticmethod
    def _try(fd: int) -> bool:
        """Take the lock on ``fd`` if no one holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _hold(self, fd: int, **who: Any) -> None:
        """Keep the lock taken on ``fd``, the file saying who holds it."""
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**who, "pid": os.getpid(), "since": time.time()}).encode(), 0)
        self._fd = fd

    @staticmethod
    def holder(fd: int) -> dict[str, Any]:
        """What the holder of the lock on ``fd`` wrote ({} if nothing readable)."""
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            return {}
        return info if isinstance(info, dict) else {}

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None
