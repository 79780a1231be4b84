"""Every error path answers BatchCompute JSON with the documented status and code."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import echo_task, job_body, wait_for_state


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["Code"] == code, body
    assert set(body) >= {"Code", "Message", "RequestId", "HostId"}
    assert body["RequestId"] == response.headers["x-acs-request-id"]
    return body


def test_every_response_carries_a_request_id(alice: httpx.Client,
                                             anonymous: httpx.Client) -> None:
    ok = alice.get("/quotas")
    assert ok.status_code == 200 and ok.headers["x-acs-request-id"]
    assert anonymous.get("/jobs").headers["x-acs-request-id"]
    assert ok.headers["x-acs-request-id"] != alice.get("/quotas").headers["x-acs-request-id"]


def test_unknown_route_and_wrong_method(alice: httpx.Client) -> None:
    assert_error(alice.get("/clusters/cls-1/nothing"), 404, "InvalidUrlPattern")
    response = alice.patch("/jobs")
    assert_error(response, 405, "MethodNotAllowed")
    assert response.headers["allow"] == "GET, POST"


@pytest.mark.parametrize(("content", "code"), [
    (b"{not json", "InvalidJsonFormat"),
    (b'{"Name": NaN}', "InvalidJsonFormat"),
    (b"\xff\xfe", "InvalidJsonFormat"),
    (b"[1, 2]", "InvalidHttpBody"),
    (b'"text"', "InvalidHttpBody"),
    (b"", "InvalidHttpBody"),
])
def test_bodies_that_are_not_a_json_object(alice: httpx.Client, content: bytes,
                                           code: str) -> None:
    assert_error(alice.post("/jobs", content=content), 400, code)


def test_oversized_body(alice: httpx.Client) -> None:
    huge = b'{"Name": "' + b"x" * (1 << 20) + b'"}'
    assert_error(alice.post("/jobs", content=huge), 413, "RequestBodyTooLarge")

    def chunks() -> Any:  # no Content-Length: counted while streaming
        for _ in range(20):
            yield b" " * 65536

    assert_error(alice.post("/jobs", content=chunks()), 413, "RequestBodyTooLarge")


def test_invalid_description_lists_every_problem(alice: httpx.Client) -> None:
    body = job_body()
    body["Priority"] = 5000
    body["DAG"]["Tasks"]["work"]["InstanceCount"] = "three"
    body["DAG"]["Dependencies"] = {"work": ["ghost"]}
    error = assert_error(alice.post("/jobs", json=body), 400, "InvalidDependencies")
    paths = {problem["Path"] for problem in error["Problems"]}
    assert {"Priority", "DAG.Tasks.work.InstanceCount", "DAG.Dependencies.work"} <= paths
    for path in paths:
        assert path in error["Message"]


@pytest.mark.parametrize(("count", "reason"), [
    ("abc", "must be an integer"), ("101", "[0, 100]"), ("-1", "[0, 100]"), ("1.5", "integer")])
def test_invalid_max_item_count(alice: httpx.Client, count: str, reason: str) -> None:
    body = assert_error(alice.get("/jobs", params={"MaxItemCount": count}), 400,
                        "InvalidMaxItemCount")
    assert reason in body["Message"]


def test_blank_and_zero_item_counts_mean_the_default(alice: httpx.Client) -> None:
    for query in ("Marker&MaxItemCount=0", "Marker&MaxItemCount", "MaxItemCount=&State="):
        response = alice.get(f"/jobs?{query}")
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"NextMarker", "Items"}


@pytest.mark.parametrize(("query", "code"), [
    ("State=Sleeping", "InvalidState"), ("IsReverse=sideways", "InvalidIsReverse"),
    ("OrderBy=Name", "InvalidOrderBy"), ("Marker=not-a-job", "InvalidMarker")])
def test_invalid_list_filters(alice: httpx.Client, query: str, code: str) -> None:
    assert_error(alice.get(f"/jobs?{query}"), 400, code)


def test_invalid_idempotent_token(alice: httpx.Client) -> None:
    response = alice.post("/jobs", params={"IdempotentToken": "no spaces!"}, json=job_body())
    assert_error(response, 400, "InvalidIdempotentToken")
    response = alice.post("/jobs", params={"IdempotentToken": "x" * 65}, json=job_body())
    assert_error(response, 400, "InvalidIdempotentToken")


def test_missing_things_are_404(alice: httpx.Client) -> None:
    job_id = alice.post("/jobs", json=job_body(count=2)).json()["Id"]
    missing = "job-00000000000000000000000000000009"
    for path in (f"/jobs/{missing}", f"/jobs/{missing}/tasks", f"/jobs/{job_id}/tasks/ghost",
                 f"/jobs/{job_id}/tasks/ghost/instances", f"/jobs/{job_id}/tasks/work/instances/2",
                 f"/jobs/{job_id}/tasks/work/instances/one", f"/jobs/{missing}?description"):
        assert_error(alice.get(path), 404, "InvalidResource.NotFound")
    assert_error(alice.post(f"/jobs/{missing}/stop"), 404, "InvalidResource.NotFound")
    assert_error(alice.delete(f"/jobs/{missing}"), 404, "InvalidResource.NotFound")
    assert_error(alice.get(f"/jobs/{job_id}/tasks/work/instances?Marker=x"), 400,
                 "InvalidMarker")


def test_state_conflicts_and_priority_errors(alice: httpx.Client) -> None:
    job_id = alice.post("/jobs", json=job_body(command="sleep 30")).json()["Id"]
    assert_error(alice.delete(f"/jobs/{job_id}"), 409, "StateConflict")
    assert_error(alice.post(f"/jobs/{job_id}/start"), 409, "StateConflict")
    assert_error(alice.put(f"/jobs/{job_id}", json={"Priority": 5}), 409, "StateConflict")
    assert_error(alice.put(f"/jobs/{job_id}", json={}), 400, "MissingPriority")
    for bad in ("high", 1001, -1, True, 2.5):
        assert_error(alice.put(f"/jobs/{job_id}", json={"Priority": bad}), 400,
                     "InvalidPriority")
    assert alice.post(f"/jobs/{job_id}/stop").status_code == 201
    assert_error(alice.post(f"/jobs/{job_id}/stop"), 409, "StateConflict")
    assert alice.put(f"/jobs/{job_id}", json={"Priority": 5}).status_code == 200
    assert alice.delete(f"/jobs/{job_id}").status_code == 204


def test_json_types_follow_the_sdk_rules(alice: httpx.Client) -> None:
    body = job_body(count=2)
    body["DAG"]["Tasks"]["second"] = echo_task("exit 3")
    job_id = alice.post("/jobs", json=body).json()["Id"]
    job = wait_for_state(alice, job_id, {"Failed", "Finished"})
    assert job["State"] == "Failed" and isinstance(job["OwnerId"], int)
    assert job["CreationTime"].endswith("Z") and len(job["CreationTime"]) == 27
    assert isinstance(job["TaskMetrics"]["FailedCount"], int)
    item = alice.get(f"/jobs/{job_id}/tasks/second/instances").json()["Items"][0]
    assert item["Result"]["ExitCode"] == 3 and isinstance(item["InstanceId"], int)
    assert item["Error"] == {} and item["Outputs"] == {}
    waiting = alice.post("/jobs", json=job_body(command="sleep 30")).json()["Id"]
    instance = alice.get(f"/jobs/{waiting}/tasks/work/instances/0").json()
    assert instance["Result"]["ErrorCode"] == "" and isinstance(instance["Result"], dict)
    assert alice.post(f"/jobs/{waiting}/stop").status_code == 201
    assert alice.get(f"/jobs/{waiting}").json()["EndTime"].endswith("Z")


def test_description_comes_back_with_id_and_type(alice: httpx.Client) -> None:
    body = job_body()
    body["DAG"]["Tasks"]["work"]["Extra"] = {"kept": True}
    job_id = alice.post("/jobs", json=body).json()["Id"]
    description = alice.get(f"/jobs/{job_id}?description").json()
    assert description["Id"] == job_id and description["Type"] == "DAG"
    assert description["DAG"]["Tasks"]["work"]["Extra"] == {"kept": True}
    assert description["DAG"]["Tasks"]["work"]["Parameters"]["Command"]["CommandLine"] == (
        "echo hello")


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/jobs/{job}/tasks/work/instances/²", None),
    ("GET", "/jobs/{job}/tasks/work/instances/99999999999999999999999", None),
    ("GET", "/jobs/{job}/tasks/work/instances?Marker=99999999999999999999", None),
    ("GET", "/jobs/%00", None),
    ("GET", "/jobs/%C3%A9t%C3%A9/tasks", None),
    ("GET", "/jobs?Marker=job-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", None),
    ("GET", "/jobs?State=%00&MaxItemCount=%FF", None),
    ("POST", "/jobs", {"Name": "x", "Extra": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}),
    ("POST", "/jobs", {"Name": "x", "Priority": 10**40, "DAG": {"Tasks": {}}}),
    ("POST", "/jobs", {"Name": "é", "DAG": []}),
    ("POST", "/jobs", {"Name": "x", "DAG": {"Tasks": {"t": None}, "Dependencies": {"t": "u"}}}),
    ("POST", "/jobs", {"Name": "x", "DAG": {"Tasks": {"t": {"InstanceCount": 10**30}}}}),
    ("PUT", "/jobs/{job}", {"Priority": 10**40}),
    ("PUT", "/jobs/{job}", {"Priority": None}),
    ("POST", "/jobs?IdempotentToken=%FF", {}),
])
def test_bad_input_never_makes_a_500(alice: httpx.Client, method: str, path: str,
                                     body: Any) -> None:
    job = alice.post("/jobs", json=job_body(count=2)).json()["Id"]
    response = alice.request(method, path.replace("{job}", job), json=body)
    assert response.status_code < 500, response.text
    assert isinstance(response.json(), dict)


def test_absurdly_nested_json(alice: httpx.Client) -> None:
    nested = ("[" * 100_000 + "]" * 100_000).encode()
    assert_error(alice.post("/jobs", content=nested), 400, "InvalidJsonFormat")
