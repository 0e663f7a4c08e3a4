"""examples/notebook.ipynb, executed in a real Jupyter kernel (nbclient + ipykernel) on a copy of the
examples: it runs the quickstart pipeline from Python, and its outputs show the run (a progress
table updated while it ran, the result with its tasks and quality checks) and what landed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TASKS = ["orders", "customers", "products", "paid", "enriched", "revenue_by_country", "lake", "warehouse", "revenue"]
CHECKS = ["not_null(order_id,customer_id,customer)", "unique(order_id)", "range(amount)", "accepted_values(category)"]


@pytest.fixture
def executed(tmp_path: Path, monkeypatch) -> list:
    """The notebook's cells after running it top to bottom in a kernel of this interpreter."""
    work = tmp_path / "examples"
    work.mkdir()
    shutil.copy(EXAMPLES / "notebook.ipynb", work)
    shutil.copytree(EXAMPLES / "quickstart", work / "quickstart",
                    ignore=shutil.ignore_patterns("out", ".agent-etl", "__pycache__", "*.db"))
    spec = tmp_path / "jupyter" / "kernels" / "agent-etl-test"  # this interpreter, whatever `python` is on PATH
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "agent-etl test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for name in ("AGENT_ETL_HOME", "AGENT_ETL_STORE_URL", "AGENT_ETL_BUS", "WAREHOUSE"):
        monkeypatch.delenv(name, raising=False)  # the notebook's defaults: state next to the pipeline
    nb = nbformat.read(work / "notebook.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "the example is kept without outputs"
    # and, after the example's cells, the script entry point, which runs on a thread of its own here
    nb.cells.append(nbformat.v4.new_code_cell("import agent_etl\nagain = agent_etl.run('quickstart/pipeline.yaml')\n"
                                              "again.status"))
    client = Recording(nb, kernel_name="agent-etl-test", timeout=120, resources={"metadata": {"path": str(work)}})
    client.execute()
    assert (work / "quickstart" / "out" / "warehouse.db").is_file()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell, index in zip(cells, [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]):
        cell.updates = client.updates.get(index, [])
    return cells


class Recording(nbclient.NotebookClient):
    """Keeps the HTML of every update of a display (the notebook keeps only the last)."""

    updates: dict

    def process_message(self, msg, cell, cell_index):
        if msg["msg_type"] == "update_display_data":
            self.updates = getattr(self, "updates", {})
            self.updates.setdefault(cell_index, []).append(msg["content"]["data"].get("text/html", ""))
        return super().process_message(msg, cell, cell_index)


def html_of(cell, output_type: str) -> str:
    return "".join(o["data"].get("text/html", "") for o in cell.outputs if o.output_type == output_type)


def source_has(cells: list, text: str):
    (cell,) = [c for c in cells if text in c.source]
    return cell


def test_the_example_notebook_runs_the_quickstart_and_shows_its_result(executed: list):
    for cell in executed:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source
        assert not [o for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"
                    and "Traceback" in o.text], cell.source

    run = source_has(executed, "await coordinator.run")
    progress, result = html_of(run, "display_data"), html_of(run, "execute_result")
    # the progress table, updated while the run ran (the first update, at the first task's start)...
    assert len(run.updates) >= 2 and "running" in run.updates[0] and "0 of 9 tasks done" in run.updates[0]
    # ... and as its last update left it: the run's end
    assert "succeeded" in progress and f"{len(TASKS)} of {len(TASKS)} tasks done" in progress
    assert "pending" not in progress and "running" not in progress
    for name in TASKS:
        assert f"<td>{name}</td>" in progress, name
        assert f"<td>{name}</td>" in result, name
    assert "succeeded" in result and "table orders on warehouse (replace)" in result
    for check in CHECKS:
        assert check in result, check
    assert "quarantined to <code>" in result and "enriched.parquet" in result

    quality = source_has(executed, "result.quality_summary")
    page = html_of(quality, "execute_result")
    for check in CHECKS:
        assert f"<td>{check}</td>" in page, check
    assert "quality of <b>enriched</b>" in page
    assert "quarantine" in "".join(o["data"]["text/plain"] for o in quality.outputs if o.output_type == "execute_result")

    checks = html_of(source_has(executed, 'to_pandas("checks")'), "execute_result")
    assert all(check in checks for check in CHECKS) and "rows_failed" in checks

    landed = html_of(source_has(executed, "pd.read_parquet"), "execute_result")
    assert "revenue" in landed and "country" in landed

    again = executed[-1]
    assert [o["data"]["text/plain"] for o in again.outputs if o.output_type == "execute_result"] == ["'succeeded'"]
    assert f"{len(TASKS)} of {len(TASKS)} tasks done" in html_of(again, "display_data")


def test_outside_a_notebook_nothing_of_jupyter_is_imported(tmp_path: Path):
    import subprocess

    shutil.copytree(EXAMPLES / "quickstart", tmp_path / "quickstart",
                    ignore=shutil.ignore_patterns("out", ".agent-etl", "__pycache__", "*.db"))
    script = ("import sys, agent_etl\n"
              "result = agent_etl.run('quickstart/pipeline.yaml')\n"
              "assert result.ok, result\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipykernel', 'comm')))\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
