"""The `anomaly` check end to end: a pipeline run through the real CLI on a week of generated data
(run store under a temporary home), then a faulty run: exit 3 with `on_anomaly: fail`, and with
`warn` exit 0 and the anomalies stored with the run's profile. Also its spec errors (exit 2)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent_etl.store.runs import RunStore

AGENT_ETL = str(Path(sys.executable).parent / "agent-etl")
HISTORY = 6

PIPE = """\
version: 1
name: orders_history
extract:
  orders: {{tool: parquet, path: orders.parquet}}
quality:
  - input: orders
    on_failure: fail
    checks:
      - not_null: [order_id]
      - anomaly: {check}
load:
  out: {{input: orders, tool: parquet, path: out/orders.parquet}}
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENT_ETL_HOME": str(cwd / ".agent-etl")}
    return subprocess.run([AGENT_ETL, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def day(path: Path, seed: int, *, rows: int = 2000, null_rate: float = 0.01) -> None:
    """One day's orders: about ``rows`` rows, ``amount`` ~ normal(100, 10) with ``null_rate`` nulls."""
    rng = np.random.default_rng(seed)
    n = int(rows * np.exp(rng.normal(0, 0.02)))
    amount = pa.array(rng.normal(100 + rng.normal(0, 0.3), 10, n), mask=rng.random(n) < null_rate)
    pq.write_table(pa.table({"order_id": np.arange(n), "amount": amount,
                             "status": rng.choice(["paid", "open", "void"], n, p=[0.7, 0.25, 0.05])}),
                   path / "orders.parquet")


def run_id(result: subprocess.CompletedProcess) -> str:
    match = re.search(r"run (\S+) ", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return match.group(1)


@pytest.fixture(scope="module")
def week(tmp_path_factory) -> Path:
    """A pipeline directory whose run store holds HISTORY successful runs on varying data."""
    path = tmp_path_factory.mktemp("anomaly")
    (path / "p.yaml").write_text(PIPE.format(check="{min_history: 5, on_anomaly: fail}"))
    for seed in range(HISTORY):
        day(path, seed)
        result = cli("run", "p.yaml", cwd=path)
        assert result.returncode == 0, result.stdout + result.stderr
    return path


def quality_message(store: RunStore, rid: str) -> str:
    task = next(t for t in store.get_run(rid).tasks if t["task"] == "orders")
    (gate,) = task["details"]["quality"]
    return next(c["message"] for c in gate["checks"] if c["label"].startswith("anomaly"))


def test_history_is_learned_then_judged(week):
    store = RunStore.at(week / ".agent-etl")
    try:
        runs = sorted(store.list_runs(pipeline="orders_history", limit=50), key=lambda r: r["started_at"])
        assert len(runs) >= HISTORY and all(r["status"] == "succeeded" for r in runs[:HISTORY])
        assert quality_message(store, runs[0]["run_id"]) == "learning (0 of 5 runs)"
        assert quality_message(store, runs[4]["run_id"]) == "learning (4 of 5 runs)"
        assert quality_message(store, runs[5]["run_id"]) == "no anomaly against 5 earlier runs"
        stored = store.run_profiles(runs[5]["run_id"])["orders"]
        assert stored["anomalies"] == [] and stored["profile"]["rows"] > 1900
        assert len(store.profile_history("orders_history", "orders")) >= HISTORY
    finally:
        store.close()


def test_a_faulty_run_fails_with_on_anomaly_fail_and_warns_with_warn(week):
    day(week, 100, rows=2000, null_rate=0.25)  # 1% -> 25% of amounts missing
    failed = cli("run", "p.yaml", cwd=week)
    out = failed.stdout + failed.stderr
    assert failed.returncode == 3, out
    assert "Traceback" not in out
    assert "against history: null rate of 'amount' is 2" in out  # 24-26%, the exact share varies
    assert re.search(r"expected [01]\.\d\d% \(range 0\.\d\d% to \d+\.\d\d% from 6 earlier runs", out), out
    store = RunStore.at(week / ".agent-etl")
    try:
        stored = store.run_profiles(run_id(failed))["orders"]["anomalies"]
        # a quarter of the amounts missing also means a quarter fewer distinct amounts
        assert {(a["metric"], a["column"]) for a in stored} <= {("null_rate", "amount"), ("distinct", "amount")}
        found = next(a for a in stored if a["metric"] == "null_rate")
        assert found["severity"] == "fail"
        assert found["low"] <= 0.01 <= found["high"] < found["value"]
    finally:
        store.close()
    # the failed run is no baseline: the same data is still an anomaly, now only reported
    (week / "p.yaml").write_text(PIPE.format(check="{min_history: 5, on_anomaly: warn}"))
    warned = cli("run", "p.yaml", cwd=week)
    out = warned.stdout + warned.stderr
    assert warned.returncode == 0, out
    assert "anomaly: orders: null rate of 'amount'" in out  # the log line
    store = RunStore.at(week / ".agent-etl")
    try:
        stored = store.run_profiles(run_id(warned))["orders"]["anomalies"]
        assert ("null_rate", "amount", "warn") in [(a["metric"], a["column"], a["severity"]) for a in stored]
        assert {a["severity"] for a in stored} == {"warn"}
    finally:
        store.close()


@pytest.mark.parametrize(("check", "needle"), [
    ("{sensitivity: extreme}", "sensitivity"),
    ("{metrics: [row_count, nulls]}", "metrics"),
    ("{quantiles: [0.3]}", "profiles hold the quantiles"),
    ("{on_anomaly: quarantine}", "on_anomaly"),
    ("{min_history: 1}", "min_history"),
])
def test_bad_options_are_spec_errors(tmp_path, check, needle):
    day(tmp_path, 1, rows=50)
    (tmp_path / "p.yaml").write_text(PIPE.format(check=check))
    result = cli("validate", "p.yaml", cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "line 10:" in out and needle in out and "Traceback" not in out


def test_the_check_needs_the_groups_profile(tmp_path):
    day(tmp_path, 1, rows=50)
    text = PIPE.format(check="{on_anomaly: fail}").replace("    on_failure: fail\n",
                                                           "    on_failure: fail\n    profile: false\n")
    (tmp_path / "p.yaml").write_text(text)
    result = cli("run", "p.yaml", cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "the anomaly check needs the group's profile" in out and "profile: false" in out
