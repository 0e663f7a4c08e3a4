"""``agent-etl report``: the quality report of real runs made through the CLI, in every format,
read back with the json, csv and openpyxl readers and checked against pandas."""

import csv
import json
import shutil

import numpy as np
import openpyxl
import pandas as pd
import pytest
from tests.cli.conftest import cli

from agent_etl.store.runs import RunStore

N = 400
HOSTILE = "<script>document.body.setAttribute('data-pwned','1')</script>"
FORMULA = "=1+2"
ACCEPTED = ["paid", "open"]
PIPE = """\
version: 1
name: {name}
defaults:
  batch_size: 150
extract:
  orders:
    tool: csv
    path: data/orders.csv
quality:
  - input: orders
    checks:
      - not_null: [name]
      - unique: [id]
      - range: {{column: amount, min: 0}}
      - accepted_values: {{column: status, values: [paid, open]}}
    on_failure: {mode}
load:
  lake:
    input: orders
    tool: parquet
    path: out/orders.parquet
"""


def orders(seed: int = 7) -> pd.DataFrame:
    """Orders with known failures; rows 1 and 2 (hostile names) fail the range check, so they are the
    first two rows of the quarantine file."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"id": np.arange(N), "name": [f"customer {i}" for i in range(N)],
                       "amount": rng.uniform(1, 500, N).round(2), "status": [ACCEPTED[i % 2] for i in range(N)]})
    df.loc[390:394, "id"] = range(5)          # 5 later copies of ids 0..4
    df.loc[20:26, "name"] = None              # 7 nulls
    df.loc[1, "name"], df.loc[2, "name"] = HOSTILE, FORMULA
    df.loc[[1, 2, *range(50, 62)], "amount"] *= -1   # 14 negative amounts
    df.loc[100:108, "status"] = "lost"        # 9 values not accepted
    return df


def expected(df: pd.DataFrame) -> dict[str, pd.Series]:
    return {"not_null(name)": df.name.isna(), "unique(id)": df.id.duplicated(keep="first"),
            "range(amount)": df.amount < 0, "accepted_values(status)": ~df.status.isin(ACCEPTED)}


def make_pipeline(root, *, name="report_orders", mode="quarantine", df=None):
    (root / "data").mkdir(parents=True, exist_ok=True)
    (df if df is not None else orders()).to_csv(root / "data" / "orders.csv", index=False)
    path = root / f"{name}.yaml"
    path.write_text(PIPE.format(name=name, mode=mode))
    return path


def run(root, pipeline, code=0):
    r = cli("run", pipeline.name, "--json", cwd=root)
    assert r.returncode == code, r.stderr + r.stdout
    return json.loads(r.stdout)["run_id"]


@pytest.fixture(scope="module")
def dirty_runs(tmp_path_factory):
    """Three runs of the same pipeline: two clean ones (history) and the dirty one. Shared by the
    tests that only read the store; a test that writes to it takes ``own_runs``."""
    tmp_path = tmp_path_factory.mktemp("report")
    clean = orders(seed=1)
    clean = clean[~pd.concat(expected(clean), axis=1).any(axis=1)]
    pipeline = make_pipeline(tmp_path, df=clean.head(300))
    history = [run(tmp_path, pipeline)]
    make_pipeline(tmp_path, df=clean)
    history.append(run(tmp_path, pipeline))
    make_pipeline(tmp_path)
    return tmp_path, history, run(tmp_path, pipeline)


@pytest.fixture
def own_runs(dirty_runs, tmp_path):
    root, history, run_id = dirty_runs
    shutil.copytree(root, tmp_path / "runs")
    return tmp_path / "runs", history, run_id


def report(root, *args, code=0):
    r = cli("report", *args, cwd=root)
    assert r.returncode == code, r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    return r


def test_json_report_of_a_quarantining_run(dirty_runs):
    root, history, run_id = dirty_runs
    r = report(root, run_id[:-2], "--format", "json", "--out", "r.json")  # a unique prefix
    assert f"to {root / 'r.json'}" in r.stdout
    model = json.loads((root / "r.json").read_text())
    assert model["run"]["run_id"] == run_id and model["run"]["status"] == "succeeded"
    df = orders()
    fails = expected(df)
    bad = pd.concat(fails, axis=1).any(axis=1)
    (entry,) = model["inputs"]
    assert entry["input"] == "orders" and entry["status"] == "quarantined"
    assert (entry["rows_in"], entry["rows_quarantined"], entry["rows_passed"]) == (N, bad.sum(), N - bad.sum())
    assert entry["checks_total"] == 4 and entry["checks_failed"] == 4
    checks = {c["label"]: c for g in entry["gates"] for c in g["checks"]}
    assert {k: c["rows_failed"] for k, c in checks.items()} == {k: int(v.sum()) for k, v in fails.items()}
    assert all(c["rows_passed"] == N - c["rows_failed"] for c in checks.values())
    assert all(c["status"] in ("failed", "quarantined") for c in checks.values())
    for c in checks.values():  # kind, severity and failing rows, in reports of gates that give them
        assert c["kind"] in (None, "row", "dataset") and c["severity"] in (None, "error")
        assert (c["kind"] is None) == (not c["examples"]) and len(c["examples"]) <= 5
    for label, c in checks.items():
        for example in c["examples"]:
            assert fails[label].iloc[example["row"]], (label, example)
            for col, value in example["values"].items():
                want = df[col].iloc[example["row"]]
                assert value == want or (value is None and pd.isna(want)), (label, example)

    sample = entry["failing_rows"]
    assert sample["source"] == "quarantine" and len(sample["rows"]) == 20
    first = sample["rows"][0]
    assert first["name"] == HOSTILE and "range(amount)" in first["_quarantine_reason"]
    assert sample["rows"][1]["name"] == FORMULA
    assert all(bad.iloc[int(r["id"])] or df.id.duplicated().iloc[int(r["id"])] for r in sample["rows"])

    assert [p["run_id"] for p in entry["history"]] == [*history, run_id]
    assert [p["rows"] for p in entry["history"]][-1] == N and entry["history"][0]["rows"] == 300
    assert [p["rows_quarantined"] for p in entry["history"]] == [0, 0, bad.sum()]
    assert entry["history"][-1]["current"] and not entry["history"][0]["current"]

    profile = entry["profile"]
    if profile is not None:  # profiles are stored once the quality agent profiles gated inputs
        assert profile["rows"] == N and profile["columns"]["amount"]["nulls"] == 0
        assert profile["columns"]["amount"]["min"] == pytest.approx(df.amount.min())
        hist = profile["columns"]["amount"].get("histogram")
        assert hist is None or sum(hist["counts"]) == N


def test_every_format_reads_back(dirty_runs):
    root, _, run_id = dirty_runs
    bad = int(pd.concat(expected(orders()), axis=1).any(axis=1).sum())
    for fmt in ("json", "csv", "xlsx", "html"):
        r = report(root, run_id, "-f", fmt)
        path = root / f"report-{run_id}.{fmt}"
        assert path.is_file() and str(path) in r.stdout
    with open(root / f"report-{run_id}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["input", "section", "item", "row", "metric", "value"]
    value = {(r["section"], r["item"], r["metric"]): r["value"] for r in rows if not r["row"]}
    assert value[("run", "", "run_id")] == run_id
    assert value[("summary", "", "rows_quarantined")] == str(bad)
    assert value[("check", "range(amount)", "rows_failed")] == "14"
    assert value[("history", run_id, "rows")] == str(N)
    quarantined = [r for r in rows if r["section"] == "quarantined_row" and r["row"] == "0"]
    assert {"metric": "name", "value": HOSTILE} in [{"metric": r["metric"], "value": r["value"]} for r in quarantined]

    wb = openpyxl.load_workbook(root / f"report-{run_id}.xlsx")
    assert wb.sheetnames == ["Summary", "Checks", "Failing rows", "Profile", "Anomalies", "History"]
    checks = list(wb["Checks"].iter_rows(values_only=True))
    assert checks[0][:3] == ("input", "on_failure", "check") and len(checks) == 5
    assert {r[2]: r[6] for r in checks[1:]} == {"not_null(name)": 7, "unique(id)": 5, "range(amount)": 14,
                                                "accepted_values(status)": 9}
    summary = {r[0]: r[1] for r in wb["Summary"].iter_rows(values_only=True) if r and r[0]}
    assert summary["run_id"] == run_id
    failing = wb["Failing rows"]
    header = [c.value for c in failing[1]]
    names = [failing.cell(row=i, column=header.index("name") + 1) for i in range(2, failing.max_row + 1)]
    formula = next(c for c in names if c.value == FORMULA)
    assert formula.data_type == "s"  # stored as text: opening the file must not evaluate data
    assert HOSTILE in [c.value for c in names]
    history = list(wb["History"].iter_rows(values_only=True))
    assert [r[5] for r in history[1:]][-1] == N

    page = (root / f"report-{run_id}.html").read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;document.body.setAttribute(&#x27;data-pwned&#x27;,&#x27;1&#x27;)&lt;/script&gt;" in page
    assert f'data-metric="rows_quarantined">{bad:,}<' in page and "<svg" in page


def test_out_options(dirty_runs):
    root, _, run_id = dirty_runs
    (root / "reports").mkdir()
    report(root, run_id, "--out", "reports")  # a directory: the default name inside it
    assert (root / "reports" / f"report-{run_id}.html").read_text().startswith("<!doctype html>")
    report(root, run_id, "--out", "nested/dir/q.xlsx")  # format from the extension, parents made
    assert openpyxl.load_workbook(root / "nested" / "dir" / "q.xlsx").sheetnames[0] == "Summary"
    r = report(root, run_id, "-f", "json", "-o", "-")
    assert json.loads(r.stdout)["run"]["run_id"] == run_id


def test_bad_usage_exits_2(dirty_runs):
    root, _, run_id = dirty_runs
    r = report(root, "no-such-run", code=2)
    assert "no run 'no-such-run'" in r.stderr and "agent-etl runs list" in r.stderr
    r = report(root, run_id[:2], code=2)  # all three runs start with the year: ambiguous
    assert "matches more than one run" in r.stderr and "give more of the run id" in r.stderr
    r = report(root, run_id, "--format", "pdf", code=2)
    assert "--format 'pdf'" in r.stderr and "html, json, csv, xlsx" in r.stderr
    (root / "taken").write_text("a file")
    r = report(root, run_id, "--out", "taken/r.html", code=1)
    assert "cannot write the report" in r.stderr and "--out" in r.stderr


def test_report_of_a_failed_gate(tmp_path):
    pipeline = make_pipeline(tmp_path, name="strict_orders", mode="fail")
    r = cli("run", pipeline.name, "--json", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    run_id = RunStore(f"sqlite:///{tmp_path / '.agent-etl' / 'runs.db'}").list_runs(1)[0]["run_id"]
    model = json.loads(report(tmp_path, run_id, "-f", "json", "-o", "-").stdout)
    assert model["run"]["status"] == "quality_failed" and model["run"]["exit_code"] == 3
    (entry,) = model["inputs"]
    assert entry["status"] == "failed" and entry["rows_quarantined"] == 0
    assert entry["failing_rows"]["rows"] == []  # nothing was quarantined
    assert any(c["status"] == "failed" and c["rows_failed"] > 0 for g in entry["gates"] for c in g["checks"])


def profile_of(df: pd.DataFrame) -> dict:
    """A stored profile in the run store's shape, computed with pandas/numpy."""
    counts, edges = np.histogram(df.amount, bins=8)
    return {"version": 1, "rows": len(df), "batches": 3, "sampled_rows": len(df), "schema": {"amount": "double"},
            "columns": {"amount": {
                "type": "double", "kind": "numeric", "count": len(df), "nulls": 0, "null_rate": 0.0,
                "distinct": int(df.amount.nunique()), "distinct_exact": True, "min": float(df.amount.min()),
                "max": float(df.amount.max()), "mean": float(df.amount.mean()), "std": float(df.amount.std()),
                "quantiles": {"0.5": float(df.amount.median())},
                "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}, "top": None, "length": None,
                "outliers": {"method": "iqr", "count": 2, "low": -10.0, "high": 600.0}},
                "status": {"type": "string", "kind": "string", "count": len(df), "nulls": 0, "null_rate": 0.0,
                           "distinct": 3, "top": [{"value": HOSTILE, "count": 9}, {"value": "paid", "count": 200}]}}}


def test_profile_and_anomalies_from_the_store(own_runs):
    """The profile and anomalies the quality agent stores render in every format, the row-count
    anomaly marked on the history sparkline."""
    root, _, run_id = own_runs
    df = orders()
    store = RunStore(f"sqlite:///{root / '.agent-etl' / 'runs.db'}")
    anomaly = {"input": "orders", "metric": "row_count", "column": None, "quantile": None, "value": N,
               "expected": 300, "low": 280, "high": 320, "score": 9.5, "severity": "warn",
               "message": "400 rows, expected 280..320"}
    try:
        store.save_profile(run_id, "report_orders", "orders", profile_of(df), [anomaly])
    finally:
        store.close()
    model = json.loads(report(root, run_id, "-f", "json", "-o", "-").stdout)
    (entry,) = model["inputs"]
    assert entry["profile"]["columns"]["amount"]["histogram"]["counts"] == np.histogram(df.amount, 8)[0].tolist()
    assert entry["anomalies"] == [anomaly]
    assert entry["history"][-1]["anomalies"] == [{"metric": "row_count", "column": None, "severity": "warn"}]

    page = report(root, run_id, "-f", "html", "-o", "-").stdout
    hist = page.split('class="chart histogram"', 1)[1].split("</svg>", 1)[0]
    assert hist.count("<rect") == 8
    spark = page.split('class="chart sparkline"', 1)[1].split("</svg>", 1)[0]
    assert spark.count("<circle") == 3 and spark.count('class="point anomaly current"') == 1
    assert "400 rows, expected 280..320" in page and "&lt;script&gt;" in page and "<script" not in page

    rows = list(csv.DictReader(report(root, run_id, "-f", "csv", "-o", "-").stdout.splitlines()))
    value = {(r["section"], r["item"], r["metric"]): r["value"] for r in rows}
    assert float(value[("profile", "amount", "mean")]) == pytest.approx(df.amount.mean())
    assert value[("profile", "amount", "q0.5")] == str(float(df.amount.median()))
    assert value[("anomaly", "row_count", "expected")] == "300"

    report(root, run_id, "-o", "r.xlsx")
    wb = openpyxl.load_workbook(root / "r.xlsx")
    prof = list(wb["Profile"].iter_rows(values_only=True))
    assert prof[0][:4] == ("input", "column", "type", "kind") and prof[1][1] == "amount"
    assert prof[1][prof[0].index("mean")] == pytest.approx(df.amount.mean())
    anomalies = list(wb["Anomalies"].iter_rows(values_only=True))
    assert anomalies[1][0] == "row_count" and anomalies[1][anomalies[0].index("score")] == 9.5


def test_run_without_checks_and_without_history(tmp_path):
    (tmp_path / "people.csv").write_text("id,name\n1,ann\n2,bob\n")
    (tmp_path / "plain.yaml").write_text("version: 1\nname: plain\nextract:\n  people: {tool: csv, path: people.csv}\n"
                                         "load:\n  out: {input: people, tool: parquet, path: out/people.parquet}\n")
    run_id = run(tmp_path, tmp_path / "plain.yaml")
    model = json.loads(report(tmp_path, run_id, "-o", "-", "-f", "json").stdout)
    assert model["run"]["rows_loaded"] == 2 and model["inputs"] == []
    page = report(tmp_path, run_id, "-o", "-").stdout
    assert "This run had no quality checks and no profile." in page
    rows = list(csv.DictReader(report(tmp_path, run_id, "-o", "-", "-f", "csv").stdout.splitlines()))
    assert {r["section"] for r in rows} == {"run"}


def test_history_option(dirty_runs):
    root, history, run_id = dirty_runs
    full = json.loads(report(root, run_id, "-f", "json", "-o", "-", "--history", "1").stdout)
    assert [p["run_id"] for p in full["inputs"][0]["history"]] == [history[-1], run_id]
    none = json.loads(report(root, run_id, "-f", "json", "-o", "-", "--history", "0").stdout)
    assert [p["run_id"] for p in none["inputs"][0]["history"]] == [run_id]
    r = report(root, run_id, "--history", "-1", code=2)
    assert "--history -1" in r.stderr
