"""Excel loader: one sheet of an .xlsx workbook, written with openpyxl in write-only mode.

openpyxl takes rows of Python values, so each batch is turned into Python rows (a loop the library
forces); it is the slowest file format here and is meant for outputs people open, not for volume.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from pydantic import Field

from agent_etl.exceptions import ToolError
from agent_etl.tools.flat_columns import check_flat
from agent_etl.tools.loaders.files import FileLoader, FileLoaderConfig

MAX_ROWS = 1_048_576  # rows in an Excel sheet, the header included


class ExcelLoaderConfig(FileLoaderConfig):
    """Write one sheet of an Excel workbook."""

    sheet: str = Field("Sheet1", min_length=1, max_length=31, pattern=r"^[^\[\]:*?/\\]+$",
                       description="sheet name (Excel allows 31 characters, none of []:*?/\\)")


class _Sheet:
    def __init__(self, path: Path, schema: pa.Schema, sheet: str, task: str, name: str):
        from openpyxl import Workbook

        self._path, self._task, self._name = path, task, name
        self._wb = Workbook(write_only=True)
        self._ws = self._wb.create_sheet(sheet)
        self._ws.append(schema.names)
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._rows + batch.num_rows > MAX_ROWS - 1:
            raise ToolError(f"task {self._task!r}: {self._name}: an Excel sheet holds at most {MAX_ROWS - 1:,} rows "
                            f"under its header, and this load has more; write csv or parquet instead, or filter "
                            "the rows first")
        self._rows += batch.num_rows
        for i, field in enumerate(batch.schema):
            if pa.types.is_timestamp(field.type) and field.type.tz is not None:
                # Excel has no time zones: write the UTC wall time
                batch = batch.set_column(i, field.with_type(pa.timestamp(field.type.unit)),
                                         batch.column(i).cast(pa.timestamp(field.type.unit)))
        from openpyxl.utils.exceptions import IllegalCharacterError

        columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        try:
            for row in zip(*columns):  # openpyxl appends one row of Python values at a time
                self._ws.append(row)
        except (ValueError, TypeError, IllegalCharacterError) as e:
            raise ToolError(f"task {self._task!r}: {self._name}: a value Excel cannot hold ({e!r}); cast that "
                            "column to string (or drop control characters) upstream, or write csv or parquet") from e

    def close(self) -> None:
        self._wb.save(str(self._path))

    def abort(self) -> None:
        # Rows so far sit in openpyxl's own temp file: end its XML stream and delete it.
        self._ws.close()
        self._ws._writer.cleanup()


class ExcelLoader(FileLoader):
    """Write one sheet of an Excel (.xlsx) workbook, replaced atomically when the stream ends.

    Time zones are dropped (UTC wall time is written); at most 1,048,575 rows fit under the header.
    """

    fmt = "excel"
    Config = ExcelLoaderConfig
    config: ExcelLoaderConfig

    def _writer(self, tmp: Path, schema: pa.Schema, name: str, as_dir: bool) -> _Sheet:
        check_flat(schema, self.fmt, self.ctx.task, name)
        return _Sheet(tmp, schema, self.config.sheet, self.ctx.task, name)

    def _empty(self, tmp: Path, as_dir: bool) -> None:
        from openpyxl import Workbook

        wb = Workbook(write_only=True)
        wb.create_sheet(self.config.sheet)
        wb.save(str(tmp))
