"""``expression``: a SQL predicate every row must satisfy, evaluated by DuckDB over each batch.

``- expression: "amount >= 0 and status <> 'void'"`` flags the rows where the predicate is
false. A predicate that is NULL (unknown, e.g. ``amount >= 0`` on a null amount) passes, as in a
SQL ``CHECK`` constraint and dbt's ``expression_is_true``, so it composes with ``not_null`` like
the other row checks; write ``coalesce(amount >= 0, false)`` to fail unknown rows too. Give the
check a short ``name`` for reports and the quarantine reason:
``- expression: {predicate: "amount >= 0", name: non_negative}``.

The predicate is parsed when the spec is validated (a syntax error is a spec error with its
line) and bound against the stream's columns before the first batch (an unknown column or a
type mismatch likewise). It sees the batch as a table, so it can only look at the row itself.
"""

from __future__ import annotations

import re

import pyarrow as pa
from pydantic import Field, field_validator

from agent_etl.exceptions import Problem, ToolError
from agent_etl.tools.databases.duckdb.in_memory import BatchQuery, reason, sql_errors
from agent_etl.tools.validators.base import Check, CheckConfig
from agent_etl.tools.validators.rows import _no_nulls

_TABLE = "__agent_etl_check"


class Expression(Check):
    """Fail rows where a SQL predicate is false (NULL passes); DuckDB over the batch."""

    shorthand = "predicate"

    class Config(CheckConfig):
        """A DuckDB predicate over the row's columns: ``expression: "amount >= 0 and status <> 'x'"``."""

        predicate: str = Field(
            min_length=1, description="a SQL boolean expression over the row's columns; rows where it is false fail")
        name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="short label for reports")

        @field_validator("predicate")
        @classmethod
        def _parses(cls, predicate: str) -> str:
            import duckdb

            try:
                statements = duckdb.connect(":memory:").extract_statements(f"SELECT ({predicate}\n)")
            except duckdb.Error as e:
                raise ValueError(f"invalid SQL predicate {predicate!r}: {reason(e)}") from None
            if len(statements) != 1:
                raise ValueError(f"the predicate {predicate!r} must be one expression, not several statements")
            return predicate

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self._query = BatchQuery(_TABLE, f"SELECT NOT coalesce(CAST(({config.predicate}\n) AS BOOLEAN), true) "
                                         f"FROM {_TABLE}")
        self._bound: pa.Schema | None = None
        self._reads: list[str] = []

    @property
    def label(self) -> str:
        text = self.config.name or re.sub(r"\s+", " ", self.config.predicate).strip()
        return f"expression({text if len(text) <= 60 else text[:57] + '...'})"

    def columns(self) -> list[str]:
        # the columns the predicate names, for the examples of failing rows (known once bound)
        return list(self._reads)

    def bind(self, schema: pa.Schema) -> list[Problem]:
        try:
            self._query.column(pa.RecordBatch.from_pylist([], schema=schema), " LIMIT 0")
        except sql_errors() as e:
            self._bound = None
            return [Problem(f"cannot evaluate {self.config.predicate!r}: {reason(e)}",
                            hint=f"write a DuckDB predicate over the columns {', '.join(schema.names)}; "
                                 "quote text with single quotes, names with double quotes")]
        text = self.config.predicate
        self._reads = [n for n in schema.names if re.search(r'(?<![\w"])"?' + re.escape(n) + r'"?(?![\w"])', text)]
        self._bound = schema
        return []

    def failures(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        if self._bound is None or not batch.schema.equals(self._bound):
            problems = self.bind(batch.schema)
            if problems:
                from agent_etl.exceptions import SpecError

                raise SpecError([Problem(f"{self.label}: {p.message}", hint=p.hint) for p in problems])
        try:
            return _no_nulls(self._query.column(batch))
        except sql_errors() as e:  # a value the predicate cannot handle, e.g. a failing CAST
            raise ToolError(f"quality check {self.label}: cannot evaluate {self.config.predicate!r} on this "
                            f"batch: {reason(e)}; use TRY_CAST or guard the expression with CASE") from e
