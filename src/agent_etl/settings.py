"""Runtime settings: ``AGENT_ETL_*`` environment variables (or a ``.env`` file in the working
directory). Everything has an embedded default, so nothing needs configuring on one machine."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENT_ETL_", env_file=".env", extra="ignore", populate_by_name=True)

    home: Path | None = Field(None, description="state directory (run store, quarantine, spool files, run "
                              "locks); default .agent-etl next to the pipeline file")
    store_url: str | None = Field(None, description="SQLAlchemy URL of the run store (AGENT_ETL_STORE_URL, or "
                                  "AGENT_ETL_STORE); default sqlite in home",
                                  validation_alias=AliasChoices("AGENT_ETL_STORE_URL", "AGENT_ETL_STORE", "store_url"))
    heartbeat_interval: float = Field(5.0, gt=0, description="seconds between agent heartbeats")
    stall_timeout: float = Field(60.0, gt=0, description="an agent silent this long while busy is stalled")
    bus: str = Field("memory", description="event bus backend: memory (in-process) or nats://host:port "
                     "(NATS JetStream: the run's branches go to `agent-etl worker` processes)")
    memory: Literal["off", "numpy", "chroma"] = Field(
        "chroma", description="experience memory: chroma (persistent, in the state folder's memory/), numpy "
        "(in-process, kept while the coordinator lives) or off")
    fleet: Path | None = Field(None, description="fleet file: ETL agents with capabilities, limits and tags "
                               "(docs/memory.md); default configs/agents.yaml in the working directory, if any")
    cache_memory_mb: int = Field(256, ge=0, description="result cache (extracts with `cache:`): MiB of results a "
                                 "process keeps in memory, least recently used dropped first")
    cache_disk_mb: int = Field(4096, ge=0, description="result cache: MiB of results kept in the state folder's "
                               "cache/, least recently used dropped first")
    log_level: str = Field("WARNING", description="level of the log lines `agent-etl run` prints to stderr")
    log_format: Literal["text", "json"] = Field("text", description="log lines as text, or one JSON object "
                                                "per line (with run_id and task)")
    metrics_host: str = Field("127.0.0.1", description="address `--metrics-port` binds; 0.0.0.0 to be scraped "
                              "from other hosts")
    alert_webhook: str | None = Field(None, description="URL that gets every alert of every run as a JSON POST "
                                      "(besides a pipeline's own `alerts:`)")

    def home_for(self, base_dir: Path | None) -> Path:
        """The state folder: AGENT_ETL_HOME if set, else ``.agent-etl`` in ``base_dir`` (the pipeline
        file's folder), else in the working directory (commands that name no pipeline)."""
        if self.home is not None:
            return Path(self.home).resolve()
        return (Path(base_dir) if base_dir is not None else Path.cwd()).resolve() / ".agent-etl"

    def store_url_for(self, home: Path) -> str:
        return self.store_url or f"sqlite:///{Path(home) / 'runs.db'}"
