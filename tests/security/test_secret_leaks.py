"""No secret leaks: pipelines of every connector kind, each given a unique secret through ${ENV} or
${file:...}, run through the CLI once to success and once into a failure that passes the secret
through an error path (a wrong password, a refused token, a failing query). Afterwards the secret is
in no file under the project (state folder: run store with its audit trail, memory, quarantine;
outputs), no table the run wrote (its tables and checkpoint tables), and nowhere in the captured
stdout and stderr. Values that are not secrets (a port from ${PGPORT:-5432}) stay readable."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import cli
from tests.connectors.s3.conftest import bucket, s3, s3_endpoint  # noqa: F401 - fixtures
from tests.connectors.streams.conftest import nats_stream  # noqa: F401 - fixture
from tests.threaded_app import ThreadedApp

ROWS = 300


def _secret() -> str:
    return f"Zk{uuid.uuid4().hex[:20]}Q"


class Project:
    """A pipeline folder, the secrets given to it, and everything its runs printed."""

    def __init__(self, root: Path):
        self.root = root / "project"
        (self.root / "data").mkdir(parents=True)
        (self.root / "out").mkdir()
        self.outside = root / "secrets"  # ${file:...} targets live outside the scanned folder
        self.outside.mkdir()
        lines = ["id,amount,note"] + [f"{i},{i % 50}.5,n{i % 7}" for i in range(ROWS)]
        (self.root / "data" / "orders.csv").write_text("\n".join(lines) + "\n")
        self.secrets: list[str] = []
        self.output: list[str] = []

    def secret(self) -> str:
        s = _secret()
        self.secrets.append(s)
        return s

    def run(self, spec: str, env: dict[str, str], expect: int) -> str:
        (self.root / "p.yaml").write_text(spec)
        out = cli("run", "p.yaml", cwd=self.root, env={"AGENT_ETL_HOME": str(self.root / ".agent-etl"), **env})
        self.output += [out.stdout, out.stderr]
        assert out.returncode == expect, out.stdout + out.stderr
        assert "Traceback" not in out.stderr
        return out.stdout + out.stderr

    def resume_latest(self, env: dict[str, str], expect: int) -> None:
        """Resume the latest run (it failed): the secrets are read from the environment again."""
        home = {"AGENT_ETL_HOME": str(self.root / ".agent-etl")}
        out = cli("run", "--resume", "p.yaml", cwd=self.root, env={**home, **env})
        self.output += [out.stdout, out.stderr]
        assert out.returncode == expect, out.stdout + out.stderr

    def inspect(self) -> None:
        """Read back what the runs left, through the CLI, so those outputs are searched too."""
        home = {"AGENT_ETL_HOME": str(self.root / ".agent-etl")}
        listed = cli("runs", "list", "--json", cwd=self.root, env=home)
        self.output.append(listed.stdout + listed.stderr)
        import json

        for r in json.loads(listed.stdout):
            for args in (("runs", "show", r["run_id"], "--json"), ("audit", "show", r["run_id"], "--json"),
                         ("report", r["run_id"], "-f", "json", "-o", "-")):
                got = cli(*args, cwd=self.root, env=home)
                self.output.append(got.stdout + got.stderr)
        verified = cli("audit", "verify", cwd=self.root, env=home)
        assert verified.returncode == 0, verified.stdout
        self.output.append(verified.stdout)

    def assert_clean(self, *tables: str) -> None:
        self.inspect()
        needles = {v for s in self.secrets for v in (s, urllib.parse.quote(s, safe=""))}
        found = []
        for path in self.root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path.relative_to(self.root)}" for n in needles if n.encode() in data]
        for i, text in enumerate(self.output + list(tables)):
            found += [f"captured output/table text #{i}: ...{text[max(0, text.find(n) - 80):text.find(n) + 40]}..."
                      for n in needles if n in text]
        assert not found, "secret found in:\n" + "\n".join(found)
        assert any((self.root / ".agent-etl").rglob("runs.db")), "the runs were not recorded"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def test_files_with_a_variable_the_spec_marks_secret(project: Project) -> None:
    value = project.secret()
    spec = """\
version: 1
name: leak_files
secrets: [NOTE_FILTER]
extract:
  src: {tool: csv, path: data/orders.csv}
transform:
  - {name: kept, input: src, tool: filter, where: "note <> '${NOTE_FILTER}'"}
quality:
  - input: kept
    checks: [{range: {column: amount, min: 10}}]
    on_failure: quarantine
load:
  out: {input: kept, tool: parquet, path: out/orders.parquet}
"""
    project.run(spec, {"NOTE_FILTER": value}, 0)
    failing = spec.replace("where: \"note", "where: \"nosuchcolumn")
    text = project.run(failing, {"NOTE_FILTER": value}, 1)
    assert "nosuchcolumn" in text  # the message is there, only the secret is masked
    assert any((project.root / ".agent-etl" / "quarantine").rglob("*.parquet"))
    project.assert_clean()


def test_sqlite_and_duckdb_with_a_token_and_a_file_secret(project: Project) -> None:
    token, key = project.secret(), project.secret()
    (project.outside / "duck.key").write_text(key + "\n")
    spec = f"""\
version: 1
name: leak_local_dbs
defaults: {{commit_every: {{rows: 100}}, batch_size: 50}}
connections:
  lite: {{url: "sqlite:///out/wh.db", token: "${{LITE_TOKEN}}"}}
  duck: {{url: "duckdb:///out/wh.duckdb", api_key: "${{file:{project.outside / 'duck.key'}}}"}}
extract:
  src: {{tool: csv, path: data/orders.csv}}
load:
  lite_copy: {{input: src, tool: sqlite, connection: lite, table: orders}}
  duck_copy: {{input: src, tool: duckdb, connection: duck, table: orders}}
"""
    project.run(spec, {"LITE_TOKEN": token}, 0)
    # a failing run: the merge key is not a column
    project.run(spec.replace("table: orders}", "table: orders, mode: merge, key: [nosuchkey]}"),
                {"LITE_TOKEN": token}, 1)
    project.assert_clean()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    import psycopg

    schema = f"leak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield schema
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _pg_tables(schema: str) -> str:
    import psycopg

    out = []
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test") as conn:
        names = [r[0] for r in conn.execute("select table_name from information_schema.tables where table_schema=%s",
                                            (schema,))]
        assert "_agent_etl_checkpoints" in names
        for t in names:
            out += [r[0] for r in conn.execute(f'select row_to_json(t)::text from "{schema}"."{t}" t')]
    return "\n".join(out)


def test_postgres(project: Project, pg_schema: str) -> None:
    password = project.secret()
    spec = f"""\
version: 1
name: leak_pg
defaults: {{commit_every: {{rows: 100}}, batch_size: 50}}
connections:
  pg: {{url: "postgresql://${{PGUSER_LEAK}}:${{PG_PASSWORD}}@127.0.0.1:${{PGPORT_LEAK:-5432}}/test"}}
extract:
  src: {{tool: csv, path: data/orders.csv}}
load:
  copy: {{input: src, tool: postgres, connection: pg, table: {pg_schema}.orders}}
"""
    chroma = {"AGENT_ETL_MEMORY": "chroma"}  # the memory folder of a real Chroma is searched too
    project.run(spec, {"PGUSER_LEAK": "postgres", "PG_PASSWORD": password, **chroma}, 0)
    text = project.run(spec, {"PGUSER_LEAK": "nosuchuser", "PG_PASSWORD": password, **chroma}, 1)
    # what is not a secret stays readable: the user, host and port that were filled in
    assert "nosuchuser@127.0.0.1:5432/test" in text, text
    project.assert_clean(_pg_tables(pg_schema))


@pytest.fixture
def maria_user() -> Iterator[tuple[str, str, str]]:
    """A database and a user with a password of their own (user, password, database)."""
    import pymysql

    user, password, db = f"leak_{uuid.uuid4().hex[:8]}", _secret(), f"leak_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    with conn.cursor() as c:
        c.execute(f"CREATE DATABASE `{db}`")
        c.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        c.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'")
        c.execute(f"GRANT ALL ON `{db}`.* TO '{user}'@'%'")
        c.execute(f"GRANT ALL ON `{db}`.* TO '{user}'@'localhost'")
    try:
        yield user, password, db
    finally:
        with conn.cursor() as c:
            c.execute(f"DROP DATABASE `{db}`")
            c.execute(f"DROP USER '{user}'@'%'")
            c.execute(f"DROP USER '{user}'@'localhost'")
        conn.close()


def _maria_tables(db: str) -> str:
    import pymysql

    out = []
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database=db)
    with conn.cursor() as c:
        c.execute("show tables")
        names = [r[0] for r in c.fetchall()]
        assert "_agent_etl_checkpoints" in names
        for t in names:
            c.execute(f"select * from `{t}`")
            out += [repr(r) for r in c.fetchall()]
    conn.close()
    return "\n".join(out)


@pytest.mark.services("mariadb")
def test_mysql(project: Project, maria_user: tuple[str, str, str]) -> None:
    user, password, db = maria_user
    project.secrets.append(password)
    spec = f"""\
version: 1
name: leak_maria
defaults: {{commit_every: {{rows: 100}}, batch_size: 50}}
connections:
  my: {{url: "mysql://{user}:${{MY_PASSWORD}}@127.0.0.1:3306/{db}"}}
extract:
  src: {{tool: csv, path: data/orders.csv}}
  back: {{tool: mysql, connection: my, query: "select 1 as one"}}
load:
  copy: {{input: src, tool: mysql, connection: my, table: orders}}
  lake: {{input: back, tool: parquet, path: out/back.parquet}}
"""
    project.run(spec, {"MY_PASSWORD": password}, 0)
    wrong = project.secret()
    text = project.run(spec, {"MY_PASSWORD": wrong}, 1)
    assert f"{user}@127.0.0.1:3306" in text
    project.resume_latest({"MY_PASSWORD": password}, 0)  # the failed run, resumed with the right one
    project.assert_clean(_maria_tables(db))


class TokenApi:
    """An API that wants one bearer token, and answers 401 quoting the Authorization header it got."""

    def __init__(self, token: str):
        from aiohttp import web

        self.token = token
        self.app = web.Application()
        self.app.router.add_get("/items", self.items)
        self.server = ThreadedApp(self.app)

    async def items(self, req):
        from aiohttp import web

        got = req.headers.get("Authorization", "")
        if got != f"Bearer {self.token}":
            return web.json_response({"error": f"bad credentials: {got}"}, status=401)
        return web.json_response({"data": [{"id": i, "name": f"n{i}"} for i in range(20)]})

    def __enter__(self) -> str:
        return self.server.start().url

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def test_rest_with_a_bearer_token(project: Project) -> None:
    token = project.secret()
    with TokenApi(token) as url:
        spec = f"""\
version: 1
name: leak_rest
extract:
  api: {{tool: rest, url: "{url}/items", records: data, auth: {{type: bearer, token: "${{API_TOKEN}}"}}}}
load:
  out: {{input: api, tool: parquet, path: out/items.parquet}}
"""
        project.run(spec, {"API_TOKEN": token}, 0)
        wrong = project.secret()
        text = project.run(spec, {"API_TOKEN": wrong}, 1)
        assert "401" in text
    project.assert_clean()


def test_s3_with_a_secret_key_from_the_environment(project: Project, s3_endpoint: str, bucket: str) -> None:  # noqa: F811
    key = project.secret()
    spec = f"""\
version: 1
name: leak_s3
extract:
  src: {{tool: csv, path: data/orders.csv}}
load:
  lake: {{input: src, tool: s3, url: "s3://{bucket}/orders/", format: parquet, endpoint_url: "{s3_endpoint}"}}
"""
    env = {"AWS_ACCESS_KEY_ID": "leaktest", "AWS_SECRET_ACCESS_KEY": key}
    project.run(spec, env, 0)
    missing = spec.replace("load:\n  lake: {input: src, tool: s3,", "load:\n  lake: {input: src, tool: s3,").replace(
        "extract:\n  src: {tool: csv, path: data/orders.csv}",
        f"extract:\n  src: {{tool: s3, url: \"s3://{bucket}/nothing/here.parquet\", endpoint_url: \"{s3_endpoint}\"}}")
    project.run(missing, env, 1)
    project.assert_clean()


@pytest.fixture
def redis_user() -> Iterator[tuple[str, str, str]]:
    import redis

    user, password, stream = f"leak_{uuid.uuid4().hex[:8]}", _secret(), f"leak_{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    client.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    for i in range(ROWS):
        client.xadd(stream, {"data": f'{{"id": {i}}}'})
    try:
        yield user, password, stream
    finally:
        client.delete(stream)
        client.execute_command("ACL", "DELUSER", user)
        client.close()


def test_redis_stream(project: Project, redis_user: tuple[str, str, str]) -> None:
    user, password, stream = redis_user
    project.secrets.append(password)
    spec = f"""\
version: 1
name: leak_redis
extract:
  src: {{tool: redis_stream, url: "redis://{user}:${{REDIS_PASSWORD}}@127.0.0.1:6379/0", stream: {stream},
        group: g, create_group: true, idle_seconds: 0.3}}
load:
  out: {{input: src, tool: parquet, path: out/stream.parquet}}
"""
    project.run(spec, {"REDIS_PASSWORD": password}, 0)
    project.run(spec, {"REDIS_PASSWORD": project.secret()}, 1)
    project.assert_clean()


def test_nats(project: Project, nats_stream: str) -> None:  # noqa: F811
    from tests.connectors.streams.conftest import nats_fill

    nats_fill(nats_stream, [{"id": i} for i in range(ROWS)])
    password = project.secret()
    spec = f"""\
version: 1
name: leak_nats
extract:
  src: {{tool: nats, url: "nats://leak:${{NATS_PASSWORD}}@127.0.0.1:${{NATS_PORT:-4222}}", stream: {nats_stream},
        durable: d, idle_seconds: 0.3}}
load:
  out: {{input: src, tool: parquet, path: out/stream.parquet}}
"""
    project.run(spec, {"NATS_PASSWORD": password}, 0)
    project.run(spec, {"NATS_PASSWORD": password, "NATS_PORT": "1"}, 1)  # nothing listens there
    project.assert_clean()

