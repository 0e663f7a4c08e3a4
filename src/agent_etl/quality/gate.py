"""The quality gate: one ``quality:`` group applied to one stream.

The gate builds the group's checks, binds them to the first batch's schema (a missing column or a
bound of the wrong type is a ``SpecError`` with the check's YAML line), and then, per batch, ORs
the row checks' masks and acts on ``on_failure``:

- ``fail``: raise ``QualityGateError`` at the first batch with a failing row;
- ``warn``: let every row through and count;
- ``quarantine``: let the good rows through and send the bad ones, with the labels of every
  check they failed (``_quarantine_reason``) and the run id, to the group's quarantine sink
  (``quality.quarantine``: ``<home>/quarantine/<run_id>/<input>.parquet`` by default, or any loader).

A check with ``severity: warn`` is run and reported but never fails the gate nor sets a row aside.
Dataset checks (``row_count``, ``mean``, ``schema`` ...) give their verdict in ``finish``; there is
no row to set aside for them, so they fail the gate in ``fail`` and ``quarantine`` modes and only
warn in ``warn``. Checks that read another input (``referential``) get it through ``reference``
and ``referenced`` before the first batch. ``validate`` is synchronous and vectorised; the
caller (``quality.gates``, in the process that runs the step) runs it, and ``finish`` (which
writes the last quarantined rows), in a worker thread.

Unless the group says ``profile: false``, every incoming batch (bad rows too) also goes to a
streaming ``quality.profile.Profiler``; ``gate.profile`` holds the result after ``finish`` (the
quality agent stores it in the run store from the step's ``GateChecked`` summary; not part of the report).
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agent_etl.quality.quarantine import REASON, RUN_ID
from agent_etl.exceptions import Problem, QualityGateError, SpecError
from agent_etl.tools.base import ToolContext

if TYPE_CHECKING:
    from agent_etl.spec import QualityGroup
    from agent_etl.tools.validators.base import Check

EXAMPLES = 3  # in the message
EXAMPLE_ROWS = 5  # in CheckReport.examples


@dataclass
class CheckReport:
    """One check's outcome. ``examples`` holds up to 5 failing rows as JSON-safe dicts of the
    check's columns plus ``_row``, the row's number in the stream (from 0), e.g.
    ``{"_row": 7, "amount": -5.0}``."""

    label: str
    failed_rows: int = 0
    message: str | None = None  # e.g. "2 rows failed, e.g. row 7: -5", or a dataset check's verdict
    kind: str = "row"  # row | dataset
    severity: str = "error"  # error | warn
    status: str = "passed"  # passed | warned | failed
    examples: list[dict[str, Any]] = field(default_factory=list)
    action: str = "fail"  # what a failure of it does: quarantine (its rows), warn, or fail (the run)


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
    def __init__(self, group: QualityGroup, *, run_id: str, home: Path, registry=None, sink=None, run=None):
        """``sink`` takes the quarantined rows (``quality.quarantine``); default: the Parquet file."""
        from agent_etl.quality.quarantine import ParquetFile
        from agent_etl.tools.registry import UnknownTool, default_registry

        registry = registry or default_registry()
        self.input = group.input
        self.on_failure = group.on_failure
        self.run_id = run_id
        self.path = Path(home) / "quarantine" / run_id / f"{group.input}.parquet"
        lines = list(getattr(group, "_check_lines", None) or [])
        ctx = ToolContext(run_id=run_id, task=group.input, home=Path(home), run=run,
                          base_dir=run.pipeline.base_dir if run is not None else Path.cwd())
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
        self._examples: list[list[dict[str, Any]]] = [[] for _ in self.checks]
        self._warn = [c.severity == "warn" for c in self.checks]
        self.sink = sink if sink is not None else ParquetFile(self.path, self.input)
        self._verdicts: list[str | None] = [None] * len(self.checks)
        self._schema: pa.Schema | None = None
        self._row_failed = False
        self._schema_sent = False  # a batch (maybe empty) went on: the steps below know the columns
        self._finished: GateReport | None = None
        self.rows_in = self.rows_passed = self.rows_quarantined = 0
        from agent_etl.quality.profile import profiler_for

        self.profiler = profiler_for(group)  # sees every incoming batch; None with profile: false
        self.profile: dict[str, Any] | None = None  # the profile, after finish (stored, not reported)
        wanting = [line for c, line in zip(self.checks, self._lines) if getattr(c, "wants_profile", False)]
        if wanting and self.profiler is None:  # `anomaly` compares this run's profile with earlier ones
            raise SpecError(Problem(f"quality group on {self.input!r}: the anomaly check needs the group's profile",
                                    wanting[0], "remove `profile: false` from the group"))

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
        if self.profiler is not None:
            try:
                self.profiler.bind(schema)
            except SpecError as e:
                problems.extend(e.problems)
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
        if self.profiler is not None:
            self.profiler.observe(batch)
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
        failing = [(i, mask) for i, mask in failing if not self._warn[i]]  # severity warn only reports
        if not failing:
            self.rows_passed += n
            self._schema_sent = True
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
        self._quarantine(batch, bad, [(self.checks[i].label, m) for i, m in failing])
        self.rows_quarantined += n_bad
        if n_bad == n:
            # nothing passed yet: an empty batch still tells the steps below the columns (a sql
            # transform cannot read an input that gave no batch at all)
            if self._schema_sent:
                return None
            self._schema_sent = True
            return batch.slice(0, 0)
        self._schema_sent = True
        return batch.filter(pc.invert(bad))

    def finish(self) -> GateReport:
        """End of stream: dataset checks' verdicts, close the quarantine file, return the report."""
        if self._finished is not None:
            return self._finished
        if self.profiler is not None and self.profile is None:
            self.profile = self.profiler.result()
        for check in self.checks:
            if getattr(check, "wants_profile", False):
                check.profiled(self.profile)
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
        """Close the quarantine sink's file (keeping what was written); safe to call on an aborted run."""
        self.sink.close()

    # -- checks that read another input (referential) ---------------------------------------------

    def references(self) -> list[str]:
        """The other inputs the checks read in full before the first batch, in order."""
        return list(dict.fromkeys(name for c in self.checks for name in c.inputs()))

    def reference(self, name: str, batch: pa.RecordBatch) -> None:
        for check in self.checks:
            if name in check.inputs():
                check.reference(name, batch)

    def referenced(self) -> None:
        """Every referenced input has been read; raise one SpecError for what is wrong in them."""
        problems = []
        for check, line in zip(self.checks, self._lines):
            if check.inputs():
                for p in check.referenced():
                    who = f"quality check {check.label} on {self.input!r}"
                    problems.append(replace(p, message=f"{who}: {p.message}", line=p.line or line))
        if problems:
            raise SpecError(problems)

    @property
    def anomalies(self) -> list[dict[str, Any]] | None:
        """What the ``anomaly`` checks found after finish (None: no such check gave a verdict)."""
        found = [c.anomalies for c in self.checks if getattr(c, "anomalies", None) is not None]
        return [a for group in found for a in group] if found else None

    def report(self) -> GateReport:
        blocking = [not w for w in self._warn]
        dataset_failed = any(v is not None and b for v, b in zip(self._verdicts, blocking))
        row_failed = any(f and b for f, b in zip(self._failed, blocking))
        warned = any((f or v is not None) and w for f, v, w in zip(self._failed, self._verdicts, self._warn))
        if self.on_failure == "warn":
            status = "warned" if (row_failed or dataset_failed or warned) else "passed"
        elif dataset_failed or self._row_failed or (self.on_failure == "fail" and row_failed):
            status = "failed"
        else:
            status = "quarantined" if self.rows_quarantined else ("warned" if warned else "passed")
        checks = []
        for i, c in enumerate(self.checks):
            failed = bool(self._failed[i]) or self._verdicts[i] is not None
            check_status = "passed" if not failed else (
                "warned" if self._warn[i] or self.on_failure == "warn" else "failed")
            text = self._check_text(i) or getattr(c, "note", None)  # e.g. anomaly: "learning (3 of 7 runs)"
            checks.append(CheckReport(c.label, self._failed[i], text, kind=c.scope,
                                      severity=c.severity, status=check_status, examples=list(self._examples[i]),
                                      action=self._action(i)))
        return GateReport(
            input=self.input, on_failure=self.on_failure, status=status, rows_in=self.rows_in,
            rows_passed=self.rows_passed, rows_quarantined=self.rows_quarantined, checks=checks,
            quarantine_path=self.sink.where if self.rows_quarantined else None)

    def _action(self, i: int) -> str:
        from agent_etl.tools.validators.base import Check

        if self._warn[i] or self.on_failure == "warn":
            return "warn"
        flags_rows = type(self.checks[i]).failures is not Check.failures  # else a verdict on the whole input
        return "quarantine" if self.on_failure == "quarantine" and flags_rows else "fail"

    # ------------------------------------------------------------------------------------------

    def _note_examples(self, i: int, batch: pa.RecordBatch, mask: pa.BooleanArray, start: int) -> None:
        need = EXAMPLE_ROWS - len(self._examples[i])
        if need <= 0:
            return
        rows = pc.indices_nonzero(mask).slice(0, need)
        cols = [c for c in self.checks[i].columns() if c in batch.schema.names]
        values = [batch.column(c).take(rows).to_pylist() for c in cols]  # at most 5 values each
        for k, row in enumerate(rows.to_pylist()):
            self._examples[i].append({"_row": start + row, **{c: _json_safe(v[k]) for c, v in zip(cols, values)}})

    def _check_text(self, i: int) -> str | None:
        if self._verdicts[i] is not None:
            return self._verdicts[i]
        if not self._failed[i]:
            return None
        n = self._failed[i]
        text = f"{n} row{'s' if n != 1 else ''} failed"
        shown = []
        for ex in self._examples[i][:EXAMPLES]:
            cols = [c for c in ex if c != "_row"]
            if len(cols) == 1:
                shown.append(f"row {ex['_row']}: {ex[cols[0]]!r}")
            else:
                shown.append(f"row {ex['_row']}" + (": " + ", ".join(f"{c}={ex[c]!r}" for c in cols) if cols else ""))
        return f"{text}, e.g. " + "; ".join(shown) if shown else text

    def _failure_text(self) -> str:
        lines = [f"quality gate on {self.input!r} failed (on_failure: {self.on_failure}; rows count from 0):"]
        for i, check in enumerate(self.checks):
            text = self._check_text(i)
            if text is not None:
                lines.append(f"  - {check.label}{' (severity warn)' if self._warn[i] else ''}: {text}")
        fix = ("fix the data upstream, or set on_failure: quarantine to set failing rows aside "
               "(warn lets them through)")
        if any(v is not None and not w for v, w in zip(self._verdicts, self._warn)):
            fix = "fix the source, or change the bounds of the dataset check (on_failure: warn only reports it)"
        lines.append(f"  hint: {fix}")
        return "\n".join(lines)

    def _quarantine(self, batch: pa.RecordBatch, bad: pa.BooleanArray,
                    failed: list[tuple[str, pa.BooleanArray]]) -> None:
        rows = pc.indices_nonzero(bad)
        table = pa.Table.from_batches([batch.take(rows)])
        for name in (REASON, RUN_ID):  # a re-checked quarantine file already has them
            if name in table.column_names:
                table = table.drop_columns([name])
        reason = _reasons(rows.to_numpy(), failed)
        table = table.append_column(REASON, reason).append_column(RUN_ID, pa.repeat(self.run_id, len(rows)))
        self.sink.write(table)


def _reasons(rows: np.ndarray, failed: list[tuple[str, pa.BooleanArray]]) -> pa.StringArray:
    """The ``; ``-joined labels of the checks each of ``rows`` failed (masks without nulls).

    Each row's failed checks become a bit string, dictionary-encoded: the labels are joined once per
    combination that occurs, then taken for every row."""
    width = (len(failed) + 7) // 8
    code = np.zeros((len(rows), width), dtype=np.uint8)
    byte, shift = rows >> 3, (rows & 7).astype(np.uint8)
    for k, (_, mask) in enumerate(failed):
        bits = np.frombuffer(mask.buffers()[1], dtype=np.uint8)
        if mask.offset:  # a slice: its bits start mid-buffer
            at = rows + mask.offset
            hit = bits[at >> 3] >> (at & 7).astype(np.uint8)
        else:
            hit = bits[byte] >> shift
        hit &= 1
        hit <<= k & 7
        code[:, k >> 3] |= hit
    codes = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(rows), [None, pa.py_buffer(code)])
    encoded = pc.dictionary_encode(codes)
    combos = np.frombuffer(encoded.dictionary.buffers()[1], dtype=np.uint8, count=len(encoded.dictionary) * width)
    hits = np.unpackbits(combos.reshape(-1, width), axis=1, count=len(failed), bitorder="little").astype(bool)
    labels = [label for label, _ in failed]
    joined = ["; ".join(label for label, hit in zip(labels, row) if hit) for row in hits]
    return pa.array(joined, pa.string()).take(encoded.indices)


def _json_safe(value: Any) -> Any:
    """A value of an example row as JSON can hold it (dates as ISO text, NaN as text, bytes as hex)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)  # Decimal, timedelta, ...


def _pydantic_text(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if not callable(errors):
        return str(e)
    parts = []
    for err in errors(include_url=False):
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)
