"""The Alembic migrations build exactly the schema of `metadata`, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

import batchyard.adapters.credentials  # noqa: F401  (its tables are part of the schema)
from batchyard.adapters.database import (
    make_engine,
    migrate,
    migration_config,
    normalized_url,
    open_engine,
)
from batchyard.adapters.schema import metadata


def head() -> str | None:
    return ScriptDirectory.from_config(migration_config()).get_current_head()


def alembic_upgrade(url: str) -> None:
    """Run the migrations themselves (open_engine would build an empty database directly)."""
    from alembic import command

    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = migration_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


@pytest.mark.parametrize("build", ["migrations", "from scratch"])
def test_the_migrated_schema_equals_the_metadata(empty_database: str, build: str) -> None:
    from alembic.autogenerate import compare_metadata

    if build == "migrations":
        alembic_upgrade(empty_database)
    engine = open_engine(empty_database)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            assert context.get_current_revision() == head()
            assert set(inspect(connection).get_table_names()) == {
                *metadata.tables, "alembic_version"}
    finally:
        engine.dispose()


def test_the_head_constant_is_alembics_head() -> None:
    from batchyard.migrations import HEAD_REVISION

    assert head() == HEAD_REVISION


def test_alembic_finds_nothing_to_do_on_a_database_made_from_scratch(
        empty_database: str) -> None:
    from alembic import command

    engine = open_engine(empty_database)  # created with create_all and stamped
    try:
        with engine.begin() as connection:
            config = migration_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert context.get_current_revision() == head()
            assert compare_metadata_of(context) == []
    finally:
        engine.dispose()


def compare_metadata_of(context: MigrationContext) -> list[object]:
    from alembic.autogenerate import compare_metadata

    return list(compare_metadata(context, metadata))


def test_migrating_twice_changes_nothing(empty_database: str) -> None:
    for _ in range(2):
        engine = make_engine(empty_database)
        migrate(engine)
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == head()
        engine.dispose()


def test_processes_opening_a_fresh_database_at_once_migrate_it_once(empty_database: str) -> None:
    code = ("import sys; from batchyard.adapters.database import open_engine; "
            "open_engine(sys.argv[1]).dispose()")
    processes = [subprocess.Popen([sys.executable, "-c", code, empty_database],
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for process in processes:
        _, errors = process.communicate(timeout=60)
        assert process.returncode == 0, errors


def test_postgresql_urls_use_psycopg_3() -> None:
    assert normalized_url("postgresql://u:p@127.0.0.1:5/db") == (
        "postgresql+psycopg://u:p@127.0.0.1:5/db")
    assert normalized_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalized_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_a_database_made_before_the_migrations_is_adopted(empty_database: str) -> None:
    from batchyard.adapters.schema import jobs, tasks

    engine = make_engine(empty_database)
    metadata.create_all(engine, tables=[table for name, table in metadata.tables.items()
                                        if name not in ("access_keys", "idempotency_tokens")])
    with engine.begin() as connection:
        connection.execute(jobs.insert(), [{
            "id": "job-old", "tenant": "t", "name": "n", "priority": 0, "state": "Finished",
            "message": "", "fail_on_instance_fail": True, "auto_release": False,
            "created": 1.0, "description": "{}"}])
        connection.execute(tasks.insert(), [{
            "job_id": "job-old", "name": "a", "state": "Finished", "ready": True,
            "instance_count": 1, "max_retry_count": 0}])
    migrate(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == head()
        assert connection.execute(jobs.select()).one().id == "job-old"
        assert "access_keys" in inspect(connection).get_table_names()
    engine.dispose()


def alembic_to(url: str, revision: str, down: bool = False) -> None:
    """Upgrade (or downgrade) a database to `revision` with the migrations themselves."""
    from alembic import command

    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = migration_config()
            config.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(config, revision)
    finally:
        engine.dispose()


def test_0007_adds_program_started_to_the_attempts_kept(empty_database: str) -> None:
    """An attempt recorded before 0007 keeps its row, with no program start (NULL), and a
    new attempt records one; downgrading drops the column and keeps the rows."""
    import sqlalchemy as sa

    alembic_to(empty_database, "0006")
    old = {"job_id": "job-old", "task": "a", "instance_id": 0, "attempt": 1, "started": 10.0,
           "ended": 20.0, "exit_code": 0, "error_code": "", "error_message": "",
           "stdout_path": "", "stderr_path": "", "worker": "vm-1"}
    engine = make_engine(empty_database)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO jobs (id, tenant, name, priority, state, message, "
            "fail_on_instance_fail, auto_release, created) VALUES "
            "('job-old', 't', 'n', 0, 'Finished', '', true, false, 1.0)"))
        columns = ", ".join(old)
        connection.execute(sa.text(f"INSERT INTO attempts ({columns}) VALUES "
                                   f"({', '.join(':' + name for name in old)})"), old)
    engine.dispose()
    alembic_to(empty_database, "0007")
    engine = make_engine(empty_database)
    with engine.begin() as connection:
        from batchyard.adapters.schema import attempts

        row = connection.execute(attempts.select()).one()
        assert (row.started, row.ended, row.worker, row.program_started) == (
            10.0, 20.0, "vm-1", None)
        connection.execute(attempts.insert(), [{**old, "attempt": 2, "program_started": 12.5}])
        assert connection.execute(sa.select(attempts.c.program_started)
                                  .order_by(attempts.c.attempt)).scalars().all() == [None, 12.5]
    engine.dispose()
    alembic_to(empty_database, "0006", down=True)
    engine = make_engine(empty_database)
    with engine.connect() as connection:
        assert "program_started" not in {
            column["name"] for column in inspect(connection).get_columns("attempts")}
        assert connection.execute(sa.text("SELECT count(*) FROM attempts")).scalar() == 2
    engine.dispose()
