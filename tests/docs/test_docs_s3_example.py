"""examples/s3 (docs/connectors/s3.md) against the suite's moto S3 server: written as a partitioned
Parquet dataset and read back by glob (issue 17)."""

from __future__ import annotations

from pathlib import Path

from tests.connectors.s3.conftest import bucket, s3, s3_endpoint  # noqa: F401 - fixtures
from tests.docs.test_docs_examples import copy_example, run_ok


def test_s3_example(tmp_path: Path, s3_endpoint: str, bucket: str, s3):  # noqa: F811
    where = copy_example("s3", tmp_path)
    args = ("--var", f"BUCKET={bucket}", "--var", f"S3_ENDPOINT={s3_endpoint}")
    run_ok(where, *args, "pipeline.yaml")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"] if o["Key"].endswith(".parquet"))
    assert [k.split("/")[2] for k in keys] == ["country=DE", "country=FR", "country=NL"], keys
    run_ok(where, *args, "read.yaml")
    assert len((where / "out" / "orders_from_s3.csv").read_text().splitlines()) == 9  # header and 8 orders
