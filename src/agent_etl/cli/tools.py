"""``tools list``."""

from __future__ import annotations

import json

from agent_etl.exceptions import SpecError


def tools_command(kind: str | None, *, as_json: bool) -> int:
    from agent_etl.tools.registry import KINDS, default_registry

    if kind is not None and kind not in KINDS:
        raise SpecError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    infos = [i for i in default_registry().describe() if kind in (None, i.kind)]
    if as_json:
        print(json.dumps([i.__dict__ for i in infos], indent=2))
        return 0
    current = None
    for info in infos:
        if info.kind != current:
            current = info.kind
            print(f"{current}s:")
        if info.needs:
            print(f"  {info.name:<16} (not installed) {info.summary}")
            continue
        opts = f" [{', '.join(info.options)}]" if info.options else ""
        print(f"  {info.name:<16} {info.summary}{opts}")
    return 0
