"""Runtime settings: ``AGENT_ETL_*`` environment variables (or a ``.env`` file in the working
directory). Everything has an embedded default, so nothing needs configuring on one machine."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENT_ETL_", env_file=".env", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.cwd() / ".agent-etl",
                       description="state directory: run store, quarantine, temporary spool files")
    store_url: str | None = Field(None, description="SQLAlchemy URL of the run store; default sqlite in home")
    heartbeat_interval: float = Field(5.0, gt=0, description="seconds between agent heartbeats")
    stall_timeout: float = Field(60.0, gt=0, description="an agent silent this long while busy is stalled")
    log_level: str = Field("WARNING", description="level of the log lines `agent-etl run` prints to stderr")

    @property
    def run_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.home / 'runs.db'}"
