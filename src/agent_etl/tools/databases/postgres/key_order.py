"""Whether a merge's staged rows can hold a repeated key, seen on the client as batches go by.

A merge stages its rows, then upserts them; when a key repeats in the stage, the last row of it
must win, which takes the load order of the rows (``ddl.SEQ``). Sending that column costs ~0.1 s of
client CPU and 12 MB per 1M rows. For a single integer key arriving in strictly increasing order
(an export ordered by its primary key, the usual input of a merge), no key can repeat: ``KeyOrder``
checks that per batch with two numpy comparisons, and the loader adds the column only from the
first batch that breaks the order (``ALTER TABLE ... ADD COLUMN``: the rows before it hold NULL,
and were loaded before any row that has a value).
"""

from __future__ import annotations

import pyarrow as pa


class KeyOrder:
    """The keys of one unit's stage so far, strictly increasing."""

    def __init__(self, key: str):
        self.key = key
        self.last: int | None = None

    @staticmethod
    def of(schema: pa.Schema, key: list[str]) -> KeyOrder | None:
        """A tracker when ``key`` is one integer column of ``schema``, else None (the stage takes the
        load order from its first row)."""
        if len(key) != 1 or key[0] not in schema.names or not pa.types.is_integer(schema.field(key[0]).type):
            return None
        return KeyOrder(key[0])

    def increasing(self, batch: pa.RecordBatch) -> bool:
        """True if ``batch``'s keys continue the strictly increasing run (and take it on)."""
        if self.key not in batch.schema.names:
            return False
        col = batch.column(self.key)
        if not len(col):
            return True
        if col.null_count:
            return False
        keys = col.to_numpy()
        if (self.last is not None and keys[0] <= self.last) or (len(keys) > 1 and not (keys[1:] > keys[:-1]).all()):
            return False
        self.last = int(keys[-1])
        return True
