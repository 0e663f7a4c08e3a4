"""The tool registry: every extractor, transform, check and loader, by family and name.

Tools come from entry points (``agent_etl.extractors``, ``agent_etl.transforms``,
``agent_etl.validators``, ``agent_etl.loaders``), so an installed package adds a tool without
touching this one; ``register`` adds one from code (tests, notebooks). Classes are imported only
when a tool is looked up, so listing names stays cheap. A tool whose optional extra is not installed
is still listed; looking it up raises ``MissingExtra``, whose message is the one line that names the
``pip install`` fix (``tools.extras``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from agent_etl.tools.base import Tool
from agent_etl.tools.extras import MissingExtra, missing_extra, unmet_extra

__all__ = ["KINDS", "MissingExtra", "Registry", "ToolInfo", "UnknownTool", "default_registry"]

KINDS = {
    "extractor": "agent_etl.extractors",
    "transform": "agent_etl.transforms",
    "validator": "agent_etl.validators",
    "loader": "agent_etl.loaders",
}


class UnknownTool(LookupError):
    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=1)
        self.hint = f"did you mean {close[0]!r}?" if close else f"known {kind}s: {', '.join(known)}"
        super().__init__(f"unknown {kind} {name!r}")


@dataclass(frozen=True)
class ToolInfo:
    kind: str
    name: str
    target: str
    summary: str
    options: list[str]
    needs: str | None = None  # the install command of a missing extra: listed, but not usable yet


class Registry:
    def __init__(self, *, discover: bool = True):
        self._found: dict[str, dict[str, EntryPoint | type[Tool]]] = {k: {} for k in KINDS}
        self._loaded: dict[tuple[str, str], type[Tool]] = {}
        if discover:
            found = entry_points()  # one scan of the installed packages for the four groups
            for kind, group in KINDS.items():
                for ep in found.select(group=group):
                    self._found[kind].setdefault(ep.name, ep)

    def register(self, kind: str, name: str, cls: type[Tool]) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
        self._found[kind][name] = cls
        self._loaded.pop((kind, name), None)

    def names(self, kind: str) -> list[str]:
        return sorted(self._found[kind])

    def has(self, kind: str, name: str) -> bool:
        return name in self._found[kind]

    def get(self, kind: str, name: str) -> type[Tool]:
        key = (kind, name)
        if key in self._loaded:
            return self._loaded[key]
        try:
            entry = self._found[kind][name]
        except KeyError:
            raise UnknownTool(kind, name, self.names(kind)) from None
        cls = _load(name, entry) if _is_entry_point(entry) else entry
        if getattr(cls, "kind", None) != kind:
            raise TypeError(f"{cls!r} registered as {kind} {name!r} is not a {kind}")
        if cls.extra is not None and (unmet := unmet_extra(name, cls.extra, entry if _is_entry_point(entry)
                                                           else None)) is not None:
            raise unmet
        # One class may serve under several names (json and jsonl), so name a subclass, not the class.
        cls = type(cls.__name__, (cls,), {"name": name, "__doc__": cls.__doc__, "__module__": cls.__module__})
        self._loaded[key] = cls
        return cls

    def describe(self) -> list[ToolInfo]:
        out = []
        for kind in KINDS:
            for name in self.names(kind):
                entry = self._found[kind][name]
                target = entry.value if _is_entry_point(entry) else f"{entry.__module__}:{entry.__qualname__}"
                try:
                    cls = self.get(kind, name)
                except MissingExtra as e:
                    out.append(ToolInfo(kind, name, target, str(e), [], e.fix))
                    continue
                out.append(ToolInfo(kind, name, target, cls.summary(),
                                    [f.alias or n for n, f in cls.Config.model_fields.items()]))
        return out


def _is_entry_point(entry: object) -> bool:
    """An entry point not loaded yet (a registered class is a type). Not ``isinstance(EntryPoint)``:
    once the importlib_metadata backport is imported (keyring does), entry_points() yields its
    EntryPoint class, not the standard library's."""
    return not isinstance(entry, type) and hasattr(entry, "load")


def _load(name: str, entry: EntryPoint) -> type[Tool]:
    try:
        return entry.load()
    except ModuleNotFoundError as e:
        missing = missing_extra(name, entry, e)
        if missing is None:
            raise
        raise missing from None


_default: Registry | None = None


def default_registry() -> Registry:
    global _default
    if _default is None:
        _default = Registry()
    return _default

