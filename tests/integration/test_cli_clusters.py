"""`batchyard clusters …` as a user runs it: real subprocesses, on a local data directory (where
`batchyard run` then uses the cluster's id) and against a real `batchyard serve`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings
from tests.api.conftest import serving
from tests.integration.conftest import make_job, make_task

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster.json"
CLUSTER_ID = re.compile(r"^cls-[0-9A-F]{32}$")


def clean_environment(folder: Path) -> dict[str, str]:
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith("BATCHYARD_")}
    return {**inherited, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "100",
            "BATCHYARD_CLIENT_CONFIG": str(folder / "absent.toml")}


class Cli:
    def __init__(self, environment: dict[str, str], cwd: Path) -> None:
        self.environment = environment
        self.cwd = cwd

    def __call__(self, *arguments: str, timeout: float = 60
                 ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "batchyard.cli", *arguments],
                              env=self.environment, cwd=self.cwd, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def json(self, *arguments: str) -> Any:
        done = self(*arguments, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture()
def local(tmp_path: Path) -> Cli:
    environment = clean_environment(tmp_path)
    environment["BATCHYARD_DATA_DIR"] = str(tmp_path / "data")
    return Cli(environment, tmp_path)


@pytest.fixture()
def remote(tmp_path: Path) -> Iterator[Cli]:
    settings = Settings(data_dir=tmp_path / "served", slots=2)
    key = open_key_store(settings).create("cli-clusters", "CLI cluster tests")
    with serving(settings) as url:
        environment = clean_environment(tmp_path)
        environment.update({"BATCHYARD_ENDPOINT": url, "BATCHYARD_KEY_ID": key.id,
                            "BATCHYARD_KEY_SECRET": key.secret})
        yield Cli(environment, tmp_path)


def lifecycle(cli: Cli, served: bool = False) -> str:
    """create, list, show, resize, vms: what both backends must do alike; the cluster id.
    `served`: a server's engine places the VMs (2 slots: 2 VMs Running); a data dir with no
    engine running leaves them Pending."""
    created = cli("clusters", "create", str(EXAMPLE))
    assert created.returncode == 0, created.stderr
    cluster_id = created.stdout.strip()
    assert CLUSTER_ID.match(cluster_id)
    expected = "group1 2/2" if served else "group1 0/2"
    deadline = time.monotonic() + 10
    listed = cli("clusters", "list")
    while expected not in listed.stdout and time.monotonic() < deadline:
        time.sleep(0.1)
        listed = cli("clusters", "list")
    assert listed.returncode == 0 and cluster_id in listed.stdout
    assert expected in listed.stdout
    assert [item["Id"] for item in cli.json("clusters", "list")["Items"]] == [cluster_id]
    shown = cli.json("clusters", "show", cluster_id)
    assert (shown["Name"], shown["State"], shown["EnvVars"]) == (
        "log-count-cluster", "Active", {"CLUSTER_PURPOSE": "log-count"})
    assert shown["Groups"]["group1"]["DesiredVMCount"] == 2
    text = cli("clusters", "show", cluster_id)
    assert text.returncode == 0 and "group1" in text.stdout and "created" in text.stdout
    resized = cli("clusters", "resize", cluster_id, "group1=3")
    assert resized.returncode == 0, resized.stderr
    vms = cli.json("clusters", "vms", cluster_id)["Items"]
    states = ["Running", "Running", "Pending"] if served else ["Pending"] * 3
    assert [(vm["GroupName"], vm["State"]) for vm in vms] == [
        ("group1", state) for state in states]
    table = cli("clusters", "vms", cluster_id, "group1")
    assert all(vm["Id"] in table.stdout for vm in vms)
    return cluster_id


def refusals(cli: Cli, cluster_id: str, folder: Path) -> None:
    bad = folder / "bad.json"
    bad.write_text(json.dumps({"Name": "bad", "ImageId": "img-ubuntu", "Groups": {
        "g": {"DesiredVMCount": -1, "InstanceType": "ecs.sn1.medium"}}}), encoding="utf-8")
    refused = cli("clusters", "create", str(bad))
    assert refused.returncode == 2 and "Groups.g.DesiredVMCount" in refused.stderr
    unknown = cli("clusters", "resize", cluster_id, "nogroup=1")
    assert unknown.returncode == 2 and "Groups.nogroup" in unknown.stderr
    malformed = cli("clusters", "resize", cluster_id, "group1")
    assert malformed.returncode == 2 and "GROUP=N" in malformed.stderr
    missing = cli("clusters", "show", "cls-none")
    assert missing.returncode == 1 and "InvalidResource.NotFound" in missing.stderr


def write_job(folder: Path, cluster_id: str) -> Path:
    job = folder / "job.json"
    job.write_text(json.dumps(make_job({"t": make_task("echo on $BATCH_COMPUTE_DAG_INSTANCE_ID",
                                                       ClusterId=cluster_id)})),
                   encoding="utf-8")
    return job


def test_clusters_on_a_data_dir(local: Cli, tmp_path: Path) -> None:
    cluster_id = lifecycle(local)
    refusals(local, cluster_id, tmp_path)
    refused = local("run", str(write_job(tmp_path, "cls-nope")), "--quiet")
    assert refused.returncode == 2
    assert "DAG.Tasks.t.ClusterId" in refused.stderr and "InvalidClusterId" in refused.stderr
    deleted = local("clusters", "delete", cluster_id)
    assert deleted.returncode == 0, deleted.stderr
    assert local("clusters", "show", cluster_id).returncode == 1
    assert local.json("clusters", "list")["Items"] == []


def test_a_run_on_a_cluster_made_on_the_data_dir(local: Cli, tmp_path: Path) -> None:
    created = local("clusters", "create", str(EXAMPLE))
    assert created.returncode == 0, created.stderr
    ran = local("run", str(write_job(tmp_path, created.stdout.strip())), "--quiet",
                timeout=20)
    assert ran.returncode == 0, ran.stderr


def test_clusters_on_a_server(remote: Cli, tmp_path: Path) -> None:
    cluster_id = lifecycle(remote, served=True)
    refusals(remote, cluster_id, tmp_path)
    assert remote("clusters", "delete", cluster_id).returncode == 0
    gone = remote("clusters", "show", cluster_id)
    assert gone.returncode == 1 and "HTTP 404" in gone.stderr


def test_a_run_waiting_for_vms_starts_when_another_process_resizes_the_cluster(
        local: Cli, tmp_path: Path) -> None:
    """`batchyard clusters resize` on the data dir of a running `batchyard run`: its engine
    notices the change (it looks at the VM rows every couple of seconds) and runs."""
    created = local("clusters", "create", str(EXAMPLE))
    cluster_id = created.stdout.strip()
    assert local("clusters", "resize", cluster_id, "group1=0").returncode == 0
    job = write_job(tmp_path, cluster_id)
    running = subprocess.Popen(
        [sys.executable, "-m", "batchyard.cli", "run", str(job), "--quiet"],
        env=local.environment, cwd=local.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        time.sleep(1.5)
        assert running.poll() is None, running.communicate()  # it waits: no VM
        assert local("clusters", "resize", cluster_id, "group1=1").returncode == 0
        out, err = running.communicate(timeout=30)
    finally:
        running.kill()
    assert running.returncode == 0, out + err
