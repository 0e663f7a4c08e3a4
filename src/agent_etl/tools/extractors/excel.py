"""Excel extractor: one sheet of .xlsx workbooks, read with openpyxl in read-only mode.

openpyxl hands out cells as Python objects, so rows are gathered in Python (a loop the library
forces) and turned into Arrow columns once per batch.

Resumable like every file read (``file_extractor.FileExtractor``): a resumed read opens the
workbook at the position's file, reads the sheet from its header on (types from its first batch,
as before) and drops the ``file_rows`` rows already yielded (empty rows are no rows); in a later
workbook the first one's schema comes with the position.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field

from agent_etl.exceptions import ToolError
from agent_etl.tools.extractors.file_config import TypedFileConfig
from agent_etl.tools.extractors.file_extractor import FileExtractor
from agent_etl.tools.extractors.file_source import Source


class ExcelConfig(TypedFileConfig):
    """Read one sheet of Excel workbooks; the first row holds the column names."""

    sheet: str | int = Field(0, description="sheet name, or its index from 0 (default: the first sheet)")


class ExcelExtractor(FileExtractor):
    """Read one sheet of Excel (.xlsx) workbooks; the first row is the header.

    Column types are inferred from the first batch of rows; a column with mixed or late-starting
    values needs column_types (``string`` turns every cell into text).
    """

    fmt = "excel"
    suffixes = (".xlsx", ".xlsm")
    Config = ExcelConfig
    config: ExcelConfig

    def _open(self, path: Path, target: pa.Schema | None) -> Source | None:
        from openpyxl import load_workbook
        from openpyxl.utils.exceptions import InvalidFileException

        task = self.ctx.task
        try:
            wb = load_workbook(str(path), read_only=True, data_only=True)
        except (InvalidFileException, zipfile.BadZipFile, KeyError) as e:
            raise ToolError(f"task {task!r}: {path} is not a readable .xlsx workbook ({e}); save it as .xlsx "
                            "(the legacy .xls format is not supported)") from e
        try:
            ws = self._sheet(wb, path)
            rows = ws.iter_rows(values_only=True)
            header = next(rows, None)
            if header is None:
                wb.close()
                return None
            names = [str(v) if v is not None else f"column_{i + 1}" for i, v in enumerate(header)]
            types = self.config.arrow_types(target)
            unknown = sorted(set(self.config.column_types) - set(names))
            if unknown:
                raise ToolError(f"task {task!r}: column_types names {unknown}, which sheet {ws.title!r} of {path} "
                                f"does not have (its columns: {names}); fix the names in column_types")
            first = self._batch(rows, names, types, path, ws.title, start=2)
        except BaseException:
            wb.close()
            raise
        if first is None:
            first = pa.RecordBatch.from_pylist([], schema=pa.schema([(n, types.get(n, pa.null())) for n in names]))
        types = dict(zip(first.schema.names, first.schema.types))  # later batches keep the first one's types
        state = {"first": first, "row": 2 + first.num_rows}

        def read_next() -> pa.RecordBatch | None:
            if state["first"] is not None:
                batch, state["first"] = state["first"], None
                return batch if batch.num_rows else None
            batch = self._batch(rows, names, types, path, ws.title, start=state["row"])
            if batch is not None:
                state["row"] += batch.num_rows
            return batch

        return Source(first.schema, read_next, wb.close)

    def _sheet(self, wb: Any, path: Path) -> Any:
        sheet, names = self.config.sheet, wb.sheetnames
        if isinstance(sheet, int):
            if not 0 <= sheet < len(names):
                raise ToolError(f"task {self.ctx.task!r}: {path} has {len(names)} sheets {names}, so no sheet "
                                f"number {sheet} (counted from 0); fix sheet")
            return wb[names[sheet]]
        if sheet not in names:
            raise ToolError(f"task {self.ctx.task!r}: {path} has no sheet {sheet!r} (sheets: {names}); fix sheet")
        return wb[sheet]

    def _batch(self, rows: Any, names: list[str], types: dict[str, pa.DataType], path: Path, sheet: str,
               start: int) -> pa.RecordBatch | None:
        """The next rows (up to batch_size) as a batch; ``start`` is the sheet row number of the first."""
        width, chunk = len(names), []
        for row in rows:  # openpyxl yields rows of Python values: a loop the library forces
            if any(v is not None for v in row):
                chunk.append(row[:width] + (None,) * (width - len(row)))
            if len(chunk) >= self.ctx.batch_size:
                break
        if not chunk:
            return None
        arrays = [self._column(list(values), name, types.get(name), path, sheet, start)
                  for name, values in zip(names, zip(*chunk))]
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def _column(self, values: list[Any], name: str, want: pa.DataType | None, path: Path, sheet: str,
                start: int) -> pa.Array:
        if want is not None and pa.types.is_string(want):
            # cells are Python objects already, so text is made per cell
            return pa.array([None if v is None else str(v) for v in values], pa.string())
        rows = f"rows {start}-{start + len(values) - 1}"
        where = f"task {self.ctx.task!r}: {path}, sheet {sheet!r}, column {name!r} ({rows})"
        try:
            arr = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ToolError(f"{where} mixes kinds of values ({e}); set column_types: {{{name}: string}} or clean "
                            "the column") from e
        if want is None or arr.type == want or pa.types.is_null(arr.type):
            return arr.cast(want) if want is not None else arr
        if pa.types.is_null(want):
            raise ToolError(f"{where}: the column is empty in the first batch of rows, so its type is unknown; "
                            f"set column_types: {{{name}: <type>}}")
        try:
            return arr.cast(want)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ToolError(f"{where} holds {arr.type} values that do not convert to {want} ({e}); set "
                            f"column_types: {{{name}: <type>}} to the type it really has") from e
