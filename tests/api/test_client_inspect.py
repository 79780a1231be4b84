"""Inspecting and acting on many jobs and instances from the command line, as a user does:
real `batchyard` subprocesses against the live server of `conftest`, a tenant per group."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import LiveServer, echo_task, job_body
from tests.api.test_client_cli import JOB_ID, TIMEOUT, cli_environment, command, write_job

MIXED_COMMAND = ("echo out-$BATCH_COMPUTE_DAG_INSTANCE_ID-$BATCH_COMPUTE_DAG_ATTEMPT; "
                 "if [ $BATCH_COMPUTE_DAG_INSTANCE_ID = 1 ]; then "
                 "echo err-$BATCH_COMPUTE_DAG_ATTEMPT >&2; exit 3; fi")
"""Instances 0 and 2 succeed with an empty stderr; 1 fails on both of its attempts."""


def tenant(server: LiveServer, folder: Path) -> dict[str, str]:
    """The environment of a `batchyard` run as a tenant of its own (no client.toml)."""
    key = server.keys.create(f"inspect-{uuid.uuid4().hex[:8]}", "inspect CLI tests")
    return cli_environment(server, key, folder)


def run(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    """`batchyard …` with stdin not a terminal (as in a script or CI)."""
    return subprocess.run([*command(), *arguments], env=environment, capture_output=True,
                          stdin=subprocess.DEVNULL, text=True, timeout=TIMEOUT, check=False)


def submit(environment: dict[str, str], folder: Path, body: dict[str, Any],
           wait: bool = True) -> str:
    folder.mkdir(exist_ok=True)
    done = run(environment, "submit", write_job(folder, body), *(["--wait"] if wait else []))
    found = JOB_ID.search(done.stdout)
    assert found, done.stdout + done.stderr
    return found.group(0)


@pytest.fixture(scope="module")
def inspected(server: LiveServer, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[dict[str, str], str, str]:
    """A tenant with a job that Finished with a failed instance (retried once), and a newer
    job that Failed: (environment, mixed job, failed job)."""
    folder = tmp_path_factory.mktemp("inspect")
    environment = tenant(server, folder)
    mixed = job_body("mixed", MIXED_COMMAND)
    mixed["JobFailOnInstanceFail"] = False
    mixed["DAG"]["Tasks"]["work"] = echo_task(MIXED_COMMAND, count=3, MaxRetryCount=1)
    mixed_id = submit(environment, folder / "mixed", mixed)
    failed_id = submit(environment, folder / "failed", job_body("broken", "exit 4"))
    return environment, mixed_id, failed_id


def test_job_task_state_selects_instances(inspected: tuple[dict[str, str], str, str]) -> None:
    environment, job_id, _ = inspected
    failed = run(environment, "job", job_id, "work", "--state", "Failed")
    assert failed.returncode == 0, failed.stderr
    rows = [line.split()[:3] for line in failed.stdout.splitlines()
            if line.strip()[:1].isdigit()]
    assert rows == [["1", "Failed", "1"]], failed.stdout  # id, state, retries

    def ids(*state: str) -> list[int]:
        shown = run(environment, "job", job_id, "work", *state, "--json")
        assert shown.returncode == 0, shown.stderr
        return [one["InstanceId"] for one in json.loads(shown.stdout)["Instances"]]

    assert ids("--state", "finished") == [0, 2]
    assert ids("--state", "Failed,Finished") == ids("-s", "Failed", "-s", "Finished") == [0, 1, 2]
    assert ids() == [0, 1, 2]
    wrong = run(environment, "job", job_id, "work", "--state", "Failed,Broken")
    assert wrong.returncode == 2 and "'Broken' is not a state" in wrong.stderr, wrong.stderr
    no_task = run(environment, "job", job_id, "--state", "Failed")
    assert no_task.returncode == 2 and "TASK" in no_task.stderr


def test_job_json_has_the_api_field_names(inspected: tuple[dict[str, str], str, str]) -> None:
    environment, job_id, _ = inspected
    shown = json.loads(run(environment, "job", job_id, "--json").stdout)
    assert shown["Id"] == job_id and shown["State"] == "Finished" and shown["Name"] == "mixed"
    assert shown["InstanceMetrics"]["FailedCount"] == 1
    assert [task["TaskName"] for task in shown["Tasks"]] == ["work"]
    one = json.loads(run(environment, "job", job_id, "work", "1", "--json").stdout)
    assert one["InstanceId"] == 1 and one["RetryCount"] == 1
    assert one["Result"]["ExitCode"] == 3
    assert one["StdoutRedirectPath"].endswith(f"stdout.{job_id}.work.1")


def test_jobs_several_states_ids_and_json_pages(
        inspected: tuple[dict[str, str], str, str]) -> None:
    environment, mixed_id, failed_id = inspected
    assert run(environment, "jobs", "-q").stdout == f"{failed_id}\n{mixed_id}\n"
    assert run(environment, "jobs", "--state", "Failed", "--ids").stdout == f"{failed_id}\n"
    both = run(environment, "jobs", "--state", "Finished,Failed")
    assert JOB_ID.findall(both.stdout) == [failed_id, mixed_id], both.stdout + both.stderr
    first = json.loads(run(environment, "jobs", "-s", "Finished", "-s", "Failed", "--limit", "1",
                           "--json").stdout)
    assert [job["Id"] for job in first["Items"]] == [failed_id]
    assert first["NextMarker"] == mixed_id
    second = json.loads(run(environment, "jobs", "--state", "Finished,Failed", "--limit", "1",
                            "--marker", mixed_id, "--json").stdout)
    assert [job["Id"] for job in second["Items"]] == [mixed_id] and second["NextMarker"] == ""
    assert json.loads(run(environment, "jobs", "--state", "Running", "--json").stdout) == {
        "Items": [], "NextMarker": ""}


def test_log_failed_prints_each_failed_instance_titled(
        inspected: tuple[dict[str, str], str, str]) -> None:
    environment, job_id, _ = inspected
    failed = run(environment, "log", job_id, "--failed")
    assert failed.returncode == 0, failed.stderr
    assert failed.stdout.count("==> ") == 2, failed.stdout
    assert "==> work/1 stdout: " in failed.stdout and "out-1-2\n" in failed.stdout
    assert "err-2\n" in failed.stdout and "out-0-" not in failed.stdout
    nothing = run(environment, "log", job_id, "work", "0", "--failed")
    assert nothing.returncode == 0 and nothing.stdout == ""
    assert f"No failed instances in {job_id} task work." in nothing.stderr, nothing.stderr


def test_log_marks_empty_logs(inspected: tuple[dict[str, str], str, str]) -> None:
    environment, job_id, _ = inspected
    every = run(environment, "log", job_id, "work").stdout
    assert "==> work/0 stderr: (empty) <==\n" in every, every
    assert every.count("==> ") == 6 and "out-2-1\n" in every


def test_log_attempt_reads_the_kept_copies(inspected: tuple[dict[str, str], str, str]) -> None:
    environment, job_id, _ = inspected
    assert run(environment, "log", job_id, "work", "1", "--attempt", "1",
               "--stdout").stdout == "out-1-1\n"
    assert run(environment, "log", job_id, "work", "1", "--attempt", "2",
               "-e").stdout == "err-2\n"
    both = run(environment, "log", job_id, "work", "1", "--attempt", "1").stdout
    assert "==> work/1 stderr (attempt 1): " in both and "err-1\n" in both
    missing = run(environment, "log", job_id, "work", "1", "--attempt", "3")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "attempts with logs kept: 1, 2" in missing.stderr, missing.stderr
    succeeded = run(environment, "log", job_id, "work", "0", "--attempt", "1")
    assert succeeded.returncode == 1 and "no attempt of it has logs kept" in succeeded.stderr
    shown = run(environment, "job", job_id, "work", "1")
    assert re.search(r"Attempts kept\s+1, 2\s", shown.stdout), shown.stdout
    assert "--attempt N" in shown.stderr


def test_ids_may_be_abbreviated_to_a_unique_start(
        inspected: tuple[dict[str, str], str, str]) -> None:
    environment, mixed_id, failed_id = inspected
    length = next(at for at, (one, other) in enumerate(zip(mixed_id, failed_id, strict=True))
                  if one != other)
    shared = mixed_id[:length]  # both ids start with the time of their creation
    unique = mixed_id[:len(shared) + 1]
    for given in (unique, unique[4:], unique.lower()):
        shown = run(environment, "job", given, "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["Id"] == mixed_id, given
    log = run(environment, "log", unique[4:], "work", "1", "--attempt", "1", "--stdout")
    assert log.stdout == "out-1-1\n"
    ambiguous = run(environment, "job", shared)
    assert ambiguous.returncode == 2 and "is ambiguous: 2 jobs" in ambiguous.stderr
    assert mixed_id in ambiguous.stderr and failed_id in ambiguous.stderr
    unknown = run(environment, "job", "job-FFFF")
    assert unknown.returncode == 1 and "no job id starts with job-FFFF" in unknown.stderr
    not_an_id = run(environment, "job", "my-job")
    assert not_an_id.returncode == 2 and "'my-job' is not a job id" in not_an_id.stderr


def test_stop_and_delete_select_by_ids_state_and_name(
        server: LiveServer, tmp_path: Path) -> None:
    environment = tenant(server, tmp_path)
    slow = {name: submit(environment, tmp_path / name, job_body(name, "sleep 60"), wait=False)
            for name in ("nightly-a", "nightly-b", "adhoc")}

    refused = run(environment, "stop", "--name", "nightly-*")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "2 jobs selected; add --yes to stop them" in refused.stderr, refused.stderr
    stopped = run(environment, "stop", "--name", "nightly-*", "--yes")
    assert stopped.returncode == 0, stopped.stderr
    assert sorted(stopped.stdout.splitlines()) == sorted(
        f"stopped {slow[name]}" for name in ("nightly-a", "nightly-b"))
    assert "Stopped 2 of 2 jobs." in stopped.stderr
    assert run(environment, "jobs", "--state", "Stopped", "-q").stdout == (
        f"{slow['nightly-b']}\n{slow['nightly-a']}\n")

    none = run(environment, "delete", "--state", "Failed", "--yes")
    assert none.returncode == 0 and "No job matches --state Failed." in none.stderr
    assert run(environment, "delete").returncode == 2
    both = [slow["adhoc"], slow["nightly-a"]]
    deleted = run(environment, "delete", "--force", *both)  # named by id: nothing to confirm
    assert deleted.stdout == "".join(f"deleted {job_id}\n" for job_id in both), deleted.stderr
    left = run(environment, "delete", "--state", "Stopped", "--name", "nightly-?", "--yes")
    assert left.stdout == f"deleted {slow['nightly-b']}\n", left.stderr
    assert run(environment, "jobs", "-q").stdout == ""


def on_a_terminal(environment: dict[str, str], answer: str, *arguments: str
                  ) -> subprocess.CompletedProcess[str]:
    """`batchyard …` with stdin a terminal, typing `answer` once the question is asked."""
    controller, terminal = os.openpty()
    try:
        with subprocess.Popen([*command(), *arguments], env=environment, stdin=terminal,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as process:
            os.write(controller, answer.encode() + b"\n")  # waits in the terminal's buffer
            out, err = process.communicate(timeout=TIMEOUT)
    finally:
        os.close(controller)
        os.close(terminal)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_several_jobs_are_confirmed_on_a_terminal(server: LiveServer, tmp_path: Path) -> None:
    environment = tenant(server, tmp_path)
    older, newer = (submit(environment, tmp_path / name, job_body(name, "sleep 60"), wait=False)
                    for name in ("asked-1", "asked-2"))

    declined = on_a_terminal(environment, "n", "stop", "--name", "asked-*")
    assert declined.returncode == 1 and declined.stdout == "", declined.stderr
    assert f"  {newer}\n  {older}\nStop 2 jobs? [y/N] " in declined.stderr
    assert "not confirmed; nothing done" in declined.stderr
    assert run(environment, "jobs", "--state", "Stopped", "-q").stdout == ""

    accepted = on_a_terminal(environment, "y", "stop", "--name", "asked-*")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout == f"stopped {newer}\nstopped {older}\n"
    assert run(environment, "delete", "--state", "Stopped", "--yes").returncode == 0


def test_priority_takes_a_negative_number_as_a_value(
        inspected: tuple[dict[str, str], str, str]) -> None:
    environment, _, failed_id = inspected
    negative = run(environment, "priority", failed_id, "-1")
    assert "No such option" not in negative.stderr, negative.stderr
    assert negative.returncode == 2, negative.stderr
    assert "InvalidPriority: Priority must be an integer in [0, 1000], got -1" in negative.stderr
    assert run(environment, "priority", failed_id[:-3], "5").stdout == (
        f"priority 5 for {failed_id}\n")
