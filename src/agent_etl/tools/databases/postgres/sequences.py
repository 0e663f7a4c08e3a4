"""The sequences behind a table's columns (identity, and serial: a sequence a column owns) through a
``mode: replace`` of the postgres loader, by swap (``swap``) and by insert (DELETE + INSERT), and
through ``append`` and ``merge`` (``Followed``: the loaded values, per commit unit).

The rule: after a replace, the next value a sequence gives is past the rows loaded, and never goes
back from where the sequence stood. It continues from the furthest of where the old sequence stood
(at the swap, so the values it gave during the load are not given again) and the loaded rows' highest
value of the column (lowest, for a descending sequence: a negative INCREMENT), by ``setval(...,
true)``: with INCREMENT 1 and ids up to N loaded, the next is N + 1. A load with no rows, or with
no value in the column, keeps the sequence where it stood. The sequence's options (INCREMENT,
MINVALUE, MAXVALUE, START, CACHE, CYCLE) are its own and stay: a value past MAXVALUE (below MINVALUE
descending) leaves the sequence at its end, so the next ``nextval`` fails, or with CYCLE starts
again from MINVALUE (MAXVALUE). Only integer columns (smallint, integer, bigint) are looked at; a
sequence that a column uses but does not own (``DEFAULT nextval('shared')`` of a sequence made
apart) is left as it is. ``setval`` is not undone by a ROLLBACK: a replace that fails after it
(within the last statements before its COMMIT) may leave a sequence the table keeps advanced: a
gap in its values, never a value given twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

# sequences tied to the table's columns: (sequence oid, its name, its unqualified name, column,
# 'a' serial (owned) or 'i' identity, whether the column is an integer)
_SEQUENCES = """SELECT s.oid, quote_ident(n.nspname) || '.' || quote_ident(s.relname), s.relname, a.attname, d.deptype,
                       a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
                FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                JOIN pg_namespace n ON n.oid = s.relnamespace
                JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                  AND d.refobjid = %s AND d.deptype IN ('a', 'i') ORDER BY s.oid"""
_OPTIONS = "SELECT seqincrement, seqmin, seqmax, format_type(seqtypid, NULL) FROM pg_sequence WHERE seqrelid = %s::regclass"


@dataclass
class Sequence:
    oid: int
    qualified: str  # quoted as PostgreSQL quotes it, schema-qualified
    name: str
    column: str
    identity: bool  # else serial: a sequence the column owns (``DEFAULT nextval``)
    integer: bool  # the column is smallint, integer or bigint (the only ones the rule looks at)


def of(cur: Any, oid: int) -> list[Sequence]:
    """The sequences of the table ``oid``'s columns."""
    return [Sequence(r[0], r[1], r[2], r[3], r[4] == "i", r[5]) for r in cur.execute(_SEQUENCES, (oid,)).fetchall()]


def position(cur: Any, qualified: str) -> tuple[int, bool]:
    """(last_value, is_called): where ``nextval`` goes on from."""
    return cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(qualified))).fetchone()


def options(cur: Any, qualified: str) -> tuple[int, int, int, str]:
    """(INCREMENT, MINVALUE, MAXVALUE, its type)."""
    return cur.execute(_OPTIONS, (qualified,)).fetchone()


def extremes(cur: Any, table: sql.Composable, columns: list[tuple[str, int]]) -> list[int | None]:
    """For each (column, increment): the rows' highest value of the column (lowest, with a negative
    increment), None without any; one statement (an index on the column makes it a lookup)."""
    if not columns:
        return []
    return list(cur.execute(sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(
        sql.SQL("max({})" if inc > 0 else "min({})").format(sql.Identifier(c)) for c, inc in columns), table)).fetchone())


def advance(cur: Any, qualified: str, positions: list[tuple[int, bool]], extreme: int | None,
            known: tuple[int, int, int, str] | None = None) -> None:
    """Set the sequence to continue from the furthest of ``positions`` (``(last_value, is_called)``,
    the first kept on a tie) and past ``extreme`` (a value in the rows, or None), within its bounds;
    ``known``: its ``options``, where the caller has read them already."""
    inc, lo, hi, _ = known or options(cur, qualified)
    ahead = (lambda a, b: a > b) if inc > 0 else (lambda a, b: a < b)  # noqa: E731
    last, called = positions[0]
    nxt = last + inc if called else last
    for p_last, p_called in positions[1:]:
        p_next = p_last + inc if p_called else p_last
        if ahead(p_next, nxt):
            last, called, nxt = p_last, p_called, p_next
    if extreme is not None and ahead(extreme + inc, nxt):
        last, called = min(max(extreme, lo), hi), True
    cur.execute("SELECT setval(%s::regclass, %s, %s)", (qualified, last, called))


def follow_rows(cur: Any, oid: int, table: sql.Composable, loaded: list[str]) -> None:
    """Replace by insert, after the INSERT: the sequences of the ``loaded`` columns continue past the
    table's rows (only the new ones, to this transaction) and never go back."""
    found = [s for s in of(cur, oid) if s.integer and s.column in loaded]
    opts = [options(cur, s.qualified) for s in found]
    for s, o, extreme in zip(found, opts, extremes(cur, table, [(s.column, o[0]) for s, o in zip(found, opts)])):
        if extreme is not None:
            advance(cur, s.qualified, [position(cur, s.qualified)], extreme, o)


_ALWAYS = ("SELECT attname FROM pg_attribute WHERE attrelid = %s AND attidentity = 'a' AND attnum > 0 "
           "AND NOT attisdropped")
_LOCKS = 0x61657463  # the first key of our advisory locks on a sequence ('aetc'); the second is its oid


class Followed:
    """Append and merge into a table whose columns own sequences (identity, serial): the lowest and
    highest value loaded in each such column (``see``, per batch), and before each unit's COMMIT the
    sequences moved past them (``advance``), by the rule above, so that the next value generated
    does not collide with a loaded one; ``always``: its GENERATED ALWAYS identity columns (a merge
    inserts their loaded values and leaves an updated row's as it was). Nothing to do for a table
    without such columns, or one the load creates."""

    def __init__(self, cur: Any = None, oid: int | None = None):
        self.seqs = {s.column: s for s in of(cur, oid) if s.integer} if oid is not None else {}
        self.always = frozenset(r[0] for r in cur.execute(_ALWAYS, (oid,)).fetchall()) if oid is not None \
            else frozenset()
        self.ranges: dict[str, tuple[int, int]] = {}

    def see(self, batch: Any) -> None:
        if not self.seqs:
            return
        import pyarrow as pa
        import pyarrow.compute as pc

        for name in self.seqs.keys() & set(batch.schema.names):
            column = batch.column(name)
            if not pa.types.is_integer(column.type) or column.null_count == len(column):
                continue
            found = pc.min_max(column)
            lo, hi = found["min"].as_py(), found["max"].as_py()
            seen = self.ranges.get(name)
            self.ranges[name] = (lo, hi) if seen is None else (min(lo, seen[0]), max(hi, seen[1]))

    def advance(self, cur: Any, lock: bool) -> None:
        """The unit's loaded values past: each sequence set to go on after them, never back. With
        ``lock``, under a transaction advisory lock on the sequence, so that two loads ending at
        once cannot set it back one after the other (not with two-phase commit: a prepared
        transaction would hold it while its siblings wait for the lock)."""
        for name, (lo, hi) in sorted(self.ranges.items()):
            s = self.seqs[name]
            if lock:
                cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCKS, s.oid if s.oid < 2**31 else s.oid - 2**32))
            known = options(cur, s.qualified)
            advance(cur, s.qualified, [position(cur, s.qualified)], hi if known[0] > 0 else lo, known)
        self.ranges = {}
