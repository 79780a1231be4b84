"""Alembic migrations of the state database (run by `batchyard.adapters.database.migrate`)."""
