"""The result cache through the Python API: a process that runs a pipeline again (a notebook, a
service) gets the second read from the memory tier, with the same rows."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from agent_etl import AgentCoordinator
from agent_etl.spec import Pipeline


async def test_second_run_in_process_hits_memory(tmp_path):
    pq.write_table(pa.table({"id": list(range(5000))}), tmp_path / "data.parquet")
    (tmp_path / "p.yaml").write_text("""\
version: 1
name: cached_api
extract:
  src: {tool: parquet, path: data.parquet, cache: {ttl: 10m}}
load:
  out: {input: src, tool: parquet, path: out/x.parquet}
""")
    async with AgentCoordinator(home=tmp_path / ".agent-etl") as c:
        first = await c.run(Pipeline.from_yaml(tmp_path / "p.yaml"))
        second = await c.run(Pipeline.from_yaml(tmp_path / "p.yaml"))
    assert first.tasks["src"].details["cache"]["status"] == "stored"
    hit = second.tasks["src"].details["cache"]
    assert hit["status"] == "hit" and hit["tier"] == "memory" and hit["rows"] == 5000
    assert second.tasks["out"].rows == 5000
    assert pq.read_table(tmp_path / "out" / "x.parquet").column("id").to_pylist() == list(range(5000))
