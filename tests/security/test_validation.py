"""Values that can never run are refused at submission by a real server: 400, the field's
BatchCompute code and the JSON path of each problem, never a 500 and never a job that fails
only at run time.

Each offending job is otherwise valid and runs `true`; if a server accepts one anyway (the
code before these rules did), the test stops and deletes it before failing.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.security.conftest import job, wait_for_state

MAX_ARG_STRLEN = 128 * 1024
"""Linux's limit on one exec string (spelt out, so that this file runs against old code)."""
TASK = "DAG.Tasks.attack"
COMMAND = f"{TASK}.Parameters.Command"


def submit(client: httpx.Client, body: Any) -> httpx.Response:
    """POST /jobs with `body` as JSON (non-ASCII escaped, as most clients send it); a job
    that was created anyway is stopped and deleted."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post("/jobs", content=content)
    if response.status_code == 201:
        discard(client, response.json()["Id"])
    return response


def discard(client: httpx.Client, job_id: str) -> None:
    client.post(f"/jobs/{job_id}/stop")
    wait_for_state(client, job_id, {"Stopped", "Finished", "Failed"})
    client.delete(f"/jobs/{job_id}")


def problems_of(response: httpx.Response) -> set[tuple[str, str]]:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    body = response.json()
    return {(problem["Code"], problem["Path"]) for problem in body.get("Problems", [])}


def mutated(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    body = copy.deepcopy(job("true"))
    change(body)
    return body


def attack(body: dict[str, Any]) -> dict[str, Any]:
    task: dict[str, Any] = body["DAG"]["Tasks"]["attack"]
    return task


def command(body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = attack(body)["Parameters"]["Command"]
    return result


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"x": [value]}
    return value


CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str, str]] = [
    ("timeout of 10**10 s", lambda b: attack(b).update(Timeout=10**10),
     "InvalidTimeout", f"{TASK}.Timeout"),
    ("timeout of 10**400 s", lambda b: attack(b).update(Timeout=10**400),
     "InvalidTimeout", f"{TASK}.Timeout"),
    ("timeout of a week and a second", lambda b: attack(b).update(Timeout=7 * 24 * 3600 + 1),
     "InvalidTimeout", f"{TASK}.Timeout"),
    ("2**63 in an unknown field", lambda b: b.update(Extra=2**63),
     "InvalidParameter", "Extra"),
    ("-10**30 deep in an unknown field", lambda b: b.update(Extra={"a": [1, -(10**30)]}),
     "InvalidParameter", "Extra.a.1"),
    ("10**30 in AutoCluster", lambda b: attack(b)["AutoCluster"].update(SpotPriceLimit=10**30),
     "InvalidAutoCluster", f"{TASK}.AutoCluster.SpotPriceLimit"),
    ("10**400 in Notification", lambda b: b.update(Notification={"Topic": {"Name": 10**400}}),
     "InvalidNotification", "Notification.Topic.Name"),
    ("NUL in CommandLine", lambda b: command(b).update(CommandLine="true\0; rm -rf ~"),
     "InvalidCommandLine", f"{COMMAND}.CommandLine"),
    ("NUL in an EnvVars value", lambda b: command(b).update(EnvVars={"A": "x\0y"}),
     "InvalidEnvVars", f"{COMMAND}.EnvVars.A"),
    ("NUL in an EnvVars name", lambda b: command(b).update(EnvVars={"A\0B": "x"}),
     "InvalidEnvVars", f"{COMMAND}.EnvVars.A\\x00B"),
    ("NUL in Description", lambda b: b.update(Description="a\0b"),
     "InvalidDescription", "Description"),
    ("NUL in an AutoCluster value", lambda b: attack(b)["AutoCluster"].update(ImageId="i\0"),
     "InvalidAutoCluster", f"{TASK}.AutoCluster.ImageId"),
    ("NUL in an unknown field", lambda b: b.update(Extra=["ok", "\0"]),
     "InvalidParameter", "Extra.1"),
    ("NUL in an unknown key", lambda b: b.update(Extra={"k\0": 1}),
     "InvalidParameter", "Extra.k\\x00"),
    ("lone surrogate in a value", lambda b: b.update(Description="\ud800"),
     "InvalidDescription", "Description"),
    ("lone surrogate in a task name",
     lambda b: b["DAG"]["Tasks"].update({"t\udc00": b["DAG"]["Tasks"]["attack"]}),
     "InvalidTaskName", "DAG.Tasks.t\\udc00"),
    ("'=' in an EnvVars name", lambda b: command(b).update(EnvVars={"A=B": "x"}),
     "InvalidEnvVars", f"{COMMAND}.EnvVars.A=B"),
    ("EnvVars name starting with a digit", lambda b: command(b).update(EnvVars={"1A": "x"}),
     "InvalidEnvVars", f"{COMMAND}.EnvVars.1A"),
    ("CommandLine over 128 KiB",
     lambda b: command(b).update(CommandLine="true " + "x" * MAX_ARG_STRLEN),
     "InvalidCommandLine", f"{COMMAND}.CommandLine"),
    ("NAME=value over 128 KiB", lambda b: command(b).update(EnvVars={"V": "x" * MAX_ARG_STRLEN}),
     "InvalidEnvVars", f"{COMMAND}.EnvVars.V"),
    ("'..' in StdoutRedirectPath",
     lambda b: attack(b)["Parameters"].update(StdoutRedirectPath="oss://mallory-logs/../alice/"),
     "InvalidStdoutRedirectPath", f"{TASK}.Parameters.StdoutRedirectPath"),
    ("'.' in StderrRedirectPath",
     lambda b: attack(b)["Parameters"].update(StderrRedirectPath="oss://mallory-logs/./x/"),
     "InvalidStderrRedirectPath", f"{TASK}.Parameters.StderrRedirectPath"),
    ("'..' in PackagePath",
     lambda b: command(b).update(PackagePath="oss://mallory-logs/../alice/w.tar.gz"),
     "InvalidPackagePath", f"{COMMAND}.PackagePath"),
    ("backslash in an InputMapping URL",
     lambda b: attack(b).update(InputMapping={"oss://mallory-logs/..\\alice/": "/home/in"}),
     "InvalidInputMapping", f"{TASK}.InputMapping"),
    ("'..' in an OutputMapping URL",
     lambda b: attack(b).update(OutputMapping={"/home/out": "oss://mallory-logs/../alice/"}),
     "InvalidOutputMapping", f"{TASK}.OutputMapping"),
    ("'..' in a LogMapping URL",
     lambda b: attack(b).update(LogMapping={"/home/app.log": "oss://mallory-logs/a/../../b/"}),
     "InvalidLogMapping", f"{TASK}.LogMapping"),
    ("'..' in a Mounts source", lambda b: attack(b).update(Mounts={"Entries": [
        {"Source": "oss://mallory-logs/..", "Destination": "/mnt/x"}]}),
     "InvalidMounts", f"{TASK}.Mounts.Entries.0"),
]


@pytest.mark.parametrize(("change", "code", "path"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_a_value_that_can_never_run_is_refused_at_submission(
        mallory: httpx.Client, change: Callable[[dict[str, Any]], Any], code: str,
        path: str) -> None:
    assert (code, path) in problems_of(submit(mallory, mutated(change)))


@pytest.mark.parametrize("levels", [40, 150, 300, 450])
def test_deep_nesting_is_refused_with_invalid_json_format(mallory: httpx.Client,
                                                          levels: int) -> None:
    """40 levels of {"x": [...]} is 80 levels of nesting: the old code stored such a job and
    answered 500 from 150 (the echo could not be serialised)."""
    for body in (mutated(lambda b: b.update(Extra=nested(levels))),
                 mutated(lambda b: attack(b).update(Extra=nested(levels), Timeout="long"))):
        response = submit(mallory, body)
        assert response.status_code == 400, (response.status_code, response.text[:300])
        answer = response.json()
        assert answer["Code"] == "InvalidJsonFormat"
        # The HTTP layer may refuse very deep bodies before the job is parsed (no Problems).
        assert {problem["Path"] for problem in answer.get("Problems", [])} <= {"$"}


def test_many_problems_make_a_bounded_answer(mallory: httpx.Client) -> None:
    """500 tasks and 2 000 unknown dependencies: the old answer quoted every task name in
    every problem (a 12 MB answer to a 200 KB body)."""
    body = job("true")
    body["DAG"]["Tasks"] = {f"t{index}": attack(job("true")) for index in range(500)}
    body["DAG"]["Dependencies"] = {"t0": [f"missing{index}" for index in range(2_000)]}
    response = submit(mallory, body)
    assert ("InvalidDependencies", "DAG.Dependencies.t0") in problems_of(response)
    assert len(response.content) < 200_000


def test_thousands_of_mappings_are_checked_quickly(mallory: httpx.Client) -> None:
    """10 000 mappings (one overlapping): the old pair-by-pair check took over ten seconds
    of server CPU per request."""
    mappings = {f"oss://mallory-logs/in/{index}/": f"/home/in/{index}"
                for index in range(10_000)}
    body = mutated(lambda b: attack(b).update(
        InputMapping={**mappings, "oss://mallory-logs/all/": "/home/in"}))
    started = time.monotonic()
    response = submit(mallory, body)
    assert time.monotonic() - started < 5
    assert ("InvalidMapping", TASK) in problems_of(response)
