"""Owner-only folders and files: the state folder holds the run store (errors, positions, the
audit trail), quarantined rows and memory, which may be as sensitive as the data itself. Folders
made here are 0o700 and files 0o600, whatever the umask; a state folder that exists with wider
permissions is narrowed when it is ours."""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | Path) -> Path:
    """Make ``path`` (and missing parents) owner-only; narrow it if it exists, is ours and is wider."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made by another process meanwhile
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode goes through the umask
    _narrow(path, DIR_MODE)
    return path


def private_file(path: str | Path) -> Path:
    """Create ``path`` empty if missing, owner-only (SQLite gives its -wal and -shm files the
    database file's permissions); narrow an existing file of ours."""
    path = Path(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass
    _narrow(path, FILE_MODE)
    return path


def _narrow(path: Path, mode: int) -> None:
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077 | (mode & 0o700))
    except OSError:  # not ours to change, or gone: leave it
        pass
