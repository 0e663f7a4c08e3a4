"""``agent-etl init``: the generated pipeline validates and runs, for SQLite, PostgreSQL, MariaDB and
files; its checks, cursors and merge keys come from the source; passwords never land in it; bad
sources are one line."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from tests.cli.conftest import cli

from agent_etl.generate.model import Column, check_ranges


def ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    return r


def one_line_error(r, code):
    assert r.returncode == code, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def make_shop(path):
    c = sqlite3.connect(path)
    c.executescript("""
        create table customers(id integer primary key, name text not null, email text unique);
        create table orders(id integer primary key, customer_id integer not null references customers(id),
                            amount real check (amount >= 0), qty int check (qty > 0 and qty <= 99),
                            updated_at timestamp not null);
        create table notes(body text);
        insert into customers values (1, 'ann', 'a@x'), (2, 'bob', null);
        insert into orders values (1, 1, 10.5, 2, '2024-01-02 00:00:00'), (2, 2, 3, 1, '2024-01-03 00:00:00');
        insert into notes values ('hello');
    """)
    c.commit()
    c.close()


def test_sqlite_to_default_lake(tmp_path):
    make_shop(tmp_path / "shop.db")
    ok(cli("init", "sqlite:///shop.db", "--no-memory", cwd=tmp_path))
    text = (tmp_path / "pipeline.yaml").read_text()
    spec = yaml.safe_load(text)
    assert set(spec["extract"]) == {"customers", "orders", "notes"}
    checks = {g["input"]: [c for g2 in spec["quality"] if g2["input"] == g["input"] for c in g2["checks"]]
              for g in spec["quality"]}
    assert {"not_null": ["id", "customer_id", "updated_at"]} in checks["orders"]
    assert {"unique": ["id"]} in checks["orders"]
    assert {"range": {"column": "amount", "min": 0}} in checks["orders"]
    assert {"range": {"column": "qty", "min": 1, "max": 99}} in checks["orders"]
    assert {"referential": {"column": "customer_id", "input": "customers", "key": "id"}} in checks["orders"]
    assert "notes" not in checks
    # a lake is rewritten whole by each run: the cursor is said, not used
    assert "incremental" not in spec["extract"]["orders"]
    assert "# incremental: {cursor: updated_at}" in text
    assert spec["load"]["orders_out"] == {"input": "orders", "tool": "parquet", "path": "out/orders/"}
    ok(cli("validate", "pipeline.yaml", cwd=tmp_path))
    ok(cli("run", "-q", "pipeline.yaml", cwd=tmp_path))
    assert pq.read_table(tmp_path / "out" / "orders").num_rows == 2
    assert pq.read_table(tmp_path / "out" / "notes").num_rows == 1


def test_sqlite_to_database_reads_incrementally_and_merges(tmp_path):
    make_shop(tmp_path / "shop.db")
    ok(cli("init", "sqlite:///shop.db", "--dest", "sqlite:///wh.db", "--out", "sub/p.yaml", "--no-memory",
           cwd=tmp_path))
    spec = yaml.safe_load((tmp_path / "sub" / "p.yaml").read_text())
    # both databases relative to the pipeline's folder, where the run looks for them
    assert spec["connections"]["source"]["url"] == "sqlite:///../shop.db"
    assert spec["connections"]["dest"]["url"] == "sqlite:///../wh.db"
    assert spec["extract"]["orders"]["incremental"] == {"cursor": "updated_at"}
    assert spec["extract"]["customers"]["incremental"] == {"cursor": "id"}  # an INTEGER PRIMARY KEY
    assert "incremental" not in spec["extract"]["notes"]
    assert spec["load"]["orders_out"]["mode"] == "merge" and spec["load"]["orders_out"]["key"] == ["id"]
    assert spec["load"]["notes_out"]["mode"] == "replace"
    ok(cli("run", "-q", "sub/p.yaml", cwd=tmp_path))
    c = sqlite3.connect(tmp_path / "shop.db")
    c.execute("update orders set amount = 99, updated_at = '2024-02-01 00:00:00' where id = 1")
    c.execute("insert into orders values (3, 1, 1, 1, '2024-02-02 00:00:00')")
    c.commit()
    c.close()
    ok(cli("run", "-q", "sub/p.yaml", cwd=tmp_path))
    wh = sqlite3.connect(tmp_path / "wh.db")
    assert wh.execute("select id, amount from orders order by id").fetchall() == [(1, 99.0), (2, 3.0), (3, 1.0)]


@pytest.mark.services("postgres")
def test_postgres_schema_password_as_variable(tmp_path):
    import psycopg

    schema = f"init_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        conn.execute(f"""
            create schema {schema};
            create table {schema}.customers(id serial primary key, name text not null);
            create table {schema}.orders(id bigint generated always as identity primary key,
                customer_id int not null references {schema}.customers(id), amount numeric(10,2) check (amount >= 0),
                qty int check (qty between 1 and 10), updated_at timestamptz not null default now());
            create table {schema}."Odd Name"(a int);
            insert into {schema}.customers(name) values ('ann'), ('bob');
            insert into {schema}.orders(customer_id, amount, qty) values (1, 1.5, 3), (2, 2, 4);
            insert into {schema}."Odd Name" values (1);
        """)
    try:
        # PostgreSQL here trusts local logins, so any password works: what matters is where it goes
        r = ok(cli("init", "postgresql://postgres:s3cr%40t@127.0.0.1:5432/test", "--schema", schema, "--dest",
                   "sqlite:///wh.db", "--no-memory", cwd=tmp_path))
        assert "SOURCE_PASSWORD" in r.stdout
        text = (tmp_path / "pipeline.yaml").read_text()
        assert "s3cr" not in text
        assert "# Set SOURCE_PASSWORD in the environment" in text
        spec = yaml.safe_load(text)
        assert spec["connections"]["source"]["url"] == "postgresql://postgres:${SOURCE_PASSWORD}@127.0.0.1:5432/test"
        step = f"{schema}_orders"
        assert spec["extract"][step]["table"] == f"{schema}.orders"
        assert spec["extract"][step]["incremental"] == {"cursor": "updated_at"}
        assert spec["extract"][f"{schema}_odd_name"]["table"] == f'{schema}."Odd Name"'
        checks = [c for g in spec["quality"] if g["input"] == step for c in g["checks"]]
        assert {"range": {"column": "qty", "min": 1, "max": 10}} in checks
        assert {"range": {"column": "amount", "min": 0}} in checks
        # customers is read incrementally (by its serial id): a check against new rows only would fail
        assert not any("referential" in c for c in checks)
        r = cli("validate", "pipeline.yaml", cwd=tmp_path)
        assert r.returncode == 2 and "SOURCE_PASSWORD" in r.stderr  # says what to set
        ok(cli("run", "-q", "pipeline.yaml", "--var", "SOURCE_PASSWORD=s3cr%40t", cwd=tmp_path))
        wh = sqlite3.connect(tmp_path / "wh.db")
        assert wh.execute(f"select count(*) from {step}").fetchone() == (2,)
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f"drop schema {schema} cascade")


@pytest.mark.services("mariadb")
def test_mariadb(tmp_path):
    import pymysql

    db = f"init_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"create database {db}")
            cur.execute(f"use {db}")
            cur.execute("create table customers(id int auto_increment primary key, name varchar(20) not null)")
            cur.execute("create table orders(id int auto_increment primary key, customer_id int not null, "
                        "amount decimal(10,2) check (amount >= 0), modified_at datetime not null default now(), "
                        "doc json, foreign key (customer_id) references customers(id))")
            cur.execute("insert into customers(name) values ('ann'), ('bob')")
            cur.execute("insert into orders(customer_id, amount) values (1, 1.5), (2, 2), (2, 0)")
            cur.execute("create table `odd.name` (a int)")
            cur.execute("insert into `odd.name` values (1)")
        ok(cli("init", f"mysql://root@127.0.0.1:3306/{db}", "--no-memory", cwd=tmp_path))
        spec = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
        checks = [c for g in spec["quality"] if g["input"] == "orders" for c in g["checks"]]
        assert {"referential": {"column": "customer_id", "input": "customers", "key": "id"}} in checks
        assert {"range": {"column": "amount", "min": 0}} in checks  # and not the CHECK json_valid(doc)
        assert spec["extract"]["orders"]["table"] == "orders"
        assert spec["extract"]["odd_name"]["table"] == '"odd.name"'  # one table, not database.table
        ok(cli("run", "-q", "pipeline.yaml", cwd=tmp_path))
        assert pq.read_table(tmp_path / "out" / "orders").num_rows == 3
        assert pq.read_table(tmp_path / "out" / "odd_name").num_rows == 1
    finally:
        with conn.cursor() as cur:
            cur.execute(f"drop database if exists {db}")
        conn.close()


def test_files_and_glob(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pacsv.write_csv(pa.table({"id": [1, 2], "name": ["a", "b"]}), data / "people.csv")
    (data / "events.jsonl").write_text('{"id": 1, "kind": "x"}\n{"id": 2, "kind": "y"}\n')
    pq.write_table(pa.table({"k": [1, 2, 3]}), data / "facts.parquet")
    (data / "readme.txt").write_text("not data")
    ok(cli("init", "data", "--no-memory", cwd=tmp_path))
    spec = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
    assert {k: (v["tool"], v["path"]) for k, v in spec["extract"].items()} == {
        "events": ("jsonl", "data/events.jsonl"), "facts": ("parquet", "data/facts.parquet"),
        "people": ("csv", "data/people.csv")}
    ok(cli("run", "-q", "pipeline.yaml", cwd=tmp_path))
    assert pq.read_table(tmp_path / "out" / "facts").num_rows == 3

    logs = tmp_path / "logs"
    logs.mkdir()
    for day in (1, 2, 3):
        pacsv.write_csv(pa.table({"day": [day], "hits": [day * 10]}), logs / f"2024-01-0{day}.csv")
    ok(cli("init", "logs/*.csv", "--out", "logs.yaml", "--dest", "lake", "--no-memory", cwd=tmp_path))
    spec = yaml.safe_load((tmp_path / "logs.yaml").read_text())
    (step,) = spec["extract"].values()  # same columns: one extract over the glob
    assert step == {"tool": "csv", "path": "logs/*.csv"}
    ok(cli("run", "-q", "logs.yaml", cwd=tmp_path))
    assert pq.read_table(tmp_path / "lake" / "all").num_rows == 3


def test_bad_sources(tmp_path):
    line = one_line_error(cli("init", "postgresql://postgres@127.0.0.1:1/test", cwd=tmp_path), 1)
    assert "unreachable" in line and "127.0.0.1:1" in line
    line = one_line_error(cli("init", "mysql://root:pw@127.0.0.1:1/test", cwd=tmp_path), 1)
    assert "pw" not in line.replace("pwd", "")
    sqlite3.connect(tmp_path / "empty.db").execute("create table t(a)").connection.execute("drop table t")
    line = one_line_error(cli("init", "sqlite:///empty.db", cwd=tmp_path), 1)
    assert "has no tables" in line
    line = one_line_error(cli("init", "ftp://host/x", cwd=tmp_path), 2)
    assert "not one init can read" in line
    line = one_line_error(cli("init", "nowhere/*.csv", cwd=tmp_path), 1)
    assert "no data files" in line
    assert not (tmp_path / "pipeline.yaml").exists()
    make_shop(tmp_path / "shop.db")
    ok(cli("init", "sqlite:///shop.db", "--no-memory", cwd=tmp_path))
    line = one_line_error(cli("init", "sqlite:///shop.db", "--no-memory", cwd=tmp_path), 2)
    assert "--force" in line


def test_memory_settings(tmp_path):
    """A pipeline that ran before from a similar source lends its batch size to the new one."""
    make_shop(tmp_path / "shop.db")
    ok(cli("init", "sqlite:///shop.db", "--no-memory", cwd=tmp_path))
    p = tmp_path / "pipeline.yaml"
    p.write_text(p.read_text().replace("version: 1\n", "version: 1\ndefaults: {batch_size: 777}\n"))
    chroma = {"AGENT_ETL_MEMORY": "chroma"}
    ok(cli("run", "-q", "pipeline.yaml", cwd=tmp_path, env=chroma))
    make_shop(tmp_path / "shop2.db")
    r = ok(cli("init", "sqlite:///shop2.db", "--out", "second.yaml", cwd=tmp_path, env=chroma))
    spec = yaml.safe_load((tmp_path / "second.yaml").read_text())
    assert spec["defaults"]["batch_size"] == 777, r.stdout
    assert "from memory" in (tmp_path / "second.yaml").read_text()
    # read from Chroma's files (memory.peek): chromadb is not imported, the settings are the same
    code = ("import atexit, sys\natexit.register(lambda: print('chromadb' in sys.modules))\n"
            "sys.argv = ['agent-etl', 'init', 'sqlite:///shop2.db', '--out', 'third.yaml']\n"
            "from agent_etl.cli.app import main\nmain()\n")
    r = ok(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "AGENT_ETL_HOME": str(tmp_path / ".agent-etl"), **chroma}))
    assert r.stdout.strip().endswith("False"), r.stdout
    third = (tmp_path / "third.yaml").read_text()
    assert yaml.safe_load(third)["defaults"]["batch_size"] == 777 and "from memory" in third


def test_an_empty_memory_is_looked_up_without_chromadb(tmp_path):
    """init reads its look-up from Chroma's files (memory.peek): an empty memory costs no chromadb
    import (test_memory_settings: a memory with experiences neither, and its settings are used)."""
    from agent_etl.memory import open_memory

    home = tmp_path / ".agent-etl"
    open_memory("chroma", home).close()
    make_shop(tmp_path / "shop.db")
    code = ("import atexit, sys\natexit.register(lambda: print('chromadb' in sys.modules))\n"
            "sys.argv = ['agent-etl', 'init', 'sqlite:///shop.db']\nfrom agent_etl.cli.app import main\nmain()\n")
    r = ok(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "AGENT_ETL_MEMORY": "chroma", "AGENT_ETL_HOME": str(home)}))
    assert r.stdout.strip().endswith("False"), r.stdout
    assert "defaults:" not in (tmp_path / "pipeline.yaml").read_text()


@pytest.mark.parametrize("expression, expected", [
    ("CHECK (((qty > 0) AND (qty <= 100)))", [{"column": "qty", "min": 1, "max": 100}]),
    ("CHECK ((amount >= (0)::numeric))", [{"column": "amount", "min": 0}]),
    ("amount > 0", [{"column": "amount", "min": 0, "inclusive": False}]),
    ("0 < amount", [{"column": "amount", "min": 0, "inclusive": False}]),
    ("qty BETWEEN 1 AND 9", [{"column": "qty", "min": 1, "max": 9}]),
    ("amount > 0 OR qty > 1", []),
    ("amount >= 0 AND name <> ''", []),
    ("`qty` >= 1", [{"column": "qty", "min": 1}]),
    ("json_valid(`doc`)", []),
    ("name >= 1", []),  # not a number column
])
def test_check_ranges(expression, expected):
    cols = {"qty": Column("qty", "int", "integer"), "amount": Column("amount", "numeric", "number"),
            "name": Column("name", "text", "text")}
    assert check_ranges(expression, cols) == expected


def test_s3_objects(tmp_path, s3_endpoint, s3, bucket):
    for day in (1, 2):
        buf = pa.BufferOutputStream()
        pq.write_table(pa.table({"day": [day], "hits": [day * 10]}), buf)
        s3.put_object(Bucket=bucket, Key=f"events/{day}.parquet", Body=buf.getvalue().to_pybytes())
    ok(cli("init", f"s3://{bucket}/events/*.parquet", "--endpoint-url", s3_endpoint, "--no-memory", cwd=tmp_path))
    spec = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
    (step,) = spec["extract"].values()
    assert step == {"tool": "s3", "url": f"s3://{bucket}/events/*.parquet", "endpoint_url": s3_endpoint}
    ok(cli("run", "-q", "pipeline.yaml", cwd=tmp_path))
    (out,) = spec["load"].values()
    assert pq.read_table(tmp_path / out["path"]).num_rows == 2


def test_json_endpoint(tmp_path):
    import http.server
    import threading

    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "items.json").write_text('{"data": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}')

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path / "api"), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        ok(cli("init", f"{url}/items.json", "--no-memory", cwd=tmp_path))
        spec = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
        assert spec["extract"]["items"] == {"tool": "rest", "url": f"{url}/items.json", "records": "data"}
        ok(cli("run", "-q", "pipeline.yaml", cwd=tmp_path))
        assert pq.read_table(tmp_path / "out" / "items").num_rows == 2
        # a credential in the query goes to a variable, the rest of the query stays
        r = ok(cli("init", f"{url}/items.json?api_key=abc123&limit=5", "--out", "keyed.yaml", "--dest", "lake2",
                   "--no-memory", cwd=tmp_path))
        assert "set API_KEY before running it" in r.stdout
        text = (tmp_path / "keyed.yaml").read_text()
        assert "abc123" not in text and "# Set API_KEY in the environment" in text
        assert yaml.safe_load(text)["extract"]["items"]["url"] == f"{url}/items.json?api_key=${{API_KEY}}&limit=5"
        ok(cli("run", "-q", "keyed.yaml", "--var", "API_KEY=abc123", cwd=tmp_path))
        assert pq.read_table(tmp_path / "lake2" / "items").num_rows == 2
        line = one_line_error(cli("init", f"{url}/missing.json", "--out", "x.yaml", cwd=tmp_path), 1)
        assert "HTTP 404" in line
    finally:
        server.shutdown()


def test_duckdb_file(tmp_path):
    import duckdb

    con = duckdb.connect(str(tmp_path / "shop.duckdb"))
    con.execute("create sequence s")
    con.execute("create table customers(id integer primary key default nextval('s'), name varchar not null)")
    con.execute("create table orders(id integer primary key, customer_id integer not null references customers(id), "
                "amount decimal(10,2) check (amount >= 0))")
    con.execute("insert into customers(name) values ('a'), ('b')")
    con.execute("insert into orders values (1, 1, 2.5), (2, 2, 3)")
    con.close()
    ok(cli("init", "shop.duckdb", "--no-memory", cwd=tmp_path))
    spec = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
    assert spec["connections"]["source"]["url"] == "duckdb:///shop.duckdb"
    checks = [c for g in spec["quality"] if g["input"] == "orders" for c in g["checks"]]
    assert {"referential": {"column": "customer_id", "input": "customers", "key": "id"}} in checks
    assert {"range": {"column": "amount", "min": 0}} in checks
    ok(cli("run", "-q", "pipeline.yaml", cwd=tmp_path))
    assert pq.read_table(tmp_path / "out" / "orders").num_rows == 2


def test_foreign_keys_that_cannot_be_checked(tmp_path):
    """A cycle of foreign keys, a table referring to itself and a composite key: the pipeline still
    validates and runs (no cycle of checks), and the comments say what was left out and why."""
    c = sqlite3.connect(tmp_path / "org.db")
    c.executescript("""
        create table teams(id integer primary key, lead_id integer references people(id));
        create table people(id integer primary key, team_id integer references teams(id),
                            manager_id integer references people(id));
        create table slots(day int, room int, primary key (day, room));
        create table bookings(id integer primary key, day int, room int,
                              foreign key (day, room) references slots(day, room));
        insert into teams values (1, 1); insert into people values (1, 1, null);
        insert into slots values (1, 1); insert into bookings values (1, 1, 1);
    """)
    c.commit()
    c.close()
    ok(cli("init", "org.db", "--no-memory", cwd=tmp_path))
    text = (tmp_path / "pipeline.yaml").read_text()
    spec = yaml.safe_load(text)
    refs = [(g["input"], c["referential"]["input"]) for g in spec["quality"] for c in g["checks"] if "referential" in c]
    assert len(refs) == 1 and set(refs[0]) == {"teams", "people"}  # one of the two directions
    assert "the tables refer to each other" in text
    assert "manager_id -> people(id): the table itself" in text
    assert "day, room -> slots(day, room): a composite key" in text
    assert {"unique": ["day", "room"]} in [c for g in spec["quality"] if g["input"] == "slots" for c in g["checks"]]
    ok(cli("run", "-q", "pipeline.yaml", cwd=tmp_path))


def test_workbook_sheets_and_an_empty_file(tmp_path):
    import openpyxl

    data = tmp_path / "data"
    data.mkdir()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "people"
    for row in (["id", "name"], [1, "a"], [2, "b"]):
        ws.append(row)
    other = wb.create_sheet("prices")
    for row in (["sku", "price"], ["x", 1.5]):
        other.append(row)
    wb.create_sheet("empty")
    wb.save(data / "book.xlsx")
    (data / "nothing.csv").write_text("")
    ok(cli("init", "data", "--no-memory", cwd=tmp_path))
    text = (tmp_path / "pipeline.yaml").read_text()
    spec = yaml.safe_load(text)
    assert spec["extract"] == {"book_people": {"tool": "excel", "path": "data/book.xlsx", "sheet": "people"},
                               "book_prices": {"tool": "excel", "path": "data/book.xlsx", "sheet": "prices"}}
    assert "# Not read: sheet 'empty' of data/book.xlsx: no rows to learn the columns from" in text
    assert "# Not read: data/nothing.csv: an empty file (no header, no rows)" in text
    ok(cli("run", "-q", "pipeline.yaml", cwd=tmp_path))
    assert pq.read_table(tmp_path / "out" / "book_prices").num_rows == 1
