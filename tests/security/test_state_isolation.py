"""The state folder and the quarantine folder are owner-only (0o700 folders, 0o600 files, whatever
the umask), and a run writes nothing outside its state folder and its declared destinations: the
whole temporary tree (project, working directory, HOME, TMPDIR) is compared before and after."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.cli.conftest import cli

SPEC = """\
version: 1
name: isolated
defaults: {batch_size: 100, commit_every: {rows: 200}}
connections:
  wh: {url: "sqlite:///${DEST}/wh.db"}
  duck: {url: "duckdb:///${DEST}/wh.duckdb"}
extract:
  orders: {tool: csv, path: data/orders.csv}
transform:
  - {name: big, input: orders, tool: sql, query: "select id, amount, amount * 2 as twice from orders"}
quality:
  - input: big
    checks: [{range: {column: amount, min: 0}}]
    on_failure: quarantine
load:
  lite: {input: big, tool: sqlite, connection: wh, table: orders}
  duck: {input: big, tool: duckdb, connection: duck, table: orders}
  lake: {input: big, tool: parquet, path: "${DEST}/lake/orders.parquet"}
"""


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            # a folder counts by being there (its mtime moves when a temporary file comes and goes)
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns) if name in filenames else (-1, 0)
    return out


def _layout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    rows = ["id,amount"] + [f"{i},{-1 if i % 40 == 3 else i % 90}" for i in range(1000)]
    (project / "data" / "orders.csv").write_text("\n".join(rows) + "\n")
    (project / "p.yaml").write_text(SPEC)
    for d in ("work", "home", "tmp", "dest"):
        (tmp_path / d).mkdir()
    env = {"AGENT_ETL_HOME": str(tmp_path / "state"), "DEST": str(tmp_path / "dest"), "HOME": str(tmp_path / "home"),
           "TMPDIR": str(tmp_path / "tmp"), "XDG_CACHE_HOME": str(tmp_path / "home" / ".cache")}
    return project, env


def test_a_run_writes_only_in_its_state_folder_and_destinations(tmp_path: Path) -> None:
    project, env = _layout(tmp_path)
    before = _tree(tmp_path)
    out = cli("run", str(project / "p.yaml"), cwd=tmp_path / "work", env=env)
    assert out.returncode == 0, out.stderr
    after = _tree(tmp_path)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    allowed = ("state", "dest")
    outside = sorted(p for p in changed if p.split(os.sep)[0] not in allowed)
    assert not outside, f"written outside the state folder and destinations: {outside}"
    assert {p for p in changed if p.startswith("dest" + os.sep)} >= {"dest/wh.db", "dest/wh.duckdb",
                                                                    "dest/lake/orders.parquet"}
    assert any(p.startswith("state" + os.sep + "quarantine") for p in changed)
    assert not list((tmp_path / "tmp").iterdir())  # temporary files were cleaned up


def test_state_and_quarantine_folders_are_owner_only(tmp_path: Path) -> None:
    project, env = _layout(tmp_path)
    old = os.umask(0o002)  # a permissive umask: the modes must not depend on it
    try:
        out = cli("run", str(project / "p.yaml"), cwd=tmp_path / "work", env=env)
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    state = tmp_path / "state"
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    quarantine = state / "quarantine"
    folders = [state, quarantine, *[p for p in quarantine.rglob("*") if p.is_dir()], state / "locks"]
    assert len(folders) >= 4
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in folders if mode(p) != 0o700} == {}
    files = [state / "runs.db", *quarantine.rglob("*.parquet"), *(state / "locks").iterdir()]
    assert len(files) >= 3
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in files if mode(p) != 0o600} == {}
    wal = state / "runs.db-wal"
    if wal.exists():
        assert mode(wal) == 0o600


def test_an_existing_wide_state_folder_is_narrowed(tmp_path: Path) -> None:
    project, env = _layout(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    out = cli("run", str(project / "p.yaml"), cwd=tmp_path / "work", env=env)
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "runs.db").stat().st_mode) == 0o600
