"""The spec's rules for ``cache:`` on an extract: what cannot be cached, said when the spec is validated."""

from __future__ import annotations

from typing import Any

from agent_etl.exceptions import Problem


def check_cache(spec: Any, doc: Any, registry: Any) -> list[Problem]:
    from agent_etl.tools.base import Extractor
    from agent_etl.tools.registry import MissingExtra, UnknownTool

    problems: list[Problem] = []
    for name, step in spec.extract.items():
        if getattr(step, "cache", None) is None:
            continue
        line = doc.line(step._path + ("cache",))
        if step.options.get("incremental") is not None:
            problems.append(Problem(
                f"extract {name!r} is incremental and cannot be cached: each read starts after the last run's mark, so "
                "the same options mean other rows", line, "drop `cache` (or `incremental`, to re-read and cache it all)"))
            continue
        try:
            cls = registry.get("extractor", step.tool)
        except (UnknownTool, MissingExtra):
            continue  # said already
        stream = cls.acknowledge is not Extractor.acknowledge or getattr(cls, "commits_per_batch", None) is not None
        if stream:
            problems.append(Problem(
                f"extract {name!r} reads a stream ({step.tool}), which is not cached: each read takes new messages",
                line, "drop `cache`"))
    return problems
