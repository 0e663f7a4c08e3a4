"""What a quality check is.

A check is configured from its entry in a ``quality:`` group, e.g. ``not_null: [a, b]`` or
``range: {column: amount, min: 0}``. When the YAML value is not a mapping it fills the field named
by ``shorthand`` (``not_null: [a, b]`` is ``not_null: {columns: [a, b]}``).

Row checks return, per batch, a boolean mask of the failing rows (vectorised; nulls in a mask
count as "passes" and must be filled before masks are combined). Dataset checks see every batch
through ``observe`` and give their verdict in ``finish`` when the stream ends. A check may be
both (``unique`` flags the later occurrences of a key row by row, across batch boundaries).

Every check takes ``severity: error | warn`` (default ``error``): a ``warn`` check is run and
reported but never fails the gate nor quarantines a row. ``scope`` (``row`` or ``dataset``) says
how the report presents the check. A check whose config names another step in ``input``
(``referential``) makes the gated step wait for that step: the gate feeds it every batch of that
input through ``reference`` before the first batch of its own stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from agent_etl.tools.base import Tool, ToolConfig

if TYPE_CHECKING:
    import pyarrow as pa

    from agent_etl.exceptions import Problem


class CheckConfig(ToolConfig):
    """Options every check has."""

    severity: Literal["error", "warn"] = Field("error", description="warn: report failures, never fail or quarantine")


class ColumnsConfig(CheckConfig):
    """One column or a list of them: ``[a, b]`` or ``a``."""

    columns: list[str] = Field(min_length=1, description="the columns checked")

    @field_validator("columns", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Check(Tool):
    kind = "validator"
    shorthand: ClassVar[str | None] = None
    scope: ClassVar[Literal["row", "dataset"]] = "row"
    # judged on the whole data (a count, a statistic, the newest value, keys of another input in
    # full): the first rows of each source (``run --limit``) can neither pass nor fail it, and a
    # preview leaves it out, saying so (agent_etl.slices.preview). Row checks, and those a failure
    # of which on a sample is a failure of the whole (unique), keep the default.
    whole_data: ClassVar[bool] = False
    # judged over rows together, though a sample can fail it (a repeated key): with ``whole_data``,
    # what keeps a branch whole rather than copied over workers (agents.partition_plan)
    across_rows: ClassVar[bool] = False

    @classmethod
    def parse(cls, value: Any) -> ToolConfig:
        if cls.shorthand is not None and not isinstance(value, dict):
            value = {cls.shorthand: value}
        return cls.Config.model_validate(value)

    @property
    def label(self) -> str:
        """Short name used in reports and in the quarantine reason column, e.g. ``not_null(a)``."""
        cols = ",".join(self.columns())
        return f"{self.name}({cols})" if cols else self.name

    @property
    def severity(self) -> str:
        return getattr(self.config, "severity", "error")

    def columns(self) -> list[str]:
        """Columns the check reads; a missing one is a spec error reported before any data moves."""
        return []

    def inputs(self) -> list[str]:
        """Other steps of the pipeline the check reads in full before the gated stream starts."""
        return []

    def reference(self, name: str, batch: pa.RecordBatch) -> None:
        """One batch of the referenced input ``name`` (all of them arrive before any ``failures`` call)."""

    def referenced(self) -> list[Problem]:
        """Every referenced input has been read; the problems found in it (e.g. a missing key column)."""
        return []

    def bind(self, schema: pa.Schema) -> list[Problem]:
        """Resolve the check for the stream's schema (bound types, casts); the problems found.

        Missing columns are reported by the gate before this is called."""
        return []

    def failures(self, batch: pa.RecordBatch) -> pa.BooleanArray | None:
        """Mask of the rows of ``batch`` that fail (True = fails), or None for dataset-only checks."""
        return None

    def observe(self, batch: pa.RecordBatch) -> None:
        """See a batch that a dataset-level check must account for (called for every batch)."""

    def finish(self) -> str | None:
        """At the end of the stream: None if the dataset passes, else a message saying why not."""
        return None
