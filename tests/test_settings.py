"""Runtime settings read from the environment."""

from __future__ import annotations

from agent_etl.settings import Settings


def test_the_run_store_is_named_by_agent_etl_store_or_agent_etl_store_url(monkeypatch, tmp_path):
    monkeypatch.delenv("AGENT_ETL_STORE_URL", raising=False)
    monkeypatch.delenv("AGENT_ETL_STORE", raising=False)
    assert Settings().store_url_for(tmp_path) == f"sqlite:///{tmp_path / 'runs.db'}"
    monkeypatch.setenv("AGENT_ETL_STORE", "postgresql+psycopg://u@db/agent_etl")
    assert Settings().store_url == "postgresql+psycopg://u@db/agent_etl"
    monkeypatch.setenv("AGENT_ETL_STORE_URL", "sqlite:///elsewhere.db")  # the longer name wins where both are set
    assert Settings().store_url == "sqlite:///elsewhere.db"
    assert Settings(store_url="sqlite:///given.db").store_url == "sqlite:///given.db"  # in code, by field name
