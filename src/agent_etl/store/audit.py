"""The audit trail: an append-only log, per run, of what the run did (started, tasks, commits,
quality decisions, anomalies, resumes, configuration changes, end), chained with SHA-256.

Each record's hash covers the previous record's hash and the record's own canonical JSON (run id,
sequence number, time, kind and task, then the data as stored: canonical JSON text), so editing, deleting, inserting or reordering records
breaks the chain where it happened. With ``AGENT_ETL_AUDIT_KEY`` set the hash is an HMAC-SHA256
under that key: then whoever can write the run store but does not hold the key cannot rebuild a
valid chain after tampering with it.

Records are appended by the run store (``RunStore.audit``), buffered and written with the next
store write of the same process, in order: a commit's record goes in the commit checkpoint's own
transaction, so it costs one more row of an INSERT already made.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from agent_etl.store.schema import audit, runs

KEY_ENV = "AGENT_ETL_AUDIT_KEY"
GENESIS = "0" * 64
# how far from its place verify looks for a record whose hash does not match where it stands
_SHIFT = 16


def audit_key() -> bytes | None:
    key = os.environ.get(KEY_ENV)
    return key.encode() if key else None


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def text(data: Any) -> str | None:
    """``data`` as stored and hashed: canonical JSON text (None stays None)."""
    return canonical(data).decode() if data is not None else None


def digest(prev: str, run_id: str, seq: int, at: float, kind: str, task: str | None, data: str | None,
           key: bytes | None) -> str:
    message = b"%s%s\n%s" % (prev.encode(), canonical([run_id, seq, at, kind, task]),
                             b"null" if data is None else data.encode())
    if key is not None:
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


class Chain:
    """The records waiting to be written, and the head (sequence, hash) of each run's chain as
    this process last wrote it. Not thread-safe: the run store calls it under its audit lock."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, float, str, str | None, Any]] = []
        self.heads: dict[str, tuple[int, str]] = {}

    def rows(self, conn: Any, records: list[tuple[str, float, str, str | None, Any]]
             ) -> tuple[list[dict[str, Any]], dict[str, tuple[int, str]]]:
        """The rows of ``records`` chained after each run's head, and the new heads (applied by
        ``advance`` once the rows are committed)."""
        key = audit_key()
        alg = "hmac-sha256" if key is not None else "sha256"
        heads: dict[str, tuple[int, str]] = {}
        if conn.dialect.name != "sqlite":
            # a server database lets two processes' transactions read one head at once: take the
            # run's row first (the writers of a run queue there), then read the head as it is now.
            # SQLite needs neither: its write lock, taken by the transaction's first write, is global
            for run_id in dict.fromkeys(r[0] for r in records):
                conn.execute(select(runs.c.run_id).where(runs.c.run_id == run_id).with_for_update())
                heads[run_id] = _head(conn, run_id)
        out = []
        for run_id, at, kind, task, data in records:
            head = heads.get(run_id) or self.heads.get(run_id) or _head(conn, run_id)
            seq = head[0] + 1
            h = digest(head[1], run_id, seq, at, kind, task, data, key)
            out.append({"run_id": run_id, "seq": seq, "at": at, "kind": kind, "task": task, "data": data,
                        "alg": alg, "prev": head[1], "hash": h})
            heads[run_id] = (seq, h)
        return out, heads

    def advance(self, heads: dict[str, tuple[int, str]]) -> None:
        self.heads.update(heads)
        if len(self.heads) > 10_000:  # runs long finished: their heads are read again if ever needed
            for run_id in list(self.heads)[:5_000]:
                del self.heads[run_id]

    def forget(self, run_ids: set[str]) -> None:
        """Another process appended to these runs: read their heads again."""
        for run_id in run_ids:
            self.heads.pop(run_id, None)


def _head(conn: Any, run_id: str) -> tuple[int, str]:
    row = conn.execute(select(audit.c.seq, audit.c.hash).where(audit.c.run_id == run_id)
                       .order_by(audit.c.seq.desc()).limit(1)).first()
    return (row.seq, row.hash) if row is not None else (0, GENESIS)


# -- verifying ------------------------------------------------------------------------------------

@dataclass
class Verdict:
    run_id: str
    records: int
    problem: str | None = None  # the first break found, naming the record


def _label(r: Any) -> str:
    return f"{r.kind}{f' {r.task}' if r.task else ''}"


def verify_run(run_id: str, rows: list[Any], finished: bool, key: bytes | None) -> Verdict:
    """Check the chain of one run (``rows`` in stored order of ``seq``). ``finished``: the run
    store says the run ended, so its last record must be its end (else records were cut off)."""
    if not rows:
        return Verdict(run_id, 0, f"run {run_id} has no audit records: deleted, or recorded by an agent-etl without the audit trail" if finished else None)

    def matches(r: Any, seq: int) -> bool:
        if key is None and r.alg != "sha256":
            return False
        h = digest(r.prev, r.run_id, seq, r.at, r.kind, r.task, r.data, key if r.alg != "sha256" else None)
        return hmac.compare_digest(h, r.hash)

    if key is not None:
        for r in rows:
            if r.alg != "hmac-sha256":
                return Verdict(run_id, len(rows), f"record {r.seq} ({_label(r)}) is not keyed, but the chain is "
                               f"verified with {KEY_ENV}: it was written or rewritten without the key")
    elif any(r.alg != "sha256" for r in rows):
        return Verdict(run_id, len(rows), f"the records are keyed (HMAC); set {KEY_ENV} to the key they were "
                       "written with to verify them")
    prev, expected = GENESIS, 1
    for i, r in enumerate(rows):
        if i and r.prev == rows[i - 1].prev:  # two records chain to one: the one before was put in
            return Verdict(run_id, len(rows), f"record {rows[i - 1].seq} ({_label(rows[i - 1])}) was inserted: the "
                           f"record after it chains to the record before it")
        if not matches(r, r.seq):
            moved = next((s for d in range(1, _SHIFT + 1) for s in (r.seq - d, r.seq + d) if s > 0 and matches(r, s)),
                         None)
            if moved is not None:
                return Verdict(run_id, len(rows), f"record {moved} ({_label(r)}) stands at position {r.seq}: "
                               "records were reordered, or renumbered after a deletion or insertion")
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            if r.prev == prev and nxt is not None and nxt.prev == r.prev:
                return Verdict(run_id, len(rows), f"record {r.seq} ({_label(r)}) was inserted: the record after it "
                               f"chains to record {r.seq - 1}")
            return Verdict(run_id, len(rows), f"record {r.seq} ({_label(r)}) was edited: its content does not "
                           "match its hash")
        if r.seq != expected:
            gone = f"record {expected}" if r.seq == expected + 1 else f"records {expected}-{r.seq - 1}"
            return Verdict(run_id, len(rows), f"{gone} deleted: the chain goes from record {expected - 1} to "
                           f"record {r.seq}")
        if r.prev != prev:
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            what = ("was inserted" if nxt is not None and nxt.prev == prev
                    else "does not follow the record before it (records deleted or inserted)")
            return Verdict(run_id, len(rows), f"record {r.seq} ({_label(r)}) {what}")
        prev, expected = r.hash, r.seq + 1
    last = rows[-1]
    if finished and last.kind != "run.finished":
        ends = [i for i, r in enumerate(rows) if r.kind == "run.finished"]
        if ends and rows[ends[-1] + 1].kind != "run.resumed":
            r = rows[ends[-1] + 1]
            return Verdict(run_id, len(rows), f"record {r.seq} ({_label(r)}) was inserted after the run's end")
        return Verdict(run_id, len(rows), f"the run ended, but its chain stops at record {last.seq} ({_label(last)}): "
                       f"the records after it were deleted")
    return Verdict(run_id, len(rows))
