"""Reading a pipeline file with libyaml (PyYAML's C parser), with line numbers: ~10x faster than
ruamel's pure-Python round-trip parser, which is most of the time of validating a big pipeline (the
50-table file `agent-etl init` writes: ~0.2 s of CPU in ruamel, ~0.02 s here).

Only for the subset whose meaning is the same in both parsers: mappings with string keys (no key
twice), sequences, quoted and block strings, and plain scalars that YAML 1.2 reads as a string, a
plain decimal int or float, a bool (true/false) or null. Anything else returns None and the caller
reads the text with ruamel (``yamlsource.load_yaml``), whose results and error messages stay the
reference: a parse error, a ``%`` directive, an explicit tag, an alias, a merge key, a plain scalar
such as ``0x1F``, ``1_000``, ``012``, ``1e3``, ``.inf`` or ``2026-12-06``, or nesting deeper than
libyaml's limit.
"""

from __future__ import annotations

import re
from typing import Any

MAX_NODES = 200_000  # yamlsource.MAX_NODES: beyond it, ruamel says why the document is refused

_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\.[0-9]+")
_WORDS: dict[str, Any] = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False,
                          "null": None, "Null": None, "NULL": None, "~": None, "": None}
# first characters of the plain scalars YAML 1.2 may read as more than a string (numbers, .inf, ~, =, <<)
_SPECIAL = frozenset("0123456789+-.~=<")
# what ruamel's YAML 1.2 resolver reads as a float, int, merge key, timestamp or value (ruamel.yaml.resolver)
_NOT_STR = re.compile(r"""
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN)
    |[-+]?0b[0-1_]+
    |[-+]?0o?[0-7_]+
    |[-+]?[0-9_]+
    |[-+]?0x[0-9a-fA-F_]+
    |<<
    |[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
    |[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[\ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?
        (?:[\ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?
    |=""", re.X)
_DIRECTIVE = re.compile(r"^%", re.M)
# an anchor (&name) may start a node here; ruamel gives an anchored int another type (read as a float by
# yamlsource), which libyaml's nodes cannot tell. Also matches some '&' in text: those fall back too.
_ANCHOR = re.compile(r"(?:^|[\s\[{,:])&")
# where libyaml (YAML 1.1) and ruamel (1.2) differ: tabs (ruamel refuses some that libyaml takes), the
# line breaks of 1.1 only (NEL, LS, PS), a byte-order mark, a comment right after a block scalar's |, a
# quoted key with its colon right after it (["x":1])
_UNALIKE = re.compile("[\t\x85\u2028\u2029\ufeff]|[|>][-+0-9]*#|[\"']:")


class _NotPlain(Exception):
    pass


_loader: Any = None  # the libyaml loader class; False when PyYAML or its C extension is missing


def _loader_class() -> Any:
    global _loader
    if _loader is None:
        try:
            from yaml._yaml import CParser
            from yaml.nodes import ScalarNode, SequenceNode
        except ImportError:
            _loader = False
            return _loader

        class Loader(CParser):
            """Nodes only, each tagged with how it was written; what a scalar means is decided below."""

            def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
                if kind is ScalarNode:
                    return "?plain" if implicit[0] else "?str" if implicit[1] else "!"
                return "?seq" if kind is SequenceNode else "?map"

            def descend_resolver(self, parent: Any, index: Any) -> None:
                pass

            def ascend_resolver(self) -> None:
                pass

        _loader = Loader
    return _loader


def read(text: str) -> tuple[Any, dict[tuple[str | int, ...], int]] | None:
    """The document as plain dicts/lists/scalars and the 1-based line of each key and item, as
    ``yamlsource.load_yaml`` reads it; None when the text is outside the subset (read it with ruamel)."""
    loader = _loader_class()
    if not loader or _UNALIKE.search(text) or _DIRECTIVE.search(text) or _ANCHOR.search(text):
        return None
    parser = loader(text)
    try:
        node = parser.get_single_node()
    except Exception:  # noqa: BLE001 - any libyaml error: ruamel reads it again and says what is wrong
        return None
    finally:
        parser.dispose()
    lines: dict[tuple[str | int, ...], int] = {}
    try:
        data = _value(node, (), lines, set())
    except (_NotPlain, RecursionError):
        return None
    return data, lines


def _value(node: Any, path: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int], seen: set[int]) -> Any:
    if node is None:  # an empty document
        return None
    if id(node) in seen or len(seen) >= MAX_NODES:  # an alias (the node again), or a refused size
        raise _NotPlain
    seen.add(id(node))
    tag = node.tag
    if tag == "?map":
        out: dict[str, Any] = {}
        for k, v in node.value:
            key = k.value if k.tag == "?str" else _scalar(k.value) if k.tag == "?plain" else None
            if not isinstance(key, str) or key in out:  # not a string (1:, true:, a list, a tag), or a duplicate
                raise _NotPlain
            lines[path + (key,)] = k.start_mark.line + 1
            out[key] = _value(v, path + (key,), lines, seen)
        return out
    if tag == "?seq":
        items = []
        for i, v in enumerate(node.value):
            lines[path + (i,)] = v.start_mark.line + 1
            items.append(_value(v, path + (i,), lines, seen))
        return items
    if tag == "?str":
        return node.value
    if tag == "?plain":
        return _scalar(node.value)
    raise _NotPlain  # an explicit tag


def _scalar(value: str) -> Any:
    """A plain scalar as YAML 1.2 (ruamel) reads it, within the subset."""
    if value in _WORDS:
        return _WORDS[value]
    if value[0] in _SPECIAL:
        if _INT.fullmatch(value):
            # ruamel reads 0 (a leading zero) as its own int type, which yamlsource turns into 0.0
            return int(value) or 0.0
        if _FLOAT.fullmatch(value):
            return float(value)
        if _NOT_STR.fullmatch(value):  # 0x1F, 1_000, 1e3, .inf, a date, <<: as ruamel reads them
            raise _NotPlain
    return value
