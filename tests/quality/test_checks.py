"""Each quality check against the same rule computed with pandas, on generated data with known failures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pydantic import ValidationError

from agent_etl.exceptions import SpecError
from agent_etl.tools.base import ToolContext
from agent_etl.tools.registry import default_registry

N = 2000
BATCH = 173  # not a divisor of N, so keys and failures straddle batch boundaries


def make_table(seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(N, dtype=np.int64)
    repeat_at = rng.choice(np.arange(1, N), 60, replace=False)
    ids[repeat_at] = rng.integers(0, N, 60)  # some repeat a key of an earlier or later batch
    amount = np.round(rng.normal(50, 40, N), 2)
    amount[rng.choice(N, 30, replace=False)] = -0.0  # -0.0 is within [0, ...]
    status = rng.choice(np.array(["paid", "open", "void", "lost", "PAID"]), N, p=[0.5, 0.3, 0.15, 0.03, 0.02])
    local = np.char.add("user", rng.integers(0, 500, N).astype(str))
    email = np.where(rng.random(N) < 0.05, np.char.add(local, "@bad"), np.char.add(local, "@example.com"))
    email = np.where(rng.random(N) < 0.02, np.char.add(email, "\n"), email)  # `$` must not match before \n
    day = np.datetime64("2024-01-01") + rng.integers(-20, 400, N).astype("timedelta64[D]")
    region = rng.choice(np.array(["north", "south", "", "nort", "hsouth"]), N)
    code = rng.integers(0, 40, N)

    def with_nulls(values, frac, type=None):
        return pa.array(values, type=type, mask=rng.random(N) < frac)

    return pa.table({
        "id": pa.array(ids),
        "amount": with_nulls(amount, 0.03),
        "status": with_nulls(status, 0.04),
        "email": with_nulls(email, 0.03, pa.string()),
        "day": with_nulls(day, 0.02, pa.date32()),
        "ts": with_nulls(day.astype("datetime64[us]") + np.timedelta64(6, "h"), 0.02, pa.timestamp("us", tz="UTC")),
        "region": with_nulls(region, 0.02, pa.string()),
        "code": with_nulls(code, 0.02, pa.int32()),
    })


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return make_table()


@pytest.fixture(scope="module")
def df(table) -> pd.DataFrame:
    return table.to_pandas()


def make_check(name: str, value, tmp_path: Path = Path(".")):
    cls = default_registry().get("validator", name)
    ctx = ToolContext(run_id="r1", task="t", base_dir=tmp_path, home=tmp_path / ".agent-etl", batch_size=BATCH)
    return cls(cls.parse(value), ctx)


def run_mask(check, table: pa.Table) -> np.ndarray:
    """The check's failure mask over the whole stream, batch by batch."""
    if hasattr(check, "bind"):
        assert check.bind(table.schema) == []
    parts = []
    for batch in table.to_batches(max_chunksize=BATCH):
        mask = check.failures(batch)
        assert len(mask) == batch.num_rows
        assert mask.null_count == 0  # a null in a mask would let a bad row into the good table
        parts.append(mask.to_numpy(zero_copy_only=False))
        check.observe(batch)
    return np.concatenate(parts)


def assert_same(mask: np.ndarray, expected: pd.Series) -> None:
    expected = expected.to_numpy(dtype=bool)
    assert expected.any() and not expected.all(), "the data must hold both passing and failing rows"
    np.testing.assert_array_equal(mask, expected)


def test_not_null_flags_a_null_in_any_listed_column(table, df):
    check = make_check("not_null", ["amount", "status"])
    assert check.label == "not_null(amount,status)"
    assert_same(run_mask(check, table), df["amount"].isna() | df["status"].isna())


def test_not_null_on_a_column_without_nulls_passes_everything(table):
    assert not run_mask(make_check("not_null", "id"), table).any()


def test_range_numbers_and_nulls_pass(table, df):
    check = make_check("range", {"column": "amount", "min": 0, "max": 100})
    expected = df["amount"].notna() & ((df["amount"] < 0) | (df["amount"] > 100))
    assert_same(run_mask(check, table), expected)


def test_range_one_bound_and_exclusive(table, df):
    assert_same(run_mask(make_check("range", {"column": "amount", "max": 75}), table),
                df["amount"].notna() & (df["amount"] > 75))
    check = make_check("range", {"column": "code", "min": 10, "max": 20, "inclusive": False})
    assert_same(run_mask(check, table), df["code"].notna() & ((df["code"] <= 10) | (df["code"] >= 20)))


def test_range_dates_from_iso_strings_compare_as_dates(table, df):
    check = make_check("range", {"column": "day", "min": "2024-01-01", "max": "2024-12-31"})
    day = pd.to_datetime(df["day"])
    expected = day.notna() & ((day < "2024-01-01") | (day > "2024-12-31"))
    assert_same(run_mask(check, table), expected)


def test_range_date_objects_as_yaml_gives_them(table, df):
    check = make_check("range", {"column": "day", "min": dt.date(2024, 3, 1)})
    day = pd.to_datetime(df["day"])
    assert_same(run_mask(check, table), day.notna() & (day < "2024-03-01"))


def test_range_timestamps_with_time_zone(table, df):
    # a naive bound on a zoned column is read as UTC; an explicit offset is honoured
    check = make_check("range", {"column": "ts", "min": "2024-01-01T06:00:00", "max": "2024-06-30T10:00:00+02:00"})
    ts = df["ts"]
    lo, hi = pd.Timestamp("2024-01-01T06:00:00", tz="UTC"), pd.Timestamp("2024-06-30T08:00:00", tz="UTC")
    assert_same(run_mask(check, table), ts.notna() & ((ts < lo) | (ts > hi)))


def test_range_strings_compare_alphabetically(table, df):
    check = make_check("range", {"column": "region", "min": "north"})
    assert_same(run_mask(check, table), df["region"].notna() & (df["region"] < "north"))


@pytest.mark.parametrize(("column", "bound", "hint"), [
    ("amount", "ten", "number"),
    ("code", "2024-01-01", "number"),
    ("day", 5, "ISO date"),
    ("day", "31/01/2024", "ISO"),
    ("ts", 1700000000, "ISO timestamp"),
    ("region", 3, "quote the bound"),
    ("code", dt.date(2024, 1, 1), "number"),
])
def test_range_bound_of_the_wrong_type_is_a_bind_problem(table, column, bound, hint):
    check = make_check("range", {"column": column, "min": bound})
    problems = check.bind(table.schema)
    assert len(problems) == 1
    assert column in problems[0].message and repr(bound) in problems[0].message
    assert hint in problems[0].hint
    # used on its own (no gate), the first batch raises the same as a SpecError
    fresh = make_check("range", {"column": column, "min": bound})
    with pytest.raises(SpecError, match=column):
        fresh.failures(table.to_batches(max_chunksize=BATCH)[0])


@pytest.mark.parametrize("value", [{"column": "a"}, {"column": "a", "min": 5, "max": 1}, {"column": "a", "min": True},
                                   {"column": "a", "min": 0, "maxx": 3}])
def test_range_config_errors(value):
    with pytest.raises(ValidationError):
        default_registry().get("validator", "range").parse(value)


def test_regex_is_a_full_match_and_nulls_pass(table, df):
    pattern = r"[a-z]+[0-9]+@[a-z]+\.com"
    check = make_check("regex", {"column": "email", "pattern": pattern})
    # Python's fullmatch lets `$`-less patterns stop before a trailing newline no more than RE2 does
    expected = df["email"].notna() & ~df["email"].fillna("").str.fullmatch(pattern)
    assert_same(run_mask(check, table), expected)


def test_regex_alternatives_are_anchored_as_a_whole(table, df):
    check = make_check("regex", {"column": "status", "pattern": "paid|open"})
    expected = df["status"].notna() & ~df["status"].isin(["paid", "open"])
    assert_same(run_mask(check, table), expected)


def test_regex_ignore_case(table, df):
    check = make_check("regex", {"column": "status", "pattern": "paid", "ignore_case": True})
    expected = df["status"].notna() & (df["status"].str.lower() != "paid")
    assert_same(run_mask(check, table), expected)


@pytest.mark.parametrize(("pattern", "why"), [("[a-z", "invalid regular expression"), ("(?=a)b", "RE2"),
                                              (r"(a)\1", "RE2"), ("", "at least 1")])
def test_regex_that_does_not_compile_is_a_config_error(pattern, why):
    with pytest.raises(ValidationError, match=why):
        default_registry().get("validator", "regex").parse({"column": "email", "pattern": pattern})


def test_regex_on_a_number_column_is_a_bind_problem(table):
    problems = make_check("regex", {"column": "code", "pattern": "[0-9]+"}).bind(table.schema)
    assert len(problems) == 1 and "not a string" in problems[0].message and "cast" in problems[0].hint


def test_accepted_values_strings_with_nulls(table, df):
    check = make_check("accepted_values", {"column": "status", "values": ["paid", "open", "void"]})
    expected = df["status"].notna() & ~df["status"].isin(["paid", "open", "void"])
    assert_same(run_mask(check, table), expected)


def test_accepted_values_numbers(table, df):
    allowed = list(range(0, 40, 3))
    check = make_check("accepted_values", {"column": "code", "values": allowed})
    assert_same(run_mask(check, table), df["code"].notna() & ~df["code"].isin(allowed))


def test_accepted_values_of_another_type_is_a_bind_problem(table):
    problems = make_check("accepted_values", {"column": "code", "values": ["a", "b"]}).bind(table.schema)
    assert len(problems) == 1 and "code" in problems[0].message and "int32" in problems[0].message


def test_unique_flags_repeats_across_batches(table, df):
    check = make_check("unique", ["id"])
    assert check.label == "unique(id)"
    mask = run_mask(check, table)
    assert_same(mask, df.duplicated(subset=["id"], keep="first"))
    # the repeats are spread over batches: some repeat a key first seen in an earlier batch
    first_batch = np.arange(N) // BATCH
    first_of_key = df.groupby("id").cumcount() == 0
    first_batch_of_key = pd.Series(first_batch).where(first_of_key).groupby(df["id"]).transform("min")
    assert (first_batch_of_key[mask] < first_batch[mask]).sum() > 10
    assert check.finish() is None  # row-level only: the gate counts the flagged rows


def test_unique_composite_key_with_nulls_never_duplicate(table, df):
    check = make_check("unique", ["region", "code"])
    complete = df["region"].notna() & df["code"].notna()
    assert_same(run_mask(check, table), complete & df.duplicated(subset=["region", "code"], keep="first"))


def test_unique_composite_string_parts_do_not_run_together():
    # ("nort", "hsouth") and ("north", "south") concatenate to the same text; ("a", "") and ("a\0", "") differ
    batch = pa.record_batch({"a": ["nort", "north", "a", "a\x00", "", None, "north"],
                             "b": ["hsouth", "south", "", "", "", "x", "south"]})
    check = make_check("unique", ["a", "b"])
    assert check.failures(batch).to_pylist() == [False, False, False, False, False, False, True]


def test_unique_strings_and_dates_across_batches(table, df):
    check = make_check("unique", ["email"])
    assert_same(run_mask(check, table), df["email"].notna() & df.duplicated(subset=["email"], keep="first"))
    check = make_check("unique", "day")
    assert_same(run_mask(check, table), df["day"].notna() & df.duplicated(subset=["day"], keep="first"))


def test_unique_floats_treat_negative_zero_and_nan_as_sql_does():
    batch = pa.record_batch({"x": pa.array([0.0, -0.0, float("nan"), float("nan"), 1.5, None, None])})
    assert make_check("unique", "x").failures(batch).to_pylist() == [False, True, False, True, False, False, False]


def test_unique_memory_holds_distinct_keys_only():
    check = make_check("unique", ["id", "tag"])
    keys = pa.record_batch({"id": pa.array(np.arange(100) % 37), "tag": pa.array(np.where(np.arange(100) % 2, "x", "y"))})
    flagged = sum(check.failures(keys).true_count for _ in range(50))
    distinct = len({(i % 37, i % 2) for i in range(100)})
    assert flagged == 50 * 100 - distinct
    assert len(check._seen) == distinct


def test_unique_on_a_list_column_is_a_bind_problem():
    schema = pa.schema([("tags", pa.list_(pa.string()))])
    problems = make_check("unique", ["tags"]).bind(schema)
    assert len(problems) == 1 and "cannot be a key" in problems[0].message


@pytest.mark.parametrize(("bounds", "verdict"), [({"min": 1}, None), ({"min": N + 1}, "expected at least"),
                                                 ({"max": N}, None), ({"max": N - 1}, "expected at most"),
                                                 ({"min": N, "max": N}, None)])
def test_row_count(table, bounds, verdict):
    check = make_check("row_count", bounds)
    assert check.failures(table.to_batches()[0]) is None  # dataset-only
    for batch in table.to_batches(max_chunksize=BATCH):
        check.observe(batch)
    message = check.finish()
    if verdict is None:
        assert message is None
    else:
        assert verdict in message and str(N) in message


@pytest.mark.parametrize("value", [{}, {"min": -1}, {"min": 5, "max": 2}])
def test_row_count_config_errors(value):
    with pytest.raises(ValidationError):
        default_registry().get("validator", "row_count").parse(value)


def test_shorthand_and_unknown_keys():
    cls = default_registry().get("validator", "not_null")
    assert cls.parse("a").columns == ["a"]
    with pytest.raises(ValidationError):
        cls.parse([])
    with pytest.raises(ValidationError):
        default_registry().get("validator", "accepted_values").parse({"column": "a", "value": ["x"]})


@pytest.mark.parametrize(("name", "value"), [("range", {"column": "nope", "min": 0}), ("unique", ["id", "nope"]),
                                             ("regex", {"column": "nope", "pattern": "x"})])
def test_a_check_used_alone_names_a_missing_column(table, name, value):
    with pytest.raises(SpecError, match="'nope' is not in the input"):
        make_check(name, value).failures(table.to_batches(max_chunksize=BATCH)[0])
