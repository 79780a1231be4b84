"""Alembic migrations of the state database (run by `batchyard.adapters.database.migrate`)."""

HEAD_REVISION = "0009"
"""The newest revision in `versions/` (a test checks it against Alembic's head): a database
already there, or an empty one, is opened without importing Alembic at all."""
