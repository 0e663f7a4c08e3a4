"""``agent-etl report RUN_ID [--format html|json|csv|xlsx] [--out PATH] [--history N]``.

Writes the quality report of one run (a unique prefix of its id is enough) from the run store:
per input the gate's checks with failed/passed row counts and sample failing rows, the data
profile with small charts, anomalies against history, and the row counts of the last ``N`` runs.

- ``--format``: ``html`` (default; one self-contained file), ``json`` (the report model),
  ``csv`` (one long table, columns documented in ``agent_etl.report.flat``) or ``xlsx``. Left out,
  it follows the extension of ``--out``.
- ``--out``: the file to write; a directory gets ``report-<run_id>.<ext>`` inside it; ``-`` writes
  to standard output. Default: ``report-<run_id>.<ext>`` in the working directory.
- ``--history``: how many earlier runs of the pipeline the history covers (default 20; 0 for none).

Exit codes: 0 written, 2 unknown run or bad option, 1 the file could not be written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agent_etl.exceptions import SpecError, ToolError


def report_command(run_id: str, fmt: str | None, out: str | None, history_runs: int, home: str | None = None) -> int:
    from agent_etl.report import FORMATS, model, render

    fmt = _format(fmt, out, FORMATS)
    if history_runs < 0:
        raise SpecError(f"--history {history_runs}: give the number of earlier runs to show, 0 or more")
    from agent_etl.cli.runs import open_store

    store, _ = open_store(home)
    try:
        report = model.build(store, run_id, history_runs=history_runs)
    finally:
        store.close()
    data = render(report, fmt)
    rid = report["run"]["run_id"]
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    path = _target(out, rid, fmt)
    _write(path, data)
    print(f"wrote the {fmt} quality report of run {rid} ({report['run']['pipeline']}) to {path}")
    return 0


def _format(fmt: str | None, out: str | None, formats: tuple[str, ...]) -> str:
    if fmt is None:
        suffix = Path(out).suffix.lstrip(".").lower() if out and out != "-" else ""
        return suffix if suffix in formats else "html"
    if fmt.lower() not in formats:
        raise SpecError(f"--format {fmt!r} is not a report format; use one of {', '.join(formats)}")
    return fmt.lower()


def _target(out: str | None, run_id: str, fmt: str) -> Path:
    name = f"report-{run_id}.{fmt}"
    if out is None:
        return Path.cwd() / name
    path = Path(out).expanduser().absolute()
    return path / name if path.is_dir() else path


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same directory, so a reader never sees half a report."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:  # not mkstemp: the report gets the umask's permissions, not 0600
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as e:
        raise ToolError(f"cannot write the report to {path}: {e.strerror or e}; choose another --out path "
                        "(a writable directory)") from e
