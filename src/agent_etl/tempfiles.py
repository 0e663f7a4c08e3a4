"""agent-etl's temporary files and folders in the system's temp directory, and the sweep of those a
killed process left behind.

Each is named ``agent-etl-<kind>-<pid>-<machine>-<random>``: the pid of the process that made it, and
a tag of its host, boot and pid namespace, so that an entry of another container or machine sharing
the folder, whose pids mean other processes here, is never judged dead. Making one first sweeps the
stale ones of its kind (``sweep``): an entry whose process is gone, of our tag and user, unchanged for
a minute (a pid reused by now only keeps an entry longer). The same goes for the DuckDB folders of
the state folder's ``tmp/`` (``transforms.duckdb_batch.spool_dir``).
A live process's entries are never touched. Outside POSIX nothing is swept (``os.kill(pid, 0)``
would end the process there).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import stat
import tempfile
import time

STALE_AFTER = 60.0  # seconds an entry of a dead process must have been left unchanged before it goes


@functools.cache
def _machine() -> str:
    """A tag of this process's pid space: its host, boot and pid namespace (Linux: the inode of
    /proc/self/ns/pid). Pids of another tag mean other processes (another container, or machine
    sharing the folder), so their entries are left alone."""
    import hashlib
    import socket

    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip())
    except OSError:
        parts.append("")
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append("")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:8]


def prefix(kind: str) -> str:
    """The name prefix of this process's temporary entries of ``kind``."""
    return f"agent-etl-{kind}-{os.getpid()}-{_machine()}-"


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (of any user); outside POSIX, taken as alive (there
    ``os.kill(pid, 0)`` would interrupt it)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def sweep(kind: str, *, folder: str | None = None, stale_after: float = STALE_AFTER) -> list[str]:
    """Remove the entries of ``kind`` that dead processes left in ``folder`` (default: the temp
    directory); the paths removed."""
    if os.name != "posix":
        return []
    folder = folder or tempfile.gettempdir()
    pattern = re.compile(rf"agent-etl-{re.escape(kind)}-(\d+)-([0-9a-z]+)-[A-Za-z0-9_]+(\.[A-Za-z0-9]+)?")
    machine, me, uid = _machine(), os.getpid(), os.getuid()
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    now = time.time()
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or m[2] != machine or int(m[1]) == me:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_uid != uid or now - st.st_mtime < stale_after or alive(int(m[1])):
            continue
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(entry.path, ignore_errors=True)
        elif stat.S_ISREG(st.st_mode):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        else:
            continue  # a link or anything else of that name is not ours
        removed.append(entry.path)
    return removed


def new_name(kind: str) -> str:
    """A name for an entry of ``kind`` that a caller makes itself, later or never (it sweeps first)."""
    import uuid

    return f"{prefix(kind)}{uuid.uuid4().hex[:8]}"


def make_dir(kind: str) -> str:
    """A new private folder ``agent-etl-<kind>-<pid>-...`` in the temp directory (the caller removes
    it), after sweeping the stale ones of ``kind``."""
    sweep(kind)
    return tempfile.mkdtemp(prefix=prefix(kind))


def make_file(kind: str, suffix: str = "") -> tuple[int, str]:
    """A new private file (descriptor, path) ``agent-etl-<kind>-<pid>-...<suffix>`` in the temp
    directory, as ``tempfile.mkstemp``; the stale ones of ``kind`` are swept at most once a minute
    per process (a file is made per batch)."""
    now = time.monotonic()
    if now - _swept.get(kind, -STALE_AFTER) >= STALE_AFTER:
        _swept[kind] = now
        sweep(kind)
    return tempfile.mkstemp(prefix=prefix(kind), suffix=suffix)


def temporary_dir(kind: str) -> tempfile.TemporaryDirectory[str]:
    """``tempfile.TemporaryDirectory`` named ``agent-etl-<kind>-<pid>-...``, after a sweep of ``kind``."""
    sweep(kind)
    return tempfile.TemporaryDirectory(prefix=prefix(kind))


_swept: dict[str, float] = {}
