"""What the tasks of one run share: a connection pool per named connection, a client per endpoint.

A tool asks ``ctx.resources.get(key, factory, close)``; the first task to ask creates the thing,
the others get the same one, and the run closes them all when it ends (``close`` may return an
awaitable). Keys are the tool's own, e.g. ``("postgres", "warehouse")``.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("agent_etl.resources")
T = TypeVar("T")


class Resources:
    def __init__(self) -> None:
        self._items: dict[Any, tuple[Any, Callable[[Any], Any] | None]] = {}
        self._lock = threading.Lock()  # tools may ask from worker threads

    def get(self, key: Any, factory: Callable[[], T], close: Callable[[T], Any] | None = None) -> T:
        with self._lock:
            if key in self._items:
                return self._items[key][0]
            obj = factory()
            self._items[key] = (obj, close)
            return obj

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    async def aclose(self) -> None:
        """Close everything, newest first; a failing close is logged and does not stop the others."""
        with self._lock:
            items, self._items = list(self._items.items()), {}
        for key, (obj, close) in reversed(items):
            if close is None:
                continue
            try:
                result = close(obj)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # closing must go on
                log.warning("closing %r failed", key, exc_info=True)
