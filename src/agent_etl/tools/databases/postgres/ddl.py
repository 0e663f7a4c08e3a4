"""The SQL of the postgres loader: catalog look-ups, CREATE/ALTER, COPY, and the statements that
move a staging table into its destination (replace, merge). Identifiers always go through
``psycopg.sql.Identifier``; type names come from our own mapping or from PostgreSQL's
``format_type`` (which quotes what needs quoting); values are always parameters."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from agent_etl.tools.databases import checkpoints
from agent_etl.tools.databases.postgres.load_types import Column

STAGE = "_agent_etl_stage"  # TEMP, so private to the session and dropped at commit or rollback
SEQ = "_agent_etl_seq"  # load order of a staged row: with duplicate keys, the last row wins
CHECKPOINTS = checkpoints.TABLE

_TABLE = """SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s"""
_COLUMNS = """SELECT a.attname,
                     CASE WHEN t.typtype = 'e' THEN 'text' WHEN t.typtype = 'd' THEN b.typname ELSE t.typname END,
                     format_type(a.atttypid, a.atttypmod), a.attnotnull
              FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type b ON b.oid = t.typbasetype
              WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"""
# a unique index on exactly the key columns (no predicate, no expressions): what ON CONFLICT needs
_UNIQUE = """SELECT EXISTS (
               SELECT 1 FROM pg_index i
               WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
                 AND i.indnatts = cardinality(%s::text[])
                 AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a
                      WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = %s::text[])"""


def table(cur: Any, schema: str, name: str) -> tuple[int, str] | None:
    """(oid, relkind) of ``schema.name``, or None if there is no such relation."""
    return cur.execute(_TABLE, (schema, name)).fetchone()


def columns(cur: Any, oid: int) -> dict[str, Column]:
    return {r[0]: Column(r[0], r[1], r[2], r[3]) for r in cur.execute(_COLUMNS, (oid,)).fetchall()}


def has_unique(cur: Any, oid: int, key: list[str]) -> bool:
    ordered = sorted(key)
    return bool(cur.execute(_UNIQUE, (oid, ordered, ordered)).fetchone()[0])


def _names(names: list[str], prefix: str | None = None) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(prefix, n) if prefix else sql.Identifier(n) for n in names)


def create_schema(schema: str) -> sql.Composed:
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


def create_table(target: sql.Identifier, cols: list[tuple[str, str]], key: list[str] | None,
                 temp: bool = False, unlogged: bool = False) -> sql.Composed:
    body = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in cols]
    if key:
        body.append(sql.SQL("PRIMARY KEY ({})").format(_names(key)))
    head = ("CREATE TEMP TABLE {} ({}) ON COMMIT DROP" if temp else
            "CREATE UNLOGGED TABLE {} ({})" if unlogged else "CREATE TABLE {} ({})")
    return sql.SQL(head).format(target, sql.SQL(", ").join(body))


def add_column(target: sql.Identifier, name: str, type_sql: str) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(target, sql.Identifier(name), sql.SQL(type_sql))


def copy(target: sql.Identifier, names: list[str], freeze: bool = False) -> sql.Composed:
    """``freeze``: into a table created in the transaction, rows visible to every snapshot once it
    commits (a REPEATABLE READ reader of a swapped-in table sees them, not an empty table)."""
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary{})").format(target, _names(names),
                                                                     sql.SQL(", FREEZE" if freeze else ""))


def replace(target: sql.Identifier, names: list[str]) -> list[sql.Composed]:
    """DELETE, not TRUNCATE: TRUNCATE is not MVCC-safe (a REPEATABLE READ reader that started before
    would see the table empty); with DELETE every reader sees the old rows until the commit.
    OVERRIDING SYSTEM VALUE: the loaded values of a GENERATED ALWAYS identity column are kept, as a
    COPY (append, swap) keeps them (without it the INSERT fails)."""
    return [sql.SQL("DELETE FROM {}").format(target),
            sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}").format(
                target, _names(names), _names(names), sql.Identifier(STAGE))]


def _source(names: list[str], key: list[str], dedupe: bool, stage: sql.Composable | None = None) -> sql.Composed:
    """The staged rows (of ``stage``, default the TEMP stage), with ``dedupe`` the last of each key:
    the highest SEQ; a row without one was staged before the column was added (``key_order``), so
    before every row that has one."""
    stage = stage or sql.Identifier(STAGE)
    if not dedupe:
        return sql.SQL("SELECT {} FROM {}").format(_names(names), stage)
    return sql.SQL("SELECT DISTINCT ON ({}) {} FROM {} ORDER BY {}, {} DESC NULLS LAST").format(
        _names(key), _names(names), stage, _names(key), sql.Identifier(SEQ))


def upsert(target: sql.Identifier, names: list[str], key: list[str], dedupe: bool,
           fixed: frozenset[str] = frozenset(), stage: sql.Composable | None = None) -> sql.Composed:
    """``fixed``: the table's GENERATED ALWAYS identity columns, which a row updated keeps (PostgreSQL
    updates them only to DEFAULT); a row inserted takes the loaded value (OVERRIDING SYSTEM VALUE,
    which changes nothing for other columns). ``stage``: where the rows are (default the TEMP stage)."""
    rest = [n for n in names if n not in key and n not in fixed]
    action = sql.SQL("DO NOTHING") if not rest else sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(n), sql.Identifier(n)) for n in rest))
    return sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE {} ON CONFLICT ({}) {}").format(
        target, _names(names), _source(names, key, dedupe, stage), _names(key), action)


def update_insert(target: sql.Identifier, names: list[str], key: list[str], dedupe: bool = True,
                  fixed: frozenset[str] = frozenset()) -> list[sql.Composed]:
    """Merge without a unique index on the key: UPDATE the matching rows, INSERT the others (the
    last staged row of each key, unless ``dedupe`` is False: no key repeats). The lock keeps
    concurrent writers from inserting the same key between the two statements. ``fixed``: as for
    ``upsert``."""
    rest = [n for n in names if n not in key and n not in fixed]
    match = sql.SQL(" AND ").join(sql.SQL("t.{} = s.{}").format(sql.Identifier(k), sql.Identifier(k)) for k in key)
    deduped = sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS {}").format(
        sql.Identifier(STAGE + "_last"), _source(names, key, dedupe))
    stmts = [sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(target), deduped]
    if rest:
        stmts.append(sql.SQL("UPDATE {} AS t SET {} FROM {} AS s WHERE {}").format(
            target, sql.SQL(", ").join(sql.SQL("{} = s.{}").format(sql.Identifier(n), sql.Identifier(n)) for n in rest),
            sql.Identifier(STAGE + "_last"), match))
    stmts.append(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} AS s WHERE NOT EXISTS "
                         "(SELECT 1 FROM {} AS t WHERE {})")
                 .format(target, _names(names), _names(names, "s"), sql.Identifier(STAGE + "_last"), target, match))
    return stmts


def checkpoint(cur: Any, schema: str) -> None:
    """Make the checkpoint table of a schema, or add ``position`` to one from before it was recorded
    (an ALTER only when it is missing: it would lock the table against readers)."""
    name = sql.Identifier(schema, CHECKPOINTS)
    found = cur.execute("SELECT c.oid IS NOT NULL, EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = c.oid AND "
                        "attname = 'position' AND NOT attisdropped) FROM (SELECT to_regclass(%s) AS oid) AS c",
                        (name.as_string(cur),)).fetchone()
    if found[0] and found[1]:
        return  # no DDL at all: a role that may write the table but not create in the schema still loads
    if not found[0]:
        cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (run_id text NOT NULL, task text NOT NULL, "
                            "table_name text NOT NULL, rows bigint NOT NULL, position jsonb NOT NULL DEFAULT '{{}}', "
                            "committed_at timestamptz NOT NULL DEFAULT now())").format(name))
    else:
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS position jsonb NOT NULL DEFAULT '{{}}'")
                    .format(name))


def checkpoint_insert(schema: str) -> sql.Composed:
    return sql.SQL("INSERT INTO {} (run_id, task, table_name, rows, position) VALUES (%s, %s, %s, %s, %s::jsonb)"
                   ).format(sql.Identifier(schema, CHECKPOINTS))


def create_shared(conn: Any, target: sql.Identifier, schema: str, cols: list[tuple[str, str]],
                  key: list[str] | None) -> None:
    """Make a table that other loads create at the same moment (the copies of a partitioned branch
    writing one table), in a transaction of its own: the later CREATE waits for the first and then
    fails on the catalog, so it is rolled back and the table the first made is used."""
    import psycopg

    try:
        conn.execute(create_schema(schema))
        conn.execute(create_table(target, cols, key))
        conn.commit()
    except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable, psycopg.errors.DuplicateSchema):
        conn.rollback()
