"""A real S3 HTTP server for the s3 tests: moto's ThreadedMotoServer on a free loopback port, one
per test session, with fake credentials in the environment (the AWS chain finds them there), and a
bucket of its own for each test, deleted after it."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

moto_server = pytest.importorskip("moto.server", reason="moto[server] (the test extra) is not installed")
boto3 = pytest.importorskip("boto3", reason="boto3 (the s3 extra) is not installed")

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a moto S3 server running for the session."""
    saved = {k: os.environ.get(k) for k in [*ENV, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
    os.environ.update(ENV)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3(s3_endpoint: str):
    """A boto3 client on the test server."""
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def bucket(s3) -> Iterator[str]:
    """A new, empty bucket for one test; deleted with everything in it afterwards."""
    name = f"t-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=name)
    yield name
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name)
            for o in page.get("Contents", [])]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def ctx(tmp_path: Path):
    from agent_etl.tools.base import ToolContext

    return ToolContext(run_id="r1", task="t", base_dir=tmp_path, home=tmp_path / ".agent-etl")


@pytest.fixture
def put(s3, bucket):
    """Upload bytes (or a local file's) as ``key`` of the test bucket."""
    def put(key: str, data: bytes | Path) -> str:
        body = data.read_bytes() if isinstance(data, Path) else data
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    return put


@pytest.fixture
def keys(s3, bucket):
    """The keys in the test bucket (optionally under a prefix), sorted."""
    def keys(prefix: str = "") -> list[str]:
        return sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                      for o in page.get("Contents", []))

    return keys


@pytest.fixture
def uploads(s3, bucket):
    """The multipart uploads not completed nor aborted in the test bucket."""
    return lambda: s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
