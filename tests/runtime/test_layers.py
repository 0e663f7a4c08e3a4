"""Which package may import which: tools and the quality library are called in process by
agents, never the other way round (a tool or a gate that reached into ``agent_etl.agents`` could
not run where the agents are elsewhere). Read from the source's imports with ``ast``, so an import
inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import agent_etl

SRC = Path(agent_etl.__file__).parent


def imports(package: str) -> dict[str, set[str]]:
    """``{module file: the agent_etl modules it imports}`` for every module under ``package``."""
    out: dict[str, set[str]] = {}
    for path in sorted((SRC / package).rglob("*.py")):
        parts = ("agent_etl", *path.relative_to(SRC).with_suffix("").parts)
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's own package upwards
                    base = parts[:len(parts) - node.level]
                    module = ".".join((*base, node.module) if node.module else base)
                else:
                    module = node.module or ""
                names.add(module)
                names.update(f"{module}.{a.name}" for a in node.names)
        out[str(path.relative_to(SRC))] = {n for n in names if n == "agent_etl" or n.startswith("agent_etl.")}
    return out


def reaching(package: str, forbidden: str) -> dict[str, list[str]]:
    found = {}
    for module, names in imports(package).items():
        bad = sorted(n for n in names if n == forbidden or n.startswith(forbidden + "."))
        if bad:
            found[module] = bad
    return found


def test_the_walk_sees_imports_at_module_level_and_inside_functions():
    found = imports("agents")
    assert "agent_etl.agents.base" in found["agents/etl.py"]
    assert "agent_etl.quality.gates" in found["agents/etl.py"]
    assert "agent_etl.store.runs" in found["agents/quality.py"]  # imported inside a method
    assert "agent_etl.tools.registry" in imports("quality")["quality/gate.py"]


def test_no_tool_imports_the_agents():
    assert len(imports("tools")) > 50
    assert reaching("tools", "agent_etl.agents") == {}


def test_the_quality_library_imports_neither_agents_nor_bus():
    assert {"quality/gate.py", "quality/gates.py", "quality/quarantine.py"} <= set(imports("quality"))
    assert reaching("quality", "agent_etl.agents") == {}
    assert reaching("quality", "agent_etl.bus") == {}
