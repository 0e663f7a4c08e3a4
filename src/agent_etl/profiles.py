"""Environment profiles: ``configs/<env>.yaml`` overlays on a pipeline file, chosen with
``--profile ENV`` (or ``AGENT_ETL_PROFILE``).

An overlay is a part of a pipeline mapping: what it says replaces what the pipeline says, key by
key; mappings merge (``connections.warehouse.url`` alone can change), steps of ``transform`` and
groups of ``quality`` merge by ``name`` / ``input``, any other value is replaced whole. It is
looked for in ``configs/`` next to the pipeline file, then in ``configs/`` of the working
directory. The merged text is what runs and what the run store keeps, so ``agent-etl resume``
goes on with the profile the run started with.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from agent_etl.exceptions import Problem, SpecError

ENV = "AGENT_ETL_PROFILE"


def find(profile: str, base_dir: Path) -> Path:
    if not profile or "/" in profile or "\\" in profile or profile.startswith("."):
        raise SpecError(f"--profile {profile!r}: give a profile name such as dev or prod (the file is "
                        "configs/<name>.yaml)")
    places = list(dict.fromkeys([Path(base_dir).resolve() / "configs" / f"{profile}.yaml",
                                 Path.cwd().resolve() / "configs" / f"{profile}.yaml"]))
    for place in places:
        if place.is_file():
            return place
    found = sorted({p.stem for d in {q.parent for q in places} if d.is_dir() for p in d.glob("*.yaml")})
    raise SpecError(Problem(f"profile {profile!r} not found: no {' nor '.join(map(str, places))}",
                            hint=f"profiles there: {', '.join(found)}" if found else
                            f"create {places[0]} with the keys that differ in {profile}"))


def apply(text: str, source: str, profile: str | None, base_dir: Path) -> tuple[str, str]:
    """The pipeline text with the profile's overlay merged in, and the source name for messages.
    Without a profile (and no AGENT_ETL_PROFILE), ``text`` as it is."""
    profile = profile or os.environ.get(ENV) or None
    if profile is None:
        return text, source
    from ruamel.yaml import YAML

    from agent_etl.spec.yamlsource import load_yaml

    path = find(profile, base_dir)
    try:
        overlay = load_yaml(path.read_text(), str(path)).data
    except OSError as e:
        raise SpecError(f"cannot read profile {path}: {e}") from None
    load_yaml(text, source)  # the pipeline's own problems first, with its own lines
    yaml = YAML(typ="rt", pure=True)
    yaml.preserve_quotes = True
    yaml.width = 4096
    tree = yaml.load(text)
    _merge(tree, overlay)
    out = io.StringIO()
    yaml.dump(tree, out)
    return out.getvalue(), f"{source} with {path}"


def _merge(base: Any, overlay: Any) -> Any:
    """``overlay`` merged into ``base`` in place where both are mappings; the merged value."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        for key, value in overlay.items():
            base[key] = _merge(base[key], value) if key in base else value
        return base
    if isinstance(base, list) and isinstance(overlay, list):
        key = _list_key(base + overlay)
        if key is not None:
            index = {item[key]: i for i, item in enumerate(base)}
            for item in overlay:
                if item[key] in index:
                    base[index[item[key]]] = _merge(base[index[item[key]]], item)
                else:
                    base.append(item)
            return base
    return overlay


def _list_key(items: list[Any]) -> str | None:
    """``name`` for transform steps, ``input`` for quality groups: what their items are known by."""
    for key in ("name", "input"):
        if items and all(isinstance(i, dict) and isinstance(i.get(key), str) for i in items):
            return key
    return None
