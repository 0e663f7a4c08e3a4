"""Reading a pipeline file: YAML with line numbers, and ``${VAR}`` / ``${file:path}`` interpolation.

The tree comes back as plain dicts/lists/scalars plus a map from each path (tuple of keys and
indices) to its 1-based line, so any error found later can point at the line that caused it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_etl.exceptions import Problem, SpecError
from agent_etl.redaction import secret_name, url_secrets

Path_ = tuple[str | int, ...]

_REF = re.compile(r"\$\{([^}]*)\}")


@dataclass
class Document:
    data: Any
    lines: dict[Path_, int]
    source: str
    source_text: str = ""
    secrets: set[str] = field(default_factory=set)

    def line(self, path: Path_) -> int | None:
        """Line of the longest prefix of ``path`` that the YAML file has."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def _unclosed(e: Any) -> tuple[int, str, str] | None:
    """A flow mapping or sequence (``{`` or ``[``) left open: its line, and what the parser found."""
    context = str(e.context or "")
    if not context.startswith("while parsing a flow") or e.context_mark is None or e.problem_mark is None:
        return None
    if e.problem_mark.line == e.context_mark.line:  # an error inside the braces on their own line
        return None
    bracket = "{" if "mapping" in context else "["
    close = "}" if bracket == "{" else "]"
    return (e.context_mark.line + 1, f"'{bracket}' opened here is not closed (line {e.problem_mark.line + 1}: "
            f"{str(e.problem or '').strip()})",
            f"close it with '{close}' on this line, or write the entries as an indented block")


def load_yaml(text: str, source: str, *, fast: bool = True) -> Document:
    """The document and the line of each key and item. libyaml reads it when it is in the subset whose
    meaning both parsers agree on (``yamlfast``), else ruamel (YAML 1.2; its messages for malformed YAML)."""
    if fast:
        from agent_etl.spec import yamlfast

        found = yamlfast.read(text)
        if found is not None and isinstance(found[0], dict):
            return Document(found[0], found[1], source, text)
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt", pure=True)
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        hint = "keys must be unique within a mapping" if "duplicate" in what else "check indentation, quotes and colons"
        unclosed = _unclosed(e)
        if unclosed is not None:  # the parser notices on a later line; the fix is where it opened
            line, what, hint = unclosed
        raise SpecError(Problem(f"malformed YAML: {what}", line, hint), source) from None
    except YAMLError as e:
        raise SpecError(Problem(f"malformed YAML: {e}"), source) from None
    except RecursionError:
        raise SpecError(Problem("malformed YAML: nested too deeply", hint="a pipeline file needs only a few "
                                "levels of nesting"), source) from None
    lines: dict[Path_, int] = {}
    try:
        data = _plain(tree, (), lines, _Budget())
    except _TooLarge as e:
        raise SpecError(Problem(f"YAML refused: {e}", hint="anchors (&name) and aliases (*name) may not refer to "
                                "themselves or expand to a huge document"), source) from None
    except RecursionError:
        raise SpecError(Problem("malformed YAML: nested too deeply", hint="a pipeline file needs only a few "
                                "levels of nesting"), source) from None
    if not isinstance(data, dict):
        raise SpecError(Problem("a pipeline file must be a YAML mapping (version:, name:, extract:, ...)", 1), source)
    return Document(data, lines, source, text)


MAX_NODES = 200_000  # far beyond any real pipeline; stops alias expansion bombs ("billion laughs")


class _TooLarge(Exception):
    pass


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0
        self.open: set[int] = set()  # containers being expanded: an alias back to one is a cycle

    def enter(self, node: Any) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooLarge(f"the document expands to more than {MAX_NODES} values")
        if id(node) in self.open:
            raise _TooLarge("an alias refers to a mapping or list that contains it")
        self.open.add(id(node))


def _plain(node: Any, path: Path_, lines: dict[Path_, int], budget: _Budget) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, (CommentedMap, CommentedSeq)):
        budget.enter(node)
        try:
            return _plain_container(node, path, lines, budget)
        finally:
            budget.open.discard(id(node))
    budget.nodes += 1
    if isinstance(node, str):
        return str(node)  # drop ruamel's scalar-string subclasses
    if hasattr(node, "__float__") and type(node).__module__.startswith("ruamel"):
        return float(node)
    if type(node).__module__.startswith("ruamel") and isinstance(node, int):
        return int(node)
    return node


def _plain_container(node: Any, path: Path_, lines: dict[Path_, int], budget: _Budget) -> Any:
    from ruamel.yaml.comments import CommentedMap

    if isinstance(node, CommentedMap):
        out = {}
        for k, v in node.items():
            key = str(k)
            try:
                lines[path + (key,)] = node.lc.key(k)[0] + 1
            except (KeyError, TypeError):
                pass
            out[key] = _plain(v, path + (key,), lines, budget)
        return out
    out_list = []
    for i, v in enumerate(node):
        try:
            lines[path + (i,)] = node.lc.item(i)[0] + 1
        except (KeyError, TypeError):
            pass
        out_list.append(_plain(v, path + (i,), lines, budget))
    return out_list


def interpolate(doc: Document, variables: dict[str, str] | None, base_dir: Path) -> list[Problem]:
    """Replace ``${VAR}``, ``${VAR:-default}``, ``${file:path}`` and ``${keyring:service/username}`` in every
    string, in place.

    ``variables`` (``--var K=V``) win over the environment. Returns the problems found (unset
    variables, unreadable files), each with its line. The secret values among what it fills in
    (``agent_etl.redaction`` says which) are collected in ``doc.secrets``, to be masked in every
    message and record.
    """
    env = {**os.environ, **(variables or {})}
    problems: list[Problem] = []
    marked = doc.data.get("secrets") if isinstance(doc.data, dict) else None
    marked = {m for m in marked if isinstance(m, str)} if isinstance(marked, list) else set()

    def sub(value: str, path: Path_) -> str:
        keys = [p for p in path if isinstance(p, str)]
        # the whole value is a secret under a key named like one (auth's `key` too)
        secret_place = bool(keys) and (secret_name(keys[-1]) or (keys[-1] == "key" and keys[-2:-1] == ["auth"]))

        def one(m: re.Match[str]) -> str:
            ref = m.group(1).strip()
            if ref.startswith("file:"):
                target = Path(ref[5:].strip())
                try:
                    target = target.expanduser()  # RuntimeError for ~nosuchuser
                    target = target if target.is_absolute() else base_dir / target
                    text = target.read_text().strip()
                except (OSError, ValueError, RuntimeError) as e:  # ValueError: NUL in the path, not UTF-8
                    why = getattr(e, "strerror", None) or str(e)
                    problems.append(Problem(f"cannot read {target} for ${{{ref}}}: {why}", doc.line(path),
                                            "check the path; it is relative to the pipeline file"))
                    return m.group(0)
                doc.secrets.add(text)
                return text
            if ref.startswith("keyring:"):
                value, problem = _keyring(ref)
                if problem is not None:
                    problems.append(Problem(problem[0], doc.line(path), problem[1]))
                    return m.group(0)
                doc.secrets.add(value)
                return value
            name, sep, default = ref.partition(":-")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                problems.append(Problem(f"bad reference ${{{ref}}}", doc.line(path),
                                        "write ${NAME}, ${NAME:-default} or ${file:path}"))
                return m.group(0)
            if name in env:
                val = env[name]
            elif sep:
                val = default
            else:
                problems.append(Problem(f"${{{name}}} is not set", doc.line(path),
                                        f"export {name}=... or pass --var {name}=..."))
                return m.group(0)
            if secret_place or name in marked or secret_name(name):
                doc.secrets.add(val)
            return val

        out = _REF.sub(one, value)
        # a reference left unfilled (its variable is not set: a problem above) is the user's text, not a
        # secret: masked, it would hide which variable the message asks for
        if secret_place and not _REF.search(out):
            doc.secrets.add(out)
        doc.secrets.update(s for s in url_secrets(out) if not _REF.search(s))
        return out

    def walk(node: Any, path: Path_) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, path + (k,)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, path + (i,)) for i, v in enumerate(node)]
        if isinstance(node, str) and path and isinstance(path[-1], str) and _URL_KEY.search(path[-1]):
            if problem := _inline_password(node, path, doc):
                problems.append(problem)
                return node
        if isinstance(node, str) and "${" in node:
            return sub(node, path)
        return node

    doc.data = walk(doc.data, ())
    return problems


def _keyring(ref: str) -> tuple[str, tuple[str, str] | None]:
    """The password ``${keyring:service/username}`` names in the OS keyring (the keyring extra),
    or the problem (message, hint) of reading it."""
    service, _, user = ref[len("keyring:"):].strip().rpartition("/")
    if not service or not user:
        return "", (f"bad reference ${{{ref}}}", "write ${keyring:service/username}")
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        return "", (f"${{{ref}}} needs the OS keyring, and the keyring extra is not installed",
                    "pip install 'agent-etl[keyring]'")
    try:
        value = keyring.get_password(service, user)
    except (KeyringError, RuntimeError, OSError) as e:
        return "", (f"cannot read ${{{ref}}} from the OS keyring: {e}",
                    "check the keyring backend (PYTHON_KEYRING_BACKEND) or use ${ENV_VAR}")
    if value is None:
        return "", (f"the OS keyring has no password for service {service!r}, user {user!r} (${{{ref}}})",
                    f"store it with: keyring set {service} {user}")
    return value, None


_URL_KEY = re.compile(r"(^|_)(url|dsn)$", re.I)
_URL_PASSWORD = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<user>[^/@:]*):(?P<password>[^@/]+)@(?P<rest>.*)$")


def _inline_password(url: str, path: Path_, doc: Document) -> Problem | None:
    """A password written into a URL in the spec itself (not through ``${...}``): a spec error that
    names the key and shows the fix, without repeating the password."""
    m = _URL_PASSWORD.match(url)
    if m is None or "${" in m["password"]:
        return None
    doc.secrets.add(m["password"])
    where = ".".join(str(p) for p in path)
    name = f"{str(path[1]).upper()}_PASSWORD" if path[:1] == ("connections",) and len(path) > 1 else "DB_PASSWORD"
    name = re.sub(r"[^A-Z0-9_]", "_", name)
    return Problem(f"{where} has a password written inline; secrets come from the environment or a file",
                   doc.line(path), f"write {m['scheme']}://{m['user']}:${{{name}}}@{m['rest']} and set {name} "
                                   f"(or use ${{file:path}})")


