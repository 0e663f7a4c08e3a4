"""File loaders on real files: round trips, atomic replacement, partitioned Parquet, Excel limits."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from agent_etl.exceptions import ToolError

FILES = {"csv": "out/t.csv", "jsonl": "out/t.jsonl", "parquet": "out/t.parquet", "excel": "out/t.xlsx"}


async def stream(batches: Iterable[pa.RecordBatch], fail_after: int | None = None,
                 error: BaseException | None = None) -> AsyncIterator[pa.RecordBatch]:
    for i, batch in enumerate(batches):
        if i == fail_after:
            raise error or RuntimeError("upstream broke")
        yield batch
        await asyncio.sleep(0)


async def collect(extractor) -> pa.Table:
    return pa.Table.from_batches([b async for b in extractor.batches()])


def sample(rows: int = 5) -> pa.Table:
    ids = list(range(rows))
    return pa.table({
        "id": pa.array([None if i == 1 else i for i in ids], pa.int64()),
        "name": [["Zoë", "北京", None, "a,b \"q\"", "line\nbreak"][i % 5] for i in ids],
        "amount": [None if i == 2 else i * 1.25 for i in ids],
        "day": pa.array([None if i == 3 else dt.date(2024, 2, 29) + dt.timedelta(days=i) for i in ids], pa.date32()),
        "at": pa.array([None if i == 4 else dt.datetime(2024, 1, 1, 12, 30, 15) + dt.timedelta(hours=i) for i in ids],
                       pa.timestamp("s")),
        "ok": [i % 2 == 0 for i in ids],
    })


READ_BACK = {  # what each format needs to give the types back
    "csv": {"newlines_in_values": True},
    "jsonl": {"column_types": {"day": "date32", "at": "timestamp[s]"}},
    "parquet": {},
    "excel": {"column_types": {"day": "date32", "at": "timestamp[s]"}},
}


@pytest.mark.parametrize("fmt", FILES)
async def test_round_trip_keeps_values_nulls_unicode_and_dates(tmp_path, file_tool, file_commits, fmt):
    table = sample(7)
    loader = file_tool("loader", fmt, {"path": FILES[fmt]})
    assert await loader.load(stream(table.to_batches(max_chunksize=3))) == 7
    assert file_commits == [7]
    back = await collect(file_tool("extractor", fmt, {"path": FILES[fmt], **READ_BACK[fmt]}))
    assert back.to_pylist() == table.to_pylist()
    name = Path(FILES[fmt]).name  # the data and its checkpoint manifest, no temp files left
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f".{name}.checkpoint.json", name]


@pytest.mark.parametrize("fmt", FILES)
async def test_stream_failing_midway_leaves_no_file(tmp_path, file_tool, file_commits, fmt):
    loader = file_tool("loader", fmt, {"path": FILES[fmt]})
    with pytest.raises(RuntimeError, match="upstream broke"):
        await loader.load(stream(sample(9).to_batches(max_chunksize=3), fail_after=2))
    assert list((tmp_path / "out").iterdir()) == []
    assert file_commits == []


@pytest.mark.parametrize("fmt", FILES)
async def test_stream_failing_midway_leaves_the_old_target_byte_for_byte(tmp_path, file_tool, file_commits, fmt):
    await file_tool("loader", fmt, {"path": FILES[fmt]}).load(stream(sample(4).to_batches()))
    before = (tmp_path / FILES[fmt]).read_bytes()
    with pytest.raises(ToolError, match="gate"):
        await file_tool("loader", fmt, {"path": FILES[fmt]}).load(
            stream(sample(9).to_batches(max_chunksize=2), fail_after=3, error=ToolError("quality gate failed")))
    assert (tmp_path / FILES[fmt]).read_bytes() == before
    name = Path(FILES[fmt]).name
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f".{name}.checkpoint.json", name]
    assert file_commits == [4]


async def test_output_is_written_under_a_temp_name_until_the_stream_ends(tmp_path, file_tool):
    target = tmp_path / "t.csv"
    target.write_text("old\n")
    seen = []

    async def watched() -> AsyncIterator[pa.RecordBatch]:
        for batch in sample(6).to_batches(max_chunksize=2):
            yield batch
            seen.append((target.read_text(), sorted(p.name for p in tmp_path.iterdir())))

    await file_tool("loader", "csv", {"path": "t.csv"}).load(watched())
    assert seen[0] == ("old\n", [".t.csv.tmp-r1", "t.csv"])
    assert target.read_text().startswith('"id","name"')


async def test_cancellation_removes_the_temp_file_and_keeps_the_target(tmp_path, file_tool, file_commits):
    target = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1]}), target)
    before = target.read_bytes()
    first_written = asyncio.Event()

    async def stalls() -> AsyncIterator[pa.RecordBatch]:
        yield sample(3).to_batches()[0]
        yield sample(3).to_batches()[0]  # asked for only after the first batch was written
        first_written.set()
        await asyncio.Event().wait()
        yield sample(3).to_batches()[0]

    loader = file_tool("loader", "parquet", {"path": "t.parquet", "row_group_size": 3})  # a row group per batch
    task = asyncio.create_task(loader.load(stalls()))
    await asyncio.wait_for(first_written.wait(), 5)
    assert (tmp_path / ".t.parquet.tmp-r1").exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]
    assert file_commits == []


async def test_parent_directories_are_created_and_empty_streams_write_valid_files(tmp_path, file_tool, file_commits):
    assert await file_tool("loader", "csv", {"path": "a/b/empty.csv"}).load(stream([])) == 0
    assert (tmp_path / "a/b/empty.csv").read_bytes() == b""
    assert await file_tool("loader", "parquet", {"path": "a/empty.parquet"}).load(stream([])) == 0
    assert pq.read_table(tmp_path / "a/empty.parquet").num_rows == 0
    empty = pa.RecordBatch.from_pylist([], schema=sample().schema)
    assert await file_tool("loader", "parquet", {"path": "a/typed.parquet"}).load(stream([empty])) == 0
    assert pq.read_schema(tmp_path / "a/typed.parquet").names == sample().schema.names
    assert file_commits == [0, 0, 0]


async def test_parquet_gathers_batches_into_row_groups_with_the_chosen_compression(tmp_path, file_tool):
    table = pa.table({"id": list(range(1000))})
    loader = file_tool("loader", "parquet", {"path": "t.parquet", "row_group_size": 300, "compression": "snappy"})
    await loader.load(stream(table.to_batches(max_chunksize=70)))
    meta = pq.ParquetFile(tmp_path / "t.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [300, 300, 300, 100]
    assert meta.row_group(0).column(0).compression == "SNAPPY"
    await file_tool("loader", "parquet", {"path": "z.parquet"}).load(stream(table.to_batches()))
    assert pq.ParquetFile(tmp_path / "z.parquet").metadata.row_group(0).column(0).compression == "ZSTD"


def _dictionary_encoded(path: Path) -> set[str]:
    meta = pq.ParquetFile(path).metadata
    column = [meta.row_group(0).column(i) for i in range(meta.num_columns)]
    return {c.path_in_schema for c in column if c.has_dictionary_page}


async def test_parquet_dictionary_encodes_the_columns_that_repeat(tmp_path, file_tool):
    n = 50_000
    table = pa.table({"id": pa.array(range(n)), "word": [f"w{i}" for i in range(n)],
                      "country": [["de", "fr", None][i % 3] for i in range(n)],
                      "day": pa.array([dt.date(2024, 1, 1 + i % 28) for i in range(n)], pa.date32()),
                      "flag": [i % 2 == 0 for i in range(n)],
                      "tag": pa.array([["a", "b"][i % 2] for i in range(n)]).dictionary_encode()})
    await file_tool("loader", "parquet", {"path": "auto.parquet"}).load(stream(table.to_batches(max_chunksize=7_000)))
    assert _dictionary_encoded(tmp_path / "auto.parquet") == {"country", "day", "tag"}
    assert pq.read_table(tmp_path / "auto.parquet").equals(table)
    await file_tool("loader", "parquet", {"path": "all.parquet", "dictionary": "all"}).load(stream(table.to_batches()))
    assert _dictionary_encoded(tmp_path / "all.parquet") >= {"id", "word", "country", "day", "tag"}
    await file_tool("loader", "parquet", {"path": "one.parquet", "dictionary": ["word"]}).load(
        stream(table.to_batches()))
    assert _dictionary_encoded(tmp_path / "one.parquet") == {"word"}
    await file_tool("loader", "parquet", {"path": "lake", "partition_by": ["flag"]}).load(stream(table.to_batches()))
    for part in (tmp_path / "lake").rglob("*.parquet"):
        assert _dictionary_encoded(part) == {"country", "day", "tag"}
    with pytest.raises(ToolError, match=r"dictionary names \['wrod'\]"):
        await file_tool("loader", "parquet", {"path": "bad.parquet", "dictionary": ["wrod"]}).load(
            stream(table.to_batches()))


def orders(n: int) -> pa.Table:
    return pa.table({
        "order_id": list(range(n)),
        "region": [["eu", "us", "ap/x", None][i % 4] for i in range(n)],
        "day": pa.array([dt.date(2024, 1, 1 + i % 2) for i in range(n)], pa.date32()),
        "amount": [i * 0.5 for i in range(n)],
    })


async def test_partitioned_parquet_is_a_hive_directory_readable_by_pyarrow_dataset(tmp_path, file_tool, file_commits):
    table = orders(103)
    loader = file_tool("loader", "parquet", {"path": "lake/orders", "partition_by": ["region", "day"]})
    assert await loader.load(stream(table.to_batches(max_chunksize=10))) == 103
    assert file_commits == [103]
    dataset = ds.dataset(tmp_path / "lake/orders", format="parquet",
                         partitioning=ds.partitioning(pa.schema([("region", pa.string()), ("day", pa.date32())]),
                                                      flavor="hive"))
    back = dataset.to_table()
    assert sorted(back.column("order_id").to_pylist()) == list(range(103))
    counts = {(r["region"], r["day"]): r["order_id_count"]
              for r in back.group_by(["region", "day"]).aggregate([("order_id", "count")]).to_pylist()}
    expected = {(r["region"], r["day"]): r["order_id_count"]
                for r in table.group_by(["region", "day"]).aggregate([("order_id", "count")]).to_pylist()}
    assert counts == expected
    assert (tmp_path / "lake/orders/region=eu/day=2024-01-01/part-0.parquet").is_file()
    assert (tmp_path / "lake/orders/region=ap%2Fx").is_dir()
    assert (tmp_path / "lake/orders/region=__HIVE_DEFAULT_PARTITION__").is_dir()
    assert pq.read_schema(tmp_path / "lake/orders/region=eu/day=2024-01-01/part-0.parquet").names == \
        ["order_id", "amount"]


async def test_partitioned_output_replaces_the_old_directory_only_when_done(tmp_path, file_tool):
    loader = lambda: file_tool("loader", "parquet", {"path": "lake", "partition_by": ["region"]})  # noqa: E731
    await loader().load(stream(orders(8).to_batches()))
    old = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "lake").rglob("*"))
    with pytest.raises(RuntimeError):
        await loader().load(stream(orders(20).to_batches(max_chunksize=5), fail_after=2))
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "lake").rglob("*")) == old
    only_eu = orders(8).filter(pa.compute.equal(orders(8).column("region"), "eu"))
    await loader().load(stream(only_eu.to_batches()))
    assert [p.name for p in (tmp_path / "lake").iterdir()] == ["region=eu"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lake.checkpoint.json", "lake"]


async def test_parquet_path_ending_in_a_slash_is_a_directory(tmp_path, file_tool):
    await file_tool("loader", "parquet", {"path": "lake/orders/"}).load(stream(orders(5).to_batches()))
    assert pq.read_table(tmp_path / "lake/orders/part-0.parquet").num_rows == 5


async def test_bad_partition_columns_and_directory_targets_are_tool_errors(tmp_path, file_tool):
    with pytest.raises(ToolError, match=r"partition_by \['regoin'\].*no column"):
        await file_tool("loader", "parquet", {"path": "lake", "partition_by": ["regoin"]}).load(
            stream(orders(5).to_batches()))
    (tmp_path / "adir").mkdir()
    with pytest.raises(ToolError, match="is a directory"):
        await file_tool("loader", "csv", {"path": "adir"}).load(stream(orders(5).to_batches()))
    assert not (tmp_path / "lake").exists()


async def test_batches_with_drifting_types_are_cast_or_refused(tmp_path, file_tool):
    first = pa.record_batch({"id": pa.array([1], pa.int64()), "v": ["a"]})
    castable = pa.record_batch({"v": ["b"], "id": pa.array([2], pa.int32())})
    await file_tool("loader", "parquet", {"path": "t.parquet"}).load(stream([first, castable]))
    assert pq.read_table(tmp_path / "t.parquet").to_pylist() == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]
    other = pa.record_batch({"id": pa.array([2], pa.int64()), "w": ["b"]})
    with pytest.raises(ToolError, match="one schema"):
        await file_tool("loader", "csv", {"path": "t.csv"}).load(stream([first, other]))
    assert not (tmp_path / "t.csv").exists()


async def test_jsonl_lines_are_plain_json_objects(tmp_path, file_tool):
    batch = pa.record_batch({"id": [1, 2], "x": [float("nan"), 2.5], "s": ["ü\"", None],
                             "tags": pa.array([["a"], None], pa.list_(pa.string()))})
    await file_tool("loader", "jsonl", {"path": "t.jsonl"}).load(stream([batch, batch.slice(1)]))
    lines = (tmp_path / "t.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"id": 1, "x": None, "s": "ü\"", "tags": ["a"]}, {"id": 2, "x": 2.5, "s": None, "tags": None},
        {"id": 2, "x": 2.5, "s": None, "tags": None}]


async def test_csv_and_excel_refuse_nested_columns(tmp_path, file_tool):
    batch = pa.record_batch({"tags": pa.array([["a"]], pa.list_(pa.string()))})
    for fmt, path in (("csv", "t.csv"), ("excel", "t.xlsx")):
        with pytest.raises(ToolError, match=r"nested columns \['tags'\]"):
            await file_tool("loader", fmt, {"path": path}).load(stream([batch]))
    assert list(tmp_path.iterdir()) == []


async def test_excel_writes_the_named_sheet_and_utc_wall_time(tmp_path, file_tool):
    batch = pa.record_batch({"id": [1], "at": pa.array([dt.datetime(2024, 5, 1, 8, tzinfo=dt.timezone.utc)],
                                                       pa.timestamp("us", tz="Europe/Paris"))})
    await file_tool("loader", "excel", {"path": "t.xlsx", "sheet": "Orders"}).load(stream([batch]))
    back = await collect(file_tool("extractor", "excel", {"path": "t.xlsx", "sheet": "Orders"}))
    assert back.to_pylist() == [{"id": 1, "at": dt.datetime(2024, 5, 1, 8)}]


async def test_excel_row_limit_is_a_tool_error_and_leaves_nothing(tmp_path, file_tool, monkeypatch):
    import agent_etl.tools.loaders.excel as excel

    monkeypatch.setattr(excel, "MAX_ROWS", 5)  # the real limit, 1,048,576, is too slow to reach in a test
    with pytest.raises(ToolError, match="at most 4 rows"):
        await file_tool("loader", "excel", {"path": "t.xlsx"}).load(stream(sample(6).to_batches(max_chunksize=3)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tool", ["csv", "jsonl", "parquet"])
async def test_a_column_that_appears_after_the_first_batch_fails_the_load_rather_than_vanish(tmp_path, tool):
    from agent_etl.testing import build, stream, tool_context

    first = pa.record_batch({"id": [1, 2]})
    later = pa.record_batch({"id": [3], "note": ["new"]})
    loader = build("loader", tool, {"path": FILES[tool]}, tool_context(tmp_path))
    with pytest.raises(ToolError, match="'note' that the first batch did not have"):
        await loader.load(stream([first, later]))
    assert not (tmp_path / FILES[tool]).exists()
