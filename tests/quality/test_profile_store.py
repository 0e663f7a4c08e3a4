"""Profiles of quality-gated inputs, stored per run by real `agent-etl run` processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent_etl.store.runs import RunStore

AGENT_ETL = str(Path(sys.executable).parent / "agent-etl")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENT_ETL_HOME": str(cwd / ".agent-etl")}
    return subprocess.run([AGENT_ETL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def write_pipeline(work: Path, profile: str = "", checks: str = "- not_null: [id]", on_failure: str = "fail") -> None:
    (work / "p.yaml").write_text(textwrap.dedent(f"""\
        version: 1
        name: profiled
        extract:
          orders: {{tool: csv, path: orders.csv}}
        quality:
          - input: orders
            on_failure: {on_failure}
            checks:
              {checks}
            {profile}
        load:
          out: {{input: orders, tool: parquet, path: out/}}
        """))


def write_data(work: Path, n: int = 2_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"id": np.arange(n), "amount": rng.normal(100, 15, n).round(2),
                       "status": rng.choice(["paid", "open", "void"], n, p=[0.7, 0.2, 0.1])})
    df.loc[::50, "status"] = None
    df.to_csv(work / "orders.csv", index=False)
    return df


def runs(work: Path) -> list[dict]:
    store = RunStore.at(work / ".agent-etl")
    try:
        return store.list_runs(limit=100)
    finally:
        store.close()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


def test_a_run_stores_the_profile_of_each_gated_input(work):
    df = write_data(work)
    write_pipeline(work, "profile: {outliers: {amount: iqr}}")
    result = cli("run", "p.yaml", cwd=work)
    assert result.returncode == 0, result.stderr
    (run,) = runs(work)
    store = RunStore.at(work / ".agent-etl")
    try:
        stored = store.run_profiles(run["run_id"])
    finally:
        store.close()
    assert list(stored) == ["orders"] and stored["orders"]["anomalies"] is None
    p = stored["orders"]["profile"]
    assert p["version"] == 1 and p["rows"] == len(df) and p["schema"]["amount"] == "double"
    amount, status = p["columns"]["amount"], p["columns"]["status"]
    assert amount["mean"] == pytest.approx(df["amount"].mean(), rel=1e-12)
    assert amount["std"] == pytest.approx(df["amount"].std(), rel=1e-9)
    assert amount["outliers"]["method"] == "iqr" and not amount["outliers"]["auto"]
    assert status["nulls"] == df["status"].isna().sum() and status["distinct"] == 3
    assert status["top"][0] == {"value": "paid", "count": int((df["status"] == "paid").sum())}


def test_profile_false_stores_nothing(work):
    write_data(work)
    write_pipeline(work, "profile: false")
    assert cli("run", "p.yaml", cwd=work).returncode == 0
    (run,) = runs(work)
    store = RunStore.at(work / ".agent-etl")
    try:
        assert store.run_profiles(run["run_id"]) == {}
    finally:
        store.close()


def test_history_holds_only_successful_runs_oldest_first(work):
    write_pipeline(work)
    for n in (1_000, 1_100):
        write_data(work, n)
        assert cli("run", "p.yaml", cwd=work).returncode == 0
    write_data(work, 1_200)
    write_pipeline(work, checks="- range: {column: amount, max: 0}")  # fails: exit 3
    assert cli("run", "p.yaml", cwd=work).returncode == 3
    write_pipeline(work)
    write_data(work, 1_300)
    assert cli("run", "p.yaml", cwd=work).returncode == 0
    latest = runs(work)[0]["run_id"]
    store = RunStore.at(work / ".agent-etl")
    try:
        assert [p["rows"] for p in store.profile_history("profiled", "orders")] == [1_000, 1_100, 1_300]
        assert [p["rows"] for p in store.profile_history("profiled", "orders", before=latest)] == [1_000, 1_100]
        assert [p["rows"] for p in store.profile_history("profiled", "orders", limit=1)] == [1_300]
        assert store.profile_history("profiled", "other") == []
        store.set_anomalies(latest, "orders", [{"metric": "row_count", "column": None}])
        assert store.run_profiles(latest)["orders"]["anomalies"] == [{"metric": "row_count", "column": None}]
    finally:
        store.close()


def test_a_profile_column_that_is_not_in_the_input_is_a_spec_error(work):
    write_data(work)
    write_pipeline(work, "profile: {columns: [amuont]}")
    result = cli("run", "p.yaml", cwd=work)
    assert result.returncode == 2
    assert "profile column 'amuont' is not in the stream" in result.stderr + result.stdout
    assert "did you mean 'amount'" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_bad_outlier_method_is_a_spec_error_with_its_line(work):
    write_data(work)
    write_pipeline(work, "profile: {outliers: {amount: tukey}}")
    result = cli("validate", "p.yaml", cwd=work)
    assert result.returncode == 2
    text = result.stderr + result.stdout
    assert "line 10" in text and "Input should be 'iqr', 'zscore', 'mad' or 'auto' (got 'tukey')" in text
    assert "valid boolean" not in text and "Traceback" not in text
