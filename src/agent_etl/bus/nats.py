"""NATS JetStream bus (``AGENT_ETL_BUS=nats://host:port``): the same protocol as ``bus.memory``
across processes and machines (``bus.base`` describes it).

Layout under one namespace (``nats://host:port?namespace=NAME``, default ``agent-etl``), so that
tests and separate installations never see each other:

- events go to ``NS.ev.<topic>.<run id>``: a subject per event type and run. A plain subscription
  is a core NATS subscription (no storage on the way, thousands of events a millisecond). They are
  also kept in the stream ``NS_events`` (limits retention, a day) for durable consumers: a
  subscription with ``durable=`` or ``max_deliver > 1`` is a JetStream pull consumer with explicit
  ack, ``max_deliver``, and its ``queue`` members sharing the one durable consumer.
- events whose class says ``work = True`` (branch assignments) go to ``NS.work.<topic>.<run id>``,
  captured by the work-queue stream ``NS_work``: each is taken by one consumer of the group, acked
  when the handler returns, kept while it runs (``in_progress``), given to another member if the
  handler fails, up to ``max_deliver`` deliveries. They are published with an acknowledgement
  from the server (a lost assignment would hang a run); other events without one, in order on one
  connection, and ``drain`` makes sure the server has them (events are many: JetStream takes about
  5k synchronous publishes/s here, core publishes are not waited for).
- request/reply is core NATS request/reply on ``NS.rpc.<subject>``, responders in one queue group.
  A message travels as JSON with its class (``module:qualname``) in a header.
- key/value state (heartbeats, leases, run locks) lives in JetStream KV buckets ``NS_<name>``.

Nothing here knows an agent or a tool.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.js.api import (AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, RetentionPolicy, StorageType,
                         StreamConfig)
from pydantic import BaseModel

from agent_etl.bus.base import Handler, Listener, Message, NoResponder, Responder
from agent_etl.events import EVENT_TYPES, Event
from agent_etl.exceptions import AgentETLError

log = logging.getLogger("agent_etl.bus")

DEFAULT_NAMESPACE = "agent-etl"
EVENTS_MAX_AGE = 24 * 3600.0
WORK_ACK_WAIT = 30.0  # a handler working on a work event says so every third of this


class BusUnreachable(AgentETLError):
    """The NATS server of the bus cannot be reached: the run cannot start (or go on)."""

    exit_code = 1


def _token(text: str) -> str:
    """``text`` as one NATS subject token / stream name part."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


class _Core:
    """A core NATS subscription (events as they come, or a listener)."""

    def __init__(self, subs: list[Any]):
        self.subs = subs
        self.closed = False

    async def idle(self) -> None:
        if self.closed:  # unsubscribed: what it still held is never handled, and join() would wait forever
            return
        for s in self.subs:
            await s._pending_queue.join()

    async def cancel(self) -> None:
        if self.closed:
            return
        self.closed = True
        for s in self.subs:
            try:
                await s.unsubscribe()
            except nats.errors.Error:
                pass


class _Pull:
    """A JetStream pull consumer: takes one event when its handler is free, acks it when the
    handler returns, asks for it again (``nak``) when the handler raises, until ``max_deliver``."""

    def __init__(self, bus: NatsBus, stream: str, durable: str, psub: Any, handler: Handler, max_deliver: int,
                 ready: Any, owned: bool):
        self.bus, self.stream, self.durable, self.psub = bus, stream, durable, psub
        self.handler, self.max_deliver, self.ready, self.owned = handler, max_deliver, ready, owned
        self.busy = False
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"bus:{durable}")

    async def _run(self) -> None:
        while True:
            if self.ready is not None:
                await self.ready()
            try:
                msgs = await self.psub.fetch(1, timeout=5.0)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except nats.errors.ConnectionClosedError:
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a lost connection: the bus reports it on its next publish
                log.warning("bus consumer %s: %s", self.durable, e)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                self.busy = True
                try:
                    await self._one(msg)
                finally:
                    self.busy = False

    async def _one(self, msg: Any) -> None:
        delivery = msg.metadata.num_delivered
        event = self.bus._decode(msg)
        if event is None:
            await msg.term()
            return
        keep = asyncio.get_running_loop().create_task(_in_progress(msg))
        try:
            await self.handler(event)
        except asyncio.CancelledError:
            keep.cancel()
            await _quietly(msg.nak())  # another member takes it
            raise
        except Exception:
            keep.cancel()
            self.bus.handler_errors += 1
            again = delivery < self.max_deliver
            log.exception("subscriber %r of %s failed on %r (delivery %d of %d)%s", self.handler, self.durable,
                          event, delivery, self.max_deliver, "; delivering it again" if again else "; dropped")
            await _quietly(msg.nak() if again else msg.term())
            return
        keep.cancel()
        await _quietly(msg.ack())

    async def idle(self) -> None:
        """Until the consumer has nothing pending or unacknowledged (what this process can see)."""
        while not self.task.done():
            try:
                info = await self.bus._js.consumer_info(self.stream, self.durable)
            except nats.js.errors.NotFoundError:
                return
            if info.num_pending == 0 and info.num_ack_pending == 0 and not self.busy:
                return
            await asyncio.sleep(0.01)

    async def cancel(self) -> None:
        if self.task.done() and self.owned is None:
            return
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        try:
            await self.psub.unsubscribe()
        except (nats.errors.Error, Exception):
            pass
        if self.owned:  # an ephemeral consumer of this process: nobody else binds to it
            await _quietly(self.bus._js.delete_consumer(self.stream, self.durable))
        self.owned = None
        if self in self.bus._pulls:
            self.bus._pulls.remove(self)


async def _in_progress(msg: Any) -> None:
    while True:
        await asyncio.sleep(WORK_ACK_WAIT / 3)
        await _quietly(msg.in_progress())


async def _quietly(coro: Any) -> None:
    try:
        await coro
    except Exception:  # the connection went: the broker redelivers after ack_wait
        pass


class _Service:
    def __init__(self, sub: Any):
        self.sub = sub

    async def cancel(self) -> None:
        try:
            await self.sub.unsubscribe()
        except nats.errors.Error:
            pass


class KeyValue:
    """One JetStream KV bucket: ``put``/``get``/``delete``, ``create`` (only if absent: a lock),
    ``items``. Values are bytes."""

    def __init__(self, kv: Any):
        self._kv = kv

    async def put(self, key: str, value: bytes) -> None:
        await self._kv.put(key, value)

    async def create(self, key: str, value: bytes) -> bool:
        try:
            await self._kv.create(key, value)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False

    async def get(self, key: str) -> bytes | None:
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return entry.value

    async def delete(self, key: str) -> None:
        await _quietly(self._kv.purge(key))

    async def items(self) -> dict[str, bytes]:
        try:
            keys = await self._kv.keys()
        except nats.js.errors.NoKeysError:
            return {}
        out = {}
        for k in keys:
            v = await self.get(k)
            if v is not None:
                out[k] = v
        return out


class NatsBus:
    remote = True  # the coordinator places branches on worker processes (agents.dispatch)

    def __init__(self, url: str):
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.namespace = (query.get("namespace") or [DEFAULT_NAMESPACE])[0]
        self.server = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self.url = url
        self._ns = _token(self.namespace)
        self.events_stream = f"{self._ns}_events"
        self.work_stream = f"{self._ns}_work"
        self._nc: Any = None
        self._js: Any = None
        self._opening: asyncio.Lock | None = None
        self._cores: list[_Core] = []
        self._pulls: list[_Pull] = []
        self._services: list[_Service] = []
        self._kvs: dict[str, KeyValue] = {}
        self._types: dict[str, type[BaseModel]] = {}
        self._unsure = 0  # events published without an acknowledgement since the last drain
        self.handler_errors = 0
        self.closed = False

    # -- connection -------------------------------------------------------------------------------

    async def connect(self) -> NatsBus:
        """Connect (once) and make sure the namespace's streams exist. Unreachable: BusUnreachable."""
        if self._js is not None:
            return self
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._js is not None:
                return self
            from agent_etl.exceptions import TransientError
            from agent_etl.tools.streams.nats_connect import connect

            try:
                nc = await connect(self.server)
            except TransientError as e:
                raise BusUnreachable(f"bus {self.server}: {e}") from None
            js = nc.jetstream()
            try:
                await _stream(js, StreamConfig(name=self.events_stream, subjects=[f"{self._ns}.ev.>"],
                                               retention=RetentionPolicy.LIMITS, max_age=EVENTS_MAX_AGE,
                                               storage=StorageType.FILE))
                await _stream(js, StreamConfig(name=self.work_stream, subjects=[f"{self._ns}.work.>"],
                                               retention=RetentionPolicy.WORK_QUEUE, max_age=EVENTS_MAX_AGE,
                                               storage=StorageType.FILE))
            except nats.js.errors.ServiceUnavailableError:
                await nc.close()
                raise BusUnreachable(f"bus {self.server}: the NATS server runs without JetStream; start it with "
                                     "-js (nats-server -js)") from None
            self._nc, self._js = nc, js
        return self

    def _gone(self, e: Exception) -> BusUnreachable:
        return BusUnreachable(f"lost the NATS server at {self.server} ({type(e).__name__}: {e}); the run can be "
                              "resumed once it is back")

    @property
    def lost(self) -> str | None:
        """Why the bus cannot go on (the server went away and reconnecting failed), else None."""
        if self._nc is not None and self._nc.is_closed and not self.closed:
            return f"lost the NATS server at {self.server} (reconnecting failed)"
        return None

    def _subject(self, event: Event) -> str:
        run = _token(str(getattr(event, "run_id", "") or "_"))
        if not getattr(event, "work", False):
            return f"{self._ns}.ev.{event.topic}.{run}"
        # work that needs tagged workers has a token more: its place (agents.dispatch.place)
        tags = getattr(event, "tags", None)
        return f"{self._ns}.work.{event.topic}.{run}" + (f".{'+'.join(sorted(tags))}" if tags else "")

    def _filters(self, topic: str, place: str | None = None) -> list[str]:
        if topic == "*":
            return [f"{self._ns}.ev.>", f"{self._ns}.work.>"]
        cls = EVENT_TYPES.get(topic)
        if cls is None or not getattr(cls, "work", False):
            return [f"{self._ns}.ev.{topic}.*"]
        if place:  # a work queue's consumers must not overlap: each place is a subject pattern of its own
            return [f"{self._ns}.work.{topic}.*.{place}"]
        return [f"{self._ns}.work.{topic}.*", f"{self._ns}.work.{topic}.*.*"]

    def _decode(self, msg: Any) -> Event | None:
        topic = (msg.headers or {}).get("topic")
        cls = EVENT_TYPES.get(topic) if topic else None
        if cls is None:
            if topic != "_drain":
                log.warning("bus: an event of unknown topic %r on %s; ignored", topic, msg.subject)
            return None
        return cls.model_validate_json(msg.data)

    # -- events -----------------------------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        if self.closed:
            return
        await self.connect()
        subject, data = self._subject(event), event.model_dump_json().encode()
        headers = {"topic": event.topic}
        try:
            if getattr(event, "work", False):
                await self._js.publish(subject, data, headers=headers, timeout=10.0)
            else:
                await self._nc.publish(subject, data, headers=headers)
                self._unsure += 1
        except (nats.errors.Error, nats.js.errors.Error, OSError) as e:
            raise self._gone(e) from None

    async def subscribe(self, topic: str | type[Event], handler: Handler, *, maxsize: int = 1024,
                        queue: str | None = None, durable: str | None = None, max_deliver: int = 1,
                        ready: Any = None, place: str | None = None) -> _Core | _Pull:
        """As ``EventBus.subscribe``; ``place``: of a work topic, only the events for workers with
        those tags (``agents.dispatch.place``), else (a queue group) only those for any worker."""
        if max_deliver < 1:
            raise ValueError("max_deliver is the number of deliveries of an event, at least 1")
        await self.connect()
        name = topic if isinstance(topic, str) else topic.topic
        filters = self._filters(name, place)
        work = filters[0].startswith(f"{self._ns}.work.")
        if durable is None and max_deliver == 1 and not work and ready is None:
            return await self._core(filters, handler, queue, maxsize)
        if name == "*":
            raise ValueError("a durable or redelivering subscription names one topic, not '*'")
        stream = self.work_stream if work else self.events_stream
        owned = durable is None
        consumer = _token(durable or f"{queue or 'sub'}-{id(handler):x}-{time.monotonic_ns():x}")
        config = ConsumerConfig(durable_name=consumer, filter_subject=filters[0], ack_policy=AckPolicy.EXPLICIT,
                                max_deliver=max_deliver, ack_wait=WORK_ACK_WAIT, deliver_policy=DeliverPolicy.NEW
                                if not work else DeliverPolicy.ALL, max_ack_pending=maxsize)
        try:
            await self._js.add_consumer(stream, config)
        except nats.js.errors.BadRequestError as e:  # it exists: bind to it (a group's second member)
            if "already" not in str(e.description or "") and e.err_code not in (10013, 10148):
                raise
        psub = await self._js.pull_subscribe_bind(consumer, stream=stream)
        pull = _Pull(self, stream, consumer, psub, handler, max_deliver, ready, owned)
        self._pulls.append(pull)
        return pull

    async def _core(self, subjects: list[str], handler: Handler, queue: str | None, maxsize: int) -> _Core:
        async def on_msg(msg: Any) -> None:
            event = self._decode(msg)
            if event is None:
                return
            try:
                await handler(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.handler_errors += 1
                log.exception("subscriber %r of %s failed on %r; it stays subscribed", handler, msg.subject, event)

        subs = [await self._nc.subscribe(s, queue=queue or "", cb=on_msg, pending_msgs_limit=max(maxsize, 65536))
                for s in subjects]
        core = _Core(subs)
        self._cores.append(core)
        return core

    async def listen(self, topic: str | type[Event], handler: Listener) -> _Core:
        async def call(event: Event) -> None:
            handler(event)

        return await self.subscribe(topic, call)

    async def drain(self) -> None:
        """Until every event published from here so far was handled by this process's subscribers
        (a broker cannot know about other processes')."""
        if self._nc is None or self.closed or self._nc.is_closed:  # nothing can arrive any more
            return
        if self._unsure:  # stored behind everything sent before it on this connection
            self._unsure = 0
            try:
                await self._js.publish(f"{self._ns}.ev._drain._", b"", headers={"topic": "_drain"}, timeout=10.0)
            except nats.errors.Error as e:
                raise self._gone(e) from None
        try:
            await self._nc.flush()
        except nats.errors.Error as e:
            raise self._gone(e) from None
        for core in list(self._cores):
            await core.idle()
        for pull in list(self._pulls):
            await pull.idle()

    # -- request/reply ----------------------------------------------------------------------------

    def _pack(self, message: BaseModel | None) -> tuple[bytes, dict[str, str]]:
        if message is None:
            return b"", {"type": ""}
        cls = type(message)
        name = f"{cls.__module__}:{cls.__qualname__}"
        self._types[name] = cls
        return message.model_dump_json().encode(), {"type": name}

    def _unpack(self, msg: Any) -> BaseModel | None:
        name = (msg.headers or {}).get("type", "")
        if not name:
            return None
        cls = self._types.get(name)
        if cls is None:
            module, _, qualname = name.partition(":")
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            cls = self._types[name] = obj
        return cls.model_validate_json(msg.data)

    async def serve(self, subject: str, handler: Responder) -> _Service:
        await self.connect()

        async def on_request(msg: Any) -> None:
            try:
                answer = await handler(self._unpack(msg))
                data, headers = self._pack(answer)
            except Exception as e:
                log.exception("responder of %s failed", subject)
                data, headers = str(e).encode(), {"type": "", "error": type(e).__name__}
            await self._nc.publish(msg.reply, data, headers=headers)

        sub = await self._nc.subscribe(f"{self._ns}.rpc.{subject}", queue="responders", cb=on_request)
        service = _Service(sub)
        self._services.append(service)
        return service

    async def request(self, subject: str, message: Message, *, timeout: float | None = 60.0) -> Message | None:
        if not isinstance(message, BaseModel):
            raise TypeError(f"a request on {subject!r} carries a pydantic model (serialisable), not "
                            f"{type(message).__name__}")
        await self.connect()
        data, headers = self._pack(message)
        try:
            reply = await self._nc.request(f"{self._ns}.rpc.{subject}", data, headers=headers,
                                           timeout=timeout if timeout is not None else 24 * 3600.0)
        except nats.errors.NoRespondersError:
            raise NoResponder(f"no agent serves {subject!r} on {self.server}; is a worker started?") from None
        except nats.errors.TimeoutError:
            raise TimeoutError(f"no answer on {subject!r} within {timeout}s") from None
        error = (reply.headers or {}).get("error")
        if error:
            raise RuntimeError(f"the responder of {subject!r} failed: {error}: {reply.data.decode()}")
        return self._unpack(reply)

    # -- key/value --------------------------------------------------------------------------------

    async def kv(self, name: str, *, ttl: float | None = None) -> KeyValue:
        """The bucket ``name`` of this namespace (made on first use; ``ttl``: entries expire)."""
        kv = self._kvs.get(name)
        if kv is None:
            await self.connect()
            bucket = f"{self._ns}_{_token(name)}"
            try:
                store = await self._js.key_value(bucket)
            except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
                store = await self._js.create_key_value(KeyValueConfig(bucket=bucket, ttl=ttl,
                                                                       storage=StorageType.FILE))
            kv = self._kvs[name] = KeyValue(store)
        return kv

    # -- end --------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self.closed:
            return
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self.drain()
            except (BusUnreachable, nats.errors.Error):
                pass
        self.closed = True
        for sub in [*self._pulls, *self._cores, *self._services]:
            await sub.cancel()
        self._pulls.clear()
        self._cores.clear()
        self._services.clear()
        if self._nc is not None:
            await _quietly(self._nc.close())

    async def destroy(self) -> None:
        """Delete the namespace's streams and buckets (tests; a namespace no longer used)."""
        await self.connect()
        for sub in list(self._pulls):
            await sub.cancel()
        js = self._js
        for stream in (self.events_stream, self.work_stream):
            await _quietly(js.delete_stream(stream))
        for name in await js.streams_info():  # the buckets made by any process of the namespace
            if name.config.name.startswith(f"KV_{self._ns}_"):
                await _quietly(js.delete_stream(name.config.name))
        self._kvs.clear()
        await self.close()


async def _stream(js: Any, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)
