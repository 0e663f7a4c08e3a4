"""The circuit breakers of one run: one per connection (``defaults.breaker``)."""

from __future__ import annotations

from agent_etl.spec import Pipeline, Task


class Breakers:
    """A circuit breaker per connection of one run: after ``defaults.breaker.failures`` transient
    failures of tasks that use a connection, it is taken as down and the run's other tasks on it
    fail at once, naming the last error, instead of each retrying against it."""

    def __init__(self, pipeline: Pipeline):
        self.limit = pipeline.spec.defaults.breaker.failures
        self.uses = {t.name: t.options.get("connection") for t in pipeline.tasks
                     if isinstance(t.options.get("connection"), str)}
        self.count: dict[str, int] = {}
        self.last: dict[str, str] = {}

    def failed(self, task: str, error: str) -> None:
        conn = self.uses.get(task)
        if conn is not None:
            self.count[conn] = self.count.get(conn, 0) + 1
            self.last[conn] = error

    def down(self, tasks: list[Task]) -> str | None:
        for t in tasks:
            conn = self.uses.get(t.name)
            if conn is not None and self.count.get(conn, 0) >= self.limit:
                return (f"connection {conn!r} is taken as down after {self.count[conn]} failures (the last: "
                        f"{self.last[conn]}); {t.kind} {t.name!r} was not started. Fix the connection and resume "
                        "the run")
        return None
