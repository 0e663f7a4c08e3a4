"""``agent-etl init`` on PostgreSQL numerics the extractor reads as text (no precision, beyond
decimal128, negative scale): a CHECK on them gives no range check of numbers, which would stop
every run ('min 0.0 cannot be compared with column of type string'); the pipeline runs."""

from __future__ import annotations

import uuid

import pytest
import yaml
from tests.cli.conftest import cli

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.services("postgres")
def test_checks_on_numerics_read_as_text_make_no_range(tmp_path):
    import psycopg

    schema = f"initnum_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"""
            create schema {schema};
            create table {schema}.prices(id int primary key, free numeric check (free >= 0),
                                         wide numeric(40, 2) check (wide >= 0),
                                         fixed numeric(10, 2) check (fixed >= 0));
            insert into {schema}.prices values (1, 1.5, 2.5, 3.5), (2, 10, 20, 30);
        """)
    try:
        r = cli("init", PG, "--schema", schema, "--no-memory", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        spec = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
        checks = [c for g in spec["quality"] for c in g["checks"]]
        ranges = [c["range"]["column"] for c in checks if "range" in c]
        assert ranges == ["fixed"]  # read as decimal128(10, 2): compared as a number
        r = cli("run", "-q", "pipeline.yaml", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"drop schema {schema} cascade")
