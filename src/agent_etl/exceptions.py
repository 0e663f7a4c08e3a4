"""The one exception tree of agent-etl.

Every error a user can cause is an ``AgentETLError`` with a message that names the thing and a
fix; ``exit_code`` is what the CLI exits with.  ``TransientError`` marks what may be retried
(timeouts, dropped connections); everything else fails at once.

    AgentETLError (1)
    ├── SpecError (2)              the pipeline spec or a CLI argument is wrong
    ├── ToolError (1)              a tool failed while running (bad row, missing file, ...)
    │   └── TransientError (1)     the same call may succeed later; the coordinator retries it
    ├── UpstreamError (1)          a task could not run because a task it reads from failed
    │   └── SiblingFailed (1)      a load rolled back its commit because a sibling load failed
    ├── ResumeError (2)            a run cannot be resumed (unknown, spec changed, locked, ...)
    ├── QualityGateError (3)       a quality gate with on_failure: fail did not pass
    └── RunInterrupted (130)       the run was cancelled (Ctrl-C)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem found in a spec: what, where (YAML line) and how to fix it."""

    message: str
    line: int | None = None
    hint: str | None = None
    where: str | None = None  # dotted path inside the spec, e.g. "transform[1].input"

    def __str__(self) -> str:
        at = f"line {self.line}: " if self.line else ""
        loc = f"{self.where}: " if self.where else ""
        hint = f"\n    hint: {self.hint}" if self.hint else ""
        return f"{at}{loc}{self.message}{hint}"


class AgentETLError(Exception):
    exit_code = 1


class SpecError(AgentETLError):
    """The spec (or a usage of the CLI) is wrong; carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | Problem | str, source: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return head + str(self.problems[0])
        body = "\n".join(f"  - {p}" for p in self.problems)
        return f"{head}{len(self.problems)} problems\n{body}"


class ToolError(AgentETLError):
    """A tool failed at run time; the message names the tool, the thing and a fix."""


class TransientError(ToolError):
    """A failure that may go away if the same work is tried again."""


class UpstreamError(AgentETLError):
    """The input stream of a task ended because a task it depends on failed. ``root`` names the
    task whose own failure it was, however far upstream: dependants say "skipped: 'root' failed"
    and the root cause is told once, by the root."""

    def __init__(self, message: str, root: str | None = None):
        super().__init__(message)
        self.root = root


class SiblingFailed(UpstreamError):
    """A sibling load of the same input failed before the commit (``commit: together``): this load
    rolled back its commit unit so that the destinations do not disagree."""


class ResumeError(AgentETLError):
    """A run cannot be resumed or started: unknown id, spec changed, another process holds it."""

    exit_code = 2


class QualityGateError(AgentETLError):
    exit_code = 3


class RunInterrupted(AgentETLError):
    exit_code = 130
