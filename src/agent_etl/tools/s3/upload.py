"""A writable binary stream into one S3 multipart upload, whose object appears only when the upload
is completed (``complete()``, at the commit): until then nothing of it is visible to readers, and
``abort()`` drops its parts. Parts go up in the background while the writer encodes the next one.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from typing import Any

from agent_etl.tools.s3.client import S3Client

MIN_PART = 5 << 20  # S3's smallest part but the last
MAX_PARTS = 10_000  # S3's most parts per upload


class PartUpload:
    """``write`` / ``tell`` / ``flush`` / ``close`` as a file; parts of ``part_size`` bytes (growing past
    1,000 parts so that an object can reach S3's 5 TB within 10,000 parts), one in flight at a time."""

    def __init__(self, client: S3Client, bucket: str, key: str, part_size: int, pool: Executor):
        self.bucket, self.key = bucket, key
        self._client, self._part_size, self._pool = client, max(part_size, MIN_PART), pool
        self.upload_id: str = client.boto.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        self._buf = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._sending: Future[None] | None = None
        self._written = 0
        self.closed = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        self._buf += data
        self._written += n
        if len(self._buf) >= self._part_size * (1 + len(self._parts) // 1000):
            self._send()
        return n

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass

    def _send(self) -> None:
        self._wait()
        body, self._buf = bytes(self._buf), bytearray()
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise OSError(f"s3://{self.bucket}/{self.key} would need more than {MAX_PARTS} parts")
        self._parts.append({"PartNumber": number})
        self._sending = self._pool.submit(self._upload, body, number)

    def _upload(self, body: bytes, number: int) -> None:
        etag = self._client.boto.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                             PartNumber=number, Body=body)["ETag"]
        self._parts[number - 1]["ETag"] = etag

    def _wait(self) -> None:
        if self._sending is not None:
            sending, self._sending = self._sending, None
            sending.result()

    def close(self) -> None:
        """All parts uploaded (the last may be short); the object is not there until ``complete()``."""
        if self.closed:
            return
        if self._buf or not self._parts:  # an empty object is one empty part
            self._send()
        self._wait()
        self.closed = True

    def complete(self) -> None:
        self._client.boto.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                    MultipartUpload={"Parts": self._parts})

    def abort(self) -> None:
        self.closed = True
        sending, self._sending = self._sending, None
        if sending is not None:
            sending.cancel()
            try:
                sending.result()
            except BaseException:  # noqa: BLE001 - the upload is being dropped
                pass
        self._client.boto.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
