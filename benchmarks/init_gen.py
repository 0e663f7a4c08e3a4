"""``agent-etl init`` on a 50-table PostgreSQL schema (issue 14 goal: < 1 s; the original claimed
< 10 s), next to the anchor measured in the same run: a plain ``information_schema.columns`` query
of the schema's columns (connect + query), which is the least any introspection must do.

Ours: ``agent_etl.generate.generate`` in process (connect, 3 catalog queries, render, validate the
text it wrote), warm (imports done) and the first call of the process (cold); with memory: the same
with a chroma memory in the state folder (open + one query); and the whole CLI command as a user
runs it (a new process: interpreter start and imports included; with --no-memory and with the
default memory lookup in a state folder holding an empty chroma memory), next to ``agent-etl
--version`` (the floor of any command in a new process), and with a memory holding 200 extract
experiences (chromadb is imported and opened then); for those, the CPU time of the process too
(user + system), which other load on a shared machine moves less than wall time. The catalog
queries take ~20 ms; a warm call is mostly rendering and validating the text written (parsed by
libyaml, ``agent_etl.spec.yamlfast``).

The schema: 50 tables of 8 columns (serial key, a foreign key to an earlier table, NOT NULLs, a
UNIQUE, two CHECK ranges, updated_at), created in ``bench_init_<pid>`` and dropped afterwards.

    python benchmarks/init_gen.py [--tables 50] [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def create(schema: str, tables: int) -> None:
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"drop schema if exists {schema} cascade; create schema {schema}")
        for i in range(tables):
            ref = f", parent_id int references {schema}.t{i // 2:02d}(id)" if i else ", parent_id int"
            conn.execute(f"""create table {schema}.t{i:02d} (
                id serial primary key, code text not null unique, name text, amount numeric(12,2) check (amount >= 0),
                qty int check (qty between 0 and 1000), created_at timestamptz not null default now(),
                updated_at timestamptz{ref})""")


def timed(fn, rounds: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds (this process's) of each round of ``fn``."""
    walls, cpus = [], []
    for _ in range(rounds):
        c, t = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return walls, cpus


def child_cpu(fn, rounds: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds (user + system of the child process) of each round of ``fn``."""
    walls, cpus = [], []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    schema = f"bench_init_{os.getpid()}"
    create(schema, args.tables)
    try:
        def anchor() -> None:
            with psycopg.connect(URL) as conn:
                conn.execute("select table_name, column_name, data_type, is_nullable from information_schema.columns "
                             "where table_schema = %s order by table_name, ordinal_position", (schema,)).fetchall()

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "pipeline.yaml"
            c, t = time.process_time(), time.perf_counter()
            from agent_etl.generate import generate

            first = generate(URL, out=out, schemas=[schema], memory=False)
            cold = [time.perf_counter() - t], [time.process_time() - c]
            assert len(first.schema.tables) == args.tables
            anchors = timed(anchor, args.rounds)
            ours = timed(lambda: generate(URL, out=out, schemas=[schema], memory=False), args.rounds)
            home = Path(tmp) / ".agent-etl"
            from agent_etl.memory import Record, open_memory

            open_memory("chroma", home).close()  # an empty chroma memory: open + query are paid
            memory = timed(lambda: generate(URL, out=out, schemas=[schema], home=home), max(3, args.rounds // 3))
            exe = str(Path(sys.executable).parent / "agent-etl")
            env = {k: v for k, v in os.environ.items() if k != "AGENT_ETL_HOME"}  # the state folder: tmp's
            env["AGENT_ETL_MEMORY"] = "chroma"
            n = max(3, args.rounds // 3)

            def command(*extra: str) -> None:
                subprocess.run([exe, *extra], check=True, capture_output=True, cwd=tmp, env=env)

            init = [("init", URL, "--schema", schema, "--out", str(out), "--force")]
            cli = child_cpu(lambda: command(*init[0], "--no-memory"), n)
            cli_memory = child_cpu(lambda: command(*init[0]), n)  # the empty chroma memory made above
            full = Path(tmp) / "full-home"
            store = open_memory("chroma", full)
            store.add([Record(f"e{i}", f"extract postgres t{i:02d} parquet", {
                "status": "succeeded", "kind": "extract", "batch_size": 50_000, "concurrency": 4,
                "rows_per_second": 1000.0 + i}) for i in range(200)])
            store.close()
            env["AGENT_ETL_HOME"] = str(full)
            cli_full = child_cpu(lambda: command(*init[0]), n)
            del env["AGENT_ETL_HOME"]
            floor = child_cpu(lambda: command("--version"), n)
        med = statistics.median
        a = med(anchors[0])
        print(f"{args.tables} tables x 8 columns, {args.rounds} rounds, median (min-max) ms; load {os.getloadavg()[0]:.2f}")
        print(f"  {'':<48}{'ms':>10}  {'range':<17}{'x anchor':>9}{'cpu ms':>9}")
        for label, xs, cpu in (("anchor: information_schema.columns query", *anchors),
                               ("generate, warm (in process)", *ours),
                               ("generate, first call (imports)", *cold),
                               ("generate + chroma memory lookup (empty memory)", *memory),
                               ("agent-etl init (new process, --no-memory)", *cli),
                               ("agent-etl init (new process, empty chroma memory)", *cli_memory),
                               ("agent-etl init (new process, 200 experiences)", *cli_full),
                               ("agent-etl --version (a new process's floor)", *floor)):
            print(f"  {label:<48}{med(xs) * 1000:>10.1f}  {min(xs) * 1000:>7.1f}-{max(xs) * 1000:<8.1f}"
                  f"{med(xs) / a:>9.1f}{med(cpu) * 1000:>9.0f}")
    finally:
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute(f"drop schema {schema} cascade")


if __name__ == "__main__":
    main()
