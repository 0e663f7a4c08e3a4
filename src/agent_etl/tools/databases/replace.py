"""Which path a ``mode: replace`` takes (``replace_strategy: auto | swap | insert``), for the
loaders of MariaDB/MySQL, DuckDB and SQLite (the postgres loader decides in ``databases.postgres.swap``).

- ``swap``: the new rows go into a new table made like the old one (its columns, types, defaults
  and constraints; indexes too, built after the rows on SQLite and DuckDB), which takes the old
  one's name in the load's transaction (MariaDB: one atomic ``RENAME TABLE``). Readers see the old
  table or the new one.
- ``insert``: the old table is emptied (``DELETE``) and the new rows inserted into it, in one
  transaction: the table itself, and everything that hangs on it, stays.

``auto`` swaps unless something on the database would be lost or broken by a swap (the loader
lists them as *blockers*), or a swap is no faster on that database (SQLite: auto inserts);
``swap`` with blockers fails, naming them. Measured by ``benchmarks/replace_paths.py``: on 1M rows
into a table with a primary key and an index, a swap took 0.99x MariaDB's LOAD DATA and 0.85-1.5x
DuckDB's own Parquet insert, against 1.9x and 2.0-2.5x for DELETE + INSERT; on SQLite both took the
same time (1.8x its executemany). A table that does not exist yet
is simply created (``new table``). ``Path.details`` is what the run's task details say
(``replace``), e.g. ``insert (trigger t_audit on the table)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Path:
    swap: bool
    why: str  # "" for a swap nobody objected to

    @property
    def details(self) -> str:
        return ("swap" if self.swap else "insert") + (f" ({self.why})" if self.why else "")


def choose(strategy: str, blockers: list[str], fail: Callable[[str], Exception] = ValueError,
           auto_inserts: str = "") -> Path:
    """The path of a replace into an existing table, given what stands in a swap's way; with
    ``strategy: swap`` and blockers, raises the error ``fail(message)`` returns. ``auto_inserts``:
    why auto inserts on this database even where it could swap (a swap measured no faster there)."""
    if strategy == "insert":
        return Path(False, "replace_strategy: insert")
    if strategy == "auto" and auto_inserts:
        return Path(False, auto_inserts)
    if blockers:
        listed = "; ".join(blockers)
        if strategy == "swap":
            raise fail(
                f"replace_strategy: swap, but the table cannot be swapped: {listed}; set replace_strategy: auto "
                "(replaces by DELETE + INSERT where it cannot swap) or insert")
        return Path(False, listed)
    return Path(True, "" if strategy == "auto" else "replace_strategy: swap")


NEW = Path(True, "new table")


_HEAD = re.compile(r"CREATE\s+TABLE\s+(?:(?:\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|[^\s(.\"]+)\s*\.\s*)*"
                   r"(?:\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|'(?:[^']|'')*'|[^\s(.\"]+)\s*", re.IGNORECASE)


def create_like(create_table: str, new: str) -> str:
    """A table's ``CREATE TABLE`` text (as SQLite and DuckDB keep it) made to create ``new`` (quoted)."""
    head = _HEAD.match(create_table)
    if head is None:
        raise ValueError(f"not a CREATE TABLE statement: {create_table[:80]!r}")
    return f"CREATE TABLE {new} {create_table[head.end():]}"
