"""Mapped jobs against a real S3 HTTP server on 127.0.0.1 (moto's server mode, in-process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.domain.states import State
from batchyard.runner.sandbox import bwrap_path
from batchyard.service import open_engine
from batchyard.settings import Settings

from .conftest import make_job, make_task
from .test_log_count import EXAMPLE, expected_counts

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
pytestmark = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap (bwrap) is not installed")

KEY_ID = "AKIABATCHYARDTEST0001"
SECRET = "batchyard-test-secret-never-to-be-shown"
REGION = "eu-central-1"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)


def make_bucket(endpoint: str, name: str) -> None:
    s3_client(endpoint).create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})


def s3_settings(data: Path, endpoint: str, **buckets: str) -> dict[str, str]:
    """The settings as BATCHYARD_* variables (what run.sh and the CLI read)."""
    return {"BATCHYARD_DATA_DIR": str(data), "BATCHYARD_S3_ENDPOINT_URL": endpoint,
            "BATCHYARD_S3_REGION": REGION, "BATCHYARD_S3_ACCESS_KEY_ID": KEY_ID,
            "BATCHYARD_S3_SECRET_ACCESS_KEY": SECRET,
            "BATCHYARD_BUCKETS": json.dumps(buckets)}


def test_log_count_mapped_runs_with_its_data_on_s3(endpoint: str, tmp_path: Path) -> None:
    make_bucket(endpoint, "real-log-count")
    data, build = tmp_path / "data", tmp_path / "build"
    command = "batchyard" if shutil.which("batchyard") else f"{sys.executable} -m batchyard.cli"
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("BATCHYARD_", "AWS_"))}
    environment.update(s3_settings(data, endpoint, **{"log-count-demo": "s3://real-log-count"}))
    environment.update(LOG_COUNT_BUILD=str(build), LOG_LINES="3000", BATCHYARD=command,
                       PYTHON=sys.executable)
    result = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "--mapped"], env=environment,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    client = s3_client(endpoint)
    body = client.get_object(Bucket="real-log-count", Key="log-count/merge_result.json")["Body"]
    assert json.loads(body.read()) == expected_counts(build / "log-count-data.txt")
    keys = [item["Key"] for item in client.list_objects_v2(Bucket="real-log-count")["Contents"]]
    assert {f"log-count/count_results/{index}.json" for index in range(3)} <= set(keys)
    assert not (data / "objects" / "log-count-demo").exists(), "nothing went to the local store"
    shown = [result.stdout, result.stderr]
    shown += [client.get_object(Bucket="real-log-count", Key=key)["Body"].read().decode()
              for key in keys if "/logs/" in key]
    assert all(KEY_ID not in text and SECRET not in text for text in shown)


def test_s3_urls_work_directly_and_credentials_never_show(
        endpoint: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_bucket(endpoint, "direct")
    s3_client(endpoint).put_object(Bucket="direct", Key="in/a.txt", Body=b"from s3")
    settings = Settings(data_dir=tmp_path / "data", s3_endpoint_url=endpoint,
                        s3_region=REGION, s3_access_key_id=KEY_ID,
                        s3_secret_access_key=SECRET)
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    command = "cat /home/input/a.txt > /home/output/copy.txt; env; cat /home/input/a.txt"
    good = make_task(command, InputMapping={"s3://direct/in/": "/home/input"},
                     OutputMapping={"/home/output": "s3://direct/out/"})
    good["Parameters"].update(StdoutRedirectPath="s3://direct/logs/",
                              StderrRedirectPath="s3://direct/logs/")
    broken = make_task("echo x > /home/output/x",
                       OutputMapping={"/home/output": "s3://no-such-bucket/out/"})
    with open_engine(settings) as engine:
        job_id = engine.submit(make_job({"good": good, "broken": broken},
                                        JobFailOnInstanceFail=False))
        engine.wait(job_id, timeout=60)
        [fine] = engine.instances(job_id, "good")
        [failed] = engine.instances(job_id, "broken")
        stdout = engine.objects.read_bytes(fine.stdout_path).decode()
        records = [engine.job(job_id).description, fine, failed,
                   engine.attempts(job_id, "broken", 0)]
    assert fine.state is State.FINISHED, fine
    assert stdout.endswith("from s3"), "the sandboxed program read its input"
    assert "AWS_" not in stdout, "sandboxed programs get no object-store credentials"
    body = s3_client(endpoint).get_object(Bucket="direct", Key="out/copy.txt")["Body"]
    assert body.read() == b"from s3"
    assert failed.state is State.FAILED
    assert failed.error_code == "UploadError"
    assert "s3://no-such-bucket/out/x" in failed.error_message
    shown = [stdout, str(records), caplog.text]
    assert all(KEY_ID not in text and SECRET not in text for text in shown)
