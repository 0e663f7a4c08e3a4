"""One run of a pipeline at a time: a lock file per pipeline in the state folder.

``flock`` on ``<home>/locks/<pipeline>.lock``: the kernel lets go of it when the process ends, even
by SIGKILL, so a crashed run never leaves a stale lock. The file says who holds it (run id, host,
pid), for the message a second run gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from agent_etl.exceptions import ResumeError


class RunLock:
    def __init__(self, home: Path, pipeline: str):
        self.path = Path(home) / "locks" / f"{pipeline}.lock"
        self._fd: int | None = None

    def acquire(self, run_id: str, wait: bool, poll: float = 0.2, raise_busy: bool = True) -> bool:
        """Take the lock for ``run_id``; if another process holds it, wait for it, or raise (or
        return False, with ``raise_busy=False``)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            from agent_etl.private import private_dir

            private_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not raise_busy:
                    os.close(fd)
                    return False
                if not wait:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise ResumeError(f"pipeline {self.path.stem!r} is already running ({holder}); wait for it to "
                                      "end, or set defaults: {concurrent_runs: wait} to queue behind it") from None
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"run_id": run_id, "pid": os.getpid(), "since": time.time()}).encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            return "another process"
        if not info:
            return "another process"
        return f"run {info.get('run_id')}, process {info.get('pid')}"
