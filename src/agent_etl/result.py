"""What a run returns: ``RunResult`` with a ``TaskResult`` per task; and ``run()``, the sync entry
point for scripts."""

from __future__ import annotations

import asyncio
import html
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent_etl.exceptions import AgentETLError, QualityGateError, SpecError

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
        return [r for t in self.tasks.values() for r in t.details.get("quality", [])]

    def raise_for_status(self) -> RunResult:
        if self.exit_code == 0:
            return self
        cls = {2: SpecError, 3: QualityGateError}.get(self.exit_code, AgentETLError)
        raise cls(f"run {self.run_id} of {self.pipeline} {self.status}: {self.error}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = [asdict(t) for t in self.tasks.values()]
        d["rows_loaded"] = self.rows_loaded
        return d

    def __str__(self) -> str:
        lines = [f"run {self.run_id} {self.pipeline}: {self.status} in {self.duration:.2f}s"]
        for t in self.tasks.values():
            lines.append(f"  {t.name:<20} {t.kind:<9} {t.tool:<10} {t.status:<15} {t.rows:>10,} rows {t.duration:7.2f}s")
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.resume_command:
            lines.append(f"  resume with: {self.resume_command}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        e = html.escape
        color = "#2e7d32" if self.ok else "#c62828"
        rows = "".join(
            f"<tr><td>{e(t.name)}</td><td>{e(t.kind)}</td><td>{e(t.tool)}</td><td>{e(t.status)}</td>"
            f"<td style='text-align:right'>{t.rows:,}</td><td style='text-align:right'>{t.duration:.2f}s</td>"
            f"<td>{e(t.agent or '')}</td><td>{e(t.error or '')}</td></tr>"
            for t in self.tasks.values())
        return (f"<div><b>{e(self.pipeline)}</b> run <code>{e(self.run_id)}</code>: "
                f"<b style='color:{color}'>{e(self.status)}</b> in {self.duration:.2f}s, {self.rows_loaded:,} rows loaded"
                f"<table><thead><tr><th>task</th><th>kind</th><th>tool</th><th>status</th><th>rows</th>"
                f"<th>time</th><th>agent</th><th>error</th></tr></thead><tbody>{rows}</tbody></table></div>")


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
