"""Finding 4: buckets belong to tenants.

A bucket is owned by the tenant that first uses it (or by the owner configuration names,
which may share it read-only or read-write with named tenants). A job naming a bucket its
tenant may not use is refused at submission, naming the field and the bucket; a program's
own object-store access reaches only its tenant's buckets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchyard.adapters.credentials import AccessKey
from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.cli.keys import open_key_store
from tests.security.conftest import ServeProcess, job, run_job, start_serve, stdout_of

SECRET = b"alice's secret object"


@pytest.fixture(scope="module")
def alice_bucket(serve: ServeProcess, alice_key: AccessKey) -> str:
    """`alice-data`, claimed by alice's first job, holding one object."""
    with serve.client(alice_key) as alice:
        _, state = run_job(alice, job("echo mine", bucket="alice-data"))
    assert state == "Finished"
    FsspecObjectStore(serve.data_dir.resolve() / "objects").put_bytes(
        "oss://alice-data/secret.txt", SECRET)
    return "alice-data"


def naming(field: str, url: str) -> tuple[dict[str, Any], str]:
    """A job of mallory's whose `field` names `url`, and the JSON path of that field."""
    body = job("true")
    task = body["DAG"]["Tasks"]["attack"]
    base = "DAG.Tasks.attack"
    if field in ("StdoutRedirectPath", "StderrRedirectPath"):
        task["Parameters"][field] = url
        return body, f"{base}.Parameters.{field}"
    if field == "PackagePath":
        task["Parameters"]["Command"]["PackagePath"] = url + "worker.tar.gz"
        return body, f"{base}.Parameters.Command.PackagePath"
    if field == "InputMapping":
        task["InputMapping"] = {url: "/home/input/"}
        return body, f"{base}.InputMapping.{url}"
    if field == "OutputMapping":
        task["OutputMapping"] = {"/home/output/": url}
        return body, f"{base}.OutputMapping./home/output/"
    if field == "LogMapping":
        task["LogMapping"] = {"/home/log/app.log": url}
        return body, f"{base}.LogMapping./home/log/app.log"
    task["Mounts"] = {"Entries": [{"Source": url, "Destination": "/home/mnt/"}]}
    return body, f"{base}.Mounts.Entries.0.Source"


FIELDS = ["StdoutRedirectPath", "StderrRedirectPath", "PackagePath", "InputMapping",
          "OutputMapping", "LogMapping", "Mounts"]


@pytest.mark.parametrize("field", FIELDS)
def test_a_job_naming_another_tenants_bucket_is_refused(
        mallory: httpx.Client, alice_bucket: str, field: str) -> None:
    body, path = naming(field, f"oss://{alice_bucket}/in/")
    response = mallory.post("/jobs", json=body)
    assert response.status_code == 403, response.text
    error = response.json()
    assert error["Code"] == "Forbidden"
    assert [problem["Path"] for problem in error["Problems"]] == [path]
    assert alice_bucket in error["Message"]


def test_object_urls_with_dot_dot_are_refused_at_submission(mallory: httpx.Client) -> None:
    body = job("true")
    body["DAG"]["Tasks"]["attack"]["Parameters"]["StdoutRedirectPath"] = (
        "oss://mallory-logs/../alice-data/")
    response = mallory.post("/jobs", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["Code"] == "InvalidStdoutRedirectPath"


def test_a_program_cannot_reach_another_tenants_bucket(
        serve: ServeProcess, mallory: httpx.Client, alice_bucket: str) -> None:
    script = ("from batchyard import oss\n"
              "for attempt in (lambda: oss.read_text('oss://alice-data/secret.txt'),\n"
              "                lambda: oss.ls('oss://alice-data/'),\n"
              "                lambda: oss.put_text('oss://alice-data/planted', 'x')):\n"
              "    try:\n"
              "        print('BREACH', attempt())\n"
              "    except Exception as error:\n"
              "        print('refused:', error)\n"
              "oss.put_text('oss://mallory-logs/own.txt', 'mine')\n"
              "print('own:', oss.read_text('oss://mallory-logs/own.txt'))\n")
    job_id, state = run_job(mallory, job(f"python - <<'PY'\n{script}PY"))
    printed = stdout_of(serve, job_id)
    assert state == "Finished", printed
    assert "BREACH" not in printed and "own: mine" in printed, printed
    objects = serve.data_dir.resolve() / "objects" / alice_bucket
    assert not (objects / "planted").exists()
    assert (objects / "secret.txt").read_bytes() == SECRET


@pytest.fixture(scope="module")
def granting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    grants = {"shared-ro": {"owner": "alice", "read": ["mallory"]},
              "shared-rw": {"owner": "alice", "write": ["mallory"]}}
    running = start_serve(tmp_path_factory.mktemp("grants") / "data",
                          env={"BATCHYARD_BUCKET_GRANTS": json.dumps(grants)})
    yield running
    running.stop()


def test_grants_in_configuration_share_buckets(granting: ServeProcess, tmp_path: Path) -> None:
    mallory = granting.client(open_key_store(granting.settings).create("mallory"))
    reading, _ = naming("InputMapping", "oss://shared-ro/in/")
    writing, path = naming("OutputMapping", "oss://shared-ro/out/")
    assert mallory.post("/jobs", json=reading).status_code == 201
    refused = mallory.post("/jobs", json=writing)
    assert refused.status_code == 403 and refused.json()["Problems"][0]["Path"] == path
    both, _ = naming("OutputMapping", "oss://shared-rw/out/")
    assert mallory.post("/jobs", json=both).status_code == 201
    mallory.close()
