"""Why pending: every task with Waiting instances has a machine-readable reason
(MemoryStore, fake clock)."""

from __future__ import annotations

from typing import Any

from batchyard.domain.pending import Why, dependency, on_cluster, on_slots
from batchyard.testing import Harness


def task(count: int, bucket: str = "test") -> dict[str, Any]:
    return {"InstanceCount": count, "MaxRetryCount": 1,
            "AutoCluster": {"InstanceType": "ecs.sn1.medium"},
            "Parameters": {"Command": {"CommandLine": "true", "PackagePath": ""},
                           "StdoutRedirectPath": f"oss://{bucket}/logs/",
                           "StderrRedirectPath": f"oss://{bucket}/logs/"}}


def test_a_task_waiting_for_its_upstream_names_it() -> None:
    harness = Harness.build(slots=2)
    job_id = harness.submit({"Name": "dag", "DAG": {
        "Tasks": {"first": task(1), "second": task(1)},
        "Dependencies": {"first": ["second"]}}})
    reasons = harness.engine.why_pending(job_id)
    assert list(reasons) == ["second"]
    assert reasons["second"].code is Why.DEPENDENCY
    assert reasons["second"].as_api()["Tasks"] == ["first"]
    assert "first" in reasons["second"].message


def test_instances_beyond_the_slots_wait_for_one() -> None:
    harness = Harness.build(slots=1)
    job_id = harness.submit({"Name": "busy", "DAG": {"Tasks": {"work": task(3)}}})
    reason = harness.engine.why_pending(job_id)["work"]
    assert reason.code is Why.SLOTS_BUSY
    assert reason.as_api()["Slots"] == 1 and reason.as_api()["RunningCount"] == 1
    harness.run_all()
    assert harness.engine.why_pending(job_id) == {}


def test_a_tenant_at_its_fair_share_is_told_so() -> None:
    harness = Harness.build(slots=2)
    alice = harness.engine.submit({"Name": "a", "DAG": {"Tasks": {"work": task(5, "a")}}},
                                  tenant="alice")
    harness.engine.submit({"Name": "b", "DAG": {"Tasks": {"work": task(5, "b")}}},
                          tenant="bob")
    harness.engine.step()
    reason = harness.engine.why_pending(alice)["work"]
    assert reason.code is Why.FAIR_SHARE
    assert "alice" in reason.message and reason.as_api()["TenantRunningCount"] == 1


def test_the_reasons_of_a_cluster_task() -> None:
    assert on_cluster("cls-1", True, 2, 2, 2).code is Why.CLUSTER_DELETING
    assert on_cluster("cls-1", False, 0, 0, 0).code is Why.NO_VM
    starting = on_cluster("cls-1", False, 2, 0, 0, "waiting for room")
    assert starting.code is Why.WAITING_FOR_VM and "waiting for room" in starting.message
    busy = on_cluster("cls-1", False, 2, 2, 2)
    assert busy.code is Why.VMS_BUSY
    assert busy.as_api() == {"Code": "AllVMsBusy", "Message": busy.message,
                             "ClusterId": "cls-1", "DesiredVMCount": 2, "ActualVMCount": 2,
                             "BusyVMCount": 2}


def test_a_retry_says_which_and_weights_move_the_share() -> None:
    reason = dependency(["a", "b"]).retrying(1, 3)
    assert reason.message.startswith("retry 1 of 3: waits for tasks a, b")
    assert on_slots("bob", {"alice": 2, "bob": 2}, 4, 0, {"bob": 2.0}).code is Why.SLOTS_BUSY
    assert on_slots("bob", {"alice": 1, "bob": 3}, 4, 0, {"bob": 2.0}).code is Why.FAIR_SHARE
    assert on_slots("bob", {"bob": 1}, 4, 3, {}).code is Why.LAUNCHING
