"""Client commands on a data directory, without a server: real `batchyard` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from batchyard.cli.local import LocalClient
from batchyard.domain.states import State
from batchyard.service import open_engine
from tests.integration.conftest import make_job, make_task, settings_for
from tests.integration.test_cli import TIMEOUT, command, job_id_in, write_job

INTERRUPTED = 130


def local_environment(data_dir: Path) -> dict[str, str]:
    """No server configured anywhere: the client commands work on `data_dir`."""
    inherited = {name: value for name, value in os.environ.items()
                 if name not in ("BATCHYARD_ENDPOINT", "BATCHYARD_KEY_ID",
                                 "BATCHYARD_KEY_SECRET")}
    return {**inherited, "BATCHYARD_DATA_DIR": str(data_dir), "BATCHYARD_SLOTS": "4",
            "BATCHYARD_CLIENT_CONFIG": str(data_dir.parent / "no-client.toml"),
            "COLUMNS": "80"}


def batchyard(data_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command(), *arguments], env=local_environment(data_dir),
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


def started(data_dir: Path, *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*command(), *arguments], env=local_environment(data_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def until(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def two_steps(folder: Path, name: str = "resumable") -> tuple[Path, Path, Path]:
    """A job whose `quick` instances each append a line to a marker file, then whose `slow`
    instance appends one and sleeps until a gate file exists: the job file, marker, gate."""
    marker, gate = folder / f"{name}.marker", folder / f"{name}.gate"
    quick = make_task(f"echo quick$BATCH_COMPUTE_DAG_INSTANCE_ID >> {marker}", 2)
    slow = make_task(f"echo slow >> {marker}; while [ ! -f {gate} ]; do sleep 0.1; done")
    job = make_job({"quick": quick, "slow": slow}, {"quick": ["slow"]}, Name=name)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    return path, marker, gate


def test_jobs_job_log_priority_start_delete_on_a_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    empty = batchyard(data, "jobs")
    assert empty.returncode == 0 and f"No jobs in data dir {data}" in empty.stderr
    job = make_job({"hello": make_task("echo hello $BATCH_COMPUTE_DAG_INSTANCE_ID", 2)},
                   Name="greeting")
    ran = batchyard(data, "run", str(write_job(tmp_path, job)))
    assert ran.returncode == 0, ran.stderr
    assert f"in data dir {data}" in ran.stdout
    job_id = job_id_in(ran.stdout)

    listed = batchyard(data, "jobs")
    assert job_id in listed.stdout and "greeting" in listed.stdout and "Finished" in listed.stdout
    shown = batchyard(data, "job", job_id)
    assert shown.returncode == 0 and "hello" in shown.stdout and "Finished" in shown.stdout
    assert " 1 Finished" in batchyard(data, "job", job_id, "hello").stdout
    assert batchyard(data, "log", job_id, "hello", "1", "--stdout").stdout == "hello 1\n"
    elsewhere = tmp_path / "elsewhere"
    lost = batchyard(data, "log", job_id, "hello", "1", "--stdout", "--bucket",
                     f"test={elsewhere}")
    assert lost.returncode == 1
    assert (f"hello/1 stdout: NotFound: oss://test/logs/stdout.{job_id}.hello.1 does not "
            f"exist (looked in {elsewhere}/logs/stdout.{job_id}.hello.1; data dir {data})"
            in lost.stderr)

    lines_of = batchyard(data, "jobs", "--watch", "--json").stdout.splitlines()
    assert len(lines_of) == 1  # JSON lines: the list once (nothing is active, so it ends)
    assert [item["Id"] for item in json.loads(lines_of[0])["Items"]] == [job_id]
    assert json.loads(batchyard(data, "job", job_id, "--json").stdout)["State"] == "Finished"

    refused = batchyard(data, "priority", job_id, "7")
    assert refused.returncode == 1
    assert f"error: StateConflict: job {job_id} is Finished" in refused.stderr
    assert "HTTP" not in refused.stderr
    assert batchyard(data, "delete", job_id).stdout == f"deleted {job_id}\n"
    gone = batchyard(data, "job", job_id)
    assert gone.returncode == 1
    assert f"NotFound: job {job_id} does not exist in data dir {data}" in gone.stderr

    submitted = batchyard(data, "submit", str(tmp_path / "job.json"))
    assert submitted.returncode == 2 and "batchyard run" in submitted.stderr


def test_a_killed_run_leaves_a_job_that_start_wait_finishes_without_rerunning(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    job_file, marker, gate = two_steps(tmp_path)
    run = started(data, "run", str(job_file))
    try:
        until(lambda: "slow" in lines(marker))
        watcher = started(data, "watch", job_id_in(batchyard(data, "jobs").stdout))
        time.sleep(1)
    finally:
        run.send_signal(signal.SIGKILL)
        output, _ = run.communicate(timeout=TIMEOUT)
    job_id = job_id_in(output)
    _, complaint = watcher.communicate(timeout=TIMEOUT)  # it would wait forever otherwise
    assert watcher.returncode == 1 and "JobAbandoned" in complaint

    listed = batchyard(data, "jobs")
    assert job_id in listed.stdout and "Running" in listed.stdout
    watched = batchyard(data, "watch", job_id)
    assert watched.returncode == 1
    assert "abandoned" in watched.stderr and f"batchyard start {job_id} --wait" in watched.stderr

    other = make_job({"other": make_task("true")}, Name="other")
    second = batchyard(data, "run", str(write_job(tmp_path, other)))
    assert second.returncode == 0, second.stderr
    assert (f"{job_id} (resumable) was left Running by a batchyard run that ended"
            in second.stderr)
    assert f"batchyard start {job_id} --wait finishes it" in second.stderr
    assert "Stopped" in batchyard(data, "job", job_id).stdout
    assert sorted(lines(marker)) == ["quick0", "quick1", "slow"]  # not run in the background

    gate.touch()
    resumed = batchyard(data, "start", job_id, "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"Resumed {job_id}" in resumed.stdout and "Finished" in resumed.stdout
    assert sorted(lines(marker)) == ["quick0", "quick1", "slow", "slow"]


def test_stop_and_watch_of_a_job_a_live_run_runs_then_run_resume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    job_file, marker, gate = two_steps(tmp_path)
    run = started(data, "run", str(job_file))
    try:
        until(lambda: "slow" in lines(marker))
        job_id = job_id_in(batchyard(data, "jobs").stdout)
        watcher = started(data, "watch", job_id)
        time.sleep(1)
        busy = batchyard(data, "priority", job_id, "3")
        assert busy.returncode == 1 and "`batchyard run` (pid" in busy.stderr
        stopped = batchyard(data, "stop", job_id)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout == f"stopped {job_id}\n"
        assert run.wait(TIMEOUT) == INTERRUPTED
        watched, _ = watcher.communicate(timeout=TIMEOUT)
        assert watcher.returncode == 1
        assert f"Watching {job_id}" in watched and "Stopped" in watched
    finally:
        run.kill()
        run.communicate()
    gate.touch()
    resumed = batchyard(data, "run", "--resume", job_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sorted(lines(marker)) == ["quick0", "quick1", "slow", "slow"]


def test_local_listing_pages_like_the_server_and_shows_every_tenant(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    def own_bucket(number: int) -> dict[str, Any]:
        task = make_task("true")
        task["Parameters"].update(StdoutRedirectPath=f"oss://b{number}/logs/",
                                  StderrRedirectPath=f"oss://b{number}/logs/")
        return make_job({"t": task}, Name=f"j{number}")

    with open_engine(settings) as engine:
        ids = [engine.submit(own_bucket(number), tenant=f"tenant{number}")
               for number in range(3)]
        for job_id in ids:
            engine.wait(job_id, TIMEOUT)
    with LocalClient(settings) as client:
        first, marker = client.list_jobs("", 2, None)
        assert [job.id for job in first] == ids[::-1][:2] and marker == ids[0]
        rest, end = client.list_jobs(marker, 2, None)
        assert [job.id for job in rest] == [ids[0]] and end == ""
        assert client.list_jobs("", 10, State.FAILED) == ([], "")
    pages = batchyard(tmp_path / "data", "jobs", "--limit", "2")
    assert f"More: batchyard jobs --limit 2 --marker {ids[0]}" in pages.stderr


def test_stop_and_delete_of_an_abandoned_job_kill_what_its_run_left_running(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    pid_file = tmp_path / "pid"
    job = make_job({"t": make_task(f"echo $$ > {pid_file}; while true; do sleep 0.1; done")},
                   Name="left")
    run = started(data, "run", str(write_job(tmp_path, job)))
    try:
        until(lambda: bool(lines(pid_file)))
    finally:
        run.send_signal(signal.SIGKILL)
        output, _ = run.communicate(timeout=TIMEOUT)
    job_id, pid = job_id_in(output), int(lines(pid_file)[0])
    assert Path(f"/proc/{pid}").exists()  # the program outlived its killed run

    try:
        stopped = batchyard(data, "stop", job_id)
        assert stopped.stdout == f"stopped {job_id}\n", stopped.stderr
        until(lambda: not Path(f"/proc/{pid}").exists() or "Z" in zombie(pid), 10)
    finally:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # left behind only when the test failed
    assert "Stopped" in batchyard(data, "job", job_id).stdout
    deleted = batchyard(data, "delete", job_id)
    assert deleted.stdout == f"deleted {job_id}\n", deleted.stderr
    assert "No jobs in data dir" in batchyard(data, "jobs").stderr


def zombie(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "Z"
