"""Log lines name their run and task: text by default, JSON with --log-format json."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pyarrow as pa

from agent_etl import AgentCoordinator
from agent_etl.observe import logs
from agent_etl.tools.base import Extractor, ToolConfig


class Chatty(Extractor):
    class Config(ToolConfig):
        pass

    async def batches(self):
        logging.getLogger("tests.chatty").warning("reading %d rows", 2)
        yield pa.record_batch({"id": pa.array([1, 2], pa.int64())})


SPEC = """
version: 1
name: chatty
extract:
  talk: {tool: chatty}
load:
  out: {input: talk, tool: collect, key: chatty}
"""


async def run_logged(fmt, make_pipeline, registry, tmp_path):
    registry.register("extractor", "chatty", Chatty)
    stream = io.StringIO()
    handler = logs.configure("WARNING", fmt, stream)
    try:
        async with AgentCoordinator(registry=registry, home=tmp_path) as c:
            result = await c.run(make_pipeline(SPEC))
        logging.getLogger("tests.chatty").warning("after the run")
    finally:
        logging.getLogger().removeHandler(handler)
    assert result.ok
    return result, stream.getvalue().splitlines()


async def test_json_lines_carry_run_and_task(make_pipeline, registry, tmp_path):
    result, lines = await run_logged("json", make_pipeline, registry, tmp_path)
    records = [json.loads(line) for line in lines]
    (line,) = [r for r in records if r["message"] == "reading 2 rows"]
    assert line["run_id"] == result.run_id and line["task"] == "talk"
    assert line["level"] == "WARNING" and line["logger"] == "tests.chatty" and line["ts"].endswith("Z")
    (after,) = [r for r in records if r["message"] == "after the run"]
    assert after["run_id"] is None and after["task"] is None  # the run's context ended with it


async def test_text_lines_name_run_and_task(make_pipeline, registry, tmp_path):
    result, lines = await run_logged("text", make_pipeline, registry, tmp_path)
    assert f"WARNING tests.chatty [run {result.run_id} task talk]: reading 2 rows" in lines
    assert "WARNING tests.chatty: after the run" in lines


def test_cli_log_format_json(gated):
    (gated / "go").write_text("")
    (gated / "gate.py").write_text("import logging\n\ndef hold(table):\n"
                                   "    logging.getLogger('gate').warning('holding %d', table.num_rows)\n"
                                   "    return table\n")
    agent_etl = os.path.join(os.path.dirname(sys.executable), "agent-etl")
    env = {**os.environ, "AGENT_ETL_HOME": str(gated / ".agent-etl"), "AGENT_ETL_MEMORY": "off"}
    r = subprocess.run([agent_etl, "run", "pipeline.yaml", "-q", "--log-format", "json"], cwd=gated, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    held = [x for x in records if x["message"].startswith("holding")]
    assert len(held) == 4 and {(x["task"], len(x["run_id"])) for x in held} == {("held", 22)}
    bad = subprocess.run([agent_etl, "run", "pipeline.yaml", "--log-format", "xml"], cwd=gated, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "log format 'xml'" in bad.stderr and "Traceback" not in bad.stderr
