"""The merge steps of the PostgreSQL loader's session (``loaders.postgres._Session``, which mixes
them in): COPY straight into an empty table in savepointed chunks (``_merge_into``, ``hold``,
``chunk_end``), or a TEMP stage upserted into the table every ``STAGE_ROWS`` rows and at the end
of the unit (``stage_due``, ``_apply_stage``, ``_merge``)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from agent_etl.stream import slices
from agent_etl.tools.databases.postgres import ddl
from agent_etl.tools.databases.postgres.sender import ENCODE_ROWS

# a direct merge's chunk (``Merging._merge_into``): each end waits for the server to finish its
# rows, and a chunk's batches are held in memory until then
DIRECT_ROWS, DIRECT_BYTES = 500_000, 64 << 20
# an upsert's stage is applied to the table every STAGE_ROWS rows (``Merging._apply_stage``)
STAGE_ROWS = 262_144
SAVEPOINT, RELEASE, ROLLBACK_TO = (f"{verb} _agent_etl_batch" for verb in
                                      ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"))


class Merging:
    """Mixed into ``_Session``: its connection, cursor, config, COPY and stage methods are used here."""

    cur: Any
    conn: Any
    config: Any
    sequences: Any  # sequences.Followed
    ahead: Any  # stage_ahead.StageAhead, or None
    overlapped: bool
    stage_table: Any
    stage_cols: list[tuple[str, str]]
    added: list[tuple[str, str]]

    def _merge_into(self, schema: pa.Schema) -> None:
        """Merge COPYs straight into the table while it is empty and has a unique index on ``key``,
        in chunks of batches (``DIRECT_ROWS``, ``DIRECT_BYTES``), each under a savepoint, its batches
        held until its COPY has ended: nothing there to update, and a key repeated in the stream (or
        inserted by someone else meanwhile) is a unique violation, on which the chunk is rolled back
        to its savepoint and it and the rest of the unit go through the stage and ``INSERT ... ON
        CONFLICT`` (the rows already in are then updated like any other). Otherwise it stages."""
        missing = [k for k in self.config.key or [] if k not in self.existing or k not in schema.names]
        if missing:
            raise self._fail(f"merge key column(s) {missing} are not in both the input and the table (input: "
                             f"{', '.join(schema.names)}); fix `key`")
        unique = self.unique = ddl.has_unique(self.cur, self.oid, self.config.key or [])
        if unique and not self.cur.execute(ddl.sql.SQL("SELECT 1 FROM {} LIMIT 1").format(self.target)).fetchone():
            self.direct, self.staged = True, dict(self.existing)
            self.path = "copy (the table was empty)"
        else:
            self._stage(schema, ahead=unique and self.tpc is None)
            self.path = self.path or ("upsert" if unique else "update, then insert (no unique index on the key)")

    def hold(self, batch: pa.RecordBatch) -> bool:
        """A batch of a direct merge written: held until its chunk's COPY ends. True when the chunk
        is full (``chunk_end`` is due)."""
        self.held.append(batch)
        self.held_rows += batch.num_rows
        self.held_bytes += batch.nbytes
        return self.held_rows >= DIRECT_ROWS or self.held_bytes >= DIRECT_BYTES

    def chunk_end(self, restart: bool = True) -> None:
        """The end of a chunk of a direct merge: its COPY ended and its savepoint released (and, with
        ``restart``, the next chunk's started); on a unique violation, the chunk goes to the stage
        instead, and so does the rest of the unit (``_merge_into``)."""
        import psycopg

        held, rows, self.held, self.held_rows, self.held_bytes = self.held, self.held_rows, [], 0, 0
        try:
            self._end_copy()
        except psycopg.errors.UniqueViolation:
            self.cur.execute(ROLLBACK_TO)
            self.rows -= rows
            self.encoded -= rows
            self.direct = False
            self.path = f"copy (the table was empty), then upsert from input row {self.rows + 1} (a key repeated)"
            self.existing = ddl.columns(self.cur, self.oid)  # with the columns this load added
            self.staged = {}
            self._stage(self.schema, ordered=False)
            self._start_copy()
            for batch in held:
                for part in slices(batch, ENCODE_ROWS):
                    self.write(self.encode(part), part.num_rows)
            return
        self.cur.execute(RELEASE)
        if restart:
            self._start_copy()

    def stage_due(self, rows: int) -> bool:
        """Whether ``rows`` more rows fill the stage's chunk of an upsert (``STAGE_ROWS``)."""
        return self.staging and self.unique and self.config.mode == "merge" and \
            self.rows + rows - self.stage_base >= STAGE_ROWS

    def _apply_stage(self) -> None:
        """A chunk of the stage upserted into the table within the unit's transaction and a new
        COPY started: the server upserts while the client encodes the next rows (``sender``), and
        the stage holds one chunk, not the unit. With ``StageAhead`` the upsert runs in its thread
        and the next chunk goes into a new table of its own meanwhile; else the stage is emptied
        first. Chunks go in in input order, so the last row of a key still wins; keys checked
        increasing stay checked over the unit."""
        self._end_copy()
        if self.overlapped:
            self.ahead.hand_over()
            table, names, seq, added, self.added = self.stage_table, list(self.staged), self.seq, self.added, []

            def upsert() -> None:
                self._add_columns(added)
                self._merge(names, table, seq)

            self.ahead.then(upsert)
            self.stage_table = self.ahead.create(self.stage_cols)
        else:
            self._add_columns()
            self._merge(list(self.staged))
            self.cur.execute(ddl.sql.SQL("TRUNCATE {}").format(ddl.sql.Identifier(ddl.STAGE)))
        self.stage_base, self.applied = self.rows, self.applied + 1
        self._start_copy()

    def _merge(self, names: list[str], stage: Any = None, seq: bool | None = None) -> None:
        """The staged rows (of ``stage``, default the TEMP stage; ``seq``: it has the load-order
        column, default as the stage under way) merged into the table."""
        import psycopg

        key, fixed = self.config.key or [], self.sequences.always
        seq = self.seq if seq is None else seq
        if not ddl.has_unique(self.cur, self.oid, key):
            if stage is not None and stage != ddl.sql.Identifier(ddl.STAGE):
                raise self._moved("the unique index on the merge key went away during the load")
            for stmt in ddl.update_insert(self.target, names, key, dedupe=seq, fixed=fixed):
                self.cur.execute(stmt)
            return
        if not seq:  # the keys were strictly increasing: none repeats
            self.cur.execute(ddl.upsert(self.target, names, key, dedupe=False, fixed=fixed, stage=stage))
            return
        # Duplicate keys are rare: try without DISTINCT ON (a sort of the whole stage), and only if
        # PostgreSQL says a row would be updated twice, roll back to here and deduplicate.
        try:
            with self.conn.transaction():
                self.cur.execute(ddl.upsert(self.target, names, key, dedupe=False, fixed=fixed, stage=stage))
        except psycopg.errors.CardinalityViolation:
            self.cur.execute(ddl.upsert(self.target, names, key, dedupe=True, fixed=fixed, stage=stage))
