"""The event bus protocol. One interface, several backends (``memory``, ``nats`` JetStream;
``bus.open_bus`` picks one from a URL).

Everything on the bus is serialisable: events (``agent_etl.events``) and request/reply messages
are pydantic models, sent across processes as ``model_dump_json`` and rebuilt with
``parse_event`` / ``model_validate_json``. Data never travels here (a record batch stays in the
process that reads it); only control events and summaries do. The in-process backend passes the
objects by reference and serialises nothing, so it costs no more than a queue put.

- ``publish(event)`` delivers to every subscription of ``event.topic`` (or of ``"*"``); of a queue
  group, to one member. A slow subscriber's bounded queue fills and ``publish`` waits:
  backpressure, not unbounded memory.
- ``await subscribe(topic, handler, queue=, durable=, max_deliver=)`` runs ``handler`` for each
  event, one at a time, in order. Acknowledgement is explicit in the broker's sense: an event is
  acknowledged when its handler returns; a handler that raises is logged and counted, and the
  event is delivered again, up to ``max_deliver`` deliveries in all; the subscription and the bus
  go on. ``queue``: subscriptions of one queue group share the events (each goes to one of them).
  ``durable``: the consumer's name in a broker, so a restarted process picks up where it left
  off; the memory backend lives and dies with its process, so there it only names the subscription.
  ``ready``: awaited before the subscription takes its next event; a consumer with no room (a
  worker running all it may) takes none, so another member of its group gets it.
- ``await listen(topic, fn)`` calls a plain function inside ``publish``, in order, before publish
  returns: for bookkeeping that only updates memory (counters, futures, spawning a task). It
  costs no queue and no task switch; a listener must never block. One that raises is logged and
  isolated like a handler. In-process only in spirit: a broker backend calls it on arrival.
- ``await kv(name)``: a key/value bucket (``put``, ``get``, ``create`` only if absent, ``delete``,
  ``items``; bytes values) for state that is looked up rather than announced: heartbeats, leases,
  run locks.
- ``await serve(subject, handler)`` / ``request(subject, message)``: request/reply with a
  pydantic message each way (None for no reply). A subject may have several responders; each
  request goes to one of them (a queue group).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from agent_etl.events import Event

Message = BaseModel  # what request/reply carries: any pydantic model (serialisable by construction)
Handler = Callable[[Event], Awaitable[None]]
Responder = Callable[[Message], Awaitable[Message | None]]
Listener = Callable[[Event], None]
Ready = Callable[[], Awaitable[None]]


class NoResponder(LookupError):
    """Nobody serves the requested subject."""


@runtime_checkable
class Subscription(Protocol):
    async def cancel(self) -> None: ...


@runtime_checkable
class EventBus(Protocol):
    async def publish(self, event: Event) -> None: ...

    async def subscribe(self, topic: str | type[Event], handler: Handler, *, maxsize: int = 1024,
                        queue: str | None = None, durable: str | None = None,
                        max_deliver: int = 1, ready: Ready | None = None) -> Subscription: ...

    async def listen(self, topic: str | type[Event], handler: Listener) -> Subscription: ...

    async def serve(self, subject: str, handler: Responder) -> Subscription: ...

    async def request(self, subject: str, message: Message, *,
                      timeout: float | None = 60.0) -> Message | None: ...

    async def kv(self, name: str, *, ttl: float | None = None) -> Any: ...

    async def drain(self) -> None:
        """Wait until every event published so far has been handled by its subscribers."""
        ...

    async def close(self) -> None: ...
