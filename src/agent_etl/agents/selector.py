"""Choosing the agent that runs a task. ``Selector`` is the extension point: it sees the agents as
``AgentInfo`` records (id, capabilities, limits, tags, current load: what a remote worker will
advertise in its heartbeat), each task with its ``TaskDescriptor``, and learns from the experience
of every finished task. ``CapabilitySelector`` picks the least busy capable agent; a memory-driven
selector (issue 14) implements the same protocol."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Protocol, Sequence

from agent_etl.exceptions import AgentETLError, Problem, SpecError
from agent_etl.memory.descriptor import TaskDescriptor
from agent_etl.spec import Task

# the memory rule: what a branch's data takes in memory, from its sources' size and schema
MB = 1 << 20
OVERHEAD_MB = 64  # a task's own working memory besides its data (Arrow pools, the tool's client)
ROW_BYTES = 100  # bytes per row when the schema is unknown
WIDTHS = (("bool", 1), ("int8", 1), ("uint8", 1), ("int16", 2), ("uint16", 2), ("int32", 4), ("uint32", 4),
          ("float", 4), ("halffloat", 2), ("date32", 4), ("time32", 4), ("int64", 8), ("uint64", 8),
          ("double", 8), ("date64", 8), ("time64", 8), ("timestamp", 8), ("duration", 8), ("decimal", 16))
STRING_BYTES = 32  # a string, binary or nested value: its offsets and a short text
TASK_KINDS = ("extract", "transform", "load")
EXPANDS = {"parquet": 4.0}  # in memory, as many times its size on disk (compressed columns); else 1


@dataclass(frozen=True)
class AgentInfo:
    id: str
    kind: str = "etl"
    # "extract", "transform", "load", or "extract:csv" for one tool only
    capabilities: frozenset[str] = frozenset()
    limits: Mapping[str, float] = field(default_factory=dict)  # e.g. {"concurrency": 4, "memory_mb": 4096}
    tags: frozenset[str] = frozenset()  # e.g. location: {"eu-west", "gpu"}
    load: int = 0  # tasks running now

    def can_run(self, kind: str, tool: str) -> bool:
        return kind in self.capabilities or f"{kind}:{tool}" in self.capabilities

    @classmethod
    def of(cls, agent: Any) -> AgentInfo:
        """The record of a live agent of this process."""
        return cls(agent.id, agent.kind, frozenset(agent.capabilities), dict(getattr(agent, "limits", None) or {}),
                   frozenset(getattr(agent, "tags", None) or ()), len(agent.running))


class Choice:
    """The agent chosen for a task (an ``AgentInfo`` id) and why. The reason may be given as a
    function of no arguments that writes it: it is written when first read, once. A learning
    selector's reason quotes the estimates its choice rested on (taken when it chose): writing
    those numbers out was a fifth of the time of a choice, whose latency matters (issue 14)."""

    __slots__ = ("agent", "_reason")

    def __init__(self, agent: str, reason: str | Callable[[], str]) -> None:
        self.agent = agent
        self._reason = reason

    @property
    def reason(self) -> str:
        if not isinstance(self._reason, str):
            self._reason = self._reason()
        return self._reason

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Choice):
            return NotImplemented
        return (self.agent, self.reason) == (other.agent, other.reason)

    def __hash__(self) -> int:
        return hash((self.agent, self.reason))

    def __repr__(self) -> str:
        return f"Choice(agent={self.agent!r}, reason={self.reason!r})"


class Selector(Protocol):
    async def select(self, tasks: Sequence[Task], agents: Sequence[AgentInfo],
                     descriptors: Mapping[str, TaskDescriptor]) -> dict[str, Choice]:
        """An agent for every task (by name), with the reason it was chosen."""
        ...

    async def learn(self, experiences: Sequence[Any]) -> None:
        """Told what happened to each task of a finished run (``memory.experience.Experience``)."""
        ...


class CapabilitySelector:
    """Among the agents able to run the task's kind and tool, the one with the fewest tasks."""

    async def select(self, tasks: Sequence[Task], agents: Sequence[AgentInfo],
                     descriptors: Mapping[str, TaskDescriptor] | None = None) -> dict[str, Choice]:
        load: Counter[str] = Counter({a.id: a.load for a in agents})
        chosen: dict[str, Choice] = {}
        # (kind, tool, branch) -> the agents able to run it and the reason; a pipeline has few of them
        options: dict[tuple[str, str, str], tuple[list[AgentInfo], str]] = {}
        descriptors = descriptors or {}
        branch_of = {t.name: b for b in branches(tasks) for t in b}
        for task in tasks:
            branch = branch_of[task.name]
            key = (task.kind, task.tool, branch[0].name)
            option = options.get(key)
            if option is None:
                capable = [a for a in agents if a.can_run(task.kind, task.tool)]
                if not capable:
                    raise AgentETLError(f"no agent can run {task.kind} task {task.name!r} (tool {task.tool}); "
                                        f"start an agent with capability {task.kind!r}")
                capable, left = placement(branch, capable, descriptors, agents)  # the branch's tags and data
                reason = (f"only agent able to {task.kind}" if len(capable) == 1
                          else f"least busy of {len(capable)} agents able to {task.kind}")
                option = options[key] = (capable, reason + (f"; {left}" if left else ""))
            capable, reason = option
            agent = capable[0] if len(capable) == 1 else min(capable, key=lambda a: (load[a.id], a.id))
            load[agent.id] += 1
            chosen[task.name] = Choice(agent.id, reason)
        return chosen

    async def learn(self, experiences: Sequence[Any]) -> None:
        """Capabilities do not change with experience."""


def row_bytes(schema: Sequence[tuple[str, str]]) -> int:
    """Bytes per row in Arrow memory for a schema of (column, arrow type): fixed widths for numbers,
    dates and times, ``STRING_BYTES`` for strings and anything else; ``ROW_BYTES`` without a schema."""
    if not schema:
        return ROW_BYTES
    total = 0
    for _, typ in schema:
        t = typ.lower()
        total += next((w for name, w in WIDTHS if t.startswith(name)), STRING_BYTES)
    return total


def memory_need(branch: Sequence[Task], descriptors: Mapping[str, TaskDescriptor]) -> int | None:
    """MiB a branch's data takes in memory, or None when no source's size is known. Per source
    (extract) of the branch: its files' bytes times ``EXPANDS`` of the format (Parquet is compressed
    on disk), else rows x ``row_bytes(schema)`` when its descriptor knows the rows; plus
    ``OVERHEAD_MB``. The whole data, not a batch: steps that read whole inputs (a query over them,
    dedupe) hold it all, and streaming steps hold less, so the rule errs on the safe side."""
    total, known = 0.0, False
    for t in branch:
        d = descriptors.get(t.name)
        if t.kind != "extract" or d is None:
            continue
        if d.bytes:
            total += d.bytes * EXPANDS.get(d.tool, 1.0)
        elif d.rows:
            total += d.rows * row_bytes(d.schema)
        else:
            continue
        known = True
    return int(OVERHEAD_MB + total / MB + 0.5) if known else None


def runners(agents: Sequence[AgentInfo]) -> list[AgentInfo]:
    """The agents able to run tasks (extract, transform or load), not the quality or monitor agents."""
    return [a for a in agents if any(c.partition(":")[0] in TASK_KINDS for c in a.capabilities)]


def tags_here(tasks: Sequence[Task], agents: Sequence[AgentInfo], *, broker: bool) -> Sequence[Task]:
    """Where the steps' ``tags:`` are matched when no agent here able to run tasks has tags (no
    fleet file, or an untagged one). In process (``broker`` false) that is a spec error naming the
    tags and the ways out: the run would otherwise go on where the pipeline said it must not. Over
    a broker the workers match them (a worker takes a tagged branch only with all its tags,
    ``agents.dispatch``; the reasons say so, ``planning.over_workers``): the selector chooses among
    the agents here without them. Returns the tasks for the selector; with a tagged agent here, the
    tasks as they are (``placement`` narrows to the agents with the tags)."""
    task = next((t for t in tasks if t.tags), None)
    if task is None:
        return tasks
    able = runners(agents)
    if any(a.tags for a in able):
        return tasks
    if not broker:
        listed = ", ".join(f"{a.id} (no tags)" for a in able)
        raise SpecError(Problem(f"{task.kind} {task.name!r} asks for an agent tagged {', '.join(task.tags)}; no "
                                f"agent here has tags (agents: {listed})", task.line,
                                "tag agents in a fleet file (tags: in configs/agents.yaml), or run over workers: "
                                f"--bus nats://... with agent-etl worker --tags {','.join(task.tags)}"))
    return [replace(t, tags=[]) if t.tags else t for t in tasks]


def placement(branch: Sequence[Task], agents: Sequence[AgentInfo], descriptors: Mapping[str, TaskDescriptor],
              everyone: Sequence[AgentInfo] | None = None) -> tuple[list[AgentInfo], str]:
    """The agents among ``agents`` (those able to run it) a branch may go to, and a note for the
    reasons: whom its tags and the memory rule left out ("" when no one). Tags: an agent needs every
    tag the branch's steps ask for (``tags:`` of a step); none has them all is a spec error naming
    the tags and the agents there are (``everyone``). Tags that no agent here has are decided before
    selection, by ``tags_here``. Memory: an agent whose ``memory_mb`` limit is below ``memory_need``
    is left out; when that leaves no one, the agent with the most memory runs it."""
    if not _narrowing(branch, agents):  # the common case, on the hot path
        return agents if isinstance(agents, list) else list(agents), ""
    tags = sorted({g for t in branch for g in t.tags})
    limited = any("memory_mb" in a.limits for a in agents)
    out: list[str] = []
    if tags:
        tagged = [a for a in agents if a.tags.issuperset(tags)]
        if not tagged:
            listed = ", ".join(f"{a.id} ({', '.join(sorted(a.tags)) or 'no tags'})" for a in runners(everyone or agents))
            task = next(t for t in branch if t.tags)
            raise SpecError(Problem(f"{task.kind} {task.name!r} asks for an agent tagged {', '.join(tags)}; no agent "
                                    f"able to run it has them all (agents: {listed})", task.line,
                                    "tag an agent with them (tags: in configs/agents.yaml, or worker --tags), or "
                                    "change the step's tags"))
        if len(tagged) < len(agents):
            out.append(f"{', '.join(a.id for a in agents if a not in tagged)} not tagged {', '.join(tags)}")
        agents = tagged
    need = memory_need(branch, descriptors) if limited else None
    if need is not None:
        fit = [a for a in agents if (a.limits.get("memory_mb") or need) >= need]
        if not fit:
            biggest = max(agents, key=lambda a: (a.limits.get("memory_mb") or 0, a.id))
            return [biggest], "; ".join([*([f"left out: {'; '.join(out)}"] if out else []),
                                         f"the branch needs ~{need:,} MB, more than any agent's memory_mb: "
                                         f"{biggest.id} has the most ({biggest.limits.get('memory_mb', 0):,.0f} MB)"])
        if len(fit) < len(agents):
            out.append(", ".join(f"{a.id} (memory_mb {a.limits['memory_mb']:,.0f})" for a in agents if a not in fit)
                       + f" short of the ~{need:,} MB the branch needs")
        agents = fit
    return list(agents), f"left out: {'; '.join(out)}" if out else ""


def _narrowing(branch: Sequence[Task], agents: Sequence[AgentInfo]) -> bool:
    """Whether a step of the branch asks for tags or an agent has a memory limit (in plain loops:
    it is checked at every decision, which should allocate little)."""
    for t in branch:
        if t.tags:
            return True
    for a in agents:
        if "memory_mb" in a.limits:
            return True
    return False


def branches(tasks: Sequence[Task]) -> list[list[Task]]:
    """The weakly connected groups of ``tasks`` (as ``Pipeline.branches``, over the tasks given)."""
    if len(tasks) == 1:
        return [list(tasks)]
    names = {t.name for t in tasks}
    parent = {t.name: t.name for t in tasks}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for t in tasks:
        for i in t.inputs:
            if i in names:
                parent[root(i)] = root(t.name)
    groups: dict[str, list[Task]] = {}
    for t in tasks:
        groups.setdefault(root(t.name), []).append(t)
    return list(groups.values())
