"""Migration 0005 on a database at 0004 that holds jobs: the cluster tables appear, and each
existing task's ClusterId is copied into `tasks.cluster_id` (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

from sqlalchemy import text

import batchyard.adapters.credentials  # noqa: F401  (its tables are part of the schema)
from batchyard.adapters.database import make_engine, migrate, migration_config


def test_migration_0005_adds_clusters_and_fills_the_tasks_cluster_ids(
        empty_database: str) -> None:
    from alembic import command

    engine = make_engine(empty_database)
    try:
        with engine.begin() as connection:
            config = migration_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0004")
            description = {"Name": "old", "DAG": {"Tasks": {
                "on": {"ClusterId": "cls-OLD"}, "off": {"ClusterId": ""}, "auto": {}}}}
            connection.execute(text(
                "INSERT INTO jobs (id, tenant, name, priority, state, message, "
                "fail_on_instance_fail, auto_release, created) VALUES "
                "('job-old', 't', 'old', 0, 'Waiting', '', true, false, 1.0)"))
            connection.execute(text(
                "INSERT INTO job_descriptions (job_id, description) VALUES ('job-old', :d)"),
                {"d": json.dumps(description)})
            for name in ("on", "off", "auto"):
                connection.execute(text(
                    "INSERT INTO tasks (job_id, name, state, ready, instance_count, "
                    "max_retry_count) VALUES ('job-old', :n, 'Waiting', true, 1, 0)"),
                    {"n": name})
        migrate(engine)
        with engine.connect() as connection:
            found = dict(connection.execute(text(
                "SELECT name, cluster_id FROM tasks ORDER BY name")).all())
            assert found == {"auto": "", "off": "", "on": "cls-OLD"}
            assert connection.execute(text("SELECT count(*) FROM clusters")).scalar() == 0
            assert connection.execute(text("SELECT count(*) FROM vms")).scalar() == 0
    finally:
        engine.dispose()
