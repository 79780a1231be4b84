"""The engine's rules for VMs a provider reserves, on the MemoryStore with the fake clock and
`testing.InlineProvider` (the real Ray provider is tested on a real cluster in tests/ray):
AutoClusters of reserved VMs, one launch pool per task; cluster VMs reserved, placed and
given up; node loss; infeasible types; a restarted server inheriting attempts."""

from __future__ import annotations

from typing import Any

from batchyard.domain.clusters import VMState, parse_cluster
from batchyard.domain.states import State
from batchyard.orchestrator.engine import Engine
from batchyard.ports.provider import Held
from batchyard.testing import FakeClock, MemoryObjectStore, MemoryStore
from batchyard.testing.provider import InlineNode, InlineProvider

SMALL, MEDIUM = "ecs.n1.small", "ecs.n1.medium"


def build(nodes: list[tuple[str, int]], store: MemoryStore | None = None, **options: Any
          ) -> tuple[Engine, InlineProvider]:
    provider = InlineProvider(nodes)
    engine = Engine(store or MemoryStore(), MemoryObjectStore(), provider.agents,
                    clock=FakeClock(), provider=provider, **options)
    engine.start(loop=False)
    return engine, provider


def task(count: int = 1, instance_type: str = SMALL, bucket: str = "b", **fields: Any
         ) -> dict[str, Any]:
    return {"InstanceCount": count, "AutoCluster": {"InstanceType": instance_type},
            "Parameters": {"Command": {"CommandLine": "true"},
                           "StdoutRedirectPath": f"oss://{bucket}/logs/",
                           "StderrRedirectPath": f"oss://{bucket}/logs/"}, **fields}


def job(**tasks: dict[str, Any]) -> dict[str, Any]:
    return {"Name": "j", "DAG": {"Tasks": tasks}}


def running(node: InlineNode) -> list[str]:
    return node.agent.keys()


def finish_all(engine: Engine, provider: InlineProvider) -> None:
    for node in provider.nodes:
        if node.alive:
            node.agent.finish_all()
    engine.step()


def test_a_task_gets_reserved_vms_of_its_type_and_runs_only_on_them() -> None:
    engine, provider = build([(SMALL, 2), (MEDIUM, 2)], autocluster_vms=3)
    small, medium = provider.nodes
    job_id = engine.submit(job(a=task(5, SMALL), b=task(1, MEDIUM)))
    engine.step()
    engine.step()
    # a: min(5, 3) VMs wanted, 2 fit on the small node (the third waits); b: 1 on medium.
    assert len(small.vms) == 2 and len(medium.vms) == 1
    a_running = small.agent.running()
    assert {request.key.task for request in a_running} == {"a"}
    assert {request.worker_id for request in a_running} <= small.vms
    assert [request.key.task for request in medium.agent.running()] == ["b"]
    assert all(request.instance_type == SMALL for request in a_running)
    # One instance at a time per VM (short attempts may queue behind it only once the
    # engine has seen them be short): two VMs, two leases.
    assert len(a_running) == 2
    for _ in range(10):
        finish_all(engine, provider)
    assert engine.job(job_id).state is State.FINISHED
    assert not small.vms and not medium.vms  # every reservation given up with its task
    assert engine.table_sizes()["in_flight"] == 0


def test_a_type_no_node_offers_is_infeasible_until_a_node_of_it_joins() -> None:
    engine, provider = build([(SMALL, 1)])
    job_id = engine.submit(job(a=task(1, MEDIUM)))
    engine.step()
    reason = engine.why_pending(job_id)["a"]
    assert reason.code == "InfeasibleInstanceType" and MEDIUM in reason.message
    node = provider.add_node(MEDIUM, 1)
    engine.step()
    engine.step()
    assert len(running(node)) == 1
    finish_all(engine, provider)
    assert engine.job(job_id).state is State.FINISHED


def test_an_autocluster_is_no_bigger_than_its_nodes_hold_and_waiting_says_why() -> None:
    engine, provider = build([(SMALL, 2)])
    first = engine.submit(job(a=task(5, SMALL)))
    engine.step()
    engine.step()
    assert len(provider.nodes[0].vms) == 2  # min(5, 64, what the node holds)
    reason = engine.why_pending(first)["a"]
    assert reason.code == "AllVMsBusy" and reason.figures["DesiredVMCount"] == 2, reason
    second = engine.submit(job(b=task(1, SMALL)))
    engine.step()
    reason = engine.why_pending(second)["b"]
    assert reason.code == "WaitingForVM" and reason.figures["ActualVMCount"] == 0, reason


def test_tenants_share_the_nodes_of_a_type_and_a_big_task_gives_vms_back() -> None:
    engine, provider = build([(SMALL, 4)])
    node = provider.nodes[0]
    big = engine.submit(job(a=task(20, SMALL, "alice")), "alice")
    engine.step()
    engine.step()
    assert len(node.vms) == 4 and len(running(node)) == 4  # alone: every VM of the type
    small = engine.submit(job(b=task(3, SMALL, "bob")), "bob")
    engine.step()
    assert engine.why_pending(small)["b"].code == "WaitingForVM"
    # alice holds 4 of 4 while bob waits with none: her group shrinks to her share (2) —
    # her VMs drain (their instances end first), then bob's group takes their room.
    node.agent.finish_all()
    for _ in range(3):
        engine.step()
    tenants = {request.key.job_id: 0 for request in node.agent.running()}
    for request in node.agent.running():
        tenants[request.key.job_id] += 1
    assert tenants == {big: 2, small: 2}, tenants
    for _ in range(20):
        finish_all(engine, provider)
    assert engine.job(big).state is State.FINISHED
    assert engine.job(small).state is State.FINISHED
    assert not node.vms


def test_reserve_on_fail_keeps_the_vms_until_the_job_runs_again() -> None:
    engine, provider = build([(SMALL, 2)])
    node = provider.nodes[0]
    failing = {**task(2, SMALL), "AutoCluster": {"InstanceType": SMALL, "ReserveOnFail": True}}
    job_id = engine.submit(job(a=failing))
    engine.step()
    engine.step()
    kept = set(node.vms)
    assert len(kept) == 2
    node.agent.finish_all(exit_code=1)
    engine.step()
    assert engine.job(job_id).state is State.FAILED
    engine.step()
    assert node.vms == kept  # reserved, idle, for whoever looks at what the task left
    engine.restart(job_id)
    for _ in range(3):
        engine.step()
    assert not node.vms & kept  # given up when the job runs again; a new group instead
    assert len(running(node)) == 2


def test_a_node_lost_loses_its_attempts_and_its_vms_are_reserved_again() -> None:
    engine, provider = build([(SMALL, 2)])
    first = provider.nodes[0]
    job_id = engine.submit(job(a=task(2, SMALL)))
    engine.step()
    engine.step()
    assert len(running(first)) == 2
    provider.kill(first)
    second = provider.add_node(SMALL, 2)
    for _ in range(3):
        engine.step()
    assert len(running(second)) == 2  # re-run on the node that joined, no retry used
    finish_all(engine, provider)
    assert engine.job(job_id).state is State.FINISHED
    for instance in engine.instances(job_id, "a"):
        codes = [attempt.error_code for attempt in engine.attempts(job_id, "a",
                                                                   instance.instance_id)]
        assert codes == ["AttemptLost", ""], codes
        assert instance.retry_count == 0


def test_cluster_vms_are_reserved_placed_and_given_up_when_the_cluster_shrinks() -> None:
    engine, provider = build([(SMALL, 3)])
    node = provider.nodes[0]
    cluster = engine.clusters.create(parse_cluster({
        "Name": "c", "InstanceType": SMALL, "ImageId": "img-ubuntu",
        "Groups": {"g": {"DesiredVMCount": 2}}}), "default")
    engine.step()
    engine.step()
    with engine.store.transaction() as tx:
        states = sorted(vm.state for vm in tx.vms(cluster))
        hosts = {vm.host for vm in tx.vms(cluster)}
    assert states == [VMState.RUNNING, VMState.RUNNING] and hosts == {node.agent.id}
    job_id = engine.submit(job(w={**task(3, SMALL), "ClusterId": cluster}))
    engine.step()
    assert len(running(node)) == 2  # two VMs, one instance each
    for _ in range(4):
        finish_all(engine, provider)
    assert engine.job(job_id).state is State.FINISHED
    engine.clusters.delete(cluster, "default")
    for _ in range(3):
        engine.step()
    assert not node.vms  # both reservations given up


def test_a_restarted_server_inherits_what_the_agents_run_and_reruns_nothing() -> None:
    store = MemoryStore()
    engine, provider = build([(SMALL, 2)], store=store)
    job_id = engine.submit(job(a=task(2, SMALL)))
    engine.step()
    engine.step()
    node = provider.nodes[0]
    held = node.agent.leases()
    requests = {request.key: request for request in node.agent.running()}
    assert len(held) == 2
    # The server dies (nothing of it is closed); a new one starts on the same state, and
    # the node's agent still runs both attempts.
    provider2 = InlineProvider([])
    engine2 = Engine(store, MemoryObjectStore(), provider2.agents, clock=FakeClock(),
                     provider=provider2)
    provider2.agents(engine2)  # the listener is set: the node joins with what it holds
    provider2.add_node(SMALL, 2, held_before=[
        Held(token, key, requests[key].worker_id) for token, key in held.items()])
    engine2.fleet.add_agents(provider2.agents(engine2), 0.0)
    engine2.start(loop=False)
    agent2 = provider2.nodes[0].agent
    assert agent2.running() == []  # nothing leased again
    assert {vm for vm in provider2.nodes[0].vms} == {r.worker_id for r in requests.values()}
    # Their reports (old tokens) land with the new server.
    engine2.reported(agent2.id, [
        _report(key, token) for token, key in held.items()])
    engine2.step()
    assert engine2.job(job_id).state is State.FINISHED
    for instance in engine2.instances(job_id, "a"):
        assert [a.attempt for a in engine2.attempts(job_id, "a", instance.instance_id)] == [1]


def _report(key: Any, token: int) -> Any:
    from datetime import UTC, datetime

    from batchyard.domain.outcome import Outcome
    from batchyard.ports.agents import Report

    now = datetime.now(UTC)
    return Report(key, token, Outcome(0, started_at=now, ended_at=now))
