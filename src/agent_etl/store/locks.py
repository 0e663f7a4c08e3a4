"""One run of a pipeline at a time: a lock file per pipeline in the state folder.

``flock`` on ``<home>/locks/<pipeline>.lock``: the kernel lets go of it when the process ends, even
by SIGKILL, so a crashed run never leaves a stale lock. The file says who holds it (run id, host,
pid), for the message a second run gets.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from agent_etl.exceptions import ResumeError
from agent_etl.lockfile import LockFile


class RunLock(LockFile):
    def __init__(self, home: Path, pipeline: str):
        super().__init__(Path(home) / "locks" / f"{pipeline}.lock")

    def acquire(self, run_id: str, wait: bool, poll: float = 0.2, raise_busy: bool = True) -> bool:
        """Take the lock for ``run_id``; if another process holds it, wait for it, or raise (or
        return False, with ``raise_busy=False``)."""
        fd = self._open()
        while not self._try(fd):
            if not raise_busy:
                os.close(fd)
                return False
            if not wait:
                info = self.holder(fd)
                holder = f"run {info.get('run_id')}, process {info.get('pid')}" if info else "another process"
                os.close(fd)
                raise ResumeError(f"pipeline {self.path.stem!r} is already running ({holder}); wait for it to "
                                  "end, or set defaults: {concurrent_runs: wait} to queue behind it")
            time.sleep(poll)
        self._hold(fd, run_id=run_id)
        return True
