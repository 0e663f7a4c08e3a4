"""``${keyring:service/username}``: a secret read from the OS keyring (the keyring extra), here a
plain-file keyring of the test's own (keyrings.alt), through the CLI; an entry that is missing is a
spec error naming it, and the value is masked and never stored like any other secret."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.cli.conftest import cli

keyring = pytest.importorskip("keyring", reason="keyring (the keyring extra) is not installed")
pytest.importorskip("keyrings.alt", reason="keyrings.alt (the test extra) is not installed")

SPEC = """\
version: 1
name: from_keyring
connections:
  wh: {url: "sqlite:///out/wh.db", token: "${keyring:agent-etl-test/warehouse}"}
extract:
  src: {tool: csv, path: data.csv}
transform:
  - {name: kept, input: src, tool: filter, where: "note <> '${keyring:agent-etl-test/warehouse}'"}
load:
  copy: {input: kept, tool: sqlite, connection: wh, table: t}
"""


@pytest.fixture
def file_keyring(tmp_path: Path, monkeypatch) -> dict[str, str]:
    env = {"PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
           "XDG_DATA_HOME": str(tmp_path / "keyring-data")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import keyring.core

    monkeypatch.setattr(keyring.core, "_keyring_backend", None)  # choose the backend again, from the env
    return env


def test_a_secret_from_the_os_keyring(tmp_path: Path, file_keyring: dict[str, str]) -> None:
    secret = f"kr-{uuid.uuid4().hex}"
    keyring.set_password("agent-etl-test", "warehouse", secret)
    project = tmp_path / "p"
    (project / "out").mkdir(parents=True)
    (project / "data.csv").write_text("id,note\n1,a\n2,b\n")
    (project / "p.yaml").write_text(SPEC)
    ok = cli("run", "p.yaml", cwd=project, env=file_keyring)
    assert ok.returncode == 0, ok.stderr
    (project / "p.yaml").write_text(SPEC.replace("where: \"note", "where: \"nosuch"))
    bad = cli("run", "p.yaml", cwd=project, env=file_keyring)
    assert bad.returncode == 1 and "nosuch <> '***'" in bad.stderr, bad.stderr
    for path in project.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in ok.stdout + ok.stderr + bad.stdout + bad.stderr


def test_a_missing_keyring_entry_is_a_spec_error(tmp_path: Path, file_keyring: dict[str, str]) -> None:
    (tmp_path / "data.csv").write_text("id,note\n1,a\n")
    (tmp_path / "p.yaml").write_text(SPEC.replace("warehouse}", "nobody}"))
    out = cli("validate", "p.yaml", cwd=tmp_path, env=file_keyring)
    assert out.returncode == 2
    assert "the OS keyring has no password for service 'agent-etl-test', user 'nobody'" in out.stderr
    assert "keyring set agent-etl-test nobody" in out.stderr and "Traceback" not in out.stderr
