"""Embeddings computed here, deterministically, with no model: feature hashing.

Each weighted feature of a document (``TaskDescriptor.features`` for a descriptor's JSON, its words
for free text) adds its weight at a column chosen by a stable hash of the feature, with a sign from
another bit of the hash (so collisions cancel on average instead of piling up); the vector is then
L2-normalised. The hash is BLAKE2b, not Python's ``hash``, so every process and machine computes the
same vector for the same document.
"""

from __future__ import annotations

from functools import lru_cache
from hashlib import blake2b
from typing import Sequence

import numpy as np

from agent_etl.memory.descriptor import MARK, TaskDescriptor, text_features

DIM = 256
NAME = "agent_etl_feature_hash"  # the name Chroma records in a collection's configuration
VERSION = 1  # a change of features or hashing is a new version: stored vectors would not compare


@lru_cache(maxsize=65536)
def _slot(feature: str) -> tuple[int, float]:
    h = int.from_bytes(blake2b(feature.encode(), digest_size=8).digest(), "little")
    return h % DIM, (1.0 if h >> 63 else -1.0)


def features(document: str) -> list[tuple[str, float]]:
    if document.startswith("{") and f'"descriptor":"{MARK}"' in document:
        try:
            return TaskDescriptor.from_json(document).features()
        except (ValueError, TypeError):
            pass
    return text_features(document)


def embed(documents: Sequence[str], dim: int = DIM) -> np.ndarray:
    """A float32 array (len(documents), dim) of unit rows (an empty document gives a zero row)."""
    if dim != DIM:
        raise ValueError(f"this embedding has {DIM} dimensions, not {dim}")
    out = np.zeros((len(documents), DIM), dtype=np.float32)
    for i, doc in enumerate(documents):
        row = out[i]
        for feature, weight in features(doc):
            col, sign = _slot(feature)
            row[col] += sign * weight
        norm = float(np.linalg.norm(row))
        if norm > 0:
            row /= norm
    return out
