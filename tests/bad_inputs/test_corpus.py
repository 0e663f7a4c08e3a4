"""The bad-input corpus: every file under ``cases/`` is one thing a user can get wrong, run through
the real CLI. Each case holds its pipeline, its data, the exit code and message fragments it must
get, and what must hold of its destination afterwards; no case may print a traceback.

A case (YAML):

- ``about``: what is wrong, in words. ``command``: ``run`` (default) or ``validate``; ``args``:
  more CLI arguments. ``pipeline``: the spec, written to ``p.yaml`` (left out: no such file).
- ``files``: ``{path: text}``; ``!!binary`` for bytes; ``{repeat: s, times: n, head: h, tail: t}``
  for big generated text.
- ``needs``: ``api`` (``${API}``, an HTTP server failing on purpose, ``conftest.BadApi``), ``s3``
  (``${S3}`` endpoint and ``${BUCKET}``), ``postgres`` (``${PG}`` and ``${SCHEMA}``, a schema of its
  own). These and ``${SECRET}`` are passed as ``--var``.
- ``exit``; ``message``: fragments that must all appear in the output; ``absent``: fragments that
  must not (``${SECRET}`` stands for the case's secret value).
- ``destination``: ``file: PATH`` is seeded with other content and must keep it byte for byte;
  ``absent: PATH`` must not exist afterwards; ``sqlite: {path, table}`` and ``postgres: {table}``
  are seeded with two rows that must be all the table holds afterwards.
- ``quarantined: N``: the run's quarantine files hold exactly N rows (the bad rows went there,
  not to the destination).
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from tests.cli.conftest import cli

CASES = sorted((Path(__file__).parent / "cases").glob("*.yaml"))
SEED = b"seeded by the test: must stay as it is\n"


def load(path: Path) -> dict[str, Any]:
    case = yaml.safe_load(path.read_text())
    unknown = set(case) - {"about", "command", "args", "pipeline", "files", "needs", "exit", "message", "absent",
                           "destination", "quarantined", "env"}
    assert not unknown, f"{path.name}: unknown keys {unknown}"
    return case


def test_the_corpus_is_large_and_covers_every_exit_code():
    cases = [load(p) for p in CASES]
    assert len(cases) >= 60
    assert {c["exit"] for c in cases} >= {1, 2, 3}
    assert all(c.get("about") and (c.get("message") or c["exit"] == 0) for c in cases)


def write_files(base: Path, files: dict[str, Any]) -> None:
    for rel, content in (files or {}).items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            content = content.get("head", "") + content["repeat"] * content["times"] + content.get("tail", "")
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def seed(base: Path, dest: dict[str, Any], variables: dict[str, str]) -> Any:
    if "file" in dest:
        path = base / dest["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(SEED)
    if "sqlite" in dest:
        with sqlite3.connect(base / dest["sqlite"]["path"]) as conn:
            conn.execute(f'CREATE TABLE "{dest["sqlite"]["table"]}" (id INTEGER PRIMARY KEY, name TEXT)')
            conn.execute(f'INSERT INTO "{dest["sqlite"]["table"]}" VALUES (1, \'kept\'), (2, \'kept\')')
    if "postgres" in dest:
        import psycopg

        with psycopg.connect(variables["PG"], autocommit=True) as conn:
            table = f'"{variables["SCHEMA"]}"."{dest["postgres"]["table"]}"'
            conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text)")
            conn.execute(f"INSERT INTO {table} VALUES (1, 'kept'), (2, 'kept')")


def check_destination(base: Path, dest: dict[str, Any], variables: dict[str, str]) -> None:
    if "file" in dest:
        assert (base / dest["file"]).read_bytes() == SEED, f"{dest['file']} was changed"
    if "absent" in dest:
        assert not (base / dest["absent"]).exists(), f"{dest['absent']} was written"
    if "sqlite" in dest:
        with sqlite3.connect(base / dest["sqlite"]["path"]) as conn:
            rows = conn.execute(f'SELECT id, name FROM "{dest["sqlite"]["table"]}" ORDER BY id').fetchall()
        assert rows == [(1, "kept"), (2, "kept")]
    if "postgres" in dest:
        import psycopg

        with psycopg.connect(variables["PG"], autocommit=True) as conn:
            table = f'"{variables["SCHEMA"]}"."{dest["postgres"]["table"]}"'
            assert conn.execute(f"SELECT id, name FROM {table} ORDER BY id").fetchall() == [(1, "kept"), (2, "kept")]


def quarantined_rows(base: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (base / ".agent-etl" / "quarantine").rglob("*.parquet"))


def _param(path: Path) -> Any:
    needs = load(path).get("needs", [])
    return pytest.param(path, id=path.stem, marks=[pytest.mark.services("postgres")] if "postgres" in needs else [])


@pytest.mark.parametrize("path", [_param(p) for p in CASES])
def test_case(path: Path, tmp_path: Path, request: pytest.FixtureRequest):
    case = load(path)
    secret = f"sekret-{uuid.uuid4().hex[:10]}"
    variables = {"SECRET": secret}
    needs = set(case.get("needs", []))
    if "api" in needs:
        variables["API"] = request.getfixturevalue("bad_api")
    if "s3" in needs:
        variables["S3"] = request.getfixturevalue("s3_endpoint")
        variables["BUCKET"] = request.getfixturevalue("s3_bucket")
    if "postgres" in needs:
        variables["PG"], variables["SCHEMA"] = request.getfixturevalue("pg_schema_url")
    write_files(tmp_path, case.get("files"))
    if case.get("pipeline") is not None:
        (tmp_path / "p.yaml").write_text(case["pipeline"])
    dest = case.get("destination") or {}
    seed(tmp_path, dest, variables)
    args = [case.get("command", "run"), "p.yaml", *case.get("args", [])]
    for k, v in variables.items():
        args += ["--var", f"{k}={v}"]
    r = cli(*args, cwd=tmp_path, env={k: str(v).replace("${SECRET}", secret) for k, v in (case.get("env") or {}).items()},
            timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == case["exit"], out
    assert "Traceback" not in out, out
    fragments = case.get("message") or []
    for fragment in [fragments] if isinstance(fragments, str) else fragments:
        assert fragment in out, f"{fragment!r} not in:\n{out}"
    for fragment in case.get("absent") or []:
        assert fragment.replace("${SECRET}", secret) not in out, out
    check_destination(tmp_path, dest, variables)
    if "quarantined" in case:
        assert quarantined_rows(tmp_path) == case["quarantined"]
