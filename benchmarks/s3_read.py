"""S3 reads against the raw client: Parquet and gzip CSV objects of 1M rows x 10 columns on moto's
S3 server, read by the s3 extractor and by a raw ``get_object().read()`` of the same object.

moto runs in its own process (``python -m moto.server``), so its CPU is not counted in ours; each
measurement runs in a fresh child process, which reports its time and its peak RSS. Ours reads
into a null sink (the extractor's batches are counted and dropped, as a load would consume them);
the anchor reads the object's bytes and parses nothing. Printed: seconds (best of ``--repeat``),
the ratio to the anchor, MB/s of the object, and peak RSS. Goals (issue 13): Parquet <= 1.3x,
gzip CSV <= 2.5x, peak RSS <= 400 MB for 1M records. Absolute times vary on shared machines:
compare the ratios of one run, and run it 2-3 times.

    python benchmarks/s3_read.py [--rows 1000000] [--repeat 3] [--formats parquet,csv.gz]
                                 [--whole-object-max BYTES]   # 0: never fetch whole (ranged/streamed reads)
                                 [--objects N] [--concurrency C]  # the rows split into N objects: the anchor
                                                                  # GETs them one after the other
    python benchmarks/s3_read.py --write   # the other way: the s3 loader writing the rows as one Parquet
                                           # object (one batch of 100k rows sent again and again) against
                                           # a raw put_object of pyarrow's encoding of the rows, made beforehand
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
BUCKET = "bench-s3-read"


def data(rows: int) -> pa.Table:
    """10 columns: ids, ints, floats, short strings, timestamps (random, so they do not compress away)."""
    rng = np.random.default_rng(7)
    return pa.table({
        "id": np.arange(rows, dtype=np.int64),
        "customer": rng.integers(0, 100_000, rows),
        "quantity": rng.integers(1, 50, rows).astype(np.int32),
        "price": rng.random(rows) * 1000,
        "discount": np.round(rng.random(rows), 2),
        "score": rng.normal(size=rows),
        "status": pa.array(np.array(["new", "paid", "shipped", "returned"])[rng.integers(0, 4, rows)]),
        "code": pa.array([f"C{v:08d}" for v in rng.integers(0, 10**8, rows)]),
        "created": pa.array(rng.integers(1.6e15, 1.7e15, rows), pa.timestamp("us")),
        "flag": rng.random(rows) < 0.5,
    })


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **ENV})
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("moto server did not start")


def child(args: argparse.Namespace) -> None:
    """One measurement in a fresh process: prints {seconds, rows, rss_mb}."""
    import boto3

    best, rows = float("inf"), 0
    if args.child == "anchor":
        client = boto3.client("s3", endpoint_url=args.endpoint)
        for _ in range(args.repeat):
            t = time.perf_counter()
            for key in keys(args):
                body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                rows = len(body)
                del body
            best = min(best, time.perf_counter() - t)
    elif args.child in ("write_anchor", "write_ours"):
        from agent_etl.testing import build, tool_context

        client = boto3.client("s3", endpoint_url=args.endpoint)
        batch = data(min(args.rows, 100_000)).combine_chunks().to_batches()[0]
        if args.child == "write_anchor":
            sink = pa.BufferOutputStream()
            pq.write_table(data(args.rows), sink, compression="zstd")
            body = sink.getvalue().to_pybytes()
        for _ in range(args.repeat):
            t = time.perf_counter()
            if args.child == "write_anchor":
                client.put_object(Bucket=BUCKET, Key="anchor.parquet", Body=body)
                rows = args.rows
            else:
                async def write() -> int:
                    async def batches():
                        for start in range(0, args.rows, 100_000):  # one batch sent again: no table held
                            yield batch.slice(0, min(100_000, args.rows - start))
                    ctx = tool_context(tempfile.gettempdir(), task="bench", run_id="bench")
                    loader = build("loader", "s3", {"url": f"s3://{BUCKET}/ours.parquet", "endpoint_url": args.endpoint},
                                   ctx)
                    n = await loader.load(batches())
                    await ctx.resources.aclose()
                    return n

                rows = asyncio.run(write())
            best = min(best, time.perf_counter() - t)
    elif args.child == "get_gunzip":  # the floor under any gzip CSV reader: the bytes inflated, none parsed
        import zlib

        client = boto3.client("s3", endpoint_url=args.endpoint)
        for _ in range(args.repeat):
            t = time.perf_counter()
            rows = len(zlib.decompress(client.get_object(Bucket=BUCKET, Key=args.key)["Body"].read(), 31))
            best = min(best, time.perf_counter() - t)
    elif args.child in ("get_parse", "fs_parse"):  # the references: whole reads with pyarrow's readers
        import pyarrow.fs as pafs

        # made only where used: an S3FileSystem made and never used crashed the process at exit now
        # and then ("terminate called without an active exception", pyarrow 26)
        fs = pafs.S3FileSystem(access_key="bench", secret_key="bench", region="us-east-1",
                               endpoint_override=args.endpoint.split("//")[1], scheme="http") \
            if args.child == "fs_parse" else None
        client = boto3.client("s3", endpoint_url=args.endpoint)
        for _ in range(args.repeat):
            t = time.perf_counter()
            if args.child == "get_parse":
                raw = pa.BufferReader(client.get_object(Bucket=BUCKET, Key=args.key)["Body"].read())
                source = raw if args.key.endswith(".parquet") else pa.CompressedInputStream(raw, "gzip")
            elif args.key.endswith(".parquet"):
                source = fs.open_input_file(f"{BUCKET}/{args.key}")
            else:
                source = fs.open_input_stream(f"{BUCKET}/{args.key}", buffer_size=16 << 20)  # gzip by name
            rows = (pq.read_table(source) if args.key.endswith(".parquet") else pacsv.read_csv(source)).num_rows
            best = min(best, time.perf_counter() - t)
    else:
        from agent_etl.testing import build, tool_context

        async def read() -> int:
            ctx = tool_context(tempfile.gettempdir(), batch_size=100_000)
            url = args.key if args.objects == 1 else args.key.replace("data.", "data-*.")
            options = {"url": f"s3://{BUCKET}/{url}", "endpoint_url": args.endpoint, "concurrency": args.concurrency}
            if args.whole_object_max is not None:
                options["whole_object_max"] = args.whole_object_max
            n = 0
            async for batch in build("extractor", "s3", options, ctx).batches():
                n += batch.num_rows  # the null sink
            await ctx.resources.aclose()
            return n

        for _ in range(args.repeat):
            t = time.perf_counter()
            rows = asyncio.run(read())
            best = min(best, time.perf_counter() - t)
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec
    rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
    print(json.dumps({"seconds": best, "rows": rows, "rss_mb": rss}))


def keys(args: argparse.Namespace) -> list[str]:
    """The keys of one format: ``data.<fmt>``, or ``data-<i>.<fmt>`` split in ``--objects``."""
    if args.objects == 1:
        return [args.key]
    return [args.key.replace("data.", f"data-{i:04d}.") for i in range(args.objects)]


def measure(kind: str, key: str, endpoint: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--key", key, "--endpoint", endpoint, "--repeat", str(args.repeat),
           "--objects", str(args.objects), "--concurrency", str(args.concurrency)]
    if args.whole_object_max is not None:
        cmd += ["--whole-object-max", str(args.whole_object_max)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV}, check=False)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--formats", default="parquet,csv.gz")
    p.add_argument("--whole-object-max", type=int, default=None)
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--write", action="store_true")
    p.add_argument("--child", choices=["anchor", "ours", "get_parse", "fs_parse", "get_gunzip", "write_anchor", "write_ours"])
    p.add_argument("--key")
    p.add_argument("--endpoint")
    args = p.parse_args()
    if args.child:
        return child(args)
    import boto3

    proc, endpoint = start_moto()
    try:
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
                              region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        if args.write:
            anchor, ours = measure("write_anchor", "", endpoint, args), measure("write_ours", "", endpoint, args)
            print(f"{args.rows:,} rows x 10 columns written as one Parquet object (zstd) to moto in its own process; "
                  f"best of {args.repeat}")
            print(f"raw put_object of the encoded bytes {anchor['seconds']:.3f} s; s3 loader (encoding included) "
                  f"{ours['seconds']:.3f} s, {ours['seconds'] / anchor['seconds']:.2f}x, "
                  f"{args.rows / ours['seconds']:,.0f} rows/s, peak RSS {ours['rss_mb']:.0f} MB "
                  f"(the anchor's {anchor['rss_mb']:.0f} MB holds the whole table)")
            return
        table = data(args.rows)
        objects = {}
        per = -(-args.rows // args.objects)
        for fmt in args.formats.split(","):
            size = 0
            for i, key in enumerate(keys(argparse.Namespace(objects=args.objects, key=f"data.{fmt}"))):
                with tempfile.TemporaryDirectory() as tmp:
                    path, part = Path(tmp) / key, table.slice(i * per, per)
                    if fmt == "parquet":
                        pq.write_table(part, path)  # pyarrow's defaults: snappy, row groups of 1Mi rows
                    else:
                        sink = pa.BufferOutputStream()
                        pacsv.write_csv(part, sink)
                        path.write_bytes(gzip.compress(sink.getvalue().to_pybytes(), compresslevel=6))
                    client.upload_file(str(path), BUCKET, key)
                    size += path.stat().st_size
            objects[fmt] = (f"data.{fmt}", size)
        load = os.getloadavg()
        print(f"{args.rows:,} rows x 10 columns; moto in its own process at {endpoint}; load average "
              f"{load[0]:.2f} {load[1]:.2f}; best of {args.repeat}; ours: s3 extractor -> null sink"
              + (f", whole_object_max={args.whole_object_max}" if args.whole_object_max is not None else "")
              + (f"; {args.objects} objects per format, concurrency {args.concurrency} (the anchor GETs them in turn)"
                 if args.objects > 1 else ""))
        print(f"{'object':<22} {'MB':>6} {'anchor s':>9} {'ours s':>8} {'ratio':>6} {'goal':>5} {'MB/s':>6} "
              f"{'rows/s':>10} {'RSS MB':>7}")
        refs = []
        for fmt, (key, size) in objects.items():
            anchor = measure("anchor", key, endpoint, args)
            ours = measure("ours", key, endpoint, args)
            assert ours["rows"] == args.rows, ours
            goal = 1.3 if fmt == "parquet" else 2.5
            ratio = ours["seconds"] / anchor["seconds"]
            print(f"{key:<22} {size / 1e6:>6.1f} {anchor['seconds']:>9.3f} {ours['seconds']:>8.3f} {ratio:>5.2f}x "
                  f"{goal:>4}x {size / 1e6 / ours['seconds']:>6.0f} {args.rows / ours['seconds']:>10,.0f} "
                  f"{ours['rss_mb']:>7.0f}")
            kinds = (("get_parse", "boto3 get_object + pyarrow reader in memory"),
                     ("fs_parse", "pyarrow.fs S3FileSystem (16 MiB buffer for gzip) + pyarrow reader"))
            if fmt != "parquet":
                kinds += (("get_gunzip", "boto3 get_object + zlib inflate, nothing parsed (the floor)"),)
            for kind, what in () if args.objects > 1 else kinds:
                ref = measure(kind, key, endpoint, args)
                refs.append(f"  {key:<20} {what:<66} {ref['seconds']:>6.3f} s  "
                            f"{ref['seconds'] / anchor['seconds']:>5.2f}x anchor  ours/this {ours['seconds'] / ref['seconds']:.2f}")
        if refs:
            print("references (whole table in memory, no batches; same run):")
            print("\n".join(refs))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
