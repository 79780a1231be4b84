"""InputMapping, OutputMapping, LogMapping and Mounts in real bubblewrap sandboxes."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchyard.domain.states import State
from batchyard.errors import SpecError
from batchyard.orchestrator.engine import Engine
from batchyard.runner.reaper import orphans
from batchyard.runner.sandbox import bwrap_path
from batchyard.service import open_engine
from batchyard.settings import Settings

from .conftest import make_job, make_task

pytestmark = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap (bwrap) is not installed")

IN = {"oss://demo/in/": "/home/input"}
OUT = {"/home/output/": "oss://demo/out/"}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def engine(data: Path) -> Iterator[Engine]:
    with open_engine(Settings(data_dir=data, slots=3, log_interval=0.2)) as running:
        running.objects.put_bytes("oss://demo/in/a.txt", b"alpha")
        running.objects.put_bytes("oss://demo/in/sub/b.txt", b"beta")
        yield running


def run(engine: Engine, tasks: dict[str, dict[str, object]],
        dependencies: dict[str, list[str]] | None = None) -> str:
    job_id = engine.submit(make_job(tasks, dependencies))
    engine.wait(job_id, timeout=30)
    return job_id


def logs(engine: Engine, job_id: str, task: str = "t") -> list[str]:
    return [engine.objects.read_bytes(instance.stdout_path).decode()
            + engine.objects.read_bytes(instance.stderr_path).decode()
            for instance in engine.instances(job_id, task)]


def test_inputs_are_visible_read_only_and_writes_never_reach_the_store(engine: Engine) -> None:
    command = ("cat /home/input/a.txt /home/input/sub/b.txt && echo; "
               "echo x > /home/input/new.txt; echo x >> /home/input/a.txt; exit 0")
    job_id = run(engine, {"t": make_task(command, InputMapping=IN)})
    assert engine.job(job_id).state is State.FINISHED, logs(engine, job_id)
    [log] = logs(engine, job_id)
    assert log.startswith("alphabeta\n")
    assert log.count("Read-only file system") == 2
    assert engine.objects.read_bytes("oss://demo/in/a.txt") == b"alpha"
    assert not engine.objects.exists("oss://demo/in/new.txt")


def test_write_support_gives_a_private_writable_copy(engine: Engine, data: Path) -> None:
    command = "echo changed > /home/input/a.txt && cat /home/input/a.txt && touch /mnt/m/new"
    mounts = {"Entries": [{"Source": "oss://demo/in/sub/", "Destination": "/mnt/m",
                           "WriteSupport": True}]}
    job_id = run(engine, {"t": make_task(command, count=2, InputMapping=IN, WriteSupport=True,
                                         Mounts=mounts)})
    assert engine.job(job_id).state is State.FINISHED, logs(engine, job_id)
    assert all(log.startswith("changed\n") for log in logs(engine, job_id))
    assert engine.objects.read_bytes("oss://demo/in/a.txt") == b"alpha"
    assert not engine.objects.exists("oss://demo/in/sub/new")
    views = list((data / "cache" / "views").glob("*/a.txt"))
    assert [view.read_bytes() for view in views] == [b"alpha"], "the cache is untouched"


def test_instances_writing_the_same_output_path_do_not_clobber_each_other(
        engine: Engine) -> None:
    command = ("echo $BATCH_COMPUTE_DAG_INSTANCE_ID > /home/output/x; sleep 0.5; "
               "test \"$(cat /home/output/x)\" = $BATCH_COMPUTE_DAG_INSTANCE_ID && "
               "mkdir -p /home/output/by/$BATCH_COMPUTE_DAG_INSTANCE_ID && "
               "cp /home/output/x /home/output/by/$BATCH_COMPUTE_DAG_INSTANCE_ID/x")
    job_id = run(engine, {"t": make_task(command, count=3, OutputMapping=OUT)})
    assert engine.job(job_id).state is State.FINISHED, logs(engine, job_id)
    for index in range(3):
        assert engine.objects.read_bytes(f"oss://demo/out/by/{index}/x") == f"{index}\n".encode()


def test_outputs_are_complete_before_the_downstream_task_starts(engine: Engine) -> None:
    produce = ("for i in $(seq 1 200); do echo $i > /home/output/f$i; done; "
               "mkdir -p /home/output/deep/er && echo d > /home/output/deep/er/file")
    consume = "ls /home/input | wc -l; cat /home/input/deep/er/file"
    job_id = run(engine, {
        "produce": make_task(produce, OutputMapping={"/home/output": "oss://demo/stage/"}),
        "consume": make_task(consume, InputMapping={"oss://demo/stage/": "/home/input"}),
    }, {"produce": ["consume"]})
    assert engine.job(job_id).state is State.FINISHED
    assert logs(engine, job_id, "consume")[0].split() == ["201", "d"]


def test_outputs_of_a_failed_attempt_are_uploaded_too(engine: Engine) -> None:
    job_id = run(engine, {"t": make_task("echo partial > /home/output/p; exit 3",
                                         OutputMapping=OUT)})
    assert engine.job(job_id).state is State.FAILED
    assert engine.objects.read_bytes("oss://demo/out/p") == b"partial\n"


@pytest.mark.parametrize("place", ["tmp", "var-tmp"])
def test_an_instance_sees_neither_the_data_dir_nor_other_attempts(place: str,
                                                                  tmp_path: Path) -> None:
    """A data dir under /tmp vanishes with the private /tmp; elsewhere it is covered."""
    parent = Path(tempfile.mkdtemp(dir="/var/tmp")) if place == "var-tmp" else tmp_path
    data = parent / "data"
    try:
        with open_engine(Settings(data_dir=data, slots=2)) as engine:
            _probe_data_dir(engine, data.resolve())
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _probe_data_dir(engine: Engine, data: Path) -> None:
    engine.objects.put_bytes("oss://other-tenant/data.txt", b"theirs")
    other = engine.submit(make_job({"t": make_task("echo secret > mine; sleep 5")}))
    deadline = time.monotonic() + 5
    while not list((data / "work" / other).glob("t/0.attempt-1/workdir/mine")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    mine = data / "work" / other / "t" / "0.attempt-1" / "workdir" / "mine"
    probe = (f"cat {mine}; cat {data}/batchyard.db | wc -c; cat {data}/objects/other-tenant/*; "
             f"ls -a {data}/objects {data} {data}/work; pwd > /home/output/pwd; exit 0")
    job_id = run(engine, {"t": make_task(probe, OutputMapping=OUT)})
    engine.stop(other)
    [log] = logs(engine, job_id)
    lines = [line.strip() for line in log.splitlines()]
    assert "secret" not in lines and "theirs" not in lines and other not in lines, log
    assert "0" in lines, "the database is not readable: " + log
    workdir = engine.objects.read_bytes("oss://demo/out/pwd").decode().strip()
    assert workdir == str(data / "work" / job_id / "t" / "0.attempt-1" / "workdir")


def test_log_mapping_objects_appear_while_the_program_runs(engine: Engine) -> None:
    command = "echo first > /var/applog/app.log; sleep 3; echo second >> /var/applog/app.log"
    job_id = engine.submit(make_job({"t": make_task(
        command, LogMapping={"/var/applog/app.log": "oss://demo/applogs"})}))
    url = f"oss://demo/applogs/app.log.{job_id}.t.0"
    deadline = time.monotonic() + 2.5
    while not engine.objects.exists(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.objects.read_bytes(url) == b"first\n"
    assert engine.job(job_id).state is State.RUNNING
    engine.wait(job_id, timeout=30)
    assert engine.objects.read_bytes(url) == b"first\nsecond\n"


def test_concurrent_instances_download_a_prefix_once(engine: Engine,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="batchyard")
    job_id = run(engine, {"t": make_task("cat /home/input/a.txt", count=3, InputMapping=IN)})
    again = run(engine, {"t": make_task("cat /home/input/a.txt", InputMapping=IN)})
    assert engine.job(job_id).state is engine.job(again).state is State.FINISHED
    notes = [record.getMessage() for record in caplog.records if "input oss://" in
             record.getMessage()]
    assert len(notes) == 4
    assert sum("from the object store" in note for note in notes) == 1
    assert sum("from the cache" in note for note in notes) == 3


def test_a_stopped_attempt_leaves_no_process_behind(engine: Engine, data: Path) -> None:
    command = "setsid sleep 300 & (trap '' TERM; sleep 300) & echo up > /home/output/up; wait"
    job_id = engine.submit(make_job({"t": make_task(command, OutputMapping=OUT)}))
    deadline = time.monotonic() + 10
    while not list((data / "work").glob(f"{job_id}/t/0.attempt-1/outputs/0/up")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    engine.stop(job_id)
    engine.wait(job_id, timeout=10)
    deadline = time.monotonic() + 5
    while orphans(data.resolve() / "work") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert orphans(data.resolve() / "work") == []


def test_mapped_jobs_are_refused_without_bwrap_but_plain_jobs_still_run(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-bwrap-here"))
    bwrap_path.cache_clear()
    try:
        with pytest.raises(SpecError, match="bwrap") as raised:
            engine.submit(make_job({"t": make_task("true", InputMapping=IN)}))
        assert raised.value.problems[0].code == "SandboxUnavailable"
        monkeypatch.setenv("PATH", os.defpath)
        job_id = run(engine, {"t": make_task("true")})
        assert engine.job(job_id).state is State.FINISHED
    finally:
        bwrap_path.cache_clear()


def test_credentials_in_mounts_are_never_echoed(engine: Engine) -> None:
    mounts = {"Entries": [{"Source": "oss://demo/in/", "Destination": "/mnt/in"}],
              "OSS": {"AccessKeyId": "LTAIkeyid", "AccessKeySecret": "very-secret-value"}}
    job_id = run(engine, {"t": make_task("ls /mnt/in", Mounts=mounts)})
    description = str(engine.job(job_id).description)
    assert "very-secret-value" not in description and "LTAIkeyid" not in description
    assert engine.job(job_id).state is State.FINISHED


def test_a_new_top_level_folder_can_be_mapped_and_the_root_stays_read_only(
        engine: Engine) -> None:
    command = "cat /batchyard-test-top/in/a.txt; touch /etc/x /new-file 2>&1 | wc -l"
    job_id = run(engine, {"t": make_task(
        command, InputMapping={"oss://demo/in/": "/batchyard-test-top/in"})})
    assert engine.job(job_id).state is State.FINISHED, logs(engine, job_id)
    assert logs(engine, job_id)[0].split() == ["alpha2"]
    assert not os.path.exists("/batchyard-test-top")
