"""The meter port's counts (`adapters.tallies.SqlTallies`, what `/metrics` reads at each
scrape), on SQLite and PostgreSQL: jobs, tasks and instances per tenant and state as the
store keeps them, cluster VMs per group; and a scrape's statements, the same few whatever
the number of instances."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from batchyard.adapters.store import SqlStore
from batchyard.adapters.tallies import SqlTallies
from batchyard.domain.clusters import ClusterState, VMState, parse_cluster
from batchyard.domain.states import State
from batchyard.ports.clusters import ClusterRow, VMRow
from tests.integration.test_reads import create, move


def counted(store: SqlStore) -> dict[tuple[str, str, State], int]:
    return {(tally.kind, tally.tenant, tally.state): tally.count
            for tally in SqlTallies(store.engine).states()}


def test_states_are_counted_per_tenant_from_the_kept_counts(store: SqlStore) -> None:
    assert counted(store) == {}
    running = create(store, 1000.0, instances_=3, tasks_=2)  # 6 instances in 2 tasks
    create(store, 1001.0, instances_=3, tasks_=2)
    create(store, 1002.0, tenant="bob", instances_=5, tasks_=1)
    move(store, running, State.RUNNING, ("t0", 1))
    assert counted(store) == {
        ("job", "alice", State.WAITING): 1, ("job", "alice", State.RUNNING): 1,
        ("job", "bob", State.WAITING): 1,
        ("task", "alice", State.WAITING): 3, ("task", "alice", State.RUNNING): 1,
        ("task", "bob", State.WAITING): 1,
        ("instance", "alice", State.WAITING): 11, ("instance", "alice", State.RUNNING): 1,
        ("instance", "bob", State.WAITING): 5,
    }


def statements_of(store: SqlStore, read: Any) -> list[str]:
    """The SQL statements `read()` sends."""
    sent: list[str] = []

    def note(*arguments: Any) -> None:
        sent.append(arguments[2])

    event.listen(store.engine, "before_cursor_execute", note)
    try:
        read()
    finally:
        event.remove(store.engine, "before_cursor_execute", note)
    return sent


def test_a_scrape_sends_the_same_statements_whatever_the_instances(store: SqlStore) -> None:
    """Two grouped queries (jobs with their task counts; instance counts over the task
    rows), none naming the instances table: 2 instances or 4,000 cost the same."""
    tallies = SqlTallies(store.engine)
    create(store, 1000.0, instances_=1, tasks_=2)
    few = statements_of(store, tallies.states)
    create(store, 1001.0, instances_=2000, tasks_=2)
    many = statements_of(store, tallies.states)
    assert len(few) == len(many) == 2
    assert few == many
    assert not any("instances " in statement.replace("\n", " ").lower()
                   .replace("instances_", "") for statement in many)
    assert counted(store)["instance", "alice", State.WAITING] == 4002


def test_cluster_groups_count_their_vms(store: SqlStore) -> None:
    description = parse_cluster({"Name": "c", "ImageId": "img-ubuntu",
                                 "InstanceType": "ecs.sn1.medium",
                                 "Groups": {"a": {"DesiredVMCount": 3},
                                            "b": {"DesiredVMCount": 0}}})
    with store.transaction() as tx:
        tx.add_cluster(ClusterRow("cls-1", "alice", "c", description, ClusterState.ACTIVE,
                                  1000.0))
        tx.add_vms([VMRow(f"vm-{number}", "cls-1", "a", "alice", "ecs.sn1.medium", state,
                          1000.0, 1000.0)
                    for number, state in enumerate([VMState.RUNNING, VMState.RUNNING,
                                                    VMState.PENDING])])
    groups = {group.group: group for group in SqlTallies(store.engine).groups()}
    assert set(groups) == {"a", "b"}
    first = groups["a"]
    assert (first.cluster_id, first.tenant, first.desired) == ("cls-1", "alice", 3)
    assert first.by_state == {"Running": 2, "Pending": 1}
    assert first.vm_ids == ("vm-0", "vm-1")
    assert (groups["b"].desired, groups["b"].by_state, groups["b"].vm_ids) == (0, {}, ())
