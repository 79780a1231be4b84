"""The same jobs on the local provider and on the Ray provider give the same result.

Three jobs, each run by a local `serve` engine and by a Ray-provider engine, both on real S3
(each with buckets of its own): the log-count example (`job-mapped.json`, unchanged: its
`ecs.sn1.medium` AutoClusters land on a node of the Ray cluster offering that type), a
diamond DAG with a flaky instance, and a job on a two-VM cluster. Compared: the job's and
tasks' states, each task's instance counts, each instance's attempts (exit codes), what each
printed (the log objects) and what the log-count programs wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.domain.clusters import parse_cluster
from batchyard.domain.states import State
from batchyard.orchestrator.engine import Engine
from batchyard.service import open_engine
from batchyard.settings import Settings
from tests.ray.cluster import RayCluster, RayNode
from tests.ray.test_provider import job, ray_fields, task
from tests.s3server import SeaweedServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "log-count"
ROOT = "oss://log-count-demo/log-count/"


@pytest.fixture(scope="module")
def sn1_node(ray_cluster: RayCluster) -> Iterator[RayNode]:
    """A node offering the log-count example's InstanceType (ecs.sn1.medium: 2 vCPU)."""
    node = ray_cluster.start_node("ecs.sn1.medium", 4)
    yield node
    if node in ray_cluster.nodes:
        ray_cluster.kill_node(node)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The example's input log and its programs' package, made as run.sh makes them."""
    folder = tmp_path_factory.mktemp("log-count")
    data = folder / "log-count-data.txt"
    subprocess.run([sys.executable, str(EXAMPLE / "gen_data.py"), str(data), "--lines", "3000"],
                   check=True, capture_output=True)
    package = folder / "worker-mapped.tar.gz"
    with tarfile.open(package, "w:gz") as archive:
        for program in sorted((EXAMPLE / "src-mapped").glob("*.py")):
            archive.add(program, arcname=program.name)
    return data, package


def settings(kind: str, folder: Path, cluster: RayCluster, s3: SeaweedServer) -> Settings:
    """A server's settings: its own S3 buckets (created here), the Ray provider or not."""
    buckets = {"ray": f"s3://by-{kind}-logs", "log-count-demo": f"s3://by-{kind}-demo"}
    client: Any = s3.client()
    for url in buckets.values():
        client.create_bucket(Bucket=url.removeprefix("s3://"))
    fields = {**ray_fields(folder, cluster, s3), "buckets": buckets}
    if kind == "local":
        fields.update(provider="local", slots=4)
    return Settings(**fields)


def run_all(engine: Engine, example: tuple[Path, Path]) -> dict[str, Any]:
    """Run the three jobs on `engine`; what they did, in terms that do not depend on ids."""
    data, package = example
    engine.objects.put_file(data, ROOT + "log-count-data.txt")
    engine.objects.put_file(package, ROOT + "worker-mapped.tar.gz")
    flaky = ('sh -c \'[ "$BATCH_COMPUTE_DAG_INSTANCE_ID" = 1 ] && '
             '[ "$BATCH_COMPUTE_DAG_ATTEMPT" = 1 ] && exit 3; '
             'echo "$BATCH_COMPUTE_DAG_TASK_ID $BATCH_COMPUTE_DAG_INSTANCE_ID"\'')
    found = {
        "log-count": summary(engine, engine.submit(
            json.loads((EXAMPLE / "job-mapped.json").read_text()))),
        "diamond": summary(engine, engine.submit(job(
            {"a": task("echo a"), "b": task(flaky, 3, MaxRetryCount=1),
             "c": task("echo c", 2, "ecs.n1.medium"), "d": task("echo d")},
            {"a": ["b", "c"], "b": ["d"], "c": ["d"]})))}
    # The cluster's two VMs take the whole ecs.n1.small node (or two of the local slots)
    # while it lives: made for its job, deleted after it.
    cluster = engine.clusters.create(parse_cluster({
        "Name": "two", "InstanceType": "ecs.n1.small", "ImageId": "img-ubuntu",
        "Groups": {"group1": {"DesiredVMCount": 2}}, "EnvVars": {"WHERE": "on-cluster"}}),
        "default")
    found["on-cluster"] = summary(engine, engine.submit(job({"work": {
        **task("sh -c 'echo $WHERE $BATCH_COMPUTE_DAG_INSTANCE_ID'", 4),
        "ClusterId": cluster}})))
    engine.clusters.delete(cluster, "default")
    found["log-count outputs"] = {
        name: engine.objects.read_bytes(ROOT + name).decode()
        for name in ("merge_result.json", "split_results/0.txt", "split_results/1.txt",
                     "split_results/2.txt")}
    return found


def summary(engine: Engine, job_id: str) -> dict[str, Any]:
    record = engine.wait(job_id, timeout=120)
    assert record.state is State.FINISHED, (record, engine.tasks(job_id),
                                            engine.why_pending(job_id))
    tasks = {}
    for record in engine.tasks(job_id):
        instances = {}
        for instance in engine.instances(job_id, record.name):
            attempts = engine.attempts(job_id, record.name, instance.instance_id)
            instances[instance.instance_id] = {
                "state": instance.state.value,
                "exit codes": [attempt.exit_code for attempt in attempts],
                "stdout": engine.objects.read_bytes(instance.stdout_path).decode(),
                "stderr": engine.objects.read_bytes(instance.stderr_path).decode()}
        tasks[record.name] = {"state": record.state.value,
                              "counts": record.instance_metrics, "instances": instances}
    return {"state": engine.job(job_id).state.value, "tasks": tasks}


@pytest.mark.timeout(600)
def test_the_same_jobs_give_the_same_result_on_one_machine_and_on_ray(
        ray_cluster: RayCluster, s3: SeaweedServer, sn1_node: RayNode,
        example: tuple[Path, Path], tmp_path: Path) -> None:
    results = {}
    for kind in ("local", "ray"):
        with open_engine(settings(kind, tmp_path / kind, ray_cluster, s3),
                         serving=True) as engine:
            results[kind] = run_all(engine, example)
    local, ray = results["local"], results["ray"]
    assert ray == local
    assert json.loads(local["log-count outputs"]["merge_result.json"])  # counted something
    assert local["diamond"]["tasks"]["b"]["instances"][1]["exit codes"] == [3, 0]
    assert local["on-cluster"]["tasks"]["work"]["instances"][2]["stdout"] == "on-cluster 2\n"
