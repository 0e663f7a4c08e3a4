"""The audit chain in the run store itself: two writers (two processes' stores) appending to one
run's chain at once stay one valid chain, on SQLite and on PostgreSQL; secrets of a run are masked
in its records."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from agent_etl.store.runs import RunStore


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
        return
    import psycopg

    name = f"aetl_audit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_two_writers_of_one_run_keep_one_chain(store_url: str) -> None:
    first, second = RunStore(store_url), RunStore(store_url)
    first.start_run("r1", "p", "fp", None, [{"task": "t", "position": 0, "kind": "load", "tool": "x", "inputs": []}])
    errors = []

    def commits(store: RunStore, task: str) -> None:
        try:
            for i in range(40):
                store.checkpoint("r1", "p", task, {"n": i}, 10)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=commits, args=(s, t)) for s, t in ((first, "a"), (second, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    first.finish_run("r1", "succeeded", 0, 800, None, 1.0)
    (verdict,) = first.verify("r1")
    assert verdict.problem is None and verdict.records == 82  # started, 80 commits, finished
    records = first.audit_records("r1")
    assert sorted(r.task for r in records if r.kind == "commit") == ["a"] * 40 + ["b"] * 40
    first.close()
    second.close()


def test_a_runs_secrets_are_masked_in_its_records(tmp_path) -> None:
    store = RunStore.at(tmp_path)
    store.protect("r2", {"hunter2-secret"})
    store.start_run("r2", "p", "fp", None, [])
    store.audit("r2", "task.finished", "t", {"error": "login with hunter2-secret refused", "password": "x"})
    store.finish_run("r2", "failed", 1, 0, "login with hunter2-secret refused", 0.1)
    texts = [r.data for r in store.audit_records("r2")]
    assert not any("hunter2-secret" in t for t in texts)
    assert any('"password":"***"' in t for t in texts)
    assert store.get_run("r2").run["error"] == "login with *** refused"
    store.close()
