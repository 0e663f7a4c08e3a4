"""The ``agent-etl`` command. This module imports only typer; each command imports what it needs
when it runs, so ``agent-etl --help`` stays fast."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from agent_etl.cli.cache import cache_app
from agent_etl.cli.command import Command
from agent_etl.cli.memory import memory_app

app = typer.Typer(name="agent-etl", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Run declarative ETL pipelines: extract, transform, check and load Arrow batches.")
tools_app = typer.Typer(no_args_is_help=True, help="The tools (extractors, transforms, checks, loaders) installed.")
export_app = typer.Typer(no_args_is_help=True, help="Write the pipeline for another scheduler.")
runs_app = typer.Typer(no_args_is_help=True, help="Past runs recorded in the run store.")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit trail of runs in the run store.")
app.add_typer(tools_app, name="tools")
app.add_typer(runs_app, name="runs")
app.add_typer(export_app, name="export")
app.add_typer(audit_app, name="audit")
app.add_typer(memory_app, name="memory")
app.add_typer(cache_app, name="cache")

Vars = Annotated[Optional[list[str]], typer.Option("--var", "-v", metavar="K=V", help="K=V, interpolated as ${K}; wins over the environment.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
Home = Annotated[Optional[str], typer.Option("--home", metavar="DIR", help="State folder holding the run store (default: "
                                                            "AGENT_ETL_HOME, else ./.agent-etl).")]


def _version(value: bool) -> None:
    if value:
        from agent_etl import __version__

        print(f"agent-etl {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Show the version and exit.")] = False) -> None:
    pass


MetricsPort = Annotated[Optional[int], typer.Option(
    "--metrics-port", metavar="PORT", min=0, max=65535, help="Serve Prometheus /metrics on this port while the run "
    "goes (address: AGENT_ETL_METRICS_HOST, default 127.0.0.1).")]
LogFormat = Annotated[Optional[str], typer.Option(
    "--log-format", metavar="text|json", help="Log lines as text (default) or one JSON object per line, each with "
    "the run id and task (AGENT_ETL_LOG_FORMAT).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")]
Profile = Annotated[Optional[str], typer.Option("--profile", "-p", metavar="ENV", help="Overlay configs/ENV.yaml (next "
                                                "to the pipeline, else in the working directory) on the pipeline "
                                                "(AGENT_ETL_PROFILE).")]
Force = Annotated[bool, typer.Option("--force", help="Resume even though the pipeline file changed since the run "
                                                     "started, with the file as it is now.")]
Bus = Annotated[Optional[str], typer.Option("--bus", metavar="BUS", help="Event bus: memory (in-process, the default; "
                                           "AGENT_ETL_BUS), or nats://host:4222 to send the run's branches to "
                                           "`agent-etl worker` processes.")]
NoMemory = Annotated[bool, typer.Option("--no-memory", help="Neither read nor store experience memory (as "
                                        "AGENT_ETL_MEMORY=off), e.g. when the memory folder cannot be opened.")]


@app.command(cls=Command)
def run(pipeline: Annotated[str, typer.Argument(metavar="PIPELINE", help="Pipeline YAML file.")], var: Vars = None, json: Json = False,
        quiet: Quiet = False,
        resume: Annotated[bool, typer.Option("--resume", help="Go on with the latest unfinished run of this pipeline "
                                                              "instead of starting a new one.")] = False,
        force: Force = False,
        bus: Bus = None,
        metrics_port: MetricsPort = None, log_format: LogFormat = None,
        limit: Annotated[Optional[int], typer.Option("--limit", metavar="N", min=1, help="Preview: read at most N rows "
                                                     "per source, write nothing to the destinations (the rows they "
                                                     "would get go to the state folder's preview/) and print them.")] = None,
        only: Annotated[Optional[str], typer.Option("--only", metavar="TASK", help="Run one step: its inputs come from "
                                                    "what an earlier --only run of them staged, else are run again "
                                                    "with it; a step that is not a load stages its output.")] = None,
        profile: Profile = None, no_memory: NoMemory = False) -> None:
    """Run a pipeline. Exit codes: 0 ok, 1 run failed, 2 bad spec/usage, 3 quality gate failed, 130 interrupted."""
    from agent_etl.cli.running import run_command

    _exit(lambda: run_command(pipeline, var or [], as_json=json, quiet=quiet, resume=resume, force=force, bus=bus,
                              metrics_port=metrics_port, log_format=log_format, limit=limit, only=only,
                              profile=profile, memory="off" if no_memory else None))


@app.command(cls=Command)
def resume(run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="Run id (a unique prefix is enough).")], var: Vars = None,
           json: Json = False, quiet: Quiet = False, force: Force = False, home: Home = None,
           no_memory: NoMemory = False) -> None:
    """Resume a failed, interrupted or crashed run: finished loads are not run again, a load that
    committed part of its input goes on after its last commit. Secrets are read again from the
    environment or --var."""
    from agent_etl.cli.running import resume_command

    _exit(lambda: resume_command(run_id, var or [], as_json=json, quiet=quiet, force=force, home=home,
                                 memory="off" if no_memory else None))


@app.command(cls=Command)
def validate(pipeline: Annotated[str, typer.Argument(metavar="PIPELINE", help="Pipeline YAML file.")], var: Vars = None,
             json: Json = False,
             connect: Annotated[bool, typer.Option("--connect", help="Also open every connection, read every source's "
                                                   "first row (its schema) through the transforms and quality checks, "
                                                   "and ask every destination; writes nothing.")] = False,
             profile: Profile = None) -> None:
    """Check a pipeline (structure, tools and their options, inputs, cycles) without running it."""
    from agent_etl.cli.running import validate_command

    _exit(lambda: validate_command(pipeline, var or [], as_json=json, connect=connect, profile=profile))


@app.command(cls=Command)
def plan(pipeline: Annotated[str, typer.Argument(metavar="PIPELINE", help="Pipeline YAML file.")], var: Vars = None,
         json: Json = False, profile: Profile = None, no_memory: NoMemory = False, bus: Bus = None) -> None:
    """Show the tasks in order: inputs, tool, quality gates, where each load writes; nothing runs."""
    from agent_etl.cli.running import plan_command

    _exit(lambda: plan_command(pipeline, var or [], as_json=json, profile=profile,
                               memory="off" if no_memory else None, bus=bus))


@app.command(cls=Command)
def schema(out: Annotated[Optional[str], typer.Option("--out", "-o", metavar="PATH", help="File to write (default: "
                                                      "stdout).")] = None) -> None:
    """Print the JSON Schema of pipeline files, for editors (docs/editors.md)."""
    from agent_etl.cli.schema import schema_command

    _exit(lambda: schema_command(out))


@export_app.command("airflow", cls=Command)
def export_airflow(pipeline: Annotated[str, typer.Argument(metavar="PIPELINE", help="Pipeline YAML file.")],
                   out: Annotated[Optional[str], typer.Option("--out", "-o", metavar="PATH", help="DAG file to write "
                                                              "(default: <pipeline name>_dag.py here; '-': stdout).")] = None,
                   schedule: Annotated[Optional[str], typer.Option(metavar="CRON", help="The DAG's schedule (default: "
                                                                   "none, triggered by hand).")] = None,
                   var: Vars = None, profile: Profile = None) -> None:
    """Write an Airflow DAG running each step with `agent-etl run --only STEP`, in the plan's order."""
    from agent_etl.cli.export import airflow_command

    _exit(lambda: airflow_command(pipeline, out, schedule, var or [], profile))


@app.command(cls=Command)
def init(source: Annotated[str, typer.Argument(metavar="SOURCE", help="postgresql://..., mysql://... (mariadb), "
                                               "sqlite:///file.db, a .duckdb file, a data file, folder or glob, "
                                               "s3://bucket/prefix/*.parquet, or an https:// JSON URL.")],
         dest: Annotated[Optional[str], typer.Option("--dest", metavar="DEST", help="Where to load: a folder (a "
                                                     "Parquet lake; default ./out), s3://..., or a database url.")] = None,
         out: Annotated[str, typer.Option("--out", "-o", metavar="PATH", help="Pipeline file to write ('-': "
                                          "stdout).")] = "pipeline.yaml",
         schema: Annotated[Optional[list[str]], typer.Option("--schema", metavar="NAME", help="PostgreSQL schema(s) "
                                                             "to read (default: every user schema).")] = None,
         force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
         no_memory: Annotated[bool, typer.Option("--no-memory", help="Do not take defaults from similar past "
                                                 "pipelines in memory.")] = False,
         endpoint_url: Annotated[Optional[str], typer.Option("--endpoint-url", metavar="URL", help="S3-compatible "
                                                             "server for an s3:// source.")] = None) -> None:
    """Write a pipeline for a source: one extract per table or file, incremental cursors, quality checks from
    the constraints, merge keys from primary keys. Passwords become ${VAR} references."""
    from agent_etl.cli.init import init_command

    _exit(lambda: init_command(source, dest, out, schemas=schema or [], force=force, memory=not no_memory,
                               endpoint_url=endpoint_url))


@tools_app.command("list", cls=Command)
def tools_list(kind: Annotated[Optional[str], typer.Option(metavar="KIND", help="extractor, transform, validator or loader.")] = None,
               json: Json = False) -> None:
    """List the installed tools with their options."""
    from agent_etl.cli.tools import tools_command

    _exit(lambda: tools_command(kind, as_json=json))


@app.command(cls=Command)
def events(run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="Run id (a unique prefix is enough).")],
           follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing events as the run goes, "
                                                "until it ends.")] = False,
           json: Annotated[bool, typer.Option("--json", help="One JSON object per event.")] = False,
           home: Home = None) -> None:
    """Print a run's events (tasks assigned, started, progress, commits, quality, failures) from the run store."""
    from agent_etl.cli.events import events_command

    _exit(lambda: events_command(run_id, follow=follow, as_json=json, home=home))


@runs_app.command("list", cls=Command)
def runs_list(limit: Annotated[int, typer.Option(metavar="N", help="How many runs, newest first.")] = 20,
              pipeline: Annotated[Optional[str], typer.Option(
                  metavar="NAME|FILE", help="Only runs of this pipeline: its name, or its YAML file (whose state folder is read).")] = None,
              status: Annotated[Optional[str], typer.Option(
                  metavar="STATUS", help="Only runs with this status: running, succeeded, warned, failed, "
                  "quality_failed, interrupted or crashed.")] = None,
              json: Json = False, home: Home = None) -> None:
    """List recent runs."""
    from agent_etl.cli.runs import list_command

    _exit(lambda: list_command(limit, pipeline, as_json=json, home=home, status=status))


@runs_app.command("show", cls=Command)
def runs_show(run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="Run id (a unique prefix is enough).")],
              json: Json = False, home: Home = None) -> None:
    """Show one run: its tasks, rows, durations, agents and errors."""
    from agent_etl.cli.runs import show_command

    _exit(lambda: show_command(run_id, as_json=json, home=home))


@audit_app.command("verify", cls=Command)
def audit_verify(run_id: Annotated[Optional[str], typer.Argument(metavar="RUN_ID", help="Run id (a unique prefix is "
                                                                  "enough); left out, every run in the store.")] = None,
                 json: Json = False, home: Home = None) -> None:
    """Check the audit chain: exit 0 if intact, 1 naming the first record edited, deleted, inserted or
    reordered. Keyed chains need AGENT_ETL_AUDIT_KEY."""
    from agent_etl.cli.audit import verify_command

    _exit(lambda: verify_command(run_id, as_json=json, home=home))


@audit_app.command("show", cls=Command)
def audit_show(run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="Run id (a unique prefix is enough).")],
               json: Json = False, home: Home = None) -> None:
    """Show the audit records of a run: sequence, time, kind, task, data and hash."""
    from agent_etl.cli.audit import show_command

    _exit(lambda: show_command(run_id, as_json=json, home=home))


@app.command(cls=Command)
def report(run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="Run id (a unique prefix is enough).")],
           format: Annotated[Optional[str], typer.Option(
               "--format", "-f", metavar="FORMAT", help="html (default), json, csv or xlsx; left out, the extension of --out.")] = None,
           out: Annotated[Optional[str], typer.Option(
               "--out", "-o", metavar="PATH", help="File or directory to write; '-' for stdout. Default: report-RUN_ID.EXT here.",
           )] = None,
           history: Annotated[int, typer.Option(metavar="N", help="How many earlier runs of the pipeline to compare with.")] = 20,
           home: Home = None) -> None:
    """Write the quality report of a run: checks, failing rows, profile charts, anomalies, history."""
    from agent_etl.cli.report import report_command

    _exit(lambda: report_command(run_id, format, out, history, home))


@app.command(cls=Command)
def worker(bus: Annotated[str, typer.Option("--bus", metavar="BUS", help="The broker: nats://host:port (AGENT_ETL_BUS).",
                                            envvar="AGENT_ETL_BUS")],
           concurrency: Annotated[int, typer.Option("--concurrency", "-c", metavar="N", min=1,
                                                    help="Branches run at once.")] = 1,
           tags: Annotated[Optional[list[str]], typer.Option("--tags", metavar="TAG", help="Tags this worker "
                                                             "advertises (repeat or comma-separate).")] = None,
           heartbeat: Annotated[float, typer.Option("--heartbeat", metavar="SECONDS", min=0.1,
                                                    help="Seconds between heartbeats; three missed and its "
                                                         "branches go to another worker.")] = 1.0,
           metrics_port: Annotated[Optional[int], typer.Option(
               "--metrics-port", metavar="PORT", min=0, max=65535, help="Serve Prometheus /metrics of this worker's "
               "work (rows, batches, durations, commits) on this port.")] = None,
           log_format: LogFormat = None) -> None:
    """Run branches of pipelines started with `agent-etl run --bus nats://...`, until SIGTERM (which
    lets the running branches finish; a second one hands them back)."""
    from agent_etl.cli.worker import worker_command

    _exit(lambda: worker_command(bus, concurrency, [t for v in tags or [] for t in v.split(",") if t], heartbeat,
                                 metrics_port, log_format))


def _exit(command) -> None:
    """Run a command body; turn our errors into a message and an exit code, never a traceback."""
    from agent_etl.exceptions import AgentETLError

    try:
        code = command() or 0
    except AgentETLError as e:
        print(f"error: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
