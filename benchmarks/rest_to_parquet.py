"""1M nested JSON records from a local REST API (pages of 1,000) to Parquet: our pipeline (rest ->
parquet) against the anchor, a hand-written aiohttp + orjson + ``RecordBatch.from_pylist(schema=)``
+ ParquetWriter loop, and dlt's ``rest_api`` -> filesystem parquet (peer venv), in one run.
Goals: ours <= 1.0x the anchor, >= 8x faster than dlt; peak RSS of ours <= 400 MB.

The API runs in a process of its own (its CPU is not ours), with every page encoded up front, so
a request costs the server little. Each method runs in a fresh child process; its peak RSS comes
from the kernel (wait4).

    python benchmarks/rest_to_parquet.py [--rows 1000000] [--page-size 1000] [--repeat 1] [--style page|cursor]

``--style cursor``: each body names the next page's token (``next_cursor``), so no request can be
sent before the page before it has arrived and been parsed (no prefetch).
    bash benchmarks/peers/setup.sh dlt   # for the dlt column (skipped with a note if missing)
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER = Path(os.environ.get("BENCH_PEERS", HERE / ".data" / "peers")) / "dlt" / "bin" / "python"


def record(i: int) -> dict:
    return {"id": i, "name": f"user{i}", "email": f"user{i}@example.com", "score": i * 0.25, "active": i % 3 == 0,
            "created_at": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
            "address": {"city": f"city{i % 500}", "zip": f"{10000 + i % 90000}", "geo": {"lat": (i % 180) - 90.5,
                                                                                        "lng": (i % 360) - 180.5}},
            "tags": [f"t{i % 7}", f"g{i % 5}"]}


def serve(port: int, rows: int, page_size: int) -> None:
    import orjson
    from aiohttp import web

    pages = -(-rows // page_size)
    bodies = [orjson.dumps({"data": [record(i) for i in range(p * page_size, min(rows, (p + 1) * page_size))],
                            "page": p + 1, "total_pages": pages,
                            "next_cursor": f"c{p + 2}" if p + 1 < pages else None}) for p in range(pages)]
    empty = orjson.dumps({"data": [], "page": pages + 1, "total_pages": pages})

    async def handle(req: web.Request) -> web.Response:
        page = int(req.query["cursor"][1:]) if "cursor" in req.query else int(req.query.get("page", 1))
        body = bodies[page - 1] if 1 <= page <= pages else empty
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/records", handle)
    print("ready", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


SPEC = """\
version: 1
name: rest_bench
extract:
  records:
    tool: rest
    url: {url}/records
    records: data
    pagination: {pagination}
load:
  lake: {{input: records, tool: parquet, path: {out}}}
"""


PAGINATION = {"page": "{{type: page, page_size: {n}}}",
              "cursor": "{{type: cursor, path: next_cursor, param: cursor, page_size: {n}, size_param: per_page}}"}


def ours(url: str, out: str, page_size: int, style: str) -> float:
    import asyncio

    import agent_etl  # noqa: F401  (first: it sets pyarrow's allocator up)
    from agent_etl import AgentCoordinator, Pipeline

    async def go() -> float:
        t = time.perf_counter()
        result = await AgentCoordinator(home=Path(out).parent / ".agent-etl").run(
            Pipeline.from_text(SPEC.format(url=url, out=out, pagination=PAGINATION[style].format(n=page_size))))
        assert result.ok, result
        return time.perf_counter() - t

    return asyncio.run(go())


def anchor(url: str, out: str, page_size: int, style: str) -> float:
    import asyncio

    import aiohttp
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("email", pa.string()), ("score", pa.float64()),
                        ("active", pa.bool_()), ("created_at", pa.string()),
                        ("address", pa.struct([("city", pa.string()), ("zip", pa.string()),
                                               ("geo", pa.struct([("lat", pa.float64()), ("lng", pa.float64())]))])),
                        ("tags", pa.list_(pa.string()))])

    async def go() -> float:
        t = time.perf_counter()
        writer = pq.ParquetWriter(out, schema, compression="zstd")
        pending, rows = [], 0
        async with aiohttp.ClientSession() as session:
            page, token = 1, None
            while True:
                params = {"page": page, "per_page": page_size} if style == "page" else \
                    {"per_page": page_size, **({"cursor": token} if token else {})}
                async with session.get(f"{url}/records", params=params) as resp:
                    body = await resp.read()
                doc = orjson.loads(body)
                data, token = doc["data"], doc.get("next_cursor")
                if not data:
                    break
                pending.append(pa.RecordBatch.from_pylist(data, schema=schema))
                rows += len(data)
                if rows >= 100_000:
                    writer.write_table(pa.Table.from_batches(pending))
                    pending, rows = [], 0
                page += 1
                if style == "cursor" and not token:
                    break
        if pending:
            writer.write_table(pa.Table.from_batches(pending))
        writer.close()
        return time.perf_counter() - t

    return asyncio.run(go())


DLT = """\
import sys, time, dlt
from dlt.sources.rest_api import rest_api_source
url, out, page_size, style = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
paginator = ({"type": "page_number", "page_param": "page", "base_page": 1, "total_path": "total_pages"}
             if style == "page" else {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"})
source = rest_api_source({
    "client": {"base_url": url},
    "resources": [{"name": "records", "endpoint": {
        "path": "records", "params": {"per_page": page_size}, "data_selector": "data",
        "paginator": paginator}}],
})
pipe = dlt.pipeline(pipeline_name="rest_bench", destination=dlt.destinations.filesystem(bucket_url=out),
                    dataset_name="bench", pipelines_dir=out + "/.dlt")
t = time.perf_counter()
info = pipe.run(source, loader_file_format="parquet")
print(time.perf_counter() - t)
"""


def child(method: str, url: str, out: str, page_size: int, style: str) -> dict:
    """Run one method in a fresh process: its seconds and peak RSS (MB)."""
    if method == "dlt":
        cmd = [str(PEER), "-c", DLT, url, out, str(page_size), style]
    else:
        cmd = [sys.executable, __file__, "--child", method, "--url", url, "--out", out, "--page-size", str(page_size),
               "--style", style]
    env = {**os.environ, "RUNTIME__LOG_LEVEL": "WARNING", "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=out if method == "dlt" else None)
    _, status, usage = os.wait4(proc.pid, 0)
    stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{method} failed:\n{stderr[-3000:]}")
    return {"s": float(stdout.strip().splitlines()[-1]), "rss": usage.ru_maxrss / 1024}


def count_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else [p for p in path.rglob("*.parquet")]
    return sum(pq.read_metadata(f).num_rows for f in files)


def main(rows: int, page_size: int, repeat: int, style: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--rows", str(rows),
                               "--page-size", str(page_size)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        url = f"http://127.0.0.1:{port}"
        work = Path(tempfile.mkdtemp())
        print(f"{rows:,} nested records, pages of {page_size:,}, {style} pagination; load: {os.getloadavg()[0]:.2f}")
        for i in range(repeat):
            a = child("anchor", url, str(work / f"anchor{i}.parquet"), page_size, style)
            o = child("ours", url, str(work / f"ours{i}.parquet"), page_size, style)
            assert count_rows(work / f"ours{i}.parquet") == rows == count_rows(work / f"anchor{i}.parquet")
            line = (f"run {i + 1}: ours {o['s']:.2f} s ({rows / o['s'] / 1e3:.0f}k rec/s, peak RSS {o['rss']:.0f} MB)   "
                    f"anchor {a['s']:.2f} s (peak RSS {a['rss']:.0f} MB)   ours/anchor {o['s'] / a['s']:.2f}x (goal <= 1.0)")
            if PEER.exists():
                (work / f"dlt{i}").mkdir()
                d = child("dlt", url, str(work / f"dlt{i}"), page_size, style)
                assert count_rows(work / f"dlt{i}" / "bench" / "records") == rows  # tags go to a child table
                line += f"   dlt {d['s']:.2f} s (peak RSS {d['rss']:.0f} MB): ours {d['s'] / o['s']:.1f}x faster (goal >= 8)"
            elif i == 0:
                line += f"   (dlt skipped: no peer venv at {PEER}; bash benchmarks/peers/setup.sh dlt)"
            print(line, flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--style", choices=["page", "cursor"], default="page")
    ap.add_argument("--serve", type=int)
    ap.add_argument("--child")
    ap.add_argument("--url")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.rows, args.page_size)
    elif args.child:
        print({"ours": ours, "anchor": anchor}[args.child](args.url, args.out, args.page_size, args.style))
    else:
        main(args.rows, args.page_size, args.repeat, args.style)
