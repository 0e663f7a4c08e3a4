"""An aiohttp application served on 127.0.0.1 (a free port) from a thread with its own event loop,
so a CLI run in a child process can reach it as well as a test's own loop. The test APIs of the
connector, bad-input, docs and leak tests run in it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class ThreadedApp:
    def __init__(self, app: Any):  # an aiohttp.web.Application
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self.runner: Any = None

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def start(self) -> ThreadedApp:
        self.thread.start()
        assert self.ready.wait(10), "the test API did not start"
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
