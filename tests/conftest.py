"""Fixtures shared by every suite: a throwaway PostgreSQL cluster, started on first use."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.postgres import PostgresCluster, PostgresMissing, start_cluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One cluster per session; in CI (`CI=true`) a missing PostgreSQL fails the tests."""
    try:
        cluster = start_cluster()
    except PostgresMissing as missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{missing} (CI must run the PostgreSQL tests)", pytrace=False)
        pytest.skip(str(missing))
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of a new, empty database of the session's cluster."""
    return postgres_cluster.create_database()
