"""Every source and destination the contract suites run against: one entry each.

A connector joins the suites by adding one entry here (see docs/writing-tools.md, "Joining the
contract suites"):

- a loader: ``LoaderBackend(id, tool, setup, options, read)`` in ``LOADERS``. What the suite
  tests of it follows its class's ``capabilities`` (``tools.capabilities``), never its name;
- an extractor: ``ExtractorBackend(id, tool, setup, write, missing, types)`` in ``EXTRACTORS``.

Each test gets a ``Place``: a unique ``name`` (for a table, schema, database, bucket, stream...), the
test's own directory, and the ``connections`` of the tool context, which ``setup`` fills in.
``setup(place)`` is a context manager: it creates what the backend needs (a private schema, a
bucket, a server) and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ContextManager

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import sqlalchemy as sa

from tests.connectors.api.contract import hook_options, read_hook, rest_api, rest_missing, rest_write
from tests.connectors.streams.contract import (nats_missing, nats_sink_options, nats_stream, nats_write, read_nats,
                                               read_redis, redis_missing, redis_sink_options, redis_stream,
                                               redis_write)

PG = "postgresql://postgres@127.0.0.1:5432/test"
MARIA = "mysql://root@127.0.0.1:3306"


@dataclass
class Place:
    """Where one test's data lives."""

    name: str  # unique per test: use it for every table, schema, bucket, stream... the backend creates
    dir: Path  # the test's directory, base_dir of the tool context (relative paths start here)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)  # set by setup
    data: dict[str, Any] = field(default_factory=dict)  # anything setup wants to keep for read/write


Setup = Callable[[Place], ContextManager[Any]]


@dataclass(frozen=True)
class LoaderBackend:
    id: str  # the test id
    tool: str  # the loader's registered name
    setup: Setup
    # the loader's options for this place (without mode, key and schema_policy: the suite adds those
    # when the capabilities say the loader takes them)
    options: Callable[[Place], dict[str, Any]]
    # what the destination holds, all columns (any column order and types close to the written
    # ones), or None when nothing is there (no table, no file)
    read: Callable[[Place], pa.Table | None]
    # known gaps: test name -> why it fails today (run as a strict xfail)
    gaps: dict[str, str] = field(default_factory=dict)
    # what else the destination keeps on a table, made and looked at by the replace tests with SQL
    # (``execute``, ``indexes``, ``grant``/``granted``): "view", "index", "grant". A destination
    # without one says why in ``lacks``.
    objects: frozenset[str] = frozenset()
    lacks: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtractorBackend:
    id: str
    tool: str
    setup: Setup
    # put ``table`` at the source (``table`` has an ``id`` column, unique, with no nulls: a database
    # makes it the primary key), and return the extractor's options to read it
    write: Callable[[Place, pa.Table], dict[str, Any]]
    # options naming a location that does not exist (a missing file, table, bucket...)
    missing: Callable[[Place], dict[str, Any]]
    # the Arrow type the source gives back for a column, where it is not the written one
    types: dict[str, pa.DataType] = field(default_factory=dict)
    # known gaps: test name -> why it fails today (the test runs as xfail, strict: fixing the gap
    # makes it pass and asks for the entry to go)
    gaps: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def nothing(place: Place) -> Iterator[None]:
    yield


# -- databases ---------------------------------------------------------------------------------


def _admin(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://")
                            .replace("mysql://", "mysql+pymysql://"), isolation_level="AUTOCOMMIT")


def pg_schema(tool_url: str) -> Setup:
    """A private PostgreSQL schema named ``place.name``; ``tool_url`` is the connection url the tool gets."""

    @contextlib.contextmanager
    def setup(place: Place) -> Iterator[None]:
        admin = _admin(PG)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{place.name}"')
        place.connections = {"db": {"url": tool_url}}
        place.data.update(read_url=PG, table=f'"{place.name}"."t"', spelled=f"{place.name}.t")
        try:
            yield
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{place.name}" CASCADE')
            admin.dispose()
            _dispose(place)

    return setup


def maria_database(tool_scheme: str) -> Setup:
    """A private MariaDB database named ``place.name``."""

    @contextlib.contextmanager
    def setup(place: Place) -> Iterator[None]:
        admin = _admin(f"{MARIA}/test")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{place.name}` CHARACTER SET utf8mb4")
        url = f"{MARIA}/{place.name}?charset=utf8mb4"
        place.connections = {"db": {"url": url.replace("mysql://", tool_scheme)}}
        place.data.update(read_url=url, table="`t`", spelled="t")
        try:
            yield
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{place.name}`")
            admin.dispose()
            _dispose(place)

    return setup


def sqlite_file(absolute: bool = False) -> Setup:
    @contextlib.contextmanager
    def setup(place: Place) -> Iterator[None]:
        path = place.dir / f"{place.name}.db"
        place.connections = {"db": {"url": f"sqlite:///{path}" if absolute else f"sqlite:///{path.name}"}}
        place.data.update(read_url=f"sqlite:///{path}", table='"t"', spelled="t")
        try:
            yield
        finally:
            _dispose(place)

    return setup


@contextlib.contextmanager
def duckdb_file(place: Place) -> Iterator[None]:
    path = place.dir / f"{place.name}.duckdb"
    place.connections = {"db": {"url": f"duckdb:///{path.name}"}}
    place.data.update(duckdb=path, table='"t"', spelled="t")
    yield


def _engine(place: Place) -> sa.Engine:
    if "engine" not in place.data:
        place.data["engine"] = _admin(place.data["read_url"])
    return place.data["engine"]


def _dispose(place: Place) -> None:
    eng = place.data.pop("engine", None)
    if eng is not None:
        eng.dispose()


def sql_rows(place: Place, text: str) -> tuple[list[str], list[tuple]] | None:
    """Column names and rows of a query on the place's database; None if its table is missing."""
    if "duckdb" in place.data:
        import duckdb

        if not place.data["duckdb"].exists():
            return None
        # the same process may hold the file open for a load: connect() shares that database
        con = duckdb.connect(str(place.data["duckdb"]))
        try:
            cur = con.cursor()
            try:
                cur.execute(text)
            except duckdb.CatalogException:
                return None
            return [d[0] for d in cur.description], [tuple(r) for r in cur.fetchall()]
        finally:
            con.close()
    try:
        with _engine(place).connect() as conn:
            result = conn.exec_driver_sql(text)
            return list(result.keys()), [tuple(r) for r in result]
    except (sa.exc.ProgrammingError, sa.exc.OperationalError) as e:
        if _missing_table(e):
            return None
        raise


def _missing_table(e: Exception) -> bool:
    text = str(getattr(e, "orig", e)).lower()
    return any(s in text for s in ("no such table", "does not exist", "doesn't exist", "1146"))


def execute(place: Place, *statements: str) -> None:
    """Run SQL on the place's database (DDL, grants), each statement committed."""
    if "duckdb" in place.data:
        import duckdb

        con = duckdb.connect(str(place.data["duckdb"]))
        try:
            for s in statements:
                con.execute(s)
        finally:
            con.close()
        return
    with _engine(place).connect() as conn:
        for s in statements:
            conn.exec_driver_sql(s.replace("%", "%%") if not place.data["read_url"].startswith("sqlite") else s)


def named(place: Place, name: str) -> str:
    """``name`` quoted and qualified as the place's table is (``"schema"."t"`` -> ``"schema"."name"``)."""
    table = place.data["table"]
    return table[:-2] + name + table[-1]


def indexes(place: Place) -> set[tuple[str, str]]:
    """(name, definition or columns) of the indexes on the place's table."""
    if "duckdb" in place.data:
        got = sql_rows(place, "SELECT index_name, sql FROM duckdb_indexes() WHERE table_name = 't'")
    elif place.data["read_url"].startswith("sqlite"):
        got = sql_rows(place, "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 't'")
    elif place.data["read_url"].startswith("postgresql"):
        got = sql_rows(place, f"SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = '{place.name}' "
                              "AND tablename = 't'")
    else:
        got = sql_rows(place, f"SELECT INDEX_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) FROM "
                              f"information_schema.STATISTICS WHERE TABLE_SCHEMA = '{place.name}' AND "
                              "TABLE_NAME = 't' GROUP BY INDEX_NAME")
    return set(got[1]) if got else set()


def grant(place: Place, role: str) -> Callable[[], None]:
    """Make ``role``, grant it SELECT on the place's table; returns what drops the role again."""
    if place.data["read_url"].startswith("postgresql"):
        execute(place, f'CREATE ROLE "{role}"', f'GRANT SELECT ON {place.data["table"]} TO "{role}"')
        return lambda: execute(place, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')
    execute(place, f"CREATE USER '{role}'@'localhost'", f"GRANT SELECT ON `{place.name}`.`t` TO '{role}'@'localhost'")
    return lambda: execute(place, f"DROP USER '{role}'@'localhost'")


def granted(place: Place, role: str) -> bool:
    """Whether ``role`` may SELECT from the place's table."""
    if place.data["read_url"].startswith("postgresql"):
        return sql_rows(place, f"SELECT has_table_privilege('{role}', '{place.data['table']}', 'SELECT')")[1][0][0]
    got = sql_rows(place, f"SELECT 1 FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = \"'{role}'@'localhost'\" "
                          f"AND TABLE_SCHEMA = '{place.name}' AND TABLE_NAME = 't' AND PRIVILEGE_TYPE = 'SELECT'")
    return bool(got and got[1])


def read_table(place: Place) -> pa.Table | None:
    got = sql_rows(place, f"SELECT * FROM {_qualified(place)}")
    if got is None:
        return None
    names, rows = got
    return pa.Table.from_pylist([dict(zip(names, r)) for r in rows]) if rows else pa.table(
        {n: pa.array([], pa.null()) for n in names})


def _qualified(place: Place) -> str:
    return place.data["table"]


def table_options(place: Place) -> dict[str, Any]:
    return {"connection": "db", "table": place.data["spelled"]}


# how each database spells the columns of an extractor's test table
_DDL = {
    "postgres": {"int64": "BIGINT", "string": "TEXT", "double": "DOUBLE PRECISION", "bool": "BOOLEAN",
                 "date32[day]": "DATE", "timestamp[us, tz=UTC]": "TIMESTAMPTZ"},
    "mysql": {"int64": "BIGINT", "string": "VARCHAR(100)", "double": "DOUBLE", "bool": "BOOLEAN",
              "date32[day]": "DATE", "timestamp[us, tz=UTC]": "TIMESTAMP(6) NULL"},
    "sqlite": {"int64": "INTEGER", "string": "TEXT", "double": "REAL", "bool": "BOOLEAN", "date32[day]": "DATE",
               "timestamp[us, tz=UTC]": "TIMESTAMPTZ"},
    "duckdb": {"int64": "BIGINT", "string": "VARCHAR", "double": "DOUBLE", "bool": "BOOLEAN", "date32[day]": "DATE",
               "timestamp[us, tz=UTC]": "TIMESTAMPTZ"},
}


def _literal(v: Any, dialect: str) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return ("1" if v else "0") if dialect in ("sqlite", "mysql") else ("TRUE" if v else "FALSE")
    if isinstance(v, dt.datetime):
        v = v.astimezone(dt.timezone.utc)
        if dialect == "mysql":
            return f"'{v.replace(tzinfo=None).isoformat(sep=' ')}'"
        return f"'{v.isoformat()}'"
    if isinstance(v, (dt.date, str)):
        return "'" + str(v).replace("'", "''") + "'"
    return repr(v)


def db_writer(dialect: str) -> Callable[[Place, pa.Table], dict[str, Any]]:
    def write(place: Place, table: pa.Table) -> dict[str, Any]:
        ddl = _DDL[dialect]
        q = (lambda n: f"`{n}`") if dialect == "mysql" else (lambda n: f'"{n}"')
        cols = ", ".join(f"{q(f.name)} {ddl[str(f.type)]}{' NOT NULL PRIMARY KEY' if f.name == 'id' else ''}"
                         for f in table.schema)
        statements = [f"CREATE TABLE {_qualified(place)} ({cols})"]
        rows = table.to_pylist()
        for i in range(0, len(rows), 500):
            values = ", ".join("(" + ", ".join(_literal(v, dialect) for v in r.values()) + ")" for r in rows[i:i + 500])
            statements.append(f"INSERT INTO {_qualified(place)} VALUES {values}")
        if "duckdb" in place.data:
            import duckdb

            with duckdb.connect(str(place.data["duckdb"])) as con:
                con.execute("SET TimeZone = 'UTC'")
                for s in statements:
                    con.execute(s)
        else:
            with _engine(place).connect() as conn:
                for s in statements:
                    conn.exec_driver_sql(s.replace("%", "%%") if dialect != "sqlite" else s)
        return table_options(place)

    return write


def missing_table(place: Place) -> dict[str, Any]:
    """A table that is not there, in a database that is (so the table is what the error names)."""
    if "duckdb" in place.data:
        import duckdb

        duckdb.connect(str(place.data["duckdb"])).close()
    elif place.data.get("read_url", "").startswith("sqlite"):
        with _engine(place).connect() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS other (x INTEGER)")
    schema, _, _ = place.data["spelled"].rpartition(".")
    return {"connection": "db", "table": f"{schema}.no_such_table" if schema else "no_such_table"}


# -- files -------------------------------------------------------------------------------------


def file_setup(suffix: str) -> Setup:
    @contextlib.contextmanager
    def setup(place: Place) -> Iterator[None]:
        place.data["path"] = f"out/{place.name}.{suffix}"
        yield

    return setup


def file_options(place: Place) -> dict[str, Any]:
    return {"path": place.data["path"]}


@contextlib.contextmanager
def _opened(place: Place) -> Iterator[BinaryIO | None]:
    """The place's file, opened once (None if there is none): every read of one look goes through
    this one handle, so a reader sees the file that was there when it opened it, whole, even if a
    replace renames a new one over the path meanwhile (``pq.read_table(path)`` opens the path twice)."""
    try:
        f = open(place.dir / place.data["path"], "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        yield None
        return
    with f:
        yield f


def read_csv(place: Place) -> pa.Table | None:
    with _opened(place) as f:
        return pacsv.read_csv(f) if f else None


def read_jsonl(place: Place) -> pa.Table | None:
    with _opened(place) as f:
        if f is None:
            return None
        data = f.read()
    return pajson.read_json(io.BytesIO(data)) if data else pa.table({})


def read_parquet(place: Place) -> pa.Table | None:
    with _opened(place) as f:
        return pq.read_table(f) if f else None


def read_excel(place: Place) -> pa.Table | None:
    import openpyxl

    with _opened(place) as f:
        if f is None:
            return None
        wb = openpyxl.load_workbook(f, read_only=True)
        try:
            rows = list(wb.worksheets[0].iter_rows(values_only=True))
        finally:
            wb.close()
    if not rows:
        return pa.table({})
    return pa.Table.from_pylist([dict(zip(rows[0], r)) for r in rows[1:]]) if len(rows) > 1 else pa.table(
        {n: pa.array([], pa.null()) for n in rows[0]})


def _write_file(place: Place, suffix: str, put: Callable[[Path], None]) -> dict[str, Any]:
    path = place.dir / "in" / f"{place.name}.{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    put(path)
    return {"path": str(path.relative_to(place.dir))}


def _records(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v for k, v in r.items()}
            for r in table.to_pylist()]


def write_csv(place: Place, table: pa.Table) -> dict[str, Any]:
    return _write_file(place, "csv", lambda p: pacsv.write_csv(table, p))


def write_parquet(place: Place, table: pa.Table) -> dict[str, Any]:
    return _write_file(place, "parquet", lambda p: pq.write_table(table, p, row_group_size=100))


def write_jsonl(place: Place, table: pa.Table) -> dict[str, Any]:
    return _write_file(place, "jsonl", lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in _records(table))))


def write_json(place: Place, table: pa.Table) -> dict[str, Any]:
    return _write_file(place, "json", lambda p: p.write_text(json.dumps(_records(table))))


def write_excel(place: Place, table: pa.Table) -> dict[str, Any]:
    import openpyxl

    def put(path: Path) -> None:
        wb = openpyxl.Workbook(write_only=True)
        ws = wb.create_sheet("data")
        ws.append(table.column_names)
        for r in table.to_pylist():
            ws.append([v.astimezone(dt.timezone.utc).replace(tzinfo=None) if isinstance(v, dt.datetime) else v
                       for v in r.values()])
        wb.save(path)

    return _write_file(place, "xlsx", put)


def missing_file(suffix: str) -> Callable[[Place], dict[str, Any]]:
    return lambda place: {"path": f"in/{place.name}-missing.{suffix}"}


# -- S3: moto's S3 server on loopback, started once for the session, a bucket per test ---------

_S3: dict[str, Any] = {}


def s3_bucket(place: Place) -> ContextManager[Any]:
    @contextlib.contextmanager
    def setup() -> Iterator[None]:
        import os

        import boto3
        from moto.server import ThreadedMotoServer

        if not _S3:
            for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                         "AWS_DEFAULT_REGION": "us-east-1"}.items():
                os.environ.setdefault(k, v)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            _S3["endpoint"] = "http://{}:{}".format(*server.get_host_and_port())
            _S3["client"] = boto3.client("s3", endpoint_url=_S3["endpoint"], region_name="us-east-1")
        client, bucket = _S3["client"], place.name.replace("_", "-")
        client.create_bucket(Bucket=bucket)
        place.data.update(bucket=bucket, endpoint=_S3["endpoint"])
        try:
            yield
        finally:
            for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            for o in client.list_objects_v2(Bucket=bucket).get("Contents", []):
                client.delete_object(Bucket=bucket, Key=o["Key"])
            client.delete_bucket(Bucket=bucket)

    return setup()


def s3_options(place: Place) -> dict[str, Any]:
    return {"url": f"s3://{place.data['bucket']}/out/data.parquet", "endpoint_url": place.data["endpoint"]}


def read_s3_parquet(place: Place) -> pa.Table | None:
    client = _S3["client"]
    try:
        body = client.get_object(Bucket=place.data["bucket"], Key="out/data.parquet")["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return pq.read_table(io.BytesIO(body))


def write_s3(suffix: str, write: Callable[[Place, pa.Table], dict[str, Any]]) -> Callable[[Place, pa.Table], dict[str, Any]]:
    def put(place: Place, table: pa.Table) -> dict[str, Any]:
        path = place.dir / write(place, table)["path"]
        _S3["client"].put_object(Bucket=place.data["bucket"], Key=f"in/{path.name}", Body=path.read_bytes())
        return {"url": f"s3://{place.data['bucket']}/in/*.{suffix}", "endpoint_url": place.data["endpoint"]}

    return put


def missing_s3(place: Place) -> dict[str, Any]:
    return {"url": f"s3://{place.data['bucket']}/in/missing-*.parquet", "endpoint_url": place.data["endpoint"]}



# -- the lists the suites run over -------------------------------------------------------------

_SERVER = frozenset({"view", "index", "grant"})
_FILE_DB = frozenset({"view", "index"})
_NO_GRANTS = {"grant": "an embedded database file has no roles or grants: who can open the file reads it"}

LOADERS: list[LoaderBackend] = [
    LoaderBackend("postgres", "postgres", pg_schema(PG), table_options, read_table, objects=_SERVER),
    LoaderBackend("mysql", "mysql", maria_database("mysql://"), table_options, read_table, objects=_SERVER),
    LoaderBackend("sqlite", "sqlite", sqlite_file(), table_options, read_table, objects=_FILE_DB, lacks=_NO_GRANTS),
    LoaderBackend("duckdb", "duckdb", duckdb_file, table_options, read_table, objects=_FILE_DB, lacks=_NO_GRANTS),
    LoaderBackend("sql-sqlite", "sql", sqlite_file(absolute=True), table_options, read_table, objects=_FILE_DB,
                  lacks=_NO_GRANTS),
    LoaderBackend("sql-postgresql", "sql", pg_schema(PG.replace("postgresql://", "postgresql+psycopg://")),
                  table_options, read_table, objects=_SERVER),
    LoaderBackend("sql-mariadb", "sql", maria_database("mysql+pymysql://"), table_options, read_table,
                  objects=_SERVER,
                  gaps={"test_a_replace_keeps_the_tables_indexes": "tool: sql replaces on MariaDB by swapping in a "
                        "table made from the stream's schema (tool: mysql keeps them)"}),
    LoaderBackend("csv", "csv", file_setup("csv"), file_options, read_csv),
    LoaderBackend("jsonl", "jsonl", file_setup("jsonl"), file_options, read_jsonl),
    LoaderBackend("parquet", "parquet", file_setup("parquet"), file_options, read_parquet),
    LoaderBackend("excel", "excel", file_setup("xlsx"), file_options, read_excel),
    LoaderBackend("s3-parquet", "s3", s3_bucket, s3_options, read_s3_parquet),
    LoaderBackend("http", "http", rest_api, hook_options, read_hook),
    LoaderBackend("redis_stream", "redis_stream", redis_stream, redis_sink_options, read_redis),
    LoaderBackend("nats", "nats", nats_stream, nats_sink_options, read_nats),
]

# JSON has no date or timestamp: pyarrow's reader makes ISO dates timestamps, and leaves strings
# with an offset as strings; Excel cells hold naive date-times (written in UTC)
_JSON_TYPES = {"day": pa.timestamp("s"), "at": pa.string()}

EXTRACTORS: list[ExtractorBackend] = [
    ExtractorBackend("csv", "csv", nothing, write_csv, missing_file("csv"), {"at": pa.timestamp("ns", "UTC")}),
    ExtractorBackend("json", "json", nothing, write_json, missing_file("json"), _JSON_TYPES),
    ExtractorBackend("jsonl", "jsonl", nothing, write_jsonl, missing_file("jsonl"), _JSON_TYPES),
    ExtractorBackend("parquet", "parquet", nothing, write_parquet, missing_file("parquet")),
    ExtractorBackend("excel", "excel", nothing, write_excel, missing_file("xlsx"),
                     {"day": pa.timestamp("us"), "at": pa.timestamp("us")}),
    ExtractorBackend("sqlite", "sqlite", sqlite_file(), db_writer("sqlite"), missing_table),
    ExtractorBackend("mysql", "mysql", maria_database("mysql://"), db_writer("mysql"), missing_table),
    ExtractorBackend("postgres", "postgres", pg_schema(PG), db_writer("postgres"), missing_table),
    ExtractorBackend("duckdb", "duckdb", duckdb_file, db_writer("duckdb"), missing_table),
    # SQLAlchemy reflects SQLite's TIMESTAMPTZ (no type it knows) as text
    ExtractorBackend("sql-sqlite", "sql", sqlite_file(absolute=True), db_writer("sqlite"), missing_table,
                     {"at": pa.string()}),
    ExtractorBackend("sql-postgresql", "sql", pg_schema(PG.replace("postgresql://", "postgresql+psycopg://")),
                     db_writer("postgres"), missing_table),
    # SQLAlchemy's MySQL dialect reflects BOOLEAN (TINYINT(1)) as an integer, TIMESTAMP without a zone
    ExtractorBackend("sql-mariadb", "sql", maria_database("mysql+pymysql://"), db_writer("mysql"), missing_table,
                     {"flag": pa.int64(), "at": pa.timestamp("us")}),
    ExtractorBackend("s3-parquet", "s3", s3_bucket, write_s3("parquet", write_parquet), missing_s3),
    ExtractorBackend("s3-csv", "s3", s3_bucket, write_s3("csv", write_csv), missing_s3, {"at": pa.timestamp("ns", "UTC")}),
    # a JSON API: dates and timestamps come as the ISO text the API wrote
    ExtractorBackend("rest", "rest", rest_api, rest_write, rest_missing, {"day": pa.string(), "at": pa.string()}),
    ExtractorBackend("redis_stream", "redis_stream", redis_stream, redis_write, redis_missing, _JSON_TYPES),
    ExtractorBackend("nats", "nats", nats_stream, nats_write, nats_missing, _JSON_TYPES),
]
