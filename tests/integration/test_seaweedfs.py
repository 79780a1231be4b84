"""Mapped jobs against SeaweedFS (`weed mini`), an S3 server that enforces credentials."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchyard.domain.states import State
from batchyard.runner.sandbox import bwrap_path
from batchyard.service import open_engine
from batchyard.settings import Settings
from tests.s3server import KEY_ID, SECRET, SeaweedMissing, start_seaweedfs

from .conftest import make_job, make_task

pytest.importorskip("s3fs")
pytestmark = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap (bwrap) is not installed")

@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    except SeaweedMissing as missing:
        pytest.skip(str(missing))
    try:
        yield server.url
    finally:
        server.stop()


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
