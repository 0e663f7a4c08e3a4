#!/usr/bin/env bash
# Peer tools for the database benchmarks, each in its own venv (their pins clash with ours):
#   duckdb14: duckdb 1.4.4 + duckdb-ext-postgres (the postgres scanner, loadable offline)
#   dlt:      dlt with its sql_database source (pyarrow backend) and psycopg2
# Usage: bash benchmarks/peers/setup.sh [duckdb14|dlt ...]   (default: all; idempotent)
set -euo pipefail
PEERS="${BENCH_PEERS:-$(cd "$(dirname "$0")/.." && pwd)/.data/peers}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
mkdir -p "$PEERS"

make_venv() {  # name, packages...
  local name="$1"; shift
  local dir="$PEERS/$name"
  if [ -x "$dir/bin/python" ] && [ -f "$dir/.ready" ]; then
    echo "$name: ready at $dir"; return
  fi
  "$PYTHON" -m venv "$dir"
  "$dir/bin/pip" install -q --upgrade pip
  "$dir/bin/pip" install -q "$@"
  touch "$dir/.ready"
  echo "$name: installed at $dir"
}

for peer in "${@:-duckdb14 dlt}"; do
  for p in $peer; do
    case "$p" in
      duckdb14) make_venv duckdb14 "duckdb==1.4.4" duckdb-ext-postgres psutil ;;
      dlt) make_venv dlt "dlt[parquet,sql_database]>=1.5" "sqlalchemy>=2" psycopg2-binary pyarrow psutil ;;
      *) echo "unknown peer $p (duckdb14, dlt)" >&2; exit 2 ;;
    esac
  done
done
