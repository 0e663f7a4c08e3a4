"""length, castable, expression and the dataset checks, each against the same rule computed with pandas
on generated data with known failures, fed in batches that do not divide the data."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pydantic import ValidationError
from test_checks import BATCH, N, assert_same, make_check, make_table, run_mask

from agent_etl.exceptions import SpecError
from agent_etl.tools.registry import default_registry


@pytest.fixture(scope="module")
def table() -> pa.Table:
    rng = np.random.default_rng(11)
    base = make_table()
    text_num = np.where(rng.random(N) < 0.1, rng.choice(["12a", "", "n/a", "1.2.3"], N),
                        rng.integers(-500, 500, N).astype(str))
    text_day = np.where(rng.random(N) < 0.08, rng.choice(["2024-02-30", "31/01/2024", "soon"], N),
                        (np.datetime64("2024-01-01") + rng.integers(0, 300, N).astype("timedelta64[D]")).astype(str))
    tags = [list(range(k)) for k in rng.integers(0, 6, N)]
    return (base.append_column("num_text", pa.array(text_num, mask=rng.random(N) < 0.03))
            .append_column("day_text", pa.array(text_day, mask=rng.random(N) < 0.03))
            .append_column("tags", pa.array(tags, mask=rng.random(N) < 0.03)))


@pytest.fixture(scope="module")
def df(table) -> pd.DataFrame:
    return table.to_pandas()


def verdict(check, table: pa.Table) -> str | None:
    assert check.bind(table.schema) == []
    for batch in table.to_batches(max_chunksize=BATCH):
        assert check.failures(batch) is None  # dataset-only: the verdict comes at the end
        check.observe(batch)
    return check.finish()


# -- row checks ------------------------------------------------------------------------------------


def test_length_counts_characters_and_nulls_pass(table, df):
    check = make_check("length", {"column": "email", "min": 16, "max": 20})
    lengths = df["email"].str.len()
    assert_same(run_mask(check, table), df["email"].notna() & ((lengths < 16) | (lengths > 20)))
    assert run_mask(make_check("length", {"column": "region", "max": 0}), table).sum() == (
        df["region"].notna() & (df["region"] != "")).sum()


def test_length_of_lists(table, df):
    check = make_check("length", {"column": "tags", "min": 1, "max": 4})
    lengths = df["tags"].map(lambda v: len(v) if v is not None else np.nan)
    assert_same(run_mask(check, table), lengths.notna() & ((lengths < 1) | (lengths > 4)))


def test_length_on_a_number_is_a_bind_problem(table):
    (problem,) = make_check("length", {"column": "code", "max": 3}).bind(table.schema)
    assert "code" in problem.message and "no length" in problem.message and "cast" in problem.hint


def test_castable_integers_from_text(table, df):
    check = make_check("castable", {"column": "num_text", "type": "int64"})
    parsed = pd.to_numeric(df["num_text"], errors="coerce")
    assert_same(run_mask(check, table), df["num_text"].notna() & parsed.isna())


def test_castable_dates_from_text(table, df):
    check = make_check("castable", {"column": "day_text", "type": "date32"})
    parsed = pd.to_datetime(df["day_text"], format="%Y-%m-%d", errors="coerce")
    assert_same(run_mask(check, table), df["day_text"].notna() & parsed.isna())


def test_castable_narrowing_numbers_flags_overflow():
    batch = pa.record_batch({"x": pa.array([1, 127, 128, -129, None], pa.int64())})
    assert make_check("castable", {"column": "x", "type": "int8"}).failures(batch).to_pylist() == [
        False, False, True, True, False]


@pytest.mark.parametrize(("value", "why"), [({"column": "x", "type": "integr"}, "unknown type"),
                                            ({"column": "x", "type": "list<int64>"}, "unknown type"),
                                            ({"column": "x"}, "type")])
def test_castable_config_errors(value, why):
    with pytest.raises(ValidationError, match=why):
        default_registry().get("validator", "castable").parse(value)


def test_expression_false_fails_and_null_passes(table, df):
    check = make_check("expression", "amount >= 0 and status <> 'void'")
    result = (df["amount"] >= 0) & (df["status"] != "void")
    # SQL three-valued logic, as pandas cannot: false if any side is false, null if unknown
    false = (df["amount"].notna() & (df["amount"] < 0)) | (df["status"].notna() & (df["status"] == "void"))
    assert_same(run_mask(check, table), false)
    assert not (false & result).any()
    assert check.columns() == ["amount", "status"]


def test_expression_coalesce_makes_unknown_fail(table, df):
    check = make_check("expression", {"predicate": "coalesce(amount >= 0, false)", "name": "amount_known"})
    assert check.label == "expression(amount_known)"
    assert_same(run_mask(check, table), ~(df["amount"] >= 0))


@pytest.mark.parametrize(("predicate", "why"), [("amount >= and", "invalid SQL predicate"),
                                                ("1); drop table x; select (1", "one expression")])
def test_expression_that_does_not_parse_is_a_config_error(predicate, why):
    with pytest.raises(ValidationError, match=why):
        default_registry().get("validator", "expression").parse(predicate)


def test_expression_on_an_unknown_column_is_a_bind_problem(table):
    (problem,) = make_check("expression", "amout > 0").bind(table.schema)
    assert "amout" in problem.message and "amount" in problem.hint
    with pytest.raises(SpecError, match="amout"):
        make_check("expression", "amout > 0").failures(table.to_batches(max_chunksize=BATCH)[0])


# -- dataset checks ----------------------------------------------------------------------------------


def test_completeness(table, df):
    present = df["email"].notna().mean()
    assert verdict(make_check("completeness", {"column": "email", "min": present - 0.001}), table) is None
    message = verdict(make_check("completeness", {"column": "email", "min": present + 0.001}), table)
    assert f"{present:.2%}" in message and f"{df['email'].isna().sum()} null" in message


@pytest.mark.parametrize(("name", "stat"), [("mean", lambda s: s.mean()), ("stddev", lambda s: s.std())])
def test_mean_and_stddev_match_pandas(table, df, name, stat):
    value = stat(df["amount"])
    assert verdict(make_check(name, {"column": "amount", "min": value - 1e-9, "max": value + 1e-9}), table) is None
    message = verdict(make_check(name, {"column": "amount", "max": value - 0.01}), table)
    assert "above the maximum" in message and f"{value:.6g}" in message
    assert "below the minimum" in verdict(make_check(name, {"column": "amount", "min": value + 0.01}), table)


def test_stddev_is_stable_far_from_zero():
    # a naive sum of squares loses every digit here; merging per-batch moments does not
    rng = np.random.default_rng(5)
    values = 1e9 + rng.normal(0, 1, 10_000)
    t = pa.table({"x": values})
    want = float(np.std(values, ddof=0))
    check = make_check("stddev", {"column": "x", "min": want - 1e-6, "max": want + 1e-6, "ddof": 0})
    assert verdict(check, t) is None


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.99, 1.0])
def test_quantile_exact_matches_pandas(table, df, q):
    value = df["code"].quantile(q)
    assert verdict(make_check("quantile", {"column": "code", "q": q, "min": value, "max": value}), table) is None
    assert "above" in verdict(make_check("quantile", {"column": "code", "q": q, "max": value - 0.5}), table)


def test_quantile_beyond_exact_limit_is_within_the_stated_rank_error():
    rng = np.random.default_rng(9)
    values = rng.lognormal(3, 1, 200_000)
    t = pa.table({"x": values})
    q = 0.9
    check = make_check("quantile", {"column": "x", "q": q, "max": 0.0, "exact_limit": 10_000})
    message = verdict(check, t)
    assert "approximate" in message
    got = float(message.split(" is ")[1].split(",")[0])
    rank = (values <= got).mean()
    eps = check._sketch.normalized_rank_error(False)
    assert abs(rank - q) <= eps < 0.005


def test_statistics_on_text_are_bind_problems(table):
    for name, value in [("mean", {"column": "email", "min": 0}), ("quantile", {"column": "email", "q": 0.5, "min": 0})]:
        (problem,) = make_check(name, value).bind(table.schema)
        assert "not a number" in problem.message


def test_statistics_of_an_empty_column_fail():
    t = pa.table({"x": pa.array([None, None], pa.float64())})
    assert "no values" in verdict(make_check("mean", {"column": "x", "min": 0}), t)
    assert "too few" in verdict(make_check("stddev", {"column": "x", "min": 0}), t)


def test_freshness(table):
    now = dt.datetime.now(dt.UTC)
    rng = np.random.default_rng(3)
    ts = now - pd.to_timedelta(rng.integers(3 * 3600, 50 * 3600, 1000), unit="s")
    t = pa.table({"ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "naive": pa.array(ts.tz_localize(None))})
    newest_age_h = (now - ts.max()).total_seconds() / 3600
    assert newest_age_h >= 3
    assert verdict(make_check("freshness", {"column": "ts", "max_age": "1 day"}), t) is None
    assert verdict(make_check("freshness", {"column": "naive", "max_age": 86400}), t) is None
    message = verdict(make_check("freshness", {"column": "ts", "max_age": "2 hours"}), t)
    assert "older than max_age 2 hours" in message and "3 h" in message
    assert verdict(make_check("freshness", {"column": "day", "max_age": "1 w"}), table) is not None  # 2024-2025


@pytest.mark.parametrize("age", ["2 hourz", "", "-1 h", 0, "h"])
def test_freshness_bad_max_age(age):
    with pytest.raises(ValidationError, match="max_age"):
        default_registry().get("validator", "freshness").parse({"column": "ts", "max_age": age})


def test_freshness_on_text_is_a_bind_problem(table):
    (problem,) = make_check("freshness", {"column": "email", "max_age": "1h"}).bind(table.schema)
    assert "not a timestamp" in problem.message


def test_schema_drift_missing_extra_and_type_changes(table):
    expected = {"id": "int64", "amount": "float64", "status": "string", "day": "date32", "gone": "string",
                "code": "int64"}
    message = verdict(make_check("schema", {"columns": expected}), table)
    assert "missing columns: gone" in message
    assert "type changes: code is int32, expected int64" in message
    assert "unexpected columns: email, ts, region, num_text, day_text, tags" in message
    message = verdict(make_check("schema", {"columns": expected, "allow_extra": True}), table)
    assert "unexpected" not in message
    exact = {f.name: str(f.type) for f in table.schema if f.name != "tags"}  # a list type has no written form
    assert verdict(make_check("schema", {"columns": exact, "allow_extra": True}), table) is None


def test_schema_sees_a_change_mid_stream():
    check = make_check("schema", {"columns": {"x": "int64"}})
    check.bind(pa.schema([("x", pa.int64())]))
    check.observe(pa.record_batch({"x": pa.array([1], pa.int64())}))
    check.observe(pa.record_batch({"x": pa.array(["1"])}))
    assert check.finish() == "type changes: x is string, expected int64"


def test_schema_bad_type_is_a_config_error():
    with pytest.raises(ValidationError, match="column 'x': unknown type 'integr'"):
        default_registry().get("validator", "schema").parse({"columns": {"x": "integr"}})


def test_referential_across_batches(table, df):
    rng = np.random.default_rng(4)
    keys = np.setdiff1d(np.arange(40), rng.choice(40, 6, replace=False))
    ref = pa.table({"key": pa.array(np.concatenate([keys, keys[:5], [None]]), pa.int64())})  # repeats, a null
    check = make_check("referential", {"column": "code", "input": "codes", "key": "key"})
    assert check.inputs() == ["codes"]
    for batch in ref.to_batches(max_chunksize=7):
        check.reference("codes", batch)
    assert check.referenced() == []
    assert_same(run_mask(check, table), df["code"].notna() & ~df["code"].isin(keys))
    assert len(check._keys) == len(keys)  # distinct keys only


def test_referential_text_keys_and_wrong_types(table, df):
    check = make_check("referential", {"column": "region", "input": "regions", "key": "name"})
    check.reference("regions", pa.record_batch({"name": pa.array(["north", "south"], pa.large_string())}))
    check.referenced()
    assert_same(run_mask(check, table), df["region"].notna() & ~df["region"].isin(["north", "south"]))
    check = make_check("referential", {"column": "region", "input": "codes", "key": "key"})
    check.reference("codes", pa.record_batch({"key": [1, 2]}))
    assert check.referenced() == []
    (problem,) = check.bind(table.schema)
    assert "cannot be compared" in problem.message and "int64" in problem.message


def test_referential_missing_key_column():
    check = make_check("referential", {"column": "code", "input": "codes", "key": "kye"})
    check.reference("codes", pa.record_batch({"key": [1]}))
    (problem,) = check.referenced()
    assert "'kye' is not a column of 'codes'" in problem.message and "did you mean 'key'" in problem.hint


def test_severity_is_an_option_of_every_check():
    for name in default_registry().names("validator"):
        cls = default_registry().get("validator", name)
        assert "severity" in cls.Config.model_fields, name
    with pytest.raises(ValidationError):
        default_registry().get("validator", "not_null").parse({"columns": ["a"], "severity": "fatal"})


def test_unique_keys_that_turn_sparse_mid_stream_stay_exact():
    # dense ids use a bitmap; huge ids arriving later move the set to sorted runs without losing a key
    rng = np.random.default_rng(13)
    dense = rng.integers(0, 5000, 6000)
    sparse = rng.choice(np.array([2**40 + 7, -(2**50), 2**61, 12, 4999, 77]), 500)
    ids = np.concatenate([dense, sparse, dense[:300]])
    check = make_check("unique", "id")
    t = pa.table({"id": ids})
    mask = np.concatenate([check.failures(b).to_numpy(zero_copy_only=False) for b in t.to_batches(max_chunksize=BATCH)])
    np.testing.assert_array_equal(mask, pd.Series(ids).duplicated(keep="first").to_numpy())
    assert check._seen.runs is not None and len(check._seen) == len(np.unique(ids))
