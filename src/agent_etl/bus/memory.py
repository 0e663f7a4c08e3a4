"""In-process asyncio bus: the default backend."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agent_etl.bus.base import Handler, Listener, NoResponder, Responder
from agent_etl.events import Event

log = logging.getLogger("agent_etl.bus")

_STOP = object()


class _Sub:
    def __init__(self, bus: MemoryBus, topic: str, handler: Handler, maxsize: int):
        self.bus, self.topic, self.handler = bus, topic, handler
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.worker = asyncio.get_running_loop().create_task(self._run(), name=f"bus:{topic}")

    async def _run(self) -> None:
        while True:
            event = await self.queue.get()
            if event is _STOP:
                return
            try:
                await self.handler(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.bus.handler_errors += 1
                log.exception("subscriber %r of %s failed on %r; it stays subscribed", self.handler, self.topic, event)
            finally:
                self.queue.task_done()

    async def cancel(self) -> None:
        subs = self.bus._subs.get(self.topic, [])
        if self in subs:
            subs.remove(self)
            self.bus._routes.clear()
            await self.queue.put(_STOP)
            await self.worker


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
    def __init__(self, bus: MemoryBus, subject: str):
        self.bus, self.subject = bus, subject

    async def cancel(self) -> None:
        self.bus._services.pop(self.subject, None)


class MemoryBus:
    def __init__(self) -> None:
        self._subs: dict[str, list[_Sub]] = {}
        self._listeners: dict[str, list[_Listener]] = {}
        self._services: dict[str, Responder] = {}
        # topic -> (listeners, subscriptions) of the topic and of "*", in order; rebuilt after any
        # (un)subscription, so publishing looks the receivers up once
        self._routes: dict[str, tuple[tuple[_Listener, ...], tuple[_Sub, ...]]] = {}
        self.handler_errors = 0
        self.closed = False

    def _route(self, topic: str) -> tuple[tuple[_Listener, ...], tuple[_Sub, ...]]:
        route = self._routes[topic] = ((*self._listeners.get(topic, ()), *self._listeners.get("*", ())),
                                       (*self._subs.get(topic, ()), *self._subs.get("*", ())))
        return route

    async def publish(self, event: Event) -> None:
        if self.closed:
            return
        topic = event.topic
        listeners, subs = self._routes.get(topic) or self._route(topic)
        for listener in listeners:
            try:
                listener.handler(event)
            except Exception:
                self.handler_errors += 1
                log.exception("listener %r of %s failed on %r; it stays subscribed", listener.handler,
                              listener.topic, event)
        for sub in subs:
            await sub.queue.put(event)

    def subscribe(self, topic: str | type[Event], handler: Handler, *, maxsize: int = 1024) -> _Sub:
        name = topic if isinstance(topic, str) else topic.topic
        sub = _Sub(self, name, handler, maxsize)
        self._subs.setdefault(name, []).append(sub)
        self._routes.clear()
        return sub

    def listen(self, topic: str | type[Event], handler: Listener) -> _Listener:
        name = topic if isinstance(topic, str) else topic.topic
        listener = _Listener(self, name, handler)
        self._listeners.setdefault(name, []).append(listener)
        self._routes.clear()
        return listener

    def serve(self, subject: str, handler: Responder) -> _Service:
        if subject in self._services:
            raise ValueError(f"subject {subject!r} already has a responder")
        self._services[subject] = handler
        return _Service(self, subject)

    async def request(self, subject: str, payload: Any, *, timeout: float | None = 60.0) -> Any:
        try:
            handler = self._services[subject]
        except KeyError:
            raise NoResponder(f"no agent serves {subject!r}; is it started?") from None
        if timeout is None:
            return await handler(payload)
        async with asyncio.timeout(timeout):
            return await handler(payload)

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
        self._listeners.clear()
        self._routes.clear()
