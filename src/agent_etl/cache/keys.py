"""What identifies an extraction result: the extract's tool and options, the connection it reads
(its resolved url and settings: secrets included, so two users' results never mix), and the
version of the source where it can be known cheaply (the files' sizes and modification times, a
database file's with its write-ahead log). Only a SHA-256 of all of it is ever stored or shown."""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path
from typing import Any

FILE_TOOLS = frozenset({"csv", "json", "jsonl", "parquet", "excel"})
DB_FILE_TOOLS = frozenset({"sqlite", "duckdb"})


def _stat(path: Path) -> list[Any] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [str(path), st.st_mtime_ns, st.st_size]


def _files(pattern: str, base_dir: Path) -> list[Path]:
    full = Path(pattern).expanduser()
    full = full if full.is_absolute() else base_dir / full
    if any(ch in pattern for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
    if full.is_dir():
        return sorted(p for p in full.iterdir() if p.is_file() and not p.name.startswith("."))
    return [full]


def _db_file(url: str, base_dir: Path) -> Path | None:
    scheme, sep, rest = url.partition(":///")
    if not sep or not rest or rest.startswith((":memory:", "file:")):
        return None
    p = Path(rest.split("?")[0]).expanduser()
    return p if p.is_absolute() else base_dir / p


class Unlisted(Exception):
    """The source's version could not be read (S3 refused the listing): read it without the cache,
    so the read itself says what is wrong."""


def source_version(tool: str, options: dict[str, Any], connection: dict[str, Any] | None,
                   base_dir: Path) -> list[Any] | None:
    """What changes when the data does, where that is cheap to know: (path, mtime_ns, size) of each
    file read, or of a SQLite/DuckDB file and its write-ahead log; (key, ETag, size) of every S3
    object under the URL's prefix (one listing; blocking). None: unknown (databases on a server,
    APIs): the TTL alone bounds how stale a cached result can be."""
    if tool in FILE_TOOLS and isinstance(options.get("path"), str):
        return [_stat(p) for p in _files(options["path"], base_dir)]
    url = str((connection or {}).get("url") or "")
    if tool in DB_FILE_TOOLS or tool == "sql" and url.startswith(("sqlite", "duckdb")):  # sqlite+pysqlite:/// too
        path = _db_file(url, base_dir)
        if path is not None:
            return [_stat(path), _stat(Path(f"{path}-wal")), _stat(Path(f"{path}.wal"))]
    if tool == "s3" and isinstance(options.get("url"), str):
        return _s3_objects(options, connection)
    return None


def _s3_objects(options: dict[str, Any], connection: dict[str, Any] | None) -> list[Any]:
    """Every object under the prefix of the URL (a superset of what the read takes: a change next to
    the objects read also misses, never the other way round), with its ETag."""
    try:
        from agent_etl.tools.s3.client import S3Client
        from agent_etl.tools.s3.options import S3Options, resolved
        from agent_etl.tools.s3.url import parse_url

        s3 = resolved(S3Options(**{k: v for k, v in options.items() if k in S3Options.model_fields}), connection)
        url = parse_url(s3.url)
        client = S3Client(s3)
        try:
            return [[o["Key"], o.get("ETag"), o.get("Size")]
                    for page in client.boto.get_paginator("list_objects_v2").paginate(Bucket=url.bucket,
                                                                                       Prefix=url.prefix)
                    for o in page.get("Contents", ())]
        finally:
            client.close()
    except Exception as e:  # noqa: BLE001 - any failure: no cache for this read, the read says what is wrong
        raise Unlisted(str(e)) from None


def cache_key(tool: str, options: dict[str, Any], connection: dict[str, Any] | None,
              version: list[Any] | None) -> str:
    """The hex SHA-256 of everything that identifies the result (never stored in the clear)."""
    ident = {"tool": tool, "options": {k: v for k, v in options.items() if k != "cache"},
             "connection": connection, "version": version}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
