"""``mode: replace`` by swap on DuckDB (``databases.replace``): the new table is created from the old
one's own ``CREATE TABLE`` text (``duckdb_tables().sql``: columns, types, defaults, NOT NULL, CHECK,
PRIMARY KEY, UNIQUE and its foreign keys) under a staging name, filled, and, in the load's
transaction, the old table dropped (its indexes with it) and the new one renamed in; the old
table's indexes (``duckdb_indexes().sql``) are then created again, on the rows. Views bind to names
when queried, so they answer from the new table.

Blockers (auto inserts instead): a foreign key pointing at the table, its own included (DuckDB
refuses to drop the table), a table comment (not in the CREATE TABLE text).
"""

from __future__ import annotations

from typing import Any

from agent_etl.tools.databases import replace

_SCHEMA = "coalesce($1, current_schema())"


def blockers(cur: Any, schema: str | None, name: str) -> list[str]:
    found = [f"a foreign key of table {r[0]}.{r[1]} points at the table" for r in cur.execute(
        "SELECT schema_name, table_name FROM duckdb_constraints() WHERE constraint_type = 'FOREIGN KEY' AND "
        f"referenced_table = $2 AND schema_name = {_SCHEMA}", [schema, name]).fetchall()]
    comment = cur.execute(f"SELECT comment FROM duckdb_tables() WHERE schema_name = {_SCHEMA} AND table_name = $2",
                          [schema, name]).fetchone()
    if comment and comment[0]:
        found.append("a table comment")
    return found


def create_like(cur: Any, schema: str | None, name: str, new: str) -> list[str]:
    """Create ``new`` (quoted, qualified) like the table; returns the CREATE INDEX statements of
    the table's indexes, to run once the new table has taken its place."""
    sql = cur.execute(f"SELECT sql FROM duckdb_tables() WHERE schema_name = {_SCHEMA} AND table_name = $2",
                      [schema, name]).fetchone()[0]
    cur.execute(replace.create_like(sql, new))
    return [r[0] for r in cur.execute(f"SELECT sql FROM duckdb_indexes() WHERE schema_name = {_SCHEMA} AND "
                                      "table_name = $2 AND sql IS NOT NULL", [schema, name]).fetchall()]
