"""The docs site's promises (issue 17): the spec reference is what the models say, and every
source and destination page's example under examples/ runs with `agent-etl run` (offline ones as
they are; PostgreSQL, MariaDB, Redis and NATS ones against the test servers; S3 and API ones in
test_docs_s3_example.py and test_docs_api_example.py) and validates with its URLs given.
The strict mkdocs build itself runs in .ci/run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
AGENT_ETL = str(Path(sys.executable).parent / "agent-etl")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENT_ETL_HOME": str(cwd / ".agent-etl")}
    return subprocess.run([AGENT_ETL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def copy_example(kind: str, tmp_path: Path) -> Path:
    """examples/<kind> and the shared examples/data, copied side by side as in the repo."""
    shutil.copytree(EXAMPLES / "data", tmp_path / "data")
    dest = tmp_path / kind
    shutil.copytree(EXAMPLES / kind, dest, ignore=shutil.ignore_patterns("out", ".agent-etl", "*.db"))
    return dest


def run_ok(where: Path, *args: str) -> str:
    done = cli("run", *args, cwd=where)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_spec_reference_is_in_sync():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "spec_reference.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_spec_reference_lists_every_tool_and_key():
    text = (ROOT / "docs" / "reference" / "spec.md").read_text(encoding="utf-8")
    from agent_etl.tools.registry import default_registry

    registry = default_registry()
    for family in ("extractor", "transform", "validator", "loader"):
        for name in registry.names(family):
            assert f"### {family} `{name}`" in text
    for key in ("`batch_size`", "`commit_every`", "`on_failure`", "`partition_by`", "`incremental`"):
        assert key in text


def test_every_tool_option_in_the_spec_reference_says_what_it_means():
    """No blank meaning in the options table of a tool (or of a model among its options)."""
    import re

    text = (ROOT / "docs" / "reference" / "spec.md").read_text(encoding="utf-8")
    blank, section = [], ""
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.strip("# ")
        elif re.match(r"^(extractor|transform|validator|loader) `", section) and re.match(r"^\| `[^`]+` \|.*\|\s*\|$",
                                                                                          line):
            blank.append(f"{section}: {line.split('`')[1]}")
    assert not blank, blank


def test_files_example(tmp_path: Path):
    where = copy_example("files", tmp_path)
    run_ok(where, "pipeline.yaml")
    out = where / "out"
    assert pq.read_table(out / "lake").num_rows == 6  # the paid orders, partitioned by country
    assert sorted(p.name for p in (out / "lake").iterdir()) == ["country=DE", "country=FR", "country=NL"]
    assert len((out / "paid.csv").read_text().splitlines()) == 7
    assert len((out / "paid.jsonl").read_text().splitlines()) == 6
    assert (out / "paid.xlsx").stat().st_size > 0


@pytest.mark.parametrize("kind", ["sqlite", "duckdb", "sql"])
def test_database_example_offline(kind: str, tmp_path: Path):
    where = copy_example(kind, tmp_path)
    run_ok(where, "pipeline.yaml")
    run_ok(where, "pipeline.yaml")  # again: merge/replace keeps one copy of every row
    shown = run_ok(where, "read.yaml")
    assert "failed" not in shown
    out = where / "out"
    if kind == "sqlite":
        assert (out / "revenue.csv").read_text().splitlines()[1:] == ['"DE",2,53.2', '"FR",2,125', '"NL",2,19.5']
        assert len((out / "new_orders.jsonl").read_text().splitlines()) == 8
    elif kind == "duckdb":
        from decimal import Decimal

        assert pq.read_table(out / "revenue_by_segment.parquet").to_pydict() == {
            "segment": ["business", "retail"], "orders": [3, 3], "revenue": [Decimal("139.50"), Decimal("58.20")]}
    else:
        assert len((out / "orders_copy.csv").read_text().splitlines()) == 9  # header and 8 orders


SERVER_VARS = {
    "postgres": ["PG_URL=postgresql://etl:secret@db.example:5432/shop"],
    "mysql": ["MYSQL_URL=mysql://etl:secret@db.example:3306/shop"],
    "api": ["API_URL=https://api.example.com/v1", "API_TOKEN=t0ken", "WEBHOOK_URL=https://hooks.example.com/in"],
    "s3": ["BUCKET=example-bucket", "S3_ENDPOINT=http://127.0.0.1:9000"],
    "streams": ["REDIS_URL=redis://127.0.0.1:6379/0", "NATS_URL=nats://127.0.0.1:4222"],
}


@pytest.mark.parametrize("kind", sorted(SERVER_VARS))
def test_server_example_validates(kind: str, tmp_path: Path):
    where = copy_example(kind, tmp_path)
    files = sorted(p.name for p in where.glob("*.yaml"))
    assert files
    args = [a for v in SERVER_VARS[kind] for a in ("--var", v)]
    for name in files:
        done = cli("validate", *args, name, cwd=where)
        assert done.returncode == 0, done.stdout + done.stderr
    missing = cli("validate", files[0], cwd=where)  # without its URL: one clear line, exit 2
    assert missing.returncode == 2 and "is not set" in missing.stderr, missing.stderr


def every_example() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*/*.yaml") if p.parent.name != "quickstart" and "configs" not in p.parts)


def test_every_example_is_tested():
    """A new example folder needs a place in this module (and a page that points to it)."""
    kinds = {p.parent.name for p in every_example()}
    assert kinds == {"files", "sqlite", "duckdb", "sql", *SERVER_VARS}
    pages = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs").rglob("*.md"))
    for kind in kinds:
        assert f"examples/{kind}/" in pages, f"no docs page points to examples/{kind}/"


@pytest.mark.services("postgres")
def test_postgres_example(tmp_path: Path):
    import psycopg

    db = f"ex_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{db}"')
    try:
        where = copy_example("postgres", tmp_path)
        url = f"PG_URL=postgresql://postgres@127.0.0.1:5432/{db}"
        run_ok(where, "--var", url, "pipeline.yaml")
        run_ok(where, "--var", url, "pipeline.yaml")
        run_ok(where, "--var", url, "read.yaml")
        assert pq.read_table(where / "out" / "orders.parquet").num_rows == 8
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.mark.services("mariadb")
def test_mysql_example(tmp_path: Path):
    import pymysql

    db = f"ex_{uuid.uuid4().hex[:10]}"
    con = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    try:
        con.cursor().execute(f"CREATE DATABASE `{db}`")
        where = copy_example("mysql", tmp_path)
        url = f"MYSQL_URL=mysql://root@127.0.0.1:3306/{db}"
        run_ok(where, "--var", url, "pipeline.yaml")
        run_ok(where, "--var", url, "pipeline.yaml")
        run_ok(where, "--var", url, "read.yaml")
        assert pq.read_table(where / "out" / "orders.parquet").num_rows == 8
    finally:
        con.cursor().execute(f"DROP DATABASE IF EXISTS `{db}`")
        con.close()


@pytest.mark.parametrize("kind", ["sqlite", "duckdb", "sql", "postgres", "mysql"])
def test_database_pages_show_their_examples(kind: str):
    """The YAML a database page shows is its example's, as the example reads now."""
    page = (ROOT / "docs" / "connectors" / f"{kind}.md").read_text(encoding="utf-8")
    for name in ("pipeline.yaml", "read.yaml"):
        assert (EXAMPLES / kind / name).read_text(encoding="utf-8").rstrip() in page, f"{kind}/{name}"


def test_getting_started_shows_the_files_example():
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    lines = [ln for ln in (EXAMPLES / "files" / "pipeline.yaml").read_text(encoding="utf-8").splitlines()
             if not ln.startswith("#")]
    assert "\n".join(lines).rstrip() in page


async def _delete_nats_stream(url: str, name: str) -> None:
    """Delete the JetStream stream ``name`` where it is."""
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        try:
            await js.delete_stream(name)
        except NotFoundError:
            pass
    finally:
        await nc.close()


@pytest.mark.services("redis", "nats")
def test_streams_example(tmp_path: Path):
    """examples/streams against the test servers; the example's names are fixed, so they are
    cleared before and after (nothing else uses them)."""
    import asyncio

    import redis

    redis_url, nats_url = "redis://127.0.0.1:6379/0", "nats://127.0.0.1:4222"
    client = redis.Redis.from_url(redis_url)
    client.delete("example_orders")
    asyncio.run(_delete_nats_stream(nats_url, "EXAMPLE_ORDERS"))  # the pipeline creates it
    try:
        where = copy_example("streams", tmp_path)
        urls = ("--var", f"REDIS_URL={redis_url}", "--var", f"NATS_URL={nats_url}")
        run_ok(where, *urls, "pipeline.yaml")
        run_ok(where, *urls, "read.yaml")
        for name in ("from_redis.jsonl", "from_nats.jsonl"):
            assert len((where / "out" / name).read_text().splitlines()) == 8, name
    finally:
        client.delete("example_orders")
        client.close()
        asyncio.run(_delete_nats_stream(nats_url, "EXAMPLE_ORDERS"))
