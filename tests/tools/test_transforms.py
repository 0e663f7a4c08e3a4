"""The transform tools on real multi-batch streams, checked against pandas / pyarrow / one-shot DuckDB."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pydantic
import pytest
from pydantic import ValidationError

from agent_etl.exceptions import ToolError, UpstreamError
from agent_etl.stream import Channel, Envelope, Tracker
from agent_etl.tools.base import ToolContext
from agent_etl.tools.registry import default_registry


def make(name: str, options: dict, tmp_path: Path, batch_size: int = 1000):
    cls = default_registry().get("transform", name)
    ctx = ToolContext(run_id="r1", task="t", base_dir=tmp_path, home=tmp_path / ".agent-etl", batch_size=batch_size)
    return cls(cls.Config.model_validate(options), ctx)


async def stream(table: pa.Table, size: int):
    for batch in table.to_batches(size):
        yield batch
        await asyncio.sleep(0)


async def collect(tool, inputs: dict) -> list[pa.RecordBatch]:
    return [b async for b in tool.run(inputs)]


def table_of(batches: list[pa.RecordBatch]) -> pa.Table:
    return pa.Table.from_batches(batches)


def spool_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / ".agent-etl" / "tmp"
    return list(root.rglob("*")) if root.exists() else []


@pytest.fixture
def orders() -> pa.Table:
    rng = np.random.default_rng(7)
    n = 5000
    status = rng.choice(["paid", "open", "refunded"], n).astype(object)
    status[rng.random(n) < 0.05] = None
    return pa.table({
        "order_id": pa.array(np.arange(n), pa.int64()),
        "customer_id": pa.array(rng.integers(0, 300, n), pa.int32()),
        "status": pa.array(status, pa.large_string()),
        "amount": pa.array(np.round(rng.random(n) * 200, 2)),
        "ts": pa.array(rng.integers(1_700_000_000, 1_710_000_000, n) * 1_000_000, pa.timestamp("us", tz="UTC")),
    })


# ---------------------------------------------------------------------------------------------
# select / rename / cast


async def test_select_and_rename_over_batches(tmp_path, orders):
    sel = make("select", {"columns": ["amount", "order_id"]}, tmp_path)
    out = await collect(sel, {"orders": stream(orders, 700)})
    assert len(out) == 8
    assert table_of(out).equals(orders.select(["amount", "order_id"]))

    ren = make("rename", {"columns": {"amount": "total", "ts": "created_at"}}, tmp_path)
    out = table_of(await collect(ren, {"orders": stream(orders, 700)}))
    assert out.column_names == ["order_id", "customer_id", "status", "total", "created_at"]
    assert out.column("total").equals(orders.column("amount"))


async def test_select_and_rename_name_the_missing_column(tmp_path, orders):
    with pytest.raises(ToolError, match=r"(?s)task 't' \(select\): column 'amout' not in the input.*did you mean 'amount'"):
        await collect(make("select", {"columns": ["amout"]}, tmp_path), {"o": stream(orders, 700)})
    with pytest.raises(ToolError, match="duplicate column name.*'status'"):
        await collect(make("rename", {"columns": {"amount": "status"}}, tmp_path), {"o": stream(orders, 700)})


async def test_cast_converts_text_columns(tmp_path):
    n = 3000
    src = pd.DataFrame({
        "id": [str(i) for i in range(n)],
        "day": [str(dt.date(2024, 1, 1) + dt.timedelta(days=i % 400)) for i in range(n)],
        "price": [f"{i % 1000}.{i % 100:02d}" for i in range(n)],
        "qty": list(range(n)),
        "at": [f"2024-03-01 10:{i % 60:02d}:00" for i in range(n)],
    })
    cast = make("cast", {"columns": {"id": "int64", "day": "date32", "price": "decimal128(12,2)",
                                     "qty": "decimal128(12,2)", "at": "timestamp[us, tz=UTC]"}}, tmp_path)
    out = table_of(await collect(cast, {"src": stream(pa.Table.from_pandas(src, preserve_index=False), 1000)}))
    assert out.schema.field("id").type == pa.int64()
    assert out.schema.field("price").type == pa.decimal128(12, 2)
    assert out.column("id").to_pylist() == list(range(n))
    assert out.column("day").to_pylist() == [dt.date.fromisoformat(d) for d in src["day"]]
    assert out.column("price").to_pylist() == [decimal.Decimal(p) for p in src["price"]]
    assert out.column("qty").to_pylist() == [decimal.Decimal(q) for q in src["qty"]]
    expected_at = pd.to_datetime(src["at"]).dt.tz_localize("UTC")
    assert out.column("at").to_pandas().equals(expected_at.astype("datetime64[us, UTC]"))


async def test_cast_bad_value_names_column_type_value_and_row(tmp_path):
    values = [str(i) for i in range(2500)]
    values[1700] = "12O"  # letter O: a typo in the data
    t = pa.table({"id": values})
    with pytest.raises(ToolError) as err:
        await collect(make("cast", {"columns": {"id": "int32"}}, tmp_path), {"src": stream(t, 1000)})
    msg = str(err.value)
    assert "task 't'" in msg and "'id'" in msg and "int32" in msg and "'12O'" in msg
    assert "row 1701 of the stream" in msg
    assert "TRY_CAST(id AS INTEGER)" in msg


async def test_cast_lossy_needs_safe_false(tmp_path):
    t = pa.table({"x": [1.0, 2.5, 3.0] * 400})
    with pytest.raises(ToolError, match=r"(?s)value 2\.5 .*safe: false"):
        await collect(make("cast", {"columns": {"x": "int64"}}, tmp_path), {"s": stream(t, 500)})
    out = table_of(await collect(make("cast", {"columns": {"x": "int64"}, "safe": False}, tmp_path),
                                 {"s": stream(t, 500)}))
    assert out.column("x").to_pylist() == [1, 2, 3] * 400


def test_cast_unknown_type_is_a_config_error():
    cls = default_registry().get("transform", "cast")
    with pytest.raises(ValidationError, match="unknown type 'integr'"):
        cls.Config.model_validate({"columns": {"x": "integr"}})
    with pytest.raises(ValidationError, match="extra"):
        cls.Config.model_validate({"columns": {"x": "int64"}, "sfe": True})


# ---------------------------------------------------------------------------------------------
# filter / derive


async def test_filter_matches_pandas_and_keeps_types(tmp_path, orders):
    f = make("filter", {"where": "status = 'paid' AND amount >= 50"}, tmp_path)
    out = await collect(f, {"orders": stream(orders, 600)})
    got = table_of(out)
    assert got.schema == orders.schema  # large_string and tz timestamps pass through unchanged
    df = orders.to_pandas()
    expected = df[(df.status == "paid") & (df.amount >= 50)].reset_index(drop=True)
    pd.testing.assert_frame_equal(got.to_pandas(), expected)
    assert len(out) > 1 and all(b.num_rows for b in out)


async def test_filter_matching_nothing_still_gives_the_schema(tmp_path, orders):
    out = await collect(make("filter", {"where": "amount < 0"}, tmp_path), {"o": stream(orders, 600)})
    assert len(out) == 1 and out[0].num_rows == 0 and out[0].schema == orders.schema


async def test_filter_bad_sql_fails_on_first_batch(tmp_path, orders):
    pulled = 0

    async def counted():
        nonlocal pulled
        async for b in stream(orders, 500):
            pulled += 1
            yield b

    with pytest.raises(ToolError) as err:
        await collect(make("filter", {"where": "amont > 5"}, tmp_path), {"o": counted()})
    assert "task 't'" in str(err.value) and "'amont > 5'" in str(err.value) and "amount" in str(err.value)
    assert isinstance(err.value.__cause__, duckdb.Error)
    assert pulled == 1
    with pytest.raises(pydantic.ValidationError, match="where \"status = paid'\" is not valid SQL: unterminated"):
        make("filter", {"where": "status = paid'"}, tmp_path)  # a syntax error is found with the spec


async def test_derive_adds_and_replaces_in_place(tmp_path, orders):
    d = make("derive", {"columns": {"amount": "round(amount * 1.2, 2)", "big": "amount > 100",
                                    "Customer Key": "'c-' || customer_id"}}, tmp_path)
    got = table_of(await collect(d, {"o": stream(orders, 700)}))
    assert got.column_names == ["order_id", "customer_id", "status", "amount", "ts", "big", "Customer Key"]
    df = orders.to_pandas()
    np.testing.assert_allclose(got.column("amount").to_numpy(), np.round(df.amount * 1.2, 2))
    assert got.column("big").to_pylist() == (df.amount > 100).tolist()  # uses the input amount, not the new one
    assert got.column("Customer Key").to_pylist() == ("c-" + df.customer_id.astype(str)).tolist()
    assert got.schema.field("status").type == pa.large_string()


async def test_derive_error_names_the_failing_expression(tmp_path, orders):
    d = make("derive", {"columns": {"ok": "amount * 2", "bad": "CAST(status AS INTEGER)"}}, tmp_path)
    with pytest.raises(ToolError, match=r"(?s)column 'bad' = 'CAST\(status AS INTEGER\)'.*Conversion"):
        await collect(d, {"o": stream(orders, 700)})


# ---------------------------------------------------------------------------------------------
# dedupe


async def test_dedupe_first_occurrence_across_batches(tmp_path):
    rng = np.random.default_rng(1)
    n = 20_000
    t = pa.table({"k": rng.integers(0, 3000, n), "v": np.arange(n)})
    out = await collect(make("dedupe", {"columns": ["k"]}, tmp_path), {"s": stream(t, 1000)})
    got = table_of(out).to_pandas()
    expected = t.to_pandas().drop_duplicates(subset=["k"], keep="first").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    assert len(out) > 1  # later batches still contribute keys not seen before
    assert spool_files(tmp_path) == []


async def test_dedupe_composite_keys_with_nulls(tmp_path):
    rng = np.random.default_rng(2)
    n = 6000
    a = rng.choice(["x", "y", "z"], n).astype(object)
    a[rng.random(n) < 0.2] = None
    b = pd.array(rng.integers(0, 40, n), dtype="Int64")
    b[rng.random(n) < 0.2] = pd.NA
    t = pa.table({"a": pa.array(a, pa.string()), "b": pa.array(b, pa.int64()), "v": np.arange(n)})
    got = table_of(await collect(make("dedupe", {"columns": ["a", "b"]}, tmp_path), {"s": stream(t, 250)}))
    expected = pa.Table.from_pandas(t.to_pandas().drop_duplicates(subset=["a", "b"]), preserve_index=False)
    assert got.column("v").to_pylist() == expected.column("v").to_pylist()
    assert got.num_rows == t.group_by(["a", "b"]).aggregate([]).num_rows  # NULLs group as equal
    assert got.schema == t.schema


async def test_dedupe_all_columns_by_default(tmp_path):
    base = pa.table({"a": [1, 2, None, 1], "b": ["p", None, None, "p"]})
    t = pa.concat_tables([base] * 5)
    out = await collect(make("dedupe", {}, tmp_path), {"s": stream(t, 3)})
    assert table_of(out).to_pylist() == [{"a": 1, "b": "p"}, {"a": 2, "b": None}, {"a": None, "b": None}]
    with pytest.raises(ToolError, match="key column 'c' not in the input"):
        await collect(make("dedupe", {"columns": ["a", "c"]}, tmp_path), {"s": stream(t, 3)})


# ---------------------------------------------------------------------------------------------
# sql


async def test_sql_group_by_over_many_batches_equals_one_shot(tmp_path, orders):
    query = ("select customer_id, status, count(*) as n, sum(amount) as total "
             "from orders group by all order by customer_id, status nulls last")
    tool = make("sql", {"query": query}, tmp_path, batch_size=200)
    out = await collect(tool, {"orders": stream(orders, 333)})
    assert all(b.num_rows <= 200 for b in out) and len(out) > 1
    con = duckdb.connect()
    con.register("orders", orders)
    expected = con.sql(query).to_arrow_table()
    got = table_of(out)
    assert got.schema == expected.schema
    assert got.drop_columns(["total"]).equals(expected.drop_columns(["total"]))
    # float sums depend on the order DuckDB's threads add them up in
    np.testing.assert_allclose(got.column("total").to_numpy(), expected.column("total").to_numpy(), rtol=1e-12)
    assert spool_files(tmp_path) == []


async def test_sql_join_of_two_inputs_from_one_producer_does_not_deadlock(tmp_path, orders):
    # one producer fans out to two bounded queues (the runtime's Channel): reading one input to
    # its end before the other would block the producer on the full second queue forever
    channel = Channel("orders", consumers=2, maxsize=1)
    produced = 0

    async def produce():
        nonlocal produced
        for batch in orders.to_batches(250):
            await channel.put(Envelope(batch, {"orders": produced}))
            produced += 1
        await channel.close()

    query = ("select p.order_id, p.amount, c.n from paid p join "
             "(select customer_id, count(*) as n from everything group by customer_id) c using (customer_id) "
             "order by p.order_id")
    tool = make("sql", {"query": query}, tmp_path)
    inputs = {"paid": Tracker().batches(channel.envelopes(0)), "everything": Tracker().batches(channel.envelopes(1))}

    async def consume():
        return await collect(tool, inputs)

    producer = asyncio.create_task(produce())
    out = await asyncio.wait_for(consume(), timeout=20)
    await producer
    assert produced == 20
    con = duckdb.connect()
    con.register("paid", orders)
    con.register("everything", orders)
    assert table_of(out).equals(con.sql(query).to_arrow_table())


async def test_sql_spools_while_running_and_cleans_up(tmp_path, orders):
    tool = make("sql", {"query": "select * from a union all select * from b"}, tmp_path, batch_size=100)
    seen_during: list[str] = []
    rows = 0
    async for batch in tool.run({"a": stream(orders, 1000), "b": stream(orders.slice(0, 10), 1000)}):
        if not seen_during:
            seen_during = sorted(p.name for p in spool_files(tmp_path) if p.suffix == ".arrow")
        rows += batch.num_rows
    assert seen_during == ["a.arrow", "b.arrow"]
    assert rows == orders.num_rows + 10
    assert not (tmp_path / ".agent-etl" / "tmp").exists()


async def test_sql_cleans_up_after_errors(tmp_path, orders):
    with pytest.raises(ToolError) as err:
        await collect(make("sql", {"query": "select nope from orders"}, tmp_path), {"orders": stream(orders, 500)})
    assert "task 't'" in str(err.value) and "select nope from orders" in str(err.value)
    assert "orders" in str(err.value).split("hint:")[1]
    assert spool_files(tmp_path) == []

    async def broken():
        yield orders.to_batches(500)[0]
        raise UpstreamError("input 'orders' failed: disk on fire")

    # a failing input is re-raised as itself, whether it was streamed (one input) or spooled (two)
    for query, inputs in [("select * from orders", lambda: {"orders": broken()}),
                          ("select * from orders, more", lambda: {"orders": broken(), "more": stream(orders, 500)})]:
        with pytest.raises(UpstreamError, match="disk on fire"):
            await collect(make("sql", {"query": query}, tmp_path), inputs())
        assert spool_files(tmp_path) == []

    # the consumer stops early: closing the stream still removes the files
    query = "select * from a union all select * from b"
    gen = make("sql", {"query": query}, tmp_path, batch_size=10).run({"a": stream(orders, 500), "b": stream(orders, 500)})
    await anext(gen)
    assert spool_files(tmp_path)
    await gen.aclose()
    assert spool_files(tmp_path) == []


async def test_sql_single_input_read_once_is_streamed_without_spool(tmp_path, orders):
    orders = pa.concat_tables([orders] * 200).combine_chunks()  # 1M rows: well beyond DuckDB's read-ahead
    first_out = asyncio.Event()
    pulled = 0
    closed = False

    async def source(gate: bool):
        nonlocal pulled, closed
        try:
            for i, batch in enumerate(orders.to_batches(10_000)):
                if gate and i == 80:
                    await first_out.wait()  # a tool that reads its input to the end first never gets past here
                pulled += 1
                yield batch
        finally:
            closed = True

    query = "select order_id, amount * 2 as double from orders where status = 'open'"
    tool = make("sql", {"query": query}, tmp_path, batch_size=100)
    got, spooled = [], None

    async def consume():
        nonlocal spooled
        async for batch in tool.run({"orders": source(gate=True)}):
            if spooled is None:
                spooled = spool_files(tmp_path)
                first_out.set()
            got.append(batch)

    await asyncio.wait_for(consume(), timeout=20)
    assert spooled == []
    con = duckdb.connect()
    con.register("orders", orders)
    assert table_of(got).equals(con.sql(query).to_arrow_table())

    # a LIMIT stops reading early; the input is closed so its producer is released
    pulled, closed = 0, False
    out = await collect(make("sql", {"query": "select * from orders limit 3"}, tmp_path), {"orders": source(gate=False)})
    assert table_of(out).num_rows == 3 and pulled < 100 and closed


async def test_sql_single_input_scanned_twice_is_spooled(tmp_path, orders):
    query = ("select a.order_id, b.order_id as next_id from orders a join orders b "
             "on b.order_id = a.order_id + 1 where a.status = 'paid' order by 1")
    tool = make("sql", {"query": query}, tmp_path)
    out = table_of(await collect(tool, {"orders": stream(orders, 400)}))
    paid = orders.filter(pc.equal(orders["status"], "paid"))["order_id"].to_numpy()
    expected = paid[paid + 1 < orders.num_rows]
    assert out.column("order_id").to_pylist() == expected.tolist()
    assert out.column("next_id").to_pylist() == (expected + 1).tolist()


async def test_sql_empty_inputs(tmp_path, orders):
    async def nothing():
        return
        yield

    # an input that yields only an empty batch has a schema and is an empty table
    tool = make("sql", {"query": "select count(*) as n from a join b using (order_id)"}, tmp_path)
    async def schema_only():
        yield pa.RecordBatch.from_pylist([], schema=orders.schema)

    out = await collect(tool, {"a": stream(orders, 500), "b": schema_only()})
    assert table_of(out).to_pylist() == [{"n": 0}]
    # an input with no batch at all has no columns: fine if unused, a clear error if used
    out = await collect(make("sql", {"query": "select count(*) as n from a"}, tmp_path),
                        {"a": stream(orders, 500), "b": nothing()})
    assert table_of(out).to_pylist() == [{"n": orders.num_rows}]
    with pytest.raises(ToolError, match="'b' produced no batches"):
        await collect(make("sql", {"query": "select * from a join b using (order_id)"}, tmp_path),
                      {"a": stream(orders, 500), "b": nothing()})
    # a query with no rows still tells downstream its columns
    out = await collect(make("sql", {"query": "select order_id from a where false"}, tmp_path),
                        {"a": stream(orders, 500)})
    assert len(out) == 1 and out[0].num_rows == 0 and out[0].schema.names == ["order_id"]


# ---------------------------------------------------------------------------------------------
# python


async def test_python_arrow_function_next_to_the_pipeline(tmp_path, orders):
    (tmp_path / "udf_arrow.py").write_text(
        "import pyarrow.compute as pc\n"
        "def paid_with_tax(table):\n"
        "    t = table.filter(pc.equal(table['status'], 'paid'))\n"
        "    if t.num_rows == 0:\n"
        "        return None\n"
        "    return t.append_column('gross', pc.multiply(t['amount'], 1.25))\n"
    )
    tool = make("python", {"function": "udf_arrow:paid_with_tax"}, tmp_path)
    got = table_of(await collect(tool, {"o": stream(orders, 400)}))
    df = orders.to_pandas()
    paid = df[df.status == "paid"].reset_index(drop=True)
    assert got.column("order_id").to_pylist() == paid.order_id.tolist()
    np.testing.assert_allclose(got.column("gross").to_numpy(), paid.amount * 1.25)
    assert str(tmp_path) not in __import__("sys").path


async def test_python_pandas_format_and_dropped_batches(tmp_path, orders):
    (tmp_path / "udf_pandas.py").write_text(
        "def per_customer(df):\n"
        "    if (df.order_id < 1000).all():\n"
        "        return None  # drop the first batches\n"
        "    return df.groupby('customer_id').agg(n=('order_id', 'count'))\n"
    )
    tool = make("python", {"function": "udf_pandas:per_customer", "format": "pandas"}, tmp_path)
    out = await collect(tool, {"o": stream(orders, 500)})
    assert len(out) == 8  # 10 batches, the first two dropped
    assert out[0].schema.names == ["customer_id", "n"]  # the named index became a column
    first = orders.slice(1000, 500).to_pandas().groupby("customer_id").order_id.count()
    assert out[0].column("n").to_pylist() == first.tolist()


async def test_python_errors_name_the_function(tmp_path, orders):
    (tmp_path / "udf_errors.py").write_text(
        "def boom(table):\n    raise ValueError('amount must be positive')\n"
        "def wrong(table):\n    return 42\n"
    )
    with pytest.raises(ToolError, match=r"udf_errors:boom raised ValueError: amount must be positive") as err:
        await collect(make("python", {"function": "udf_errors:boom"}, tmp_path), {"o": stream(orders, 500)})
    assert isinstance(err.value.__cause__, ValueError)
    with pytest.raises(ToolError, match=r"(?s)has no function 'bom'.*hint: functions it has: boom, wrong"):
        await collect(make("python", {"function": "udf_errors:bom"}, tmp_path), {"o": stream(orders, 500)})
    with pytest.raises(ToolError, match=r"returned int"):
        await collect(make("python", {"function": "udf_errors:wrong"}, tmp_path), {"o": stream(orders, 500)})
    with pytest.raises(ToolError, match=r"(?s)cannot import 'no_such_udf:f'.*hint: put no_such_udf.py next to"):
        await collect(make("python", {"function": "no_such_udf:f"}, tmp_path), {"o": stream(orders, 500)})
    (tmp_path / "udf_broken.py").write_text("import json\nx = 1 / 0\n")
    with pytest.raises(ToolError, match=r"importing 'udf_broken:f' failed: ZeroDivisionError"):
        await collect(make("python", {"function": "udf_broken:f"}, tmp_path), {"o": stream(orders, 500)})
    (tmp_path / "udf_needs.py").write_text("import no_such_package_xyz\n")
    with pytest.raises(ToolError, match=r"importing 'udf_needs:f' failed: ModuleNotFoundError.*no_such_package_xyz"):
        await collect(make("python", {"function": "udf_needs:f"}, tmp_path), {"o": stream(orders, 500)})
    with pytest.raises(ValidationError):
        default_registry().get("transform", "python").Config.model_validate({"function": "no_colon"})


async def test_python_async_function_returning_record_batches(tmp_path, orders):
    (tmp_path / "udf_async.py").write_text(
        "import asyncio\n"
        "import pyarrow as pa\n"
        "async def ids(table):\n"
        "    await asyncio.sleep(0)\n"
        "    return pa.record_batch({'id': table['order_id'].combine_chunks()})\n"
    )
    out = await collect(make("python", {"function": "udf_async:ids"}, tmp_path), {"o": stream(orders, 1000)})
    assert len(out) == 5 and table_of(out).column("id").equals(orders.column("order_id"))
