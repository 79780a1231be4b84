"""Fixtures of the Ray tests: a real SeaweedFS S3 server and a real three-node Ray cluster.

These tests need a network namespace with nothing but `lo` (Ray rewrites 127.0.0.1 to the
machine's address when a node joins) and Ray (`pip install 'batchyard[ray]'`). Elsewhere they
are skipped, saying how to run them; with `BATCHYARD_RAY_TESTS=required` (what `.ci/run`
sets) a missing requirement is an error instead. Test modules here must import `ray` inside
their tests or fixtures, never at module level: the module must import without Ray.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ray.cluster import RayCluster, in_loopback_namespace, start_ray_cluster
from tests.s3server import SeaweedMissing, SeaweedServer, start_seaweedfs

HERE = Path(__file__).parent
RUN_HINT = ("run them in a loopback-only network namespace: "
            "unshare -n sh -c 'ip link set lo up && python3 -m pytest tests/ray'")
BUCKET = "batchyard-ray"
BUCKETS = {"ray": f"s3://{BUCKET}"}
"""The buckets every node knows (`oss://ray/...` is the S3 bucket `batchyard-ray`)."""
NODE_TYPES = (("ecs.n1.small", 2), ("ecs.n1.medium", 4))
"""The worker nodes: each holds two VMs of its type (small: 1 vCPU 2 GiB; medium: 2 vCPU
4 GiB; `ray start --memory` is set to the VMs' memory, see cluster.vm_memory)."""
NAMESPACE = "batchyard-tests"

_startup: dict[str, float] = {}


def why_not_runnable() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (pip install 'batchyard[ray]')"
    if not in_loopback_namespace():
        return f"the Ray tests need a network namespace with only `lo`; {RUN_HINT}"
    return None


if why_not_runnable() is None:
    # Ray reads the auth mode once, when first imported: set it before any test module can
    # import ray (the token follows when the cluster starts, RayCluster.use_as_client).
    os.environ["RAY_AUTH_MODE"] = "token"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if item.path.is_relative_to(HERE)]
    reason = why_not_runnable() if ours else None
    if reason is None:
        return
    if os.environ.get("BATCHYARD_RAY_TESTS", "") == "required":
        raise pytest.UsageError(f"BATCHYARD_RAY_TESTS=required, but {reason}")
    for item in ours:
        item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _startup:
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in _startup.items())
        terminalreporter.write_line(f"Ray tests: started {parts}")


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A SeaweedFS server enforcing credentials, with the bucket `batchyard-ray`;
    `s3.env(BUCKETS)` are the settings that point batchyard at it."""
    began = time.monotonic()
    try:
        server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    except SeaweedMissing as missing:
        pytest.fail(str(missing), pytrace=False)
    try:
        server.client().create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
        _startup["SeaweedFS"] = time.monotonic() - began
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ray_cluster(s3: SeaweedServer) -> Iterator[RayCluster]:
    """A head (no CPUs) and two worker nodes, `ecs.n1.small` (2 CPUs, 4 GiB) and
    `ecs.n1.medium` (4 CPUs, 8 GiB), with token auth and the S3 settings in every node's
    environment. This process is made a client of it (RAY_AUTH_* set in os.environ, so the
    processes the tests start are clients too). Stopped at session end, even on failure."""
    folder = Path(tempfile.mkdtemp(prefix="by-rt-", dir="/tmp"))  # short: socket paths
    token = secrets.token_hex(32)
    began = time.monotonic()
    try:
        cluster = start_ray_cluster(folder, NODE_TYPES, s3.env(BUCKETS), token)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _startup["the Ray cluster (head + 2 workers)"] = time.monotonic() - began
    try:
        cluster.use_as_client()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _cluster_intact(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail clearly, not with a 60 s hang, when the session's cluster lost a node that no
    test killed (the usual culprit: `ray stop --force` run elsewhere on the machine)."""
    if "ray_cluster" not in request.fixturenames:
        yield
        return
    cluster: RayCluster = request.getfixturevalue("ray_cluster")
    _fail_if_lost(cluster, "before")
    yield
    _fail_if_lost(cluster, "after")


def _fail_if_lost(cluster: RayCluster, when: str) -> None:
    if lost := cluster.lost_nodes():
        names = ", ".join(f"{node.name} ({node.instance_type or 'head'}, raylet {node.pid})"
                          for node in lost)
        pytest.fail(f"the Ray test cluster lost {names} {when} this test, though no test "
                    f"killed it; did something run `ray stop` on this machine?", pytrace=False)


@pytest.fixture(scope="module")
def ray_driver(ray_cluster: RayCluster) -> Iterator[Any]:
    """This process connected to the cluster as a Ray driver (namespace "batchyard-tests"),
    for the module's tests; disconnected after them. Yields the `ray` module."""
    import ray

    ray.init(address=ray_cluster.address, namespace=NAMESPACE, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
