import pytest

try:  # the S3 server of the s3 connector tests (moto, the test extra), for init on s3://
    from tests.connectors.s3.conftest import bucket, s3, s3_endpoint  # noqa: F401
except pytest.skip.Exception:
    pass
