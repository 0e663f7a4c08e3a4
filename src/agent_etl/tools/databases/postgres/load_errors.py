"""The errors of the postgres loader (``loaders.postgres``) in words: what failed, where in the
input (a COPY's "line N" counted from the first input row), and what the user can do about it."""

from __future__ import annotations

import re
from typing import Any

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.tools.databases.postgres.encode import EncodeError
from agent_etl.tools.databases.transient import transient

_COPY_LINE = re.compile(r"^COPY .*?, line (\d+)")


def explain(e: BaseException, where: str, undone: str, copy_base: int, swap: Any = None) -> BaseException:
    """``e`` as the load's error: ``where`` the task and table, ``undone`` what stays of the load,
    ``copy_base`` the input rows before the COPY under way, ``swap`` a replace's new table (its
    temporary names shown as the old ones)."""
    import psycopg

    if isinstance(e, EncodeError):
        return ToolError(f"{where}: {e}; {undone}; cast or fix the column upstream")
    if not isinstance(e, psycopg.Error):
        return e
    diag = e.diag
    text = diag.message_primary or str(e).splitlines()[0]
    if diag.message_detail:
        text += f" ({diag.message_detail})"
    if diag.context and diag.context.startswith("COPY "):
        text += " at " + _COPY_LINE.sub(lambda m: f"input row {int(m[1]) + copy_base}", diag.context.splitlines()[0])
    if swap is not None:
        text = swap.shown(text)
    if isinstance(e, psycopg.errors.IntegrityError):
        return ToolError(f"{where}: a row violates a constraint: {text}; {undone}; fix the rows upstream "
                         "(e.g. a quality check) or the table's constraint")
    if isinstance(e, psycopg.errors.DataError):
        return ToolError(f"{where}: a value does not fit its column: {text}; {undone}; fix or cast the "
                         "values upstream, or widen the column")
    if transient(e):
        return TransientError(f"{where}: {text}; {undone}; it may succeed if tried again")
    return ToolError(f"{where}: {text}; {undone}")
