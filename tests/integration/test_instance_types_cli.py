"""Instance types on the command line, as a user runs it (real subprocesses on a temporary
data dir): `batchyard run` refuses an unknown or infeasible type with the path and exit
status 2, runs a task that names no cluster, and `batchyard instance-types` lists them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.integration.conftest import make_job, make_task
from tests.integration.test_cli import command, write_job

TIMEOUT = 90
HUGE = '{"huge": {"vcpu": 1, "memory_mb": 4294967296}, "wide": {"vcpu": 4096, "memory_mb": 1}}'
"""A type with 4 PiB of memory (no machine has it) and one with 4096 vCPUs."""


def batchyard(folder: Path, *arguments: str, **variables: str
              ) -> subprocess.CompletedProcess[str]:
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith("BATCHYARD_")}
    environment = {**inherited, "BATCHYARD_DATA_DIR": str(folder / "data"),
                   "BATCHYARD_SLOTS": "2", "COLUMNS": "100",
                   "BATCHYARD_CONFIG": "", "BATCHYARD_CLIENT_CONFIG": str(folder / "no.toml"),
                   **variables}
    return subprocess.run([*command(), *arguments], env=environment, cwd=folder,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


def typed(instance_type: str) -> dict[str, Any]:
    return make_job({"t": make_task("true", AutoCluster={"InstanceType": instance_type})})


def test_run_refuses_an_unknown_type_with_its_path(tmp_path: Path) -> None:
    result = batchyard(tmp_path, "run", str(write_job(tmp_path, typed("ecs.sn1.small"))))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "DAG.Tasks.t.AutoCluster.InstanceType" in result.stderr
    assert "[InvalidParameter.InstanceType]" in result.stderr
    assert "ecs.sn1.medium" in result.stderr  # the family's sizes


def test_run_refuses_a_type_bigger_than_the_machine(tmp_path: Path) -> None:
    job = write_job(tmp_path, typed("huge"))
    result = batchyard(tmp_path, "run", str(job), BATCHYARD_INSTANCE_TYPES=HUGE)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "[InfeasibleInstanceType]" in result.stderr and "needs more memory" in result.stderr
    wide = write_job(tmp_path, typed("wide"))
    assert batchyard(tmp_path, "run", "--quiet", str(wide),
                     BATCHYARD_INSTANCE_TYPES=HUGE).returncode == 0  # slots: vCPUs not counted
    strict = batchyard(tmp_path, "run", str(wide), BATCHYARD_INSTANCE_TYPES=HUGE,
                       BATCHYARD_CAPACITY="strict")
    assert strict.returncode == 2 and "needs more vCPUs" in strict.stderr


def test_a_task_naming_no_cluster_runs(tmp_path: Path) -> None:
    task = make_task("echo plain")
    del task["AutoCluster"]
    result = batchyard(tmp_path, "run", "--json", str(write_job(tmp_path, make_job({"t": task}))))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["Job"]["State"] == "Finished"


def test_instance_types_lists_the_configured_ones_and_what_runs_here(tmp_path: Path) -> None:
    listed = batchyard(tmp_path, "instance-types", BATCHYARD_INSTANCE_TYPES=HUGE,
                       BATCHYARD_CAPACITY="strict")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line.rstrip() for line in listed.stdout.splitlines()[2:]}
    assert "(default)" in lines["ecs.n1.small"] and lines["ecs.n1.small"].endswith("yes")
    assert lines["huge"].endswith("no: needs more memory")
    assert lines["wide"].endswith("no: needs more vCPUs")
    document = json.loads(batchyard(tmp_path, "instance-types", "--json").stdout)
    medium, = [item for item in document["AvailableClusterInstanceType"]
               if item["InstanceType"] == "ecs.sn1.medium"]
    assert (medium["CpuCore"], medium["MemorySize"], medium["RunsHere"]) == (2, 4, True)


def test_a_bad_setting_stops_instance_types_with_status_2(tmp_path: Path) -> None:
    result = batchyard(tmp_path, "instance-types", BATCHYARD_DEFAULT_INSTANCE_TYPE="nope")
    assert result.returncode == 2
    assert "BATCHYARD_DEFAULT_INSTANCE_TYPE='nope'" in result.stderr
