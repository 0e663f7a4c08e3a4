"""s3 pipelines run as a user runs them: a YAML file through ``agent-etl run``."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

AGENT_ETL = str(Path(sys.executable).parent / "agent-etl")


def cli(*args: str, cwd: Path, endpoint: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENT_ETL_HOME": str(cwd / ".agent-etl"), "S3_ENDPOINT": endpoint}
    return subprocess.run([AGENT_ETL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def rows(n: int, bad_at: int | None = None) -> bytes:
    lines = ["id,kind,amount"] + [f"{i},{'ab'[i % 2]},{i * 0.5}" for i in range(n)]
    if bad_at is not None:
        lines[bad_at + 1] = f"{bad_at},x,1,2"  # one field too many
    return ("\n".join(lines) + "\n").encode()


def test_s3_to_parquet(s3_endpoint, put, bucket, tmp_path):
    put("in/2024-01.csv.gz", gzip.compress(rows(1500)))
    put("in/2024-02.csv.gz", gzip.compress(rows(500)))
    (tmp_path / "p.yaml").write_text(f"""\
version: 1
name: s3_in
extract:
  orders:
    tool: s3
    url: s3://{bucket}/in/*.csv.gz
    endpoint_url: ${{S3_ENDPOINT}}
    column_types: {{amount: float64}}
load:
  lake:
    input: orders
    tool: parquet
    path: out/orders.parquet
""")
    r = cli("run", "p.yaml", cwd=tmp_path, endpoint=s3_endpoint)
    assert r.returncode == 0, r.stderr + r.stdout
    out = pq.read_table(tmp_path / "out" / "orders.parquet")
    assert out.num_rows == 2000 and out.column("id").to_pylist()[:3] == [0, 1, 2]


def test_csv_to_s3_partitioned(s3_endpoint, s3, bucket, keys, uploads, tmp_path):
    (tmp_path / "orders.csv").write_bytes(rows(3000))
    (tmp_path / "p.yaml").write_text(f"""\
version: 1
name: s3_out
extract:
  orders:
    tool: csv
    path: orders.csv
load:
  lake:
    input: orders
    tool: s3
    url: s3://{bucket}/orders/
    format: csv
    partition_by: [kind]
    endpoint_url: ${{S3_ENDPOINT}}
""")
    r = cli("run", "p.yaml", cwd=tmp_path, endpoint=s3_endpoint)
    assert r.returncode == 0, r.stderr + r.stdout
    assert keys() == ["orders/.checkpoint.json", "orders/kind=a/part-0.csv", "orders/kind=b/part-0.csv"]
    body = s3.get_object(Bucket=bucket, Key="orders/kind=a/part-0.csv")["Body"].read()
    assert pacsv.read_csv(io.BytesIO(body)).num_rows == 1500 and uploads() == []


def test_failed_run_leaves_no_partial_dataset(s3_endpoint, put, keys, uploads, bucket, tmp_path):
    """The source breaks after many batches went to the load: exit 1, nothing visible, no upload left."""
    put("keep/old.csv", b"id\n1\n")
    (tmp_path / "orders.csv").write_bytes(rows(400_000, bad_at=390_000))
    (tmp_path / "p.yaml").write_text(f"""\
version: 1
name: s3_fail
defaults:
  batch_size: 20000
  retries: {{max_attempts: 1}}
extract:
  orders:
    tool: csv
    path: orders.csv
    block_size: 1048576
load:
  lake:
    input: orders
    tool: s3
    url: s3://{bucket}/orders/
    format: jsonl  # written as it comes: parts go up before the source breaks
    part_size: 5242880
    endpoint_url: ${{S3_ENDPOINT}}
""")
    r = cli("run", "p.yaml", cwd=tmp_path, endpoint=s3_endpoint)
    assert r.returncode == 1, r.stderr + r.stdout
    assert "row 390002 has 4 fields where the header has 3" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr + r.stdout
    assert keys() == ["keep/old.csv"] and uploads() == []


def test_access_keys_in_the_yaml_are_a_spec_error(s3_endpoint, bucket, tmp_path):
    (tmp_path / "p.yaml").write_text(f"""\
version: 1
name: s3_keys
extract:
  orders:
    tool: s3
    url: s3://{bucket}/in/*.csv
    aws_secret_access_key: wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY
load:
  lake: {{input: orders, tool: parquet, path: out/x.parquet}}
""")
    r = cli("run", "p.yaml", cwd=tmp_path, endpoint=s3_endpoint)
    assert r.returncode == 2, r.stderr + r.stdout
    assert "access keys do not go in the spec" in r.stderr + r.stdout
    assert "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY" not in r.stderr + r.stdout


def test_a_connection_names_the_endpoint(s3_endpoint, put, bucket, tmp_path):
    put("in/a.csv", rows(10))
    (tmp_path / "p.yaml").write_text(f"""\
version: 1
name: s3_conn
connections:
  minio: {{url: "${{S3_ENDPOINT}}", region: us-east-1}}
extract:
  orders: {{tool: s3, connection: minio, url: "s3://{bucket}/in/*.csv"}}
load:
  copy: {{input: orders, tool: s3, connection: minio, url: "s3://{bucket}/out/orders.jsonl"}}
""")
    r = cli("run", "p.yaml", cwd=tmp_path, endpoint=s3_endpoint)
    assert r.returncode == 0, r.stderr + r.stdout
    (tmp_path / "p.yaml").write_text((tmp_path / "p.yaml").read_text().replace(
        "region: us-east-1", "region: us-east-1, aws_secret_access_key: NOTREALLYSECRET"))
    r = cli("run", "p.yaml", cwd=tmp_path, endpoint=s3_endpoint)
    assert r.returncode == 2 and "access keys do not go in a connection either" in r.stderr + r.stdout
    assert "NOTREALLYSECRET" not in r.stderr + r.stdout
