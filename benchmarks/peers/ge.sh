#!/usr/bin/env bash
# Great Expectations as a benchmark peer, in a venv of its own (it pins versions agent-etl does not use).
# Creates ${BENCH_PEERS:-benchmarks/.data/peers}/ge; benchmarks/quality_checks.py runs peers/ge_checks.py with it.
set -euo pipefail
dest="${BENCH_PEERS:-$(cd "$(dirname "$0")/.." && pwd)/.data/peers}/ge"
python3 -m venv "$dest"
"$dest/bin/pip" install -q "great_expectations>=1.0,<2" pyarrow
"$dest/bin/python" -c "import great_expectations as gx; print('great_expectations', gx.__version__)"
