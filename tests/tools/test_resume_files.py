"""File extractors resumed from a position: exactly the rows after it, positions counting on."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent_etl.exceptions import ToolError
from agent_etl.testing import build, tool_context

ROWS = 6000


def table(start: int, n: int) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table({"id": ids, "name": [f"n{i:05d}" * 3 for i in ids], "amount": [i + 0.25 for i in ids],
                     "day": pa.array([19_000 + i % 400 for i in ids], pa.date32())})


def csv_text(t: pa.Table, header: bool = True) -> str:
    lines = [",".join(t.column_names)] if header else []
    for r in t.to_pylist():
        lines.append(f"{r['id']},{r['name']},{r['amount']},{r['day'].isoformat()}")
    return "\n".join(lines) + "\n"


def jsonl_text(t: pa.Table) -> str:
    return "".join(json.dumps({**r, "day": r["day"].isoformat()}) + "\n" for r in t.to_pylist())


def excel(path: Path, t: pa.Table) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(t.column_names)
    for r in t.to_pylist():
        ws.append([r["id"], r["name"], r["amount"], r["day"]])
        if r["id"] % 1000 == 7:
            ws.append([None, None, None, None])  # an empty row is no row
    wb.save(path)


def make(kind: str, base: Path) -> tuple[str, dict]:
    """Write the files of one case; the tool and options that read them."""
    whole = table(0, ROWS)
    parts = [whole.slice(0, 2500), whole.slice(2500, 0), whole.slice(2500)]  # an empty file between two
    d = base / "in"
    d.mkdir()
    if kind == "csv":
        (d / "a.csv").write_text(csv_text(whole))
        return "csv", {"path": "in/a.csv", "block_size": 1 << 16}
    if kind == "csv_files":
        for i, p in enumerate(parts):
            (d / f"{i}.csv").write_text(csv_text(p) if p.num_rows else "")
        return "csv", {"path": "in", "block_size": 1 << 16}
    if kind == "csv_gz":
        with gzip.open(d / "a.csv.gz", "wt") as f:
            f.write(csv_text(whole))
        return "csv", {"path": "in/a.csv.gz", "block_size": 1 << 16}
    if kind == "csv_no_header":
        (d / "a.csv").write_text(csv_text(whole, header=False))
        return "csv", {"path": "in/a.csv", "header": False, "columns": ["id", "name", "amount", "day"],
                       "block_size": 1 << 16}
    if kind == "csv_newlines":
        (d / "a.csv").write_text(csv_text(whole))
        return "csv", {"path": "in/a.csv", "newlines_in_values": True, "block_size": 1 << 16}
    if kind == "jsonl":
        for i, p in enumerate(parts):
            (d / f"{i}.jsonl").write_text(jsonl_text(p))
        return "jsonl", {"path": "in", "block_size": 1 << 16}
    if kind == "json":  # (a file with an empty list of records is refused: no empty file here)
        for i, p in enumerate([parts[0], parts[2]]):
            (d / f"{i}.json").write_text(json.dumps({"data": {"items": json.loads(
                "[" + ",".join(jsonl_text(p).splitlines()) + "]")}}))
        return "json", {"path": "in", "records": "data.items"}
    if kind == "parquet":
        for i, p in enumerate(parts):
            pq.write_table(p, d / f"{i}.parquet", row_group_size=700)
        return "parquet", {"path": "in"}
    if kind == "parquet_columns":
        pq.write_table(whole, d / "a.parquet", row_group_size=1000)
        return "parquet", {"path": "in/a.parquet", "columns": ["amount", "id"]}
    if kind == "excel":
        excel(d / "0.xlsx", parts[0])
        excel(d / "1.xlsx", parts[2])
        return "excel", {"path": "in"}
    raise AssertionError(kind)


async def read(tool: str, options: dict, base: Path, batch_size: int, position: dict | None = None):
    ctx = tool_context(base, batch_size=batch_size)
    ex = build("extractor", tool, options, ctx)
    assert ex.resumable()
    if position is not None:
        ex.resume_from(json.loads(json.dumps(position)))  # as stored: through JSON
    batches, positions = [], []
    async for b in ex.batches():
        batches.append(b)
        positions.append(ex.position())
    return pa.Table.from_batches(batches), positions


CASES = ["csv", "csv_files", "csv_gz", "csv_no_header", "csv_newlines", "jsonl", "json", "parquet",
         "parquet_columns", "excel"]


@pytest.mark.parametrize("kind", CASES)
async def test_resume_after_any_batch_yields_exactly_the_rest(tmp_path, kind):
    tool, options = make(kind, tmp_path)
    batch_size = 333
    full, positions = await read(tool, options, tmp_path, batch_size)
    assert full.num_rows == ROWS and len(positions) > 10
    counts = [p["rows"] for p in positions]
    assert counts == sorted(set(counts)) and counts[-1] == ROWS
    cuts = sorted({0, 1, 3, len(positions) // 2, len(positions) - 2, len(positions) - 1})
    for k in cuts:
        at = positions[k]
        rest, after = await read(tool, options, tmp_path, batch_size, at)
        done = at["rows"]
        assert rest.schema == full.schema, (kind, k)
        assert rest.equals(full.slice(done)), (kind, k)
        counts = [p["rows"] for p in after]
        assert counts == sorted(counts) and (not counts or counts[-1] == ROWS), (kind, k)
        if rest.num_rows:
            assert counts[0] > done
            # and a position of the resumed read resumes too
            mid = after[len(after) // 2]
            again, _ = await read(tool, options, tmp_path, batch_size, mid)
            assert again.equals(full.slice(mid["rows"])), (kind, k)


async def test_csv_resumed_past_the_first_block_keeps_the_first_reads_types_and_names(tmp_path):
    # the first block has decimals in `v`; later blocks only whole numbers, which alone read as int64
    lines = ["id,v"] + [f"{i},{i}.5" for i in range(100)] + [f"{i},{i}" for i in range(100, 30_000)]
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    options = {"path": "a.csv", "block_size": 1 << 16}
    full, positions = await read("csv", options, tmp_path, 1000)
    assert full.schema.field("v").type == pa.float64()
    late = next(p for p in positions if p.get("offset"))
    assert "schema" in late and late["skip"] >= 0
    rest, _ = await read("csv", options, tmp_path, 1000, late)
    assert rest.schema == full.schema
    assert rest.equals(full.slice(late["rows"]))


async def test_csv_resume_seeks_instead_of_parsing_from_the_start(tmp_path):
    (tmp_path / "a.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(200_000)))
    options = {"path": "a.csv", "block_size": 1 << 16}
    _, positions = await read("csv", options, tmp_path, 5000)
    late = positions[-3]
    assert late["offset"] > 1_000_000  # bytes into the file: the resumed read starts there
    # a read that parsed the file's start again would fail on this line
    text = (tmp_path / "a.csv").read_bytes()
    (tmp_path / "a.csv").write_bytes(text[:4] + b"x" * 10 + text[14:])
    rest, after = await read("csv", options, tmp_path, 5000, late)
    assert rest.column("id").to_pylist() == list(range(late["rows"], 200_000))
    assert after[-1]["rows"] == 200_000


async def test_a_changed_file_list_is_an_error_not_other_rows(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.csv").write_text(csv_text(table(i * 10, 10)))
    _, positions = await read("csv", {"path": "in"}, tmp_path, 4)
    at = positions[-1]
    assert at["file_index"] == 2
    (d / "0.csv").rename(d / "9.csv")  # the file at index 2 is now another one
    with pytest.raises(ToolError, match=r"#2 .* but file #2 is now .*9.csv; the file list changed"):
        await read("csv", {"path": "in"}, tmp_path, 4, at)
    (d / "9.csv").unlink()
    with pytest.raises(ToolError, match=r"file list changed"):
        await read("csv", {"path": "in"}, tmp_path, 4, at)


async def test_a_file_shorter_than_the_position_is_an_error(tmp_path):
    pq.write_table(table(0, 100), tmp_path / "a.parquet")
    (tmp_path / "a.jsonl").write_text(jsonl_text(table(0, 100)))
    for tool, path in (("parquet", "a.parquet"), ("jsonl", "a.jsonl")):
        _, positions = await read(tool, {"path": path}, tmp_path, 30)
        at = positions[-2]
        if tool == "parquet":
            pq.write_table(table(0, 10), tmp_path / path)
        else:
            (tmp_path / path).write_text(jsonl_text(table(0, 10)))
        with pytest.raises(ToolError, match="changed since the position"):
            await read(tool, {"path": path}, tmp_path, 30, at)


async def test_resume_at_the_end_yields_no_rows_but_the_schema(tmp_path):
    (tmp_path / "a.csv").write_text(csv_text(table(0, 10)))
    full, positions = await read("csv", {"path": "a.csv"}, tmp_path, 4)
    rest, after = await read("csv", {"path": "a.csv"}, tmp_path, 4, positions[-1])
    assert rest.num_rows == 0 and rest.schema == full.schema
    assert after[-1]["rows"] == 10


async def test_a_position_of_another_kind_is_refused(tmp_path):
    ex = build("extractor", "csv", {"path": "a.csv"}, tool_context(tmp_path))
    with pytest.raises(ToolError, match="not the position of a file read"):
        ex.resume_from({"rows": 3})
