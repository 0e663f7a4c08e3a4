"""A declared fleet of ETL agents: ``configs/agents.yaml`` (or the file ``AGENT_ETL_FLEET`` names).

    default_agent: true            # keep the built-in agent that can run everything (the default)
    agents:
      - name: near-pg
        capabilities: [extract:postgres, transform, load:parquet]   # or source:postgres, destination:parquet
        limits: {concurrency: 4, memory_mb: 8192}
        tags: [eu-west]

A capability is a task kind (``extract``, ``transform``, ``load``: every tool of it) or a kind and a
tool (``extract:postgres``); ``source:X`` and ``destination:X`` mean ``extract:X`` and ``load:X``.
An unknown kind or tool is a spec error (exit 2) naming the line. The coordinator starts one ETL
agent per entry in its process, with the entry's name as its id (the built-in agent is then
``default``); a remote worker will advertise the same record (``AgentInfo``).

Selection counts the limits and tags (``agents.selector.placement``): ``concurrency`` is how many
branches an agent takes at once, ``memory_mb`` keeps off it a branch whose data needs more
(``memory_need``), and a step's ``tags:`` send its branch only to agents having all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_etl.exceptions import Problem, SpecError

KINDS = {"extract": "extractor", "transform": "transform", "load": "loader"}
ALIASES = {"source": "extract", "destination": "load"}
LIMITS = ("concurrency", "memory_mb")
DEFAULT = "default"  # the id of the built-in ETL agent next to a declared fleet


@dataclass(frozen=True)
class FleetAgent:
    name: str
    capabilities: frozenset[str]
    limits: dict[str, float] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Fleet:
    agents: tuple[FleetAgent, ...] = ()
    default_agent: bool = True
    path: Path | None = None


def fleet_path(setting: Path | None, cwd: Path | None = None) -> Path | None:
    """The fleet file: ``AGENT_ETL_FLEET`` if set (it must exist), else ``configs/agents.yaml`` in the
    working directory when there is one."""
    if setting is not None:
        return Path(setting)
    default = (cwd or Path.cwd()) / "configs" / "agents.yaml"
    return default if default.is_file() else None


def load_fleet(path: str | Path, registry: Any) -> Fleet:
    """Read and check a fleet file; every problem found is reported at once (``SpecError``)."""
    from agent_etl.spec.yamlsource import load_yaml

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(Problem(f"cannot read fleet file {path}: {e}",
                                hint="set AGENT_ETL_FLEET to an agents.yaml, or unset it")) from None
    doc = load_yaml(text, str(path))
    data = doc.data if doc.data is not None else {}
    problems: list[Problem] = []

    def bad(where: tuple, message: str, hint: str | None = None) -> None:
        problems.append(Problem(message, doc.line(where), hint, ".".join(str(w) for w in where) or None))

    if not isinstance(data, dict):
        raise SpecError(Problem("a fleet file is a mapping with 'agents:' (a list) and optionally "
                                "'default_agent: true|false'"), str(path))
    for key in data:
        if key not in ("agents", "default_agent"):
            bad((key,), f"unknown key {key!r}", "a fleet file has 'agents' and 'default_agent'")
    default = data.get("default_agent", True)
    if not isinstance(default, bool):
        bad(("default_agent",), "default_agent is true or false")
    entries = data.get("agents") or []
    if not isinstance(entries, list):
        bad(("agents",), "agents is a list of {name, capabilities, limits, tags}")
        entries = []
    agents: list[FleetAgent] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        at = ("agents", i)
        if not isinstance(entry, dict):
            bad(at, "an agent is a mapping: {name, capabilities, limits, tags}")
            continue
        for key in entry:
            if key not in ("name", "capabilities", "limits", "tags"):
                bad(at + (key,), f"unknown key {key!r}", "an agent has name, capabilities, limits and tags")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            bad(at + ("name",), "every agent needs a name")
            continue
        if name == DEFAULT:
            bad(at + ("name",), f"{DEFAULT!r} is the built-in agent's name", "choose another name")
        if name in names:
            bad(at + ("name",), f"agent name {name!r} is used twice")
        names.add(name)
        caps = entry.get("capabilities")
        if not isinstance(caps, list) or not caps:
            bad(at + ("capabilities",), f"agent {name!r} needs a list of capabilities",
                "e.g. [extract, transform, load] or [extract:postgres, load:parquet]")
            caps = []
        found: set[str] = set()
        for j, cap in enumerate(caps):
            normal, problem = _capability(cap, registry)
            if problem:
                bad(at + ("capabilities", j), f"agent {name!r}: {problem[0]}", problem[1])
            else:
                found.add(normal)
        limits = entry.get("limits") or {}
        if not isinstance(limits, dict):
            bad(at + ("limits",), "limits is a mapping, e.g. {concurrency: 4, memory_mb: 4096}")
            limits = {}
        for key, value in limits.items():
            if key not in LIMITS:
                bad(at + ("limits", key), f"agent {name!r}: unknown limit {key!r}", f"limits are {', '.join(LIMITS)}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                bad(at + ("limits", key), f"agent {name!r}: limit {key} must be a positive number")
        tags = entry.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            bad(at + ("tags",), f"agent {name!r}: tags is a list of words, e.g. [eu-west, gpu]")
            tags = []
        agents.append(FleetAgent(name, frozenset(found), {k: float(v) for k, v in limits.items()
                                                         if k in LIMITS and isinstance(v, (int, float))},
                                 frozenset(tags)))
    if problems:
        raise SpecError(problems, str(path))
    return Fleet(tuple(agents), bool(default), path)


def _capability(cap: Any, registry: Any) -> tuple[str, tuple[str, str | None] | None]:
    """The capability in its stored form, or (what is wrong, hint)."""
    kinds = ", ".join([*KINDS, *ALIASES])
    if not isinstance(cap, str) or not cap:
        return "", (f"capability {cap!r} is not a word", f"use one of {kinds}, optionally with :TOOL")
    kind, _, tool = cap.partition(":")
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        return "", (f"unknown capability {cap!r}", f"a capability is one of {kinds}, optionally with :TOOL "
                    "(extract:postgres, destination:parquet)")
    if not tool:
        return kind, None
    if registry is not None and not registry.has(KINDS[kind], tool):
        known = ", ".join(registry.names(KINDS[kind]))
        return "", (f"unknown capability {cap!r}: no {KINDS[kind]} named {tool!r}", f"{kind} tools: {known}")
    return f"{kind}:{tool}", None


def with_fleet(agents: list[Any], settings: Any, registry: Any, stores: dict[str, Any], heartbeat: float) -> list[Any]:
    """``agents`` (the built-in ones) with an ETL agent per entry of the declared fleet, if any,
    first; the built-in ETL agent goes when the fleet says ``default_agent: false``."""
    from agent_etl.agents.etl import ETLAgent

    path = fleet_path(getattr(settings, "fleet", None))
    if path is None:
        return agents
    fleet = load_fleet(path, registry)
    built = []
    for entry in fleet.agents:
        agent = ETLAgent(agents[0].bus if agents else None, agent_id=entry.name, heartbeat_interval=heartbeat,
                         registry=registry, stores=stores)
        agent.capabilities, agent.limits, agent.tags = entry.capabilities, dict(entry.limits), entry.tags
        built.append(agent)
    for a in agents:  # a stable id, so that its experience adds up from run to run
        if isinstance(a, ETLAgent) and a.id.startswith("etl-"):
            a.id = DEFAULT
    if not fleet.default_agent:
        if not built:
            raise SpecError(Problem("default_agent: false and no agents: nothing could run a task",
                                    hint="declare agents, or keep the default agent"), str(path))
        agents = [a for a in agents if not isinstance(a, ETLAgent)]
    return built + agents
