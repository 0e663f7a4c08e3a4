"""Recovery after a crash: `agent-etl run` of the 1M-row table (PostgreSQL -> PostgreSQL, append in
commit units) killed with SIGKILL at KILLS random moments, each followed by `agent-etl run --resume`.

For every kill point it measures the recovery time, from the resume command's start to its first
new commit in the destination (or to its end, if the killed run had committed everything), and the
killed run's time plus the resume's against an uninterrupted run of the same pipeline measured in
the same session; and it checks that the destination then equals the uninterrupted run's (rows,
distinct keys, an md5 of every column). Goal: recovery < 5 s.

    python benchmarks/resume.py [--kills 50] [--rows 1000000] [--unit 100000]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pg_to_parquet import DSN, ensure_table  # noqa: E402

AGENT_ETL = str(Path(sys.executable).parent / "agent-etl")
SPEC = """\
version: 1
name: resume_bench
defaults: {{commit_every: {{rows: {unit}}}}}
connections: {{pg: {{url: "{dsn}"}}}}
extract:
  src: {{tool: postgres, connection: pg, table: {schema}.t}}
load:
  dst: {{input: src, tool: postgres, connection: pg, table: {target}.t}}
"""


def sql(statement: str, params=None):
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None


def fingerprint(target: str) -> tuple:
    return tuple(sql(f'SELECT count(*), count(DISTINCT id), md5(string_agg(t::text, \'|\' ORDER BY id)) '
                     f'FROM "{target}".t t')[0])


def units(target: str, since: object = None) -> int:
    """Checkpoint rows in the destination (those whose transaction began after ``since``)."""
    where = "" if since is None else " WHERE committed_at > %s"
    try:
        return sql(f'SELECT count(*) FROM "{target}"._agent_etl_checkpoints{where}', (since,) if since else None)[0][0]
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def fresh(target: str) -> None:
    sql(f'DROP SCHEMA IF EXISTS "{target}" CASCADE')
    sql(f'CREATE SCHEMA "{target}"')


def run(folder: Path, *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([AGENT_ETL, *args], cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"agent-etl {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return time.perf_counter() - started


def latest_status(folder: Path) -> str | None:
    import json

    listed = subprocess.run([AGENT_ETL, "runs", "list", "--pipeline", "p.yaml", "--json", "--limit", "1"],
                            cwd=folder, capture_output=True, text=True)
    rows = json.loads(listed.stdout or "[]")
    return rows[0]["status"] if rows else None


def resume(folder: Path, target: str) -> tuple[float, float]:
    """Resume; (seconds to its first new commit, seconds in all). A commit counts if its transaction
    began after the resume started: the killed process's last COMMIT may still land just after the
    kill."""
    since = sql("SELECT clock_timestamp()")[0][0]
    started = time.perf_counter()
    proc = subprocess.Popen([AGENT_ETL, "run", "--resume", "p.yaml", "-q"], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    while proc.poll() is None:
        if first is None and units(target, since) > 0:
            first = time.perf_counter() - started
        time.sleep(0.01)
    total = time.perf_counter() - started
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"resume failed: {out}{err}")
    return (first if first is not None else total), total


def main(kills: int, rows: int, unit: int, seed: int) -> None:
    schema = ensure_table(rows)
    target = f"resume_bench_{os.getpid()}"
    folder = Path(tempfile.mkdtemp(prefix="agent-etl-resume-"))
    (folder / "p.yaml").write_text(SPEC.format(unit=unit, dsn=DSN, schema=schema, target=target))
    try:
        fresh(target)
        run(folder, "run", "p.yaml", "-q")  # warm-up: caches, the table's creation
        clean_times = []
        for _ in range(3):
            fresh(target)
            clean_times.append(run(folder, "run", "p.yaml", "-q"))
        clean = statistics.median(clean_times)
        expected = fingerprint(target)
        print(f"uninterrupted run: {clean:.2f} s (median of 3), {expected[0]:,} rows, {rows // unit} units", flush=True)
        rng = random.Random(seed)
        recoveries, totals, ratios, crashed = [], [], [], 0
        for k in range(kills):
            fresh(target)
            started = time.perf_counter()
            proc = subprocess.Popen([AGENT_ETL, "run", "p.yaml", "-q"], cwd=folder, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            if k % 2 == 0:  # by commit count
                want = rng.randint(1, max(1, rows // unit - 1))
                while units(target) < want and proc.poll() is None:
                    time.sleep(0.005)
            else:  # by time
                time.sleep(rng.uniform(0.5, clean))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_after = time.perf_counter() - started
            if latest_status(folder) != "crashed":
                continue  # it had finished (or not yet started)
            crashed += 1
            first, total = resume(folder, target)
            got = fingerprint(target)
            if got != expected:
                raise SystemExit(f"kill point {k}: the destination differs from the uninterrupted run's: {got} "
                                 f"!= {expected}")
            recoveries.append(first)
            totals.append(total)
            ratios.append((killed_after + total) / clean)
            print(f"kill {k + 1:>3}: after {killed_after:5.2f} s   recovery {first:5.2f} s   resume {total:5.2f} s   "
                  f"killed+resumed / uninterrupted {ratios[-1]:4.2f}x", flush=True)
        if not recoveries:
            raise SystemExit("no kill point met a running run")
        q = statistics.quantiles(recoveries, n=20) if len(recoveries) > 1 else recoveries * 19
        print(f"\n{crashed} crashed runs of {kills} kill points resumed; destination equal to the uninterrupted run "
              "every time")
        print(f"recovery (resume start -> first new commit): median {statistics.median(recoveries):.2f} s, "
              f"p95 {q[18]:.2f} s, max {max(recoveries):.2f} s   goal < 5 s: "
              f"{'met' if max(recoveries) < 5 else 'NOT met'}")
        print(f"resume alone: median {statistics.median(totals):.2f} s; killed run + resume against the "
              f"uninterrupted run: median {statistics.median(ratios):.2f}x, max {max(ratios):.2f}x")
    finally:
        sql(f'DROP SCHEMA IF EXISTS "{target}" CASCADE')


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--unit", type=int, default=100_000, help="commit_every rows")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    main(args.kills, args.rows, args.unit, args.seed)
