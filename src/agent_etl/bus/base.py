"""The event bus protocol. One interface, several backends (``memory`` now, NATS JetStream later).

- ``publish(event)`` delivers to every subscriber of ``event.topic`` (or of ``"*"``). A slow
  subscriber's bounded queue fills and ``publish`` waits: backpressure, not unbounded memory.
- ``subscribe(topic, handler)`` runs ``handler`` for each event, one at a time, in order. A handler
  that raises is logged and counted; the subscription and the bus go on.
- ``listen(topic, fn)`` calls a plain function inside ``publish``, in order, before publish
  returns: for bookkeeping that only updates memory (counters, futures, spawning a task). It
  costs no queue and no task switch; a listener must never block. One that raises is logged and
  isolated like a handler.
- ``serve(subject, handler)`` / ``request(subject, payload)``: request/reply. In-process the payload
  is passed by reference (an Arrow batch is never copied).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from agent_etl.events import Event

Handler = Callable[[Event], Awaitable[None]]
Responder = Callable[[Any], Awaitable[Any]]
Listener = Callable[[Event], None]


class NoResponder(LookupError):
    """Nobody serves the requested subject."""


@runtime_checkable
class Subscription(Protocol):
    async def cancel(self) -> None: ...


@runtime_checkable
class EventBus(Protocol):
    async def publish(self, event: Event) -> None: ...

    def subscribe(self, topic: str | type[Event], handler: Handler, *, maxsize: int = 1024) -> Subscription: ...

    def listen(self, topic: str | type[Event], handler: Listener) -> Subscription: ...

    def serve(self, subject: str, handler: Responder) -> Subscription: ...

    async def request(self, subject: str, payload: Any, *, timeout: float | None = 60.0) -> Any: ...

    async def drain(self) -> None:
        """Wait until every event published so far has been handled by its subscribers."""
        ...

    async def close(self) -> None: ...
