"""``export airflow``: the pipeline as an Airflow DAG, one BashOperator per step running
``agent-etl run PIPELINE --only STEP``, with the plan's dependencies (agent_etl.slices says how a
step run alone gets its inputs: what the steps above it staged)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

_DAG = '''"""Airflow DAG of the agent-etl pipeline {name!r}, written by `agent-etl export airflow`.

Each task runs one step of {pipeline_file} with `agent-etl run --only STEP`: a step that is not a
load stages its output in the pipeline's state folder (.agent-etl/stage/), where the steps below
it read it. Runs of this DAG take turns (max_active_runs=1) because they share those files.
Export again after changing the pipeline's steps.
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.operators.bash import BashOperator

PIPELINE = {pipeline!r}  # where the workers find the pipeline file
AGENT_ETL = "agent-etl"  # the command, on the workers' PATH
OPTIONS = {options!r}

with DAG(
    dag_id={dag_id!r},
    description={description!r},
    schedule={schedule!r},
    start_date=dt.datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["agent-etl"],
) as dag:
    tasks = {{}}
{operators}

{dependencies}
'''


def dag_source(pipeline, pipeline_path: str, schedule: str | None = None, options: list[str] | None = None) -> str:
    """The DAG file's text for ``pipeline`` (a validated ``Pipeline``)."""
    operators = "\n".join(
        f"    tasks[{t.name!r}] = BashOperator(\n"
        f"        task_id={t.name!r},\n"
        f"        bash_command=f\"{{AGENT_ETL}} run {{PIPELINE}} --only {t.name} {{OPTIONS}}\".strip(),\n"
        f"    )"
        for t in pipeline.tasks)
    dependencies = "\n".join(
        f"    [{', '.join(f'tasks[{i!r}]' for i in t.inputs)}] >> tasks[{t.name!r}]"
        for t in pipeline.tasks if t.inputs)
    return _DAG.format(name=pipeline.name, pipeline_file=Path(pipeline_path).name, pipeline=shlex.quote(pipeline_path),
                       options=" ".join(shlex.quote(o) for o in options or []), dag_id=_dag_id(pipeline.name),
                       description=pipeline.spec.description.strip() or f"agent-etl pipeline {pipeline.name}",
                       schedule=schedule, operators=operators, dependencies=dependencies or "    pass")


def _dag_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def airflow_command(path: str, out: str | None, schedule: str | None, pairs: list[str], profile: str | None) -> int:
    from agent_etl.cli.running import _load

    pipeline = _load(path, pairs, profile)
    secret = [p for p in pairs if p.partition("=")[2] in pipeline.secrets]
    if secret:  # a secret never goes into a file: the workers' environment gives it
        import sys

        print(f"not written into the DAG (secrets; set them in the workers' environment): "
              f"{', '.join(p.partition('=')[0] for p in secret)}", file=sys.stderr)
    options = [*(["--profile", profile] if profile else []),
               *(x for p in pairs if p not in secret for x in ("--var", p))]
    text = dag_source(pipeline, str(Path(path).resolve()), schedule, options)
    if out == "-":
        print(text, end="")
        return 0
    target = Path(out) if out else Path(f"{_dag_id(pipeline.name)}_dag.py")
    if target.is_dir() or (out or "").endswith(("/", "\\")):  # a folder: Airflow's dags folder
        target.mkdir(parents=True, exist_ok=True)
        target = target / f"{_dag_id(pipeline.name)}_dag.py"
    target.write_text(text)
    print(f"wrote {target} ({len(pipeline.tasks)} tasks; copy it to Airflow's dags folder)")
    return 0
