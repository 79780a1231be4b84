"""The `batchyard` client commands as a user runs them: real subprocesses of the console script
against the live server of `conftest`, each test as a tenant of its own."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from batchyard.adapters.credentials import AccessKey
from tests.api.conftest import LiveServer, echo_task, job_body, signed_client

TIMEOUT = 60
JOB_ID = re.compile(r"job-[0-9A-F]{32}")


def command() -> list[str]:
    found = shutil.which("batchyard")
    return [found] if found else [sys.executable, "-m", "batchyard.cli"]


@pytest.fixture()
def key(server: LiveServer) -> AccessKey:
    return server.keys.create(f"cli-{uuid.uuid4().hex[:8]}", "client CLI tests")


def cli_environment(server: LiveServer, key: AccessKey, folder: Path) -> dict[str, str]:
    """The server, the key and the server's data dir (for logs); no real client.toml."""
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith("BATCHYARD_")}
    return {**inherited, "BATCHYARD_ENDPOINT": server.url, "BATCHYARD_KEY_ID": key.id,
            "BATCHYARD_KEY_SECRET": key.secret, "COLUMNS": "80",
            "BATCHYARD_CLIENT_CONFIG": str(folder / "absent.toml"),
            "BATCHYARD_DATA_DIR": str(server.settings.data_dir)}


@pytest.fixture()
def environment(server: LiveServer, key: AccessKey, tmp_path: Path) -> dict[str, str]:
    return cli_environment(server, key, tmp_path)


def run(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command(), *arguments], env=environment, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)


def write_job(folder: Path, job: dict[str, Any]) -> str:
    path = folder / "job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    return str(path)


def assert_fits_80(output: str) -> None:
    assert max(len(line) for line in output.splitlines()) <= 80, output


def test_submit_wait_finishes_and_every_view_and_log_agrees(
        environment: dict[str, str], tmp_path: Path) -> None:
    command_line = ("echo out-$BATCH_COMPUTE_DAG_INSTANCE_ID; "
                    "echo err-$BATCH_COMPUTE_DAG_INSTANCE_ID >&2")
    job = write_job(tmp_path, job_body("cli-greeting", command_line, count=2))

    done = run(environment, "submit", job, "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = JOB_ID.search(done.stdout).group(0)  # type: ignore[union-attr]
    assert "cli-greeting" in done.stdout and "work: ✔ Finished" in done.stdout
    assert_fits_80(done.stdout)

    shown = run(environment, "job", job_id)
    assert shown.returncode == 0 and "Finished" in shown.stdout and "2/2" in shown.stdout
    task = run(environment, "job", job_id, "work")
    assert task.returncode == 0 and len(re.findall(r"Finished\s+0\s+0", task.stdout)) == 2
    instance = run(environment, "job", job_id, "work", "1")
    assert re.search(r"RetryCount\s+0\s", instance.stdout)
    assert re.search(r"Result\.ExitCode\s+0\s", instance.stdout), instance.stdout
    assert f"oss://api-tests/logs/stdout.{job_id}.work.1\n" in instance.stdout  # never folded

    assert run(environment, "log", job_id, "work", "1", "--stdout").stdout == "out-1\n"
    assert run(environment, "log", job_id, "work", "1", "-e").stdout == "err-1\n"
    everything = run(environment, "log", job_id).stdout
    assert everything.count("==> work/") == 4 and "out-0\n" in everything


def test_a_failing_job_exits_1_with_its_exit_code_and_stderr(
        environment: dict[str, str], tmp_path: Path) -> None:
    job = write_job(tmp_path, job_body("cli-failing", "echo boom >&2; exit 3"))
    failed = run(environment, "submit", job, "--wait")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Failed" in failed.stdout and "exit code 3" in failed.stdout
    assert "boom" in failed.stdout  # the tail of stderr, read from the server's store


def test_an_invalid_job_exits_2_listing_every_problem_with_its_path(
        environment: dict[str, str], tmp_path: Path) -> None:
    body = job_body("cli-invalid")
    del body["Name"]
    body["DAG"]["Tasks"]["work"]["InstanceCount"] = 0
    invalid = run(environment, "submit", write_job(tmp_path, body), "--wait")
    assert invalid.returncode == 2, invalid.stdout + invalid.stderr
    assert "2 problems" in invalid.stderr
    assert "DAG.Tasks.work.InstanceCount" in invalid.stderr and "Name" in invalid.stderr


def typo_body(name: str) -> dict[str, Any]:
    body = job_body(name)
    body["DAG"]["Tasks"]["work"].update({"InstanceCont": 3, "MaxRetryCont": 2})
    return body


def test_submit_warns_about_unknown_fields_once(environment: dict[str, str],
                                               tmp_path: Path) -> None:
    """The client checks the file itself; the server's Warning headers say the same, and
    are not repeated."""
    job = write_job(tmp_path, typo_body("cli-typos"))
    submitted = run(environment, "submit", job)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert JOB_ID.fullmatch(submitted.stdout.strip())
    assert submitted.stderr.splitlines() == [
        f"warning: {job}: DAG.Tasks.work.InstanceCont: unknown field, ignored; "
        "did you mean InstanceCount?",
        f"warning: {job}: DAG.Tasks.work.MaxRetryCont: unknown field, ignored; "
        "did you mean MaxRetryCount?"]


def test_submit_strict_refuses_unknown_fields_and_sends_nothing(
        server: LiveServer, key: AccessKey, environment: dict[str, str],
        tmp_path: Path) -> None:
    refused = run(environment, "submit", "--strict", write_job(tmp_path, typo_body("strict")))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines()[0].endswith(
        "job.json: 2 unknown fields (refused by --strict):")
    with signed_client(server, key) as client:
        assert client.get("/jobs").json()["Items"] == []


def test_submit_shows_warnings_only_the_server_found(
        environment: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server newer than its client may know more: what the client did not print itself,
    it prints from the server's Warning headers. (This client is made to find nothing; the
    server, in this process too, still uses the real detector.)"""
    from typer.testing import CliRunner

    from batchyard.cli import job_file
    from batchyard.cli.main import app

    monkeypatch.setattr(job_file, "unknown_fields", lambda raw, model: [])
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["submit", write_job(tmp_path, typo_body("newer"))])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: server: DAG.Tasks.work.InstanceCont: unknown field, ignored; "
        "did you mean InstanceCount?",
        "warning: server: DAG.Tasks.work.MaxRetryCont: unknown field, ignored; "
        "did you mean MaxRetryCount?"]


def test_jobs_pages_with_marker_and_all(server: LiveServer, key: AccessKey,
                                        environment: dict[str, str]) -> None:
    with signed_client(server, key) as client:
        created = [client.post("/jobs", json=job_body(f"page-{n}", "true")).json()["Id"]
                   for n in range(5)]
    first = run(environment, "jobs", "--limit", "2")
    assert first.returncode == 0, first.stderr
    assert JOB_ID.findall(first.stdout) == created[::-1][:2]
    assert_fits_80(first.stdout)
    marker = re.search(r"--marker (job-\w+)", first.stderr).group(1)  # type: ignore[union-attr]
    second = run(environment, "jobs", "--limit", "2", "--marker", marker)
    assert JOB_ID.findall(second.stdout) == created[::-1][2:4]
    every = run(environment, "jobs", "--limit", "2", "--all")
    assert JOB_ID.findall(every.stdout) == created[::-1] and "--marker" not in every.stderr


def test_stop_start_priority_delete_and_state_conflicts(
        environment: dict[str, str], tmp_path: Path) -> None:
    submitted = run(environment, "submit", write_job(tmp_path, job_body("cli-slow", "sleep 30")))
    job_id = submitted.stdout.strip()
    assert submitted.returncode == 0 and JOB_ID.fullmatch(job_id), submitted.stderr

    refused = run(environment, "delete", job_id)
    assert refused.returncode == 1
    assert re.search(r"error: StateConflict: job .* is (Waiting|Running).*HTTP 409",
                     refused.stderr), refused.stderr
    assert run(environment, "stop", job_id).stdout == f"stopped {job_id}\n"
    again = run(environment, "stop", job_id)
    assert again.returncode == 1 and "StateConflict" in again.stderr
    assert run(environment, "priority", job_id, "7").returncode == 0
    assert re.search(r"cli-slow\s+Stopped\s+7", run(environment, "jobs").stdout)
    assert run(environment, "start", job_id).stdout == f"started {job_id}\n"
    assert run(environment, "delete", "--force", job_id).stdout == f"deleted {job_id}\n"
    gone = run(environment, "job", job_id)
    assert gone.returncode == 1 and "InvalidResource.NotFound" in gone.stderr


def test_log_follow_waits_for_the_instance(environment: dict[str, str],
                                           tmp_path: Path) -> None:
    job_id = run(environment, "submit", write_job(
        tmp_path, job_body("cli-follow", "sleep 1; echo late"))).stdout.strip()
    followed = run(environment, "log", "-f", job_id, "work", "0", "--stdout")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "late\n"


def test_a_job_of_two_tasks_logs_in_dependency_order(environment: dict[str, str],
                                                     tmp_path: Path) -> None:
    body = job_body("cli-dag", "echo first")
    body["DAG"]["Tasks"]["a-last"] = echo_task("echo second")
    body["DAG"]["Dependencies"] = {"work": ["a-last"]}
    assert run(environment, "submit", write_job(tmp_path, body), "--wait").returncode == 0
    job_id = JOB_ID.search(run(environment, "jobs", "-n", "1").stdout).group(0)  # type: ignore[union-attr]
    logs = run(environment, "log", job_id, "--stdout").stdout
    assert logs.index("first") < logs.index("second")


def test_bad_or_missing_keys_are_clear_errors(environment: dict[str, str],
                                              tmp_path: Path) -> None:
    wrong = run({**environment, "BATCHYARD_KEY_SECRET": "not-the-secret"}, "jobs")
    assert wrong.returncode == 1
    assert "error: InvalidSignature" in wrong.stderr and "keys create" in wrong.stderr
    unknown = run(environment, "jobs", "--key-id", "NOSUCHKEY")
    assert unknown.returncode == 1 and "InvalidAccessKeyId.NotFound" in unknown.stderr
    missing = {name: value for name, value in environment.items()
               if not name.startswith("BATCHYARD_KEY")}
    absent = run(missing, "jobs")
    assert absent.returncode == 2 and "batchyard keys create" in absent.stderr
    config = tmp_path / "client.toml"
    config.write_text(f'key_id = "{environment["BATCHYARD_KEY_ID"]}"\n'
                      f'key_secret = "{environment["BATCHYARD_KEY_SECRET"]}"\n')
    from_file = run({**missing, "BATCHYARD_CLIENT_CONFIG": str(config)}, "jobs")
    assert from_file.returncode == 0 and "No jobs." in from_file.stderr


def test_submit_wait_exits_3_when_the_job_finished_with_failed_instances(
        environment: dict[str, str], tmp_path: Path) -> None:
    body = job_body("cli-partly", 'if [ "$BATCH_COMPUTE_DAG_INSTANCE_ID" = 1 ]; then '
                    'echo broken >&2; exit 3; fi', count=2)
    body["JobFailOnInstanceFail"] = False
    job = write_job(tmp_path, body)
    waited = run(environment, "submit", job, "--wait")
    assert waited.returncode == 3, waited.stdout + waited.stderr
    assert "Finished with 1 failed instance" in waited.stdout and "broken" in waited.stdout
    assert re.search(r"work\s+⚠ Finished", waited.stdout), waited.stdout
    allowed = run(environment, "submit", job, "--wait", "--allow-failed-instances")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_submit_json_prints_one_document_with_or_without_wait(
        environment: dict[str, str], tmp_path: Path) -> None:
    job = write_job(tmp_path, job_body("cli-json", "exit 2"))
    submitted = run(environment, "submit", job, "--json")
    assert submitted.returncode == 0, submitted.stderr
    assert JOB_ID.fullmatch(json.loads(submitted.stdout)["Id"])
    waited = run(environment, "submit", job, "--wait", "--json")
    assert waited.returncode == 1, waited.stdout + waited.stderr
    document = json.loads(waited.stdout)
    assert document["ExitStatus"] == 1 and document["Job"]["State"] == "Failed"
    assert document["FailedInstances"][0]["Result"]["ExitCode"] == 2
    assert document["Tasks"][0]["TaskName"] == "work"


def test_watch_start_wait_and_jobs_watch_on_a_server(environment: dict[str, str],
                                                     tmp_path: Path) -> None:
    job_id = run(environment, "submit", write_job(
        tmp_path, job_body("cli-watched", "sleep 1; echo done"))).stdout.strip()
    watched = run(environment, "watch", job_id)
    assert watched.returncode == 0, watched.stderr
    assert f"Watching {job_id} (cli-watched)" in watched.stdout and "Finished" in watched.stdout

    again = run(environment, "submit", write_job(tmp_path, job_body("cli-again", "sleep 4")))
    again_id = again.stdout.strip()
    assert run(environment, "stop", again_id).returncode == 0
    started = run(environment, "start", again_id, "--wait")
    assert started.returncode == 0, started.stderr
    assert f"Started {again_id}" in started.stdout and "Finished" in started.stdout

    third = run(environment, "submit", write_job(tmp_path, job_body("cli-third", "sleep 1")))
    listing = run(environment, "jobs", "--watch")  # piped: a table per change, until none runs
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count(third.stdout.strip()) >= 2  # drawn again once it ended
    last = listing.stdout.split(third.stdout.strip())[-1]
    assert "Finished" in last and "Running" not in last and "Waiting" not in last


def test_a_served_data_dir_is_not_operated_on_without_the_server(
        environment: dict[str, str], tmp_path: Path) -> None:
    job_id = run(environment, "submit", write_job(
        tmp_path, job_body("cli-served", "sleep 30"))).stdout.strip()
    local = {name: value for name, value in environment.items()
             if name != "BATCHYARD_ENDPOINT"}
    refused = run(local, "stop", job_id)
    assert refused.returncode == 1
    assert "is served by `batchyard serve` (pid" in refused.stderr
    assert "--endpoint" in refused.stderr
    assert job_id in run(local, "jobs").stdout  # reading is fine, every tenant's jobs
    assert run(environment, "stop", job_id).returncode == 0
