import asyncio

import pytest
from pydantic import BaseModel

from agent_etl.bus import open_bus
from agent_etl.bus.base import EventBus, NoResponder
from agent_etl.bus.memory import MemoryBus
from agent_etl.events import TaskProgress, TaskStarted


BACKENDS = ["memory"]  # the NATS JetStream backend joins here: every test that takes `bus` runs on each


@pytest.fixture(params=BACKENDS)
async def bus(request):
    """A bus of each backend, through ``open_bus``; closed after the test."""
    b = open_bus(request.param)
    yield b
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


async def test_failing_subscriber_is_isolated(caplog):
    bus = MemoryBus()
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
    await bus.close()


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


async def test_a_failed_handler_gets_the_event_again_up_to_max_deliver(caplog):
    bus = MemoryBus()
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
    await bus.close()


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
