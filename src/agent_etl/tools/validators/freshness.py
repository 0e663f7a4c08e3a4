"""``freshness``: the newest timestamp of a column must be recent, compared with the run's start.

``freshness: {column: updated_at, max_age: "2 hours"}`` fails the dataset when the largest value
of ``updated_at`` over the whole stream is older than ``max_age`` at the time the gate opened
(the start of the gated step). ``max_age`` is a number of seconds or text such as ``"90s"``,
``"30 minutes"``, ``"2 hours"``, ``"1 day 6 hours"``, ``"1w"``. Timestamps without a time zone are
read as UTC; a date column counts from the start of its day (UTC). A stream without any value
fails: nothing shows it is fresh.
"""

from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from agent_etl.exceptions import Problem
from agent_etl.tools.validators.base import Check, CheckConfig

_UNITS = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "mins": 60, "minute": 60,
          "minutes": 60, "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400,
          "days": 86400, "w": 604800, "week": 604800, "weeks": 604800}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*,?", re.IGNORECASE)


def parse_age(value: str | float) -> dt.timedelta:
    """``"2 hours"``, ``"1 day 6 hours"``, ``"90s"`` or a number of seconds, as a timedelta."""
    if isinstance(value, bool):
        raise ValueError(f"max_age {value!r} is not a duration")  # noqa: TRY004 (pydantic wants ValueError)
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text, seconds, pos = value.strip(), 0.0, 0
        for m in _PART.finditer(text):
            if m.start() != pos or m.group(2).lower() not in _UNITS:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2).lower()]
            pos = m.end()
        if not text or pos != len(text):
            raise ValueError(f"max_age {value!r} is not a duration; write e.g. \"30 minutes\", \"2 hours\", "
                             "\"1 day 6 hours\" or a number of seconds")
    if seconds <= 0:
        raise ValueError(f"max_age {value!r} must be longer than zero")
    return dt.timedelta(seconds=seconds)


def _text(age: dt.timedelta) -> str:
    seconds = int(age.total_seconds())
    days, rest = divmod(abs(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")) if n]
    return " ".join(parts[:2]) or "0 s"


class Freshness(Check):
    """Fail the dataset when the newest timestamp of a column is older than ``max_age``."""

    scope = "dataset"
    whole_data = True

    class Config(CheckConfig):
        """How old the newest value may be: ``freshness: {column: updated_at, max_age: "2 hours"}``."""

        column: str = Field(description="the timestamp column")
        max_age: str | float = Field(description="how old the newest value may be: a duration ('2 hours') or seconds")

        @field_validator("max_age")
        @classmethod
        def _duration(cls, value: str | float) -> str | float:
            parse_age(value)
            return value

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.now = dt.datetime.now(dt.UTC)  # the run's clock: the gate opens as the step starts
        self.max_age = parse_age(config.max_age)
        self.newest: dt.datetime | None = None

    def columns(self) -> list[str]:
        return [self.config.column]

    def bind(self, schema: pa.Schema) -> list[Problem]:
        t = schema.field(self.config.column).type
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return []
        return [Problem(f"column {self.config.column!r} is {t}, not a timestamp or date",
                        hint="cast it to a timestamp first, e.g. cast: {columns: {col: \"timestamp[us, tz=UTC]\"}}")]

    def observe(self, batch: pa.RecordBatch) -> None:
        value = pc.max(batch.column(self.config.column)).as_py()
        if value is None:
            return
        if not isinstance(value, dt.datetime):  # a date: the start of its day
            value = dt.datetime.combine(value, dt.time(0))
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        if self.newest is None or value > self.newest:
            self.newest = value

    def finish(self) -> str | None:
        if self.newest is None:
            return f"column {self.config.column!r} has no values, so nothing shows the data is fresh"
        age = self.now - self.newest
        if age > self.max_age:
            return (f"the newest {self.config.column} is {self.newest.isoformat()}, {_text(age)} old at the run's "
                    f"start, older than max_age {self.config.max_age}")
        return None
