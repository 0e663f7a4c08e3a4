"""Bad input through the CLI: the right exit code, a message naming the problem, no traceback,
and destinations absent or unchanged afterwards."""

import json
import os
import signal
import subprocess
import time

import pytest
from tests.cli.conftest import AGENT_ETL, cli

PIPE = """\
version: 1
name: bad_input
extract:
  people:
    tool: csv
    path: {path}
quality:
  - input: people
    checks:
      - not_null: [{column}]
    on_failure: {mode}
load:
  out:
    input: people
    tool: parquet
    path: out/people.parquet
"""


def write(tmp_path, text=None, *, path="people.csv", column="id", mode="fail", rows="1,ann\n2,bob\n"):
    (tmp_path / "people.csv").write_text("id,name\n" + rows)
    (tmp_path / "p.yaml").write_text(text if text is not None else PIPE.format(path=path, column=column, mode=mode))
    return tmp_path / "p.yaml"


def no_traceback(r):
    assert "Traceback" not in r.stderr + r.stdout, r.stderr


@pytest.fixture
def existing_output(tmp_path):
    out = tmp_path / "out" / "people.parquet"
    out.parent.mkdir()
    out.write_bytes(b"previous content")
    return out


def test_good_run_writes_output(tmp_path):
    write(tmp_path)
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "people.parquet").exists()


def test_malformed_yaml(tmp_path):
    write(tmp_path, "version: 1\nname: x\nextract:\n  a: {tool: csv, path: [\n")
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "malformed YAML" in r.stderr and "line " in r.stderr
    no_traceback(r)


def test_unknown_key_unknown_tool_and_cycle_reported_together(tmp_path):
    write(tmp_path, """\
version: 1
name: x
extract:
  a: {tool: csv, path: people.csv, delimeter: ";"}
transform:
  - {name: t1, input: t2, tool: filter, where: "id > 1"}
  - {name: t2, input: t1, tool: filtre, where: "id > 1"}
""")
    r = cli("validate", "p.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert "line 4" in r.stderr and "unknown key 'delimeter'" in r.stderr and "did you mean 'delimiter'" in r.stderr
    assert "line 7" in r.stderr and "unknown transform 'filtre'" in r.stderr and "did you mean 'filter'" in r.stderr
    assert "cycle: t1 -> t2 -> t1" in r.stderr
    no_traceback(r)
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 2


def test_validate_json(tmp_path):
    write(tmp_path, "version: 1\nname: x\nextract:\n  a: {tool: nope}\n")
    r = cli("validate", "p.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 2
    assert '"line": 4' in r.stdout and "unknown extractor" in r.stdout


def test_unset_variable(tmp_path):
    write(tmp_path, path="${DATA_FILE}")
    env = {k: v for k, v in os.environ.items() if k != "DATA_FILE"}
    r = subprocess.run([AGENT_ETL, "run", "p.yaml"], cwd=tmp_path, capture_output=True, text=True,
                       env={**env, "AGENT_ETL_HOME": str(tmp_path / ".agent-etl")})
    assert r.returncode == 2 and "${DATA_FILE} is not set" in r.stderr and "line 6" in r.stderr
    r = cli("run", "p.yaml", "--var", "DATA_FILE=people.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_an_unset_password_variable_is_named_not_masked(tmp_path):
    """The unfilled ${...} of a URL's password is the user's text, not a secret value."""
    write(tmp_path, "version: 1\nname: x\nconnections:\n  db: {url: \"postgresql://u:${SOURCE_PASSWORD}@h/d\"}\n"
                    "extract:\n  a: {tool: postgres, connection: db, table: t}\n")
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_PASSWORD"}
    r = subprocess.run([AGENT_ETL, "validate", "p.yaml"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "line 4: ${SOURCE_PASSWORD} is not set" in r.stderr, r.stderr


def test_missing_input_file(tmp_path, existing_output):
    write(tmp_path, path="nowhere.csv")
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 1 and "nowhere.csv" in r.stderr
    no_traceback(r)
    assert existing_output.read_bytes() == b"previous content"


def test_csv_with_a_bad_row(tmp_path, existing_output):
    rows = "".join(f"{i},name{i}\n" for i in range(1, 50)) + "50,too,many,fields\n51,ok\n"
    write(tmp_path, rows=rows)
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 1 and "people.csv" in r.stderr
    assert "row" in r.stderr.lower()
    no_traceback(r)
    assert existing_output.read_bytes() == b"previous content"


def test_rule_on_a_missing_column(tmp_path, existing_output):
    write(tmp_path, column="identifier")
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "identifier" in r.stderr and "line 10" in r.stderr
    no_traceback(r)
    assert existing_output.read_bytes() == b"previous content"


def test_quality_gate_failure_exit_3(tmp_path, existing_output):
    write(tmp_path, column="name", rows="1,ann\n2,\n3,cy\n")
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 3 and "not_null(name)" in r.stderr
    no_traceback(r)
    assert existing_output.read_bytes() == b"previous content"


def test_quarantine_lets_good_rows_through(tmp_path):
    write(tmp_path, column="name", mode="quarantine", rows="1,ann\n2,\n3,cy\n")
    r = cli("run", "p.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out" / "people.parquet").column("id").to_pylist() == [1, 3]


def test_missing_pipeline_file_and_bad_var(tmp_path):
    r = cli("run", "missing.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "missing.yaml" in r.stderr
    write(tmp_path)
    r = cli("run", "p.yaml", "--var", "NOEQUALS", cwd=tmp_path)
    assert r.returncode == 2 and "K=V" in r.stderr
    r = cli("runs", "show", "nope", cwd=tmp_path)
    assert r.returncode == 2 and "no run 'nope'" in r.stderr


def test_a_run_id_prefix_of_several_runs_is_named_ambiguous_by_every_command(tmp_path):
    write(tmp_path)
    for _ in range(2):
        assert cli("run", "p.yaml", cwd=tmp_path).returncode == 0
    for command in (["runs", "show"], ["report"], ["resume"]):
        r = cli(*command, "2", cwd=tmp_path)
        assert r.returncode == 2 and "run id prefix '2' matches more than one run" in r.stderr, (command, r.stderr)
    one = cli("runs", "list", "--json", cwd=tmp_path)
    first = json.loads(one.stdout)[0]["run_id"]
    assert cli("runs", "show", first[:-1], cwd=tmp_path).returncode == 0


def test_interrupt_exits_130_and_leaves_no_output(tmp_path):
    (tmp_path / "slow.py").write_text("import time\ndef slow(t):\n    time.sleep(0.2)\n    return t\n")
    rows = "".join(f"{i},n{i}\n" for i in range(2000))
    write(tmp_path, PIPE.format(path="people.csv", column="id", mode="fail").replace(
        "load:", "defaults: {batch_size: 10}\ntransform:\n  - {name: slowed, input: people, tool: python, function: 'slow:slow'}\nload:"
    ).replace("input: people\n    tool: parquet", "input: slowed\n    tool: parquet"), rows=rows)
    proc = subprocess.Popen([AGENT_ETL, "run", "p.yaml"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "AGENT_ETL_HOME": str(tmp_path / ".agent-etl")})
    # interrupt once the run is under way (the run store shows it within a second), however slow the machine
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and '"running"' not in cli("runs", "list", "--json", cwd=tmp_path).stdout:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert not (tmp_path / "out" / "people.parquet").exists()
    assert not list((tmp_path / "out").glob(".*tmp*")) if (tmp_path / "out").exists() else True
    assert "Traceback" not in err
    r = cli("runs", "list", "--json", cwd=tmp_path)
    assert '"interrupted"' in r.stdout


def test_interpolated_secrets_never_reach_messages_or_the_store(tmp_path):
    secret = "hunter2-not-for-logs"
    (tmp_path / "secret.txt").write_text(secret)
    (tmp_path / "p.yaml").write_text("""\
version: 1
name: secrets
connections:
  db: {url: "sqlite:///missing-${file:secret.txt}.db"}
extract:
  t: {tool: sqlite, connection: db, table: things}
load:
  out: {input: t, tool: csv, path: out.csv}
""")
    r = cli("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 1 and "***" in r.stderr
    assert secret not in r.stderr + r.stdout
    shown = cli("runs", "list", "--json", cwd=tmp_path).stdout
    run_id = json.loads(shown)[0]["run_id"]
    detail = cli("runs", "show", run_id, "--json", cwd=tmp_path).stdout
    assert "***" in detail and secret not in detail
    assert secret.encode() not in (tmp_path / ".agent-etl" / "runs.db").read_bytes()
