from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

# a CSV pipeline whose python step holds its second batch until the file `go` exists: a test looks
# at the run while it is in progress, then lets it finish (no timing involved)
GATED = """
version: 1
name: gated
defaults: {batch_size: 50}
extract:
  nums: {tool: csv, path: nums.csv}
transform:
  - name: held
    input: nums
    tool: python
    function: "gate:hold"
load:
  out: {input: held, tool: parquet, path: out/}
"""

GATE = '''
import asyncio
from pathlib import Path

seen = 0


async def hold(table):
    global seen
    seen += 1
    while seen > 1 and not (Path(__file__).parent / "go").exists():
        await asyncio.sleep(0.05)
    return table
'''


@pytest.fixture
def gated(tmp_path: Path) -> Path:
    """A folder with the gated pipeline (pipeline.yaml), its data and its gate."""
    (tmp_path / "nums.csv").write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(200)))
    (tmp_path / "gate.py").write_text(textwrap.dedent(GATE))
    (tmp_path / "pipeline.yaml").write_text(GATED)
    return tmp_path


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
