"""The output of one s3 load, staged and then put in place with a manifest.

Every object of the output (one object, or the files of a dataset under a prefix) is written as a
multipart upload straight to its final key and left uncompleted: S3 shows nothing of an upload
until it is completed, so readers see neither a partial object nor any temporary key. The commit,
after the stream ended cleanly and the sibling loads are ready (``ctx.prepare``):

1. completes every upload (the objects appear, each whole);
2. for a dataset, deletes the objects of the previous output that the new one did not overwrite
   (visible keys under the prefix with the output's suffix);
3. writes the manifest, ``.checkpoint.json`` inside a dataset's prefix, ``.<name>.checkpoint.json``
   next to a single object: run, task, rows, source position and the keys written.

A failure before step 1 aborts the uploads: the previous output stays as it was, whole. A crash
leaves uncompleted uploads, invisible, which a bucket's AbortIncompleteMultipartUpload lifecycle
rule (or the next load of the same task, which aborts those under its prefix) removes. Steps 1-3
take a few requests; a crash inside them leaves the new objects without their manifest, which a
resumed run treats as "not committed" and loads again (the output is replaced whole).
S3 has no multi-object rename, so a reader that lists a dataset during those requests may see
some of the new objects next to old ones; readers that need a snapshot read the manifest's keys.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from botocore.exceptions import ClientError

from agent_etl.tools.base import ToolContext
from agent_etl.tools.loaders.files import committed_in, manifest_text, mark_in
from agent_etl.tools.s3.client import S3Client
from agent_etl.tools.s3.listing import list_keys
from agent_etl.tools.s3.upload import PartUpload
from agent_etl.tools.s3.url import S3Url

UPLOAD_THREADS = 4  # parts and completions in flight for one load


class S3Output:
    """One object (``as_dir`` false: the url's key) or a dataset under the url's prefix."""

    def __init__(self, client: S3Client, url: S3Url, as_dir: bool, suffixes: tuple[str, ...], part_size: int,
                 task: str):
        self.client, self.bucket, self.as_dir, self.task = client, url.bucket, as_dir, task
        self.prefix = (url.key if url.key.endswith("/") or not url.key else url.key + "/") if as_dir else ""
        self.key = url.key
        self._suffixes, self._part_size = suffixes, part_size
        self._uploads: list[PartUpload] = []
        self._pool = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="agent-etl-s3-put")
        self.completed = False

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix if self.as_dir else self.key}"

    @property
    def manifest_key(self) -> str:
        if self.as_dir:
            return f"{self.prefix}.checkpoint.json"
        head, _, name = self.key.rpartition("/")
        return f"{head}/.{name}.checkpoint.json" if head else f".{name}.checkpoint.json"

    def check(self) -> None:
        """Fail early on a bucket that is missing or not ours to write; drop what an earlier crashed
        load of this output left uploading."""
        try:
            self.client.boto.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:  # a HEAD has no error code
                e.response.setdefault("Error", {})["Code"] = "NoSuchBucket"
            raise
        stale = self.client.boto.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix or self.key)
        for upload in stale.get("Uploads", []):
            if self.as_dir or upload["Key"] == self.key:
                with suppress(Exception):  # another writer may have finished it meanwhile
                    self.client.boto.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                            UploadId=upload["UploadId"])

    def open(self, rel: str = "") -> PartUpload:
        """A writable stream for the object ``rel`` of a dataset (or the single object)."""
        key = self.prefix + rel if self.as_dir else self.key
        upload = PartUpload(self.client, self.bucket, key, self._part_size, self._pool)
        self._uploads.append(upload)
        return upload

    def keys(self) -> list[str]:
        return [u.key for u in self._uploads]

    def commit(self, body: dict[str, Any]) -> None:
        """Steps 1-3 above; ``body`` is the manifest without the keys."""
        for done in [self._pool.submit(u.complete) for u in self._uploads]:
            done.result()
        self.completed = True
        new = set(self.keys())
        if self.as_dir:
            old = [o.key for o in list_keys(self.client, self.bucket, self.prefix, self.task)
                   if o.key not in new and o.key.lower().endswith(self._suffixes)
                   and not any(p.startswith(".") for p in o.key[len(self.prefix):].split("/"))]
            for i in range(0, len(old), 1000):
                self.client.boto.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": k} for k in old[i:i + 1000]], "Quiet": True})
        text = manifest_text({**body, "keys": sorted(new)})
        self.client.boto.put_object(Bucket=self.bucket, Key=self.manifest_key, Body=text.encode(),
                                    ContentType="application/json")

    def abort(self) -> None:
        """Drop every upload not completed (best effort: the error that brought us here is the one to report)."""
        if not self.completed:
            for upload in self._uploads:
                with suppress(Exception):
                    upload.abort()
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _manifest(self) -> str | None:
        try:
            body = self.client.boto.get_object(Bucket=self.bucket, Key=self.manifest_key)["Body"]
        except self.client.boto.exceptions.NoSuchKey:
            return None
        with body:
            return body.read().decode("utf-8", errors="replace")

    def committed(self, ctx: ToolContext) -> dict[str, Any] | None:
        """What the manifest says landed for ``ctx``'s run and task, if its objects are all still there."""
        text = self._manifest()
        found = committed_in(ctx, text)
        if found is None:
            return None
        try:
            keys = json.loads(text or "{}").get("keys") or []
        except ValueError:
            return None
        there = {o.key for o in list_keys(self.client, self.bucket, self.prefix or self.key, self.task)}
        return found if all(k in there for k in keys) else None

    def mark(self, ctx: ToolContext, source: str) -> dict[str, Any] | None:
        return mark_in(ctx, self._manifest(), source)
