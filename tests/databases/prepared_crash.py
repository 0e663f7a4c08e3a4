"""A load killed between its PREPARE (XA or PREPARE TRANSACTION) and its COMMIT: a child process
loads three rows with a ``prepare`` hook that ends the process, so the prepared transaction is
left on the server for the test to settle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """\
import asyncio, os, sys
import pyarrow as pa
from agent_etl.testing import build, tool_context

tool, url, task, table, base = sys.argv[1:6]

async def prepare(final):
    os._exit(9)  # killed between PREPARE and COMMIT

async def main():
    ctx = tool_context(base, task=task, run_id="crash-run", connections={"db": {"url": url}},
                       position={"src": {"rows": 3}}, prepare=prepare)
    load = build("loader", tool, {"connection": "db", "table": table}, ctx)

    async def batches():
        yield pa.record_batch({"id": pa.array([1, 2, 3], pa.int64()), "v": ["a", "b", "c"]})

    await load.load(batches())

asyncio.run(main())
"""


def die_in_prepare(tmp_path: Path, tool: str, url: str, task: str, table: str) -> None:
    """Run the child for run ``crash-run``; it must die in its prepare (exit 9)."""
    script = tmp_path / "crash.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), tool, url, task, table, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 9, done.stderr
