"""A look-up in the chroma memory without chromadb, whose import alone costs ~0.9 s of CPU: for a
command that only reads (``agent-etl init`` taking settings from similar past extracts).

The records' ids, documents and metadata are read from Chroma's SQLite file (read-only, the
metadata segment of our collection), filtered with ``memory.base.matches`` and ranked by exact
cosine distance on our own embedding, the one Chroma stores them with; pending records are read too.
``query`` returns None whenever it cannot be sure to see what Chroma would (another layout or
embedding, records queued but not yet applied, array metadata, a locked or unreadable file, more
records than an exact search should scan): the caller opens the memory then.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from agent_etl.memory.base import Hit, Record, Where, check_where, matches
from agent_etl.memory.chroma import COLLECTION
from agent_etl.memory.embedding import DIM, NAME, VERSION
from agent_etl.memory.folder import memory_folder

MAX_RECORDS = 5000  # records passing the filter; beyond, Chroma's index answers faster than a scan


def query(home: str | Path, document: str, k: int = 10, where: Where | None = None) -> list[Hit] | None:
    """The ``k`` records nearest ``document`` among those passing ``where``, as ``VectorMemory.query``
    gives them; None when this cannot tell (open the memory)."""
    folder = memory_folder(home)
    db = folder / "chroma" / "chroma.sqlite3"
    if not db.is_file():
        return None
    conditions = check_where(where)
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=0.5)) as conn:
            records = _records(conn)
    except sqlite3.Error:
        return None
    if records is None:
        return None
    pending = _pending(folder / "pending")
    if pending is None:
        return None
    records.update((r.id, r) for r in pending)  # added when the memory is next opened: replacing
    passed = [r for r in records.values() if matches(r.metadata, conditions)]
    if len(passed) > MAX_RECORDS:
        return None
    if not passed or k <= 0:
        return []
    from agent_etl.memory.embedding import embed

    distances = 1.0 - embed([r.document for r in passed]) @ embed([document])[0]
    order = sorted(range(len(passed)), key=lambda i: float(distances[i]))[:k]
    return [Hit(passed[i], float(distances[i])) for i in order]


def _records(conn: sqlite3.Connection) -> dict[str, Record] | None:
    row = conn.execute("SELECT c.id, c.schema_str, s.id FROM collections c JOIN segments s ON s.collection = c.id "
                       "WHERE c.name = ? AND s.scope = 'METADATA'", (COLLECTION,)).fetchall()
    if len(row) != 1:
        return None
    collection, schema, segment = row[0]
    if not _our_embedding(schema):
        return None
    queued = conn.execute("SELECT max(seq_id) FROM embeddings_queue WHERE topic LIKE ?",
                          (f"%/{collection}",)).fetchone()[0]
    applied = conn.execute("SELECT max(seq_id) FROM max_seq_id WHERE segment_id = ?", (segment,)).fetchone()[0]
    if queued is not None and (applied is None or applied < queued):
        return None  # Chroma has not applied every write to its metadata yet
    if conn.execute("SELECT EXISTS (SELECT 1 FROM embedding_metadata_array a JOIN embeddings e ON e.id = a.id "
                    "WHERE e.segment_id = ?)", (segment,)).fetchone()[0]:
        return None
    ids = dict(conn.execute("SELECT id, embedding_id FROM embeddings WHERE segment_id = ? ORDER BY id",  # as added
                            (segment,)).fetchall())
    documents: dict[int, str] = {}
    metadata: dict[int, dict] = {i: {} for i in ids}
    for rid, key, s, i, f, b in conn.execute(
            "SELECT m.id, m.key, m.string_value, m.int_value, m.float_value, m.bool_value FROM embedding_metadata m "
            "JOIN embeddings e ON e.id = m.id WHERE e.segment_id = ?", (segment,)):
        if key == "chroma:document":
            documents[rid] = s or ""
        elif key.startswith("chroma:"):
            continue
        else:
            metadata[rid][key] = s if s is not None else i if i is not None else f if f is not None else \
                bool(b) if b is not None else None
    return {ids[rid]: Record(ids[rid], documents.get(rid, ""), metadata[rid]) for rid in ids}


def _our_embedding(schema: str | None) -> bool:
    """The collection's vectors are our feature hashing, of this dimension and version (Chroma's
    schema of the collection says which embedding function made them)."""
    try:
        index = json.loads(schema or "{}")["keys"]["#embedding"]["float_list"]["vector_index"]
        function = index["config"]["embedding_function"]
        return (index.get("enabled", True) and function["name"] == NAME and function["config"]["dim"] == DIM
                and function["config"]["version"] == VERSION)
    except (ValueError, KeyError, TypeError):
        return False


def _pending(folder: Path) -> list[Record] | None:
    """The records spooled in ``pending/``, in the order the next opening adds them; None if one is unreadable."""
    out: list[Record] = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.jsonl")):
        try:
            out += [Record(d["id"], d["document"], d.get("metadata") or {})
                    for d in map(json.loads, path.read_text().splitlines()) if d]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return out
