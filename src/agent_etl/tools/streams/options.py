"""The options every stream source and sink takes (DESIGN.md §2: ``url``, ``stream``, ``group``/``durable``,
``max_messages``, ``max_seconds``, ``mode``); each tool adds its own (a Redis group, a NATS subject)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from agent_etl.exceptions import SpecError
from agent_etl.tools.base import ToolConfig, ToolContext
from agent_etl.tools.extractors.file_config import ColumnTypes, arrow_type


class StreamOptions(ToolConfig):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: str | None = Field(None, description="the server, e.g. redis://127.0.0.1:6379/0 or nats://127.0.0.1:4222")
    connection: str | None = Field(None, description="a `connections:` entry whose url is the server (instead of url)")
    stream: str = Field(min_length=1, description="the stream's name")

    @model_validator(mode="after")
    def _one_server(self) -> StreamOptions:
        if (self.url is None) == (self.connection is None):
            raise ValueError("give the server as exactly one of `url` or `connection`")
        return self

    def server(self, ctx: ToolContext) -> str:
        """The server's URL (a secret may be in it: never put it in a message)."""
        if self.url is not None:
            return self.url
        url = ctx.connection(self.connection).get("url")
        if not url:
            raise SpecError(f"task {ctx.task!r}: connection {self.connection!r} has no url")
        return str(url)


class SourceOptions(StreamOptions):
    mode: Literal["bounded", "continuous"] = Field(
        "bounded", description="bounded: stop when caught up (or at a limit); continuous: until stopped")
    max_messages: int | None = Field(None, ge=1, description="bounded: stop after this many messages")
    max_seconds: float | None = Field(None, gt=0, description="bounded: stop after reading this long")
    idle_seconds: float = Field(1.0, gt=0, description="bounded: caught up after this long without a new message")
    batch_size: int = Field(10_000, ge=1, le=1_000_000, description="messages per micro-batch (Arrow batch)")
    target_latency: float = Field(1.0, gt=0, description="continuous: a micro-batch is handed on at most this many "
                                                         "seconds after its first message arrived")
    format: Literal["json", "fields"] = Field("json", description="json: each payload is one JSON object; fields: "
                                                                  "a Redis entry's field/value map is the record")
    column_types: ColumnTypes = Field(default_factory=dict, description="pinned Arrow type per column")
    other_columns: Literal["infer", "ignore", "error"] = Field(
        "infer", description="fields not in column_types: inferred, dropped, or an error")
    on_malformed: Literal["fail", "skip"] = Field("fail", description="a payload that is not a JSON object: fail "
                                                                      "naming the message, or skip it (counted)")
    id_column: str | None = Field(None, description="add a column with each message's id (Redis entry id, NATS "
                                                    "stream sequence): a key for merge loads")

    @model_validator(mode="after")
    def _bounded_only(self) -> SourceOptions:
        if self.mode == "continuous" and (self.max_messages or self.max_seconds):
            raise ValueError("max_messages and max_seconds bound a `mode: bounded` read; a continuous read runs "
                             "until it is stopped (SIGINT, SIGTERM)")
        if self.other_columns != "infer" and not self.column_types:
            raise ValueError(f"other_columns: {self.other_columns} needs column_types (the columns to keep)")
        return self

    def types(self) -> dict[str, Any]:
        return {k: arrow_type(v) for k, v in self.column_types.items()}


class SinkOptions(StreamOptions):
    batch_size: int = Field(10_000, ge=1, le=1_000_000, description="messages written per round trip")
