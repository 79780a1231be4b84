"""run_attempt with real processes, a real object-store folder and real packages."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.runner import AttemptControl, RunnerSettings, run_attempt
from tests.integration.conftest import upload_package

LOGS = "oss://bkt/run/logs/"


@pytest.fixture
def objects(tmp_path: Path) -> FsspecObjectStore:
    return FsspecObjectStore(tmp_path / "objects")


@pytest.fixture
def settings(tmp_path: Path) -> RunnerSettings:
    return RunnerSettings(work_root=tmp_path / "work", region="cn-test", oss_host="oss.test",
                          kill_grace=0.5)


def _request(command: str, *, attempt: int = 1, timeout: int = 60, package: str = "",
             env: dict[str, str] | None = None, logs: str = LOGS) -> AttemptRequest:
    return AttemptRequest(
        key=AttemptKey("job-00000000000000000000000000000A1B", "count", 2, attempt),
        instance_count=3, command_line=command, package_path=package, env_vars=env or {},
        timeout=timeout, stdout_dir=logs, stderr_dir=logs, retry_count=attempt - 1,
        cluster_id="cls-1", worker_id="worker-1")


def _run(request: AttemptRequest, objects: FsspecObjectStore, settings: RunnerSettings,
         control: AttemptControl | None = None) -> Outcome:
    return run_attempt(request, objects, control or AttemptControl(), settings)


def _attempt_folder(settings: RunnerSettings, attempt: int = 1) -> Path:
    return settings.work_root / "job-00000000000000000000000000000A1B" / "count" / (
        f"2.attempt-{attempt}")


def _is_gone(pid: int, within: float = 3.0) -> bool:
    """Whether the process has died (a zombie not yet reaped by init counts as dead)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def _log(objects: FsspecObjectStore, stream: str, suffix: str = "") -> str:
    name = f"{LOGS}{stream}.job-00000000000000000000000000000A1B.count.2{suffix}"
    return objects.read_bytes(name).decode()


def test_program_sees_identity_platform_and_user_variables(
        objects: FsspecObjectStore, settings: RunnerSettings) -> None:
    user = {"PARTS": "3", "BATCH_COMPUTE_DAG_INSTANCE_ID": "99", "BATCH_COMPUTE_DAG_JOB_ID": "x",
            "BATCH_COMPUTE_DAG_ATTEMPT": "7", "BATCH_COMPUTE_REGION": "user-region"}
    outcome = _run(_request("env", attempt=2, env=user), objects, settings)
    assert outcome.succeeded, outcome
    seen = dict(line.split("=", 1) for line in _log(objects, "stdout").splitlines() if "=" in line)
    assert {name: seen[name] for name in (
        "BATCH_COMPUTE_DAG_JOB_ID", "BATCH_COMPUTE_DAG_TASK_ID", "BATCH_COMPUTE_DAG_INSTANCE_ID",
        "BATCH_COMPUTE_DAG_INSTANCE_COUNT", "BATCH_COMPUTE_DAG_ATTEMPT",
        "BATCH_COMPUTE_DAG_INSTANCE_RETRY", "BATCH_COMPUTE_OSS_HOST", "BATCH_COMPUTE_REGION",
        "BATCH_COMPUTE_CLUSTER_ID", "BATCH_COMPUTE_WORKER_ID", "PARTS")} == {
        "BATCH_COMPUTE_DAG_JOB_ID": "job-00000000000000000000000000000A1B",
        "BATCH_COMPUTE_DAG_TASK_ID": "count", "BATCH_COMPUTE_DAG_INSTANCE_ID": "2",
        "BATCH_COMPUTE_DAG_INSTANCE_COUNT": "3", "BATCH_COMPUTE_DAG_ATTEMPT": "2",
        "BATCH_COMPUTE_DAG_INSTANCE_RETRY": "1", "BATCH_COMPUTE_OSS_HOST": "oss.test",
        "BATCH_COMPUTE_REGION": "user-region", "BATCH_COMPUTE_CLUSTER_ID": "cls-1",
        "BATCH_COMPUTE_WORKER_ID": "worker-1", "PARTS": "3"}
    assert seen["PYTHONPATH"].split(os.pathsep)[0] == settings.python_path
    assert seen["BATCHYARD_OSS_ROOT"] == objects.program_environment()["BATCHYARD_OSS_ROOT"]
    assert seen["PWD"] == str(_attempt_folder(settings, 2) / "workdir")
    # the bash that runs it (bash then never looks the user up in the password database)
    assert settings.inherit_environment or seen["SHELL"].endswith("/bash")


def test_success_uploads_logs_and_removes_the_attempt_folder(
        objects: FsspecObjectStore, settings: RunnerSettings, tmp_path: Path) -> None:
    outcome = _run(_request("echo out; echo err >&2"), objects, settings)
    assert outcome.succeeded
    assert (outcome.exit_code, outcome.error_code, outcome.error_message) == (0, ErrorCode.NONE, "")
    assert outcome.stdout_path == f"{LOGS}stdout.job-00000000000000000000000000000A1B.count.2"
    assert outcome.stderr_path == f"{LOGS}stderr.job-00000000000000000000000000000A1B.count.2"
    assert (_log(objects, "stdout"), _log(objects, "stderr")) == ("out\n", "err\n")
    assert [info.url for info in objects.list(LOGS)] == [outcome.stderr_path, outcome.stdout_path]
    assert outcome.started_at is not None and outcome.ended_at is not None
    assert outcome.started_at.utcoffset() is not None and outcome.started_at <= outcome.ended_at
    assert outcome.node
    assert not _attempt_folder(settings).exists()
    # the logs are the objects themselves (hard links), so deleting the attempt's copies
    # left the objects whole
    stored = tmp_path / "objects" / "bkt" / "run" / "logs" / outcome.stdout_path.rsplit("/")[-1]
    assert stored.stat().st_nlink == 1


def test_an_empty_attempt_folder_is_reused_fresh_by_the_next_attempt(
        objects: FsspecObjectStore, settings: RunnerSettings) -> None:
    first = _run(_request("chmod 700 .; true"), objects, settings)
    spares = list((settings.work_root / ".spare").iterdir())
    assert first.succeeded and len(spares) == 1
    second = _run(_request("stat -c %a .; ls -A; echo in > mine", attempt=2), objects, settings)
    assert second.succeeded
    assert _log(objects, "stdout") == "755\n"  # a fresh, empty workdir with the usual mode
    assert not spares[0].exists()  # renamed into place, then not kept: it held a file
    assert not list((settings.work_root / ".spare").iterdir())
    assert not _attempt_folder(settings, 2).exists()


def test_empty_logs_are_uploaded_too(objects: FsspecObjectStore,
                                     settings: RunnerSettings) -> None:
    assert _run(_request("true"), objects, settings).succeeded
    assert (_log(objects, "stdout"), _log(objects, "stderr")) == ("", "")


def test_failure_keeps_per_attempt_copies_and_retries_overwrite(
        objects: FsspecObjectStore, settings: RunnerSettings) -> None:
    first = _run(_request("echo first; exit 3", attempt=1), objects, settings)
    assert (first.exit_code, first.error_code) == (3, ErrorCode.EXIT_CODE)
    assert first.error_message == "exited with code 3"
    assert _attempt_folder(settings, 1).is_dir()
    assert str(_attempt_folder(settings, 1)) in first.detail
    second = _run(_request("echo second", attempt=2), objects, settings)
    assert second.succeeded
    assert _log(objects, "stdout") == "second\n"
    assert _log(objects, "stdout", ".attempt-1") == "first\n"
    assert _log(objects, "stderr", ".attempt-1") == ""
    assert not objects.exists(f"{second.stdout_path}.attempt-2")


def test_killed_by_a_signal(objects: FsspecObjectStore, settings: RunnerSettings) -> None:
    outcome = _run(_request("kill -KILL $$"), objects, settings)
    assert (outcome.exit_code, outcome.error_code) == (137, ErrorCode.EXIT_CODE)
    assert outcome.error_message == "killed by signal SIGKILL"


def test_timeout_kills_the_whole_process_group(objects: FsspecObjectStore,
                                               settings: RunnerSettings) -> None:
    started = time.monotonic()
    outcome = _run(_request("sleep 300 & echo $!; sleep 300", timeout=1), objects, settings)
    assert 1 <= time.monotonic() - started < 3
    assert outcome.error_code is ErrorCode.TIMEOUT
    assert outcome.error_message == "killed after exceeding Timeout of 1 s"
    assert outcome.exit_code == 128 + 15
    assert _is_gone(int(_log(objects, "stdout")))
    assert "batchyard: killed after exceeding Timeout of 1 s" in _log(objects, "stderr")
    assert _log(objects, "stderr", ".attempt-1") == _log(objects, "stderr")


def test_timeout_escalates_to_sigkill_after_the_grace(objects: FsspecObjectStore,
                                                      settings: RunnerSettings) -> None:
    started = time.monotonic()
    outcome = _run(_request("trap '' TERM; sleep 300 & echo $!; wait", timeout=1),
                   objects, settings)
    assert 1.5 <= time.monotonic() - started < 3.5
    assert (outcome.error_code, outcome.exit_code) == (ErrorCode.TIMEOUT, 137)
    assert _is_gone(int(_log(objects, "stdout")))


def test_background_children_of_a_finished_program_are_killed(
        objects: FsspecObjectStore, settings: RunnerSettings) -> None:
    started = time.monotonic()
    outcome = _run(_request("sleep 300 & echo $!"), objects, settings)
    assert outcome.succeeded
    assert time.monotonic() - started < 2
    assert _is_gone(int(_log(objects, "stdout")))


def test_cancel_from_another_thread_stops_the_program(
        objects: FsspecObjectStore, settings: RunnerSettings) -> None:
    control = AttemptControl()
    timer = threading.Timer(0.3, control.cancel)
    timer.start()
    started = time.monotonic()
    outcome = _run(_request("sleep 300 & echo $!; sleep 300"), objects, settings, control)
    timer.join()
    assert time.monotonic() - started < 2
    assert control.cancelled
    assert (outcome.error_code, outcome.exit_code) == (ErrorCode.STOPPED, 137)
    assert _is_gone(int(_log(objects, "stdout")))


def test_cancel_before_start_runs_nothing(objects: FsspecObjectStore, settings: RunnerSettings,
                                          tmp_path: Path) -> None:
    control = AttemptControl()
    control.cancel()
    marker = tmp_path / "ran"
    outcome = _run(_request(f"touch {marker}"), objects, settings, control)
    assert (outcome.error_code, outcome.exit_code) == (ErrorCode.STOPPED, None)
    assert not marker.exists()
    assert _log(objects, "stdout") == ""
    assert _log(objects, "stderr") == "batchyard: stopped before the program started\n"


def test_package_is_extracted_into_the_working_directory(
        objects: FsspecObjectStore, settings: RunnerSettings) -> None:
    upload_package(objects, "oss://bkt/app/app.tar.gz", {"main.sh": "echo from-package $1\n"})
    outcome = _run(_request("bash main.sh ok", package="oss://bkt/app/app.tar.gz"),
                   objects, settings)
    assert outcome.succeeded, outcome
    assert _log(objects, "stdout") == "from-package ok\n"


def test_missing_package_names_the_object(objects: FsspecObjectStore, settings: RunnerSettings,
                                          tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    outcome = _run(_request(f"touch {marker}", package="oss://bkt/none/app.tar.gz"),
                   objects, settings)
    assert (outcome.error_code, outcome.exit_code) == (ErrorCode.PACKAGE, None)
    assert outcome.error_message == (
        "cannot download the package: cannot read oss://bkt/none/app.tar.gz: "
        "No such file or directory")
    assert not marker.exists()
    assert outcome.error_message in _log(objects, "stderr")


def test_unsafe_package_is_refused(objects: FsspecObjectStore, settings: RunnerSettings) -> None:
    upload_package(objects, "oss://bkt/app/evil.tar.gz", {"../evil.sh": "echo"})
    outcome = _run(_request("true", package="oss://bkt/app/evil.tar.gz"), objects, settings)
    assert outcome.error_code is ErrorCode.PACKAGE
    assert "oss://bkt/app/evil.tar.gz" in outcome.error_message
    assert "refusing member '../evil.sh': its name has a '..' component" in outcome.error_message


def test_programs_can_import_batchyard_oss(objects: FsspecObjectStore,
                                           settings: RunnerSettings) -> None:
    objects.put_bytes("oss://bkt/in/data.txt", b"payload")
    script = ("from batchyard import oss; "
              "oss.put_text('oss://bkt/out/copy.txt', oss.read_text('oss://bkt/in/data.txt'))")
    # -S: no site-packages, so only PYTHONPATH can make batchyard importable.
    outcome = _run(_request(f'{sys.executable} -S -c "{script}"'), objects, settings)
    assert outcome.succeeded, _log(objects, "stderr")
    assert objects.read_bytes("oss://bkt/out/copy.txt") == b"payload"


def test_upload_failure_fails_a_successful_attempt(objects: FsspecObjectStore,
                                                   settings: RunnerSettings) -> None:
    objects.put_bytes("oss://bkt/blocked", b"a file where the log folder should be")
    outcome = _run(_request("true", logs="oss://bkt/blocked/"), objects, settings)
    assert (outcome.exit_code, outcome.error_code) == (0, ErrorCode.UPLOAD)
    assert outcome.error_message.startswith(
        "cannot write oss://bkt/blocked/stdout.job-00000000000000000000000000000A1B.count.2: ")
    assert _attempt_folder(settings).is_dir()


def test_upload_failure_of_a_failed_program_keeps_the_program_error(
        objects: FsspecObjectStore, settings: RunnerSettings) -> None:
    objects.put_bytes("oss://bkt/blocked", b"x")
    outcome = _run(_request("exit 4", logs="oss://bkt/blocked/"), objects, settings)
    assert (outcome.exit_code, outcome.error_code) == (4, ErrorCode.EXIT_CODE)
    assert "log upload failed: cannot write oss://bkt/blocked/" in outcome.detail


def test_leftover_attempt_folder_is_replaced(objects: FsspecObjectStore,
                                             settings: RunnerSettings) -> None:
    leftover = _attempt_folder(settings) / "workdir" / "stale"
    leftover.mkdir(parents=True)
    leftover.chmod(0o500)
    keeping = RunnerSettings(work_root=settings.work_root, keep_workdirs=True)
    outcome = _run(_request("ls -A; touch fresh"), objects, keeping)
    assert outcome.succeeded
    assert _log(objects, "stdout") == ""
    assert (_attempt_folder(settings) / "workdir" / "fresh").exists()


def test_runner_trouble_becomes_a_launch_outcome(objects: FsspecObjectStore,
                                                 settings: RunnerSettings) -> None:
    outcome = _run(_request("true", env={"BAD=NAME": "x"}), objects, settings)
    assert (outcome.exit_code, outcome.error_code) == (None, ErrorCode.LAUNCH)
    assert outcome.error_message.startswith("cannot start the program: ")
    assert outcome.stderr_path  # logs still uploaded, with the reason
    assert "batchyard: cannot start the program" in _log(objects, "stderr")


def test_unsafe_names_never_reach_the_disk(objects: FsspecObjectStore,
                                           settings: RunnerSettings) -> None:
    request = AttemptRequest(key=AttemptKey("..", "count", 0, 1), instance_count=1,
                             command_line="true", package_path="", env_vars={}, timeout=60,
                             stdout_dir=LOGS, stderr_dir=LOGS)
    outcome = _run(request, objects, settings)
    assert outcome.error_code is ErrorCode.LAUNCH
    assert outcome.error_message == (
        "the attempt could not be run: unsafe name '..' for a working directory")
    assert not settings.work_root.exists()


# ---- when the program started: the phases of an attempt --------------------------------

class SlowDownloads(FsspecObjectStore):
    """A real object-store folder whose downloads take `delay` seconds longer (a package
    fetched from far away): staging that takes a known, measurable time."""

    delay = 0.4

    def get_file(self, url: str, local: Path) -> None:
        time.sleep(self.delay)
        super().get_file(url, local)


def _program_clock(outcome: Outcome, objects: FsspecObjectStore) -> datetime:
    """When the program itself says it ran (`date +%s.%N` as its first line of stdout)."""
    first = _log(objects, "stdout").splitlines()[0]
    return datetime.fromtimestamp(float(first), UTC)


def test_the_program_starts_after_its_package_is_staged(tmp_path: Path,
                                                        settings: RunnerSettings) -> None:
    objects = SlowDownloads(tmp_path / "objects")
    upload_package(objects, "oss://bkt/app/app.tar.gz", {"main.sh": "date +%s.%N; sleep 0.3\n"})
    outcome = _run(_request("bash main.sh", package="oss://bkt/app/app.tar.gz"),
                   objects, settings)
    assert outcome.succeeded, outcome
    started, program, ended = outcome.started_at, outcome.program_started_at, outcome.ended_at
    assert started is not None and program is not None and ended is not None
    assert started < program <= _program_clock(outcome, objects) < ended
    assert (program - started).total_seconds() >= SlowDownloads.delay  # staging
    assert (ended - program).total_seconds() >= 0.3  # running: the program's sleep


def test_a_plain_program_starts_right_after_its_attempt(objects: FsspecObjectStore,
                                                        settings: RunnerSettings) -> None:
    outcome = _run(_request("date +%s.%N"), objects, settings)
    assert outcome.succeeded, outcome
    started, program, ended = outcome.started_at, outcome.program_started_at, outcome.ended_at
    assert started is not None and program is not None and ended is not None
    assert started <= program <= _program_clock(outcome, objects) <= ended


@pytest.mark.parametrize("failure", ["missing package", "unsafe package", "cancelled first"])
def test_a_program_that_never_started_has_no_start(objects: FsspecObjectStore,
                                                    settings: RunnerSettings,
                                                    failure: str) -> None:
    upload_package(objects, "oss://bkt/app/evil.tar.gz", {"../evil.sh": "echo"})
    control = AttemptControl()
    package = {"missing package": "oss://bkt/none/app.tar.gz",
               "unsafe package": "oss://bkt/app/evil.tar.gz"}.get(failure, "")
    if failure == "cancelled first":
        control.cancel()
    outcome = _run(_request("true", package=package), objects, settings, control)
    assert outcome.error_code is (ErrorCode.STOPPED if failure == "cancelled first"
                                  else ErrorCode.PACKAGE), outcome
    assert outcome.started_at is not None and outcome.ended_at is not None
    assert outcome.program_started_at is None


def test_a_program_that_could_not_be_launched_has_no_start(
        objects: FsspecObjectStore, settings: RunnerSettings, tmp_path: Path) -> None:
    request = replace(_request("true"), env_vars={"BAD": "a\0b"})  # execve refuses a NUL
    outcome = _run(request, objects, settings)
    assert outcome.error_code is ErrorCode.LAUNCH, outcome
    assert outcome.program_started_at is None
