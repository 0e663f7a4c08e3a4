"""``agent-etl worker``: a long-running process that takes branches from the broker (agents.worker)."""

from __future__ import annotations

import asyncio
import signal
import sys

from agent_etl.bus import BusError


def worker_command(url: str, concurrency: int, tags: list[str], heartbeat: float, metrics_port: int | None = None,
                   log_format: str | None = None) -> int:
    from agent_etl.agents.worker import Worker
    from agent_etl.bus import open_bus
    from agent_etl.observe import logs
    from agent_etl.settings import Settings

    settings = Settings()
    logs.configure(settings.log_level, log_format or settings.log_format)
    if not url.startswith(("nats://", "tls://")):
        raise BusError(f"a worker takes its branches from a broker: --bus nats://host:port, not {url!r}")

    async def main() -> int:
        bus = open_bus(url)
        worker = Worker(bus, concurrency=concurrency, tags=tags, interval=heartbeat)
        signals: list[int] = []
        stopping = asyncio.Event()

        def on_signal() -> None:
            signals.append(1)
            stopping.set()
            if len(signals) > 1:
                print(f"worker {worker.id}: handing back the running branches", file=sys.stderr)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        monitor = server = None
        try:
            await worker.start()
            if metrics_port is not None:  # the work of this worker's agents: rows, batches, durations, commits
                from agent_etl.agents.monitor import MonitorAgent
                from agent_etl.observe.metrics import serve

                monitor = MonitorAgent(bus, heartbeat_interval=heartbeat, scope={worker.etl.id, worker.quality.id})
                await monitor.start()
                server = serve(monitor, metrics_port, settings.metrics_host)
            print(f"worker {worker.id} ready on {bus.server} (concurrency {concurrency}"
                  f"{', tags ' + ','.join(worker.tags) if worker.tags else ''})", file=sys.stderr, flush=True)
            await stopping.wait()
            if worker.branches:
                print(f"worker {worker.id}: finishing {len(worker.branches)} branch(es); again to hand them back",
                      file=sys.stderr, flush=True)
            stop = loop.create_task(worker.stop(finish=True))
            while not stop.done():
                stopping.clear()
                waiter = loop.create_task(stopping.wait())
                await asyncio.wait({stop, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if len(signals) > 1 and not stop.done():
                    for key in list(worker.branches):
                        for w in [w for w in worker.etl._work if w.get_name().startswith(f"{key[0]}/")]:
                            w.cancel()
            await stop
        finally:
            if server is not None:
                server.close()
            if monitor is not None:
                await monitor.stop()
            await bus.close()
        return 0

    return asyncio.run(main())
