"""The audit trail through the CLI: a run's records (start, tasks, commits, the quality gate, end),
`audit verify` on an intact chain, and tampering with the SQLite run store directly (an edited,
deleted, inserted or reordered record) found and named; keyed chains (AGENT_ETL_AUDIT_KEY)."""

from __future__ import annotations

import json
import os
import sqlite3
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


def test_an_edited_record_is_named(project: Path) -> None:
    run_id = _run(project)
    with _db(project) as db:
        seq = db.execute("select seq from audit where run_id=? and kind='commit' order by seq limit 1",
                         (run_id,)).fetchone()[0]
        db.execute("update audit set data=json_set(data, '$.rows', 1) where run_id=? and seq=?", (run_id, seq))
    out = _verify(project, run_id)
    assert out.returncode == 1
    assert f"record {seq} (commit copy) was edited" in out.stdout


def test_a_deleted_record_is_named(project: Path) -> None:
    run_id = _run(project)
    with _db(project) as db:
        db.execute("delete from audit where run_id=? and seq=4", (run_id,))
    out = _verify(project, run_id)
    assert out.returncode == 1
    assert "record 4 deleted" in out.stdout


def test_a_deleted_tail_is_found(project: Path) -> None:
    run_id = _run(project)
    with _db(project) as db:
        last = db.execute("select max(seq) from audit where run_id=?", (run_id,)).fetchone()[0]
        db.execute("delete from audit where run_id=? and seq=?", (run_id, last))
    out = _verify(project, run_id)
    assert out.returncode == 1
    assert f"stops at record {last - 1}" in out.stdout


def test_an_inserted_record_is_named(project: Path) -> None:
    run_id = _run(project)
    with _db(project) as db:
        # make room after record 3 and put a forged commit there, chained to record 3 with a fresh hash
        db.execute("update audit set seq = -seq - 1 where run_id=? and seq > 3", (run_id,))
        db.execute("update audit set seq = -seq where run_id=? and seq < 0", (run_id,))
        prev = db.execute("select hash from audit where run_id=? and seq=3", (run_id,)).fetchone()[0]
        import hashlib
        forged = hashlib.sha256(prev.encode() + b"forged").hexdigest()
        db.execute("insert into audit (run_id, seq, at, kind, task, data, alg, prev, hash) values "
                   "(?, 4, 0, 'commit', 'copy', '{\"rows\": 5}', 'sha256', ?, ?)", (run_id, prev, forged))
    out = _verify(project, run_id)
    assert out.returncode == 1
    assert "record 4 (commit copy) was inserted" in out.stdout


def test_an_inserted_valid_looking_record_is_named(project: Path) -> None:
    """Without a key anyone can compute a record's hash: the record after it still betrays it."""
    from agent_etl.store.audit import digest

    run_id = _run(project)
    with _db(project) as db:
        db.execute("update audit set seq = -seq - 1 where run_id=? and seq > 3", (run_id,))
        db.execute("update audit set seq = -seq where run_id=? and seq < 0", (run_id,))
        prev = db.execute("select hash from audit where run_id=? and seq=3", (run_id,)).fetchone()[0]
        h = digest(prev, run_id, 4, 1.5, "commit", "copy", '{"rows":5}', None)
        db.execute("insert into audit (run_id, seq, at, kind, task, data, alg, prev, hash) values "
                   "(?, 4, 1.5, 'commit', 'copy', '{\"rows\":5}', 'sha256', ?, ?)", (run_id, prev, h))
    out = _verify(project, run_id)
    assert out.returncode == 1
    assert "record 4 (commit copy) was inserted" in out.stdout


def test_reordered_records_are_named(project: Path) -> None:
    run_id = _run(project)
    with _db(project) as db:
        db.execute("update audit set seq = -1 where run_id=? and seq=5", (run_id,))
        db.execute("update audit set seq = 5 where run_id=? and seq=6", (run_id,))
        db.execute("update audit set seq = 6 where run_id=? and seq=-1", (run_id,))
        kind = db.execute("select kind, task from audit where run_id=? and seq=5", (run_id,)).fetchone()
    out = _verify(project, run_id)
    assert out.returncode == 1
    label = f"{kind[0]} {kind[1]}" if kind[1] else kind[0]
    assert f"record 6 ({label}) stands at position 5: records were reordered" in out.stdout


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
