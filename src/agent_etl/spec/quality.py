"""Spec validation of the quality parts: the checks of a group or a ``validate`` step, quarantine
sinks, and the inputs that referential checks read in full before the gated step starts."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agent_etl.exceptions import Problem
from agent_etl.spec.problems import pydantic_problems, validate_options

if TYPE_CHECKING:
    from agent_etl.spec import Spec, TransformStep
    from agent_etl.spec.yamlsource import Document


def check_groups(spec: Spec, doc: Document, registry) -> list[Problem]:
    problems: list[Problem] = []
    for group in spec.quality:
        problems.extend(check_entries(group.checks, group._path + ("checks",), doc, registry))
        problems.extend(check_quarantine(group.quarantine, group.on_failure, group._path, doc, registry, spec,
                                         f"quality group on {group.input!r}"))
    return problems


def check_validate_step(step: TransformStep, path: tuple, doc: Document, registry, spec: Spec) -> list[Problem]:
    """A ``validate`` step is a quality group of its own: its checks, quarantine and inputs."""
    problems: list[Problem] = []
    opts = step.options
    if isinstance(opts.get("checks"), list):
        problems.extend(check_entries(opts["checks"], path + ("checks",), doc, registry))
    problems.extend(check_quarantine(opts.get("quarantine"), opts.get("on_failure", "fail"), path, doc,
                                      registry, spec, f"transform {step.name!r}"))
    refs = group_refs(opts.get("checks"))
    data = [i for i in step.inputs if i not in refs]
    for ref in refs:
        if ref not in step.inputs:
            problems.append(Problem(f"transform {step.name!r}: a referential check reads {ref!r}, which is "
                                    "not one of its inputs", doc.line(path + ("input",)),
                                    f"add it: input: [{', '.join([*step.inputs, ref])}]"))
    if len(data) != 1:
        problems.append(Problem(f"transform {step.name!r} ({step.tool}) validates one input; besides the "
                                f"inputs its referential checks read it has {len(data)}: {', '.join(data)}",
                                doc.line(path + ("input",)), "list the validated input and the referenced ones"))
    return problems


def check_entries(checks: list[Any], path: tuple, doc: Document, registry) -> list[Problem]:
    """Each check of a quality group (or a validate step): known name, valid options."""
    from agent_etl.tools.registry import UnknownTool

    problems: list[Problem] = []
    for j, check in enumerate(checks):
        cpath = path + (j,)
        if not isinstance(check, dict) or len(check) != 1:
            keys = f"{len(check)} keys: {', '.join(check)}" if isinstance(check, dict) else f"{check!r}"
            problems.append(Problem("each check is a mapping with one key, e.g. `- not_null: [id]`",
                                    doc.line(cpath), f"this one has {keys}"))
            continue
        (cname, value), = check.items()
        try:
            cls = registry.get("validator", cname)
        except UnknownTool as e:
            problems.append(Problem(str(e).replace("validator", "quality check"), doc.line(cpath), e.hint))
            continue
        try:
            cls.parse(value)
        except ValidationError as e:
            problems.extend(pydantic_problems(e, doc, cpath + (cname,), f"check {cname}", cls.Config))
    return problems


def check_quarantine(value: Any, on_failure: Any, path: tuple, doc: Document, registry, spec: Spec,
                      who: str) -> list[Problem]:
    """``quarantine: {tool: <loader>, ...options}``: a known loader with valid options."""
    from agent_etl.tools.registry import MissingExtra, UnknownTool

    if value is None:
        return []
    qpath = path + ("quarantine",)
    if on_failure != "quarantine":
        return [Problem(f"{who}: quarantine: is set but on_failure is {on_failure!r}", doc.line(qpath),
                        "set on_failure: quarantine, or remove quarantine:")]
    if not isinstance(value, dict) or not isinstance(value.get("tool"), str):
        return [Problem(f"{who}: quarantine: needs tool: (a loader) and that loader's options", doc.line(qpath),
                        "e.g. quarantine: {tool: sqlite, connection: wh, table: bad_rows} or {tool: parquet, path: ...}")]
    try:
        cls = registry.get("loader", value["tool"])
    except UnknownTool as e:
        return [Problem(f"{who}: quarantine: {e}", doc.line(qpath + ("tool",)), e.hint)]
    except MissingExtra as e:
        return [Problem(f"{who}: quarantine: {e}", doc.line(qpath + ("tool",)))]
    options = {k: v for k, v in value.items() if k != "tool"}
    problems = validate_options(cls, options, qpath, doc, f"{who} quarantine")
    conn = options.get("connection")
    if isinstance(conn, str) and conn not in spec.connections:
        known = ", ".join(sorted(spec.connections)) or "none"
        problems.append(Problem(f"{who}: quarantine uses connection {conn!r}, which is not defined",
                                doc.line(qpath + ("connection",)), f"define it under connections: (defined: {known})"))
    return problems


def group_refs(checks: Any) -> list[str]:
    """Steps that checks read in full (a check option named ``input``, as ``referential`` has)."""
    refs: list[str] = []
    for check in checks if isinstance(checks, list) else []:
        for value in check.values() if isinstance(check, dict) else []:
            ref = value.get("input") if isinstance(value, dict) else None
            if isinstance(ref, str) and ref and ref not in refs:
                refs.append(ref)
    return refs


def check_references(spec: Spec, doc: Document, producers: set[str]) -> list[Problem]:
    """A referenced step must exist, and must not wait (directly or not) on the step it gates."""
    reads: dict[str, list[str]] = {t.name: list(t.inputs) for t in spec.transform}
    for g in spec.quality:
        reads.setdefault(g.input, [])
        reads[g.input] = reads[g.input] + group_refs(g.checks)

    def upstream(name: str) -> set[str]:
        seen, stack = set(), [name]
        while stack:
            for m in reads.get(stack.pop(), []):
                if m not in seen:
                    seen.add(m)
                    stack.append(m)
        return seen

    problems = []
    for g in spec.quality:
        data = next((t.inputs for t in spec.transform if t.name == g.input), [])
        for j, check in enumerate(g.checks):
            for ref in group_refs([check]):
                where = doc.line(g._path + ("checks", j))
                if ref not in producers:
                    close = difflib.get_close_matches(ref, sorted(producers), n=1)
                    hint = f"did you mean {close[0]!r}?" if close else f"defined steps: {', '.join(sorted(producers))}"
                    problems.append(Problem(f"quality group on {g.input!r} reads {ref!r}, which is not an extract "
                                            "or transform step", where, hint))
                elif ref in data:
                    problems.append(Problem(f"quality group on {g.input!r} reads {ref!r}, which {g.input!r} also "
                                            "reads as its input", where, f"check the reference on the step upstream "
                                            f"of {g.input!r} instead, or join in SQL and check not_null"))
                elif ref == g.input or g.input in upstream(ref):
                    problems.append(Problem(f"quality group on {g.input!r} reads {ref!r}, which depends on "
                                            f"{g.input!r}: neither could start", where,
                                            "reference a step that does not read the gated one"))
                elif shared := sorted((upstream(ref) | {ref}) & {u for i in data for u in upstream(i) | {i}}):
                    # the reference is read in full before the gated step reads anything: a producer
                    # feeding both would wait on the gated step's full queue, and the reference never ends
                    problems.append(Problem(f"quality group on {g.input!r} reads {ref!r}, and both are fed by "
                                            f"{', '.join(map(repr, shared))}, so reading {ref!r} first would stall",
                                            where, "reference a step that is not fed by the gated step's inputs, "
                                            "or check the key with a sql join"))
    return problems
