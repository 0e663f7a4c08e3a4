"""The pipeline spec: pydantic models of the YAML file, and the checks that span the whole file.

``Pipeline.from_yaml(path)`` reads, interpolates and validates a pipeline and raises one
``SpecError`` listing every problem (malformed YAML, unknown keys, unknown tools, bad tool options,
dangling inputs, duplicate names, cycles), each with its YAML line and a hint.
"""

from __future__ import annotations

import difflib
import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from agent_etl.exceptions import Problem, SpecError
from agent_etl.redaction import scrub
from agent_etl.spec.cache import check_cache
from agent_etl.spec.problems import pydantic_problems, validate_options
from agent_etl.spec.quality import check_groups, check_references, check_validate_step, group_refs
from agent_etl.spec.yamlsource import Document, interpolate, load_yaml


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|second|m|min|minute|h|hour|d|day)?s?\s*$", re.I)
_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
            "d": 86400, "day": 86400}


def seconds(value: float | str) -> float:
    """A duration: a number of seconds, or text such as '90s', '10 min', '2h'."""
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration; write seconds, or e.g. '30s', '10 min', '2h'")
    return float(m.group(1)) * _SECONDS[(m.group(2) or "s").lower()]


class Retries(_Model):
    max_attempts: int = Field(3, ge=1, le=100)
    backoff: Literal["exponential", "fixed"] = "exponential"
    initial_delay: float = Field(0.5, ge=0)
    max_delay: float = Field(30.0, ge=0)
    # spread the waits of tasks that failed together (a database restart): each wait is drawn
    # between half and all of the backoff ("equal jitter"), so retries do not arrive as one wave
    jitter: bool = True

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try number ``attempt + 1`` (``attempt`` counts from 1)."""
        if self.backoff == "fixed":
            base = self.initial_delay
        else:
            base = min(self.max_delay, self.initial_delay * 2 ** (attempt - 1))
        return base / 2 + random.uniform(0, base / 2) if self.jitter else base


class Breaker(_Model):
    """A circuit breaker per connection: after ``failures`` transient failures of tasks using one
    connection, the rest of the run's tasks on it fail at once instead of retrying against a
    database that is down."""

    failures: int = Field(3, ge=1)


class CommitEvery(_Model):
    """A load commits a unit every ``rows`` rows or ``seconds`` seconds, whichever comes first."""

    rows: int | None = Field(None, gt=0)
    seconds: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some(self) -> CommitEvery:
        if self.rows is None and self.seconds is None:
            raise ValueError("give `rows`, `seconds` or both, e.g. commit_every: {rows: 1000000}")
        return self


class Defaults(_Model):
    batch_size: int = Field(100_000, gt=0)
    retries: Retries = Retries()
    concurrency: int = Field(4, ge=1, description="independent branches run at once")
    queue_size: int = Field(4, ge=1, description="batches buffered between two steps")
    # append and merge loads commit in units (each with its checkpoint, so a resumed run goes on
    # after the last one); None: one commit at the end
    commit_every: CommitEvery | None = None
    # sibling loads of one input: prepare, then all commit, or none (together); or each on its own
    commit: Literal["together", "each"] = "together"
    # a second run of the same pipeline while one runs: fail at once, or wait for it to end
    concurrent_runs: Literal["fail", "wait"] = "fail"
    timeout: float | str | None = None  # of every task, unless the step sets its own
    breaker: Breaker = Breaker()
    # a running task with no progress (no batch, no commit) this long, while none of its inputs is
    # still running, is stalled: its attempt fails transiently and is retried. None: never
    stall_timeout: float | str | None = None

    @field_validator("timeout", "stall_timeout")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return None if value is None else _positive(value)


def _positive(value: float | str) -> float:
    s = seconds(value)
    if s <= 0:
        raise ValueError("a timeout must be more than 0 seconds")
    return s


ALERTS = ("run_failed", "quality_failed", "anomaly", "stall")


class Alert(_Model):
    """A webhook that gets a JSON POST on the events in ``on`` (agent_etl.observe.alerts)."""

    webhook: str = Field(pattern=r"^https?://", description="URL; a token in it belongs in ${VAR}")
    on: list[Literal["run_failed", "quality_failed", "anomaly", "stall"]] = Field(
        default_factory=lambda: list(ALERTS), description="the events that send it (default: all four)")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP headers to send, e.g. Authorization: "
                                    "Bearer ${TOKEN}")
    timeout: float = Field(5.0, gt=0, description="seconds per attempt")
    attempts: int = Field(3, ge=1, le=10, description="tries per alert (pauses 0.5 s, 1 s, 2 s, ...) before it is "
                          "logged and dropped; an alert never fails a run")


class Connection(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str


class Step(BaseModel):
    """One extract, transform or load step; every key but the common ones is a tool option."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    tool: str
    # the task fails (transiently: it is retried) if it runs longer; seconds or '10 min'
    timeout: float | str | None = None
    # its branch goes only to an agent having all of them: a fleet agent's tags (configs/agents.yaml), or in a run
    # over workers a worker's (worker --tags)
    tags: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]] = Field(default_factory=list, max_length=5)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return None if value is None else _positive(value)
    _line: int | None = PrivateAttr(None)
    _path: tuple = PrivateAttr(())  # where the step is in the YAML tree

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Cache(_Model):
    """``cache: {ttl: 10m}`` on an extract: its result is kept (memory and the state folder) and a
    later read of the same source and options within ``ttl`` uses it (agent_etl.cache)."""

    ttl: float | str = Field("1h", validate_default=True)  # seconds once validated

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: Any) -> Any:
        return _positive(value)


class ExtractStep(Step):
    cache: Cache | None = None

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_switch(cls, v: Any) -> Any:
        # `cache: true` keeps the default ttl; `cache: false` is no cache
        return ({} if v else None) if isinstance(v, bool) else v


class TransformStep(Step):
    input: str | list[str]

    @property
    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class LoadStep(Step):
    input: str
    commit_every: CommitEvery | None = None  # overrides defaults.commit_every for this load

    @property
    def inputs(self) -> list[str]:
        return [self.input]


class ProfileOptions(_Model):
    """``profile:`` of a quality group: ``true`` (default), ``false``, or which columns to profile
    and, per column, an outlier method."""

    enabled: bool = True
    columns: list[str] | None = Field(None, min_length=1)
    outliers: dict[str, Literal["iqr", "zscore", "mad", "auto"]] = {}


class QualityGroup(_Model):
    input: str
    checks: list[dict[str, Any]] = Field(min_length=1)
    on_failure: Literal["fail", "warn", "quarantine"] = "fail"
    # where quarantined rows go: {tool: <loader>, <its options>}; default a Parquet file (quality.quarantine)
    quarantine: dict[str, Any] | None = None
    # a streaming data profile of the input, stored per run (agent_etl.quality.profile)
    profile: ProfileOptions = ProfileOptions()

    @field_validator("profile", mode="before")
    @classmethod
    def _profile_switch(cls, v: Any) -> Any:
        # `profile: true/false` is the switch alone; one model keeps error messages to the point
        return {"enabled": v} if isinstance(v, bool) else v
    _line: int | None = PrivateAttr(None)
    _path: tuple = PrivateAttr(())
    _check_lines: list[int | None] = PrivateAttr(default_factory=list)


class Spec(_Model):
    version: Literal[1]
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    description: str = ""
    defaults: Defaults = Defaults()
    connections: dict[str, Connection] = {}
    extract: dict[str, ExtractStep] = Field(min_length=1)
    transform: list[TransformStep] = []
    quality: list[QualityGroup] = []
    load: dict[str, LoadStep] = {}
    # variables whose values are secrets (masked everywhere, never stored), beyond those named like
    # one (PGPASSWORD, API_TOKEN) and those used where a secret goes (agent_etl.redaction)
    secrets: list[str] = []
    alerts: list[Alert] = []

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for section in ("extract", "load"):
                steps = data.get(section)
                if isinstance(steps, dict):
                    data[section] = {k: ({"name": k, **v} if isinstance(v, dict) else v) for k, v in steps.items()}
        return data


@dataclass
class Task:
    """One node of the task DAG: an extract, transform or load step with its quality gates."""

    name: str
    kind: Literal["extract", "transform", "load"]
    tool: str
    inputs: list[str]
    options: dict[str, Any]
    line: int | None = None
    gates: list[QualityGroup] = field(default_factory=list)
    # inputs the gates read in full before the first batch (referential checks); also in ``inputs``
    refs: list[str] = field(default_factory=list)
    timeout: float | None = None  # seconds (the step's, else defaults.timeout)
    cache: Any = None  # an extract's result cache (spec.Cache), or None
    # a copy of a task of a partitioned source's branch (``name#i``, agents.partition_plan): the
    # step it copies, and the copy's range of the source (``ToolContext.partition``)
    copy_of: str | None = None
    part: dict[str, Any] | None = None
    tags: list[str] = field(default_factory=list)  # a worker must advertise all of them to run it

    @property
    def data_inputs(self) -> list[str]:
        """The inputs the task's tool reads (``inputs`` without the gates' references)."""
        return [i for i in self.inputs if i not in self.refs]

    @property
    def family(self) -> str:
        return {"extract": "extractor", "transform": "transform", "load": "loader"}[self.kind]


class Pipeline:
    """A validated pipeline: the spec, its task DAG, and where it came from."""

    def __init__(self, spec: Spec, doc: Document, base_dir: Path, path: Path | None = None):
        self.spec = spec
        self.doc = doc
        self.base_dir = base_dir
        self.path = path
        self.variables: dict[str, str] = {}  # the --var values it was read with
        self.tasks: list[Task] = _plan(spec)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def secrets(self) -> set[str]:
        return self.doc.secrets

    @property
    def fingerprint(self) -> str:
        """Hash of the spec as written (before interpolation, so secrets never reach it)."""
        return hashlib.sha256(self.doc.source_text.encode()).hexdigest()[:16]

    @classmethod
    def from_yaml(cls, path: str | Path, variables: dict[str, str] | None = None, registry=None) -> Pipeline:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise SpecError(Problem(f"pipeline file {path} not found", hint="check the path")) from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
            raise SpecError(Problem(f"cannot read pipeline file {path}: {e}")) from None
        return cls.from_text(text, source=str(path), base_dir=path.resolve().parent, variables=variables,
                             registry=registry, path=path)

    @classmethod
    def from_text(cls, text: str, *, source: str = "<string>", base_dir: str | Path = ".",
                  variables: dict[str, str] | None = None, registry=None, path: Path | None = None) -> Pipeline:
        base_dir = Path(base_dir).resolve()
        doc = load_yaml(text, source)
        problems = interpolate(doc, variables, base_dir)
        spec = None
        try:
            spec = Spec.model_validate(doc.data)
        except ValidationError as e:
            problems.extend(pydantic_problems(e, doc, model=Spec))
            spec = _partial(doc.data)  # so graph and tool problems are reported in the same pass
        if spec is not None:
            _attach_lines(spec, doc)
            problems.extend(_check_graph(spec, doc))
            problems.extend(_check_tools(spec, doc, registry))
        if problems:  # a value shown in a problem may hold a secret filled in above
            raise scrub(SpecError(_dedupe(problems), source), doc.secrets)
        pipeline = cls(spec, doc, base_dir, path)
        pipeline.variables = dict(variables or {})
        return pipeline

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def branches(self) -> list[list[Task]]:
        """Weakly connected groups of tasks: each streams as one unit; groups are independent."""
        parent = {t.name: t.name for t in self.tasks}

        def root(n: str) -> str:
            while parent[n] != n:
                parent[n] = parent[parent[n]]
                n = parent[n]
            return n

        for t in self.tasks:
            for i in t.inputs:
                parent[root(i)] = root(t.name)
        groups: dict[str, list[Task]] = {}
        for t in self.tasks:
            groups.setdefault(root(t.name), []).append(t)
        return list(groups.values())


# ---------------------------------------------------------------------------------------------
# checks that span the whole file


def _attach_lines(spec: Spec, doc: Document) -> None:
    for section, steps in (("extract", spec.extract.items()), ("transform", enumerate(spec.transform)),
                           ("load", spec.load.items()), ("quality", enumerate(spec.quality))):
        for key, step in steps:
            step._path = step._path or (section, key)
            step._line = doc.line(step._path)
    for group in spec.quality:
        group._check_lines = [doc.line(group._path + ("checks", j)) for j in range(len(group.checks))]


def _steps(spec: Spec) -> list[tuple[str, tuple, Step]]:
    steps: list[Step] = [*spec.extract.values(), *spec.transform, *spec.load.values()]
    return [(s._path[0], s._path, s) for s in steps]


def _partial(data: Any) -> Spec | None:
    """The valid parts of an invalid spec, for the checks that span the file."""
    if not isinstance(data, dict):
        return None

    def valid(model: type[BaseModel], value: Any, path: tuple) -> Any:
        try:
            obj = model.model_validate(value)
        except ValidationError:
            checks = value.get("checks") if isinstance(value, dict) else None
            if issubclass(model, Step):
                obj = _named_step(model, value)  # so its name is known: no "reads 'x', which is not defined"
                if obj is None:
                    return None
            elif model is not QualityGroup or not isinstance(checks, list):
                return None
            else:  # an invalid group still has checks worth validating
                obj = QualityGroup.model_construct(input=str(value.get("input", "")), on_failure="fail",
                                                   checks=[c for c in checks if isinstance(c, dict)])
        obj._path = path
        return obj

    def section(name: str, model: type[BaseModel], keyed: bool) -> Any:
        raw = data.get(name)
        if keyed and isinstance(raw, dict):
            items = {k: valid(model, {"name": k, **v} if isinstance(v, dict) else v, (name, k)) for k, v in raw.items()}
            return {k: v for k, v in items.items() if v is not None}
        if not keyed and isinstance(raw, list):
            return [v for i, x in enumerate(raw) if (v := valid(model, x, (name, i))) is not None]
        return {} if keyed else []

    connections = data.get("connections")
    return Spec.model_construct(
        version=1, name=str(data.get("name", "")), description="", defaults=Defaults(),
        connections={k: Connection.model_construct(url="") for k in connections} if isinstance(connections, dict) else {},
        extract=section("extract", ExtractStep, True), transform=section("transform", TransformStep, False),
        quality=section("quality", QualityGroup, False), load=section("load", LoadStep, True))


def _named_step(model: type[Step], value: Any) -> Step | None:
    """An invalid step whose name, tool and inputs are sound, for the checks that span the file
    (its own problems are reported already)."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not isinstance(value.get("tool"), str):
        return None
    if "input" in model.model_fields:
        given = value.get("input")
        if not (isinstance(given, str) or (isinstance(given, list) and given and all(isinstance(i, str) for i in given))):
            return None
    fields = {k: v for k, v in value.items() if k in model.model_fields and k != "timeout"}
    extra = {k: v for k, v in value.items() if k not in model.model_fields}
    step = model.model_construct(**fields)
    step.__pydantic_extra__ = extra
    return step


def _dedupe(problems: list[Problem]) -> list[Problem]:
    out: list[Problem] = []
    for p in problems:
        if p not in out:
            out.append(p)
    return sorted(out, key=lambda p: (p.line or 0))


def _check_graph(spec: Spec, doc: Document) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for kind, path, step in _steps(spec):
        if step.name in seen:
            problems.append(Problem(f"name {step.name!r} is used twice ({seen[step.name]} and {kind})",
                                    doc.line(path), "give every extract, transform and load step its own name"))
        else:
            seen[step.name] = kind
    producers = set(spec.extract) | {t.name for t in spec.transform}

    def dangling(ref: str, path: tuple, who: str) -> None:
        if not ref or ref in producers:
            return
        if ref in spec.load:
            problems.append(Problem(f"{who} reads {ref!r}, which is a load step", doc.line(path),
                                    "inputs must be extract or transform steps"))
            return
        close = difflib.get_close_matches(ref, sorted(producers), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"defined steps: {', '.join(sorted(producers))}"
        problems.append(Problem(f"{who} reads {ref!r}, which is not defined", doc.line(path), hint))

    for t in spec.transform:
        for j, ref in enumerate(t.inputs):
            path = t._path + ("input",) + ((j,) if isinstance(t.input, list) else ())
            dangling(ref, path, f"transform {t.name!r}")
    for n, step in spec.load.items():
        dangling(step.input, step._path + ("input",), f"load {n!r}")
    for g in spec.quality:
        dangling(g.input, g._path + ("input",), f"quality group {g._path[1] + 1}")
    problems.extend(check_references(spec, doc, producers))
    for t in spec.transform:
        if t.name in t.inputs:
            problems.append(Problem(f"transform {t.name!r} reads itself", doc.line(t._path),
                                    "a step cannot be its own input"))
    cycle = _find_cycle({t.name: [x for x in t.inputs if x != t.name] for t in spec.transform})
    if cycle:
        first = next(t for t in spec.transform if t.name == cycle[0])
        problems.append(Problem("cycle: " + " -> ".join(cycle + [cycle[0]]), doc.line(first._path),
                                "the steps of a pipeline must form a DAG; remove one of these input edges"))
    return problems


def _find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in edges.get(n, []):
            if m not in edges:
                continue
            if state.get(m) == 1:
                return stack[stack.index(m):]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in edges:
        if n not in state and (found := visit(n)):
            return found
    return None


def _check_tools(spec: Spec, doc: Document, registry) -> list[Problem]:
    from agent_etl.tools.registry import MissingExtra, UnknownTool, default_registry

    registry = registry or default_registry()
    problems: list[Problem] = []
    for kind, path, step in _steps(spec):
        family = {"extract": "extractor", "transform": "transform", "load": "loader"}[kind]
        try:
            cls = registry.get(family, step.tool)
        except UnknownTool as e:
            problems.append(Problem(str(e), doc.line(path + ("tool",)), e.hint))
            continue
        except MissingExtra as e:
            problems.append(Problem(str(e), doc.line(path + ("tool",))))
            continue
        problems.extend(validate_options(cls, step.options, path, doc, f"{kind} {step.name!r}"))
        if kind == "transform":
            n = len(step.inputs)
            if cls.arity is not None and n != cls.arity:
                problems.append(Problem(f"transform {step.name!r} ({step.tool}) takes {cls.arity} input(s), got {n}",
                                        doc.line(path + ("input",)), "use the sql tool to combine several inputs"))
        conn = step.options.get("connection")
        if isinstance(conn, str) and conn not in spec.connections:
            known = ", ".join(sorted(spec.connections)) or "none"
            problems.append(Problem(f"{kind} {step.name!r} uses connection {conn!r}, which is not defined",
                                    doc.line(path + ("connection",)), f"define it under connections: (defined: {known})"))
        if getattr(cls, "inline_checks", False):  # the validate step: a quality group of its own
            problems.extend(check_validate_step(step, path, doc, registry, spec))
    problems.extend(check_groups(spec, doc, registry))
    problems.extend(check_cache(spec, doc, registry))
    return problems


def _plan(spec: Spec) -> list[Task]:
    nodes: dict[str, Task] = {}
    for name, s in spec.extract.items():
        nodes[name] = Task(name, "extract", s.tool, [], s.options, s._line, timeout=s.timeout or spec.defaults.timeout,
                           cache=s.cache, tags=list(s.tags))
    for s in spec.transform:
        nodes[s.name] = Task(s.name, "transform", s.tool, s.inputs, s.options, s._line,
                             timeout=s.timeout or spec.defaults.timeout, tags=list(s.tags))
    for name, s in spec.load.items():
        nodes[name] = Task(name, "load", s.tool, s.inputs, s.options, s._line, timeout=s.timeout or spec.defaults.timeout,
                           tags=list(s.tags))
    for g in spec.quality:
        nodes[g.input].gates.append(g)
        for ref in group_refs(g.checks):  # the gate reads it first: a dependency like an input
            task = nodes[g.input]
            task.refs += [] if ref in task.refs else [ref]
            task.inputs = task.inputs + ([] if ref in task.inputs else [ref])
    order: list[Task] = []
    done: set[str] = set()

    def visit(t: Task) -> None:
        if t.name in done:
            return
        done.add(t.name)
        for i in t.inputs:
            visit(nodes[i])
        order.append(t)

    for t in nodes.values():
        visit(t)
    return order
