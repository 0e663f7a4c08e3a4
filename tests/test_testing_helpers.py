import pyarrow as pa

from agent_etl.testing import run_extractor, run_loader, run_transform


async def test_helpers_drive_real_tools(tmp_path):
    table = pa.table({"id": [1, 2, 3], "amount": [5.0, -1.0, 7.5]})
    out = await run_transform("filter", {"where": "amount > 0"}, {"orders": table}, base_dir=tmp_path)
    assert out.column("id").to_pylist() == [1, 3]
    assert await run_loader("parquet", {"path": "o.parquet"}, out, base_dir=tmp_path) == 2
    back = await run_extractor("parquet", {"path": "o.parquet"}, base_dir=tmp_path)
    assert back.equals(out)
