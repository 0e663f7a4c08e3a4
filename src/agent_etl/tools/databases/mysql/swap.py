"""``mode: replace`` by swap on MariaDB/MySQL (``databases.replace``): the new table is ``CREATE TABLE
... LIKE`` the old one (columns, types, defaults, indexes, CHECK constraints, the table's options and
comment), filled by LOAD DATA, then swapped in by one atomic ``RENAME TABLE old TO spare, new TO
old``; the spare is dropped. Grants on the table and views on it refer to it by name, so they apply
to the new table. The AUTO_INCREMENT counter carries over (``LIKE`` starts it at 1): a row added after
the replace gets an id the old table had not given yet, as after DELETE + INSERT.

Blockers (auto inserts instead): triggers on the table (they would stay on the old one), foreign
keys to or from it (``LIKE`` does not copy them, and the old table's would keep pointing at it),
a system-versioned table (its history would go).
"""

from __future__ import annotations

from typing import Any


def blockers(query: Any, database: str, name: str) -> list[str]:
    """``query(sql, params)`` returns rows."""
    found = [f"trigger {r[0]} on the table" for r in query(
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = %s AND "
        "EVENT_OBJECT_TABLE = %s", (database, name))]
    found += [f"foreign key {r[0]} of table {r[1]}.{r[2]} points at the table" for r in query(
        "SELECT CONSTRAINT_NAME, CONSTRAINT_SCHEMA, TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS "
        "WHERE UNIQUE_CONSTRAINT_SCHEMA = %s AND REFERENCED_TABLE_NAME = %s", (database, name))]
    found += [f"foreign key {r[0]} of the table (not copied by CREATE TABLE ... LIKE)" for r in query(
        "SELECT CONSTRAINT_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s AND "
        "TABLE_NAME = %s AND REFERENCED_TABLE_NAME <> %s", (database, name, name))]
    found += ["a system-versioned table" for _ in query(
        "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND "
        "TABLE_TYPE = 'SYSTEM VERSIONED'", (database, name))]
    return found


def create_like(execute: Any, query: Any, database: str, name: str, new: str, old: str) -> None:
    """``CREATE TABLE new LIKE old`` (both quoted), with the old table's AUTO_INCREMENT counter."""
    execute(f"CREATE TABLE {new} LIKE {old}")
    counter = query("SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND "
                    "TABLE_NAME = %s", (database, name))
    if counter and counter[0][0] and int(counter[0][0]) > 1:
        execute(f"ALTER TABLE {new} AUTO_INCREMENT = {int(counter[0][0])}")
