import asyncio

import pytest

from agent_etl.bus.base import EventBus, NoResponder
from agent_etl.bus.memory import MemoryBus
from agent_etl.events import Heartbeat, TaskProgress, TaskStarted, parse_event


def progress(i: int) -> TaskProgress:
    return TaskProgress(run_id="r", task="t", agent="a", rows=1, rows_total=i, batches=i)


async def test_delivers_by_topic_and_wildcard_in_order():
    bus = MemoryBus()
    assert isinstance(bus, EventBus)
    got, everything = [], []

    async def on_progress(ev):
        got.append(ev.rows_total)

    async def on_any(ev):
        everything.append(ev.topic)

    bus.subscribe(TaskProgress, on_progress)
    bus.subscribe("*", on_any)
    for i in range(5):
        await bus.publish(progress(i))
    await bus.publish(TaskStarted(run_id="r", task="t", agent="a"))
    await bus.drain()
    assert got == [0, 1, 2, 3, 4]
    assert everything == ["task.progress"] * 5 + ["task.started"]
    await bus.close()


async def test_failing_subscriber_is_isolated(caplog):
    bus = MemoryBus()
    good = []

    async def bad(ev):
        if ev.rows_total % 2:
            raise RuntimeError("subscriber bug")

    async def fine(ev):
        good.append(ev.rows_total)

    bus.subscribe(TaskProgress, bad)
    bus.subscribe(TaskProgress, fine)
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

    bus.subscribe(TaskProgress, slow, maxsize=3)
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


async def test_request_reply_passes_payload_by_reference():
    bus = MemoryBus()
    payload = object()

    async def echo(p):
        return p

    bus.serve("echo", echo)
    assert await bus.request("echo", payload) is payload
    with pytest.raises(ValueError):
        bus.serve("echo", echo)
    with pytest.raises(NoResponder):
        await bus.request("nobody", 1)

    async def slow(p):
        await asyncio.sleep(5)

    bus.serve("slow", slow)
    with pytest.raises(TimeoutError):
        await bus.request("slow", 1, timeout=0.05)
    await bus.close()


def test_events_serialise_round_trip():
    ev = Heartbeat(agent="etl-1", kind="etl", running=["r/t"])
    assert parse_event(ev.topic, ev.model_dump_json()) == ev


async def test_listeners_run_inside_publish_and_are_isolated(caplog):
    bus = MemoryBus()
    seen = []

    def bad(ev):
        raise RuntimeError("listener bug")

    bus.listen(TaskProgress, bad)
    listener = bus.listen("*", lambda ev: seen.append(ev.rows_total))
    await bus.publish(progress(1))
    assert seen == [1]  # before publish returned, no drain needed
    assert bus.handler_errors == 1 and "listener bug" in caplog.text
    await listener.cancel()
    await bus.publish(progress(2))
    assert seen == [1]
    await bus.close()
