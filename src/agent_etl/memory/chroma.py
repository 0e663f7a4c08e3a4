"""``ChromaMemory``: the persistent backend, a Chroma collection in ``<state folder>/memory/chroma``.

Opening it imports chromadb (about 1.5 s, so only when memory is used), takes the folder's writer
lock (``memory.lock``), turns Chroma's anonymous telemetry off, and registers our feature-hashing
embedding as a Chroma embedding function, recorded in the collection's configuration: a collection
reopened without naming it still embeds with it, never with Chroma's default (an ONNX model it
downloads, which fails offline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from agent_etl.memory.base import Hit, Record, Where, check_where, matches
from agent_etl.memory.embedding import DIM, NAME, VERSION, embed
from agent_etl.memory.hnsw_scrub import scrub_indexes
from agent_etl.memory.lock import MemoryUnavailable, WriterLock

COLLECTION = "agent_etl_experiences"
_EMBEDDING: Any = None


def embedding_function() -> Any:
    """Our Chroma embedding function class, defined and registered on first use (chromadb is imported then)."""
    global _EMBEDDING
    if _EMBEDDING is not None:
        return _EMBEDDING
    from chromadb.api.types import Documents, EmbeddingFunction
    from chromadb.utils.embedding_functions import register_embedding_function

    class FeatureHashEmbedding(EmbeddingFunction[Documents]):
        """Feature hashing of task descriptors (``agent_etl.memory.embedding``): local, deterministic."""

        def __init__(self, dim: int = DIM, version: int = VERSION) -> None:
            if dim != DIM or version != VERSION:
                raise ValueError(f"memory embedding {NAME} v{version} with {dim} dimensions was stored, this "
                                 f"agent-etl computes v{VERSION} with {DIM}; `agent-etl memory reset` clears the memory")
            self.dim, self.version = dim, version

        def __call__(self, input: Documents) -> Any:
            return list(embed(list(input)))

        @staticmethod
        def name() -> str:
            return NAME

        def get_config(self) -> dict[str, Any]:
            return {"dim": self.dim, "version": self.version}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> FeatureHashEmbedding:
            return FeatureHashEmbedding(int(config.get("dim", DIM)), int(config.get("version", VERSION)))

        def default_space(self) -> Any:
            return "cosine"

        def supported_spaces(self) -> Any:
            return ["cosine"]

    _EMBEDDING = register_embedding_function(FeatureHashEmbedding)
    return _EMBEDDING


WIDE = 100  # records searched before a filter is applied here (ChromaMemory.query)


class ChromaMemory:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.lock = WriterLock(self.folder)
        self.lock.acquire()
        try:
            self._client, self._collection = _open(self.folder / "chroma")
        except BaseException:
            self.lock.release()
            raise

    def add(self, records: Sequence[Record]) -> None:
        if not records:
            return
        step = self._client.get_max_batch_size()
        for start in range(0, len(records), step):
            chunk = list({r.id: r for r in records[start:start + step]}.values())
            ids = [r.id for r in chunk]
            # replace, not Chroma's upsert: that merges a stored record's metadata with the new keys
            # (a delete costs 5 ms where a look costs 1, and new ids are the rule)
            present = self._collection.get(ids=ids, include=[])["ids"]
            if present:
                self._collection.delete(ids=present)
            self._collection.add(ids=ids, documents=[r.document for r in chunk],
                                 embeddings=embed([r.document for r in chunk]),
                                 metadatas=[dict(r.metadata) or None for r in chunk])

    def query(self, document: str, k: int = 10, where: Where | None = None) -> list[Hit]:
        """With a filter, the nearest ``WIDE`` records are searched first and filtered here: Chroma's
        own filtered search scans the records that pass (170 ms at 100k records when two thirds of
        them do, against 1-2 ms unfiltered). Only when fewer than ``k`` of them pass does Chroma
        filter. (No ``count()`` first: it cost 5 ms at 100k, and Chroma gives what there is.)"""
        if k <= 0:
            return []
        conditions = check_where(where)
        vector = embed([document])
        if conditions:
            wide = max(WIDE, k * 10)
            hits = self._query(vector, wide, None)
            passed = [h for h in hits if matches(h.record.metadata, conditions)]
            if len(passed) >= k or len(hits) < wide:  # enough, or that was every record
                return passed[:k]
        return self._query(vector, k, _where(where))

    def _query(self, vector: Any, n: int, where: dict[str, Any] | None) -> list[Hit]:
        found = self._collection.query(query_embeddings=vector, n_results=n, where=where,
                                       include=["documents", "metadatas", "distances"])
        return [Hit(Record(i, d or "", dict(m or {})), float(dist))
                for i, d, m, dist in zip(found["ids"][0], found["documents"][0], found["metadatas"][0],
                                         found["distances"][0])]

    def get(self, ids: Sequence[str] | None = None, where: Where | None = None,
            limit: int | None = None) -> list[Record]:
        if ids is not None and not ids:
            return []
        found = self._collection.get(ids=list(ids) if ids is not None else None, where=_where(where), limit=limit,
                                     include=["documents", "metadatas"])
        return [Record(i, d or "", dict(m or {})) for i, d, m in zip(found["ids"], found["documents"],
                                                                       found["metadatas"])]

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._collection.delete(ids=list(ids))

    def count(self) -> int:
        return self._collection.count()

    def close(self) -> None:
        if self.lock.held:
            try:
                self._client.close()
                scrub_indexes(self.folder / "chroma")
            finally:
                self.lock.release()


def _open(path: Path) -> tuple[Any, Any]:
    import chromadb
    from chromadb.config import Settings

    ef = embedding_function()
    scrub_indexes(path)  # a folder a killed process left
    try:
        client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
        collection = client.get_or_create_collection(COLLECTION, embedding_function=ef(),
                                                     configuration={"hnsw": {"space": "cosine"}},
                                                     metadata={"agent_etl": "experiences/1"})
    except Exception as e:
        raise MemoryUnavailable(f"memory folder {path.parent} cannot be opened ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else e!r}); `agent-etl memory reset` clears it, "
                                "or set AGENT_ETL_MEMORY=off to run without memory") from None
    return client, collection


def _where(where: Where | None) -> dict[str, Any] | None:
    """Our filter as Chroma's: several keys go under ``$and``."""
    parts = [{key: {op: list(value) if op in ("$in", "$nin") else value}} for key, op, value in check_where(where)]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}
