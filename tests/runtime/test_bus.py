import asyncio
import uuid

import pytest
from pydantic import BaseModel

from agent_etl.bus import open_bus
from agent_etl.bus.base import EventBus, NoResponder
from agent_etl.bus.memory import MemoryBus
from agent_etl.events import TaskProgress, TaskStarted


BACKENDS = ["memory", "nats"]  # every test that takes `bus` runs on each
NATS = "nats://127.0.0.1:4222"


def nats_url() -> str:
    """A namespace of its own per test: its streams, consumers and buckets are deleted after."""
    return f"{NATS}?namespace=test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=BACKENDS)
async def bus(request):
    """A bus of each backend, through ``open_bus``; closed (NATS: its namespace deleted) after the test."""
    b = open_bus(nats_url() if request.param == "nats" else request.param)
    yield b
    if request.param == "nats":
        await b.destroy()
    else:
        await b.close()


def progress(i: int) -> TaskProgress:
    return TaskProgress(run_id="r", task="t", agent="a", rows=1, rows_total=i, batches=i)


async def test_delivers_by_topic_and_wildcard_in_order(bus):
    assert isinstance(bus, EventBus)
    got, everything = [], []

    async def on_progress(ev):
        got.append(ev.rows_total)

    async def on_any(ev):
        everything.append(ev.topic)

    await bus.subscribe(TaskProgress, on_progress)
    await bus.subscribe("*", on_any)
    for i in range(5):
        await bus.publish(progress(i))
    await bus.publish(TaskStarted(run_id="r", task="t", agent="a"))
    await bus.drain()
    assert got == [0, 1, 2, 3, 4]
    assert everything == ["task.progress"] * 5 + ["task.started"]


async def test_failing_subscriber_is_isolated(bus, caplog):
    good = []

    async def bad(ev):
        if ev.rows_total % 2:
            raise RuntimeError("subscriber bug")

    async def fine(ev):
        good.append(ev.rows_total)

    await bus.subscribe(TaskProgress, bad)
    await bus.subscribe(TaskProgress, fine)
    for i in range(4):
        await bus.publish(progress(i))
    await bus.drain()
    assert good == [0, 1, 2, 3]
    assert bus.handler_errors == 2
    assert "subscriber bug" in caplog.text


async def test_slow_subscriber_applies_backpressure():
    bus = MemoryBus()
    release = asyncio.Event()
    handled = []

    async def slow(ev):
        await release.wait()
        handled.append(ev.rows_total)

    await bus.subscribe(TaskProgress, slow, maxsize=3)
    published = 0

    async def producer():
        nonlocal published
        for i in range(10):
            await bus.publish(progress(i))
            published += 1

    task = asyncio.create_task(producer())
    await asyncio.sleep(0.05)
    # 1 event in the handler + 3 queued: the producer is held back, memory does not grow
    assert published == 4 and not task.done()
    release.set()
    await task
    await bus.drain()
    assert handled == list(range(10))
    await bus.close()


class Ping(BaseModel):
    n: int


async def test_request_reply_carries_pydantic_messages_by_reference():
    bus = MemoryBus()
    message = Ping(n=1)

    async def echo(p):
        return p

    await bus.serve("echo", echo)
    assert await bus.request("echo", message) is message  # in process: nothing is copied
    with pytest.raises(TypeError, match="pydantic model"):
        await bus.request("echo", object())
    with pytest.raises(NoResponder):
        await bus.request("nobody", message)

    async def slow(p):
        await asyncio.sleep(5)

    await bus.serve("slow", slow)
    with pytest.raises(TimeoutError):
        await bus.request("slow", message, timeout=0.05)
    await bus.close()


async def test_several_responders_take_requests_in_turn(bus):

    def responder(name):
        async def answer(p):
            return Ping(n=p.n * 10 + name)
        return answer

    first = await bus.serve("work", responder(1))
    await bus.serve("work", responder(2))
    answers = [(await bus.request("work", Ping(n=i))).n for i in range(8)]
    assert all(a // 10 == i for i, a in enumerate(answers))  # each request answered once
    assert {a % 10 for a in answers} == {1, 2}  # by both (the memory bus: in turn)
    await first.cancel()
    assert [(await bus.request("work", Ping(n=i))).n for i in range(2)] == [2, 12]


async def test_a_queue_group_shares_the_events_and_others_get_all(bus):
    a, b, everyone = [], [], []

    async def into(seen, ev):
        seen.append(ev.rows_total)

    await bus.subscribe(TaskProgress, lambda ev: into(a, ev), queue="workers", durable="progress-workers")
    await bus.subscribe(TaskProgress, lambda ev: into(b, ev), queue="workers", durable="progress-workers")
    await bus.subscribe(TaskProgress, lambda ev: into(everyone, ev))
    for i in range(6):
        await bus.publish(progress(i))
    await bus.drain()
    assert sorted(a + b) == list(range(6)) and a and b  # each event to one member of the group
    assert everyone == list(range(6))


async def test_a_failed_handler_gets_the_event_again_up_to_max_deliver(bus, caplog):
    tries: dict[int, int] = {}

    async def flaky(ev):
        tries[ev.rows_total] = tries.get(ev.rows_total, 0) + 1
        if ev.rows_total == 1 and tries[1] < 3:
            raise RuntimeError("not yet")
        if ev.rows_total == 2:
            raise RuntimeError("never")

    await bus.subscribe(TaskProgress, flaky, max_deliver=3)
    for i in range(4):
        await bus.publish(progress(i))
    await bus.drain()
    # returning acknowledges; raising asks for the event again, until max_deliver deliveries in all
    assert tries == {0: 1, 1: 3, 2: 3, 3: 1}
    assert bus.handler_errors == 2 + 3 and "never" in caplog.text
    with pytest.raises(ValueError, match="max_deliver"):
        await bus.subscribe(TaskProgress, flaky, max_deliver=0)


async def test_listeners_run_inside_publish_and_are_isolated(caplog):
    bus = MemoryBus()
    seen = []

    def bad(ev):
        raise RuntimeError("listener bug")

    await bus.listen(TaskProgress, bad)
    listener = await bus.listen("*", lambda ev: seen.append(ev.rows_total))
    await bus.publish(progress(1))
    assert seen == [1]  # before publish returned, no drain needed
    assert bus.handler_errors == 1 and "listener bug" in caplog.text
    await listener.cancel()
    await bus.publish(progress(2))
    assert seen == [1]
    await bus.close()


# -- what only a broker does ----------------------------------------------------------------------

@pytest.fixture
async def nats_bus():
    b = open_bus(nats_url())
    yield b
    await b.destroy()


async def test_nats_request_reply_crosses_as_json_and_errors_are_ours(nats_bus):
    async def echo(p):
        return Ping(n=p.n + 1)

    await nats_bus.serve("echo", echo)
    answer = await nats_bus.request("echo", Ping(n=1))
    assert answer == Ping(n=2)
    with pytest.raises(NoResponder, match="no agent serves 'nobody'"):
        await nats_bus.request("nobody", Ping(n=1))

    async def slow(p):
        await asyncio.sleep(5)

    await nats_bus.serve("slow", slow)
    with pytest.raises(TimeoutError):
        await nats_bus.request("slow", Ping(n=1), timeout=0.2)


async def test_nats_durable_consumer_picks_up_what_was_published_while_away(nats_bus):
    seen = []

    async def on(ev):
        seen.append(ev.rows_total)

    sub = await nats_bus.subscribe(TaskProgress, on, durable="keeper")
    await nats_bus.publish(progress(1))
    await nats_bus.drain()
    await sub.cancel()  # the process goes away; its durable consumer stays on the server
    await nats_bus.publish(progress(2))
    await nats_bus.publish(progress(3))
    again = open_bus(nats_bus.url)
    try:
        await again.subscribe(TaskProgress, on, durable="keeper")
        await nats_bus.drain()
        await again.drain()
    finally:
        await again.close()
    assert seen == [1, 2, 3]


async def test_nats_key_value_buckets(nats_bus):
    kv = await nats_bus.kv("locks")
    assert await kv.create("run-1", b"me")
    assert not await kv.create("run-1", b"you")  # a lock is taken once
    await kv.put("w1", b"beat")
    assert await kv.get("run-1") == b"me" and await kv.items() == {"run-1": b"me", "w1": b"beat"}
    await kv.delete("run-1")
    assert await kv.get("run-1") is None and await kv.create("run-1", b"you")


async def test_nats_unreachable_names_the_url():
    from agent_etl.bus.nats import BusUnreachable

    bus = open_bus("nats://127.0.0.1:1")
    with pytest.raises(BusUnreachable, match=r"bus nats://127.0.0.1:1: cannot reach NATS at 127.0.0.1:1") as e:
        await bus.publish(progress(1))
    assert e.value.exit_code == 1
