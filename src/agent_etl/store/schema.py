"""Tables of the run store (SQLAlchemy Core)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("pipeline", String(200), nullable=False, index=True),
    Column("fingerprint", String(32)),
    Column("spec_path", Text),
    Column("status", String(20), nullable=False),
    Column("exit_code", Integer),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("duration", Float),
    Column("rows_loaded", Integer, default=0),
    Column("error", Text),
    # the run as data (agent_etl.run_context.RunDescription): what `agent-etl resume` rebuilds it from
    Column("description", JSON),
    # the lease of the process running it: a run whose lease ran out, or whose process on this host
    # is gone, is shown as crashed (RunStore.status)
    Column("owner", String(200)),  # host:pid
    Column("heartbeat_at", Float),
    Column("resumes", Integer, default=0),
    # where each incremental source started ({extract: mark}): a resume reads after the same bound
    Column("cursors", JSON),
)

tasks = Table(
    "tasks", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("task", String(200), primary_key=True),
    Column("position", Integer, nullable=False),  # order in the plan
    Column("kind", String(20), nullable=False),
    Column("tool", String(100), nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("agent", String(100)),
    Column("reason", Text),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, default=0),
    Column("rows", Integer, default=0),
    Column("batches", Integer, default=0),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("duration", Float),
    Column("error", Text),
    Column("details", JSON),
)

checkpoints = Table(
    "checkpoints", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("task", String(200), nullable=False),
    Column("pipeline", String(200), nullable=False),
    Column("position", JSON),
    Column("rows", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_checkpoints_pipeline_task", "pipeline", "task"),
)

# the commit barrier's decisions (agents.commits): unit ``unit`` of load ``task`` (counting the load's
# commit rounds from 1) is to commit. A load that prepared its unit (XA) and crashed before its commit
# is settled by it: commit if the decision is here, else roll back
decisions = Table(
    "decisions", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("task", String(200), primary_key=True),
    Column("unit", Integer, primary_key=True),
    Column("decided_at", Float, nullable=False),
)

# what a task carries from one successful run to the next (an incremental cursor's high-water mark)
state = Table(
    "state", metadata,
    Column("pipeline", String(200), primary_key=True),
    Column("task", String(200), primary_key=True),
    Column("value", JSON),
    Column("run_id", String(64), nullable=False),
    Column("updated_at", Float, nullable=False),
)

# one data profile per quality-gated input of a run (agent_etl.quality.profile), and the anomalies
# found comparing it with earlier runs; the history of an input is read by (pipeline, input)
profiles = Table(
    "profiles", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("input", String(200), primary_key=True),
    Column("pipeline", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("profile", JSON, nullable=False),
    Column("anomalies", JSON),
    Index("ix_profiles_pipeline_input", "pipeline", "input", "created_at"),
)

# the audit trail (store.audit): per run, records chained by hash; appended only, never updated
audit = Table(
    "audit", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),  # 1, 2, ... within the run
    Column("at", Float, nullable=False),
    Column("kind", String(40), nullable=False),  # run.started, task.finished, commit, quality.gate, ...
    Column("task", String(200)),
    Column("data", Text),  # canonical JSON text, hashed as it is stored
    Column("alg", String(16), nullable=False),  # sha256, or hmac-sha256 under AGENT_ETL_AUDIT_KEY
    Column("prev", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
