"""The two live views of a run, the terminal's Rich table and the notebook's HTML table, fed the same
run's events: a task's status and rows read the same in both (the one task board they share), and the
terminal shows the table at the end of a `agent-etl run` on a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
from pathlib import Path

import pyarrow.csv as pacsv
from rich.console import Console
from tests.cli.conftest import AGENT_ETL

from agent_etl import AgentCoordinator, Pipeline
from agent_etl.cli.progress import RichReporter
from agent_etl.notebook import Progress


def _break_products(qs: Path) -> Path:
    """The quickstart with its products file missing: products fails, what joins it is stopped, and
    the orders branch up to the join runs."""
    (qs / "data" / "products.jsonl").unlink()
    return qs / "pipeline.yaml"


def _terminal_rows(text: str) -> dict[str, list[str]]:
    """task -> the cells of its row in a rendered Rich table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) >= 4:
            rows[cells[0]] = cells
    return rows


async def test_both_views_show_one_run_alike(quickstart: Path):
    path = _break_products(quickstart)
    pipeline = Pipeline.from_yaml(path)
    events = []
    async with AgentCoordinator(home=quickstart / ".agent-etl") as c:
        sub = await c.bus.subscribe("*", _collect(events), maxsize=4096)
        result = await c.run(pipeline)
        await c.bus.drain()
        await sub.cancel()
    assert result.status == "failed"

    terminal, notebook = RichReporter(pipeline, enabled=False), Progress(result.run_id, pipeline)
    for ev in events:
        await terminal.on_event(ev)
        notebook.on_event(ev)
    console = Console(record=True, width=200, color_system=None)
    console.print(terminal._table())
    shown = _terminal_rows(console.export_text())
    page = notebook.html()

    assert result.tasks["products"].status == "failed"
    stopped = {n for n, t in result.tasks.items() if t.status == "upstream_failed"}
    assert {"enriched", "revenue_by_country"} <= stopped
    for name, task in result.tasks.items():
        cells = shown[name]
        word = "skipped" if task.status == "upstream_failed" else task.status
        assert cells[3] == word, (name, cells)
        assert cells[4] == f"{task.rows:,}", (name, cells)
        assert f"<td>{name}</td><td>{task.kind}</td><td><b style='color:" in page
        assert f">{task.status}</b></td><td style='text-align:right'>{task.rows:,}</td>" in page, name
    finished = sum(1 for t in result.tasks.values() if t.status in ("succeeded", "failed", "upstream_failed"))
    assert f"{finished} of {len(result.tasks)} tasks done" in page


def _collect(events: list):
    async def handler(ev) -> None:
        events.append(ev)

    return handler


def test_a_run_on_a_terminal_ends_with_the_task_table(quickstart: Path):
    path = _break_products(quickstart)
    leader, follower = pty.openpty()
    env = {**os.environ, "AGENT_ETL_HOME": str(quickstart / ".agent-etl"), "COLUMNS": "200", "TERM": "xterm"}
    proc = subprocess.Popen([AGENT_ETL, "run", path.name], cwd=quickstart, env=env, stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        assert ready, "no output from the run for 120 s"
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the run closed its terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 1, proc.stderr.read()
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", out).decode()
    final = text[text.rindex("quickstart_orders"):]  # the table as the run left it
    rows = _terminal_rows(final)
    orders = pacsv.read_csv(quickstart / "data" / "orders.csv").num_rows
    assert rows["orders"][:5] == ["orders", "extract", "csv", "succeeded", f"{orders:,}"], final
    assert rows["products"][3] == "failed" and rows["enriched"][3] == "skipped", final
