"""When a stream read stops, and when a micro-batch is handed on.

Bounded (``mode: bounded``, the default): after ``max_messages``, after ``max_seconds``, or once caught
up (no new message for ``idle_seconds``), whichever comes first. Continuous: never by itself; it stops
on a stop request. Either way a stop request ends the read cleanly: the micro-batch being gathered is
handed on, the loads commit it, the source acknowledges it, and the run ends.

Stop requests are process-wide because signals are: ``request_stop()`` (the CLI calls it on SIGINT or
SIGTERM) tells every stream read running in the process to stop, and says how many were told, so the
CLI cancels the run at once as before when no stream read is running (or on a second signal).
"""

from __future__ import annotations

import asyncio
import time

from agent_etl.tools.streams.options import SourceOptions

_reads: set[asyncio.Event] = set()


def request_stop() -> int:
    """Ask every stream read of this process to stop after its current micro-batch; how many there are."""
    for ev in list(_reads):
        ev.set()
    return len(_reads)


class StopRules:
    def __init__(self, options: SourceOptions):
        self.options = options
        self.continuous = options.mode == "continuous"
        self.started = time.monotonic()
        self.read = 0  # messages taken into batches (not those dropped as already committed)
        self.stopping = asyncio.Event()
        self.caught_up = False

    def __enter__(self) -> StopRules:
        _reads.add(self.stopping)
        return self

    def __exit__(self, *exc: object) -> None:
        _reads.discard(self.stopping)

    def budget(self, want: int) -> int:
        """How many more messages to ask for, at most ``want`` (0: the message budget is spent)."""
        if self.options.max_messages is None:
            return want
        return max(0, min(want, self.options.max_messages - self.read))

    def wait(self, longest: float) -> float:
        """How long a read may wait for messages: no longer than ``longest``, the idle time, or what is
        left of ``max_seconds``."""
        out = min(longest, self.options.idle_seconds) if not self.continuous else longest
        if self.options.max_seconds is not None:
            out = min(out, max(0.0, self.options.max_seconds - (time.monotonic() - self.started)))
        return max(out, 0.001)

    def done(self) -> bool:
        """Whether the read ends now (the micro-batch under way is still handed on)."""
        if self.stopping.is_set():
            return True
        if self.continuous:
            return False
        if self.caught_up or self.budget(1) == 0:
            return True
        return self.options.max_seconds is not None and time.monotonic() - self.started >= self.options.max_seconds


class BatchClock:
    """A micro-batch is due when it has ``batch_size`` messages, or (continuous) ``target_latency`` after
    its first message arrived."""

    def __init__(self, options: SourceOptions):
        self.size, self.latency = options.batch_size, options.target_latency
        self.first: float | None = None

    def started(self) -> None:
        if self.first is None:
            self.first = time.monotonic()

    def left(self) -> float:
        """Seconds until the batch under way is due by time (the latency if none is under way)."""
        if self.first is None:
            return self.latency
        return max(0.0, self.latency - (time.monotonic() - self.first))

    def reset(self) -> None:
        self.first = None
