"""Tables of the state store (SQLAlchemy Core). Times are UTC epoch seconds (float)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from batchyard.domain.states import State

metadata = MetaData()

COUNT_COLUMNS = {state: f"instances_{state.value.lower()}" for state in State}
"""The column of the tasks table counting its instances in each state."""
TASK_COUNT_COLUMNS = {state: f"tasks_{state.value.lower()}" for state in State}
"""The column of the jobs table counting its tasks in each state."""

jobs = Table(
    "jobs", metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("message", Text, nullable=False, default=""),
    Column("fail_on_instance_fail", Boolean, nullable=False),
    Column("auto_release", Boolean, nullable=False),
    Column("created", Float, nullable=False, index=True),
    Column("started", Float),
    Column("ended", Float),
    *(Column(column, Integer, nullable=False, default=0, server_default="0")
      for column in TASK_COUNT_COLUMNS.values()),
)
"""A job's tasks per state are kept in its row (`TASK_COUNT_COLUMNS`), as a task's instances
are in the task's: an outcome that ends a task costs the same in a job of 5,000 tasks."""

job_descriptions = Table(
    "job_descriptions", metadata,
    Column("job_id", String(40), primary_key=True),
    Column("description", Text, nullable=False),
    ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
)
"""Each job's description (JSON), apart from its row: it holds every task (a megabyte for a
job of thousands), and the job row changes with every task that starts or ends — SQLite
writes a row whole when its size changes, so a description in it was written again each
time."""

tasks = Table(
    "tasks", metadata,
    Column("job_id", String(40), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("ready", Boolean, nullable=False, default=False),
    Column("instance_count", Integer, nullable=False),
    Column("max_retry_count", Integer, nullable=False),
    Column("started", Float),
    Column("ended", Float),
    *(Column(column, Integer, nullable=False, default=0, server_default="0")
      for column in COUNT_COLUMNS.values()),
    Column("cluster_id", String(40), nullable=False, default="", server_default="",
           index=True),
    ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
)
"""A task's instances per state are kept in its row (`COUNT_COLUMNS`), changed in the same
transaction as the instances: counting them costs one row, whatever the instance count."""

instances = Table(
    "instances", metadata,
    Column("job_id", String(40), primary_key=True),
    Column("task", String(64), primary_key=True),
    Column("instance_id", Integer, primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
    Column("retry_count", Integer, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lost", Integer, nullable=False, default=0, server_default="0"),
    Column("started", Float),
    Column("ended", Float),
    Column("exit_code", Integer),
    Column("error_code", String(64), nullable=False, default=""),
    Column("error_message", Text, nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Column("stdout_path", Text, nullable=False, default=""),
    Column("stderr_path", Text, nullable=False, default=""),
    Column("node", String(255), nullable=False, default=""),
    ForeignKeyConstraint(["job_id", "task"], ["tasks.job_id", "tasks.name"], ondelete="CASCADE"),
    Index("ix_instances_state", "state", "job_id", "task", "instance_id"),
)

attempts = Table(
    "attempts", metadata,
    Column("job_id", String(40), primary_key=True),
    Column("task", String(64), primary_key=True),
    Column("instance_id", Integer, primary_key=True, autoincrement=False),
    Column("attempt", Integer, primary_key=True, autoincrement=False),
    Column("started", Float),
    Column("ended", Float),
    Column("exit_code", Integer),
    Column("error_code", String(64), nullable=False, default=""),
    Column("error_message", Text, nullable=False, default=""),
    Column("stdout_path", Text, nullable=False, default=""),
    Column("stderr_path", Text, nullable=False, default=""),
    Column("worker", String(40), nullable=False, default="", server_default=""),
    Column("program_started", Float),
    ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
)
"""One row per ended attempt; `worker`: the VM it ran on; `program_started`: when its program
started, after staging (NULL: it never did, or the row is older than migration 0007)."""

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(40), nullable=False, index=True),
    Column("task", String(64), nullable=False, default=""),
    Column("instance_id", Integer),
    Column("kind", String(16), nullable=False),
    Column("source", String(16), nullable=False, default=""),
    Column("target", String(16), nullable=False),
    Column("time", Float, nullable=False),
    Column("message", Text, nullable=False, default=""),
    Index("ix_events_job_order", "job_id", "id"),
    sqlite_autoincrement=True,
)
"""Every committed change (and priority change) of a job, task or instance, in commit order:
the event stream's cursor is the id. Ids are never reused (AUTOINCREMENT on SQLite, a
sequence on PostgreSQL), so a cursor past a deleted job's events misses no later event;
(job_id, id) orders one job's events (its `Seq`: see `adapters.reads.events_since`)."""

buckets = Table(
    "buckets", metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(64), nullable=False, index=True),
    Column("created", Float, nullable=False),
)
"""Buckets claimed by the tenant whose job named them first (configured ones are not here)."""

clusters = Table(
    "clusters", metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("description", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created", Float, nullable=False),
    Column("operation_logs", Text, nullable=False, default="[]"),
)
"""Clusters (reference §7): the whole description (JSON, every change merged in) and the
newest OperationLogs (a JSON array of strings). A deleted cluster's row is removed."""

vms = Table(
    "vms", metadata,
    Column("id", String(40), primary_key=True),
    Column("cluster_id", String(40), nullable=False),
    Column("group_name", String(64), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("instance_type", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("host", String(255), nullable=False, default=""),
    Column("ip_address", String(64), nullable=False, default=""),
    Column("host_name", String(255), nullable=False, default=""),
    Column("error_code", Integer, nullable=False, default=0),
    Column("error_message", Text, nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Index("ix_vms_cluster", "cluster_id", "group_name", "state"),
)
"""The VMs of cluster groups (agents). A Deleted VM's row is removed."""

# ---- webhooks (adapters/webhooks.py) ----------------------------------------------------

webhook_endpoints = Table(
    "webhook_endpoints", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Index("ix_webhook_endpoints_address", "tenant", "url", unique=True),
)
"""A tenant's URL that jobs' Notification topics name (Active, or Disabled with a reason)."""

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Integer, nullable=False),
    Column("endpoint_id", Integer, nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("job_id", String(40), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("event_time", Float, nullable=False),
    Column("data", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", Float, nullable=False),
    Column("last_status", Integer),
    Column("last_error", Text, nullable=False, default=""),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Index("ix_webhook_deliveries_once", "event_id", "endpoint_id", unique=True),
    Index("ix_webhook_deliveries_queue", "state", "endpoint_id", "event_id"),
    Index("ix_webhook_deliveries_tenant", "tenant", "id"),
    sqlite_autoincrement=True,
)
"""One event for one endpoint: Pending until delivered or failed (then kept, replayable).
`data` is the §10 message as JSON, fixed when the delivery is made."""

webhook_cursor = Table(
    "webhook_cursor", metadata,
    Column("name", String(32), primary_key=True),
    Column("event_id", Integer, nullable=False),
)
"""The id of the last event the outbox dispatcher handled (one row, "outbox")."""

webhook_secrets = Table(
    "webhook_secrets", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("secret", Text, nullable=False),
    Column("created", Float, nullable=False),
    Column("retired", Float),
)
"""A tenant's signing secrets, encrypted with the master key: the current one (`retired`
null) and those rotated out, which sign for 24 h more."""
