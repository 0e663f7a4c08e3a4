"""The loader contract (``tools.base.Loader``), once per destination of ``backends.LOADERS``.

What is tested of a destination follows its loader's ``capabilities`` (``tools.capabilities``): a
test skips, saying which capability it needs, where the destination does not claim it. Every
test reads back what landed through the backend's ``read``, against an expectation computed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pyarrow as pa
import pytest
from backends import LoaderBackend, Place, execute, grant, granted, indexes, named, sql_rows

from agent_etl.exceptions import ToolError
from agent_etl.testing import build, tool_context
from agent_etl.tools.capabilities import Capabilities
from agent_etl.tools.registry import default_registry


def capabilities(backend: LoaderBackend) -> Capabilities:
    return default_registry().get("loader", backend.tool).capabilities


def need(backend: LoaderBackend, *flags: str, mode: str | None = None) -> Capabilities:
    caps = capabilities(backend)
    for flag in flags:
        if not getattr(caps, flag):
            pytest.skip(f"{backend.tool} does not claim {flag}")
    if mode is not None and mode not in caps.modes:
        pytest.skip(f"{backend.tool} has no mode {mode}")
    return caps


def rows(ids: Iterable[int], version: int, prefix: str = "v") -> pa.Table:
    ids = list(ids)
    return pa.table({"id": pa.array(ids, pa.int64()), "v": [f"{prefix}{i}" for i in ids],
                     "version": pa.array([version] * len(ids), pa.int64())})


async def stream(data: pa.Table | list[pa.RecordBatch], size: int = 100, fail_after: int | None = None,
                 pause: float = 0.0) -> AsyncIterator[pa.RecordBatch]:
    batches = data.to_batches(max_chunksize=size) if isinstance(data, pa.Table) else data
    for i, batch in enumerate(batches):
        if fail_after is not None and i >= fail_after:
            raise RuntimeError("upstream broke")
        yield batch
        if pause:
            await asyncio.sleep(pause)
    if fail_after is not None:
        raise RuntimeError("upstream broke")


@contextlib.asynccontextmanager
async def loader(backend: LoaderBackend, place: Place, mode: str | None = None, key: list[str] | None = None,
                 policy: str | None = None, run_id: str = "run-1", strategy: str | None = None, **ctx: Any):
    """The loader of ``place``, with ``mode`` (default: append where there is one, else replace),
    ``key``, ``schema_policy`` and ``replace_strategy`` set where its options have them."""
    caps = capabilities(backend)
    options = backend.options(place)
    fields = default_registry().get("loader", backend.tool).Config.model_fields
    if "mode" in fields:
        options["mode"] = mode or ("append" if "append" in caps.modes else caps.modes[0])
    if key and "key" in fields:
        options["key"] = key
    if policy and "schema_policy" in fields:
        options["schema_policy"] = policy
    if strategy and strategy != "auto":
        if "replace_strategy" not in fields:
            pytest.skip(f"{backend.tool} has no replace_strategy")
        options["replace_strategy"] = strategy
    c = tool_context(place.dir, task="load", run_id=run_id, connections=place.connections, **ctx)
    try:
        yield build("loader", backend.tool, options, c)
    finally:
        await c.resources.aclose()


async def load(backend: LoaderBackend, place: Place, batches: AsyncIterator[pa.RecordBatch], **options: Any) -> int:
    async with loader(backend, place, **options) as tool:
        return await tool.load(batches)


def held(backend: LoaderBackend, place: Place, columns: tuple[str, ...] = ("id", "v", "version")) -> list[tuple] | None:
    """What the destination holds, as sorted tuples of ``columns`` (None: nothing there)."""
    table = backend.read(place)
    if table is None:
        return None
    out = []
    for r in table.to_pylist():
        out.append(tuple(_plain(r.get(c)) for c in columns))
    return sorted(out, key=lambda t: tuple((v is None, v) for v in t))


def _plain(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)  # a file format or a driver may give integers back as floats
    return v


def as_tuples(table: pa.Table) -> list[tuple]:
    return sorted(tuple(r.values()) for r in table.to_pylist())


# -- modes -------------------------------------------------------------------------------------


async def test_append_adds_to_what_is_there(loader_backend):
    backend, place = loader_backend
    need(backend, mode="append")
    assert await load(backend, place, stream(rows(range(10), 1)), mode="append") == 10
    # a later run (a sink that drops replays, like nats, keys them by run)
    assert await load(backend, place, stream(rows(range(10, 25), 2), size=4), mode="append", run_id="run-2") == 15
    assert held(backend, place) == as_tuples(pa.concat_tables([rows(range(10), 1), rows(range(10, 25), 2)]))


async def test_replace_swaps_in_the_new_rows(loader_backend):
    backend, place = loader_backend
    need(backend, mode="replace")
    await load(backend, place, stream(rows(range(10), 1)), mode="replace")
    assert await load(backend, place, stream(rows(range(100, 105), 2), size=2), mode="replace") == 5
    assert held(backend, place) == as_tuples(rows(range(100, 105), 2))


STRATEGIES = ["auto", "swap", "insert"]  # replace_strategy, where the loader has it


def need_object(backend: LoaderBackend, kind: str) -> None:
    """Skip, with the backend's declared reason, where the destination keeps no ``kind`` on a table."""
    if kind not in backend.objects:
        pytest.skip(backend.lacks.get(kind) or f"{backend.id} declares no {kind} on a table (LoaderBackend.objects)")


def index_on_version(place: Place) -> None:
    execute(place, f"CREATE INDEX t_version ON {place.data['table']} (version)")


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_replace_is_atomic_for_a_concurrent_reader(loader_backend, strategy):
    """A reader sees the old rows or the new ones, never a mix, nothing, or a missing table; the
    same for each replace_strategy, with an index on the table where the destination has them."""
    backend, place = loader_backend
    need(backend, "atomic_replace", mode="replace")
    old, new = rows(range(500), 1), rows(range(1500), 2)
    await load(backend, place, stream(old), mode="replace")
    if "index" in backend.objects:
        index_on_version(place)
    seen: set[Any] = set()
    failed: list[Exception] = []  # looks that raised: a reader that cannot read is a failed look
    reads = 0
    done = threading.Event()

    def look() -> Any:
        table = backend.read(place)
        if table is None:
            return "missing"
        return table.num_rows, frozenset(_plain(v) for v in table.column("version").to_pylist())

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                seen.add(look())
            except Exception as e:  # noqa: BLE001 - collected and asserted on below
                failed.append(e)
            reads += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        await load(backend, place, stream(new, size=100, pause=0.01), mode="replace", strategy=strategy)
    finally:
        done.set()
        thread.join()
    seen.add(look())
    assert reads >= 1
    assert not failed, f"{len(failed)} of {reads} looks failed: {failed[:3]!r}"
    assert seen <= {(500, frozenset({1})), (1500, frozenset({2}))}, seen
    assert (1500, frozenset({2})) in seen


async def test_merge_matches_a_computed_expectation(loader_backend):
    """Updates and inserts, keys repeated within a batch and across batches: the last row of a key
    wins; a merge of some columns only leaves the others as they were."""
    backend, place = loader_backend
    need(backend, mode="merge")
    rng = random.Random(3)
    await load(backend, place, stream(rows(range(300), 1, "a")), mode="merge", key=["id"])
    ids = [rng.randrange(0, 600) for _ in range(400)]
    update = pa.table({"id": pa.array(ids, pa.int64()), "v": [f"b{n}" for n in range(400)],
                       "version": pa.array([2] * 400, pa.int64())})
    assert await load(backend, place, stream(update, size=100), mode="merge", key=["id"]) == 400
    expected = {r[0]: r for r in as_tuples(rows(range(300), 1, "a"))}
    for r in update.to_pylist():
        expected[r["id"]] = (r["id"], r["v"], r["version"])
    assert held(backend, place) == sorted(expected.values())
    # only the input's columns change
    await load(backend, place, stream(pa.table({"id": pa.array([1, 1000], pa.int64()), "v": ["x", "y"]})),
               mode="merge", key=["id"])
    expected[1] = (1, "x", expected[1][2])
    expected[1000] = (1000, "y", None)
    assert held(backend, place) == sorted(expected.values(), key=lambda t: tuple((v is None, v) for v in t))


async def test_merge_on_a_composite_key(loader_backend):
    backend, place = loader_backend
    need(backend, mode="merge")

    def table(k1: list[int], k2: list[str], v: list[str]) -> pa.Table:
        return pa.table({"k1": pa.array(k1, pa.int64()), "k2": k2, "v": v})

    old = table([1, 1, 2, 3], ["a", "b", "a", "a"], ["o1", "o2", "o3", "o4"])
    new = table([1, 4, 2, 4, 5, 1], ["b", "a", "a", "a", "z", "b"], ["n1", "n2", "n3", "n4", "n5", "n6"])
    await load(backend, place, stream(old), mode="merge", key=["k1", "k2"])
    assert await load(backend, place, stream(new, size=2), mode="merge", key=["k1", "k2"]) == 6
    expected = {(r["k1"], r["k2"]): tuple(r.values()) for r in [*old.to_pylist(), *new.to_pylist()]}
    assert held(backend, place, ("k1", "k2", "v")) == sorted(expected.values())


# -- checkpoints -------------------------------------------------------------------------------


def _mark(value: int) -> dict[str, Any]:
    return {"cursor": "updated_at", "type": "int", "value": str(value)}


@pytest.mark.parametrize("mode", ["append", "replace", "merge"])
async def test_committed_and_mark_read_the_checkpoint_back(loader_backend, mode):
    backend, place = loader_backend
    caps = need(backend, "checkpoints", mode=mode)
    key = ["id"] if mode == "merge" else None
    first = {"src": {"rows": 4, "end": True, "mark": _mark(10)}}
    second = {"src": {"rows": 6, "end": True, "mark": _mark(20)}, "other": {"offset": 2}}
    async with loader(backend, place, mode, key) as tool:
        assert await tool.committed() is None and await tool.mark("src") is None  # nothing there yet
    for run_id, position, data in [("run-1", first, rows(range(4), 1)), ("run-2", second, rows(range(4, 6), 2))]:
        async with loader(backend, place, mode, key, run_id=run_id, position=position) as tool:
            assert await tool.load(stream(data)) == data.num_rows
            assert tool.ctx.commits == [data.num_rows]
    async with loader(backend, place, mode, key, run_id="run-2") as tool:
        assert await tool.committed() == {"rows": 2, "commits": 1, "position": second}
        assert await tool.mark("src") == _mark(20)  # the newest, from any run
        assert await tool.mark("other") is None
    async with loader(backend, place, mode, key, run_id="run-1") as tool:
        # a table of checkpoints keeps every run's; a manifest only the last load's
        expected = {"rows": 4, "commits": 1, "position": first} if caps.checkpoint_history else None
        assert await tool.committed() == expected
    async with loader(backend, place, mode, key, run_id="run-3") as tool:
        assert await tool.committed() is None


class Feed:
    """Ten batches of ten rows: batches 1-8 ids 0..79, batches 9 and 10 ids 0..19 again with new
    values (an append adds them again, a merge updates). A commit unit ends after the batches
    numbered in ``ends``; ``prepares`` records ``final`` of each ``ctx.prepare``."""

    def __init__(self, ends: tuple[int, ...] = (3, 7), fail_after: int | None = None):
        self.ends, self.fail_after, self.given = ends, fail_after, 0
        self.prepares: list[bool] = []

    @staticmethod
    def batch(i: int) -> pa.RecordBatch:
        if i <= 8:
            return rows(range((i - 1) * 10, i * 10), 1).to_batches()[0]
        return rows(range((i - 9) * 10, (i - 8) * 10), 2, "late").to_batches()[0]

    async def stream(self) -> AsyncIterator[pa.RecordBatch]:
        for i in range(1, 11):
            if self.fail_after is not None and i > self.fail_after:
                raise RuntimeError("upstream broke")
            self.given = i
            yield self.batch(i)

    def due(self) -> bool:
        return self.given in self.ends

    def position(self) -> dict[str, Any]:
        return {"src": {"rows": self.given * 10}}

    async def prepare(self, final: bool) -> None:
        self.prepares.append(final)

    def expected(self, batches: int, mode: str) -> list[tuple]:
        """What the destination holds once the first ``batches`` batches landed."""
        out = [tuple(r.values()) for i in range(1, batches + 1) for r in self.batch(i).to_pylist()]
        if mode == "merge":
            out = list({r[0]: r for r in out}.values())
        return sorted(out)


@pytest.mark.parametrize("mode", ["append", "merge"])
async def test_commit_units_each_with_its_checkpoint(loader_backend, mode):
    backend, place = loader_backend
    need(backend, "commit_units", mode=mode)
    feed = Feed()
    key = ["id"] if mode == "merge" else None
    async with loader(backend, place, mode, key, position=feed.position, units=feed.due,
                      prepare=feed.prepare) as tool:
        assert tool.takes_units()
        assert await tool.load(feed.stream()) == 100
        assert tool.ctx.commits == [30, 40, 30]
        assert feed.prepares == [False, False, True]
        assert await tool.committed() == {"rows": 100, "commits": 3, "position": {"src": {"rows": 100}}}
    assert held(backend, place) == feed.expected(10, mode)
    async with loader(backend, place, mode, key, run_id="run-2") as other:
        assert await other.committed() is None  # another run's checkpoints are not its own


@pytest.mark.parametrize("mode", ["append", "merge"])
async def test_a_failure_after_a_unit_keeps_the_units_committed_before_it(loader_backend, mode):
    backend, place = loader_backend
    need(backend, "commit_units", mode=mode)
    feed = Feed(fail_after=8)
    key = ["id"] if mode == "merge" else None
    async with loader(backend, place, mode, key, position=feed.position, units=feed.due,
                      prepare=feed.prepare) as tool:
        with pytest.raises(Exception, match="upstream broke"):
            await tool.load(feed.stream())
        assert tool.ctx.commits == [30, 40]
        assert feed.prepares == [False, False]
    async with loader(backend, place, mode, key) as tool:
        assert await tool.committed() == {"rows": 70, "commits": 2, "position": {"src": {"rows": 70}}}
    assert held(backend, place) == feed.expected(7, mode)  # batches 1-7, nothing of batch 8


# -- edges -------------------------------------------------------------------------------------


async def test_an_empty_batch_makes_an_empty_destination(loader_backend):
    backend, place = loader_backend
    async with loader(backend, place) as tool:
        assert await tool.load(stream([pa.RecordBatch.from_pylist([], schema=rows([], 1).schema)])) == 0
    got = backend.read(place)
    assert got is not None and got.num_rows == 0


async def test_a_load_of_no_batches_leaves_appended_rows(loader_backend):
    backend, place = loader_backend
    need(backend, mode="append")
    await load(backend, place, stream(rows(range(5), 1)), mode="append")
    async with loader(backend, place, "append") as tool:
        assert await tool.load(stream([])) == 0
        assert sum(tool.ctx.commits) == 0
    assert held(backend, place) == as_tuples(rows(range(5), 1))


async def test_evolve_adds_new_columns_and_freeze_refuses_them(loader_backend):
    backend, place = loader_backend
    need(backend, "schema_evolution", mode="append")
    await load(backend, place, stream(rows(range(3), 1)), mode="append")
    wider = rows(range(3, 5), 2).append_column("extra", pa.array([2.5, None], pa.float64()))
    assert await load(backend, place, stream(wider), mode="append", policy="evolve") == 2
    cols = ("id", "extra")
    assert held(backend, place, cols) == [(0, None), (1, None), (2, None), (3, 2.5), (4, None)]
    other = rows(range(5, 6), 3).append_column("surprise", pa.array(["s"]))
    with pytest.raises(ToolError, match="surprise"):
        await load(backend, place, stream(other), mode="append", policy="freeze")
    assert len(held(backend, place)) == 5


async def test_a_failing_stream_leaves_nothing(loader_backend):
    backend, place = loader_backend
    caps = need(backend, "all_or_nothing")
    with pytest.raises(Exception, match="upstream broke"):
        await load(backend, place, stream(rows(range(100), 1), size=10, fail_after=3))
    assert backend.read(place) is None  # not even an empty table or file
    if caps.checkpoints:
        async with loader(backend, place) as tool:
            assert await tool.committed() is None


@pytest.mark.parametrize("mode", ["append", "replace", "merge"])
async def test_a_failing_stream_leaves_what_was_there(loader_backend, mode):
    """No row, no column and no checkpoint of the failed load lands."""
    backend, place = loader_backend
    caps = need(backend, "all_or_nothing", mode=mode)
    key = ["id"] if mode == "merge" else None
    await load(backend, place, stream(rows(range(5), 1)), mode=mode, key=key)
    before = backend.read(place).column_names
    new = rows(range(3, 100), 2).append_column("extra", pa.array([1.5] * 97))
    async with loader(backend, place, mode, key, run_id="run-2", position={"src": {"rows": 97}}) as tool:
        with pytest.raises(Exception, match="upstream broke"):
            await tool.load(stream(new, size=10, fail_after=2))
        assert tool.ctx.commits == []
        if caps.checkpoints:
            assert await tool.committed() is None
    assert held(backend, place) == as_tuples(rows(range(5), 1))
    assert backend.read(place).column_names == before




# -- what hangs on a replaced table (replace_strategy) -----------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_a_replace_says_which_path_it_took(loader_backend, strategy):
    """The run's task details name the path of a replace (``replace``): a new table the first time,
    then the one ``replace_strategy`` asked for, where the loader has the option."""
    backend, place = loader_backend
    need(backend, mode="replace")
    if "replace_strategy" not in default_registry().get("loader", backend.tool).Config.model_fields:
        pytest.skip(f"{backend.tool} has no replace_strategy")
    async with loader(backend, place, "replace", strategy=strategy) as tool:
        await tool.load(stream(rows(range(10), 1)))
        assert tool.details() == {"replace": "swap (new table)"}
    async with loader(backend, place, "replace", strategy=strategy) as tool:
        await tool.load(stream(rows(range(5), 2)))
        path = tool.details()["replace"]
    if strategy == "auto":
        assert path.startswith(("swap", "insert (")), path
    else:
        assert path.startswith(strategy), path
    assert held(backend, place) == as_tuples(rows(range(5), 2))


@pytest.mark.parametrize("strategy", ["auto", "insert"])
async def test_a_view_on_the_table_answers_after_a_replace(loader_backend, strategy):
    """The view is still there and reads the new rows (recreated by a swap, or the insert path was taken)."""
    backend, place = loader_backend
    need(backend, mode="replace")
    need_object(backend, "view")
    await load(backend, place, stream(rows(range(10), 1)), mode="replace")
    view = named(place, "v")
    execute(place, f"CREATE VIEW {view} AS SELECT id, version FROM {place.data['table']}")
    async with loader(backend, place, "replace", strategy=strategy) as tool:
        assert await tool.load(stream(rows(range(20, 25), 2), size=2)) == 5
        path = tool.details().get("replace", "")
    got = sql_rows(place, f"SELECT id, version FROM {view}")
    assert got is not None, f"the view is gone after a replace ({path})"
    assert sorted((_plain(a), _plain(b)) for a, b in got[1]) == [(i, 2) for i in range(20, 25)], path


async def test_a_replace_keeps_the_tables_indexes(loader_backend):
    backend, place = loader_backend
    need(backend, mode="replace")
    need_object(backend, "index")
    await load(backend, place, stream(rows(range(10), 1)), mode="replace")
    index_on_version(place)
    before = indexes(place)
    assert before
    await load(backend, place, stream(rows(range(20, 25), 2)), mode="replace")
    assert indexes(place) == before
    assert held(backend, place) == as_tuples(rows(range(20, 25), 2))


async def test_grants_to_another_role_survive_a_replace(loader_backend):
    backend, place = loader_backend
    need(backend, mode="replace")
    need_object(backend, "grant")
    await load(backend, place, stream(rows(range(10), 1)), mode="replace")
    role = f"r_{place.name}"
    drop = grant(place, role)
    try:
        async with loader(backend, place, "replace") as tool:
            await tool.load(stream(rows(range(20, 25), 2)))
            path = tool.details().get("replace", "")
        assert granted(place, role), path
    finally:
        drop()


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_a_failing_replace_leaves_the_table_its_indexes_and_grants(loader_backend, strategy):
    """Exactly as they were: the rows, the columns, the indexes (and grants, where there are any)."""
    backend, place = loader_backend
    need(backend, "all_or_nothing", mode="replace")
    need_object(backend, "index")
    await load(backend, place, stream(rows(range(5), 1)), mode="replace")
    index_on_version(place)
    role = f"r_{place.name}"
    drop = grant(place, role) if "grant" in backend.objects else None
    try:
        before = indexes(place), backend.read(place).column_names
        new = rows(range(3, 100), 2).append_column("extra", pa.array([1.5] * 97))
        with pytest.raises(Exception, match="upstream broke"):
            await load(backend, place, stream(new, size=10, fail_after=2), mode="replace", strategy=strategy)
        assert held(backend, place) == as_tuples(rows(range(5), 1))
        assert (indexes(place), backend.read(place).column_names) == before
        if drop is not None:
            assert granted(place, role)
    finally:
        if drop is not None:
            drop()
