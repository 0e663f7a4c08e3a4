"""Which values the redaction layer treats as secret (and which it leaves readable), and how it
masks text, records and log lines."""

from __future__ import annotations

import logging

import pytest

from agent_etl.redaction import MASK, LogFilter, redact, redact_data, secret_name
from agent_etl.spec import Pipeline

SPEC = """\
version: 1
name: r
secrets: [SHOP]
connections:
  pg: {url: "postgresql://${PGUSER_R}:${PGPASSWORD_R}@${PGHOST_R}:${PGPORT_R:-5432}/${PGDB_R}?sslmode=${MODE_R}"}
  api: {url: "https://api.example.com/v1?api_key=${KEY_R}&region=${REGION_R}", token: "${TOK_R}"}
extract:
  a: {tool: csv, path: "data/${SHOP}.csv"}
  b: {tool: csv, path: "${file:key.txt}.csv"}
load:
  out: {input: a, tool: parquet, path: "out/${OUTNAME_R}.parquet"}
"""

VALUES = {"PGUSER_R": "analyst", "PGPASSWORD_R": "pw-Secret-1", "PGHOST_R": "db.internal", "PGDB_R": "sales",
          "MODE_R": "require", "KEY_R": "key-Secret-2", "REGION_R": "eu-west", "TOK_R": "tok-Secret-3",
          "SHOP": "shop-Secret-4", "OUTNAME_R": "orders"}


@pytest.fixture
def pipeline(tmp_path, monkeypatch) -> Pipeline:
    for k, v in VALUES.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "key.txt").write_text("file-Secret-5\n")
    return Pipeline.from_text(SPEC, base_dir=tmp_path)


def test_only_secret_values_are_collected(pipeline: Pipeline) -> None:
    secrets = pipeline.secrets
    for s in ("pw-Secret-1", "key-Secret-2", "tok-Secret-3", "shop-Secret-4", "file-Secret-5"):
        assert s in secrets
    for plain in ("analyst", "db.internal", "5432", "sales", "require", "eu-west", "orders"):
        assert not any(plain == s for s in secrets), plain
    message = "PostgreSQL at analyst@db.internal:5432/sales refused pw-Secret-1"
    assert redact(message, secrets) == f"PostgreSQL at analyst@db.internal:5432/sales refused {MASK}"


def test_percent_encoded_secrets_and_short_values() -> None:
    assert redact("https://u:p%40ss-word@h/x", ["p@ss-word"]) == f"https://u:{MASK}@h/x"
    assert redact("a 123 b", ["123"]) == "a 123 b"  # too short to mask: it would mangle everything


def test_records_mask_secret_keys_and_values() -> None:
    got = redact_data({"password": "anything", "note": "has tok-Secret-3 in it", "rows": 3,
                       "nested": [{"api_key": "k"}, "plain"]}, ["tok-Secret-3"])
    assert got == {"password": MASK, "note": f"has {MASK} in it", "rows": 3, "nested": [{"api_key": MASK}, "plain"]}
    assert secret_name("PGPASSWORD") and secret_name("client_secret") and secret_name("Authorization")
    assert not secret_name("port") and not secret_name("user") and not secret_name("keys_of_table")


def test_log_records_and_their_tracebacks_are_masked(caplog) -> None:
    LogFilter.remember(["log-Secret-6"])
    caplog.handler.addFilter(LogFilter())
    log = logging.getLogger("agent_etl.test_redaction")
    try:
        raise RuntimeError("connect failed with log-Secret-6")
    except RuntimeError:
        log.exception("task %s failed: %s", "t", "log-Secret-6")
    assert "log-Secret-6" not in caplog.text
    assert "task t failed" in caplog.text and "RuntimeError: connect failed with ***" in caplog.text
