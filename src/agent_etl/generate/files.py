"""Introspection of files (a path, a directory or a glob), S3 objects and a JSON HTTP endpoint for
``agent-etl init``. A file's columns are those the extractor of its format reads from its first
rows, so the generated pipeline reads exactly what was seen here."""

from __future__ import annotations

import asyncio
import glob
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import AgentETLError, SpecError, ToolError
from agent_etl.generate.model import Column, SourceSchema, Table, pipeline_path

FORMATS = {".csv": "csv", ".tsv": "csv", ".csv.gz": "csv", ".csv.zst": "csv", ".csv.bz2": "csv", ".jsonl": "jsonl",
           ".ndjson": "jsonl", ".jsonl.gz": "jsonl", ".ndjson.gz": "jsonl", ".json": "json", ".parquet": "parquet",
           ".pq": "parquet", ".xlsx": "excel", ".xlsm": "excel"}
SAMPLE_ROWS = 1000


def file_format(name: str) -> str | None:
    low = name.lower()
    return next((fmt for suffix, fmt in sorted(FORMATS.items(), key=lambda s: -len(s[0])) if low.endswith(suffix)),
                None)


def _category(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    return "other"


def _columns(schema: pa.Schema) -> list[Column]:
    return [Column(f.name, str(f.type), _category(f.type)) for f in schema]


async def _first_batch(tool: str, options: dict[str, Any], base_dir: Path) -> pa.Schema:
    from agent_etl.testing import build, tool_context

    extractor = build("extractor", tool, options, tool_context(base_dir, task="init", batch_size=SAMPLE_ROWS))
    batches = extractor.batches()
    try:
        batch = await anext(batches, None)
    finally:
        await batches.aclose()
    if batch is None:
        raise ToolError("no rows to learn the columns from")
    return batch.schema


def schema_of(tool: str, options: dict[str, Any], base_dir: Path, label: str) -> pa.Schema:
    """The columns the extractor reads from the first rows; a ``ToolError`` "``label``: why" when it
    cannot (the tool's own wording, without the task, and the file named as ``label`` names it)."""
    try:
        return asyncio.run(_first_batch(tool, options, base_dir))
    except (AgentETLError, pa.ArrowException, OSError, ValueError) as e:
        raise ToolError(f"{label}: {_reason(e, options, label)}") from None


def _reason(e: Exception, options: dict[str, Any], label: str) -> str:
    """Why a read failed, said once: the tool's message without its task prefix, nor the path or url
    it opened at its start (the caller names the file); elsewhere in it, that path becomes ``label``."""
    text = re.sub(r"^task '[^']*': ", "", str(e))
    where = str(options.get("path") or options.get("url") or "")
    if where:
        text = re.sub(rf"^(cannot read (\w+ )?(file )?)?{re.escape(where)}:\s*", "", text)
        text = text.replace(where, label)
    return text or type(e).__name__


def _empty(p: Path) -> bool:
    """A file with no bytes, or only blank lines (nothing a reader could take a header from)."""
    size = p.stat().st_size
    if size == 0:
        return True
    if size > 4096 or not FORMATS.get(p.suffix.lower()):  # compressed: the bytes say nothing
        return False
    return not p.read_bytes().strip()


def files(source: str, out_dir: Path) -> SourceSchema:
    """One table per file; a glob whose files have one format and the same columns is one table."""
    pattern = Path(source).expanduser()
    is_glob = any(ch in source for ch in "*?[")
    if is_glob:
        found = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())
    elif pattern.is_dir():
        found = sorted(p for p in pattern.iterdir() if p.is_file() and not p.name.startswith("."))
    elif pattern.is_file():
        found = [pattern]
    else:
        raise SpecError(f"source {source!r} is not a database URL, nor an existing file, directory or glob; give "
                        "postgresql://..., mysql://..., sqlite:///file.db, a .duckdb file, or data files")
    found = [p for p in found if file_format(p.name)]
    if not found:
        raise ToolError(f"{source}: no data files (csv, jsonl, json, parquet, xlsx) found there")
    tables: list[Table] = []
    skipped: list[str] = []  # "<path in the pipeline>: why", each file once
    for p in found:
        fmt = file_format(p.name)
        assert fmt is not None
        path = pipeline_path(p, out_dir)
        if _empty(p):
            why = f"{path}: an empty file ({'no header, no rows' if fmt in ('csv', 'excel') else 'no rows'})"
            if len(found) == 1:
                raise ToolError(f"{why}: nothing to generate from")
            skipped.append(why)
            continue
        sheets: list[str] = []
        if fmt == "excel":
            try:
                sheets = _sheets(p, path)
            except ToolError as e:
                if len(found) == 1:
                    raise
                skipped.append(str(e))
                continue
        if len(sheets) > 1:  # a workbook of several sheets: one extract each
            for sheet in sheets:
                try:
                    schema = schema_of(fmt, {"path": str(p.absolute()), "sheet": sheet}, out_dir,
                                       f"sheet {sheet!r} of {path}")
                except ToolError as e:  # an empty sheet, a chart: nothing to read
                    skipped.append(str(e))
                    continue
                tables.append(Table(f"{p.stem}_{sheet}", fmt, {"path": path, "sheet": sheet}, _columns(schema),
                                    note=f"sheet {sheet!r} of {p.name}"))
            continue
        try:
            # read by its absolute path: the pipeline's folder may not exist yet (--out sub/p.yaml)
            schema = schema_of(fmt, {"path": str(p.absolute())}, out_dir, path)
        except ToolError as e:
            if len(found) == 1:
                raise
            skipped.append(str(e))  # one unreadable or empty file among many: said, not fatal
            continue
        tables.append(Table(p.name, fmt, {"path": path}, _columns(schema), rows=None))
    if not tables:
        raise ToolError(f"{source}: no file could be read: {'; '.join(skipped)[:500]}")
    if is_glob and not skipped and len(tables) > 1 and len({t.tool for t in tables}) == 1 and all(
            [(c.name, c.type) for c in t.columns] == [(c.name, c.type) for c in tables[0].columns] for t in tables):
        glob_path = pipeline_path(pattern, out_dir)
        one = tables[0]
        one.name, one.options = Path(source).stem.replace("*", "all") or "files", {"path": glob_path}
        one.note = f"{len(tables)} files with the same columns, read as one"
        tables = [one]
    # the source as the pipeline would name it, when given by an absolute path
    where = pipeline_path(pattern, out_dir) if pattern.is_absolute() else source
    return SourceSchema("files", None, tables, where, skipped)


def _sheets(path: Path, label: str) -> list[str]:
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True)
    except Exception as e:  # noqa: BLE001 - openpyxl raises many kinds for a bad file
        raise ToolError(f"{label}: not a workbook openpyxl can read ({e})") from None
    try:
        return list(wb.sheetnames)
    finally:
        wb.close()


def s3(source: str, out_dir: Path, endpoint_url: str | None) -> SourceSchema:
    options: dict[str, Any] = {"url": source, **({"endpoint_url": endpoint_url} if endpoint_url else {})}
    schema = schema_of("s3", options, out_dir, source.split("?")[0])
    name = source.rstrip("/").rsplit("/", 1)[-1].replace("*", "all") or "objects"
    return SourceSchema("s3", None, [Table(name, "s3", options, _columns(schema))], source.split("?")[0])


def http_json(source: str, out_dir: Path) -> SourceSchema:
    """A JSON endpoint: the body is the list of records, or an object holding it under some key."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(source, headers={"Accept": "application/json"}),
                                    timeout=10) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise ToolError(f"{_safe(source)} answered HTTP {e.code}; check the URL (and auth, set in the generated "
                        "pipeline by hand)") from None
    except (urllib.error.URLError, OSError) as e:
        raise ToolError(f"{_safe(source)} is unreachable: {getattr(e, 'reason', e)}") from None
    except ValueError:
        raise ToolError(f"{_safe(source)} did not answer JSON") from None
    options: dict[str, Any] = {"url": source}
    records = body
    if isinstance(body, dict):
        key = next((k for k, v in body.items() if isinstance(v, list) and v and isinstance(v[0], dict)), None)
        if key is None:
            raise ToolError(f"{_safe(source)}: the JSON body holds no list of records")
        options["records"], records = key, body[key]
    if not isinstance(records, list) or not records or not isinstance(records[0], dict):
        raise ToolError(f"{_safe(source)}: the JSON body holds no records (a list of objects)")
    schema = pa.Table.from_pylist(records[:SAMPLE_ROWS]).schema
    name = source.split("?")[0].rstrip("/").rsplit("/", 1)[-1] or "api"
    return SourceSchema("rest", None, [Table(name, "rest", options, _columns(schema))], _safe(source))


def _safe(url: str) -> str:
    return url.split("?")[0]
