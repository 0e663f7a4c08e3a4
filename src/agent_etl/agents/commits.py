"""Commit units across the loads of one input (``commit_every``, ``defaults.commit``).

- ``UnitClock`` decides, on the side that produces the loads' input, which batch ends a commit
  unit: every ``rows`` rows or ``seconds`` seconds, whichever comes first. The mark travels on the
  batch's envelope, so every load of the input ends its units at the same batch, and their
  checkpoints name the same source position.
- ``CommitBarrier`` holds the sibling loads of one input at each commit until all have prepared
  (``commit: together``): then all commit; if one fails first, the others roll their unit back
  (``SiblingFailed``). Unit rounds involve the loads that commit in units; the final round, after
  the stream has ended, every load of the input. When a round is complete, and before anyone is
  released, ``decide`` records the decision ((load, its unit number: its rounds counted from 1,
  the final one included) for each member) in the run store: a load that prepared its unit (XA)
  and crashed before its commit is settled by it (``tools.databases.mysql.xa``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from agent_etl.exceptions import SiblingFailed

log = logging.getLogger(__name__)


class UnitClock:
    __slots__ = ("rows", "seconds", "_rows", "_since")

    def __init__(self, rows: int | None, seconds: float | None):
        self.rows, self.seconds = rows, seconds
        self._rows = 0
        self._since = time.monotonic()

    def due(self, rows: int) -> bool:
        """Count a batch of ``rows``; true when it ends a unit (and the next unit starts)."""
        self._rows += rows
        now = time.monotonic()
        if (self.rows is not None and self._rows >= self.rows) or (
                self.seconds is not None and now - self._since >= self.seconds):
            self._rows, self._since = 0, now
            return True
        return False


class CommitBarrier:
    """One barrier per input, shared by its sibling loads in one attempt of a branch."""

    def __init__(self, loads: list[str], unit_loads: list[str],
                 decide: Callable[[list[tuple[str, int]]], None] | None = None):
        self.decide = decide  # records [(load, unit)] of a complete round before it is released
        self.loads = set(loads)
        self.unit_loads = set(unit_loads)
        self._arrived: dict[tuple[str, int], set[str]] = {}  # round -> loads that prepared
        self._rounds: dict[str, int] = {}  # load -> unit rounds it has passed
        self._open: dict[tuple[str, int], asyncio.Future] = {}
        self.failed: str | None = None
        self._refused: set[tuple[str, int]] = set()  # rounds whose decision could not be recorded

    async def prepare(self, load: str, final: bool) -> None:
        if self.failed is not None:
            raise SiblingFailed(f"load {load!r} rolled back its commit: sibling load {self.failed!r} of the same "
                                "input failed (defaults.commit: together)")
        if final:
            key, members = ("final", 0), self.loads
        else:
            n = self._rounds.get(load, 0) + 1
            self._rounds[load] = n
            key, members = ("unit", n), self.unit_loads
        arrived = self._arrived.setdefault(key, set())
        arrived.add(load)
        fut = self._open.get(key)
        if fut is None:
            fut = self._open[key] = asyncio.get_running_loop().create_future()
        if members <= arrived:
            if not fut.done():
                try:
                    self._decide(key, arrived)
                except BaseException:  # no decision recorded: nobody commits this round
                    self._refused.add(key)
                    self.fail(load)
                    raise
                finally:
                    if not fut.done():
                        fut.set_result(None)
            return
        await asyncio.shield(fut)
        if key in self._refused:
            raise SiblingFailed(f"load {load!r} rolled back its commit: the commit decision could not be recorded")
        if self.failed is not None and not (members <= self._arrived[key]):
            raise SiblingFailed(f"load {load!r} rolled back its commit: sibling load {self.failed!r} of the same "
                                "input failed (defaults.commit: together)")

    def _decide(self, key: tuple[str, int], arrived: set[str]) -> None:
        """Record the commit of round ``key`` for the loads that prepared in it (one store write)."""
        if self.decide is None or not arrived:
            return
        if key[0] == "final":
            members = [(load, self._rounds.get(load, 0) + 1) for load in sorted(arrived)]
        else:
            members = [(load, key[1]) for load in sorted(arrived)]
        self.decide(members)

    def finished(self, load: str) -> None:
        """``load`` ended without failing. One that never called ``prepare`` (a loader written
        before commit units, committing on its own) must not keep its siblings waiting."""
        self.unit_loads.discard(load)
        self.loads.discard(load)
        for key, fut in self._open.items():
            members = self.loads if key[0] == "final" else self.unit_loads
            if not fut.done() and members <= self._arrived.get(key, set()):
                try:
                    self._decide(key, self._arrived[key])
                except Exception:  # the loads waiting roll back (SiblingFailed)
                    log.exception("the commit decision of loads %s could not be recorded", sorted(self._arrived[key]))
                    self._refused.add(key)
                finally:
                    fut.set_result(None)

    def fail(self, load: str) -> None:
        """``load`` failed: every sibling waiting at the barrier, or arriving later, rolls back."""
        if load not in self.loads or self.failed is not None:
            return
        self.failed = load
        for fut in self._open.values():
            if not fut.done():
                fut.set_result(None)
