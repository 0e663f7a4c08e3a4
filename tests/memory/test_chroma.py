"""What only the Chroma backend has: a folder on disk, our embedding recorded in the collection,
no network or model download, one process at a time, a clear error for a folder it cannot open."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent_etl.memory import MemoryLocked, MemoryUnavailable, Record, open_memory
from agent_etl.memory.descriptor import TaskDescriptor

DOC = TaskDescriptor("extract", "postgres", ("postgres",), ("parquet",), rows=1000).to_json()


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_no_network_and_no_model_and_a_reopened_collection_embeds_with_ours(tmp_path: Path):
    """An audit hook sees every socket the process opens or resolves: there is none, none of
    Chroma's model downloads happened (HOME is empty afterwards), and a collection opened with
    plain chromadb, naming no embedding function, uses ours (recorded in its configuration)."""
    home = tmp_path / "home"
    home.mkdir()
    code = f"""
        import json, sys
        seen = []
        def hook(event, args):
            if event.startswith(("socket.", "urllib.")) or event == "http.client.connect":
                seen.append(event)
        sys.addaudithook(hook)
        from agent_etl.memory import Record, open_memory
        from agent_etl.memory.chroma import COLLECTION
        m = open_memory("chroma", {str(tmp_path / 'state')!r})
        m.add([Record("a", {DOC!r}, {{"status": "succeeded"}})])
        m.query("postgres parquet", 3)
        m.close()
        import chromadb
        from chromadb.config import Settings
        client = chromadb.PersistentClient({str(tmp_path / 'state' / 'memory' / 'chroma')!r},
                                          settings=Settings(anonymized_telemetry=False))
        col = client.get_collection(COLLECTION)
        found = col.query(query_texts=["postgres parquet"], n_results=1)
        print(json.dumps({{"seen": seen, "ef": col.configuration["embedding_function"].name(), "ids": found["ids"][0],
                          "config": col.configuration_json.get("embedding_function"),
                          "onnx": [k for k in sys.modules if k.split(".")[0] in ("onnxruntime", "tokenizers")]}}))
    """
    r = run_python(code, env={"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["seen"] == []
    assert out["ef"] == "agent_etl_feature_hash" and out["ids"] == ["a"]
    assert out["config"]["name"] == "agent_etl_feature_hash"
    assert out["onnx"] == []
    assert list(home.rglob("*")) == [], "something was downloaded or cached under HOME"


def test_persistent_across_opens(tmp_path: Path):
    m = open_memory("chroma", tmp_path)
    m.add([Record("a", DOC, {"n": 1}), Record("b", "free text", {"n": 2})])
    m.close()
    m = open_memory("chroma", tmp_path)
    try:
        assert m.count() == 2 and m.query(DOC, 1)[0].record.id == "a"
    finally:
        m.close()


def test_a_second_process_gets_a_clear_lock_error_naming_the_holder(tmp_path: Path):
    m = open_memory("chroma", tmp_path)
    try:
        r = run_python(f"""
            from agent_etl.memory import open_memory
            open_memory("chroma", {str(tmp_path)!r})
        """)
        assert r.returncode != 0
        last = r.stderr.strip().splitlines()[-1]
        assert "MemoryLocked" in last and str(tmp_path / "memory") in last and f"process {os.getpid()}" in last
        with pytest.raises(MemoryLocked, match=f"in use by process {os.getpid()}"):  # and in this process too
            open_memory("chroma", tmp_path)
    finally:
        m.close()
    open_memory("chroma", tmp_path).close()  # free again once closed


def test_a_corrupt_folder_says_how_to_reset(tmp_path: Path):
    folder = tmp_path / "memory" / "chroma"
    folder.mkdir(parents=True)
    (folder / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(MemoryUnavailable, match="agent-etl memory reset"):
        open_memory("chroma", tmp_path)
    open_memory("numpy").close()
    # the lock is released after the failed open
    from agent_etl.memory.lock import WriterLock

    lock = WriterLock(tmp_path / "memory")
    lock.acquire()
    lock.release()


PERTURBED_WRITE = """
    import ctypes, os, sys
    ctypes.CDLL("libc.so.6").mallopt(-6, 0x5a)  # M_PERTURB: memory malloc hands out is filled with 0xa5
    from agent_etl.memory import Record, open_memory
    m = open_memory("chroma", sys.argv[1])
    m.add([Record(f"r{{i}}", f"record {{i}}", {{"n": i}}) for i in range({n})])
    {end}
"""


def _uninitialised(folder: Path) -> list[str]:
    return [f.name for f in folder.rglob("*") if f.is_file() and b"\xa5" * 16 in f.read_bytes()]


@pytest.mark.parametrize("n", [2, 1200])
def test_index_files_hold_no_bytes_of_the_heap(tmp_path: Path, n: int):
    """Chroma writes its HNSW buffers whole, slots no record uses included, from memory it never set:
    what the heap held before (a resolved password, a pipeline's text) would reach the folder. Here
    every such byte is 0xa5 (glibc's M_PERTURB), so any that survive the close are found."""
    code = PERTURBED_WRITE.format(n=n, end="m.close()")
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert _uninitialised(tmp_path / "memory") == []
    m = open_memory("chroma", tmp_path)
    try:
        assert m.count() == n and m.get(["r1"])[0].document == "record 1" and len(m.query("record 1", 3)) == min(3, n)
    finally:
        m.close()


def test_a_folder_a_killed_process_left_is_scrubbed_when_opened(tmp_path: Path):
    code = PERTURBED_WRITE.format(n=2, end="m._client.close(); os._exit(0)")  # closed, never scrubbed
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert _uninitialised(tmp_path / "memory"), "the test wrote no uninitialised bytes: it proves nothing"
    m = open_memory("chroma", tmp_path)
    try:
        assert _uninitialised(tmp_path / "memory") == []
        assert m.count() == 2
    finally:
        m.close()
