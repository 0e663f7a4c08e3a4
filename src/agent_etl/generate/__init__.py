"""Pipeline generation (``agent-etl init SOURCE``): introspect a source and write a commented,
valid pipeline: one extract per table or file, incremental cursors where a column looks like one,
quality checks from the constraints, merge keys from primary keys, and defaults from similar past
pipelines in memory. Passwords never land in the file: they become ``${VAR}`` references.

    from agent_etl.generate import generate
    result = generate("postgresql://app@db:5432/shop", out=Path("pipeline.yaml"))
    Path("pipeline.yaml").write_text(result.text)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from agent_etl.exceptions import SpecError, ToolError
from agent_etl.generate.model import SourceSchema, pipeline_path
from agent_etl.generate.render import Destination, Settings, render

__all__ = ["Generated", "generate", "introspect"]
log = logging.getLogger("agent_etl.generate")
_DB = {"postgresql": "postgres", "postgres": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite",
       "duckdb": "duckdb"}


@dataclass
class Generated:
    text: str
    schema: SourceSchema
    env: dict[str, str] = field(default_factory=dict)  # variables the pipeline needs: what each holds
    memory: str = ""  # what memory contributed, if anything


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""


def _file_kind(path: Path) -> str | None:
    """sqlite or duckdb for a database file given by path, else None."""
    if path.suffix.lower() in (".duckdb", ".ddb"):
        return "duckdb"
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return None
    return "sqlite" if head.startswith(b"SQLite format 3") else None


def _local_db(url: str) -> Path:
    """The file of a sqlite:///path or duckdb:///path url (relative to the working directory)."""
    rest = url.split(":///", 1)[1] if ":///" in url else ""
    return Path(rest.split("?")[0]).expanduser()


def _db_url(kind: str, path: Path, out_dir: Path) -> str:
    """The url the pipeline names a local database file by: relative to the pipeline file's folder."""
    return f"{kind}:///{pipeline_path(path, out_dir)}"


def without_password(url: str, var: str) -> tuple[str, bool]:
    """``url`` with its password (in the user part or a ``password=`` parameter) replaced by ``${var}``."""
    try:
        u = urlsplit(url)
        password = u.password
    except ValueError:
        return url, False
    found = False
    netloc, query = u.netloc, u.query
    if password is not None:
        user = u.username or ""
        host = netloc.rsplit("@", 1)[1]
        netloc, found = f"{user}:${{{var}}}@{host}", True
    if re.search(r"(^|&)password=", query):
        query, found = re.sub(r"(^|&)password=[^&]*", rf"\1password=${{{var}}}", query), True
    if not found:  # unchanged, as written (urlunsplit would turn sqlite:///x into sqlite:/x)
        return url, False
    return urlunsplit((u.scheme, netloc, u.path, query, u.fragment)), found


_SECRET_PARAM = re.compile(r"token|secret|passw|api_?key|apikey|access_?key|auth|signature|sig$|^key$|session", re.I)


def without_secret_params(url: str) -> tuple[str, dict[str, str]]:
    """``url`` with the values of its query parameters that look like credentials (``api_key``,
    ``token``, ``signature`` ...) replaced by ``${API_<NAME>}``; the variables, each with what it holds."""
    from urllib.parse import parse_qsl

    u = urlsplit(url)
    if not u.query:
        return url, {}
    env: dict[str, str] = {}
    parts = []
    for key, value in parse_qsl(u.query, keep_blank_values=True):
        if _SECRET_PARAM.search(key) and value:
            name = re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_").upper()
            var = name if name.startswith("API") else f"API_{name}"
            env[var] = f"the {key!r} parameter of {u.scheme}://{u.netloc}{u.path}"
            parts.append(f"{quote(key, safe='')}=${{{var}}}")
        else:
            parts.append(f"{quote(key, safe='')}={quote(value, safe='')}")
    return (urlunsplit((u.scheme, u.netloc, u.path, "&".join(parts), u.fragment)), env) if env else (url, {})


def introspect(source: str, out_dir: Path, *, schemas: list[str] | None = None,
               endpoint_url: str | None = None) -> SourceSchema:
    """What ``source`` holds (a database URL, a database file, files, an s3:// glob or a JSON URL)."""
    from agent_etl.generate import databases

    scheme = _scheme(source)
    kind = _DB.get(scheme)
    if kind == "postgres":
        return databases.postgres(source, schemas)
    if kind == "mysql":
        return databases.mysql(source)
    if kind in ("sqlite", "duckdb"):
        return _local_database(kind, _local_db(source), out_dir)
    from agent_etl.generate import files  # pyarrow and the file extractors: only for what is not a database

    if scheme == "s3":
        return files.s3(source, out_dir, endpoint_url)
    if scheme in ("http", "https"):
        return files.http_json(source, out_dir)
    if scheme:
        raise SpecError(f"source {source.split('://')[0]}://... is not one init can read; give postgresql://, "
                        "mysql:// (mariadb://), sqlite:///, duckdb:///, s3://, https:// (JSON), or a file path or glob")
    path = Path(source).expanduser()
    kind = _file_kind(path) if path.is_file() else None
    if kind is not None:
        return _local_database(kind, path, out_dir)
    return files.files(source, out_dir)


def _local_database(kind: str, path: Path, out_dir: Path) -> SourceSchema:
    """A SQLite or DuckDB file's tables; the file named (url, comments) relative to the pipeline's folder."""
    from agent_etl.generate import databases

    schema: SourceSchema = getattr(databases, kind)(_db_url(kind, path, out_dir), path)
    if path.is_absolute():  # as given when relative (the user's words), else as the pipeline names it
        schema.where = pipeline_path(path, out_dir)
    return schema


def destination(dest: str | None, out_dir: Path) -> Destination:
    if not dest:
        return Destination("parquet", path="out", where="a Parquet lake under ./out")
    scheme = _scheme(dest)
    kind = _DB.get(scheme)
    if kind in ("sqlite", "duckdb"):
        return Destination(kind, url=_db_url(kind, _local_db(dest), out_dir), where=dest)
    if kind is not None:
        return Destination(kind, url=dest, where=urlsplit(dest)._replace(netloc=urlsplit(dest).hostname or "").geturl())
    if scheme == "s3":
        return Destination("s3", path=dest, where=dest)
    if scheme:
        raise SpecError(f"--dest {dest.split('://')[0]}://... is not a destination init knows; give a folder (a "
                        "Parquet lake), s3://bucket/prefix, or postgresql://, mysql://, sqlite:///, duckdb:/// url")
    path = pipeline_path(dest, out_dir)
    return Destination("parquet", path=path, where=f"a Parquet lake under {path}")


def _name(schema: SourceSchema) -> str:
    if schema.url:
        base = unquote(urlsplit(schema.url).path.rstrip("/").rsplit("/", 1)[-1]) or schema.kind
        base = Path(base).stem
    else:
        base = Path(schema.where.split("?")[0].rstrip("/")).name.replace("*", "all") or schema.kind
        base = re.sub(r"\.[a-z0-9]+$", "", base, flags=re.I)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_.-") or "pipeline"
    return name if re.match(r"[A-Za-z0-9_]", name) else f"p_{name}"


def _memory_settings(schema: SourceSchema, dest: Destination, home: Path) -> Settings:
    """Batch size and concurrency of the most similar successful extract in memory (fastest of the
    close ones), when the state folder has a memory."""
    from agent_etl.memory import MemoryLocked, MemoryUnavailable, memory_folder, open_memory, peek
    from agent_etl.memory.descriptor import TaskDescriptor

    if not (memory_folder(home) / "chroma").is_dir():
        return Settings()
    biggest = max(schema.tables, key=lambda t: (t.rows or 0, len(t.columns)))
    # the Arrow type names runs record in their profiles, so the columns compare with theirs
    arrow = {"integer": "int64", "number": "double", "text": "string", "timestamp": "timestamp[us]", "date": "date32",
             "bool": "bool"}
    columns = tuple((c.name, c.type if schema.url is None else arrow.get(c.category, c.type)) for c in biggest.columns)
    descriptor = TaskDescriptor(kind="extract", tool=biggest.tool, sources=(biggest.tool,),
                                destinations=(dest.tool,), schema=columns, rows=biggest.rows)
    where = {"status": "succeeded", "kind": "extract"}
    # read from Chroma's files without chromadb (~0.9 s of CPU to import) when that is sure to see
    # what opening the memory would (memory.peek)
    hits = peek.query(home, descriptor.to_json(), k=10, where=where)
    if hits is None:
        try:
            memory = open_memory("chroma", home)
        except (MemoryLocked, MemoryUnavailable) as e:
            log.warning("init: memory not used (%s)", e)
            return Settings()
        try:
            hits = memory.query(descriptor.to_json(), k=10, where=where)
        finally:
            memory.close()
    close = [h for h in hits if h.distance <= 0.5 and "batch_size" in h.record.metadata]
    if not close:
        return Settings()
    best = max(close, key=lambda h: float(h.record.metadata.get("rows_per_second", 0.0)))
    m = best.record.metadata
    values = {k: int(m[k]) for k in ("batch_size", "concurrency") if k in m}
    reason = (f"from memory: extract {m.get('task')!r} of pipeline {m.get('pipeline')!r} ({m.get('tool')}, "
              f"{float(m.get('rows_per_second', 0)):,.0f} rows/s) ran with these")
    return Settings(values, reason)


def generate(source: str, *, out: Path, dest: str | None = None, schemas: list[str] | None = None,
             memory: bool = True, home: Path | None = None, endpoint_url: str | None = None) -> Generated:
    """The pipeline for ``source``, to be written at ``out``; raises ``ToolError`` when the source
    cannot be read or holds nothing, ``SpecError`` for a source or destination it does not know."""
    out_dir = out.absolute().parent
    schema = introspect(source, out_dir, schemas=schemas, endpoint_url=endpoint_url)
    if not schema.tables:
        where = f" in schema(s) {', '.join(schemas)}" if schemas else ""
        raise ToolError(f"{schema.where} has no tables{where}: nothing to generate; create tables first, or point "
                        "init at another database or schema (--schema)")
    target = destination(dest, out_dir)
    env: dict[str, str] = {}
    source_url = dest_url = None
    if schema.url is not None:
        source_url, secret = without_password(schema.url, "SOURCE_PASSWORD")
        if secret:
            env["SOURCE_PASSWORD"] = f"the password of {schema.where} (URL-encoded if it has special characters)"
    for t in schema.tables:  # an API's credentials in its URL's query
        if isinstance(t.options.get("url"), str) and t.tool == "rest":
            t.options["url"], found = without_secret_params(t.options["url"])
            env.update(found)
    if target.url is not None:
        dest_url, secret = without_password(target.url, "DEST_PASSWORD")
        if secret:
            env["DEST_PASSWORD"] = f"the password of {target.where}"
    settings = Settings()
    if memory:
        from agent_etl.settings import Settings as Runtime

        runtime = Runtime()
        if runtime.memory == "chroma":  # the persistent memory runs leave behind (numpy lives in one process)
            settings = _memory_settings(schema, target, home or runtime.home_for(out_dir))
    text = render(schema, target, name=_name(schema), env=env, settings=settings, source_url=source_url,
                  dest_url=dest_url)
    _check(text, out_dir, env)
    return Generated(text, schema, env, settings.reason)


def _check(text: str, base_dir: Path, env: dict[str, str]) -> None:
    """The generated text validates (a failure here is a bug of init, said as such)."""
    from agent_etl.spec import Pipeline

    try:
        Pipeline.from_text(text, source="<generated>", base_dir=base_dir, variables={k: quote("x") for k in env})
    except SpecError as e:
        raise ToolError(f"init generated a pipeline that does not validate (a bug of agent-etl; please report it): "
                        f"{e}") from None
