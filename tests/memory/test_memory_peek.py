"""memory.peek: a look-up in the chroma memory read from Chroma's files, without chromadb, gives
what the opened memory gives; or None, and the caller opens it."""

from __future__ import annotations

import json

from agent_etl.memory import Record, open_memory, peek
from agent_etl.memory.folder import memory_folder

WHERE = {"status": "succeeded", "kind": "extract"}


def records(n: int) -> list[Record]:
    tools = ["postgres", "mysql", "csv", "sqlite"]
    return [Record(f"r{i}", json.dumps({"kind": "extract", "tool": tools[i % 4], "table": f"t{i}", "rows": i * 37,
                                        "columns": [f"c{j}" for j in range(i % 7)]}),
                   {"status": "succeeded" if i % 3 else "failed", "kind": "extract" if i % 5 else "load",
                    "batch_size": 1000 + i, "rows_per_second": i * 1.5, "quality_ok": i % 2 == 0, "task": f"t{i}"})
            for i in range(300)]


def test_peek_finds_what_the_opened_memory_finds(tmp_path):
    memory = open_memory("chroma", tmp_path)
    memory.add(records(300))
    memory.delete(["r1", "r2"])
    memory.add([Record("r4", '{"kind": "extract", "tool": "postgres", "table": "t4b"}',
                       {"status": "succeeded", "kind": "extract", "batch_size": 7})])
    try:
        for query in ('{"kind": "extract", "tool": "postgres", "table": "t8", "rows": 296}',
                      '{"tool": "csv", "columns": ["c0", "c1"]}', "sqlite"):
            want = memory.query(query, k=10, where=WHERE)
            got = peek.query(tmp_path, query, k=10, where=WHERE)
            assert got is not None
            assert [h.record for h in got] == [h.record for h in want]
            assert all(abs(a.distance - b.distance) < 1e-5 for a, b in zip(got, want))
    finally:
        memory.close()
    assert {h.record.id for h in peek.query(tmp_path, "x", k=300, where=WHERE)}.isdisjoint({"r1", "r2"})


def test_pending_records_are_seen_and_an_unknown_file_is_left_to_chroma(tmp_path):
    open_memory("chroma", tmp_path).close()
    pending = memory_folder(tmp_path) / "pending"
    pending.mkdir()
    (pending / "a.jsonl").write_text(json.dumps({"id": "p1", "document": "postgres orders",
                                                 "metadata": {"status": "succeeded", "kind": "extract"}}) + "\n")
    assert [h.record.id for h in peek.query(tmp_path, "postgres orders", where=WHERE)] == ["p1"]
    (pending / "b.jsonl").write_text("not json\n")
    assert peek.query(tmp_path, "postgres orders", where=WHERE) is None
    (pending / "b.jsonl").unlink()
    (memory_folder(tmp_path) / "chroma" / "chroma.sqlite3").write_bytes(b"not a database")
    assert peek.query(tmp_path, "postgres orders", where=WHERE) is None
    assert peek.query(tmp_path / "nowhere", "postgres orders", where=WHERE) is None
