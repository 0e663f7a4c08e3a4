"""S3 objects as ``StoredFile``s for the file readers, and the read-ahead that fetches several at once.

An object up to ``whole_max`` bytes is fetched whole with one GET, by a pool of threads that runs
ahead of the reader (up to ``concurrency`` objects and ``budget`` bytes ahead, in read order): on
many small objects the reader then waits for latency once, not once per object. A larger object is
never held whole: Parquet and uncompressed CSV/JSON are read by ranged GETs (pyarrow.fs), a
compressed object by one streaming GET that a thread reads a few 8 MiB chunks ahead (``StreamAhead``:
reads that wait for the network one small buffer at a time made gzip CSV over S3 6-7x slower, see
the anchors).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa

from agent_etl.tools.extractors.file_source import StoredFile
from agent_etl.tools.s3.client import S3Client

CODECS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".lz4": "lz4"}


def codec_for(name: str, compression: str) -> str | None:
    """The Arrow codec of an object: ``compression`` (auto: from the name's last suffix), None for none."""
    if compression == "none":
        return None
    if compression != "auto":
        return compression
    lower = name.lower()
    return next((codec for suffix, codec in CODECS.items() if lower.endswith(suffix)), None)


class StreamAhead:
    """A read-only file over one streaming GET, read ahead by a thread into a few chunks: fetching
    the next bytes overlaps with decompressing and parsing those before (Arrow's S3 stream fetches
    a buffer only when it is asked for one). Memory: at most ``depth`` chunks."""

    def __init__(self, obj: S3Object, chunk: int = 8 << 20, depth: int = 3):
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(depth)
        self._body = obj._client.boto.get_object(Bucket=obj.bucket, Key=obj.key)["Body"]
        self._chunk, self._left, self._pos, self.closed = chunk, memoryview(b""), 0, False
        self._thread = threading.Thread(target=self._fetch, name="agent-etl-s3-ahead", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            while not self.closed:
                data = self._body.read(self._chunk)
                self._put(data or None)
                if not data:
                    return
        except BaseException as e:  # handed to the reader, which raises it
            self._put(e)

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self.closed:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        out = []
        while size < 0 or sum(len(b) for b in out) < size:
            if not self._left:
                item = self._queue.get()
                if item is None:
                    self._queue.put(None)  # the end stays the end
                    break
                if isinstance(item, BaseException):
                    raise item
                self._left = memoryview(item)
            want = len(self._left) if size < 0 else size - sum(len(b) for b in out)
            out.append(self._left[:want].tobytes())
            self._left = self._left[want:]
        data = b"".join(out)
        self._pos += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self.closed = True
        self._body.close()


class Prefetch:
    """Fetches the small objects of a read whole, a few ahead of the one being read, in read order."""

    def __init__(self, client: S3Client, concurrency: int, whole_max: int, budget: int):
        self._client, self._whole_max, self._budget = client, whole_max, budget
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="agent-etl-s3-get")
        self._concurrency = concurrency
        self._objects: list[S3Object] = []
        self._pending: dict[int, Future[pa.Buffer]] = {}
        self._next = 0  # the next object to consider fetching
        self._bytes = 0  # bytes fetched or being fetched and not yet taken
        self._lock = threading.Lock()

    def add(self, objects: list[S3Object]) -> None:
        self._objects = objects

    def small(self, obj: S3Object) -> bool:
        return obj.size() <= self._whole_max

    def _fill(self, index: int) -> None:
        """Start fetches from ``index`` on, within the bounds (called with the lock held). Fetches of
        objects before ``index`` that the reader passed by (an empty object it skipped) are dropped."""
        for passed in [i for i in self._pending if i < index]:
            self._pending.pop(passed).cancel()
            self._bytes -= self._objects[passed].size()
        self._next = max(self._next, index)
        while self._next < len(self._objects) and len(self._pending) < self._concurrency:
            obj = self._objects[self._next]
            if 0 < obj.size() <= self._whole_max:
                if self._pending and self._bytes + obj.size() > self._budget:
                    return
                self._pending[self._next] = self._pool.submit(obj.fetch)
                self._bytes += obj.size()
            self._next += 1

    def get(self, index: int, take: bool) -> pa.Buffer:
        """The whole object ``index``; ``take`` hands it over (later calls fetch it again)."""
        with self._lock:
            self._fill(index)
            future = self._pending.get(index)
            if future is not None and take:
                del self._pending[index]
                self._bytes -= self._objects[index].size()
                self._fill(index + 1)
        return future.result() if future is not None else self._objects[index].fetch()

    def in_flight(self) -> tuple[int, int]:
        """Objects and bytes fetched or being fetched, not yet taken."""
        with self._lock:
            return len(self._pending), self._bytes

    def close(self) -> None:
        with self._lock:
            for future in self._pending.values():
                future.cancel()
            self._pending, self._bytes = {}, 0
        self._pool.shutdown(wait=False, cancel_futures=True)


class S3Object(StoredFile):
    """One object of a read: its key and size from the listing, read through ``client``."""

    def __init__(self, client: S3Client, bucket: str, key: str, size: int, index: int, compression: str,
                 prefetch: Prefetch | None = None):
        self.bucket, self.key, self._size, self.index = bucket, key, size, index
        self.name = key.rsplit("/", 1)[-1]
        self._client, self._prefetch = client, prefetch
        self._codec = codec_for(key, compression)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def __repr__(self) -> str:
        return f"S3Object({str(self)!r}, size={self._size})"

    def size(self) -> int:
        return self._size

    def fetch(self) -> pa.Buffer:
        """The whole object, one GET."""
        body = self._client.boto.get_object(Bucket=self.bucket, Key=self.key)["Body"]
        try:
            return pa.py_buffer(body.read())
        finally:
            body.close()

    def _whole(self, take: bool) -> pa.Buffer | None:
        if self._prefetch is None or not self._prefetch.small(self):
            return None
        return self._prefetch.get(self.index, take)

    def random(self) -> pa.NativeFile:
        whole = self._whole(True)
        if whole is not None:
            return pa.BufferReader(whole)
        return self._client.fs().open_input_file(f"{self.bucket}/{self.key}")

    def stream(self) -> pa.NativeFile:
        whole = self._whole(True)
        if whole is not None:
            raw: pa.NativeFile = pa.BufferReader(whole)
        elif self._codec is None:  # seekable: a CSV read resumes at a byte offset with a ranged GET
            return self._client.fs().open_input_file(f"{self.bucket}/{self.key}")
        else:
            raw = pa.PythonFile(StreamAhead(self), mode="r")
        return pa.CompressedInputStream(raw, self._codec) if self._codec else raw

    def sample(self, size: int) -> bytes:
        whole = self._whole(False)
        if whole is not None:
            raw = whole
        else:  # one ranged GET: a compressed head decompresses to more than ``size`` bytes
            body = self._client.boto.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes=0-{size - 1}")["Body"]
            try:
                raw = pa.py_buffer(body.read())
            finally:
                body.close()
        if self._codec is None:
            return raw.to_pybytes()[:size]
        try:
            with pa.CompressedInputStream(pa.BufferReader(raw), self._codec) as f:
                return f.read(size)
        except (pa.ArrowException, OSError):  # a head too short to decompress: read from the start
            with self.stream() as f:
                return f.read(size)
