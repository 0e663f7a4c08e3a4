"""Profile overlays (agent_etl.profiles): what merges and what replaces."""

from pathlib import Path

import pytest

from agent_etl.exceptions import SpecError
from agent_etl.profiles import apply
from agent_etl.spec.yamlsource import load_yaml

BASE = """\
version: 1
name: p
defaults: {batch_size: 100, retries: {max_attempts: 3}}
connections:
  wh: {url: "sqlite:///${WH:-out/w.db}", timeout: 5}
extract:
  a: {tool: csv, path: a.csv}
transform:
  - {name: t1, input: a, tool: filter, where: "x > 0"}
  - {name: t2, input: t1, tool: select, columns: [x, y]}
quality:
  - input: t1
    checks: [{not_null: [x]}]
    on_failure: quarantine
load:
  out: {input: t2, tool: parquet, path: out/t2/, partition_by: [y]}
"""


def merged(tmp_path: Path, overlay: str, profile: str = "dev") -> dict:
    (tmp_path / "configs").mkdir(exist_ok=True)
    (tmp_path / "configs" / f"{profile}.yaml").write_text(overlay)
    text, source = apply(BASE, "p.yaml", profile, tmp_path)
    assert source.endswith(f"{profile}.yaml")
    return load_yaml(text, source).data


def test_mappings_merge_and_everything_else_is_replaced(tmp_path):
    data = merged(tmp_path, "defaults: {retries: {max_attempts: 1}}\nconnections:\n  wh: {url: 'sqlite:///dev.db'}\n"
                            "load:\n  out: {partition_by: [x]}\n")
    assert data["defaults"] == {"batch_size": 100, "retries": {"max_attempts": 1}}
    assert data["connections"]["wh"] == {"url": "sqlite:///dev.db", "timeout": 5}
    assert data["load"]["out"]["partition_by"] == ["x"] and data["load"]["out"]["path"] == "out/t2/"


def test_steps_merge_by_name_and_groups_by_input(tmp_path):
    data = merged(tmp_path, "transform:\n  - {name: t2, columns: [x]}\n  - {name: t3, input: t2, tool: dedupe}\n"
                            "quality:\n  - {input: t1, on_failure: warn}\n")
    assert [t["name"] for t in data["transform"]] == ["t1", "t2", "t3"]
    assert data["transform"][1] == {"name": "t2", "input": "t1", "tool": "select", "columns": ["x"]}
    assert data["quality"] == [{"input": "t1", "checks": [{"not_null": ["x"]}], "on_failure": "warn"}]


def test_no_profile_is_the_text_itself_and_a_missing_one_is_a_spec_error(tmp_path, monkeypatch):
    monkeypatch.delenv("AGENT_ETL_PROFILE", raising=False)
    assert apply(BASE, "p.yaml", None, tmp_path) == (BASE, "p.yaml")
    with pytest.raises(SpecError, match="profile 'prod' not found"):
        apply(BASE, "p.yaml", "prod", tmp_path)
    with pytest.raises(SpecError, match="give a profile name"):
        apply(BASE, "p.yaml", "../etc/x", tmp_path)
