"""In-process asyncio bus: the default backend (``AGENT_ETL_BUS=memory``). Objects are passed by
reference; nothing is serialised (see ``bus.base`` for the protocol)."""

from __future__ import annotations

import asyncio
import itertools
import logging

from pydantic import BaseModel

from agent_etl.bus.base import Handler, Listener, Message, NoResponder, Ready, Responder
from agent_etl.events import Event

log = logging.getLogger("agent_etl.bus")

_STOP = object()


class _Sub:
    def __init__(self, bus: MemoryBus, topic: str, handler: Handler, maxsize: int, queue: str | None,
                 durable: str | None, max_deliver: int, ready: Ready | None = None):
        if max_deliver < 1:
            raise ValueError("max_deliver is the number of deliveries of an event, at least 1")
        self.bus, self.topic, self.handler = bus, topic, handler
        self.group, self.durable, self.max_deliver, self.ready = queue, durable, max_deliver, ready
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.worker = asyncio.get_running_loop().create_task(self._run(), name=f"bus:{topic}")

    async def _run(self) -> None:
        while True:
            if self.ready is not None:
                await self.ready()
            event = await self.queue.get()
            if event is _STOP:
                return
            try:
                for delivery in range(1, self.max_deliver + 1):
                    try:
                        await self.handler(event)  # returning acknowledges the event
                        break
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        self.bus.handler_errors += 1
                        again = "; delivering it again" if delivery < self.max_deliver else "; it stays subscribed"
                        log.exception("subscriber %r of %s failed on %r (delivery %d of %d)%s", self.handler,
                                      self.topic, event, delivery, self.max_deliver, again)
            finally:
                self.queue.task_done()

    async def cancel(self) -> None:
        subs = self.bus._subs.get(self.topic, [])
        if self in subs:
            subs.remove(self)
            self.bus._routes.clear()
            await self.queue.put(_STOP)
            await self.worker


class _Group:
    """The subscriptions of one queue group on one topic: each event goes to one of them, in turn."""

    __slots__ = ("members", "turn")

    def __init__(self, members: list[_Sub]):
        self.members = members
        self.turn = itertools.cycle(members)

    @property
    def queue(self) -> asyncio.Queue:
        return next(self.turn).queue


class _Listener:
    """An inline subscriber: a plain function called inside ``publish``."""

    def __init__(self, bus: MemoryBus, topic: str, handler: Listener):
        self.bus, self.topic, self.handler = bus, topic, handler

    async def cancel(self) -> None:
        listeners = self.bus._listeners.get(self.topic, [])
        if self in listeners:
            listeners.remove(self)
            self.bus._routes.clear()


class _Service:
    def __init__(self, bus: MemoryBus, subject: str, handler: Responder):
        self.bus, self.subject, self.handler = bus, subject, handler

    async def cancel(self) -> None:
        responders = self.bus._services.get(self.subject, [])
        if self in responders:
            responders.remove(self)
            self.bus._turns.pop(self.subject, None)
            if not responders:
                del self.bus._services[self.subject]


class KeyValue:
    """A key/value bucket in memory (the broker's are JetStream KV buckets, ``bus.nats``)."""

    def __init__(self) -> None:
        self._items: dict[str, bytes] = {}

    async def put(self, key: str, value: bytes) -> None:
        self._items[key] = value

    async def create(self, key: str, value: bytes) -> bool:
        if key in self._items:
            return False
        self._items[key] = value
        return True

    async def get(self, key: str) -> bytes | None:
        return self._items.get(key)

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)

    async def items(self) -> dict[str, bytes]:
        return dict(self._items)


class MemoryBus:
    def __init__(self) -> None:
        self._subs: dict[str, list[_Sub]] = {}
        self._listeners: dict[str, list[_Listener]] = {}
        self._services: dict[str, list[_Service]] = {}
        self._turns: dict[str, itertools.cycle] = {}  # subject -> its responders in turn
        # topic -> (listeners, receivers) of the topic and of "*", in order; a receiver is a
        # subscription or a queue group; rebuilt after any (un)subscription, so publishing looks
        # the receivers up once
        self._routes: dict[str, tuple[tuple[_Listener, ...], tuple[_Sub | _Group, ...]]] = {}
        self._kvs: dict[str, KeyValue] = {}
        self.handler_errors = 0
        self.closed = False

    def _route(self, topic: str) -> tuple[tuple[_Listener, ...], tuple[_Sub | _Group, ...]]:
        receivers: list[_Sub | _Group] = []
        groups: dict[tuple[str, str], list[_Sub]] = {}
        for sub in (*self._subs.get(topic, ()), *self._subs.get("*", ())):
            if sub.group is None:
                receivers.append(sub)
                continue
            members = groups.get((sub.topic, sub.group))
            if members is None:
                members = groups[(sub.topic, sub.group)] = []
                receivers.append(_Group(members))
            members.append(sub)
        route = self._routes[topic] = ((*self._listeners.get(topic, ()), *self._listeners.get("*", ())),
                                       tuple(receivers))
        return route

    async def publish(self, event: Event) -> None:
        if self.closed:
            return
        topic = event.topic
        listeners, receivers = self._routes.get(topic) or self._route(topic)
        for listener in listeners:
            try:
                listener.handler(event)
            except Exception:
                self.handler_errors += 1
                log.exception("listener %r of %s failed on %r; it stays subscribed", listener.handler,
                              listener.topic, event)
        for receiver in receivers:
            await receiver.queue.put(event)

    async def subscribe(self, topic: str | type[Event], handler: Handler, *, maxsize: int = 1024,
                        queue: str | None = None, durable: str | None = None, max_deliver: int = 1,
                        ready: Ready | None = None) -> _Sub:
        name = topic if isinstance(topic, str) else topic.topic
        sub = _Sub(self, name, handler, maxsize, queue, durable, max_deliver, ready)
        self._subs.setdefault(name, []).append(sub)
        self._routes.clear()
        return sub

    async def listen(self, topic: str | type[Event], handler: Listener) -> _Listener:
        name = topic if isinstance(topic, str) else topic.topic
        listener = _Listener(self, name, handler)
        self._listeners.setdefault(name, []).append(listener)
        self._routes.clear()
        return listener

    async def serve(self, subject: str, handler: Responder) -> _Service:
        service = _Service(self, subject, handler)
        self._services.setdefault(subject, []).append(service)
        self._turns.pop(subject, None)
        return service

    async def request(self, subject: str, message: Message, *, timeout: float | None = 60.0) -> Message | None:
        if not isinstance(message, BaseModel):
            raise TypeError(f"a request on {subject!r} carries a pydantic model (serialisable), not "
                            f"{type(message).__name__}")
        responders = self._services.get(subject)
        if not responders:
            raise NoResponder(f"no agent serves {subject!r}; is it started?")
        turn = self._turns.get(subject)
        if turn is None:
            turn = self._turns[subject] = itertools.cycle(list(responders))
        handler = next(turn).handler
        if timeout is None:
            return await handler(message)
        async with asyncio.timeout(timeout):
            return await handler(message)

    async def kv(self, name: str, *, ttl: float | None = None) -> KeyValue:
        """The key/value bucket ``name`` (in this process; ``ttl`` is a broker's business)."""
        return self._kvs.setdefault(name, KeyValue())

    def pending(self) -> int:
        """Events waiting in the subscriptions' queues (the monitor's queue depth gauge)."""
        return sum(sub.queue.qsize() for subs in list(self._subs.values()) for sub in subs)

    async def drain(self) -> None:
        """Wait until every event published so far has been handled."""
        for subs in list(self._subs.values()):
            for sub in list(subs):
                await sub.queue.join()

    async def close(self) -> None:
        if self.closed:
            return
        await self.drain()
        self.closed = True
        for subs in list(self._subs.values()):
            for sub in list(subs):
                await sub.cancel()
        self._services.clear()
        self._turns.clear()
        self._listeners.clear()
        self._routes.clear()
