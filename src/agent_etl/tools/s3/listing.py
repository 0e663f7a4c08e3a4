"""The objects an ``s3://`` URL names, sorted by key (S3 lists in UTF-8 byte order, which is the
order of Python's ``str`` sort too), so every read of the same objects takes the same order and a
position (object key and index) means the same rows on a resumed read.

- a glob (``*``, ``?``, ``[...]``, ``**``): the objects under its literal prefix that it matches;
- a prefix ending in ``/`` (or the bucket alone): every object under it, at any depth, whose name
  ends in one of the format's suffixes;
- a key: that object, or, if there is none, the prefix ``key/``.

Keys with a part starting with ``.`` below the prefix (the loader's manifests, anything a tool
keeps hidden) are left out, as ``glob`` leaves out hidden files; so are "folder" marker keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent_etl.exceptions import ToolError
from agent_etl.tools.s3.client import S3Client, explain
from agent_etl.tools.s3.url import S3Url, glob_regex

SHOWN = 3  # keys named in a "matches nothing" message


@dataclass(frozen=True)
class Listed:
    key: str
    size: int


def list_keys(client: S3Client, bucket: str, prefix: str, task: str) -> list[Listed]:
    """Every object under ``prefix``, in key order."""
    out: list[Listed] = []
    try:
        for page in client.boto.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend(Listed(o["Key"], int(o["Size"])) for o in page.get("Contents", ()))
    except Exception as e:
        error = explain(e, task, f"s3://{bucket}/{prefix}", client, "list")
        if error is None:
            raise
        raise error from None
    out.sort(key=lambda o: o.key)
    return out


def _visible(key: str, prefix: str) -> bool:
    rest = key[len(prefix):] if key.startswith(prefix) else key
    return not key.endswith("/") and not any(part.startswith(".") for part in rest.split("/"))


def resolve_objects(client: S3Client, url: S3Url, suffixes: tuple[str, ...], fmt: str, task: str) -> list[Listed]:
    """The objects ``url`` names, sorted by key; a ToolError naming the URL when there is none."""
    if url.is_glob:
        prefix, match = url.prefix, glob_regex(url.key)
        listed = list_keys(client, url.bucket, prefix, task)
        found = [o for o in listed if match.match(o.key) and _visible(o.key, prefix)]
        what = f"the glob {url} matches no object"
    elif url.key == "" or url.key.endswith("/"):
        prefix = url.key
        listed = list_keys(client, url.bucket, prefix, task)
        found = [o for o in listed if _visible(o.key, prefix) and o.key.lower().endswith(suffixes)]
        what = f"no object under {url} ends in {'/'.join(suffixes)}"
    else:
        listed = list_keys(client, url.bucket, url.key, task)
        found = [o for o in listed if o.key == url.key]
        prefix = url.key + "/"
        if not found:
            found = [o for o in listed if o.key.startswith(prefix) and _visible(o.key, prefix)
                     and o.key.lower().endswith(suffixes)]
        what = f"there is no object {url} (nor {fmt} objects under {url}/)"
    if not found:
        near = [o.key for o in listed if _visible(o.key, prefix)][:SHOWN]
        seen = (f"; objects there include {', '.join(near)}" if near else
                f"; there is no object at all under s3://{url.bucket}/{prefix}")
        raise ToolError(f"task {task!r}: no {fmt} object for url {str(url)!r}: {what}{seen}; check the url "
                        "(globs: * within one level, ** across levels)")
    return found
