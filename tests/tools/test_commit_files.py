"""The commit of a file load: one unit, the prepare barrier before the swap, the checkpoint manifest."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from agent_etl.exceptions import SiblingFailed
from agent_etl.testing import build, tool_context

# every file loader, and the two shapes of parquet output (a file, a partitioned directory)
TARGETS = {
    "csv": ("csv", {"path": "out/t.csv"}),
    "jsonl": ("jsonl", {"path": "out/t.jsonl"}),
    "parquet": ("parquet", {"path": "out/t.parquet"}),
    "parquet-dir": ("parquet", {"path": "out/lake", "partition_by": ["region"]}),
    "excel": ("excel", {"path": "out/t.xlsx"}),
}


def table(rows: int, tag: str) -> pa.Table:
    return pa.table({"id": list(range(rows)), "region": ["eu", "us"] * (rows // 2) + ["eu"] * (rows % 2),
                     "tag": [tag] * rows})


async def stream(t: pa.Table):
    for b in t.to_batches(max_chunksize=2):
        yield b


def listing(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


class Prepares(list):
    def __init__(self, fail: BaseException | None = None):
        super().__init__()
        self.fail = fail

    async def __call__(self, final: bool) -> None:
        self.append(final)
        if self.fail is not None:
            raise self.fail


def loader(tmp_path: Path, target: str, prepare=None, run_id: str = "run-1", task: str = "lake", asked=None):
    tool, options = TARGETS[target]
    ctx = tool_context(tmp_path, run_id=run_id, task=task, position={"src": {"rows": 7, "offset": 123}},
                       units=(lambda: asked.append(1) or True) if asked is not None else None, prepare=prepare)
    return build("loader", tool, options, ctx)


@pytest.mark.parametrize("target", TARGETS)
async def test_a_file_load_prepares_once_then_swaps_in_data_and_manifest(tmp_path, target):
    prepares, asked = Prepares(), []
    load = loader(tmp_path, target, prepares, asked=asked)
    assert not load.takes_units()
    assert await load.committed() is None  # no manifest yet
    before = dt.datetime.now(dt.UTC)
    assert await load.load(stream(table(7, "new"))) == 7
    assert prepares == [True] and asked == []  # one unit: commit_due is never asked
    assert load.ctx.commits == [7]
    name = Path(TARGETS[target][1]["path"]).name
    manifest = json.loads((tmp_path / "out" / f".{name}.checkpoint.json").read_text())
    assert {k: manifest[k] for k in ("run_id", "task", "rows", "position")} == {
        "run_id": "run-1", "task": "lake", "rows": 7, "position": {"src": {"rows": 7, "offset": 123}}}
    assert before <= dt.datetime.fromisoformat(manifest["committed_at"]) <= dt.datetime.now(dt.UTC)
    assert await load.committed() == {"rows": 7, "commits": 1, "position": {"src": {"rows": 7, "offset": 123}}}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f".{name}.checkpoint.json", name]


@pytest.mark.parametrize("target", TARGETS)
async def test_a_sibling_failing_leaves_the_old_output_and_manifest(tmp_path, target):
    await loader(tmp_path, target).load(stream(table(4, "old")))
    before = listing(tmp_path / "out")
    refused = Prepares(SiblingFailed("sibling load 'warehouse' failed"))
    load = loader(tmp_path, target, refused, run_id="run-2")
    with pytest.raises(SiblingFailed):
        await load.load(stream(table(9, "new")))
    assert refused == [True] and load.ctx.commits == []
    assert listing(tmp_path / "out") == before  # data and manifest byte for byte, no temp file left
    assert await load.committed() is None  # run-2 landed nothing
    assert (await loader(tmp_path, target).committed())["rows"] == 4  # run-1's commit is still the one there


async def test_committed_is_only_the_manifest_of_the_same_run_and_task(tmp_path):
    await loader(tmp_path, "csv").load(stream(table(3, "x")))
    assert (await loader(tmp_path, "csv").committed())["rows"] == 3
    assert await loader(tmp_path, "csv", run_id="run-2").committed() is None
    assert await loader(tmp_path, "csv", task="other").committed() is None
    (tmp_path / "out" / ".t.csv.checkpoint.json").write_text("{not json")
    assert await loader(tmp_path, "csv").committed() is None


async def test_a_failed_prepare_of_a_first_load_leaves_nothing(tmp_path):
    load = loader(tmp_path, "parquet", Prepares(SiblingFailed("sibling failed")))
    with pytest.raises(SiblingFailed):
        await load.load(stream(table(5, "new")))
    assert list((tmp_path / "out").iterdir()) == []
