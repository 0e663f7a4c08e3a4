"""The ``anomaly`` check: this run's data profile against the profiles of earlier runs.

A dataset check with a verdict at the end of the stream. It reads the profile the quality group
builds anyway (``agent_etl.quality.profile``; the group must not say ``profile: false``) and the
profiles of the same input in earlier runs of the same pipeline that succeeded, from the run
store, and asks ``agent_etl.quality.anomaly.Detector`` what is out of line::

    - anomaly:
        metrics: [row_count, null_rate, distinct, mean, quantiles, schema]   # default: all
        sensitivity: medium        # low | medium | high, or the z threshold as a number
        min_history: 7             # earlier runs needed before a verdict ("learning" until then)
        seasonality: weekly        # weekly | none
        window: 60                 # earlier runs compared with
        columns: [amount, status]  # default: every column
        on_anomaly: warn           # warn (default): report; fail: fail the gate (exit 3)

The anomalies found are stored with the run's profile (``agent-etl report`` shows them), published
as an ``AnomalyDetected`` event, and, with ``on_anomaly: fail``, fail the gate with a message that
lists each metric, its value and the expected range. A run that fails is left out of later runs'
history; to accept a change for good (a new column, a new normal volume), run once with
``on_anomaly: warn``. See docs/quality.md, "Anomaly detection".
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from pydantic import Field, field_validator

from agent_etl.tools.validators.base import Check, CheckConfig

log = logging.getLogger("agent_etl.quality")

Metric = Literal["row_count", "null_rate", "distinct", "mean", "quantiles", "schema"]
PROFILE_QUANTILES = ("0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99")
SHOWN = 5  # anomalies listed in the gate's message


class Anomaly(Check):
    """Flag metrics of this run that are out of line with the input's history."""

    scope = "dataset"
    whole_data = True
    wants_profile = True  # the gate hands over its profile before ``finish``

    class Config(CheckConfig):
        """Anomaly detection against history: ``anomaly: {metrics: [row_count, null_rate], on_anomaly: fail}``."""

        metrics: list[Metric] = Field(default_factory=lambda: ["row_count", "null_rate", "distinct", "mean",
                                                               "quantiles", "schema"], min_length=1,
                                      description="what is compared with earlier runs")
        sensitivity: Literal["low", "medium", "high"] | float = Field(
            "medium", description="low, medium or high, or the z threshold as a number")
        min_history: int = Field(
            7, ge=2, le=1000, description="earlier runs needed before a verdict (learning until then)")
        seasonality: Literal["weekly", "none"] = Field(
            "weekly", description="weekly: compare with the same weekday; none")
        window: int = Field(60, ge=2, le=1000, description="earlier runs compared with")
        columns: list[str] | None = Field(
            None, min_length=1, description="the columns profiled (default: every column)")
        quantiles: list[str] | None = Field(None, min_length=1, description="default 0.05 0.25 0.5 0.75 0.95")
        on_anomaly: Literal["warn", "fail"] = Field("warn", description="warn: report; fail: fail the gate")

        @field_validator("sensitivity")
        @classmethod
        def _positive(cls, v: Any) -> Any:
            if isinstance(v, float) and not v > 0:
                raise ValueError("a numeric sensitivity is a z threshold and must be above 0 (medium is 3.5)")
            return v

        @field_validator("quantiles", mode="before")
        @classmethod
        def _known(cls, v: Any) -> Any:
            if isinstance(v, list):
                v = [str(q) for q in v]
                unknown = [q for q in v if q not in PROFILE_QUANTILES]
                if unknown:
                    raise ValueError(f"profiles hold the quantiles {', '.join(PROFILE_QUANTILES)}; "
                                     f"not {', '.join(unknown)}")
            return v

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.profile: dict[str, Any] | None = None
        self.verdict = None  # agent_etl.quality.anomaly.Verdict, after finish
        self.anomalies: list[dict[str, Any]] | None = None  # None: not judged (no profile or no store)
        self.note: str | None = None  # shown in the report when the check passes ("learning (3 of 7 runs)")

    @property
    def severity(self) -> str:
        return "warn" if self.config.on_anomaly == "warn" or self.config.severity == "warn" else "error"

    def columns(self) -> list[str]:
        return list(self.config.columns or [])

    def detector(self):
        from agent_etl.quality.anomaly import Detector
        from agent_etl.quality.metrics import QUANTILES

        c = self.config
        return Detector(metrics=tuple(c.metrics), sensitivity=c.sensitivity, min_history=c.min_history,
                        seasonality=c.seasonality, window=c.window,
                        columns=tuple(c.columns) if c.columns else None,
                        quantiles=tuple(c.quantiles) if c.quantiles else QUANTILES,
                        severity="warn" if self.severity == "warn" else "fail")

    def profiled(self, profile: dict[str, Any] | None) -> None:
        """The stream's profile, from the gate, before ``finish``."""
        self.profile = profile

    def finish(self) -> str | None:
        if self.profile is None:
            self.note = "not judged: the group made no profile"
            return None
        history, times = self._history()
        if history is None:
            self.note = "not judged: no run store to hold the history"
            return None
        verdict = self.detector().detect(self.ctx.task, history, self.profile, times, time.time())
        self.verdict, self.anomalies = verdict, verdict.anomalies
        if not verdict.anomalies:
            self.note = verdict.status if verdict.learning else f"no anomaly against {verdict.history} earlier runs"
            return None
        shown = [a["message"].removeprefix(f"{self.ctx.task}: ") for a in verdict.anomalies[:SHOWN]]
        more = len(verdict.anomalies) - len(shown)
        n = len(verdict.anomalies)
        text = f"{n} anomal{'y' if n == 1 else 'ies'} against history: " + "; ".join(shown)
        return text + (f"; and {more} more" if more > 0 else "")

    def _history(self) -> tuple[list[dict[str, Any]] | None, list[float] | None]:
        rc = self.ctx.run
        if rc is None or rc.store is None:  # the check used outside a run (a test of the gate alone)
            return None, None
        rows = rc.store.profile_history(rc.pipeline.name, self.ctx.task, limit=self.config.window,
                                        before=self.ctx.run_id, times=True)
        return [p for _, p in rows], [t for t, _ in rows]
