"""Alembic environment: migrates the connection handed over by `database.migrate`, or, from
the `alembic` command line, the database of `BATCHYARD_DATABASE_URL` / the settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import batchyard.adapters.credentials  # noqa: F401  (registers the API's tables on metadata)
from batchyard.adapters.schema import metadata


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    from batchyard.adapters.database import make_engine
    from batchyard.settings import Settings

    url = context.config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url
    with make_engine(url).begin() as opened:
        run(opened)


main()
