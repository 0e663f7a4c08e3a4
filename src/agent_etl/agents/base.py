"""What every agent has: an id, capabilities, a bus, a start/stop life cycle and a heartbeat."""

from __future__ import annotations

import asyncio
import uuid
from typing import ClassVar

from agent_etl.bus.base import EventBus, Subscription
from agent_etl.events import Heartbeat


class Agent:
    kind: ClassVar[str] = "agent"
    # what tasks the agent can run: "extract", "transform", "load" (optionally "extract:csv" for one tool)
    capabilities: frozenset[str] = frozenset()

    def __init__(self, bus: EventBus, *, agent_id: str | None = None, heartbeat_interval: float = 5.0):
        self.bus = bus
        self.id = agent_id or f"{self.kind}-{uuid.uuid4().hex[:6]}"
        self.heartbeat_interval = heartbeat_interval
        self.running: set[str] = set()  # "run_id/task" in progress
        self._subs: list[Subscription] = []
        self._beat: asyncio.Task | None = None
        self.started = False

    def can_run(self, kind: str, tool: str) -> bool:
        return kind in self.capabilities or f"{kind}:{tool}" in self.capabilities

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        await self.on_start()
        self._beat = asyncio.get_running_loop().create_task(self._heartbeat(), name=f"heartbeat:{self.id}")

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
        for sub in self._subs:
            await sub.cancel()
        self._subs.clear()
        await self.on_stop()

    async def on_start(self) -> None:
        """Subscribe to what the agent listens for."""

    async def on_stop(self) -> None:
        """Release what the agent holds."""

    async def beat(self) -> None:
        await self.bus.publish(Heartbeat(agent=self.id, kind=self.kind, running=sorted(self.running)))

    async def _heartbeat(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.heartbeat_interval)

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()
