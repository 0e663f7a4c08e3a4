"""``mode: replace`` by swap, for the postgres loader: the new rows go into a new table, made in the
load's transaction, and the new table takes the old one's place by rename when the stream has ended.
Two replaces of one table take turns (a SHARE UPDATE EXCLUSIVE lock from the first batch on, which
readers and writers do not wait for).

Each row is written once (``COPY ... FREEZE`` into a table created in the same transaction; with
``wal_level=minimal`` that also skips the WAL), and the indexes are built once, after the COPY.
The old table is locked (ACCESS EXCLUSIVE) only at the swap, just before the COMMIT: readers read
the old rows for the whole load and wait only for the swap itself. A reader waiting on the lock
then reads the new table (PostgreSQL looks the name up again once it has the lock); the new rows are
frozen, so a REPEATABLE READ transaction that first reads the table after the swap sees them too,
never an empty table, and one that read it before holds its lock until it ends, so the swap waits
for it. The lock waits as long as the server's ``lock_timeout`` allows; a timeout is a
``TransientError``, retried by the coordinator.

What the new table takes from the old: columns with their types, NOT NULL, defaults, generated
columns, identity (its sequence under the old name, with its options and type), CHECK
constraints, column storage, compression and comments, extended statistics (``LIKE ... INCLUDING
ALL EXCLUDING INDEXES``); then its indexes, primary key, unique and exclusion constraints (same
definitions, names and comments, built after the COPY), foreign keys to other tables, owner, grants
(table and column), table comment, storage parameters, tablespace, UNLOGGED, replica identity, the
clustered index, and the serial sequences the old columns own (moved, not dropped).

Sequences (identity and serial) go on past the new rows and never back (``sequences``: the rule):
the new identity sequence starts where the old one stands, so that values a COPY without the column
generates follow the old rows'; at the swap each sequence is set to continue from the furthest of
where the old one stands then, where the new one stands, and the new rows' highest value of the
column (lowest for a negative INCREMENT), read after the indexes are built (a lookup on an indexed
key). With no rows, the old position stays.

Where swapping would lose or break something, ``replace_strategy: auto`` takes the insert path
(DELETE + INSERT from a TEMP stage, ``ddl.replace``) and the details say why
(``blockers``): a view, materialized view or rule on the table; a foreign key from another table
or from the table to itself; a function, column or policy of another object using the table or
its row type; a trigger, row-level security or a policy on the table; a publication naming it;
inheritance or partitioning; a typed table; an index whose definition cannot be carried over;
a loader role that is not a member of the table's owner role (it could not drop the old
table), or that may not create tables in the schema. ``replace_strategy: swap`` fails instead, naming the object.

The old table is not dropped in the swap's transaction: its files would be unlinked at that
COMMIT (~100 ms for 1M rows), with the lock held and the run waiting. It is set aside instead, in
the same transaction (renamed ``PREFIX_old_<oid>``, its indexes, constraints and identity
sequences renamed out of the new table's way, its foreign keys dropped so that its rows constrain
nothing), and dropped after the COMMIT by ``drop_aside``, which the loader runs in the background
while the run ends (the run's resources wait for it). A table set aside is nobody's: the swap held
it exclusively, and readers find the new table under the name. One that a crash left behind is
dropped by the next replace by swap in its schema.

Not carried over: per-column statistics targets, security labels, grants on the identity sequence,
the position of a sequence a column uses without owning it (``DEFAULT nextval('shared')``: it is
left as it stands, and may be behind the loaded values).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from psycopg import sql

from agent_etl.tools.databases.postgres import sequences

log = logging.getLogger(__name__)

PREFIX = "_agent_etl_swap"  # the new table's name until the swap: PREFIX + the backend's pid
ASIDE = PREFIX + "_old_"  # the old table's name from the swap until dropped: ASIDE + its oid
_ASIDE_TABLES = r"""SELECT quote_ident(c.relname) FROM pg_class c WHERE c.relnamespace = %s::regnamespace
                    AND c.relkind = 'r' AND c.relname LIKE '\_agent\_etl\_swap\_old\_%%' ORDER BY 1"""

_RELATION = """SELECT c.relowner::regrole::text, pg_has_role(current_user, c.relowner, 'MEMBER'), c.relpersistence,
                      c.reloptions, t.spcname, c.relreplident, c.relrowsecurity OR c.relforcerowsecurity,
                      c.relkind, c.relispartition, c.reloftype <> 0, obj_description(c.oid, 'pg_class'), c.reltype,
                      has_schema_privilege(c.relnamespace, 'CREATE'), c.relnamespace::regnamespace::text
               FROM pg_class c LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace WHERE c.oid = %s"""
# normal dependencies on the table or its row type from objects that are not the table's own
_DEPENDANTS = """SELECT CASE WHEN d.classid = 'pg_rewrite'::regclass THEN
                   (SELECT CASE r.relkind WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view ' ELSE 'relation ' END
                           || r.oid::regclass::text FROM pg_rewrite w JOIN pg_class r ON r.oid = w.ev_class
                    WHERE w.oid = d.objid)
                 ELSE pg_describe_object(d.classid, d.objid, d.objsubid) END
                 FROM pg_depend d
                 WHERE ((d.refclassid = 'pg_class'::regclass AND d.refobjid = %(oid)s)
                        OR (d.refclassid = 'pg_type'::regclass AND d.refobjid = %(type)s))
                   AND d.deptype = 'n'
                   AND NOT (d.classid = 'pg_constraint'::regclass AND EXISTS (
                        SELECT 1 FROM pg_constraint k WHERE k.oid = d.objid AND k.conrelid = %(oid)s
                        AND k.confrelid <> %(oid)s))
                   AND NOT (d.classid = 'pg_rewrite'::regclass AND EXISTS (
                        SELECT 1 FROM pg_rewrite w WHERE w.oid = d.objid AND w.ev_class = %(oid)s))
                   AND NOT (d.classid = 'pg_class'::regclass AND d.objid = %(oid)s)
                   AND NOT (d.classid = 'pg_attrdef'::regclass AND EXISTS (
                        SELECT 1 FROM pg_attrdef a WHERE a.oid = d.objid AND a.adrelid = %(oid)s))
                   AND NOT (d.classid = 'pg_statistic_ext'::regclass AND EXISTS (
                        SELECT 1 FROM pg_statistic_ext x WHERE x.oid = d.objid AND x.stxrelid = %(oid)s))
                   AND NOT (d.classid = 'pg_trigger'::regclass AND EXISTS (
                        SELECT 1 FROM pg_trigger g WHERE g.oid = d.objid AND g.tgrelid = %(oid)s))
                   AND NOT (d.classid = 'pg_policy'::regclass AND EXISTS (
                        SELECT 1 FROM pg_policy y WHERE y.oid = d.objid AND y.polrelid = %(oid)s))
                 ORDER BY 1"""
_OWN = """SELECT 'trigger ' || quote_ident(tgname) || ' on the table' FROM pg_trigger WHERE tgrelid = %(oid)s AND NOT tgisinternal
          UNION ALL SELECT 'rule ' || quote_ident(rulename) || ' on the table' FROM pg_rewrite WHERE ev_class = %(oid)s
          UNION ALL SELECT 'policy ' || quote_ident(polname) || ' on the table' FROM pg_policy WHERE polrelid = %(oid)s
          UNION ALL SELECT 'publication ' || quote_ident(p.pubname) FROM pg_publication_rel r
                    JOIN pg_publication p ON p.oid = r.prpubid WHERE r.prrelid = %(oid)s
          UNION ALL SELECT 'inheritance from ' || inhparent::regclass::text FROM pg_inherits WHERE inhrelid = %(oid)s
          UNION ALL SELECT 'inheritance by ' || inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %(oid)s"""
# the table's indexes: (oid, name, constraint oid or NULL, constraint name, definition, the prefix
# pg_get_indexdef starts with, comment, clustered, replica identity, constraint comment)
_INDEXES = """SELECT i.indexrelid, x.relname, k.oid, k.conname,
                     CASE WHEN k.oid IS NULL THEN pg_get_indexdef(i.indexrelid) ELSE pg_get_constraintdef(k.oid) END,
                     'CREATE ' || CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END || 'INDEX ' || quote_ident(x.relname)
                       || ' ON ' || quote_ident(n.nspname) || '.' || quote_ident(t.relname) || ' USING ',
                     obj_description(i.indexrelid, 'pg_class'), i.indisclustered, i.indisreplident,
                     obj_description(k.oid, 'pg_constraint')
              FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
              JOIN pg_namespace n ON n.oid = t.relnamespace
              LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x')
              WHERE i.indrelid = %s ORDER BY i.indexrelid"""
_FOREIGN = """SELECT conname, pg_get_constraintdef(oid), obj_description(oid, 'pg_constraint') FROM pg_constraint
              WHERE conrelid = %s AND contype = 'f' ORDER BY oid"""
_ACL = """SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE a.grantee::regrole::text END, a.privilege_type, a.is_grantable
          FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %s ORDER BY 1, 2"""
_COLUMN_ACL = """SELECT t.attname, CASE WHEN a.grantee = 0 THEN NULL ELSE a.grantee::regrole::text END,
                        a.privilege_type, a.is_grantable
                 FROM pg_attribute t, aclexplode(t.attacl) a
                 WHERE t.attrelid = %s AND t.attnum > 0 AND NOT t.attisdropped ORDER BY 1, 2, 3"""


def blockers(cur: Any, oid: int) -> list[str]:
    """What keeps the table ``oid`` from being replaced by swap, in words ([] if nothing does)."""
    rel = cur.execute(_RELATION, (oid,)).fetchone()
    found = []
    if not rel[1]:
        found.append(f"the loader's role is not a member of the table's owner {rel[0]} (it could not drop the old table)")
    if not rel[12]:
        found.append(f"the loader's role may not create tables in schema {rel[13]}")
    if rel[7] == "p" or rel[8]:
        found.append("partitioning")
    if rel[9]:
        found.append("the table is typed (OF type)")
    if rel[6]:
        found.append("row-level security on the table")
    found += [r[0] for r in cur.execute(_OWN, {"oid": oid}).fetchall()]
    found += [r[0] for r in cur.execute(_DEPENDANTS, {"oid": oid, "type": rel[11]}).fetchall()]
    for row in cur.execute(_INDEXES, (oid,)).fetchall():
        if row[2] is None and not row[4].startswith(row[5]):
            found.append(f"index {row[1]} (its definition could not be carried over)")
    return list(dict.fromkeys(found))


def _ident(qualified: str) -> sql.SQL:
    """A name PostgreSQL itself quoted (regrole::text, quote_ident): SQL as it is."""
    return sql.SQL(qualified)


class Swap:
    """The new table of one replace: ``create`` it, COPY into ``table``, then ``build`` (indexes,
    constraints) and ``swap``, all in the load's transaction."""

    def __init__(self, cur: Any, schema: str, name: str, oid: int):
        self.cur, self.schema, self.name, self.oid = cur, schema, name, oid
        self.target = sql.Identifier(schema, name)
        pid = cur.execute("SELECT pg_backend_pid()").fetchone()[0]
        self.new_name = f"{PREFIX}_{pid}"
        self.table = sql.Identifier(schema, self.new_name)
        self.renames: list[sql.Composed] = []  # once the old table is set aside: new names to old ones
        self.names: dict[str, str] = {self.new_name: name}  # temporary names to the old ones, for messages
        self.aside: str | None = None  # the old table's name once the swap set it aside (drop_aside)

    def create(self, fail: Callable[[str], Exception]) -> None:
        """The new table. First the old one is locked against other replaces (and VACUUM, ANALYZE,
        schema changes), not against readers or writers: two replaces by swap would otherwise each
        hold it shared (``LIKE`` does) and deadlock on the swap's lock; the later one waits here, then
        replaces the table the earlier one swapped in (made like the old one, so the loader's plan holds;
        what stands in a swap's way is looked at again at the swap)."""
        self.cur.execute(sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(self.target))
        self._same(fail, adopt=True)
        rel = self.cur.execute(_RELATION, (self.oid,)).fetchone()
        head = sql.SQL("CREATE UNLOGGED TABLE" if rel[2] == "u" else "CREATE TABLE")
        stmt = sql.SQL("{} {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES)").format(head, self.table, self.target)
        if rel[3]:
            opts = [o.split("=", 1) for o in rel[3]]
            stmt += sql.SQL(" WITH ({})").format(sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.SQL(".").join(sql.Identifier(p) for p in k.split(".")), sql.Literal(v))
                for k, v in opts))
        if rel[4]:
            stmt += sql.SQL(" TABLESPACE {}").format(sql.Identifier(rel[4]))
        self.cur.execute(stmt)
        self.new_oid = self.cur.execute("SELECT %s::regclass::oid", (self.table.as_string(self.cur),)).fetchone()[0]
        self.extremes: dict[str, int | None] = {}  # the new rows' furthest value of each sequence's column (build)
        for seq in sequences.of(self.cur, self.oid):
            if seq.identity:  # what a COPY without the column takes from it goes on from the old one's values
                mine = self._mine(seq.column)
                kind = sequences.options(self.cur, seq.qualified)[3]
                known: tuple[int, int, int, str] | None = sequences.options(self.cur, mine)
                if known[3] != kind:  # LIKE makes it bigint, with the old bounds
                    self.cur.execute(sql.SQL("ALTER SEQUENCE {} AS {}").format(_ident(mine), sql.SQL(kind)))
                    known = None  # its bounds may follow the type: read again
                sequences.advance(self.cur, mine, [sequences.position(self.cur, seq.qualified)], None, known)

    def _mine(self, column: str) -> str:
        """The new table's identity sequence of ``column``."""
        return self.cur.execute("SELECT pg_get_serial_sequence(%s, %s)",
                                (self.table.as_string(self.cur), column)).fetchone()[0]

    def build(self) -> None:
        """After the COPY: the old table's indexes and constraints on the new one, under temporary
        names (index names are unique in the schema) that ``swap`` renames, then its foreign keys."""
        cur = self.cur
        replident = None
        for n, (_, name, con, conname, definition, prefix, comment, clustered, ident, con_comment) in enumerate(
                cur.execute(_INDEXES, (self.oid,)).fetchall()):
            temp = f"{self.new_name}_i{n}"
            self.names[temp] = conname or name
            if con is None:
                cur.execute(sql.SQL("{} {} ON {} USING {}").format(
                    sql.SQL(prefix[:prefix.index(" INDEX ") + 6]), sql.Identifier(temp), self.table,
                    sql.SQL(definition[len(prefix):])))
                self.renames.append(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(self.schema, temp), sql.Identifier(name)))
            else:
                cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    self.table, sql.Identifier(temp), sql.SQL(definition)))
                self.renames.append(sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    self.target, sql.Identifier(temp), sql.Identifier(conname)))
                if name != conname:  # an index renamed apart from its constraint
                    self.renames.append(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                        sql.Identifier(self.schema, conname), sql.Identifier(name)))
                if con_comment is not None:
                    cur.execute(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                        sql.Identifier(temp), self.table, sql.Literal(con_comment)))
            if comment is not None:
                cur.execute(sql.SQL("COMMENT ON INDEX {} IS {}").format(sql.Identifier(self.schema, temp),
                                                                      sql.Literal(comment)))
            if clustered:
                cur.execute(sql.SQL("ALTER TABLE {} CLUSTER ON {}").format(self.table, sql.Identifier(temp)))
            if ident:
                replident = temp
        rel = cur.execute(_RELATION, (self.oid,)).fetchone()
        if replident is not None:
            cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY USING INDEX {}").format(self.table,
                                                                                    sql.Identifier(replident)))
        elif rel[5] in ("f", "n"):
            cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY {}").format(
                self.table, sql.SQL("FULL" if rel[5] == "f" else "NOTHING")))
        for conname, definition, comment in cur.execute(_FOREIGN, (self.oid,)).fetchall():
            cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                self.table, sql.Identifier(conname), sql.SQL(definition)))
            if comment is not None:
                cur.execute(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                    sql.Identifier(conname), self.table, sql.Literal(comment)))
        seqs = [s for s in sequences.of(cur, self.oid) if s.integer]  # after the indexes: max(id) by the key's
        incs = [(s.column, sequences.options(cur, s.qualified)[0]) for s in seqs]
        self.extremes = dict(zip([s.column for s in seqs], sequences.extremes(cur, self.table, incs)))

    def shown(self, text: str) -> str:
        """A message of PostgreSQL's with the old table's names for the new one's."""
        for temp, name in sorted(self.names.items(), reverse=True):  # _i10 before _i1
            text = text.replace(temp, name)
        return text

    def swap(self, fail: Callable[[str], Exception]) -> None:
        """Lock the old table, give the new one its owner, grants, comment and sequences, set the
        old one aside and rename the new one (and its indexes, constraints, identity sequences) to the old
        names. ``fail(problem)`` makes the error when the table changed under the load."""
        cur = self.cur
        cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(self.target))
        self._same(fail)
        late = blockers(cur, self.oid)
        if late:
            raise fail(f"{', '.join(late)} appeared during the load, and the table cannot be swapped any more")
        rel = cur.execute(_RELATION, (self.oid,)).fetchone()
        if cur.execute("SELECT relowner::regrole::text FROM pg_class WHERE oid = %s", (self.new_oid,)).fetchone()[0] != rel[0]:
            cur.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(self.table, _ident(rel[0])))
        self._grants(rel[0])
        if rel[10] is not None:
            cur.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(self.table, sql.Literal(rel[10])))
        identity: list[str] = []  # the old table's identity sequences, set aside with it
        for seq in sequences.of(cur, self.oid):  # each goes on past the new rows (module sequences)
            extreme = self.extremes.get(seq.column)
            if not seq.identity:  # serial: the sequence would go with the old table
                cur.execute(sql.SQL("ALTER SEQUENCE {} OWNED BY {}").format(
                    _ident(seq.qualified), sql.Identifier(self.schema, self.new_name, seq.column)))
                if extreme is not None:
                    sequences.advance(cur, seq.qualified, [sequences.position(cur, seq.qualified)], extreme)
                continue
            mine = self._mine(seq.column)  # from the old one's place now (it may have moved during the load)
            sequences.advance(cur, mine, [sequences.position(cur, seq.qualified), sequences.position(cur, mine)],
                              extreme)
            self.renames.append(sql.SQL("ALTER SEQUENCE {} RENAME TO {}").format(_ident(mine), sql.Identifier(seq.name)))
            identity.append(seq.qualified)
        self._set_aside(identity)
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(self.table, sql.Identifier(self.name)))
        for stmt in self.renames:
            cur.execute(stmt)

    def _set_aside(self, identity: list[str]) -> None:
        """The old table out of the way, for ``drop_aside`` after the COMMIT: its indexes (an index
        renames its constraint with it) and identity sequences renamed, its foreign keys dropped,
        then itself renamed to ``aside``."""
        cur, self.aside = self.cur, f"{ASIDE}{self.oid}"
        for n, row in enumerate(cur.execute(_INDEXES, (self.oid,)).fetchall()):
            cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(self.schema, row[1]), sql.Identifier(f"{self.aside}_i{n}")))
        for conname, _, _ in cur.execute(_FOREIGN, (self.oid,)).fetchall():
            cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(self.target, sql.Identifier(conname)))
        for n, qualified in enumerate(identity):
            cur.execute(sql.SQL("ALTER SEQUENCE {} RENAME TO {}").format(_ident(qualified),
                                                                       sql.Identifier(f"{self.aside}_s{n}")))
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(self.target, sql.Identifier(self.aside)))

    def drop_aside(self, conn: Any, done: Callable[[BaseException | None], None]) -> None:
        """After the swap's COMMIT: drop the old table set aside, and any a crash left in the schema,
        each in a transaction of its own (a failure is logged: the data landed, and the next swap
        in the schema tries again); then ``done(error or None)`` (the connection's end)."""
        error = None
        try:
            names = [r[0] for r in self.cur.execute(_ASIDE_TABLES, (sql.Identifier(self.schema).as_string(self.cur),))]
            conn.commit()
            for name in names:
                try:
                    self.cur.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(self.schema),
                                                                                  _ident(name)))
                    conn.commit()
                except Exception as e:  # e.g. a leftover of a table whose owner this role is not a member of
                    conn.rollback()
                    log.warning("the old table %s.%s of a replace by swap was not dropped: %s", self.schema, name, e)
        except Exception as e:  # the connection failed
            log.warning("the old table %s.%s of a replace by swap was not dropped: %s", self.schema, self.aside, e)
            error = e
        done(error)

    def _same(self, fail: Callable[[str], Exception], adopt: bool = False) -> None:
        """The table under the name is still the one planned for (or, ``adopt``, take the one there now)."""
        now = self.cur.execute("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                               "WHERE n.nspname = %s AND c.relname = %s", (self.schema, self.name)).fetchone()
        if now is not None and adopt:
            self.oid = now[0]
        elif now is None or now[0] != self.oid:
            raise fail("the table was dropped or replaced by another load during this one")

    def _grants(self, owner: str) -> None:
        """The old table's grants, exactly: what the new one got by default privileges is revoked
        first, then the old entries are granted (table and columns)."""
        cur = self.cur
        old = cur.execute(_ACL, (self.oid,)).fetchall()
        new = cur.execute(_ACL, (self.new_oid,)).fetchall()
        cols = cur.execute(_COLUMN_ACL, (self.oid,)).fetchall()
        if old == new and not cols:
            return
        stmts = []
        if old or new:
            grantees = {owner, *(g for g, _, _ in old + new if g is not None)}
            stmts.append(sql.SQL("REVOKE ALL ON TABLE {} FROM PUBLIC, {}").format(
                self.table, sql.SQL(", ").join(_ident(g) for g in sorted(grantees))))
        if not old:  # the default: the owner holds every privilege
            stmts.append(sql.SQL("GRANT ALL ON TABLE {} TO {}").format(self.table, _ident(owner)))
        for grantee, priv, grantable in old:
            stmts.append(sql.SQL("GRANT {} ON TABLE {} TO {}{}").format(
                sql.SQL(priv), self.table, _ident(grantee) if grantee else sql.SQL("PUBLIC"),
                sql.SQL(" WITH GRANT OPTION" if grantable else "")))
        for column, grantee, priv, grantable in cols:
            stmts.append(sql.SQL("GRANT {} ({}) ON TABLE {} TO {}{}").format(
                sql.SQL(priv), sql.Identifier(column), self.table, _ident(grantee) if grantee else sql.SQL("PUBLIC"),
                sql.SQL(" WITH GRANT OPTION" if grantable else "")))
        for stmt in stmts:
            cur.execute(stmt)
