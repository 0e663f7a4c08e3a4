"""Introspection of a database for ``agent-etl init``: tables, columns and constraints, read from
the catalog in a few queries for the whole schema (not a round trip per table), so a schema of
many tables takes about as long as one plain ``information_schema`` query."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path

from agent_etl.exceptions import ToolError
from agent_etl.generate.model import Column, ForeignKey, SourceSchema, Table, category, check_ranges
from agent_etl.tools.databases.checkpoints import TABLE as CHECKPOINTS
from agent_etl.tools.databases.connection import describe

NAME = "source"  # the connection's name in the generated pipeline


def _constraint_checks(table: Table, checks: list[str]) -> None:
    cols = {c.name: c for c in table.columns}
    for expression in checks:
        table.ranges.extend(check_ranges(expression, cols))


# -- PostgreSQL -------------------------------------------------------------------------------------

_PG_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.reltuples::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
ORDER BY n.nspname, c.relname"""
_PG_COLUMNS = """
SELECT a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       a.attidentity <> '' OR coalesce(pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%%', false)
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum"""
_PG_CONSTRAINTS = """
SELECT conrelid, contype, conkey, confrelid, confkey, pg_get_constraintdef(oid)
FROM pg_constraint WHERE conrelid = ANY(%(oids)s) AND contype IN ('p', 'u', 'f', 'c')
ORDER BY conrelid, conname"""


def postgres(url: str, schemas: list[str] | None) -> SourceSchema:
    import psycopg

    from agent_etl.tools.databases.postgres.connections import Pool

    conn = Pool(url, NAME).connect()
    try:
        with conn.cursor() as cur:
            cur.execute(_PG_TABLES, {"schemas": schemas})
            found = cur.fetchall()
            oids = [r[0] for r in found]
            cur.execute(_PG_COLUMNS, {"oids": oids})
            columns = cur.fetchall()
            cur.execute(_PG_CONSTRAINTS, {"oids": oids})
            constraints = cur.fetchall()
    except psycopg.Error as e:
        raise ToolError(f"cannot read the catalog of PostgreSQL at {describe(url)}: {str(e).strip()}") from None
    finally:
        conn.close()
    tables: dict[int, Table] = {}
    attnames: dict[int, dict[int, str]] = defaultdict(dict)
    for oid, schema, name, rows in found:
        if name == CHECKPOINTS:
            continue
        qualified = name if schema == "public" else f"{schema}.{name}"
        tables[oid] = Table(qualified, "postgres", {"table": _pg_name(schema, name)}, rows=max(int(rows), 0) or None)
    for oid, num, name, type_name, notnull, serial in columns:
        attnames[oid][num] = name
        if oid in tables:
            tables[oid].columns.append(Column(name, type_name, _pg_category(type_name), not notnull, bool(serial)))
    checks: dict[int, list[str]] = defaultdict(list)
    for oid, kind, keys, ref_oid, ref_keys, definition in constraints:
        t = tables.get(oid)
        if t is None:
            continue
        cols = [attnames[oid][k] for k in keys or []]
        if kind == "p":
            t.primary_key = cols
        elif kind == "u":
            t.unique.append(cols)
        elif kind == "f" and ref_oid in tables:
            t.foreign_keys.append(ForeignKey(cols, tables[ref_oid].name, [attnames[ref_oid][k] for k in ref_keys]))
        elif kind == "c":
            checks[oid].append(definition)
    for oid, t in tables.items():
        _constraint_checks(t, checks[oid])
    return SourceSchema("postgres", url, list(tables.values()), describe(url))


def _pg_category(type_name: str) -> str:
    """A PostgreSQL column's category as the postgres extractor reads it: a numeric without a
    precision, beyond decimal128's or with a negative scale arrives as text (its exact digits), so
    no range check of numbers is made for it."""
    import re

    from agent_etl.tools.databases.postgres.columns import MAX_DECIMAL

    m = re.fullmatch(r"numeric(?:\((\d+)(?:,\s*(-?\d+))?\))?", type_name.strip().lower())
    if m is not None and (m[1] is None or int(m[1]) > MAX_DECIMAL or int(m[2] or 0) < 0):
        return "text"
    return category(type_name)


def _pg_name(schema: str, name: str) -> str:
    def part(s: str) -> str:
        plain = s.isidentifier() and s == s.lower() and "." not in s
        return s if plain else '"' + s.replace('"', '""') + '"'

    return part(name) if schema == "public" else f"{part(schema)}.{part(name)}"


# -- MariaDB / MySQL --------------------------------------------------------------------------------

def _dotted(name: str) -> str:
    """A table name as the mysql tool's ``table`` takes it: double quotes keep a dot in the name."""
    return '"' + name.replace('"', '""') + '"' if "." in name or '"' in name else name


def mysql(url: str) -> SourceSchema:
    import pymysql

    from agent_etl.tools.databases.mysql.connections import Pool

    pool = Pool(url, NAME)
    db = pool.address.database
    if not db:
        raise ToolError(f"MariaDB/MySQL url {describe(url)} names no database; write mysql://user@host:3306/DATABASE")
    conn = pool.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME", (db,))
            found = cur.fetchall()
            cur.execute("SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, EXTRA FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION", (db,))
            columns = cur.fetchall()
            cur.execute(
                "SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, t.CONSTRAINT_TYPE, k.COLUMN_NAME, k.REFERENCED_TABLE_SCHEMA, "
                "k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE k "
                "JOIN information_schema.TABLE_CONSTRAINTS t ON t.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA "
                "AND t.TABLE_NAME = k.TABLE_NAME AND t.CONSTRAINT_NAME = k.CONSTRAINT_NAME "
                "WHERE k.TABLE_SCHEMA = %s ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION", (db,))
            keys = cur.fetchall()
            try:  # MariaDB names the table here; MySQL 8 needs TABLE_CONSTRAINTS for it
                cur.execute("SELECT c.TABLE_NAME, c.CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS c "
                            "WHERE c.CONSTRAINT_SCHEMA = %s", (db,))
            except pymysql.Error:
                cur.execute("SELECT t.TABLE_NAME, c.CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS c JOIN "
                            "information_schema.TABLE_CONSTRAINTS t ON t.CONSTRAINT_SCHEMA = c.CONSTRAINT_SCHEMA AND "
                            "t.CONSTRAINT_NAME = c.CONSTRAINT_NAME WHERE c.CONSTRAINT_SCHEMA = %s", (db,))
            checks = cur.fetchall()
    except pymysql.Error as e:
        raise ToolError(f"cannot read the catalog of MariaDB/MySQL at {describe(url)}: {e}") from None
    finally:
        conn.close()
    tables = {name: Table(name, "mysql", {"table": _dotted(name)}, rows=int(rows) if rows else None)
              for name, rows in found if name != CHECKPOINTS}
    for table, name, type_name, nullable, extra in columns:
        if table in tables:
            tables[table].columns.append(Column(name, type_name, category(type_name), nullable == "YES",
                                                "auto_increment" in (extra or "").lower()))
    grouped: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for row in keys:
        grouped[(row[0], row[1])].append(row)
    for (table, _), rows in grouped.items():
        t = tables.get(table)
        if t is None:
            continue
        kind, cols = rows[0][2], [r[3] for r in rows]
        if kind == "PRIMARY KEY":
            t.primary_key = cols
        elif kind == "UNIQUE":
            t.unique.append(cols)
        elif kind == "FOREIGN KEY" and rows[0][4] == db and rows[0][5] in tables:
            t.foreign_keys.append(ForeignKey(cols, rows[0][5], [r[6] for r in rows]))
    by_table: dict[str, list[str]] = defaultdict(list)
    for table, clause in checks:
        by_table[table].append(clause)
    for name, t in tables.items():
        _constraint_checks(t, by_table[name])
    return SourceSchema("mysql", url, list(tables.values()), describe(url))


# -- SQLite -----------------------------------------------------------------------------------------

def sqlite(url: str, path: Path) -> SourceSchema:
    if not path.is_file():
        raise ToolError(f"SQLite database {path} does not exist; check the path (sqlite:///relative/path.db or "
                        "sqlite:////absolute/path.db)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' "
                                 "ORDER BY name").fetchall()
            tables: list[Table] = []
            for name, sql in found:
                if name == CHECKPOINTS:
                    continue
                q = '"' + name.replace('"', '""') + '"'
                info = conn.execute(f"PRAGMA table_info({q})").fetchall()
                t = Table(name, "sqlite", {"table": name}, enforced_fk=False)
                pk = sorted((r[5], r[1]) for r in info if r[5])
                for _, cname, ctype, notnull, _, pkpos in info:
                    integer_pk = len(pk) == 1 and pkpos and (ctype or "").upper() == "INTEGER"
                    t.columns.append(Column(cname, ctype or "", category(ctype or ""),
                                            not (notnull or integer_pk), bool(integer_pk)))
                t.primary_key = [n for _, n in pk]
                fks: dict[int, ForeignKey] = {}
                for fid, _, ref, src, dst, *_ in conn.execute(f"PRAGMA foreign_key_list({q})").fetchall():
                    fk = fks.setdefault(fid, ForeignKey([], ref, []))
                    fk.columns.append(src)
                    fk.refs.append(dst)
                t.foreign_keys = list(fks.values())
                for _, iname, unique, origin, _ in conn.execute(f"PRAGMA index_list({q})").fetchall():
                    if unique and origin == "u":
                        iq = '"' + iname.replace('"', '""') + '"'
                        t.unique.append([r[2] for r in conn.execute(f"PRAGMA index_info({iq})").fetchall()])
                _constraint_checks(t, _sqlite_checks(sql or ""))
                tables.append(t)
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise ToolError(f"cannot read SQLite database {path}: {e}; is it a SQLite file?") from None
    names = {t.name for t in tables}
    for t in tables:  # a foreign key without columns names the other table's primary key
        t.foreign_keys = [fk for fk in t.foreign_keys if fk.table in names]
        for fk in t.foreign_keys:
            if not all(fk.refs):
                fk.refs = next(o.primary_key for o in tables if o.name == fk.table) or fk.refs
        t.foreign_keys = [fk for fk in t.foreign_keys if all(fk.refs)]
    return SourceSchema("sqlite", url, tables, str(path))


def _sqlite_checks(sql: str) -> list[str]:
    """The expressions of the CHECK constraints in a CREATE TABLE statement (parentheses balanced)."""
    out, low, i = [], sql.lower(), 0
    while (i := low.find("check", i)) >= 0:
        j = low.find("(", i)
        if j < 0 or low[i + 5:j].strip():
            i += 5
            continue
        depth, k = 0, j
        while k < len(sql):
            depth += {"(": 1, ")": -1}.get(sql[k], 0)
            if depth == 0:
                break
            k += 1
        out.append(sql[j + 1:k])
        i = k
    return out


# -- DuckDB -----------------------------------------------------------------------------------------

def duckdb(url: str, path: Path) -> SourceSchema:
    import duckdb as ddb

    if not path.is_file():
        raise ToolError(f"DuckDB database {path} does not exist; check the path")
    try:
        con = ddb.connect(str(path), read_only=True)
    except ddb.Error as e:
        raise ToolError(f"cannot open DuckDB database {path}: {str(e).splitlines()[0]}") from None
    try:
        found = con.execute("SELECT schema_name, table_name, estimated_size FROM duckdb_tables() "
                            "WHERE database_name = current_database() AND NOT internal "
                            "ORDER BY schema_name, table_name").fetchall()
        columns = con.execute("SELECT schema_name, table_name, column_name, data_type, is_nullable, column_default "
                              "FROM duckdb_columns() WHERE database_name = current_database() AND NOT internal "
                              "ORDER BY schema_name, table_name, column_index").fetchall()
        constraints = con.execute("SELECT schema_name, table_name, constraint_type, constraint_column_names, "
                                  "expression, referenced_table, referenced_column_names FROM duckdb_constraints() "
                                  "WHERE database_name = current_database()").fetchall()
    except ddb.Error as e:
        raise ToolError(f"cannot read the catalog of DuckDB database {path}: {str(e).splitlines()[0]}") from None
    finally:
        con.close()

    def qualified(schema: str, name: str) -> str:
        return name if schema == "main" else f"{schema}.{name}"

    tables = {(s, n): Table(qualified(s, n), "duckdb", {"table": _pg_name("public" if s == "main" else s, n)},
                            rows=rows or None) for s, n, rows in found if n != CHECKPOINTS}
    for s, n, cname, ctype, nullable, default in columns:
        if (s, n) in tables:
            tables[(s, n)].columns.append(Column(cname, ctype, category(ctype), bool(nullable),
                                                 "nextval(" in str(default or "").lower()))
    names = {t.name: t for t in tables.values()}
    for s, n, kind, cols, expression, ref, ref_cols in constraints:
        t = tables.get((s, n))
        if t is None:
            continue
        if kind == "PRIMARY KEY":
            t.primary_key = list(cols)
        elif kind == "UNIQUE":
            t.unique.append(list(cols))
        elif kind == "FOREIGN KEY" and ref and qualified(s, ref) in names:
            t.foreign_keys.append(ForeignKey(list(cols), qualified(s, ref), list(ref_cols)))
        elif kind == "CHECK" and expression:
            _constraint_checks(t, [expression])
    for t in tables.values():  # NOT NULL is a constraint of its own in DuckDB; the column says it too
        for c in t.columns:
            if c.name in t.primary_key:
                c.nullable = False
    return SourceSchema("duckdb", url, list(tables.values()), str(path))
