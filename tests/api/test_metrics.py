"""`GET /metrics` of a real `batchyard serve` (a server of its own, so that the counts are
those of a known run): parsed by prometheus_client's own parser, checked against the run; the
bearer token refused when missing or wrong."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from batchyard.cli.keys import open_key_store
from batchyard.settings import BucketGrant, Settings
from tests.api.conftest import Signer, echo_task, serving, wait_for_state

TOKEN = "metrics-test-token"
BUCKET = "metrics-tests"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, str]]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("metrics"), slots=4,
                        bucket_grants={BUCKET: BucketGrant(owner="ops")},
                        metrics_token=TOKEN)
    key = open_key_store(settings).create("ops", "metrics tests")
    with serving(settings) as url, httpx.Client(
            base_url=url, auth=Signer(key.id, key.secret), timeout=30) as client:
        yield client, url


def scrape(url: str) -> dict[str, list[Sample]]:
    """Every sample of `/metrics`, by metric family name."""
    answer = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples
            for family in text_string_to_metric_families(answer.text)}


def value(samples: dict[str, list[Sample]], family: str, name: str = "",
          **labels: str) -> float:
    """The one sample of `family` named `name` (default: the family's, `_total` for a
    counter) with these labels."""
    names = {name} if name else {family, f"{family}_total"}
    found = [sample.value for sample in samples[family]
             if sample.name in names
             and all(sample.labels.get(key) == wanted for key, wanted in labels.items())]
    assert len(found) == 1, (family, name, labels, samples[family])
    return found[0]


def task(command: str, count: int, **fields: Any) -> dict[str, Any]:
    body = echo_task(command, count=count, **fields)
    body["Parameters"]["StdoutRedirectPath"] = f"oss://{BUCKET}/logs/"
    body["Parameters"]["StderrRedirectPath"] = f"oss://{BUCKET}/logs/"
    return body


def test_metrics_count_a_known_run(served: tuple[httpx.Client, str]) -> None:
    """3 instances of which instance 1 fails (no retry), and one that runs past its Timeout:
    4 attempts started, 2 succeeded, 1 failed, 1 timed out; every state gauge as the job's."""
    client, url = served
    before = scrape(url)
    assert value(before, "batchyard_attempts_started") == 0
    job = {"Name": "metered", "Type": "DAG", "JobFailOnInstanceFail": False,
           "DAG": {"Tasks": {
               "work": task('test "$BATCH_COMPUTE_DAG_INSTANCE_ID" != 1', 3),
               "slow": task("sleep 30", 1, Timeout=1)}, "Dependencies": {}}}
    answer = client.post("/jobs", json=job)
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["Id"]
    assert wait_for_state(client, job_id, {"Finished", "Failed"}, 60)["State"] == "Finished"

    deadline = time.monotonic() + 10  # the meter hears of the last end just after its commit
    while True:
        samples = scrape(url)
        if (sum(sample.value for sample in samples["batchyard_attempts_ended"]
                if sample.name.endswith("_total")) >= 4
                or time.monotonic() > deadline):
            break
        time.sleep(0.05)

    assert value(samples, "batchyard_attempts_started") == 4
    ended = {sample.labels["result"]: sample.value
             for sample in samples["batchyard_attempts_ended"]
             if sample.name == "batchyard_attempts_ended_total"}
    assert ended == {"succeeded": 2, "failed": 1, "timeout": 1, "lost": 0, "stopped": 0,
                     "recalled": 0}
    assert value(samples, "batchyard_queue_wait_seconds",
                 "batchyard_queue_wait_seconds_count") == 4
    assert value(samples, "batchyard_attempt_duration_seconds",
                 "batchyard_attempt_duration_seconds_count") == 4
    quick = value(samples, "batchyard_attempt_duration_seconds",
                    "batchyard_attempt_duration_seconds_bucket", le="0.5")
    assert quick <= 3  # the one killed after its 1 s Timeout ran longer than 0.5 s
    assert value(samples, "batchyard_engine_step_seconds",
                 "batchyard_engine_step_seconds_count") >= 2  # launched, then ended

    assert value(samples, "batchyard_jobs", tenant="ops", state="Finished") == 1
    assert value(samples, "batchyard_jobs", tenant="ops", state="Running") == 0
    assert value(samples, "batchyard_tasks", tenant="ops", state="Finished") == 2
    assert value(samples, "batchyard_instances", tenant="ops", state="Finished") == 2
    assert value(samples, "batchyard_instances", tenant="ops", state="Failed") == 2
    assert value(samples, "batchyard_instances", tenant="ops", state="Waiting") == 0


def test_cluster_vms_are_gauged_per_group(served: tuple[httpx.Client, str]) -> None:
    client, url = served
    body = {"Name": "gauged", "ImageId": "img-ubuntu", "InstanceType": "ecs.sn1.medium",
            "Groups": {"g": {"DesiredVMCount": 2}}}
    answer = client.post("/clusters", json=body)
    assert answer.status_code == 201, answer.text
    cluster_id = answer.json()["Id"]
    try:
        labels = {"cluster": cluster_id, "tenant": "ops", "group": "g"}
        deadline = time.monotonic() + 20
        while True:
            samples = scrape(url)
            if value(samples, "batchyard_cluster_vms_actual", **labels) == 2:
                break
            assert time.monotonic() < deadline, samples["batchyard_cluster_vms"]
            time.sleep(0.1)
        assert value(samples, "batchyard_cluster_vms_desired", **labels) == 2
        assert value(samples, "batchyard_cluster_vms", state="Running", **labels) == 2
        assert value(samples, "batchyard_cluster_vms_busy", **labels) == 0
    finally:
        client.delete(f"/clusters/{cluster_id}")


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"Authorization": "Basic bWV0cmljczp4"}, 401),
    ({"Authorization": "Bearer wrong-token"}, 403),
    ({"Authorization": f"Bearer {TOKEN}x"}, 403),
])
def test_metrics_refuse_a_scrape_without_the_token(served: tuple[httpx.Client, str],
                                                  headers: dict[str, str], status: int) -> None:
    _, url = served
    answer = httpx.get(f"{url}/metrics", headers=headers)
    assert answer.status_code == status
    error = answer.json()
    assert error["Code"] == "Forbidden"
    assert "metrics_token" in error["Message"]
    assert "batchyard_" not in answer.text
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_metrics_are_open_without_a_token(tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = Settings(data_dir=tmp_path_factory.mktemp("open-metrics"), slots=1)
    with serving(settings) as url:
        answer = httpx.get(f"{url}/metrics")
    assert answer.status_code == 200
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert {"batchyard_attempts_started", "batchyard_attempts_ended", "batchyard_jobs",
            "batchyard_instances", "batchyard_engine_step_seconds"} <= names
