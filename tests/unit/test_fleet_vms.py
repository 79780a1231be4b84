"""The fleet's cluster VMs: placed on an agent's slots, leased one instance at a time in
their cluster's pool, drained before they leave (InlineAgent, no processes)."""

from __future__ import annotations

from collections.abc import Sequence

from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.orchestrator.fleet import DEFAULT_POOL, Fleet
from batchyard.ports.agents import Report
from batchyard.testing.agent import InlineAgent


class Heard:
    def reported(self, agent_id: str, reports: Sequence[Report]) -> None: ...

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None: ...

    def gone(self, agent_id: str, reason: str) -> None: ...


def request(task: str, instance_id: int, cluster: str = "") -> AttemptRequest:
    return AttemptRequest(AttemptKey("job-1", task, instance_id, 1), 12, "true", "", {}, 0,
                          "oss://b/logs/", "oss://b/logs/", cluster_id=cluster)


def fleet_of(slots: int) -> tuple[Fleet, InlineAgent]:
    agent = InlineAgent(Heard(), id="host", slots=slots)
    return Fleet([agent], 0.0), agent


def test_a_placed_vm_takes_one_of_its_agents_slots_away_from_the_default_pool() -> None:
    fleet, _ = fleet_of(3)
    assert fleet.free_by_pool() == {DEFAULT_POOL: 3}
    assert fleet.place("i-1", "cls-a") == "host"
    assert fleet.place("i-2", "cls-a") == "host"
    assert fleet.free_by_pool() == {DEFAULT_POOL: 1, "cls-a": 2}
    assert fleet.room() == (2, 3)
    assert fleet.place("i-3", "cls-b") == "host"
    assert fleet.place("i-4", "cls-b") is None  # no room left: it waits
    assert fleet.free_by_pool() == {"cls-a": 2, "cls-b": 1}
    assert fleet.placed("i-3") and not fleet.placed("i-4") and not fleet.placed("host")


def test_a_vm_runs_one_instance_at_a_time_and_names_itself_as_the_worker() -> None:
    fleet, agent = fleet_of(4)
    fleet.place("i-1", "cls-a")
    fleet.place("i-2", "cls-a")
    fleet.lease([(request("t", 0, "cls-a"), ()), (request("t", 1, "cls-a"), ())], "cls-a")
    assert [lease.worker for batch in agent.batches for lease in batch.leases] == ["i-1", "i-2"]
    assert [held.worker_id for held in agent.running()] == ["i-1", "i-2"]
    assert "cls-a" not in fleet.free_by_pool()
    assert fleet.busy() == {"i-1", "i-2"}
    fleet.lease([(request("u", 0), ())])
    assert agent.running()[-1].worker_id == "host"  # the default pool: the agent itself


def test_a_draining_vm_takes_nothing_new_and_leaves_once_its_instance_ended() -> None:
    fleet, agent = fleet_of(2)
    fleet.place("i-1", "cls-a")
    fleet.lease([(request("t", 0, "cls-a"), ())], "cls-a")
    token = next(iter(agent.leases()))
    fleet.drain("i-1")
    assert fleet.draining() and fleet.drained() == []
    assert fleet.free_by_pool() == {DEFAULT_POOL: 1}
    assert fleet.land("host", token, AttemptKey("job-1", "t", 0, 1)) is not None
    assert fleet.drained() == ["i-1"]
    assert not fleet.draining() and not fleet.placed("i-1")
    assert fleet.free_by_pool() == {DEFAULT_POOL: 2}  # its slot is the agent's again


def test_a_report_counts_only_from_the_agent_that_holds_the_vm() -> None:
    fleet, agent = fleet_of(2)
    fleet.place("i-1", "cls-a")
    fleet.lease([(request("t", 0, "cls-a"), ())], "cls-a")
    token = next(iter(agent.leases()))
    key = AttemptKey("job-1", "t", 0, 1)
    assert fleet.land("i-1", token, key) is None  # a VM is not an agent: stale
    leased = fleet.land("host", token, key)
    assert leased is not None and leased.agent == "i-1" and leased.host == "host"


def test_a_lost_agent_loses_the_leases_of_its_vms_and_keeps_them_placed() -> None:
    fleet, _agent = fleet_of(2)
    fleet.place("i-1", "cls-a")
    fleet.lease([(request("t", 0, "cls-a"), ())], "cls-a")
    fleet.lease([(request("u", 0), ())])
    lost = fleet.lose("host")
    assert sorted(leased.key.task for _, leased in lost) == ["t", "u"]
    assert fleet.placed("i-1") and fleet.free_by_pool() == {}


def test_a_held_vm_keeps_its_room_and_takes_no_lease_until_removed() -> None:
    fleet, _ = fleet_of(2)
    assert fleet.place("i-1", "reserved", held=True) == "host"
    assert fleet.free_by_pool() == {DEFAULT_POOL: 1}
    fleet.remove("i-1")
    assert fleet.free_by_pool() == {DEFAULT_POOL: 2} and not fleet.placed("i-1")
