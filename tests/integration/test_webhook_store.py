"""The webhook store (`adapters.webhooks.SqlWebhooks`) on SQLite and PostgreSQL, and the
outbox dispatcher over a real store: deliveries and the cursor in one transaction, one
delivery per event and endpoint, each endpoint's oldest delivery first, secrets encrypted."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from batchyard.adapters.outbox import Dispatcher
from batchyard.adapters.schema import webhook_secrets
from batchyard.adapters.store import SqlStore
from batchyard.adapters.webhooks import SqlWebhooks
from batchyard.domain.spec import parse_job
from batchyard.domain.states import State
from batchyard.domain.webhooks import DeliveryState, EndpointState
from batchyard.ports.reads import InvalidMarker
from batchyard.ports.store import NewJob
from batchyard.ports.webhooks import Attempted, NewDelivery
from tests.integration.conftest import make_job, make_task
from tests.integration.test_reads import job_id, move

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def hooks(store: SqlStore) -> SqlWebhooks:
    return SqlWebhooks(store.engine, Fernet(Fernet.generate_key()))


def new(event_id: int, tenant: str = "alice", url: str = URL, seq: int = 1) -> NewDelivery:
    return NewDelivery(event_id, tenant, url, "job-1", seq, "OnJobWaiting", 1000.0 + event_id,
                       {"Seq": seq, "Event": "OnJobWaiting"})


def test_enqueue_moves_the_cursor_with_the_deliveries_and_never_twice(
        hooks: SqlWebhooks) -> None:
    assert hooks.cursor() == ""
    hooks.enqueue([new(1), new(2, url=URL + "2")], "2", 10.0)
    assert hooks.cursor() == "2"
    hooks.enqueue([new(1), new(3)], "3", 11.0)  # event 1 again: not a second delivery
    items = hooks.deliveries("alice", None, "", 50).items
    assert [(item.event_id, item.url) for item in items] == [(1, URL), (2, URL + "2"),
                                                             (3, URL)]
    assert all(item.state is DeliveryState.PENDING and item.attempts == 0 for item in items)
    assert items[0].data == {"Seq": 1, "Event": "OnJobWaiting"}
    assert hooks.pending_count() == 3
    assert hooks.deliveries("bob", None, "", 50).items == []


def test_a_failed_enqueue_moves_nothing(hooks: SqlWebhooks) -> None:
    bad = NewDelivery(1, "alice", URL, "job-1", 1, "OnJobWaiting", 1.0, {"x": {1, 2}})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        hooks.enqueue([new(5), bad], "9", 1.0)
    assert hooks.cursor() == "" and hooks.pending_count() == 0


def test_due_is_each_free_endpoint_s_oldest_pending_when_due(hooks: SqlWebhooks) -> None:
    hooks.enqueue([new(1), new(2), new(3, url=URL + "b")], "3", 0.0)
    heads = hooks.due(100.0, [], 10)
    assert sorted(item.event_id for item in heads) == [1, 3]
    first = next(item for item in heads if item.event_id == 1)
    assert [item.event_id for item in hooks.due(100.0, [first.endpoint_id], 10)] == [3]
    hooks.record(Attempted(first.id, DeliveryState.PENDING, 500.0, 503, "busy"), 100.0)
    assert sorted(item.event_id for item in hooks.due(100.0, [], 10)) == [3]  # 2 waits for 1
    later = [item for item in hooks.due(600.0, [], 10) if item.endpoint_id == first.endpoint_id]
    assert [(item.event_id, item.attempts, item.last_status) for item in later] == [
        (1, 1, 503)]
    hooks.record(Attempted(first.id, DeliveryState.DELIVERED, 600.0, 200, ""), 600.0)
    assert sorted(item.event_id for item in hooks.due(600.0, [], 10)) == [2, 3]


def test_disable_fails_pending_and_later_deliveries_and_replay_revives(
        hooks: SqlWebhooks) -> None:
    hooks.enqueue([new(1), new(2)], "2", 0.0)
    endpoint = hooks.endpoints("alice")[0]
    assert hooks.disable(endpoint.id, "answered 410", 1.0) == 2
    assert hooks.endpoints("alice")[0].state is EndpointState.DISABLED
    hooks.enqueue([new(3)], "3", 2.0)
    failed = hooks.deliveries("alice", DeliveryState.FAILED, "", 50).items
    assert [item.event_id for item in failed] == [1, 2, 3]
    assert "answered 410" in failed[2].last_error and hooks.due(5.0, [], 10) == []
    assert hooks.replay("bob", 0, 10**9, 6.0) == []
    assert hooks.replay("alice", failed[1].id, failed[2].id, 6.0) == [failed[1].id,
                                                                     failed[2].id]
    assert hooks.endpoints("alice")[0].state is EndpointState.ACTIVE
    assert [item.event_id for item in hooks.due(6.0, [], 10)] == [2]


def test_a_settled_delivery_cannot_be_moved_again(hooks: SqlWebhooks) -> None:
    from batchyard.errors import StateConflict

    hooks.enqueue([new(1)], "1", 0.0)
    item = hooks.due(0.0, [], 1)[0]
    hooks.record(Attempted(item.id, DeliveryState.DELIVERED, 1.0, 200, ""), 1.0)
    with pytest.raises(StateConflict):
        hooks.record(Attempted(item.id, DeliveryState.FAILED, 2.0, 500, ""), 2.0)


def test_pages_of_deliveries(hooks: SqlWebhooks) -> None:
    hooks.enqueue([new(number) for number in range(1, 6)], "5", 0.0)
    first = hooks.deliveries("alice", None, "", 2)
    second = hooks.deliveries("alice", None, first.marker, 2)
    third = hooks.deliveries("alice", None, second.marker, 2)
    assert [len(page.items) for page in (first, second, third)] == [2, 2, 1]
    assert third.marker == ""
    with pytest.raises(InvalidMarker):
        hooks.deliveries("alice", None, "x'; drop", 2)


def test_secrets_are_encrypted_and_rotation_keeps_the_old_one_a_day(
        hooks: SqlWebhooks, store: SqlStore) -> None:
    assert not hooks.secret_info("alice").exists and hooks.signing_secrets("alice", 0) == []
    first = hooks.rotate_secret("alice", b"a" * 24, 100.0)
    second = hooks.rotate_secret("alice", b"b" * 24, 200.0)
    assert first.startswith("whsec_") and first != second
    assert hooks.signing_secrets("alice", 300.0) == [second, first]
    assert hooks.signing_secrets("alice", 200.0 + 86401) == [second]
    assert hooks.signing_secrets("bob", 300.0) == []
    info = hooks.secret_info("alice")
    assert info.exists and info.created == 200.0
    with store.engine.connect() as connection:
        stored = connection.execute(select(webhook_secrets.c.secret)).scalars().all()
    assert stored and not any(first in value or second in value or first[6:] in value
                              for value in stored)


def create(store: SqlStore, number: int, tenant: str, notification: object) -> str:
    new_id = job_id(1000.0 + number, number)
    description = make_job({"t0": make_task("true", 2)}, Name=f"job{number}",
                           Notification=notification)
    store.create_job(NewJob(new_id, tenant, parse_job(description), 1000.0 + number))
    return new_id


def test_the_dispatcher_adds_the_subscribed_events_of_webhook_topics(
        store: SqlStore, hooks: SqlWebhooks) -> None:
    all_events = create(store, 1, "alice", {"Topic": {"Endpoint": URL}})
    instances = create(store, 2, "bob", {"Topic": {"Endpoint": URL, "Events": [
        "OnInstanceRunning", "OnJobFinished"]}})
    create(store, 3, "alice", {"Topic": {"Name": "mns", "Endpoint": "mns://q"}})
    for job in (all_events, instances):
        move(store, job, State.RUNNING, ("t0", 0))
    dispatcher = Dispatcher(store.reads, hooks, lambda: 5000.0, batch=2)
    while dispatcher.step():
        pass
    alice = hooks.deliveries("alice", None, "", 50).items
    bob = hooks.deliveries("bob", None, "", 50).items
    assert all(item.job_id == all_events for item in alice)
    assert "OnJobWaiting" in {item.event_type for item in alice}
    assert not any(item.event_type.startswith("OnInstance") for item in alice)
    assert [item.event_type for item in bob] == ["OnInstanceRunning"]
    assert bob[0].data["InstanceId"] == 0 and bob[0].data["JobName"] == "job2"
    seqs = [item.seq for item in alice]
    assert seqs == sorted(seqs) and seqs[0] == 1
    events = store.reads.events_since(None, "", 100)
    assert hooks.cursor() == events.items[-1].cursor
    assert dispatcher.step() is False and hooks.pending_count() == len(alice) + 1


def test_migration_0009_starts_the_cursor_after_older_events(store: SqlStore) -> None:
    create(store, 1, "alice", None)
    with store.engine.begin() as connection:
        for table in ("webhook_secrets", "webhook_cursor", "webhook_deliveries",
                      "webhook_endpoints"):
            connection.execute(text(f"DROP TABLE {table}"))
        connection.execute(text("UPDATE alembic_version SET version_num = '0008'"))
    from alembic import command

    from batchyard.adapters.database import migration_config

    config = migration_config()
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    hooks = SqlWebhooks(store.engine, Fernet(Fernet.generate_key()))
    assert hooks.cursor() == store.reads.events_since(None, "", 100).items[-1].cursor


def test_the_sender_checks_the_resolved_address_and_connects_to_it(hooks: SqlWebhooks) -> None:
    """A host name that resolves to a private address is refused without a request; one that
    resolves to an allowed address is called at that address, with its own Host header."""
    import httpx

    from batchyard.adapters.outbox import NoMeter, OutboxConfig, Sender
    from batchyard.domain.webhooks import networks

    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    addresses = {"private.example": ["10.0.0.7"], "allowed.example": ["192.0.2.10"]}
    sender = Sender(hooks, OutboxConfig(allowed=networks(["192.0.2.0/24"])), NoMeter(),
                    httpx.Client(transport=httpx.MockTransport(answer)),
                    resolver=lambda host, port: addresses[host])
    hooks.enqueue([new(1, url="http://private.example/h"),
                   new(2, url="http://allowed.example:8080/h")], "2", 0.0)
    for delivery in hooks.due(1.0, [], 10):
        sender.attempt(delivery)
    refused, delivered = hooks.deliveries("alice", None, "", 10).items
    assert refused.state is DeliveryState.FAILED and "10.0.0.7" in refused.last_error
    assert delivered.state is DeliveryState.DELIVERED and delivered.last_status == 204
    request, = sent
    assert str(request.url) == "http://192.0.2.10:8080/h"
    assert request.headers["host"] == "allowed.example:8080"
    assert request.headers["webhook-id"] == "evt_2"
    assert hooks.secret_info("alice").exists  # made for the first request
    sender.close()
