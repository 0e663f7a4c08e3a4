"""Zero the bytes Chroma's HNSW index files hold beyond their last element.

Chroma (1.x, its hnswlib fork) allocates an index's buffers for ``max_elements`` records with
``malloc`` and writes them whole to ``data_level0.bin`` and ``length.bin``, including the slots no
record uses yet. Those slots hold whatever the process's heap held before: freed strings such as a
resolved connection URL, a password read from the environment, a pipeline's text. So a memory
folder could carry secrets that no stored record contains. After Chroma closes (and before it
opens, for a folder a killed process left), every byte past ``cur_element_count`` is set to zero;
Chroma reads only the elements below it, and overwrites a slot whole when it adds a record there.

The header's layout (``HEADER_FIELDS`` of hnswlib's ``hnswalg.h``, persistence version 1): int32
version; size_t offsetLevel0, max_elements, cur_element_count, size_data_per_element, label_offset,
offsetData; int32 maxlevel; uint32 enterpoint; size_t maxM, maxM0, M; double mult; size_t
ef_construction. A header that does not read that way, or files whose sizes do not match it, are
left as they are: another format is not ours to rewrite.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<i6QiI3QdQ")  # 100 bytes
_FLOAT = 4
_CHUNK = 1 << 20


def scrub_index(folder: Path) -> bool:
    """Zero the unused tail of one HNSW segment folder; True when it was done (or nothing was left)."""
    header = folder / "header.bin"
    data, lengths = folder / "data_level0.bin", folder / "length.bin"
    try:
        raw = header.read_bytes()
        if len(raw) != _HEADER.size or not data.is_file() or not lengths.is_file():
            return False
        fields = _HEADER.unpack(raw)
        max_elements, count, per_element = fields[2], fields[3], fields[4]
        if count > max_elements or data.stat().st_size != max_elements * per_element \
                or lengths.stat().st_size != max_elements * _FLOAT:
            return False
        _zero_from(data, count * per_element)
        _zero_from(lengths, count * _FLOAT)
    except OSError as e:
        log.warning("memory index %s could not be scrubbed: %s", folder, e)
        return False
    return True


def scrub_indexes(chroma_folder: Path) -> None:
    """Every segment folder of a Chroma persistent folder (the ones holding a ``header.bin``)."""
    if chroma_folder.is_dir():
        for header in chroma_folder.glob("*/header.bin"):
            scrub_index(header.parent)


def _zero_from(path: Path, start: int) -> None:
    """Zero ``path`` from ``start`` to its end, in place, writing only where a byte is not zero."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        offset = start
        while offset < size:
            f.seek(offset)
            chunk = f.read(min(_CHUNK, size - offset))
            if chunk.count(0) != len(chunk):
                f.seek(offset)
                f.write(bytes(len(chunk)))
            offset += len(chunk)
