"""The one redaction layer: which values are secrets, and masking them in text and records.

Secret values are only these (``yamlsource.interpolate`` collects them while it fills in the spec):

- the password of a URL (``postgresql://user:PASSWORD@host``), and the values of its query
  parameters named like a secret (``?api_key=...``);
- values of keys named like a secret: password, token, secret, api_key, access/private keys,
  credentials, authorization, webhook (a Slack or Teams webhook URL is a bearer secret)
  (``secret_name``);
- the contents of every ``${file:...}``;
- the values of variables the spec lists under ``secrets:``, and of ``--var`` variables named like
  a secret (``PGPASSWORD``, ``API_TOKEN``).

Anything else is shown as it is: a port or user name filled in from ``${PGPORT:-5432}`` is what
the user needs to read in an error. Values shorter than ``MIN_LENGTH`` are not masked: masking
``ab`` would mangle every message, and such a value protects nothing.

Masking applies to exception messages, events, the run store (errors, details, the audit trail),
memory, reports and log records (``LogFilter``).
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

MASK = "***"
MIN_LENGTH = 4
_SECRET_NAME = re.compile(r"pass(word|wd|phrase)|(^|[^a-z])pwd($|[^a-z])|secret|token|api_?key|apikey|access_?key|"
                          r"private_?key|credential|authorization|signature|cookie|webhook", re.I)
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<user>[^/@:]*):(?P<password>[^@/]*)@")


def secret_name(name: str) -> bool:
    """Whether a key or variable name says its value is a secret (``password``, ``API_TOKEN``)."""
    return bool(_SECRET_NAME.search(name))


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL: its password and the values of secret-named query parameters."""
    out = []
    m = _URL.match(url)
    if m is not None and m["password"]:
        out.append(m["password"])
        out.append(urllib.parse.unquote(m["password"]))
    try:
        query = urllib.parse.urlsplit(url).query if "?" in url else ""
    except ValueError:  # not a URL after all (an unclosed [ of an IPv6 host)
        query = ""
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=False):
        if secret_name(key):
            out.append(value)
    return [s for s in out if s]


def variants(secret: str) -> set[str]:
    """A secret as it may appear in text: as is, and percent-encoded (in a URL)."""
    out = {secret}
    for quoted in (urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)):
        out.add(quoted)
    return out


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value (of at least MIN_LENGTH characters) replaced by ``***``."""
    if not text:
        return text
    found = sorted({v for s in secrets if s and len(s) >= MIN_LENGTH for v in variants(s) if v in text},
                   key=len, reverse=True)
    for s in found:
        text = text.replace(s, MASK)
    return text


def redact_data(value: Any, secrets: Iterable[str], key: str | None = None) -> Any:
    """A JSON-like value with secrets masked: strings by ``redact``, and the whole value of a key
    named like a secret (``{"password": ...}``)."""
    secrets = secrets if isinstance(secrets, (set, frozenset, list, tuple)) else list(secrets)
    if key is not None and secret_name(key) and isinstance(value, str) and value:
        return MASK
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: redact_data(v, secrets, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v, secrets) for v in value]
    return value


class LogFilter(logging.Filter):
    """Masks the secrets of the pipelines this process runs in every log record it passes (put it on
    the handlers: a logger's own filter does not see its children's records). The coordinator
    adds a run's secrets with ``remember`` when the run starts."""

    secrets: set[str] = set()

    @classmethod
    def remember(cls, secrets: Iterable[str]) -> None:
        cls.secrets.update(s for s in secrets if s and len(s) >= MIN_LENGTH)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            clean += "\n" + redact("".join(traceback.format_exception(*record.exc_info)), self.secrets).rstrip()
            record.exc_info, record.exc_text = None, None
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


def install(handler: logging.Handler | None = None) -> None:
    """Put a ``LogFilter`` on ``handler``, or on every handler of the root logger."""
    # with no handler configured, records go to logging.lastResort (stderr): that one too
    handlers = [handler] if handler is not None else [*logging.getLogger().handlers, logging.lastResort]
    for h in handlers:
        if h is not None and not any(isinstance(f, LogFilter) for f in h.filters):
            h.addFilter(LogFilter())


def remember(secrets: Iterable[str]) -> None:
    """A run of this process uses ``secrets``: mask them in log records from now on (the root
    logger's handlers get a ``LogFilter``) and in the errors ``scrub`` cleans."""
    LogFilter.remember(secrets)
    install()


def scrub(error: BaseException, secrets: Iterable[str] | None = None) -> BaseException:
    """``error`` with ``secrets`` (default: those this process knows) masked in its message, in place."""
    secrets = LogFilter.secrets if secrets is None else secrets
    if secrets and error.args:
        error.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in error.args)
    return error
