"""Opening the state database: one SQLAlchemy engine per URL, migrated to the newest schema.

SQLite (the default) runs in WAL mode with foreign keys on; PostgreSQL runs through psycopg 3
(`postgresql://…` is read as `postgresql+psycopg://…`). The schema is owned by the Alembic
migrations in `batchyard.migrations`: `migrate` upgrades a database to head, holding a lock so
that two processes opening a fresh database at once do not both create it. Alembic is slow to
import (a quarter of a second), so the two common cases skip it: a database already at the
newest revision is left alone, and an empty one gets `metadata.create_all` and is stamped
with that revision (Alembic's "build an up-to-date database from scratch" recipe).
"""

from __future__ import annotations

import threading
import weakref
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

if TYPE_CHECKING:
    from alembic.config import Config
from batchyard.errors import BatchyardError
from batchyard.migrations import HEAD_REVISION

POOL_SIZE = 10
"""Connections kept open: the engine's thread plus the API's request threads reading."""
MAX_OVERFLOW = 20
"""Extra connections opened under load (and closed when returned)."""
MIGRATION_LOCK = 0x62617463  # "batc": the PostgreSQL advisory lock held while migrating

_VERSIONS = Table("alembic_version", MetaData(),
                  Column("version_num", String(32), nullable=False),
                  PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))
"""Alembic's own version table, as Alembic creates it."""

_migrated: weakref.WeakSet[Engine] = weakref.WeakSet()
_migrating = threading.Lock()


class DatabaseError(BatchyardError):
    """The database URL cannot be used."""

    code = "InvalidDatabase"
    status = 500


def normalized_url(url: str) -> str:
    """The URL with PostgreSQL's default driver replaced by psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def open_engine(url: str) -> Engine:
    """An engine for the state database at `url`, its schema migrated to head."""
    engine = make_engine(url)
    migrate(engine)
    return engine


def make_engine(url: str) -> Engine:
    """An engine with sane pool settings for one writer thread and many reader threads."""
    url = normalized_url(url)
    if url.startswith("sqlite:///"):
        return _sqlite_engine(url)
    if url.startswith("postgresql+psycopg:") and find_spec("psycopg") is None:
        raise DatabaseError("PostgreSQL needs the psycopg driver: "
                            "pip install 'batchyard[postgres]'")
    return create_engine(url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW,
                         pool_pre_ping=True, pool_recycle=3600)


def _sqlite_engine(url: str) -> Engine:
    path = url.removeprefix("sqlite:///")
    pool: dict[str, int] = {}
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pool = {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW}
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                           **pool)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def migration_config() -> Config:
    """Alembic's configuration, built in code (no alembic.ini is needed at run time)."""
    from alembic.config import Config  # imported when needed: it is slow to import

    config = Config()
    config.set_main_option("script_location", "batchyard:migrations")
    return config


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest revision (once per engine and process)."""
    with _migrating:
        if engine in _migrated:
            return
        with engine.begin() as connection:
            _lock_for_migration(connection)
            if not _at_head(connection):
                _upgrade(connection)
        _migrated.add(engine)


def _at_head(connection: Connection) -> bool:
    """Whether the database is at the newest revision, after creating it there if empty."""
    tables = set(inspect(connection).get_table_names())
    if not tables:
        import batchyard.adapters.credentials  # noqa: F401  (its tables are in the metadata)
        from batchyard.adapters.schema import metadata

        metadata.create_all(connection, checkfirst=False)  # nothing to check: it is empty
        _VERSIONS.create(connection)
        connection.execute(_VERSIONS.insert(), [{"version_num": HEAD_REVISION}])
        return True
    if _VERSIONS.name not in tables:
        return False
    return connection.execute(_VERSIONS.select()).scalar() == HEAD_REVISION


def _upgrade(connection: Connection) -> None:
    config = migration_config()
    config.attributes["connection"] = connection
    from alembic import command

    command.upgrade(config, "head")


_INSERTS: dict[tuple[str, str], Any] = {}


def insert_ignoring_duplicates(connection: Connection, table: Table) -> Any:
    """`INSERT … ON CONFLICT DO NOTHING` into `table` for the connection's dialect (SQLite or
    PostgreSQL; built once per dialect and table)."""
    dialect = connection.dialect.name
    statement = _INSERTS.get((dialect, table.name))
    if statement is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            statement = postgresql.insert(table).on_conflict_do_nothing()
        else:
            from sqlalchemy.dialects import sqlite

            statement = sqlite.insert(table).on_conflict_do_nothing()
        _INSERTS[(dialect, table.name)] = statement
    return statement


def _lock_for_migration(connection: Connection) -> None:
    """Serialise migrations across processes, until the migrating transaction ends."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")


__all__ = ["DatabaseError", "insert_ignoring_duplicates", "make_engine", "migrate",
           "migration_config", "normalized_url", "open_engine"]
