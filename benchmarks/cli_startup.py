"""Start-up cost of `agent-etl` commands as a user runs them (a new process each time), against
`python -c pass` and `agent-etl --version` in the same run (goals: `--help` < 300 ms; `validate`
fast: issue 17, lazy imports).

Commands: `--help`; `validate` and `plan` of examples/quickstart/pipeline.yaml (9 tasks: CSV and
JSONL extracts, SQL transforms, quality checks, Parquet and SQLite loads); `init` of the
quickstart's orders CSV (a file source, written to a temporary folder, no memory). For each, the
median wall time and the median CPU time (user + system of the child: less sensitive to other
load on a shared machine than wall time), and the heavy modules the command's process imported
(none of pandas, chromadb, SQLAlchemy, ruamel may be needed by these commands).

    python benchmarks/cli_startup.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import ast
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "agent-etl")
QUICKSTART = ROOT / "examples" / "quickstart"
HEAVY = ("pandas", "chromadb", "sqlalchemy", "ruamel", "duckdb", "pyarrow", "psycopg")
# the heavy modules a command may import: validate and plan load the tools the pipeline names
# (pyarrow; duckdb checks the SQL transforms' syntax)
ALLOWED = {"validate": {"pyarrow", "duckdb"}, "plan": {"pyarrow", "duckdb"}, "init": {"pyarrow"}}


def measure(cmd: list[str], rounds: int, cwd: Path) -> tuple[float, float]:
    """Median wall and CPU seconds of ``cmd`` in a new process."""
    walls, cpus = [], []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=cwd)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def imported(args: list[str], cwd: Path) -> list[str]:
    """The heavy modules a command's process has imported when it exits."""
    code = ("import atexit, sys\n"
            f"atexit.register(lambda: print('IMPORTED', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr))\n"
            f"sys.argv = ['agent-etl', *{args!r}]\n"
            "from agent_etl.cli.app import main\nmain()\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd).stderr
    line = next((x for x in err.splitlines() if x.startswith("IMPORTED")), "IMPORTED ?")
    return ast.literal_eval(line.split(" ", 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pipeline.yaml"
        orders = str(QUICKSTART / "data" / "orders.csv")
        env_home = os.environ.pop("AGENT_ETL_HOME", None)  # init's memory: the temporary folder's (none)
        rows = [
            ("python -c pass", [sys.executable, "-c", "pass"], None),
            ("agent-etl --version", [CLI, "--version"], None),
            ("agent-etl --help", [CLI, "--help"], None),
            ("agent-etl validate quickstart", [CLI, "validate", str(QUICKSTART / "pipeline.yaml")], "validate"),
            ("agent-etl plan quickstart", [CLI, "plan", str(QUICKSTART / "pipeline.yaml")], "plan"),
            ("agent-etl init orders.csv --no-memory", [CLI, "init", orders, "--out", str(out), "--force", "--no-memory"],
             "init"),
        ]
        results = []
        for label, cmd, name in rows:
            wall, cpu = measure(cmd, args.rounds, Path(tmp))
            heavy = imported(cmd[1:], Path(tmp)) if cmd[0] == CLI else []
            results.append((label, wall, cpu, heavy, name))
        if env_home is not None:
            os.environ["AGENT_ETL_HOME"] = env_home
    bare_wall, bare_cpu = results[0][1], results[0][2]
    floor_wall = results[1][1]
    print(f"{args.rounds} rounds, medians; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  {'command':<40}{'wall ms':>9}{'cpu ms':>8}{'x pass':>8}{'x --version':>12}  heavy modules imported")
    bad = []
    for label, wall, cpu, heavy, name in results:
        print(f"  {label:<40}{wall * 1e3:>9.0f}{cpu * 1e3:>8.0f}{wall / bare_wall:>8.1f}{wall / floor_wall:>12.1f}  "
              f"{', '.join(heavy) or '-'}")
        if set(heavy) - ALLOWED.get(name or "", set()):
            bad.append(label)
    help_wall = results[2][1]
    print(f"  --help {help_wall * 1e3:.0f} ms (goal < 300 ms); python -c pass cpu {bare_cpu * 1e3:.0f} ms")
    if bad:
        print(f"  imports a heavy module it does not need: {', '.join(bad)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
