"""What only the SQL store has, on SQLite and PostgreSQL: keys and tokens, nonces, one engine
per database, a DAG run on each (the state-store port itself: test_state_store_contract.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.adapters.credentials import KeyStore, TokenLedger, master_key
from batchyard.adapters.store import (
    DatabaseBusy,
    IdempotencyToken,
    NewJob,
    SqlStore,
    TokenTaken,
)
from batchyard.domain.attempt import AttemptKey
from batchyard.domain.outcome import Outcome
from batchyard.domain.spec import parse_job
from batchyard.domain.states import State
from batchyard.ports.store import AttemptEnd
from batchyard.service import open_engine
from batchyard.settings import Settings
from tests.integration.conftest import make_job, make_task


@pytest.fixture
def database_url(empty_database: str) -> str:
    return empty_database


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    opened = SqlStore(database_url)
    yield opened
    opened.close()


def create(store: SqlStore, job_id: str, job: dict[str, Any], now: float = 1000.0,
           tenant: str = "alice") -> str:
    with store.transaction() as tx:
        tx.create_job(job_id, tenant, parse_job(job), now)
    return job_id


def two_step_job(priority: int = 0) -> dict[str, Any]:
    return make_job({"first": make_task("true", 2), "second": make_task("true")},
                    {"first": ["second"]}, Priority=priority)


def ended(job_id: str, task: str, index: int, attempt: int, now: float,
          exit_code: int | None = 0) -> AttemptEnd:
    """Attempt `attempt` of the instance ended at `now`, with `exit_code`."""
    return AttemptEnd(AttemptKey(job_id, task, index, attempt), Outcome(exit_code), 0, now)


def test_keys_and_idempotency_tokens(store: SqlStore, tmp_path: Path) -> None:
    keys = KeyStore(store.engine, master_key(tmp_path / "keys"))
    key = keys.create("alice", "contract")
    found = keys.lookup(key.id)
    assert found is not None and found.secret == key.secret
    assert keys.revoke(key.id).revoked is not None
    tokens = TokenLedger(store.engine)
    assert tokens.find("alice", "jobs", "t-1") is None
    token = IdempotencyToken("jobs", "t-1", "digest")
    store.create_job(NewJob("job-1", "alice", parse_job(two_step_job()), 1000.0, token))
    with pytest.raises(TokenTaken):  # the same token again: nothing is made
        store.create_job(NewJob("job-2", "alice", parse_job(two_step_job()), 1001.0, token))
    found = tokens.find("alice", "jobs", "t-1")
    assert found is not None and found.resolved("t-1", "digest") == "job-1"
    assert store.job("job-2") is None and tokens.find("bob", "jobs", "t-1") is None


def test_the_engine_runs_a_dag_with_a_retry_to_finished(database_url: str,
                                                        tmp_path: Path) -> None:
    counter = tmp_path / "count"
    flaky = f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; [ "$n" -ge 1 ]'
    job = make_job({"prepare": make_task("true", 2), "flaky": make_task(flaky, MaxRetryCount=1)},
                   {"prepare": ["flaky"]})
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, slots=2)
    with open_engine(settings) as engine:
        job_id = engine.submit(job)
        assert engine.wait(job_id, timeout=60).state is State.FINISHED
        flaky_instance, = engine.instances(job_id, "flaky")
        assert flaky_instance.retry_count == 1
        assert [a.exit_code for a in engine.attempts(job_id, "flaky", 0)] == [1, 0]


def test_one_engine_per_postgresql_database(postgres_url: str, tmp_path: Path) -> None:
    """Engines with different data dirs must not share a database: each would re-queue the
    other's running instances when it starts."""

    def settings(name: str) -> Settings:
        return Settings(data_dir=tmp_path / name, database_url=postgres_url, slots=1)

    with open_engine(settings("first")), pytest.raises(DatabaseBusy, match="one engine"):
        open_engine(settings("second"))
    with open_engine(settings("second")):  # given back when the first engine closed
        pass


def test_signature_nonces_outlive_the_registry_until_their_window_ends(
        database_url: str) -> None:
    from batchyard.adapters.credentials import NonceLedger
    from batchyard.api.authentication import NonceRegistry

    store = SqlStore(database_url)
    now = [1_000_000.0]
    try:
        first = NonceRegistry(lambda: now[0], NonceLedger(store.engine, lambda: now[0]))
        assert first.first_use("KEY1", "nonce-a", now[0])
        assert not first.first_use("KEY1", "nonce-a", now[0])
        assert first.first_use("KEY2", "nonce-a", now[0])  # nonces are per key
        first.close()
        second = NonceRegistry(lambda: now[0], NonceLedger(store.engine, lambda: now[0]))
        assert not second.first_use("KEY1", "nonce-a", now[0])  # after a restart too
        assert second.first_use("KEY1", "nonce-b" * 40, now[0])  # any length
        second.close()
        now[0] += 15 * 60 + 1  # the window of nonce-a is over: forgotten, and accepted again
        third = NonceRegistry(lambda: now[0], NonceLedger(store.engine, lambda: now[0]))
        assert third.first_use("KEY1", "nonce-a", now[0])
        third.close()
    finally:
        store.close()
