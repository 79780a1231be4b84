"""`batchyard events` as a user runs it: a real subprocess against the live server, and on a
data directory a `batchyard run` filled."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from batchyard.adapters.credentials import AccessKey
from tests.api.conftest import LiveServer, job_body, signed_client, wait_for_state
from tests.api.test_client_cli import command, environment, key, run, write_job
from tests.api.test_events import ENDED, all_events, submitted

__all__ = ["environment", "key"]  # fixtures


def test_events_prints_lines_json_lines_and_a_cursor_to_read_on(
        server: LiveServer, key: AccessKey, environment: dict[str, str]) -> None:
    with signed_client(server, key) as client:
        job_id = submitted(client, job_body("cli-events"))
        wait_for_state(client, job_id, ENDED)
        expected, _ = all_events(client)
    lines = run(environment, "events", "--json")
    assert lines.returncode == 0, lines.stderr
    printed = [json.loads(line) for line in lines.stdout.splitlines()]
    assert printed == expected and lines.stderr == ""
    plain = run(environment, "events", "--job", job_id[:12])
    assert plain.returncode == 0, plain.stderr
    rows = plain.stdout.splitlines()
    assert len(rows) == len(expected)
    assert "OnJobWaiting" in rows[0] and job_id in rows[0] and "#1" in rows[0]
    assert "OnInstanceFinished" in plain.stdout and "work/0" in plain.stdout
    assert "OnJobFinished" in rows[-1] and "Finished" in rows[-1]
    assert f"--since {expected[-1]['Id']}" in plain.stderr
    later = run(environment, "events", "--since", expected[2]["Id"], "--json")
    assert [json.loads(line)["Id"] for line in later.stdout.splitlines()] == [
        item["Id"] for item in expected[3:]]


def test_events_follow_prints_new_events_as_they_commit(
        server: LiveServer, key: AccessKey, environment: dict[str, str]) -> None:
    follower = subprocess.Popen([*command(), "events", "-f", "--json"], env=environment,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        with signed_client(server, key) as client:
            job_id = submitted(client, job_body("cli-follow"))
            wait_for_state(client, job_id, ENDED)
        assert follower.stdout is not None
        seen = []
        deadline = time.monotonic() + 30
        while not seen or seen[-1]["Type"] != "OnJobFinished":
            assert time.monotonic() < deadline, seen
            seen.append(json.loads(follower.stdout.readline()))
        assert [item["Seq"] for item in seen] == list(range(1, len(seen) + 1))
        assert {item["JobId"] for item in seen} == {job_id}
    finally:
        follower.terminate()
        follower.wait(10)


def test_events_refuses_a_bad_cursor_and_an_unknown_job(environment: dict[str, str]) -> None:
    bad = run(environment, "events", "--since", "nope")
    assert bad.returncode == 1 and "InvalidMarker" in bad.stderr and "cursor" in bad.stderr
    unknown = run(environment, "events", "--job", "job-" + "0" * 32)
    assert unknown.returncode == 1 and "does not exist" in unknown.stderr


def test_events_of_a_data_directory(tmp_path: Path, environment: dict[str, str]) -> None:
    local = {name: value for name, value in environment.items()
             if name not in {"BATCHYARD_ENDPOINT", "BATCHYARD_KEY_ID", "BATCHYARD_KEY_SECRET"}}
    local["BATCHYARD_DATA_DIR"] = str(tmp_path / "data")
    empty = run(local, "events")
    assert empty.returncode == 0 and empty.stdout == "" and "no events" in empty.stderr
    job = job_body("local-events")
    ran = run(local, "run", write_job(tmp_path, job))
    assert ran.returncode == 0, ran.stderr
    listed = run(local, "events", "--json")
    items = [json.loads(line) for line in listed.stdout.splitlines()]
    assert items[0]["Type"] == "OnJobWaiting"
    assert items[-1]["Type"] == "OnJobFinished" and items[-1]["JobName"] == "local-events"
    assert [item["Seq"] for item in items] == list(range(1, len(items) + 1))

