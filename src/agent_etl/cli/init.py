"""``agent-etl init SOURCE``: write a pipeline for a source (``agent_etl.generate``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from agent_etl.exceptions import SpecError


def init_command(source: str, dest: str | None, out: str, *, schemas: list[str], force: bool, memory: bool,
                 endpoint_url: str | None) -> int:
    from agent_etl.generate import generate

    target = Path(out)
    if out != "-" and target.exists() and not force:
        raise SpecError(f"{out} exists; give another --out, or --force to overwrite it")
    started = time.perf_counter()
    result = generate(source, out=Path("pipeline.yaml") if out == "-" else target, dest=dest, schemas=schemas or None,
                      memory=memory, endpoint_url=endpoint_url)
    took = time.perf_counter() - started
    if out == "-":
        sys.stdout.write(result.text)
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(result.text)
    n = len(result.schema.tables)
    print(f"wrote {out}: {n} extract(s) from {result.schema.where} in {took:.2f}s")
    for var, what in result.env.items():
        print(f"set {var} before running it: {what}")
    if result.memory:
        print(result.memory)
    print(f"next: agent-etl validate {out} && agent-etl run {out}")
    return 0
