"""agent-etl schema, export airflow and --profile, through the CLI on real files."""

from __future__ import annotations

import ast
import json
import os
import subprocess

import jsonschema
import pytest
from tests.cli.conftest import cli

from agent_etl import Pipeline
from agent_etl.spec.yamlsource import load_yaml


def test_schema_validates_the_quickstart_and_flags_mistakes(quickstart):
    r = cli("schema", cwd=quickstart)
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    spec = load_yaml((quickstart / "pipeline.yaml").read_text(), "pipeline.yaml").data
    assert list(validator.iter_errors(spec)) == []
    spec["extract"]["orders"]["pathh"] = "x"
    spec["load"]["warehouse"]["mode"] = "upsert"
    spec["quality"][0]["checks"].append({"not_a_check": ["x"]})
    errors = " | ".join(e.message for e in validator.iter_errors(spec))
    assert "'pathh' was unexpected" in errors and "'upsert' is not one of" in errors and "not_a_check" in errors
    out = cli("schema", "--out", "schema.json", cwd=quickstart)
    assert out.returncode == 0 and json.loads((quickstart / "schema.json").read_text()) == schema


def _dag(text):
    """Task ids and edges of a DAG file written by export airflow, read from its syntax tree."""
    tree = ast.parse(text)
    ids, edges = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "BashOperator":
            kw = {k.arg: k.value for k in node.keywords}
            ids.append(ast.literal_eval(kw["task_id"]))
            command = ast.unparse(kw["bash_command"])
            assert f"--only {ids[-1]} " in command
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift):
            target = ast.literal_eval(node.right.slice)
            for item in node.left.elts:
                edges.add((ast.literal_eval(item.slice), target))
    return ids, edges


def test_export_airflow_matches_the_plan(quickstart):
    r = cli("export", "airflow", "pipeline.yaml", "--schedule", "@daily", "--var", "WAREHOUSE=out/w.db",
            cwd=quickstart)
    assert r.returncode == 0, r.stderr
    text = (quickstart / "quickstart_orders_dag.py").read_text()
    compile(text, "dag.py", "exec")
    ids, edges = _dag(text)
    pipeline = Pipeline.from_yaml(quickstart / "pipeline.yaml")
    assert ids == [t.name for t in pipeline.tasks]
    assert edges == {(i, t.name) for t in pipeline.tasks for i in t.inputs}
    assert "schedule='@daily'" in text and "WAREHOUSE=out/w.db" in text and "max_active_runs=1" in text
    assert str((quickstart / "pipeline.yaml").resolve()) in text


@pytest.mark.skipif(not os.environ.get("AGENT_ETL_AIRFLOW_PYTHON"), reason="AGENT_ETL_AIRFLOW_PYTHON names no Python "
                    "with apache-airflow (an environment of its own: scripts/setup-test-airflow.sh; .ci/run sets it)")
def test_export_airflow_loads_in_airflow(quickstart, tmp_path):
    r = cli("export", "airflow", "pipeline.yaml", "--out", str(tmp_path / "dags") + "/", cwd=quickstart)
    assert r.returncode == 0, r.stderr
    probe = ("from airflow.models.dagbag import DagBag\n"
             f"bag = DagBag(dag_folder={str(tmp_path / 'dags')!r})\n"
             "assert not bag.import_errors, bag.import_errors\n"
             "dag = bag.dags['quickstart_orders']\n"
             "print(sorted((t.task_id, tuple(sorted(t.upstream_task_ids))) for t in dag.tasks))\n")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run([os.environ["AGENT_ETL_AIRFLOW_PYTHON"], "-c", probe], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    pipeline = Pipeline.from_yaml(quickstart / "pipeline.yaml")
    want = sorted((t.name, tuple(sorted(t.inputs))) for t in pipeline.tasks)
    assert out.stdout.strip().splitlines()[-1] == repr(want)


def test_profile_overlays_the_pipeline(quickstart):
    assert (quickstart / "configs" / "dev.yaml").is_file()  # the example's profile
    plan = cli("plan", "pipeline.yaml", "--profile", "dev", cwd=quickstart)
    assert plan.returncode == 0 and "-> out/dev_orders_lake/" in plan.stdout
    full = json.loads(cli("run", "pipeline.yaml", "--json", cwd=quickstart).stdout)
    dev = cli("run", "pipeline.yaml", "--json", "-p", "dev", cwd=quickstart)
    assert dev.returncode == 0, dev.stderr
    rows = {d["load"]: d["rows"] for d in json.loads(dev.stdout)["destinations"]}
    assert 0 < rows["lake"] < {d["load"]: d["rows"] for d in full["destinations"]}["lake"]
    assert (quickstart / "out" / "dev_warehouse.db").is_file() and (quickstart / "out" / "dev_orders_lake").is_dir()
    env = cli("validate", "pipeline.yaml", cwd=quickstart, env={"AGENT_ETL_PROFILE": "prod"})
    assert env.returncode == 2 and "profile 'prod' not found" in env.stderr and "profiles there: dev" in env.stderr


def test_a_profiled_run_resumes_with_its_profile(quickstart):
    (quickstart / "configs" / "blocked.yaml").write_text("load:\n  lake: {path: out/blocked/lake/}\n")
    (quickstart / "out").mkdir()
    (quickstart / "out" / "blocked").write_text("a file where the profile's lake folder goes")
    failed = cli("run", "pipeline.yaml", "--profile", "blocked", "--json", cwd=quickstart)
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)["run_id"]
    (quickstart / "out" / "blocked").unlink()
    resumed = cli("resume", run_id, "--json", cwd=quickstart)  # no --profile: the run kept the merged pipeline
    assert resumed.returncode == 0, resumed.stderr
    assert {d["load"]: d["target"] for d in json.loads(resumed.stdout)["destinations"]}["lake"].endswith(
        "/out/blocked/lake/")
    assert (quickstart / "out" / "blocked" / "lake").is_dir() and not (quickstart / "out" / "orders_lake").exists()
