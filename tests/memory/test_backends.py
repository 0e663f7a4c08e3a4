"""The VectorMemory protocol, on both backends alike."""

from __future__ import annotations

import pytest

from agent_etl.memory import Record
from agent_etl.memory.descriptor import TaskDescriptor

PG = TaskDescriptor("load", "parquet", ("postgres",), ("parquet",), ("filter",),
                    (("order_id", "int64"), ("amount", "double")), rows=1_000_000)
PG_SMALL = TaskDescriptor("load", "parquet", ("postgres",), ("parquet",), ("filter",),
                          (("order_id", "int64"), ("amount", "double")), rows=200_000)
CSV = TaskDescriptor("load", "sqlite", ("csv",), ("sqlite",), (), (("name", "string"),), rows=100)


def records() -> list[Record]:
    return [Record("r1/a", PG.to_json(), {"status": "succeeded", "rows": 1_000_000, "tool": "parquet"}),
            Record("r2/a", PG_SMALL.to_json(), {"status": "failed", "rows": 200_000, "tool": "parquet"}),
            Record("r3/b", CSV.to_json(), {"status": "succeeded", "rows": 100, "tool": "sqlite", "flag": True})]


def test_add_count_get_delete(memory):
    assert memory.count() == 0 and memory.get() == [] and memory.query("anything") == []
    memory.add(records())
    assert memory.count() == 3
    got = {r.id: r for r in memory.get(ids=["r3/b", "r1/a", "nope"])}
    assert set(got) == {"r1/a", "r3/b"}
    assert got["r3/b"].document == CSV.to_json() and got["r3/b"].metadata["flag"] is True
    assert got["r1/a"].metadata["rows"] == 1_000_000
    memory.delete(["r1/a", "unknown"])
    assert memory.count() == 2 and memory.get(ids=["r1/a"]) == []
    assert len(memory.get(limit=1)) == 1


def test_add_replaces_a_stored_id(memory):
    memory.add(records())
    memory.add([Record("r3/b", CSV.to_json(), {"status": "failed", "rows": 5})])
    assert memory.count() == 3
    assert memory.get(ids=["r3/b"])[0].metadata == {"status": "failed", "rows": 5}


def test_query_ranks_the_same_task_first_then_similar_then_different(memory):
    memory.add(records())
    hits = memory.query(PG.to_json(), k=3)
    assert [h.record.id for h in hits] == ["r1/a", "r2/a", "r3/b"]
    assert hits[0].distance == pytest.approx(0.0, abs=1e-5)
    assert hits[0].distance < hits[1].distance < hits[2].distance
    assert len(memory.query(PG.to_json(), k=10)) == 3  # k above the count: all there are
    assert memory.query(PG.to_json(), k=0) == []


def test_free_text_finds_descriptors_by_their_words(memory):
    memory.add(records())
    assert memory.query("csv into sqlite", k=1)[0].record.id == "r3/b"
    assert memory.query("postgres parquet", k=1)[0].record.id in ("r1/a", "r2/a")


@pytest.mark.parametrize("where, want", [
    ({"status": "succeeded"}, {"r1/a", "r3/b"}),
    ({"status": {"$eq": "failed"}}, {"r2/a"}),
    ({"status": {"$ne": "failed"}}, {"r1/a", "r3/b"}),
    ({"rows": {"$gte": 200_000}}, {"r1/a", "r2/a"}),
    ({"rows": {"$gt": 200_000}}, {"r1/a"}),
    ({"rows": {"$lt": 1000}}, {"r3/b"}),
    ({"rows": {"$lte": 200_000}}, {"r2/a", "r3/b"}),
    ({"tool": {"$in": ["sqlite", "csv"]}}, {"r3/b"}),
    ({"tool": {"$nin": ["sqlite"]}}, {"r1/a", "r2/a"}),
    ({"status": "succeeded", "rows": {"$gt": 1000}}, {"r1/a"}),
    ({"flag": True}, {"r3/b"}),
])
def test_filters_select_alike_in_get_and_query(memory, where, want):
    memory.add(records())
    assert {r.id for r in memory.get(where=where)} == want
    assert {h.record.id for h in memory.query(PG.to_json(), k=10, where=where)} == want


def test_a_bad_filter_is_a_clear_error(memory):
    memory.add(records())
    with pytest.raises(ValueError, match="status"):
        memory.get(where={"status": {"$like": "x"}})


def test_many_records_in_one_add(memory):
    many = [Record(f"r{i}/t", TaskDescriptor("extract", "csv", ("csv",), rows=i + 1).to_json(), {"i": i})
            for i in range(2000)]
    memory.add(many)
    assert memory.count() == 2000
    near = memory.query(TaskDescriptor("extract", "csv", ("csv",), rows=1500).to_json(), k=5)
    assert all(h.record.metadata["i"] >= 316 for h in near)  # the same order of magnitude of rows


@pytest.mark.parametrize("where, passing", [
    ({"kind": "common"}, lambda i: i % 3 != 0),  # most pass: the nearest ones decide (Chroma filters them itself)
    ({"kind": "rare"}, lambda i: i in (17, 250)),  # too few among the nearest: the backend's own filter
    ({"kind": {"$in": ["rare", "common"]}, "i": {"$gte": 100}}, lambda i: i >= 100 and (i % 3 or i in (17, 250))),
])
def test_a_filtered_query_gives_the_nearest_records_that_pass(memory, where, passing):
    def kind(i: int) -> str:
        return "rare" if i in (17, 250) else ("common" if i % 3 else "other")

    memory.add([Record(f"r{i}/t", TaskDescriptor("extract", "csv", ("csv",), rows=i + 1).to_json(),
                       {"kind": kind(i), "i": i}) for i in range(300)])
    doc = TaskDescriptor("extract", "csv", ("csv",), rows=120).to_json()
    ranking = [(h.record.metadata["i"], round(h.distance, 4)) for h in memory.query(doc, k=300)]
    want = [d for i, d in ranking if passing(i)][:5]  # many descriptors tie: compare their distances
    got = memory.query(doc, k=5, where=where)
    assert all(passing(h.record.metadata["i"]) for h in got)
    assert [round(h.distance, 4) for h in got] == want
