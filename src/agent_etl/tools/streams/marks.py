"""Stream marks: where a stream source stood after the last message of a batch.

A mark is JSON kept in every checkpoint of the loads below the source (``position[source]["mark"]``):
``{"stream": name, "id": "1700000000000-3"}`` for a Redis entry id, ``{"stream": name, "seq": 42}`` for a
NATS stream sequence. ``order`` makes them comparable: the runtime takes the smallest mark of a source's
destinations, and a source drops (and acknowledges) redelivered messages at or before it.
"""

from __future__ import annotations

from typing import Any


def order(mark: dict[str, Any] | None) -> tuple[int, int]:
    """A sortable key of a mark; (-1, -1) for none."""
    if not mark:
        return (-1, -1)
    if "seq" in mark:
        return (int(mark["seq"]), 0)
    if "id" in mark:
        return entry_order(str(mark["id"]))
    return (-1, -1)


def entry_order(entry_id: str) -> tuple[int, int]:
    """A Redis entry id (``<ms>-<seq>``) as a pair of ints."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def is_stream_mark(mark: Any, stream: str) -> bool:
    """Whether ``mark`` is a stream mark of ``stream`` (a mark of another stream, or an incremental
    cursor of a database read, does not count)."""
    return isinstance(mark, dict) and mark.get("stream") == stream and ("seq" in mark or "id" in mark)
