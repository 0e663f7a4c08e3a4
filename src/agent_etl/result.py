"""What a run returns: ``RunResult`` with a ``TaskResult`` per task; and ``run()``, the sync entry
point for scripts."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_etl.exceptions import AgentETLError, QualityGateError, SpecError

if TYPE_CHECKING:
    from agent_etl.summary import QualitySummary

STATUS_BY_EXIT = {0: "succeeded", 1: "failed", 2: "invalid", 3: "quality_failed", 130: "interrupted"}


@dataclass
class TaskResult:
    name: str
    kind: str
    tool: str
    status: str = "pending"  # pending | running | succeeded | failed | upstream_failed
    rows: int = 0
    batches: int = 0
    duration: float = 0.0
    agent: str | None = None
    reason: str | None = None
    attempts: int = 0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    target: str | None = None  # a load's path, table or URL (agent_etl.summary.landing)
    mode: str | None = None  # a load's mode: append, replace, merge

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.duration if self.duration else 0.0


@dataclass
class RunResult:
    run_id: str
    pipeline: str
    status: str
    exit_code: int
    duration: float
    tasks: dict[str, TaskResult]
    error: str | None = None
    resumed: bool = False  # a resumed run: loads that had committed before were not run again
    home: str | None = None  # the state folder the run is recorded in
    note: str | None = None  # e.g. why a resume did nothing

    @property
    def resume_command(self) -> str | None:
        """The command that resumes this run, for a run that did not finish."""
        if self.status not in ("failed", "interrupted", "quality_failed"):
            return None
        from agent_etl.slices import is_preview

        if is_preview(self.pipeline, [t.name for t in self.tasks.values() if t.kind == "load"]):
            return None  # a preview (run --limit) is run again, not resumed
        import shlex

        from agent_etl.settings import Settings

        default = Settings().home_for(None)
        where = "" if self.home is None or Path(self.home) == default else f" --home {shlex.quote(self.home)}"
        return f"agent-etl resume {self.run_id}{where}"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def rows_loaded(self) -> int:
        return sum(t.rows for t in self.tasks.values() if t.kind == "load" and t.status == "succeeded")

    @property
    def quality(self) -> list[dict[str, Any]]:
        """The gate reports of the run, one per quality group (``GateReport.to_dict()``)."""
        return [r for t in self.tasks.values() for r in t.details.get("quality", [])]

    @property
    def quality_summary(self) -> QualitySummary:
        """Per check: rows checked and failed, severity, action; rows quarantined and where. A dict,
        shown as HTML in a notebook; ``.to_pandas()`` gives its checks."""
        from agent_etl.summary import quality_summary

        return quality_summary(self.quality)

    @property
    def destinations(self) -> list[dict[str, Any]]:
        """Per load: its target and mode, status and the rows it received (not summed across loads)."""
        from agent_etl.summary import destinations

        return destinations([asdict(t) for t in self.tasks.values()])

    def to_pandas(self, of: str = "tasks") -> Any:
        """A pandas DataFrame of the run's ``tasks`` (one row per task), ``checks`` (one row per
        quality check: input, check, rows checked and failed, severity, action, status) or
        ``destinations`` (one row per load)."""
        import pandas as pd

        if of == "checks":
            return self.quality_summary.to_pandas()
        if of == "destinations":
            return pd.DataFrame(self.destinations, columns=["load", "tool", "target", "mode", "status", "rows"])
        if of != "tasks":
            raise ValueError(f"to_pandas(of={of!r}): of is 'tasks', 'checks' or 'destinations'")
        cols = ["name", "kind", "tool", "status", "rows", "batches", "duration", "rows_per_second", "attempts",
                "target", "mode", "agent", "error"]
        return pd.DataFrame([{c: getattr(t, c) for c in cols} for t in self.tasks.values()], columns=cols)

    def raise_for_status(self) -> RunResult:
        if self.exit_code == 0:
            return self
        cls = {2: SpecError, 3: QualityGateError}.get(self.exit_code, AgentETLError)
        raise cls(f"run {self.run_id} of {self.pipeline} {self.status}: {self.error}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = [asdict(t) for t in self.tasks.values()]
        d["rows_loaded"] = self.rows_loaded
        d["destinations"] = self.destinations
        d["quality"] = self.quality_summary
        return d

    def __str__(self) -> str:
        from agent_etl.summary import destination_lines, quality_lines

        lines = [f"run {self.run_id} {self.pipeline}: {self.status} in {self.duration:.2f}s"]
        for t in self.tasks.values():
            lines.append(f"  {t.name:<20} {t.kind:<9} {t.tool:<10} {t.status:<15} {t.rows:>10,} rows {t.duration:7.2f}s")
        if self.destinations:
            lines.append("loaded:")
            lines += destination_lines(self.destinations, "  ")
        lines += quality_lines(self.quality_summary)
        if self.error:
            lines.append(f"error: {self.error}")
        if self.resume_command:
            lines.append(f"resume with: {self.resume_command}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from agent_etl.notebook import result_html

        return result_html(self)

def run(pipeline: str | Path | Any, variables: dict[str, str] | None = None, **coordinator_options: Any) -> RunResult:
    """Run a pipeline to completion from synchronous code (a script, a test).

    Inside a running event loop (a notebook cell) use ``await AgentCoordinator().run(...)``
    instead; called there, this runs the pipeline on a private loop in a helper thread.
    """
    from agent_etl.agents.coordinator import AgentCoordinator

    async def main() -> RunResult:
        async with AgentCoordinator(**coordinator_options) as coordinator:
            return await coordinator.run(pipeline, variables=variables)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(main())
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, name="agent-etl-run")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
