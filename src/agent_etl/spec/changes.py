"""What changed in a pipeline file: a resume refuses a run whose spec changed since it started, and
names what changed."""

from __future__ import annotations

from agent_etl.spec.yamlsource import load_yaml


def changes(recorded: str, now: str) -> str:
    """What differs between two texts of a pipeline ('' if nothing but comments or layout): the
    sections and steps that were added, removed or changed, e.g. ``load.copy changed``."""
    if now == recorded:
        return ""
    try:
        old, new = load_yaml(recorded, "recorded").data, load_yaml(now, "now").data
    except Exception:  # noqa: BLE001 - a file that no longer parses has changed
        return "the file no longer parses"
    diffs: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for step in sorted(set(a) | set(b), key=str):
                if a.get(step) != b.get(step):
                    what = "added" if step not in a else "removed" if step not in b else "changed"
                    diffs.append(f"{key}.{step} {what}")
        elif isinstance(a, list) and isinstance(b, list):
            names = lambda xs: {x.get("name", i) if isinstance(x, dict) else i: x for i, x in enumerate(xs)}  # noqa: E731
            na, nb = names(a), names(b)
            for step in sorted(set(na) | set(nb), key=str):
                if na.get(step) != nb.get(step):
                    what = "added" if step not in na else "removed" if step not in nb else "changed"
                    diffs.append(f"{key}[{step}] {what}")
        else:
            diffs.append(f"{key} changed")
    return ", ".join(diffs)  # nothing: only comments or layout changed
