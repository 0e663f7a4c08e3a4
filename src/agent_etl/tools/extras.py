"""Which optional extra a tool needs when its module cannot be imported.

Two ways to tell. A tool that imports its client library lazily declares its extra (``extra =
"postgres"`` on the class): the extra is missing when a distribution it requires is not installed.
A tool module that imports its library at the top fails to load with ``ModuleNotFoundError``. Either
way the distribution that registered the tool says, in its metadata, which extra requires what
(``psycopg[binary]>=3.1; extra == "postgres"``): that is the fix to name, for our tools and a
third-party package's alike.
"""

from __future__ import annotations

import functools
import re
from importlib.metadata import Distribution, EntryPoint, PackageNotFoundError, distribution

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*;\s*extra\s*==\s*['\"]([^'\"]+)['\"]")
_NOT_FEATURES = {"test", "tests", "bench", "dev", "docs", "all"}  # extras that bundle others, not features


class MissingExtra(LookupError):
    """A registered tool whose optional dependencies are not installed."""

    def __init__(self, name: str, module: str, extra: str | None, package: str):
        self.name, self.module, self.extra, self.package = name, module, extra, package
        if extra is not None:
            self.fix = f"pip install '{package}[{extra}]'"
            message = f"tool {name!r} needs the {extra} extra: {self.fix}"
        else:
            self.fix = f"pip install {module}"
            message = f"tool {name!r} needs the {module!r} module, which is not installed: {self.fix}"
        super().__init__(message)


def missing_extra(name: str, entry: EntryPoint, error: ModuleNotFoundError) -> MissingExtra | None:
    """The ``MissingExtra`` that explains ``error`` (raised loading tool ``name`` from ``entry``), or
    None when the missing module is the package's own (a bug to show as it is)."""
    module = (error.name or "").split(".")[0]
    dist = entry.dist
    package = dist.metadata["Name"] if dist is not None else entry.module.split(".")[0]
    own = entry.module.split(".")[0]
    if not module or module == own:
        return None
    return MissingExtra(name, module, _extra_for(dist, module), package)


def unmet_extra(name: str, extra: str, entry: EntryPoint | None) -> MissingExtra | None:
    """A ``MissingExtra`` if a distribution that ``extra`` of the tool's package requires is not
    installed (the first one), else None; without package metadata (a tool registered from code),
    None."""
    dist = entry.dist if entry is not None else None
    if dist is None:
        return None
    for line in dist.requires or []:
        m = _REQUIREMENT.match(line)
        if m is not None and m.group(2) == extra and not _installed(m.group(1)):
            return MissingExtra(name, m.group(1), extra, dist.metadata["Name"])
    return None


@functools.cache
def _installed(requirement: str) -> bool:
    try:
        distribution(requirement)
    except PackageNotFoundError:
        return False
    return True


def _extra_for(dist: Distribution | None, module: str) -> str | None:
    """The first feature extra of ``dist`` that requires a distribution importable as ``module``."""
    if dist is None:
        return None
    for line in dist.requires or []:
        m = _REQUIREMENT.match(line)
        if m is None or m.group(2) in _NOT_FEATURES:
            continue
        if module in _import_names(m.group(1)):
            return m.group(2)
    return None


def _import_names(requirement: str) -> set[str]:
    """Names a distribution is commonly imported by: ``PyMySQL`` -> pymysql, ``nats-py`` -> nats."""
    norm = re.sub(r"[-_.]+", "_", requirement).lower()
    return {norm, norm.removesuffix("_py"), norm.removeprefix("py_")}
