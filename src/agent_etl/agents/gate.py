"""The quality gate: one ``quality:`` group applied to one stream.

The gate builds the group's checks, binds them to the first batch's schema (a missing column or a
bound of the wrong type is a ``SpecError`` with the check's YAML line), and then, per batch, ORs
the row checks' masks and acts on ``on_failure``:

- ``fail``: raise ``QualityGateError`` at the first batch with a failing row;
- ``warn``: let every row through and count;
- ``quarantine``: let the good rows through and append the bad ones, with the labels of every
  check they failed (``_quarantine_reason``) and the run id, to
  ``<home>/quarantine/<run_id>/<input>.parquet``.

Dataset checks (``row_count``) give their verdict in ``finish``; there is no row to set aside for
a count, so they fail the gate in ``fail`` and ``quarantine`` modes and only warn in ``warn``.
``validate`` is synchronous and vectorised; the quality agent runs it in a worker thread.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from agent_etl.exceptions import Problem, QualityGateError, SpecError, ToolError
from agent_etl.tools.base import ToolContext

if TYPE_CHECKING:
    from agent_etl.spec import QualityGroup
    from agent_etl.tools.validators.base import Check

REASON, RUN_ID = "_quarantine_reason", "_run_id"
EXAMPLES = 3


@dataclass
class CheckReport:
    label: str
    failed_rows: int = 0
    message: str | None = None  # e.g. "2 rows failed, e.g. row 7: -5", or a dataset check's verdict


@dataclass
class GateReport:
    input: str
    on_failure: str
    status: str  # passed | warned | quarantined | failed
    rows_in: int
    rows_passed: int  # rows that failed no row check (in warn mode the others flowed on too)
    rows_quarantined: int
    checks: list[CheckReport] = field(default_factory=list)
    quarantine_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class QualityGate:
    def __init__(self, group: QualityGroup, *, run_id: str, home: Path, registry=None):
        from agent_etl.tools.registry import UnknownTool, default_registry

        registry = registry or default_registry()
        self.input = group.input
        self.on_failure = group.on_failure
        self.run_id = run_id
        self.path = Path(home) / "quarantine" / run_id / f"{group.input}.parquet"
        lines = list(getattr(group, "_check_lines", None) or [])
        ctx = ToolContext(run_id=run_id, task=group.input, base_dir=Path.cwd(), home=Path(home))
        self.checks: list[Check] = []
        self._lines: list[int | None] = []
        problems = []
        for i, entry in enumerate(group.checks):
            line = lines[i] if i < len(lines) else None
            if not isinstance(entry, dict) or len(entry) != 1:
                problems.append(Problem(f"quality group on {self.input!r}: each check is a mapping with one key, "
                                        "e.g. `- not_null: [id]`", line))
                continue
            ((name, value),) = entry.items()
            try:
                cls = registry.get("validator", name)
            except UnknownTool as e:
                problems.append(Problem(f"quality group on {self.input!r}: unknown quality check {name!r}", line, e.hint))
                continue
            try:
                config = cls.parse(value)
            except ValueError as e:  # pydantic's ValidationError is a ValueError
                problems.append(Problem(f"quality check {name} on {self.input!r}: {_pydantic_text(e)}", line))
                continue
            self.checks.append(cls(config, ctx))
            self._lines.append(line)
        if problems:
            raise SpecError(problems)
        self._failed = [0] * len(self.checks)
        self._examples: list[list[str]] = [[] for _ in self.checks]
        self._verdicts: list[str | None] = [None] * len(self.checks)
        self._schema: pa.Schema | None = None
        self._writer = None
        self._row_failed = False
        self._finished: GateReport | None = None
        self.rows_in = self.rows_passed = self.rows_quarantined = 0

    # ------------------------------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        """True once ``bind`` accepted a schema (``validate`` binds on its own if it was not called)."""
        return self._schema is not None

    def bind(self, schema: pa.Schema) -> None:
        """Check every check against the stream's schema; raise one SpecError with all problems."""
        names = list(schema.names)
        problems = []
        for check, line in zip(self.checks, self._lines):
            who = f"quality check {check.label} on {self.input!r}"
            missing = [c for c in check.columns() if c not in names]
            for col in missing:
                close = difflib.get_close_matches(col, names, n=1)
                hint = f"available columns: {', '.join(names) or 'none'}"
                if close:
                    hint = f"did you mean {close[0]!r}? {hint}"
                problems.append(Problem(f"{who}: column {col!r} is not in {self.input!r}", line, hint))
            if not missing:
                for p in check.bind(schema):
                    problems.append(replace(p, message=f"{who}: {p.message}", line=p.line or line))
        if problems:
            raise SpecError(problems)
        self._schema = schema

    def validate(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        """Apply the row checks to ``batch``; return what flows on (None when no row does)."""
        if self._schema is None or (batch.schema is not self._schema and not batch.schema.equals(self._schema)):
            self.bind(batch.schema)
        n = batch.num_rows
        start = self.rows_in
        self.rows_in += n
        failing: list[tuple[int, pa.BooleanArray]] = []
        for i, check in enumerate(self.checks):
            mask = check.failures(batch)
            if mask is None:
                continue
            if isinstance(mask, pa.ChunkedArray):
                mask = mask.combine_chunks()
            if mask.null_count:  # a null must not let a bad row through the OR below
                mask = pc.fill_null(mask, False)
            count = mask.true_count
            if count:
                self._failed[i] += count
                failing.append((i, mask))
                self._note_examples(i, batch, mask, start)
        for check in self.checks:
            check.observe(batch)
        if not failing:
            self.rows_passed += n
            return batch
        bad = failing[0][1]
        for _, mask in failing[1:]:
            bad = pc.or_(bad, mask)
        n_bad = bad.true_count
        self.rows_passed += n - n_bad
        if self.on_failure == "fail":
            self._row_failed = True
            err = QualityGateError(self._failure_text())
            err.report = self.report()
            raise err
        if self.on_failure == "warn":
            return batch
        self._quarantine(batch.filter(bad), [(self.checks[i].label, m.filter(bad)) for i, m in failing])
        self.rows_quarantined += n_bad
        if n_bad == n:
            return None
        return batch.filter(pc.invert(bad))

    def finish(self) -> GateReport:
        """End of stream: dataset checks' verdicts, close the quarantine file, return the report."""
        if self._finished is not None:
            return self._finished
        try:
            for i, check in enumerate(self.checks):
                self._verdicts[i] = check.finish()
        finally:
            self.close()
        report = self.report()
        self._finished = report
        if report.status == "failed":
            err = QualityGateError(self._failure_text())
            err.report = report
            raise err
        return report

    def close(self) -> None:
        """Close the quarantine file (keeping what was written); safe to call on an aborted run."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def report(self) -> GateReport:
        dataset_failed = any(v is not None for v in self._verdicts)
        row_failed = any(self._failed)
        if self.on_failure == "warn":
            status = "warned" if (row_failed or dataset_failed) else "passed"
        elif dataset_failed or self._row_failed or (self.on_failure == "fail" and row_failed):
            status = "failed"
        else:
            status = "quarantined" if self.rows_quarantined else "passed"
        checks = [CheckReport(c.label, self._failed[i], self._check_text(i)) for i, c in enumerate(self.checks)]
        return GateReport(
            input=self.input, on_failure=self.on_failure, status=status, rows_in=self.rows_in,
            rows_passed=self.rows_passed, rows_quarantined=self.rows_quarantined, checks=checks,
            quarantine_path=str(self.path) if self.rows_quarantined else None)

    # ------------------------------------------------------------------------------------------

    def _note_examples(self, i: int, batch: pa.RecordBatch, mask: pa.BooleanArray, start: int) -> None:
        need = EXAMPLES - len(self._examples[i])
        if need <= 0:
            return
        rows = pc.indices_nonzero(mask).slice(0, need)
        cols = [c for c in self.checks[i].columns() if c in batch.schema.names]
        values = [batch.column(c).take(rows).to_pylist() for c in cols]  # at most 3 values each
        for k, row in enumerate(rows.to_pylist()):
            if len(cols) == 1:
                shown = f": {values[0][k]!r}"
            elif cols:
                shown = ": " + ", ".join(f"{c}={v[k]!r}" for c, v in zip(cols, values))
            else:
                shown = ""
            self._examples[i].append(f"row {start + row}{shown}")

    def _check_text(self, i: int) -> str | None:
        if self._verdicts[i] is not None:
            return self._verdicts[i]
        if not self._failed[i]:
            return None
        n = self._failed[i]
        text = f"{n} row{'s' if n != 1 else ''} failed"
        return f"{text}, e.g. " + "; ".join(self._examples[i]) if self._examples[i] else text

    def _failure_text(self) -> str:
        lines = [f"quality gate on {self.input!r} failed (on_failure: {self.on_failure}; rows count from 0):"]
        for i, check in enumerate(self.checks):
            text = self._check_text(i)
            if text is not None:
                lines.append(f"  - {check.label}: {text}")
        fix = ("fix the data upstream, or set on_failure: quarantine to set failing rows aside "
               "(warn lets them through)")
        if any(v is not None for v in self._verdicts):
            fix = "fix the source, or change the bounds of the dataset check (on_failure: warn only reports it)"
        lines.append(f"  hint: {fix}")
        return "\n".join(lines)

    def _quarantine(self, bad: pa.RecordBatch, failed: list[tuple[str, pa.BooleanArray]]) -> None:
        reasons = [pc.if_else(mask, pa.scalar(label), pa.scalar(None, pa.string())) for label, mask in failed]
        reason = reasons[0] if len(reasons) == 1 else pc.binary_join_element_wise(*reasons, "; ",
                                                                                 null_handling="skip")
        table = pa.Table.from_batches([bad])
        for name in (REASON, RUN_ID):  # a re-checked quarantine file already has them
            if name in table.column_names:
                table = table.drop_columns([name])
        table = table.append_column(REASON, reason).append_column(RUN_ID, pa.repeat(self.run_id, len(bad)))
        try:
            if self._writer is None:
                import pyarrow.parquet as pq

                self.path.parent.mkdir(parents=True, exist_ok=True)
                # the two added columns repeat a few values; dictionary-encoding only them halves write time
                self._writer = pq.ParquetWriter(self.path, table.schema, use_dictionary=[REASON, RUN_ID])
            if not table.schema.equals(self._writer.schema):
                table = table.cast(self._writer.schema)
            self._writer.write_table(table)
        except OSError as e:
            raise ToolError(f"quality gate on {self.input!r}: cannot write quarantined rows to {self.path}: {e}; "
                            "check that the directory is writable and has space (or set AGENT_ETL_HOME)") from e
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
            raise ToolError(f"quality gate on {self.input!r}: the batch's columns changed mid-stream and cannot go "
                            f"into the same quarantine file {self.path}: {e}; give the stream one schema "
                            "(cast transform)") from e


def _pydantic_text(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if not callable(errors):
        return str(e)
    parts = []
    for err in errors(include_url=False):
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)
