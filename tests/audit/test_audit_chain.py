"""The audit trail through the CLI: a run's records (start, tasks, commits, the quality gate, end),
`audit verify` on an intact chain, and tampering with the SQLite run store directly (an edited,
deleted, inserted or reordered record) found and named; keyed chains (AGENT_ETL_AUDIT_KEY)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import cli

SPEC = """\
version: 1
name: audited
defaults: {batch_size: 100, commit_every: {rows: 200}}
extract:
  orders: {tool: csv, path: data/orders.csv}
quality:
  - input: orders
    checks:
      - range: {column: amount, min: 0}
    on_failure: quarantine
load:
  copy: {input: orders, tool: sqlite, connection: wh, table: orders, mode: append}
connections:
  wh: {url: "sqlite:///out/wh.db"}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return _project(tmp_path)


def _project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "out").mkdir()
    rows = ["id,amount"] + [f"{i},{-1 if i % 50 == 7 else i % 90}" for i in range(1000)]
    (tmp_path / "data" / "orders.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "p.yaml").write_text(SPEC)
    return tmp_path


def _run(project: Path, **env: str) -> str:
    out = cli("run", "p.yaml", "--json", cwd=project, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["run_id"]


def _db(project: Path) -> sqlite3.Connection:
    return sqlite3.connect(project / ".agent-etl" / "runs.db")


def _verify(project: Path, *args: str, **env: str):
    return cli("audit", "verify", *args, cwd=project, env=env)


def test_a_run_is_recorded_and_its_chain_verifies(project: Path) -> None:
    run_id = _run(project)
    shown = cli("audit", "show", run_id[:12], "--json", cwd=project)
    assert shown.returncode == 0, shown.stderr
    records = json.loads(shown.stdout)
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "run.started" and kinds[-1] == "run.finished"
    assert kinds.count("commit") >= 3  # 980 rows in units of about 200
    assert {"task.started", "task.finished", "quality.gate"} <= set(kinds)
    gate = next(r for r in records if r["kind"] == "quality.gate")
    assert gate["data"]["status"] == "quarantined" and gate["data"]["rows_quarantined"] == 20
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    ok = _verify(project, run_id)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == f"chain intact: {len(records)} records"
    text = cli("audit", "show", run_id, cwd=project)
    assert "run.finished" in text.stdout and "commit" in text.stdout


# Each tampering with a recorded run's audit table in the run store, and the line `audit verify`
# names it with: tamper(db, run_id) does it and returns that line.


def _edit(db: sqlite3.Connection, run_id: str) -> str:
    seq = db.execute("select seq from audit where run_id=? and kind='commit' order by seq limit 1",
                     (run_id,)).fetchone()[0]
    db.execute("update audit set data=json_set(data, '$.rows', 1) where run_id=? and seq=?", (run_id, seq))
    return f"record {seq} (commit copy) was edited"


def _delete(db: sqlite3.Connection, run_id: str) -> str:
    db.execute("delete from audit where run_id=? and seq=4", (run_id,))
    return "record 4 deleted"


def _delete_tail(db: sqlite3.Connection, run_id: str) -> str:
    last = db.execute("select max(seq) from audit where run_id=?", (run_id,)).fetchone()[0]
    db.execute("delete from audit where run_id=? and seq=?", (run_id, last))
    return f"stops at record {last - 1}"


def _insert_after_3(db: sqlite3.Connection, run_id: str, hash_of: Callable[[str], str], at: float, data: str) -> str:
    """Make room after record 3 and put a forged commit there, chained to record 3."""
    db.execute("update audit set seq = -seq - 1 where run_id=? and seq > 3", (run_id,))
    db.execute("update audit set seq = -seq where run_id=? and seq < 0", (run_id,))
    prev = db.execute("select hash from audit where run_id=? and seq=3", (run_id,)).fetchone()[0]
    db.execute("insert into audit (run_id, seq, at, kind, task, data, alg, prev, hash) values "
               "(?, 4, ?, 'commit', 'copy', ?, 'sha256', ?, ?)", (run_id, at, data, prev, hash_of(prev)))
    return "record 4 (commit copy) was inserted"


def _insert(db: sqlite3.Connection, run_id: str) -> str:
    return _insert_after_3(db, run_id, lambda prev: hashlib.sha256(prev.encode() + b"forged").hexdigest(), 0,
                           '{"rows": 5}')


def _insert_valid_looking(db: sqlite3.Connection, run_id: str) -> str:
    """Without a key anyone can compute a record's hash: the record after it still betrays it."""
    from agent_etl.store.audit import digest

    return _insert_after_3(db, run_id, lambda prev: digest(prev, run_id, 4, 1.5, "commit", "copy", '{"rows":5}',
                                                           None), 1.5, '{"rows":5}')


def _reorder(db: sqlite3.Connection, run_id: str) -> str:
    db.execute("update audit set seq = -1 where run_id=? and seq=5", (run_id,))
    db.execute("update audit set seq = 5 where run_id=? and seq=6", (run_id,))
    db.execute("update audit set seq = 6 where run_id=? and seq=-1", (run_id,))
    kind, task = db.execute("select kind, task from audit where run_id=? and seq=5", (run_id,)).fetchone()
    return f"record 6 ({f'{kind} {task}' if task else kind}) stands at position 5: records were reordered"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One run, recorded once for the tampering tests (each tampers with a copy of its project)."""
    root = tmp_path_factory.mktemp("recorded")
    return root, _run(_project(root))


@pytest.mark.parametrize("tamper", [_edit, _delete, _delete_tail, _insert, _insert_valid_looking, _reorder],
                         ids=["edited", "deleted", "deleted-tail", "inserted", "inserted-valid-looking", "reordered"])
def test_tampering_is_found_and_named(recorded: tuple[Path, str], tmp_path: Path,
                                      tamper: Callable[[sqlite3.Connection, str], str]) -> None:
    source, run_id = recorded
    copy = tmp_path / "project"
    shutil.copytree(source, copy)
    assert _verify(copy, run_id).returncode == 0
    with _db(copy) as db:
        said = tamper(db, run_id)
    out = _verify(copy, run_id)
    assert out.returncode == 1
    assert said in out.stdout


def test_every_run_is_verified_without_a_run_id(project: Path) -> None:
    first, second = _run(project), _run(project)
    ok = _verify(project)
    assert ok.returncode == 0 and "in 2 runs" in ok.stdout
    with _db(project) as db:
        db.execute("delete from audit where run_id=?", (second,))
    out = _verify(project)
    assert out.returncode == 1
    assert f"run {second} has no audit records" in out.stdout and first not in out.stdout


def test_a_keyed_chain_needs_its_key(project: Path) -> None:
    run_id = _run(project, AGENT_ETL_AUDIT_KEY="k3y-of-the-auditor")
    assert _verify(project, run_id, AGENT_ETL_AUDIT_KEY="k3y-of-the-auditor").returncode == 0
    wrong = _verify(project, run_id, AGENT_ETL_AUDIT_KEY="another key")
    assert wrong.returncode == 1 and "record 1 (run.started) was edited" in wrong.stdout
    env = {k: v for k, v in os.environ.items() if k != "AGENT_ETL_AUDIT_KEY"}
    assert "AGENT_ETL_AUDIT_KEY" not in env
    without = _verify(project, run_id)
    assert without.returncode == 1 and "set AGENT_ETL_AUDIT_KEY" in without.stdout
    # rewritten without the key (a whole consistent unkeyed chain) is refused under the key
    from agent_etl.store.audit import GENESIS, digest

    with _db(project) as db:
        prev = GENESIS
        rows = db.execute("select seq, at, kind, task, data from audit where run_id=? order by seq",
                          (run_id,)).fetchall()
        for seq, at, kind, task, data in rows:
            h = digest(prev, run_id, seq, at, kind, task, data, None)
            db.execute("update audit set alg='sha256', prev=?, hash=? where run_id=? and seq=?", (prev, h, run_id, seq))
            prev = h
    out = _verify(project, run_id, AGENT_ETL_AUDIT_KEY="k3y-of-the-auditor")
    assert out.returncode == 1 and "record 1 (run.started) is not keyed" in out.stdout


def test_a_forced_resume_records_the_configuration_change(project: Path) -> None:
    (project / "boom.py").write_text("import os\n\ndef boom(batch):\n    if os.environ.get('BOOM'):\n"
                                     "        raise RuntimeError('boom')\n    return batch\n")
    spec = SPEC.replace("load:\n  copy: {input: orders,", "transform:\n  - {name: checked, input: orders, tool: python, "
                        "function: 'boom:boom'}\nload:\n  copy: {input: checked,")
    (project / "p.yaml").write_text(spec)
    env = {"PYTHONPATH": str(project)}
    failed = cli("run", "p.yaml", "--json", cwd=project, env={**env, "BOOM": "1"})
    assert failed.returncode == 1, failed.stderr
    run_id = json.loads(failed.stdout)["run_id"]
    (project / "p.yaml").write_text(spec.replace("min: 0", "min: 1"))
    resumed = cli("resume", run_id, "--force", cwd=project, env=env)
    assert resumed.returncode == 0, resumed.stderr
    records = json.loads(cli("audit", "show", run_id, "--json", cwd=project).stdout)
    kinds = [r["kind"] for r in records]
    assert "config.changed" in kinds and "run.resumed" in kinds
    assert kinds.index("config.changed") < kinds.index("run.resumed")
    assert kinds.count("run.finished") == 2
    change = records[kinds.index("config.changed")]["data"]
    assert change["from"] != change["to"] and "quality" in change["changes"]
    ok = _verify(project, run_id)
    assert ok.returncode == 0, ok.stdout
