"""What a new user meets on a first run (issue 17): the quality outcome in every output, the rows of
each destination, one failure said once, YAML lines where the mistake is, a plan that says where
data lands. Through the CLI on real files."""

from __future__ import annotations

import json

from tests.cli.conftest import cli

from agent_etl import AgentCoordinator, Pipeline

CHAIN = """\
version: 1
name: chain
extract:
  customers: {tool: csv, path: data/customers.csv}
transform:
  - name: scored
    input: customers
    tool: sql
    query: |
      select *,
        nosuchfn(customer_id) as x
      from customers
  - {name: kept, input: scored, tool: filter, where: "x > 0"}
load:
  lake: {input: kept, tool: parquet, path: out/lake/}
  wh: {input: kept, tool: sqlite, connection: w, table: t}
connections:
  w: {url: "sqlite:///out/w.db"}
"""


def _data(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "customers.csv").write_text("customer_id,name\n1,a\n2,b\n3,\n")


def test_quality_summary_and_destinations_everywhere(quickstart):
    r = cli("run", "pipeline.yaml", "--json", cwd=quickstart)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    q = result["quality"]
    assert q["status"] == "quarantined" and q["rows_quarantined"] > 0
    (group,) = q["groups"]
    assert group["quarantine_path"].endswith("enriched.parquet")
    checks = {c["check"]: c for c in group["checks"]}
    assert checks["range(amount)"]["rows_failed"] > 0
    assert checks["range(amount)"]["rows_checked"] == group["rows_in"]
    assert checks["range(amount)"]["action"] == "quarantine" and checks["range(amount)"]["severity"] == "error"
    assert checks["unique(order_id)"]["action"] == "quarantine"  # it flags rows, so they are set aside
    assert checks["accepted_values(category)"]["status"] == "passed"
    dests = {d["load"]: d for d in result["destinations"]}
    assert dests["warehouse"]["rows"] == dests["lake"]["rows"] == group["rows_passed"]
    assert dests["revenue"]["rows"] < 100
    assert dests["warehouse"]["target"] == "table orders on warehouse" and dests["warehouse"]["mode"] == "replace"

    text = cli("run", "pipeline.yaml", "--quiet", cwd=quickstart).stdout
    assert "rows loaded" not in text  # never one sum over the destinations
    assert f"{dests['warehouse']['rows']:,} rows -> table orders on warehouse (replace)" in text
    assert "range(amount)" in text and "on failure: quarantine" in text and "quarantined to " in text

    show = cli("runs", "show", result["run_id"], cwd=quickstart)
    assert show.returncode == 0
    assert "table revenue_by_country on warehouse (replace)" in show.stdout
    assert f"{checks['range(amount)']['rows_failed']:,} of {group['rows_in']:,} rows failed" in show.stdout
    assert "quarantined to " in show.stdout
    shown = json.loads(cli("runs", "show", result["run_id"], "--json", cwd=quickstart).stdout)
    assert shown["quality"]["groups"][0]["rows_quarantined"] == group["rows_quarantined"]
    assert {d["load"]: d["rows"] for d in shown["destinations"]} == {k: d["rows"] for k, d in dests.items()}

    listed = cli("runs", "list", cwd=quickstart).stdout.splitlines()
    assert "rows per destination" in listed[0]
    line = next(x for x in listed if x.startswith(result["run_id"]))
    assert f"warehouse {dests['warehouse']['rows']:,}" in line and f"lake {dests['lake']['rows']:,}" in line
    (as_json,) = [r for r in json.loads(cli("runs", "list", "--json", cwd=quickstart).stdout)
                  if r["run_id"] == result["run_id"]]
    assert as_json["loads"] == {k: d["rows"] for k, d in dests.items()}


async def test_result_in_python_and_notebook(quickstart, monkeypatch):
    monkeypatch.chdir(quickstart)
    async with AgentCoordinator(home=quickstart / ".agent-etl") as c:
        result = await c.run(Pipeline.from_yaml(quickstart / "pipeline.yaml"))
    text, page = str(result), result._repr_html_()
    for part in ("range(amount)", "quarantined to ", "table orders on warehouse (replace)"):
        assert part in text, part
    assert "range(amount)" in page and "rows failed" in page and "enriched.parquet" in page
    frame = result.to_pandas()
    assert list(frame.name) == list(result.tasks)
    assert frame.set_index("name").loc["warehouse", "rows"] == result.tasks["warehouse"].rows
    assert result.to_dict()["quality"]["groups"][0]["input"] == "enriched"
    checks = result.to_pandas("checks").set_index("check")
    assert checks.loc["range(amount)", "action"] == "quarantine" and checks.loc["range(amount)", "rows_failed"] > 0
    assert (checks.rows_checked == result.tasks["enriched"].rows).all()
    loads = result.to_pandas("destinations").set_index("load")
    assert loads.loc["warehouse", "rows"] == result.tasks["warehouse"].rows
    summary = result.quality_summary  # a dict that shows itself in a notebook and as a DataFrame
    assert summary["groups"][0]["input"] == "enriched" and json.loads(json.dumps(summary)) == summary
    assert "<td>range(amount)</td>" in summary._repr_html_() and "quarantined to <code>" in summary._repr_html_()
    assert "range(amount)" in str(summary) and "on failure: quarantine" in str(summary)
    assert summary.to_pandas().equals(result.to_pandas("checks"))


def test_one_failure_said_once(tmp_path):
    _data(tmp_path)
    (tmp_path / "p.yaml").write_text(CHAIN)
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 1
    both = r.stdout + r.stderr
    assert both.count("nosuchfn") == 2  # the error once, with its query shown once
    assert "\\n" not in both
    assert "      select *,\n        nosuchfn(customer_id) as x\n" in r.stderr
    for dependant in ("kept", "lake", "wh"):
        assert f"skipped   {dependant}: 'scored' failed" in r.stdout
    run_id = json.loads(cli("runs", "list", "--json", cwd=tmp_path).stdout)[0]["run_id"]
    show = cli("runs", "show", run_id, cwd=tmp_path).stdout
    assert show.count("nosuchfn") == 2 and "skipped: 'scored' failed" in show
    assert f"resume with: agent-etl resume {run_id}" in show


def test_unclosed_brace_is_reported_where_it_opens(tmp_path):
    lines = CHAIN.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  lake:"))
    lines[at] = lines[at].rstrip("}")
    (tmp_path / "p.yaml").write_text("\n".join(lines) + "\n")
    r = cli("validate", "p.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert f"line {at + 1}: malformed YAML: '{{' opened here is not closed" in r.stderr


def test_merge_without_key_has_no_pydantic_prefix(tmp_path):
    (tmp_path / "p.yaml").write_text(CHAIN.replace("table: t}", "table: t, mode: merge}"))
    r = cli("validate", "p.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "needs `key`" in r.stderr and "Value error" not in r.stderr


def test_an_invalid_step_is_not_also_reported_as_missing(tmp_path):
    _data(tmp_path)
    (tmp_path / "p.yaml").write_text(CHAIN.replace("customers: {tool: csv, path: data/customers.csv}",
                                                   "customers: {tool: csv, path: data/customers.csv, timeout: -1}")
                                     .replace("table: t}", "table: t, mode: merge}"))
    r = cli("validate", "p.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert "timeout must be more than 0" in r.stderr and "needs `key`" in r.stderr
    assert "not defined" not in r.stderr


def test_a_run_from_another_folder_says_where_its_files_landed_from_there(quickstart):
    """The README's quick start runs examples/quickstart/pipeline.yaml from the repository: its
    destinations are relative to the pipeline file, so the lines say them from the working
    directory (they said out/orders_lake/, a folder the working directory does not have)."""
    here = quickstart.parent
    home = {"AGENT_ETL_HOME": str(quickstart / ".agent-etl")}
    r = cli("run", "quickstart/pipeline.yaml", cwd=here, env=home)
    assert r.returncode == 0, r.stderr
    assert "-> quickstart/out/orders_lake/ (replace" in r.stdout
    assert (here / "quickstart" / "out" / "orders_lake").is_dir()
    run_id = json.loads(cli("runs", "list", "--json", cwd=here, env=home).stdout)[0]["run_id"]
    assert "-> quickstart/out/orders_lake/ (replace" in cli("runs", "show", run_id, cwd=here, env=home).stdout
    assert "-> quickstart/out/orders_lake/ (replace" in cli("plan", "quickstart/pipeline.yaml", cwd=here, env=home).stdout
    assert "-> out/orders_lake/ (replace" in cli("run", "pipeline.yaml", "-q", cwd=quickstart, env=home).stdout
