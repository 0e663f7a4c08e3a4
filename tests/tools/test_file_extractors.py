"""File extractors on real files: csv, jsonl, json, parquet, excel."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from agent_etl.exceptions import ToolError


async def collect(extractor) -> pa.Table:
    return pa.Table.from_batches([b async for b in extractor.batches()])


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


CSV = """id,name,amount,day,at,flag
1,Zoë,1.5,2024-01-31,2024-01-31 10:00:00,true
2,,2.25,,,false
3,北京,,2024-02-29,2024-02-29 23:59:59,
"""


async def test_csv_infers_types_and_reads_nulls_and_unicode(tmp_path, file_tool):
    write(tmp_path / "a.csv", CSV)
    table = await collect(file_tool("extractor", "csv", {"path": "a.csv"}))
    assert table.schema.types == [pa.int64(), pa.string(), pa.float64(), pa.date32(), pa.timestamp("s"), pa.bool_()]
    assert table.to_pylist()[0] == {"id": 1, "name": "Zoë", "amount": 1.5, "day": dt.date(2024, 1, 31),
                                    "at": dt.datetime(2024, 1, 31, 10), "flag": True}
    assert table.column("name").to_pylist() == ["Zoë", None, "北京"]
    assert table.column("day").null_count == 1 and table.column("amount").null_count == 1


async def test_csv_batches_are_sliced_and_positions_advance(tmp_path, file_tool):
    write(tmp_path / "a.csv", "id\n" + "".join(f"{i}\n" for i in range(10)))
    ex = file_tool("extractor", "csv", {"path": "a.csv"}, batch_size=3)
    assert ex.position() is None
    sizes, positions = [], []
    async for batch in ex.batches():
        sizes.append(batch.num_rows)
        positions.append(ex.position())
    assert sizes == [3, 3, 3, 1]
    assert [p["rows"] for p in positions] == [3, 6, 9, 10]
    assert positions[-1] == {"file": str(tmp_path / "a.csv"), "file_index": 0, "rows": 10, "file_rows": 10}


async def test_csv_directory_reads_csv_files_in_name_order(tmp_path, file_tool):
    write(tmp_path / "in" / "b.csv", "id\n3\n4\n")
    write(tmp_path / "in" / "a.csv", "id\n1\n2\n")
    write(tmp_path / "in" / "notes.txt", "not,a\ncsv\n")
    write(tmp_path / "in" / ".a.csv.tmp-r0", "id\n99\n")
    ex = file_tool("extractor", "csv", {"path": "in"})
    seen = []
    async for batch in ex.batches():
        seen.append((ex.position()["file_index"], batch.column("id").to_pylist()))
    assert seen == [(0, [1, 2]), (1, [3, 4])]
    assert ex.position()["file"] == str(tmp_path / "in" / "b.csv")


async def test_csv_glob_is_sorted_and_later_files_are_cast_to_the_first_schema(tmp_path, file_tool):
    write(tmp_path / "d" / "part-2.csv", "id,v\n3,7\n")
    write(tmp_path / "d" / "part-1.csv", "id,v\n1,0.5\n2,\n")
    table = await collect(file_tool("extractor", "csv", {"path": "d/part-*.csv"}))
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.schema.field("v").type == pa.float64()
    assert table.column("v").to_pylist() == [0.5, None, 7.0]


async def test_files_with_other_columns_name_both_files(tmp_path, file_tool):
    write(tmp_path / "a.csv", "id,v\n1,2\n")
    write(tmp_path / "b.csv", "id,w\n1,2\n")
    with pytest.raises(ToolError) as err:
        await collect(file_tool("extractor", "csv", {"path": "*.csv"}))
    assert "b.csv" in str(err.value) and "a.csv" in str(err.value) and "'w'" in str(err.value)


async def test_files_whose_values_do_not_fit_the_first_files_types_name_both(tmp_path, file_tool):
    write(tmp_path / "a.csv", "id,v\n1,2\n")
    write(tmp_path / "b.csv", "id,v\n1,x\n")
    with pytest.raises(ToolError) as err:
        await collect(file_tool("extractor", "csv", {"path": "*.csv"}))
    msg = str(err.value)
    assert "b.csv" in msg and "'v'" in msg and "column_types" in msg and "'t'" in msg


@pytest.mark.parametrize("path, words", [
    ("missing.csv", "does not exist"),
    ("nothing-*.csv", "matches no files"),
    ("emptydir", "holds no"),
])
async def test_no_matching_file_says_what_the_path_resolved_to(tmp_path, file_tool, path, words):
    (tmp_path / "emptydir").mkdir()
    write(tmp_path / "emptydir" / "x.json", "[]")
    with pytest.raises(ToolError) as err:
        await collect(file_tool("extractor", "csv", {"path": path}))
    assert path in str(err.value) and str(tmp_path) in str(err.value) and words in str(err.value)


def numbered_csv(rows: int, bad_line: int, bad: str) -> str:
    lines = ["id,double,name"] + [f"{i},{i * 2},name-{i}" for i in range(rows)]
    lines[bad_line - 1] = bad
    return "\n".join(lines) + "\n"


async def test_row_with_too_many_fields_names_file_row_and_fix(tmp_path, file_tool):
    # ~20 bytes a row and 64 KiB blocks: the bad row sits several blocks in
    path = write(tmp_path / "big.csv", numbered_csv(20_000, bad_line=15_001, bad="1,2,3,4"))
    with pytest.raises(ToolError) as err:
        await collect(file_tool("extractor", "csv", {"path": "big.csv", "block_size": 65536}, batch_size=1000))
    msg = str(err.value)
    assert str(path) in msg and "row 15001" in msg and "bad_rows: skip" in msg and "'t'" in msg


async def test_value_that_does_not_convert_names_file_row_column_and_fix(tmp_path, file_tool):
    path = write(tmp_path / "big.csv", numbered_csv(20_000, bad_line=12_345, bad="5,oops,x"))
    with pytest.raises(ToolError) as err:
        await collect(file_tool("extractor", "csv", {"path": "big.csv", "block_size": 65536}))
    msg = str(err.value)
    assert str(path) in msg and "row 12345" in msg and "'double'" in msg and "'oops'" in msg
    assert "column_types" in msg


async def test_column_empty_in_the_first_block_then_filled_names_the_row(tmp_path, file_tool):
    path = write(tmp_path / "a.csv", "id,late\n" + "".join(f"{i},\n" for i in range(30_000)) + "30000,x\n")
    with pytest.raises(ToolError) as err:
        await collect(file_tool("extractor", "csv", {"path": "a.csv", "block_size": 65536}))
    msg = str(err.value)
    assert str(path) in msg and "row 30002" in msg and "column_types: {late: string}" in msg
    table = await collect(file_tool("extractor", "csv", {"path": "a.csv", "block_size": 65536,
                                                         "column_types": {"late": "string"}}))
    assert table.column("late").to_pylist()[-2:] == [None, "x"]


async def test_bad_rows_skip_drops_and_counts_rows_with_wrong_field_counts(tmp_path, file_tool):
    write(tmp_path / "a.csv", "id,v\n1,a\n2\n3,c\n4,d,extra\n5,e\n")
    ex = file_tool("extractor", "csv", {"path": "a.csv", "bad_rows": "skip"})
    table = await collect(ex)
    assert table.column("id").to_pylist() == [1, 3, 5]
    assert ex.skipped_rows == 2


async def test_column_types_header_and_parse_options(tmp_path, file_tool):
    write(tmp_path / "a.csv", "007;2024-01-02 10:00:00Z;-\n008;2024-01-03 00:00:00+01:00;1.25\n")
    ex = file_tool("extractor", "csv", {
        "path": "a.csv", "header": False, "columns": ["code", "day", "x"], "delimiter": ";",
        "null_values": ["-"], "column_types": {"code": "string", "day": "timestamp[ms, tz=UTC]", "x": "decimal(5,2)"}})
    table = await collect(ex)
    assert table.schema.types == [pa.string(), pa.timestamp("ms", tz="UTC"), pa.decimal128(5, 2)]
    assert table.column("code").to_pylist() == ["007", "008"]
    assert table.column("x").to_pylist()[0] is None
    assert table.column("day").to_pylist()[1] == dt.datetime(2024, 1, 2, 23, tzinfo=dt.timezone.utc)


async def test_column_types_must_name_real_columns_and_real_types(tmp_path, file_tool):
    write(tmp_path / "a.csv", "id\n1\n")
    with pytest.raises(ToolError, match="'idd'"):
        await collect(file_tool("extractor", "csv", {"path": "a.csv", "column_types": {"idd": "int64"}}))
    with pytest.raises(ValidationError, match="unknown type 'integr'"):
        file_tool("extractor", "csv", {"path": "a.csv", "column_types": {"id": "integr"}})
    with pytest.raises(ValidationError):
        file_tool("extractor", "csv", {"path": "a.csv", "sheet": "x"})  # an option csv does not have


async def test_blocks_cut_at_line_ends_match_a_whole_file_read(tmp_path, file_tool):
    long_value = "x" * 150_000  # one line longer than a block
    lines = ["id,text,score"] + [f"{i},{'v' * (i % 37)},{i / 7}" for i in range(30_000)]
    lines[20_000] = f"19999,{long_value},1.0"
    path = write(tmp_path / "a.csv", "\n".join(lines))  # no newline at the end
    table = await collect(file_tool("extractor", "csv", {"path": "a.csv", "block_size": 65536}, batch_size=4000))
    assert table.equals(pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)))


async def test_gzip_csv_is_read_in_blocks(tmp_path, file_tool):
    text = "id,name\n" + "".join(f"{i},n{i}\n" for i in range(50_000))
    with gzip.open(tmp_path / "a.csv.gz", "wt") as f:
        f.write(text)
    table = await collect(file_tool("extractor", "csv", {"path": "a.csv.gz", "block_size": 65536}))
    assert table.num_rows == 50_000 and table.column("id").to_pylist() == list(range(50_000))


async def test_quoted_newlines_need_newlines_in_values(tmp_path, file_tool):
    write(tmp_path / "a.csv", 'id,note\n1,"two\nlines"\n2,plain\n')
    table = await collect(file_tool("extractor", "csv", {"path": "a.csv", "newlines_in_values": True}))
    assert table.column("note").to_pylist() == ["two\nlines", "plain"]


async def test_header_only_csv_gives_one_empty_batch_with_the_columns(tmp_path, file_tool):
    write(tmp_path / "a.csv", "id,name\n")
    batches = [b async for b in file_tool("extractor", "csv", {"path": "a.csv"}).batches()]
    assert [b.num_rows for b in batches] == [0] and batches[0].schema.names == ["id", "name"]


async def test_consumer_stopping_early_closes_the_reader(tmp_path, file_tool):
    write(tmp_path / "a.csv", "id\n" + "".join(f"{i}\n" for i in range(100_000)))
    gen = file_tool("extractor", "csv", {"path": "a.csv", "block_size": 65536}, batch_size=100).batches()
    first = await anext(gen)
    await gen.aclose()
    assert first.num_rows == 100


async def test_jsonl_streams_with_types_and_slices(tmp_path, file_tool):
    rows = [{"id": i, "name": "é" if i % 2 else None, "day": f"2024-01-{i % 28 + 1:02d}"} for i in range(7)]
    write(tmp_path / "a.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    ex = file_tool("extractor", "jsonl", {"path": "a.jsonl", "column_types": {"day": "date32"}}, batch_size=3)
    batches = [b async for b in ex.batches()]
    assert [b.num_rows for b in batches] == [3, 3, 1]
    table = pa.Table.from_batches(batches)
    assert table.schema.field("day").type == pa.date32()
    assert table.to_pylist()[1] == {"id": 1, "name": "é", "day": dt.date(2024, 1, 2)}


async def test_jsonl_invalid_line_names_the_file(tmp_path, file_tool):
    path = write(tmp_path / "a.jsonl", '{"id": 1}\n{"id": oops}\n')
    with pytest.raises(ToolError) as err:
        await collect(file_tool("extractor", "jsonl", {"path": "a.jsonl"}))
    assert str(path) in str(err.value) and "line 2 " in str(err.value) and "'t'" in str(err.value)


async def test_jsonl_field_appearing_after_the_first_block_points_to_column_types(tmp_path, file_tool):
    lines = [json.dumps({"id": i}) for i in range(20_000)] + [json.dumps({"id": 1, "late": "x"})]
    write(tmp_path / "a.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(ToolError, match="column_types"):
        await collect(file_tool("extractor", "jsonl", {"path": "a.jsonl", "block_size": 65536}))


async def test_json_array_and_records_path(tmp_path, file_tool):
    write(tmp_path / "list.json", json.dumps([{"id": 1, "tags": ["a"]}, {"id": 2, "tags": None}], indent=2))
    write(tmp_path / "doc.json", json.dumps({"meta": {}, "data": {"items": [{"id": 3, "name": "ü"}]}}))
    listed = await collect(file_tool("extractor", "json", {"path": "list.json"}, batch_size=1))
    assert listed.to_pylist() == [{"id": 1, "tags": ["a"]}, {"id": 2, "tags": None}]
    nested = await collect(file_tool("extractor", "json", {"path": "doc.json", "records": "data.items"}))
    assert nested.to_pylist() == [{"id": 3, "name": "ü"}]


async def test_json_wrong_records_path_lists_the_keys(tmp_path, file_tool):
    write(tmp_path / "doc.json", json.dumps({"data": {"items": [{"id": 1}]}}))
    with pytest.raises(ToolError, match=r"no key 'itms'.*\['items'\]"):
        await collect(file_tool("extractor", "json", {"path": "doc.json", "records": "data.itms"}))
    with pytest.raises(ToolError, match="set records"):
        await collect(file_tool("extractor", "json", {"path": "doc.json"}))


async def test_parquet_directory_with_column_selection(tmp_path, file_tool):
    (tmp_path / "pq").mkdir()
    for i in range(2):
        table = pa.table({"id": [i * 10 + j for j in range(5)], "x": ["a"] * 5})
        pq.write_table(table, tmp_path / "pq" / f"{i}.parquet")
    ex = file_tool("extractor", "parquet", {"path": "pq", "columns": ["id"]}, batch_size=2)
    batches = [b async for b in ex.batches()]
    assert [b.num_rows for b in batches] == [2, 2, 1, 2, 2, 1]
    assert pa.Table.from_batches(batches).column_names == ["id"]
    assert ex.position() == {"file": str(tmp_path / "pq" / "1.parquet"), "file_index": 1, "rows": 10, "file_rows": 5}


def workbook(path: Path) -> Path:
    from openpyxl import Workbook

    wb = Workbook()
    first = wb.active
    first.title = "summary"
    first.append(["note"])
    first.append(["hello"])
    data = wb.create_sheet("data")
    data.append(["id", "name", "when", "mixed"])
    data.append([1, "Zoë", dt.datetime(2024, 1, 2, 3, 4, 5), 1])
    data.append([2, None, None, "two"])
    data.append([None, None, None, None])  # blank rows are skipped
    data.append([3, "x", dt.datetime(2024, 3, 1), 3.5])
    wb.save(path)
    return path


async def test_excel_reads_the_chosen_sheet_by_name_or_index(tmp_path, file_tool):
    workbook(tmp_path / "book.xlsx")
    first = await collect(file_tool("extractor", "excel", {"path": "book.xlsx"}))
    assert first.to_pylist() == [{"note": "hello"}]
    by_name = await collect(file_tool("extractor", "excel", {"path": "book.xlsx", "sheet": "data",
                                                             "column_types": {"mixed": "string"}}))
    by_index = await collect(file_tool("extractor", "excel", {"path": "book.xlsx", "sheet": 1,
                                                              "column_types": {"mixed": "string"}}))
    assert by_name.equals(by_index)
    assert by_name.column("id").to_pylist() == [1, 2, 3]
    assert by_name.column("name").to_pylist() == ["Zoë", None, "x"]
    assert by_name.column("when").to_pylist()[0] == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert by_name.column("mixed").to_pylist() == ["1", "two", "3.5"]


async def test_excel_errors_name_sheets_and_mixed_columns(tmp_path, file_tool):
    workbook(tmp_path / "book.xlsx")
    with pytest.raises(ToolError, match=r"no sheet 'dat'.*\['summary', 'data'\]"):
        await collect(file_tool("extractor", "excel", {"path": "book.xlsx", "sheet": "dat"}))
    with pytest.raises(ToolError, match=r"column 'mixed'.*column_types"):
        await collect(file_tool("extractor", "excel", {"path": "book.xlsx", "sheet": "data"}))
    write(tmp_path / "fake.xlsx", "not a workbook")
    with pytest.raises(ToolError, match="not a readable .xlsx"):
        await collect(file_tool("extractor", "excel", {"path": "fake.xlsx"}))


@pytest.mark.parametrize("where", ["first block", "later block"])
async def test_csv_bytes_that_are_not_utf8_name_the_column_and_the_encoding_fix(tmp_path, file_tool, where):
    lines = [b"id,name"] + [b"%d,ann" % i for i in range(1 if where == "first block" else 100_000)] + [b"7,Bj\xf6rk"]
    (tmp_path / "a.csv").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ToolError, match=r"column 'name' holds bytes that are not valid utf-8 text; set encoding:") as err:
        await collect(file_tool("extractor", "csv", {"path": "a.csv", "block_size": 1 << 16}))
    if where == "later block":
        assert "row 100002" in str(err.value)
    got = await collect(file_tool("extractor", "csv", {"path": "a.csv", "encoding": "latin-1"}))
    assert got.column("name").to_pylist()[-1] == "Björk"
