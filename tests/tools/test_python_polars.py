"""tool: python with format: polars, through the CLI on real files: the function gets a polars
DataFrame made from the batch's Arrow buffers (no copy) and returns a polars DataFrame or an Arrow
table; without polars, validate and run stop with one line naming the extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

pl = pytest.importorskip("polars")

AGENT_ETL = str(Path(sys.executable).parent / "agent-etl")

PIPELINE = """\
version: 1
name: polars_udf
defaults: {{batch_size: 1000}}
extract:
  orders: {{tool: csv, path: orders.csv}}
transform:
  - name: scored
    input: orders
    tool: python
    function: "udf:{function}"
    format: polars
load:
  out: {{input: scored, tool: parquet, path: out/scored.parquet}}
"""

UDF = """\
import polars as pl
import pyarrow as pa


def score(df):
    assert isinstance(df, pl.DataFrame), type(df)
    return (df.filter(pl.col("status") == "paid")
              .with_columns((pl.col("amount") * pl.col("quantity")).alias("total"),
                            pl.col("status").str.to_uppercase().alias("status")))


def as_arrow(df):
    assert isinstance(df, pl.DataFrame), type(df)
    return df.select("order_id", (pl.col("amount") * 2).alias("double")).to_arrow()


def broken(df):
    return df.select("no_such_column")
"""


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "AGENT_ETL_HOME": str(cwd / ".agent-etl"), "AGENT_ETL_MEMORY": "off", **(env or {})}
    return subprocess.run([AGENT_ETL, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    n = 3500  # several batches of 1000
    orders = pa.table({"order_id": list(range(n)),
                       "status": ["paid" if i % 3 else "refunded" for i in range(n)],
                       "amount": [float(i % 50) + 0.5 for i in range(n)],
                       "quantity": [i % 4 + 1 for i in range(n)]})
    pacsv.write_csv(orders, tmp_path / "orders.csv")
    (tmp_path / "udf.py").write_text(UDF)
    return tmp_path


def pipeline(project: Path, function: str) -> str:
    (project / "pipeline.yaml").write_text(PIPELINE.format(function=function))
    return "pipeline.yaml"


def test_a_function_gets_and_returns_a_polars_dataframe(project: Path):
    r = cli("run", pipeline(project, "score"), cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    out = pq.read_table(project / "out" / "scored.parquet").sort_by("order_id")
    expected = [i for i in range(3500) if i % 3]
    assert out.column("order_id").to_pylist() == expected
    assert set(out.column("status").to_pylist()) == {"PAID"}
    assert out.column("total").to_pylist() == [(float(i % 50) + 0.5) * (i % 4 + 1) for i in expected]


def test_a_function_may_return_arrow_from_a_polars_frame(project: Path):
    r = cli("run", pipeline(project, "as_arrow"), cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    out = pq.read_table(project / "out" / "scored.parquet").sort_by("order_id")
    assert out.column_names == ["order_id", "double"]
    assert out.column("double").to_pylist() == [(float(i % 50) + 0.5) * 2 for i in range(3500)]


def test_a_polars_error_names_the_function_and_the_frame_it_got(project: Path):
    r = cli("run", pipeline(project, "broken"), cwd=project)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "udf:broken raised ColumnNotFoundError" in r.stderr
    assert "it gets a polars DataFrame per batch" in r.stderr


def test_without_polars_format_polars_is_a_spec_error_naming_the_extra(project: Path, tmp_path_factory):
    blocker = tmp_path_factory.mktemp("no_polars")  # this interpreter, as if polars were not installed
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['polars'] = None\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")]))}
    for command in ("validate", "run"):
        r = cli(command, pipeline(project, "score"), cwd=project, env=env)
        assert r.returncode == 2, (command, r.stdout, r.stderr)
        assert r.stderr.strip().splitlines() == [
            "error: pipeline.yaml: line 11: transform.0.format: format: polars needs the polars extra: "
            "pip install 'agent-etl[polars]'"], command
    assert not (project / "out").exists()


def test_the_frame_shares_the_batch_buffers(tmp_path: Path):
    from agent_etl.tools.base import ToolContext
    from agent_etl.tools.registry import default_registry

    cls = default_registry().get("transform", "python")
    tool = cls(cls.Config(function="udf:score", format="polars"), ToolContext(run_id="r1", task="t", base_dir=tmp_path,
                                                                                  home=tmp_path / ".agent-etl"))
    batch = pa.record_batch({"a": pa.array(range(100)), "b": pa.array([1.5] * 100)})
    frame = tool._arg(batch)
    assert isinstance(frame, pl.DataFrame)
    for name in ("a", "b"):  # the values buffer of each column is the batch's own
        assert frame[name].to_arrow().buffers()[1].address == batch.column(name).buffers()[1].address
    back = tool._batches(frame)
    assert back[0].column(0).buffers()[1].address == batch.column(0).buffers()[1].address
