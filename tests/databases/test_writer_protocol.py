"""Every database loader's writer has the lifecycle ``blocking.write_stream`` drives
(``databases.writer.TableWriter``), and the postgres session the part ``end_unit`` needs
(``UnitWriter``); every loader declares its capabilities."""

from __future__ import annotations

import inspect

import pytest

from agent_etl.tools.capabilities import Capabilities
from agent_etl.tools.databases.blocking import Units
from agent_etl.tools.databases.writer import TableWriter, UnitWriter
from agent_etl.tools.loaders import duckdb, mysql, postgres, sql, sqlite
from agent_etl.tools.registry import default_registry


def methods(protocol: type) -> set[str]:
    """The methods a protocol declares, its bases' included."""
    return {n for base in protocol.__mro__ if base not in (object,) and getattr(base, "_is_protocol", False)
            for n, v in vars(base).items() if inspect.isfunction(v) and not n.startswith("_")}


@pytest.mark.parametrize("writer", [mysql._Writer, sqlite._Writer, duckdb._Writer, sql._Writer],
                         ids=["mysql", "sqlite", "duckdb", "sql"])
def test_each_table_writer_has_the_whole_lifecycle(writer):
    assert issubclass(writer, Units)  # rows, since, commits, landed
    assert methods(TableWriter) == {"open", "write", "ready", "commit", "close", "error"}
    for name in methods(TableWriter):
        assert callable(getattr(writer, name, None)), name


def test_the_postgres_session_ends_units_like_the_others():
    assert issubclass(postgres._Session, Units)
    assert methods(UnitWriter) == {"ready", "commit"}
    for name in methods(UnitWriter):
        assert callable(getattr(postgres._Session, name, None)), name


def test_every_loader_declares_its_capabilities():
    registry = default_registry()
    for name in ("postgres", "mysql", "sqlite", "duckdb", "sql", "csv", "jsonl", "parquet", "excel"):
        caps = registry.get("loader", name).capabilities
        assert isinstance(caps, Capabilities) and caps.modes, name
    assert registry.get("loader", "postgres").capabilities.two_phase
    assert not registry.get("loader", "sqlite").capabilities.two_phase
    assert registry.get("loader", "parquet").capabilities.modes == ("replace",)
