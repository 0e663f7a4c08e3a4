"""What the two-phase commit of MariaDB/MySQL (``mysql.xa``) and PostgreSQL (``postgres.twophase``) share:
the shape of a name that fits the server's limit, and how a prepared transaction a crash left
behind is settled by the run store's decision.

A prepared transaction of unit ``unit`` of run ``run`` is committed if the commit barrier decided
that unit (``ctx.decided(run, unit)`` True), rolled back if it did not (False: presumed abort),
and left alone if the run store does not know the run (None: another pipeline's load of the same
task name). Without ``ctx.decided`` (a tool run alone) nothing is settled, with a warning.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "agent-etl/"


def fit(value: str, room: int) -> str:
    """``value`` if its UTF-8 takes at most ``room`` bytes, else ``#`` and its SHA-1."""
    if len(value.encode()) <= room:
        return value
    return "#" + hashlib.sha1(value.encode()).hexdigest()


def settle(ctx: Any, found: list[tuple[str, int, Any]], end: Callable[[Any, bool], bool | None], kind: str,
           shown: Callable[[Any], str] = str) -> list[tuple[str, int, bool]]:
    """End each prepared transaction ``(run as named, unit, handle)`` of ``found`` by ``end(handle,
    commit)`` as the run store decided (``end`` returns False if it could not); (run id, unit,
    committed) of those ended."""
    if not found:
        return []
    decided = getattr(ctx, "decided", None)
    if decided is None:
        log.warning("task %r: %d prepared %s transaction(s) of this load are left on the server (%s): no run store "
                    "to say whether to commit them; they hold their locks until settled (commit or roll back)",
                    ctx.task, len(found), kind, ", ".join(shown(h) for _, _, h in found))
        return []
    out = []
    for run, unit, handle in found:
        run_id = ctx.run_id if run.startswith("#") and fit(ctx.run_id, 0) == run else run
        if run.startswith("#") and run_id == run:
            log.warning("task %r: prepared %s transaction %s belongs to a run whose id is hashed; left as it is",
                        ctx.task, kind, shown(handle))
            continue
        verdict = decided(run_id, unit)
        if verdict is None:  # a run this run store does not know: another pipeline's, not ours to settle
            continue
        commit = bool(verdict)
        if end(handle, commit) is False:  # it could not (said why)
            continue
        log.warning("task %r: settled prepared %s transaction of run %s unit %d left by a crash: %s", ctx.task, kind,
                    run_id, unit, "committed (the commit was decided)" if commit else "rolled back (no decision)")
        out.append((run_id, unit, commit))
    return out
