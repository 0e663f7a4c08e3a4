#!/usr/bin/env bash
# A virtualenv with Apache Airflow, for the test that loads an exported DAG in Airflow's DagBag
# (tests/cli/test_ecosystem.py). Airflow pins its own dependency set, so it gets an environment of
# its own rather than an extra of ours. Prints the environment's Python, for AGENT_ETL_AIRFLOW_PYTHON:
#
#     export AGENT_ETL_AIRFLOW_PYTHON=$(scripts/setup-test-airflow.sh)
#
# The environment goes under AGENT_ETL_AIRFLOW_VENV (default: .agent-etl/airflow-venv in the
# project). Idempotent: an environment that already imports airflow is kept. pip's output goes to a
# log printed only when the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${AGENT_ETL_AIRFLOW_VENV:-.agent-etl/airflow-venv}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import airflow" >/dev/null 2>&1; then
  echo "$(cd "$venv" && pwd)/bin/python"
  exit 0
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { python3 -m venv "$venv" && "$venv/bin/python" -m pip install -q "apache-airflow-core>=3.0"; } >"$log" 2>&1; then
  echo "setup-test-airflow: installing apache-airflow-core failed:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
echo "$(cd "$venv" && pwd)/bin/python"
