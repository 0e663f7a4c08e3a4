"""``s3://bucket/key`` URLs, and the globs in their keys: ``*`` and ``?`` within one level of
``/``, ``**`` across levels, ``[abc]`` / ``[!abc]`` classes (the rules of Python's ``glob``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WILD = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class S3Url:
    bucket: str
    key: str  # may hold a glob; "" or ending in "/" for a prefix

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def is_glob(self) -> bool:
        return bool(_WILD.search(self.key))

    @property
    def prefix(self) -> str:
        """The literal start of the key: what to list. For a glob, up to the last / before a wildcard."""
        if not self.is_glob:
            return self.key
        head = self.key[:_WILD.search(self.key).start()]
        return head[:head.rfind("/") + 1]

    def object(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def parse_url(text: str) -> S3Url:
    """An ``s3://bucket/key`` URL; ValueError naming what is wrong."""
    if not text.startswith("s3://"):
        raise ValueError(f"{text!r} is not an s3:// URL; write s3://bucket/prefix/*.parquet")
    bucket, _, key = text[5:].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
        raise ValueError(f"{bucket!r} in {text!r} is not a valid bucket name (3-63 lower-case letters, digits, "
                         "dots and hyphens)")
    return S3Url(bucket, key)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The keys ``pattern`` matches, as a regular expression."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1:end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
            i = end + 1
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S)
