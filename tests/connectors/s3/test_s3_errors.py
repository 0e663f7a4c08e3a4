"""Bad input to the s3 tools: one clear message each, naming the bucket, object or option and a fix."""

from __future__ import annotations

import json
import socket

import pyarrow as pa
import pytest
from pydantic import ValidationError

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.testing import build, run_extractor, run_loader, tool_context
from agent_etl.tools.s3.client import S3Client, explain
from agent_etl.tools.s3.options import S3Options


async def read(url, endpoint, tmp_path, **options):
    return await run_extractor("s3", {"url": url, "endpoint_url": endpoint, **options}, base_dir=tmp_path)


async def test_missing_bucket(s3_endpoint, tmp_path):
    with pytest.raises(ToolError, match=r"the bucket 'no-such-bucket-x1' does not exist at http://127\.0\.0\.1"):
        await read("s3://no-such-bucket-x1/in/*.csv", s3_endpoint, tmp_path)
    with pytest.raises(ToolError, match="the bucket 'no-such-bucket-x1' does not exist"):
        await run_loader("s3", {"url": "s3://no-such-bucket-x1/o.parquet", "endpoint_url": s3_endpoint},
                         pa.table({"a": [1]}), base_dir=tmp_path)


async def test_glob_or_key_that_matches_nothing(s3_endpoint, put, bucket, tmp_path):
    put("in/a.csv", b"a\n1\n")
    with pytest.raises(ToolError, match=r"the glob s3://\S+/in/\*\.parquet matches no object; objects there include "
                                        r"in/a\.csv"):
        await read(f"s3://{bucket}/in/*.parquet", s3_endpoint, tmp_path)
    with pytest.raises(ToolError, match=r"there is no object s3://\S+/in/b\.csv"):
        await read(f"s3://{bucket}/in/b.csv", s3_endpoint, tmp_path)


async def test_no_such_key_from_the_server(s3_endpoint, s3, bucket):
    """An object deleted between the listing and the read: the server's NoSuchKey, explained."""
    client = S3Client(S3Options(url=f"s3://{bucket}/x", endpoint_url=s3_endpoint))
    with pytest.raises(Exception) as info:
        client.boto.get_object(Bucket=bucket, Key="gone.csv")
    error = explain(info.value, "t", f"s3://{bucket}/gone.csv", client)
    assert isinstance(error, ToolError) and "no such object" in str(error) and "gone.csv" in str(error)
    client.close()


async def test_access_denied(s3_endpoint, s3, put, bucket, tmp_path):
    put("in/a.csv", b"a\n1\n")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
                                                      "Resource": f"arn:aws:s3:::{bucket}/*"}]}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    try:
        for whole in (64 << 20, 0):  # boto3's GET, pyarrow's ranged reads
            with pytest.raises(ToolError, match=r"cannot read s3://\S+/in/a\.csv: access denied .*credentials of the "
                                                r"AWS chain \(env\) may not read it") as info:
                await read(f"s3://{bucket}/in/*.csv", s3_endpoint, tmp_path, whole_object_max=whole)
            assert "testing" not in str(info.value)  # never a key
    finally:
        s3.delete_bucket_policy(Bucket=bucket)


async def test_unreachable_endpoint(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientError, match=rf"cannot reach the S3 endpoint http://127\.0\.0\.1:{port}.*check "
                                             "endpoint_url"):
        await read("s3://some-bucket/a.csv", f"http://127.0.0.1:{port}", tmp_path)


async def test_malformed_objects_are_named(s3_endpoint, put, bucket, tmp_path):
    put("bad/a.csv", b"id,name\n1,ann\n2,bob,extra\n")
    with pytest.raises(ToolError, match=rf"s3://{bucket}/bad/a\.csv: row 3 has 3 fields where the header has 2"):
        await read(f"s3://{bucket}/bad/a.csv", s3_endpoint, tmp_path)
    put("bad/b.parquet", b"PAR1 this is not parquet")
    for whole in (64 << 20, 0):
        with pytest.raises(ToolError, match=rf"cannot read parquet file s3://{bucket}/bad/b\.parquet"):
            await read(f"s3://{bucket}/bad/b.parquet", s3_endpoint, tmp_path, whole_object_max=whole)
    put("bad/c.jsonl.gz", b"not gzip at all")
    with pytest.raises(ToolError, match=rf"s3://{bucket}/bad/c\.jsonl\.gz"):
        await read(f"s3://{bucket}/bad/c.jsonl.gz", s3_endpoint, tmp_path)


@pytest.mark.parametrize("key", ["aws_secret_access_key", "secret_key", "aws_access_key_id"])
def test_access_keys_in_the_spec_are_refused_without_echoing_them(key, tmp_path):
    from agent_etl.tools.registry import default_registry

    for kind in ("extractor", "loader"):
        cls = default_registry().get(kind, "s3")
        with pytest.raises(ValidationError) as info:
            cls.Config.model_validate({"url": "s3://bkt/a.csv", key: "SUPERSECRETVALUE"})
        text = str(info.value)
        assert f"access keys do not go in the spec (found {key})" in text and "AWS_ACCESS_KEY_ID" in text
        assert "SUPERSECRETVALUE" not in text
    with pytest.raises(ValidationError) as info:
        S3Options.model_validate({"url": "s3://bkt/a.csv", "endpoint_url": "http://me:SUPERSECRETVALUE@host:9000"})
    assert "SUPERSECRETVALUE" not in str(info.value) and "must not hold a user or password" in str(info.value)


def test_format_options_are_checked_with_a_hint(tmp_path):
    with pytest.raises(ValidationError, match=r"unknown option 'delimter' \(did you mean 'delimiter'\?\)"):
        build("extractor", "s3", {"url": "s3://bkt/a.csv", "delimter": ";"}, tool_context(tmp_path))
    with pytest.raises(ValidationError, match="cannot tell the format"):
        build("extractor", "s3", {"url": "s3://bkt/data/x"}, tool_context(tmp_path))
    with pytest.raises(ValidationError, match="partition_by writes a dataset under a prefix"):
        build("loader", "s3", {"url": "s3://bkt/x.parquet", "partition_by": ["a"]}, tool_context(tmp_path))


async def test_unknown_profile(s3_endpoint, tmp_path):
    with pytest.raises(ToolError, match=r"AWS profile 'nope' is not in the AWS config .* fix profile"):
        await read("s3://some-bucket/a.csv", s3_endpoint, tmp_path, profile="nope")
