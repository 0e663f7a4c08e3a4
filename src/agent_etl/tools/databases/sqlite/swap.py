"""``mode: replace`` by swap on SQLite (``databases.replace``): the new table is created from the old
one's own ``CREATE TABLE`` text under a staging name (so columns, declared types, defaults, NOT NULL,
CHECK, PRIMARY KEY, UNIQUE and its foreign keys carry over), filled, and, in the load's transaction,
the views of the file are dropped, the old table dropped (its indexes and triggers with it), the new
one renamed in, and the old table's indexes, its triggers and the views created again from their
saved text. Indexes are built once, after the rows.

Blockers (auto inserts instead): a foreign key of another table pointing at this one (dropping the
table would check or cascade it), a table without a ``CREATE TABLE`` text (virtual tables).
"""

from __future__ import annotations

import sqlite3

from agent_etl.tools.databases import replace
from agent_etl.tools.databases.sqlite.types import quote


def blockers(conn: sqlite3.Connection, table: str) -> list[str]:
    found = []
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                       (table,)).fetchone()
    if row is None or not row[0] or not row[0].upper().startswith("CREATE TABLE"):
        found.append("a virtual table or one without its CREATE TABLE text")
    for (other,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name <> ? COLLATE NOCASE",
                                 (table,)).fetchall():
        refs = conn.execute("SELECT 1 FROM pragma_foreign_key_list(?) WHERE \"table\" = ? COLLATE NOCASE",
                            (other, table)).fetchone()
        if refs:
            found.append(f"a foreign key of table {other} points at the table")
    return found


def create_like(conn: sqlite3.Connection, table: str, new: str) -> None:
    """``new``, made from ``table``'s CREATE TABLE text."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                       (table,)).fetchone()[0]
    conn.execute(replace.create_like(sql, quote(new)))


def swap_in(conn: sqlite3.Connection, table: str, new: str) -> None:
    """Put ``new`` in ``table``'s place, keeping the old table's indexes and triggers and every view."""
    kept = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND "
                        "((type IN ('index', 'trigger') AND tbl_name = ? COLLATE NOCASE) OR type = 'view') "
                        "ORDER BY CASE type WHEN 'index' THEN 0 WHEN 'trigger' THEN 1 ELSE 2 END, rowid",
                        (table,)).fetchall()
    for kind, name, _ in kept:
        if kind == "view":
            conn.execute(f"DROP VIEW {quote(name)}")
    conn.execute(f"DROP TABLE {quote(table)}")
    conn.execute(f"ALTER TABLE {quote(new)} RENAME TO {quote(table)}")
    for _, _, sql in kept:
        conn.execute(sql)
