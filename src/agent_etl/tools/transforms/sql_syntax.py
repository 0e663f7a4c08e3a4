"""SQL written in a spec (filter's ``where``, derive's expressions, sql's ``query``) parsed when the
spec is validated, so a syntax error or a second statement is a spec error (exit 2) found before
anything runs, not a failed task. Parsing only: names are bound when the data is there."""

from __future__ import annotations


def parse_one(sql: str, what: str) -> None:
    """Raise ValueError naming ``what`` unless ``sql`` is exactly one query (a SELECT, or a PIVOT,
    which DuckDB parses as a MULTI statement)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.ParserException as e:
        raise ValueError(f"{what} is not valid SQL: {str(e).splitlines()[0].removeprefix('Parser Error: ')}") from None
    if len(statements) != 1:
        raise ValueError(f"{what} must be one query, not {len(statements)} statements")
    if statements[0].type.name not in ("SELECT", "MULTI"):
        raise ValueError(f"{what} must be a query (SELECT), not {statements[0].type.name}")


def check_expression(expression: str, what: str) -> str:
    """An expression over a batch's columns, checked as the select list it becomes."""
    parse_one(f"SELECT (\n{expression}\n) FROM t", what)
    return expression
