"""Wall time of `agent-etl --help` (goal < 300 ms), against `python -c pass` in the same run.

    python benchmarks/cli_startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

CLI = str(Path(sys.executable).parent / "agent-etl")


def wall(cmd: list[str], repeat: int = 15) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


if __name__ == "__main__":
    ours = wall([CLI, "--help"])
    bare = wall([sys.executable, "-c", "pass"])
    heavy = subprocess.run([sys.executable, "-c", "import sys, agent_etl.cli.app as a; "
                            "print(sorted(m for m in ('pandas','duckdb','sqlalchemy','pyarrow') if m in sys.modules))"],
                           capture_output=True, text=True).stdout.strip()
    print(f"agent-etl --help {ours * 1e3:6.0f} ms   python -c pass {bare * 1e3:6.0f} ms   "
          f"ratio {ours / bare:4.1f}x   goal < 300 ms   heavy modules imported: {heavy}")
