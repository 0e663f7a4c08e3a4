"""The options the s3 extractor and loader share, and the rule that keeps access keys out of a spec:
credentials come from the standard AWS chain only (environment, shared config profile, container or
instance role), so a spec can be committed and shared as it is."""

from __future__ import annotations

import urllib.parse
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from agent_etl.redaction import MASK
from agent_etl.tools.base import ToolConfig
from agent_etl.tools.s3.url import parse_url

# option names under which people write credentials (boto3, s3fs, pyarrow, dlt, the AWS CLI)
SECRET_KEYS = frozenset({
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "access_key", "secret_key",
    "session_token", "access_key_id", "secret_access_key", "key", "secret", "token", "credentials", "password"})
CHAIN = ("give credentials through the AWS chain instead: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the "
         "environment, a profile of ~/.aws/config (profile: or AWS_PROFILE), or the instance or container role")
_REDACTED = MASK  # credentials blanked before pydantic repeats the input in an error


class S3Options(ToolConfig):
    """Where the objects are and how to reach them."""

    url: str = Field(min_length=6, description="s3://bucket/prefix/*.parquet (a key, a prefix ending in / or a glob)")
    endpoint_url: str | None = Field(None, description="an S3-compatible server, e.g. http://127.0.0.1:9000 (MinIO)")
    region: str | None = Field(None, description="default: the AWS chain's (AWS_REGION, the profile), else us-east-1")
    profile: str | None = Field(None, description="a profile of the AWS shared config (default: AWS_PROFILE)")
    anonymous: bool = Field(False, description="unsigned requests, for public buckets")
    connection: str | None = Field(None, description="a connections: entry whose url is the endpoint, with "
                                   "region, profile, anonymous (the step's own options win)")

    # Two validators: pydantic reports the input with an error, so the values of credential keys are
    # blanked by the first (defined last, it runs first) before the second raises on their names.
    @model_validator(mode="before")
    @classmethod
    def _no_inline_credentials(cls, data: Any) -> Any:
        if isinstance(data, dict):
            found = sorted(k for k in data if str(k).lower() in SECRET_KEYS)
            if found:
                raise ValueError(f"access keys do not go in the spec (found {', '.join(found)}): remove "
                                 f"{'them' if len(found) > 1 else 'it'} and {CHAIN}")
        return data

    @model_validator(mode="before")
    @classmethod
    def _blank_credentials(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if any(str(k).lower() in SECRET_KEYS for k in data):
            data = {k: _REDACTED if str(k).lower() in SECRET_KEYS else v for k, v in data.items()}
        endpoint = data.get("endpoint_url")
        if isinstance(endpoint, str) and "@" in endpoint.partition("//")[2].partition("/")[0]:
            head, _, rest = endpoint.partition("//")
            data = {**data, "endpoint_url": f"{head}//{_REDACTED}@{rest.partition('@')[2]}"}
        return data

    @field_validator("url")
    @classmethod
    def _s3_url(cls, value: str) -> str:
        parse_url(value)
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("endpoint_url must be an http:// or https:// URL, e.g. http://127.0.0.1:9000")
        if parts.username or parts.password:
            raise ValueError(f"endpoint_url must not hold a user or password; {CHAIN}")
        return value


ENDPOINT_KEYS = ("region", "profile", "anonymous")


def resolved(options: S3Options, connection: dict[str, Any] | None) -> S3Options:
    """``options`` with what the step leaves out taken from its connection (``url``: the endpoint)."""
    if connection is None:
        return options
    found = sorted(k for k in connection if str(k).lower() in SECRET_KEYS)
    if found:
        raise ValueError(f"access keys do not go in a connection either (found {', '.join(found)}): remove "
                         f"{'them' if len(found) > 1 else 'it'} and {CHAIN}")
    update: dict[str, Any] = {}
    url = connection.get("url")
    if options.endpoint_url is None and isinstance(url, str) and url.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(url)
        if parts.username or parts.password:
            raise ValueError(f"its url must not hold a user or password; {CHAIN}")
        update["endpoint_url"] = url
    for key in ENDPOINT_KEYS:
        if key in connection and key not in options.model_fields_set:
            update[key] = connection[key]
    return options.model_copy(update=update)


def format_problems(error: ValidationError, fmt: str, model: type[BaseModel], s3_keys: frozenset[str]) -> str:
    """The errors in a format's options given to an s3 tool, as one line naming the keys it takes."""
    import difflib

    formats = sorted(set(model.model_fields) - {"path"} - s3_keys)
    out = []
    for err in error.errors(include_url=False):
        key = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, [*formats, *s3_keys], n=1)
            out.append(f"unknown option {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        else:
            out.append(f"{key}: {err['msg']}")
    return f"{'; '.join(out)}; the s3 tool takes {', '.join(sorted(s3_keys))}, and for {fmt}: {', '.join(formats)}"
