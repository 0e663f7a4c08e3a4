"""Fixtures of the database tool tests: a private database or schema per test, dropped afterwards."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def mysql_db():
    """A fresh MariaDB database on 127.0.0.1 (root, no password): ``(name, url)``; dropped after the test."""
    import pymysql

    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True, charset="utf8mb4")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` DEFAULT CHARACTER SET utf8mb4")
        yield name, f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_target():
    """A fresh PostgreSQL schema in database `test` for a loader to write into: ``(schema, url)``;
    dropped (with everything in it) after the test."""
    import psycopg

    name = f"load_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
        try:
            yield name, PG_URL
        finally:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class PgSource:
    """A private schema to read from: ``schema``, ``url``, and ``run(sql, params)`` for set-up."""

    def __init__(self, conn, schema: str, url: str):
        self.conn, self.schema, self.url = conn, schema, url

    def run(self, sql: str, params=None) -> list[tuple]:
        cur = self.conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def pg_source():
    """A fresh PostgreSQL schema in database `test`, first on the search path of ``run`` (and of a
    pipeline using ``pg_source.url``); dropped with everything in it after the test."""
    import psycopg

    name = f"src_{uuid.uuid4().hex[:12]}"
    url = f"{PG_URL}?options=-csearch_path%3D{name}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
        try:
            conn.execute(f'SET search_path TO "{name}"')
            yield PgSource(conn, name, url)
        finally:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
