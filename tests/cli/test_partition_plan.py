"""`agent-etl plan` says what a run spread over workers makes of each partitioned source: copies
of its branch, one per partition, or one branch and why (agents.partition_plan)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

AGENT_ETL = os.environ.get("AGENT_ETL_CLI") or str(Path(sys.executable).parent / "agent-etl")

PIPE = """
version: 1
name: plan_copies
connections:
  pg: {url: "postgresql://u@127.0.0.1:5432/test"}
extract:
  merged: {tool: postgres, connection: pg, table: a, partitions: 4, partition_on: id}
  replaced: {tool: postgres, connection: pg, table: b, partitions: 2, partition_on: id}
  files: {tool: parquet, path: "data/*.parquet", partitions: 3}
  one_file: {tool: csv, path: "data/*.csv", partitions: 2}
  inc: {tool: postgres, connection: pg, table: c, partitions: 2, partition_on: id, incremental: {cursor: id}}
  plain: {tool: postgres, connection: pg, table: d}
  objects: {tool: s3, url: "s3://bucket/in/*.csv", partitions: 3}
  rejects: {tool: parquet, path: "data/r*.parquet", partitions: 2}
  warned: {tool: parquet, path: "data/w*.parquet", partitions: 2}
  keyed: {tool: postgres, connection: pg, table: e, partitions: 2, partition_on: id}
  counted: {tool: postgres, connection: pg, table: g, partitions: 2, partition_on: id}
  rowwise: {tool: postgres, connection: pg, table: h, partitions: 2, partition_on: id}
transform:
  - {name: whole, input: files, tool: sql, query: "select count(*) as n from files"}
  - {name: checked, input: rejects, tool: validate, checks: [{not_null: [id]}], on_failure: quarantine}
  - {name: looked_at, input: warned, tool: validate, checks: [{not_null: [id]}], on_failure: warn}
load:
  m: {input: merged, tool: postgres, connection: pg, table: m, mode: merge, key: [id]}
  r: {input: replaced, tool: postgres, connection: pg, table: r, mode: replace}
  f: {input: files, tool: parquet, path: out/f/}
  w: {input: whole, tool: postgres, connection: pg, table: w}
  o: {input: one_file, tool: parquet, path: out/o.parquet}
  i: {input: inc, tool: postgres, connection: pg, table: i}
  p: {input: plain, tool: postgres, connection: pg, table: p}
  s: {input: objects, tool: postgres, connection: pg, table: s}
  c: {input: checked, tool: parquet, path: out/c/}
  l: {input: looked_at, tool: parquet, path: out/l/}
  k: {input: keyed, tool: postgres, connection: pg, table: k}
  g: {input: counted, tool: postgres, connection: pg, table: g2}
  h: {input: rowwise, tool: postgres, connection: pg, table: h2}
quality:
  - {input: keyed, checks: [{unique: [id]}, {not_null: [id]}]}
  - {input: counted, on_failure: warn, checks: [{row_count: {min: 1000}}]}
  - {input: rowwise, checks: [{not_null: [id]}, {range: {column: id, min: 0}}, {schema: {columns: {id: int64}}}]}
"""


def plan(tmp_path: Path, *args: str) -> str:
    (tmp_path / "p.yaml").write_text(PIPE)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AGENT_ETL_")}, "AGENT_ETL_MEMORY": "off",
           "AGENT_ETL_HOME": str(tmp_path / "home")}
    done = subprocess.run([AGENT_ETL, "plan", "p.yaml", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_plan_says_which_partitioned_sources_become_copies_over_workers_and_why_not(tmp_path):
    tasks = {t["task"]: t for t in json.loads(plan(tmp_path, "--json"))["tasks"]}
    said = {name: (t["distributed"]["copies"], t["distributed"]["reason"]) for name, t in tasks.items()
            if "distributed" in t}
    assert said["merged"] == (True, "up to 4 copies of its branch, one per partition, spread over the workers")
    assert said["replaced"][0] is False and "load 'r' replaces its table" in said["replaced"][1]
    assert said["files"][0] is False and "transform 'whole' (sql) needs the whole stream" in said["files"][1]
    assert said["one_file"][0] is False and "load 'o' (parquet) takes one writer" in said["one_file"][1]
    assert said["inc"] == (False, "an incremental source's next mark is one value over its whole read")
    # S3 objects: groups of them, by size, one per copy
    assert said["objects"] == (True, "up to 3 copies of its branch, one per group of objects of about equal size, "
                                     "spread over the workers")
    # a validate step that quarantines would have every copy write the quarantine: one branch
    assert said["rejects"] == (False, "validate step 'checked' quarantines failing rows (copies would each write "
                                      "the quarantine)")
    # any other validate step judges its whole stream (a dataset check, the failures counted over all rows)
    assert said["warned"] == (False, "transform 'looked_at' (validate) needs the whole stream")
    # checks judged over all the rows: a key repeated in two copies, a count, would go unseen
    assert said["keyed"] == (False, "'keyed' has a check judged over all its rows (unique(id)), which a copy "
                                    "seeing its part alone could not judge")
    assert said["counted"][0] is False and "(row_count)" in said["counted"][1]
    # row checks (and the schema) judge each row, or each copy's batches, alike
    assert said["rowwise"][0] is True
    assert set(said) == {"merged", "replaced", "files", "one_file", "inc", "objects", "rejects", "warned", "keyed",
                         "counted", "rowwise"}
    text = plan(tmp_path)
    assert "over workers: up to 4 copies of its branch" in text
    assert "over workers: one branch: load 'r' replaces its table" in text
